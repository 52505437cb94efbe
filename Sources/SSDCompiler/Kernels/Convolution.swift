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

    /// One input and one output channel per group: the direct depthwise kernel's case
    /// (the runtime's ssd_dwconv_applies).
    public var isDepthwise: Bool { groups == c && o == c }

    /// Multiply-adds x 2 of the forward pass.
    func flops(batch n: Int) -> Double {
        2.0 * Double(n) * Double(o * oh * ow) * Double(c / groups * kh * kw)
    }

    /// The C declaration `g` of the runtime's geometry struct (ssd_convg_t).
    var cDeclaration: String {
        let a = attributes
        return "const ssd_convg_t g = ssd_convg_geometry((int)N, \(c), \(h), \(w), \(o), \(kh), \(kw), "
            + "\(a.stride[0]), \(a.stride[1]), \(a.padding[0]), \(a.padding[1]), \(a.dilation[0]), \(a.dilation[1]), \(a.groups));"
    }
}

/// A convolution with any kernel, stride, padding, dilation and groups (im2col + SGEMM per
/// group), with an optional activation epilogue; depthwise convs get the direct kernel
/// instead (memory-bound: a GEMM of one input channel per group wastes its width).
public struct ConvolutionForward: KernelFamily {
    public var x: Int, weight: Int, bias: Int?, y: Int
    public var geometry: ConvGeometry
    public var epilogue: Epilogue

    public var reads: [Int] { [x, weight] + (bias.map { [$0] } ?? []) }
    public var writes: [Int] { [y] }
    public func flops(batch n: Int) -> Double { geometry.flops(batch: n) }

    public var scratchQuery: String? {
        geometry.isDepthwise ? nil : "{ \(geometry.cDeclaration) t = ssd_convg_scratch_floats(&g); }"
    }

    public func body(_ ctx: KernelContext) -> [String] {
        let P = ctx.pointer
        let b = CText.optional(bias, P)
        if geometry.isDepthwise {
            return [geometry.cDeclaration, "ssd_dwconv_forward(&g, \(P(x)), \(P(weight)), \(b), \(P(y)), \(epilogue.cName));"]
        }
        return [geometry.cDeclaration, "ssd_convg_forward(&g, \(P(x)), \(P(weight)), \(b), \(P(y)), \(epilogue.cName), S);"]
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
        geometry.isDepthwise ? nil : "{ \(geometry.cDeclaration) t = ssd_convg_scratch_floats(&g); }"
    }

    public func body(_ ctx: KernelContext) -> [String] {
        let P = ctx.pointer
        var lines = [geometry.cDeclaration]
        let db = CText.optional(dBias, P)
        if geometry.isDepthwise {
            if let dx { lines.append("ssd_dwconv_backward_data(&g, \(P(dy)), \(P(weight)), \(P(dx)));") }
            lines.append("ssd_dwconv_backward_weight(&g, \(P(x)), \(P(dy)), \(P(dWeight)), \(db));")
            return lines
        }
        if let dx { lines.append("ssd_convg_backward_data(&g, \(P(dy)), \(P(weight)), \(P(dx)), S);") }
        lines.append("ssd_convg_backward_weight(&g, \(P(x)), \(P(dy)), \(P(dWeight)), \(db), S);")
        return lines
    }
}

/// An activation computed as a kernel's epilogue, as the runtime codes it (SSD_ACT_*).
public enum Epilogue: Hashable, Sendable {
    case none, relu, relu6

    /// The epilogue that computes `op` (the last node of a fused group): none for any other op.
    public init(_ op: Op) {
        switch op {
        case .relu: self = .relu
        case .activation(.relu6): self = .relu6
        default: self = .none
        }
    }

    var cName: String {
        switch self {
        case .none: return "SSD_ACT_NONE"
        case .relu: return "SSD_ACT_RELU"
        case .relu6: return "SSD_ACT_RELU6"
        }
    }
}
