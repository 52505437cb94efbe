import SSDGraph

/// ReLU6, sigmoid, hard-swish, hard-sigmoid, forward.
public struct ActivationForward: KernelFamily {
    public var x: Int, y: Int, count: Int
    public var activation: Activation

    public var reads: [Int] { [x] }
    public var writes: [Int] { [y] }

    public func body(_ P: (Int) -> String) -> [String] {
        ["ssd_activation_forward(\(ActivationForward.code(activation)), N * \(count), \(P(x)), \(P(y)));"]
    }

    static func code(_ a: Activation) -> String {
        switch a {
        case .relu6: return "SSD_ACT_RELU6"
        case .sigmoid: return "SSD_ACT_SIGMOID"
        case .hardSwish: return "SSD_ACT_HARDSWISH"
        case .hardSigmoid: return "SSD_ACT_HARDSIGMOID"
        }
    }
}

/// The gradient of an activation, from its input x (PyTorch's values at the kinks).
public struct ActivationBackward: KernelFamily {
    public var x: Int, y: Int, dy: Int, dx: Int, count: Int
    public var activation: Activation

    public var kernelName: String? { activation.rawValue + "_backward" }
    public var reads: [Int] { [x, y, dy] }
    public var writes: [Int] { [dx] }

    public func body(_ P: (Int) -> String) -> [String] {
        ["ssd_activation_backward(\(ActivationForward.code(activation)), N * \(count), \(P(x)), \(P(y)), \(P(dy)), \(P(dx)));"]
    }
}

/// y = a + b over `count` elements per example (batched) or in all.
public struct Add: KernelFamily {
    public var a: Int, b: Int, y: Int, count: Int, batched: Bool
    /// Set when the sum is a gradient accumulation (named for the listing).
    public var gradient: Bool = false

    public var kernelName: String? { gradient ? "accumulate_grad" : nil }
    public var reads: [Int] { [a, b] }
    public var writes: [Int] { [y] }

    public func body(_ P: (Int) -> String) -> [String] {
        ["ssd_add((int64_t)\(batched ? "N * " : "")\(count), \(P(a)), \(P(b)), \(P(y)));"]
    }
}

/// y = x * s per channel; s is (N,C) per example or (C) shared.
public struct MulChannels: KernelFamily {
    public var x: Int, s: Int, y: Int
    public var c: Int, hw: Int, perExample: Bool

    public var reads: [Int] { [x, s] }
    public var writes: [Int] { [y] }

    public func body(_ P: (Int) -> String) -> [String] {
        ["ssd_mul_channels((int)N, \(c), \(hw), \(P(x)), \(P(s)), \(perExample ? 1 : 0), \(P(y)));"]
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

    public func body(_ P: (Int) -> String) -> [String] {
        ["ssd_mul_channels_backward((int)N, \(c), \(hw), \(P(x)), \(P(s)), \(perExample ? 1 : 0), \(P(dy)), "
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

    public func body(_ P: (Int) -> String) -> [String] {
        [backward ? "ssd_upsample_nearest_backward((int)N, \(c), \(h), \(w), \(sh), \(sw), \(P(x)), \(P(y)));"
                  : "ssd_upsample_nearest_forward((int)N, \(c), \(h), \(w), \(sh), \(sw), \(P(x)), \(P(y)));"]
    }
}

/// SSD300's L2Norm: y = x / (sqrt(sum over channels of x^2) + eps) * weight.
public struct L2NormForward: KernelFamily {
    public var x: Int, weight: Int, y: Int
    public var c: Int, hw: Int, eps: Float

    public var reads: [Int] { [x, weight] }
    public var writes: [Int] { [y] }

    public func body(_ P: (Int) -> String) -> [String] {
        ["ssd_l2norm_forward((int)N, \(c), \(hw), \(P(x)), \(P(weight)), \(CText.float(eps)), \(P(y)));"]
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

    public func body(_ P: (Int) -> String) -> [String] {
        ["ssd_l2norm_backward((int)N, \(c), \(hw), \(P(x)), \(P(weight)), \(CText.float(eps)), \(P(dy)), "
         + "\(CText.optional(dx, P)), \(P(dWeight)));"]
    }
}
