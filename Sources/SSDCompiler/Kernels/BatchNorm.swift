import SSDGraph

/// Batch normalisation (Runtime/bn.c, fused.c): with batch statistics (training), with
/// running ones (inference, when no conv absorbed it), and their gradients.

/// Where a train step's BN updates its running statistics (params-region buffers).
public struct RunningStats: Hashable, Sendable {
    public var mean: Int
    public var variance: Int
    public var counter: Int
    public var momentum: Float
}

/// A training-mode BN kernel: batch statistics into mean/var, normalise, optional ReLU
/// epilogue and optional 2x2 max pool of the result in the same pass. In a train step it
/// also updates the running statistics and the batch counter.
public struct BatchNormTrain: KernelFamily {
    public var x: Int, gamma: Int, beta: Int, mean: Int, variance: Int
    /// The full-size output; nil when only the pooled output is used.
    public var y: Int?
    public var pooled: Int?
    public var c: Int, h: Int, w: Int
    public var eps: Float
    public var relu: Bool
    public var running: RunningStats?

    public var reads: [Int] { [x, gamma, beta] + (running.map { [$0.mean, $0.variance, $0.counter] } ?? []) }
    public var writes: [Int] {
        [mean, variance] + [y, pooled].compactMap { $0 } + (running.map { [$0.mean, $0.variance, $0.counter] } ?? [])
    }

    public func body(_ ctx: KernelContext) -> [String] {
        let P = ctx.pointer, hw = h * w
        var lines = ["ssd_bn_stats((int)N, \(c), \(hw), \(P(x)), \(P(mean)), \(P(variance))); /* --sync-bn: sums over the ranks (ssd_bn_sync_sums) */"]
        if let pooled {
            lines.append("ssd_bn_apply_relu_maxpool2((int)N, \(c), \(h), \(w), \(P(x)), \(P(mean)), \(P(variance)), \(P(gamma)), \(P(beta)), \(CText.float(eps)), \(CText.optional(y, P)), \(P(pooled)));")
        } else {
            lines.append("ssd_bn_apply((int)N, \(c), \(hw), \(P(x)), \(P(mean)), \(P(variance)), \(P(gamma)), \(P(beta)), \(CText.float(eps)), \(relu ? 1 : 0), \(P(y!)));")
        }
        if let r = running {
            lines.append("ssd_bn_update_running(\(c), \(P(mean)), \(P(variance)), N * \(hw), \(CText.float(r.momentum)), \(P(r.mean)), \(P(r.variance)));")
            lines.append("\(P(r.counter))[0] += 1.0f; /* num_batches_tracked */")
        }
        return lines
    }
}

/// Evaluation-mode BN with the running statistics (+ ReLU epilogue).
public struct BatchNormEval: KernelFamily {
    public var x: Int, gamma: Int, beta: Int, runningMean: Int, runningVar: Int, y: Int
    public var c: Int, hw: Int, eps: Float, relu: Bool

    public var reads: [Int] { [x, gamma, beta, runningMean, runningVar] }
    public var writes: [Int] { [y] }

    public func body(_ ctx: KernelContext) -> [String] {
        let P = ctx.pointer
        return ["ssd_bn_apply((int)N, \(c), \(hw), \(P(x)), \(P(runningMean)), \(P(runningVar)), \(P(gamma)), \(P(beta)), \(CText.float(eps)), \(relu ? 1 : 0), \(P(y)));"]
    }
}

/// Training-mode BN backward, through the ReLU that followed it when `reluBeta` (BN's beta)
/// is set: the runtime recomputes the ReLU's mask from x with beta, as the forward formed
/// its output, so that output is not read (nor kept for the backward).
public struct BatchNormBackward: KernelFamily {
    public var x: Int, mean: Int, variance: Int, gamma: Int, reluBeta: Int?, dy: Int, dx: Int, dGamma: Int, dBeta: Int
    public var c: Int, hw: Int, eps: Float

    public var kernelName: String? { reluBeta == nil ? "batch_norm_backward" : "relu_batch_norm_backward" }
    public var reads: [Int] { [x, mean, variance, gamma, dy] + (reluBeta.map { [$0] } ?? []) }
    public var writes: [Int] { [dx, dGamma, dBeta] }

    public func body(_ ctx: KernelContext) -> [String] {
        let P = ctx.pointer
        let call = reluBeta.map {
            "ssd_bn_relu_backward((int)N, \(c), \(hw), \(P(x)), \(P(mean)), \(P(variance)), \(P(gamma)), \(P($0)), \(CText.float(eps)), \(P(dy)), \(P(dx)), \(P(dGamma)), \(P(dBeta)));"
        } ?? "ssd_bn_backward((int)N, \(c), \(hw), \(P(x)), \(P(mean)), \(P(variance)), \(P(gamma)), \(CText.float(eps)), NULL, \(P(dy)), \(P(dx)), \(P(dGamma)), \(P(dBeta)));"
        return ["/* --sync-bn: the sums of dy and dy * x-hat are summed over the ranks inside (ssd_bn_sync_sums) */", call]
    }
}

/// Backward of BN (batch statistics) -> ReLU -> 2x2 max pool in one pass: the gradient of
/// the ReLU output is never written, and that output is recomputed from x with BN's beta
/// (as the forward formed it) rather than read.
public struct MaxPool2dBatchNormBackward: KernelFamily {
    public var x: Int, mean: Int, variance: Int, gamma: Int, beta: Int, dPooled: Int, dx: Int, dGamma: Int, dBeta: Int
    public var c: Int, h: Int, w: Int, eps: Float

    public var kernelName: String? { "max_pool2d_relu_batch_norm_backward" }
    public var reads: [Int] { [x, mean, variance, gamma, beta, dPooled] }
    public var writes: [Int] { [dx, dGamma, dBeta] }

    public func body(_ ctx: KernelContext) -> [String] {
        let P = ctx.pointer
        return ["/* --sync-bn: the sums of dy and dy * x-hat are summed over the ranks inside (ssd_bn_sync_sums) */",
                "ssd_maxpool2_bn_relu_backward_x((int)N, \(c), \(h), \(w), \(P(x)), \(P(mean)), \(P(variance)), \(P(gamma)), \(P(beta)), \(CText.float(eps)), \(P(dPooled)), \(P(dx)), \(P(dGamma)), \(P(dBeta)));"]
    }
}
