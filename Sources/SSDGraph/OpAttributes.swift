/// The geometry of a general convolution (PyTorch's nn.Conv2d arguments). Pairs are
/// (height, width).
public struct ConvAttributes: Codable, Hashable, Sendable, CustomStringConvertible {
    public var stride: [Int]
    public var padding: [Int]
    public var dilation: [Int]
    public var groups: Int

    public init(stride: [Int], padding: [Int], dilation: [Int], groups: Int) {
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
    }

    public var description: String {
        "stride=\(stride[0])x\(stride[1]) padding=\(padding[0])x\(padding[1]) dilation=\(dilation[0])x\(dilation[1]) groups=\(groups)"
    }

    /// PyTorch's output size along one axis: floor((in + 2p - d(k-1) - 1) / s) + 1.
    public func outputSize(_ input: Int, kernel: Int, axis: Int) -> Int {
        let span = dilation[axis] * (kernel - 1) + 1
        let room = input + 2 * padding[axis] - span
        return room < 0 ? 0 : room / stride[axis] + 1
    }

    func resultType(_ t: [TensorType]) -> Result<TensorType, GraphOpError> {
        func fail(_ m: String) -> Result<TensorType, GraphOpError> { .failure(GraphOpError(m)) }
        guard t.count == 2 || t.count == 3 else { return fail("conv2d takes x, weight and an optional bias") }
        let x = t[0], w = t[1]
        guard x.batched, x.dims.count == 3 else { return fail("conv2d expects x of shape (N,C,H,W), got \(x)") }
        guard !w.batched, w.dims.count == 4 else { return fail("conv2d expects a weight (O,C/groups,kh,kw), got \(w)") }
        guard stride.count == 2, padding.count == 2, dilation.count == 2,
              stride.allSatisfy({ $0 >= 1 }), dilation.allSatisfy({ $0 >= 1 }), padding.allSatisfy({ $0 >= 0 }) else {
            return fail("conv2d needs strides and dilations >= 1 and paddings >= 0, got \(self)")
        }
        guard groups >= 1, x.dims[0] % groups == 0, w.dims[0] % groups == 0 else {
            return fail("conv2d with \(groups) groups needs input channels (\(x.dims[0])) and output channels (\(w.dims[0])) divisible by \(groups)")
        }
        guard w.dims[1] * groups == x.dims[0] else {
            return fail("conv2d with \(groups) groups expects a weight of \(x.dims[0] / groups) input channels per group, got \(w)")
        }
        if t.count == 3 {
            guard t[2].dims == [w.dims[0]], !t[2].batched else { return fail("conv2d bias must have shape (\(w.dims[0])), got \(t[2])") }
        }
        let oh = outputSize(x.dims[1], kernel: w.dims[2], axis: 0), ow = outputSize(x.dims[2], kernel: w.dims[3], axis: 1)
        guard oh > 0, ow > 0 else {
            return fail("conv2d output would be empty for input \(x) with kernel \(w.dims[2])x\(w.dims[3]), \(self)")
        }
        return .success(TensorType([w.dims[0], oh, ow], batched: true))
    }
}

/// nn.MaxPool2d / nn.AvgPool2d arguments. Pairs are (height, width).
public struct PoolAttributes: Codable, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: String, Codable, Hashable, Sendable { case max, average }
    public var kind: Kind
    public var kernel: [Int]
    public var stride: [Int]
    public var padding: [Int]
    public var ceilMode: Bool
    /// Average pooling: whether padded positions count in the divisor (PyTorch's default).
    public var countIncludePad: Bool

    public init(kind: Kind, kernel: [Int], stride: [Int], padding: [Int], ceilMode: Bool, countIncludePad: Bool = true) {
        self.kind = kind
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        self.ceilMode = ceilMode
        self.countIncludePad = countIncludePad
    }

    public var description: String {
        var s = "kernel=\(kernel[0])x\(kernel[1]) stride=\(stride[0])x\(stride[1]) padding=\(padding[0])x\(padding[1])"
        if ceilMode { s += " ceil_mode" }
        if kind == .average && !countIncludePad { s += " exclude_pad" }
        return s
    }

    /// PyTorch's pooling output size along one axis, or nil when the arguments are invalid:
    /// floor (or ceil) of (in + 2p - k) / s, plus one; in ceil mode the last window must
    /// start inside the input or its left padding.
    public func outputSize(_ input: Int, axis a: Int) -> Int? {
        let k = kernel[a], s = stride[a], p = padding[a]
        guard k >= 1, s >= 1, p >= 0, 2 * p <= k else { return nil }
        let room = input + 2 * p - k
        guard room >= 0 else { return nil }
        var out = (ceilMode ? (room + s - 1) / s : room / s) + 1
        if ceilMode && (out - 1) * s >= input + p { out -= 1 }
        return out >= 1 ? out : nil
    }
}

/// Elementwise activations beyond ReLU (PyTorch's definitions).
public enum Activation: String, Codable, Hashable, Sendable, CaseIterable {
    /// min(max(x, 0), 6)
    case relu6
    /// 1 / (1 + exp(-x))
    case sigmoid
    /// x * relu6(x + 3) / 6
    case hardSwish = "hard_swish"
    /// relu6(x + 3) / 6
    case hardSigmoid = "hard_sigmoid"
}
