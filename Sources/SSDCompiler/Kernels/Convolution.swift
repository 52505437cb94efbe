import SSDGraph

/// The geometry of a general convolution for one example: input (c, h, w), output
/// (o, oh, ow), kernel, stride, padding and dilation per axis, groups.
public struct ConvGeometry: Hashable, Sendable {
    public var c: Int, h: Int, w: Int, o: Int
    public var kh: Int, kw: Int
    public var attributes: ConvAttributes

    public init(input: TensorType, weight: TensorType, attributes: ConvAttributes) {
        (c, h, w) = (input.dims[0], input.dims[1], input.dims[2])
        (o, kh, kw) = (weight.dims[0], weight.dims[2], weight.dims[3])
        self.attributes = attributes
    }

    public var oh: Int { attributes.outputSize(h, kernel: kh, axis: 0) }
    public var ow: Int { attributes.outputSize(w, kernel: kw, axis: 1) }
    public var groups: Int { attributes.groups }

    /// One input and one output channel per group, 3x3: the direct depthwise kernel's case.
    public var isDepthwise3x3: Bool { groups == c && o == c && kh == 3 && kw == 3 }

    /// Multiply-adds x 2 of the forward pass.
    func flops(batch n: Int) -> Double {
        2.0 * Double(n) * Double(o * oh * ow) * Double(c / groups * kh * kw)
    }

    /// The C declaration `g` of the runtime's geometry struct.
    var cDeclaration: String {
        let a = attributes
        return "const ssd_convg_t g = ssd_convg_geometry((int)N, \(c), \(h), \(w), \(o), \(kh), \(kw), "
            + "\(a.stride[0]), \(a.stride[1]), \(a.padding[0]), \(a.padding[1]), \(a.dilation[0]), \(a.dilation[1]), \(a.groups));"
    }
}

/// A convolution with any kernel, stride, padding, dilation and groups (im2col + SGEMM per
/// group), with an optional activation epilogue; depthwise 3x3 convs get the direct
/// kernel instead (memory-bound: a GEMM of one input channel per group wastes its width).
public struct ConvolutionForward: KernelFamily {
    public var x: Int, weight: Int, bias: Int?, y: Int
    public var geometry: ConvGeometry
    /// 0 none, 1 ReLU, 2 ReLU6 (the runtime's epilogue codes).
    public var epilogue: Epilogue

    public var reads: [Int] { [x, weight] + (bias.map { [$0] } ?? []) }
    public var writes: [Int] { [y] }
    public func flops(batch n: Int) -> Double { geometry.flops(batch: n) }

    public var scratchQuery: String? {
        geometry.isDepthwise3x3 ? nil : "{ \(geometry.cDeclaration) t = ssd_convg_scratch_floats(&g); }"
    }

    public func body(_ P: (Int) -> String) -> [String] {
        let b = CText.optional(bias, P)
        if geometry.isDepthwise3x3 {
            let a = geometry.attributes
            return ["ssd_dwconv3x3_forward((int)N, \(geometry.c), \(geometry.h), \(geometry.w), \(a.stride[0]), \(a.stride[1]), "
                    + "\(a.padding[0]), \(a.padding[1]), \(a.dilation[0]), \(a.dilation[1]), \(P(x)), \(P(weight)), \(b), \(epilogue.rawValue), \(P(y)));"]
        }
        return [geometry.cDeclaration, "ssd_convg_forward(&g, \(P(x)), \(P(weight)), \(b), \(epilogue.rawValue), \(P(y)), S);"]
    }
}

/// Gradients of a general convolution: dx (when the input needs one), dW and db.
public struct ConvolutionBackward: KernelFamily {
    public var x: Int, weight: Int, dy: Int
    public var dx: Int?, dWeight: Int, dBias: Int?
    public var geometry: ConvGeometry

    public var kernelName: String? { "conv2d_backward" }
    public var reads: [Int] { [x, weight, dy] }
    public var writes: [Int] { (dx.map { [$0] } ?? []) + [dWeight] + (dBias.map { [$0] } ?? []) }
    public func flops(batch n: Int) -> Double { geometry.flops(batch: n) * (dx == nil ? 1 : 2) }

    public var scratchQuery: String? {
        geometry.isDepthwise3x3 ? nil : "{ \(geometry.cDeclaration) t = ssd_convg_scratch_floats(&g); }"
    }

    public func body(_ P: (Int) -> String) -> [String] {
        let g = geometry, a = geometry.attributes
        if g.isDepthwise3x3 {
            let args = "(int)N, \(g.c), \(g.h), \(g.w), \(a.stride[0]), \(a.stride[1]), \(a.padding[0]), \(a.padding[1]), \(a.dilation[0]), \(a.dilation[1])"
            var lines: [String] = []
            if let dx { lines.append("ssd_dwconv3x3_backward_data(\(args), \(P(dy)), \(P(weight)), \(P(dx)));") }
            lines.append("ssd_dwconv3x3_backward_weight(\(args), \(P(x)), \(P(dy)), \(P(dWeight)), \(CText.optional(dBias, P)));")
            return lines
        }
        var lines = [g.cDeclaration]
        if let dx { lines.append("ssd_convg_backward_data(&g, \(P(dy)), \(P(weight)), \(P(dx)), S);") }
        lines.append("ssd_convg_backward_weight(&g, \(P(x)), \(P(dy)), \(P(dWeight)), \(CText.optional(dBias, P)), S);")
        return lines
    }
}

/// An activation computed as a kernel's epilogue, as the runtime codes it.
public enum Epilogue: Int, Hashable, Sendable {
    case none = 0
    case relu = 1
    case relu6 = 2
}
