import SSDGraph

/// The SSD-specific kernels (Runtime/detect.c, target.c, loss.c, optim.c): softmax,
/// d2l's multibox_detection, anchor labelling, the loss and SGD.

/// Softmax over the last axis of `rows` rows (per example).
public struct Softmax: KernelFamily {
    public var x: Int, y: Int, rows: Int, cols: Int
    public var reads: [Int] { [x] }
    public var writes: [Int] { [y] }
    public func body(_ ctx: KernelContext) -> [String] {
        ["ssd_softmax_rows((int)(N * \(rows)), \(cols), \(ctx.pointer(x)), \(ctx.pointer(y)));"]
    }
}

/// d2l's multibox_detection: decode, per-class NMS, rows [class, conf, box] per anchor.
public struct MultiboxDetection: KernelFamily {
    public var probs: Int, bboxPreds: Int, anchors: Int, y: Int
    public var anchorsCount: Int, classes: Int, nms: Float, pos: Float

    public var reads: [Int] { [probs, bboxPreds, anchors] }
    public var writes: [Int] { [y] }
    public var scratchQuery: String? { "t = ssd_detection_scratch_floats(\(anchorsCount)) * (size_t)N;" }

    public func body(_ ctx: KernelContext) -> [String] {
        let P = ctx.pointer
        return ["ssd_multibox_detection((int)N, \(anchorsCount), \(classes), \(P(probs)), \(P(bboxPreds)), \(P(anchors)), \(CText.float(nms)), \(CText.float(pos)), \(P(y)), S);"]
    }
}

/// d2l's multibox_target on the G label rows of each image (G is the step's run-time argument).
public struct MultiboxTarget: KernelFamily {
    public var anchors: Int, labels: Int, bboxLabels: Int, bboxMasks: Int, clsLabels: Int
    public var anchorsCount: Int

    public var kernelName: String? { "multibox_target" }
    public var reads: [Int] { [anchors, labels] }
    public var writes: [Int] { [bboxLabels, bboxMasks, clsLabels] }
    public var scratchQuery: String? { "t = ssd_target_scratch_floats(\(anchorsCount), (int)G) * (size_t)N;" }

    public func body(_ ctx: KernelContext) -> [String] {
        let P = ctx.pointer
        return ["ssd_multibox_target((int)N, \(anchorsCount), (int)G, \(P(anchors)), \(P(labels)), 0.5f, \(P(bboxLabels)), \(P(bboxMasks)), \(P(clsLabels)), S);"]
    }
}

/// The loss of SPEC sections 4 and 7, its metrics, and its gradient w.r.t. the predictions.
public struct MultiboxLoss: KernelFamily {
    public var clsPreds: Int, bboxPreds: Int, clsLabels: Int, bboxLabels: Int, bboxMasks: Int
    public var perExample: Int, dClsPreds: Int, dBboxPreds: Int, metrics: Int
    public var anchorsCount: Int, classes: Int, config: LossConfig

    public var kernelName: String? { "multibox_loss" }
    public var reads: [Int] { [clsPreds, bboxPreds, clsLabels, bboxLabels, bboxMasks] }
    public var writes: [Int] { [perExample, dClsPreds, dBboxPreds, metrics] }
    public var scratchQuery: String? { "t = ssd_loss_scratch_floats((int)N, \(anchorsCount), \(classes));" }

    public func body(_ ctx: KernelContext) -> [String] {
        let P = ctx.pointer, cfg = config
        return [
            "const ssd_loss_config_t cfg = { \(cfg.focal ? 1 : 0), \(CText.float(cfg.focalGamma)), \(CText.float(cfg.focalAlpha)), \(cfg.smoothL1 ? 1 : 0), \(CText.float(cfg.sigma)), \(CText.float(cfg.clsWeight)), \(CText.float(cfg.bboxWeight)), \(CText.float(cfg.negativeMiningRatio)) };",
            "ssd_multibox_loss(&cfg, (int)N, \(anchorsCount), \(classes), \(P(clsPreds)), \(P(bboxPreds)), \(P(clsLabels)), \(P(bboxLabels)), \(P(bboxMasks)), \(P(perExample)), \(P(dClsPreds)), \(P(dBboxPreds)), (double *)\(P(metrics)), S);",
        ]
    }
}

/// SGD with weight decay on every trainable slot: p -= lr * (g + wd * p), lr and wd read
/// from the hyper-parameter slots of the params region. Under mpirun the gradients are first
/// summed over the ranks (a no-op in one process).
public struct SGD: KernelFamily {
    public var slots: [Int], counts: [Int]

    public var kernelName: String? { "sgd" }
    public var reads: [Int] { slots }
    public var writes: [Int] { slots }

    public func body(_ ctx: KernelContext) -> [String] {
        let layout = ctx.layout, hyper = layout.hyperOffset
        var lines = ["ssd_allreduce_gradients(\(layout.totalFloats), P + \(layout.gradientOffset)); /* sum over ranks, weighted by batch share */",
                     "const float lr = P[\(hyper)], wd = P[\(hyper + 1)];"]
        for (b, n) in zip(slots, counts) {
            let off = ctx.buffers[b].offset / 4
            lines.append("ssd_sgd_update(\(n), P + \(off), P + \(off + layout.gradientOffset), lr, wd); /* \(ctx.buffers[b].name) */")
        }
        return lines
    }
}
