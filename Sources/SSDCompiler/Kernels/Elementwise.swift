import SSDGraph

/// ReLU6, sigmoid, hard-swish, hard-sigmoid, forward.
public struct ActivationForward: KernelFamily {
    public var x: Int, y: Int, count: Int
    public var activation: Activation

    public var reads: [Int] { [x] }
    public var writes: [Int] { [y] }

    public func body(_ ctx: KernelContext) -> [String] {
        let P = ctx.pointer
        return ["ssd_\(ActivationForward.cName(activation))_forward(N * \(count), \(P(x)), \(P(y)));"]
    }

    static func cName(_ a: Activation) -> String {
        switch a {
        case .relu6: return "relu6"
        case .sigmoid: return "sigmoid"
        case .hardSwish: return "hardswish"
        case .hardSigmoid: return "hardsigmoid"
        }
    }

    /// Whether the gradient is computed from the output (sigmoid) rather than the input.
    static func backwardReadsOutput(_ a: Activation) -> Bool { a == .sigmoid }
}

/// The gradient of an activation (PyTorch's values at the kinks), from its input, or from
/// its output for sigmoid.
public struct ActivationBackward: KernelFamily {
    /// The activation's input, or its output for sigmoid.
    public var source: Int
    public var dy: Int, dx: Int, count: Int
    public var activation: Activation

    public var kernelName: String? { activation.rawValue + "_backward" }
    public var reads: [Int] { [source, dy] }
    public var writes: [Int] { [dx] }

    public func body(_ ctx: KernelContext) -> [String] {
        let P = ctx.pointer
        return ["ssd_\(ActivationForward.cName(activation))_backward(N * \(count), \(P(source)), \(P(dy)), \(P(dx)));"]
    }
}

/// y = a + b over `count` elements per example (batched) or in all.
public struct Add: KernelFamily {
    public var a: Int, b: Int, y: Int, count: Int, batched: Bool
    public var epilogue: Epilogue = .none
    /// Set when the sum is a gradient accumulation (named for the listing).
    public var gradient: Bool = false

    public var kernelName: String? { gradient ? "accumulate_grad" : nil }
    public var reads: [Int] { [a, b] }
    public var writes: [Int] { [y] }

    public func body(_ ctx: KernelContext) -> [String] {
        let P = ctx.pointer
        return ["ssd_add_forward(\(batched ? "N * " : "")\(count), \(P(a)), \(P(b)), \(P(y)), \(epilogue.cName));"]
    }
}

/// y = x * s per channel; s is (N,C) per example or (C) shared.
public struct MulChannels: KernelFamily {
    public var x: Int, s: Int, y: Int
    public var c: Int, hw: Int, perExample: Bool

    public var reads: [Int] { [x, s] }
    public var writes: [Int] { [y] }

    public func body(_ ctx: KernelContext) -> [String] {
        let P = ctx.pointer
        return ["ssd_channel_mul_forward((int)N, \(c), \(hw), \(P(x)), \(P(s)), \(perExample ? 1 : 0), \(P(y)));"]
    }
}

/// dx = dy * s and ds = sum over pixels of dy * x (and over examples when s is shared).
public struct MulChannelsBackward: KernelFamily {
    public var x: Int, s: Int, dy: Int
    public var dx: Int?, ds: Int?
    public var c: Int, hw: Int, perExample: Bool

    public var kernelName: String? { "mul_channels_backward" }
    public var reads: [Int] { [x, s, dy] }
    public var writes: [Int] { [dx, ds].compactMap { $0 } }

    public func body(_ ctx: KernelContext) -> [String] {
        let P = ctx.pointer
        return ["ssd_channel_mul_backward((int)N, \(c), \(hw), \(P(x)), \(P(s)), \(perExample ? 1 : 0), \(P(dy)), "
         + "\(CText.optional(dx, P)), \(CText.optional(ds, P)));"]
    }
}

/// Nearest upsampling by integer factors, and its gradient (the sum of each block).
public struct UpsampleNearest: KernelFamily {
    public var x: Int, y: Int
    public var c: Int, h: Int, w: Int, sh: Int, sw: Int
    /// Backward: x is dy (upsampled shape) and y is dx (h, w).
    public var backward: Bool

    public var kernelName: String? { backward ? "upsample_nearest_backward" : nil }
    public var reads: [Int] { [x] }
    public var writes: [Int] { [y] }

    public func body(_ ctx: KernelContext) -> [String] {
        let P = ctx.pointer
        return [backward ? "ssd_upsample_nearest_backward((int)N, \(c), \(h), \(w), \(sh), \(sw), \(P(x)), \(P(y)));"
                  : "ssd_upsample_nearest_forward((int)N, \(c), \(h), \(w), \(sh), \(sw), \(P(x)), \(P(y)));"]
    }
}

/// SSD300's L2Norm: y = x / (sqrt(sum over channels of x^2) + eps) * weight.
public struct L2NormForward: KernelFamily {
    public var x: Int, weight: Int, y: Int
    public var c: Int, hw: Int, eps: Float

    public var reads: [Int] { [x, weight] }
    public var writes: [Int] { [y] }

    public func body(_ ctx: KernelContext) -> [String] {
        let P = ctx.pointer
        return ["ssd_l2norm_forward((int)N, \(c), \(hw), \(P(x)), \(P(weight)), \(CText.float(eps)), \(P(y)));"]
    }
}

/// L2Norm's gradients: dx (when needed) and dWeight (summed over examples and pixels).
public struct L2NormBackward: KernelFamily {
    public var x: Int, weight: Int, dy: Int
    public var dx: Int?, dWeight: Int
    public var c: Int, hw: Int, eps: Float

    public var kernelName: String? { "l2_norm_backward" }
    public var reads: [Int] { [x, weight, dy] }
    public var writes: [Int] { (dx.map { [$0] } ?? []) + [dWeight] }
    public var scratchQuery: String? { "t = ssd_l2norm_scratch_floats((int)N, \(hw));" }

    public func body(_ ctx: KernelContext) -> [String] {
        let P = ctx.pointer
        return ["ssd_l2norm_backward((int)N, \(c), \(hw), \(P(x)), \(P(weight)), \(CText.float(eps)), \(P(dy)), "
         + "\(CText.optional(dx, P)), \(P(dWeight)), S);"]
    }
}

/// Per-example standardisation (forward), or its gradient dx (backward: y is dx, dy set).
public struct Standardize: KernelFamily {
    public var x: Int, y: Int
    public var dy: Int?
    public var size: Int, eps: Float

    public var kernelName: String? { dy == nil ? nil : "standardize_backward" }
    public var reads: [Int] { [x] + (dy.map { [$0] } ?? []) }
    public var writes: [Int] { [y] }
    public var scratchQuery: String? { "t = ssd_standardize_scratch_floats((int)N, \(size));" }

    public func body(_ ctx: KernelContext) -> [String] {
        let P = ctx.pointer
        if let dy {
            return ["ssd_standardize_backward((int)N, \(size), \(P(x)), \(CText.float(eps)), \(P(dy)), \(P(y)), S);"]
        }
        return ["ssd_standardize_forward((int)N, \(size), \(P(x)), \(CText.float(eps)), \(P(y)), S);"]
    }
}

/// ReLU (when it is no epilogue), and its gradient from the output: dx = dy where y > 0.
public struct Relu: KernelFamily {
    public var x: Int, y: Int, count: Int
    /// Backward: x is the ReLU's output, y is dx.
    public var dy: Int?

    public var kernelName: String? { dy == nil ? nil : "relu_backward" }
    public var reads: [Int] { [x] + (dy.map { [$0] } ?? []) }
    public var writes: [Int] { [y] }

    public func body(_ ctx: KernelContext) -> [String] {
        let P = ctx.pointer
        if let dy {
            return [
                "const float *restrict y = \(P(x));",
                "const float *restrict dy = \(P(dy));",
                "float *restrict dx = \(P(y));",
                "const int64_t n = N * \(count);",
                "#pragma omp parallel for simd schedule(static)",
                "for (int64_t i = 0; i < n; i++) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;",
            ]
        }
        return [
            "const float *restrict x = \(P(x));",
            "float *restrict y = \(P(y));",
            "const int64_t n = N * \(count);",
            "#pragma omp parallel for simd schedule(static)",
            "for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;",
        ]
    }
}

/// into += from (a second contribution to a gradient).
public struct Accumulate: KernelFamily {
    public var into: Int, from: Int, count: Int

    public var kernelName: String? { "accumulate_grad" }
    public var reads: [Int] { [into, from] }
    public var writes: [Int] { [into] }

    public func body(_ ctx: KernelContext) -> [String] {
        [
            "float *restrict a = \(ctx.pointer(into));",
            "const float *restrict b = \(ctx.pointer(from));",
            "const int64_t n = N * \(count);",
            "#pragma omp parallel for simd schedule(static)",
            "for (int64_t i = 0; i < n; i++) a[i] += b[i];",
        ]
    }
}
