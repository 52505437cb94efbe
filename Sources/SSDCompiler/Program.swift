import SSDGraph

/// Where a buffer lives. Regions are owned by the caller (the Swift runtime); the library
/// only gets their base pointers.
public enum Region: String, Codable, Sendable {
    /// Parameters and BN state, in state_dict order (floats).
    case params
    /// Activations whose size does not depend on the batch (BN statistics).
    case fixed
    /// Activations of size bytesPerExample * N; the planned offset is multiplied by N.
    case batched
    /// A constant folded at compile time (anchors), emitted as a static array.
    case constant
    /// The ground-truth rows Y (N, G, 5) of a train or eval step, caller-owned: G, the rows
    /// per image, is a run-time argument of the step like N, so a data set with more boxes
    /// per image needs no recompilation. Not planned (it is no workspace).
    case labels
}

/// A planned piece of memory. Several graph values may share one buffer (a reshape is a
/// view of its input); several buffers may share bytes (the memory plan, by liveness).
public struct Buffer: Codable, Hashable, Sendable {
    public var id: Int
    public var name: String
    public var region: Region
    /// Bytes (fixed, constant, params) or bytes per example (batched).
    public var bytes: Int
    /// Byte offset in its region (per example for batched), set by the memory plan.
    public var offset: Int
    public var type: TensorType
}

/// Everything a kernel needs, by op family. Each case is one row of the C emitter's table.
public enum KernelBody: Hashable, Sendable {
    /// `into` nil: y is the conv's own NCHW buffer; else y is a wider buffer (a concat) that
    /// the conv writes into in place, in the layout `into` gives.
    case conv2d(x: Int, weight: Int, bias: Int?, y: Int, c: Int, h: Int, w: Int, o: Int, k: Int,
                stride: Int, pad: Int, relu: Bool, into: OutputLayout?)
    /// Two convs of one input with the same geometry, each written in place (a scale's cls
    /// and bbox heads) as one conv of first.o + second.o output channels.
    case conv2dPair(x: Int, first: PairedConv, second: PairedConv, c: Int, h: Int, w: Int, k: Int,
                    stride: Int, pad: Int)
    /// Inference: an eval-mode BN folded into the conv before it. The folded weights
    /// w * gamma / sqrt(var + eps) and bias (b - mean) * gamma / sqrt(var + eps) + beta are
    /// computed into `foldedWeight`/`foldedBias` (cheap: one pass over the weights), then one
    /// conv with the ReLU epilogue replaces conv + BN + ReLU. `pool`: a 2x2 max pool after
    /// the ReLU is done by the same kernel, and y is the pooled output.
    case conv2dFoldedBatchNorm(x: Int, weight: Int, bias: Int?, gamma: Int, beta: Int, runningMean: Int, runningVar: Int,
                               eps: Float, foldedWeight: Int, foldedBias: Int, y: Int,
                               c: Int, h: Int, w: Int, o: Int, k: Int, stride: Int, pad: Int, relu: Bool, pool: Bool)
    /// Training-mode BN (batch statistics), see BatchNormTrain.
    case batchNormTrain(BatchNormTrain)
    /// Backward of BN (batch statistics) -> ReLU -> 2x2 max pool in one pass: the gradient of
    /// the ReLU output is never written out.
    case maxPool2dBatchNormBackward(x: Int, mean: Int, variance: Int, gamma: Int, y: Int, dPooled: Int, dx: Int,
                                    dGamma: Int, dBeta: Int, c: Int, h: Int, w: Int, eps: Float)
    /// Running statistics (evaluation-mode forward).
    case batchNormEval(x: Int, gamma: Int, beta: Int, runningMean: Int, runningVar: Int, y: Int,
                       c: Int, hw: Int, eps: Float, relu: Bool)
    case relu(x: Int, y: Int, count: Int)
    case maxPool2d(x: Int, y: Int, c: Int, h: Int, w: Int)
    case globalMaxPool(x: Int, y: Int, c: Int, hw: Int)
    /// Permute/reshape/concat fused into one copy per piece into the destination.
    case copy(y: Int, pieces: [CopyPiece], yElements: Int)
    case softmax(x: Int, y: Int, rows: Int, cols: Int)
    case multiboxDetection(probs: Int, bboxPreds: Int, anchors: Int, y: Int, anchorsCount: Int,
                           classes: Int, nms: Float, pos: Float)

    // Training: labelling, loss, backward, update.
    case multiboxTarget(anchors: Int, labels: Int, bboxLabels: Int, bboxMasks: Int, clsLabels: Int,
                        anchorsCount: Int)
    case multiboxLoss(clsPreds: Int, bboxPreds: Int, clsLabels: Int, bboxLabels: Int, bboxMasks: Int,
                      perExample: Int, dClsPreds: Int, dBboxPreds: Int, metrics: Int,
                      anchorsCount: Int, classes: Int, config: LossConfig)
    /// dx = dy where y > 0 (ReLU backward from its output).
    case reluBackward(y: Int, dy: Int, dx: Int, count: Int)
    /// into += from.
    case accumulate(into: Int, from: Int, count: Int)
    case conv2dBackward(x: Int, weight: Int, dy: Int, dx: Int?, dWeight: Int, dBias: Int?,
                        c: Int, h: Int, w: Int, o: Int, k: Int, stride: Int, pad: Int)
    /// Backward of a `conv2dPair`: one backward-data for both convs (dx, if needed) and each
    /// conv's weight and bias gradients.
    case conv2dPairBackward(x: Int, first: PairedGradient, second: PairedGradient, dx: Int?,
                            c: Int, h: Int, w: Int, k: Int, stride: Int, pad: Int)
    /// Training-mode BN backward, through the ReLU that followed it when `y` is set.
    case batchNormBackward(x: Int, mean: Int, variance: Int, gamma: Int, y: Int?, dy: Int, dx: Int,
                           dGamma: Int, dBeta: Int, c: Int, hw: Int, eps: Float)
    case maxPool2dBackward(x: Int, dy: Int, dx: Int, c: Int, h: Int, w: Int)
    case globalMaxPoolBackward(x: Int, dy: Int, dx: Int, c: Int, hw: Int)
    /// The transpose of `copy`: each piece of `x` is read back and written, un-permuted, into
    /// its own destination buffer (the gradient of a fused permute/reshape/concat).
    case scatter(x: Int, pieces: [CopyPiece], destinations: [Int], xElements: Int)
    /// SGD with weight decay on every trainable slot: p -= lr * (g + wd * p), lr and wd read
    /// from the hyper-parameter slots of the params region.
    case sgd(slots: [Int], counts: [Int])
    /// A kernel of a family type (Sources/SSDCompiler/Kernels): the type itself knows its
    /// buffers, scratch, FLOPs and C text.
    case family(AnyKernelFamily)
}

extension KernelBody {
    /// Name of the training kernels (their nodes are the forward nodes they differentiate,
    /// so the node-derived name would read like a forward kernel).
    var trainingName: String? {
        switch self {
        case .multiboxTarget: return "multibox_target"
        case .multiboxLoss: return "multibox_loss"
        case .reluBackward: return "relu_backward"
        case .accumulate: return "accumulate_grad"
        case .conv2dPair: return "conv2d_pair_permute_reshape_concat"
        case .conv2dBackward: return "conv2d_backward"
        case .conv2dPairBackward: return "conv2d_pair_backward"
        case .batchNormBackward(_, _, _, _, let y, _, _, _, _, _, _, _): return y == nil ? "batch_norm_backward" : "relu_batch_norm_backward"
        case .maxPool2dBatchNormBackward: return "max_pool2d_relu_batch_norm_backward"
        case .maxPool2dBackward: return "max_pool2d_backward"
        case .globalMaxPoolBackward: return "global_max_pool_backward"
        case .scatter: return "concat_permute_backward"
        case .sgd: return "sgd"
        case .family(let f): return f.base.kernelName
        default: return nil
        }
    }
}

/// A training-mode BN kernel: batch statistics into mean/var, normalise, optional ReLU
/// epilogue and optional 2x2 max pool of the result in the same pass. In a train step it
/// also updates the running statistics and the batch counter.
public struct BatchNormTrain: Hashable, Sendable {
    public var x: Int, gamma: Int, beta: Int, mean: Int, variance: Int
    /// The full-size output; nil when only the pooled output is used.
    public var y: Int?
    public var pooled: Int?
    public var c: Int, h: Int, w: Int
    public var eps: Float
    public var relu: Bool
    public var running: RunningStats?
}

/// Where a train step's BN updates its running statistics (params-region buffers).
public struct RunningStats: Hashable, Sendable {
    public var mean: Int
    public var variance: Int
    public var counter: Int
    public var momentum: Float
}

/// The loss of SPEC sections 4 and 7, fixed when the train step is compiled.
public struct LossConfig: Codable, Hashable, Sendable {
    public var focal = false
    public var focalGamma: Float = 2
    public var focalAlpha: Float = 0.25
    public var smoothL1 = false
    public var sigma: Float = 1
    public var clsWeight: Float = 1
    public var bboxWeight: Float = 1
    public var negativeMiningRatio: Float = 0

    public init() {}

    /// The loss a model declared in the DSL (graph attribute "loss"), or the default.
    public init(graph: Graph) throws {
        self.init()
        guard let text = graph.attributes["loss"] else { return }
        let l = try Loss(attribute: text)
        if let s = l.smoothL1Sigma { smoothL1 = true; sigma = s }
        if let g = l.focalGamma { focal = true; focalGamma = g; focalAlpha = l.focalAlpha }
        negativeMiningRatio = l.negativeMiningRatio ?? 0
        clsWeight = l.clsWeight
        bboxWeight = l.bboxWeight
    }

    public var summary: String {
        var parts = [focal ? "focal(gamma=\(focalGamma), alpha=\(focalAlpha))" : "cross-entropy",
                     smoothL1 ? "smooth-L1(sigma=\(sigma))" : "L1"]
        if clsWeight != 1 || bboxWeight != 1 { parts.append("weights cls=\(clsWeight) bbox=\(bboxWeight)") }
        if negativeMiningRatio > 0 { parts.append("hard negatives 1:\(negativeMiningRatio)") }
        return parts.joined(separator: ", ")
    }
}

/// One conv of a `conv2dPair`: its parameters, output channels and destination.
public struct PairedConv: Hashable, Sendable {
    public var weight: Int
    public var bias: Int?
    public var y: Int
    public var o: Int
    public var into: OutputLayout
}

/// One conv of a `conv2dPairBackward`: its weights, output gradient (NCHW) and gradients.
public struct PairedGradient: Hashable, Sendable {
    public var weight: Int
    public var dy: Int
    public var dWeight: Int
    public var dBias: Int?
    public var o: Int
}

/// Where a conv writes output (o, p), p = oh * OW + ow, of example n, in floats from the
/// start of its destination buffer: n * image + offset + o * channel + p * pixel.
public struct OutputLayout: Hashable, Sendable {
    public var image: Int
    public var offset: Int
    public var channel: Int
    public var pixel: Int
}

/// One source of a fused copy: the source buffer read through a permutation, written as a
/// contiguous run of `innerCount` elements at `dstOffset` within each row of `dstRow`
/// elements of the destination (per example).
public struct CopyPiece: Hashable, Sendable {
    /// Source buffer and its per-example shape before the permutation.
    public var source: Int
    public var sourceDims: [Int]
    /// Permutation of the per-example axes (identity for a plain concat).
    public var perm: [Int]
    /// Concatenation layout: the piece's elements split into rows of `inner` elements,
    /// each written at row * dstRow + dstOffset.
    public var inner: Int
    public var dstRow: Int
    public var dstOffset: Int
}

public struct Kernel: Hashable, Sendable {
    public var index: Int
    public var kind: FusionKind
    /// The graph nodes this kernel computes, in order.
    public var nodes: [Int]
    public var body: KernelBody

    /// C function name, e.g. `k03_conv2d_relu`.
    public var name: String
}

/// One entry point of a compiled library: a list of kernels over planned buffers.
public struct Program: Sendable {
    public enum Mode: String, Codable, Sendable {
        /// BatchNorm with batch statistics (PyTorch's model.train()).
        case train
        /// BatchNorm with running statistics (model.eval()), plus softmax and detection.
        case eval
    }

    public var name: String
    public var mode: Mode
    public var kernels: [Kernel]
    public var buffers: [Buffer]
    /// Named inputs and outputs: buffer ids.
    public var inputs: [(name: String, buffer: Int)]
    /// An output's type is its graph value's (a reshape of a buffer shows its own shape).
    public var outputs: [(name: String, buffer: Int, type: TensorType)]
    /// Whether the program takes the ground-truth rows (entry point arguments G and Y).
    public var takesLabels: Bool { inputs.contains { buffers[$0.buffer].region == .labels } }
    /// Region sizes after planning.
    public var fixedBytes: Int = 0
    public var batchedBytesPerExample: Int = 0

    /// Buffer ids read and written by a kernel (for liveness).
    public func uses(_ k: Kernel) -> (reads: [Int], writes: [Int]) {
        switch k.body {
        case .conv2d(let x, let w, let b, let y, _, _, _, _, _, _, _, _, _):
            return ([x, w] + (b.map { [$0] } ?? []), [y])
        case .conv2dPair(let x, let a, let b, _, _, _, _, _, _):
            return ([x, a.weight] + (a.bias.map { [$0] } ?? []) + [b.weight] + (b.bias.map { [$0] } ?? []), [a.y, b.y])
        case .conv2dFoldedBatchNorm(let x, let w, let b, let g, let be, let m, let v, _, let fw, let fb, let y, _, _, _, _, _, _, _, _, _):
            return ([x, w, g, be, m, v] + (b.map { [$0] } ?? []), [fw, fb, y])
        case .batchNormTrain(let bn):
            let state = bn.running.map { [$0.mean, $0.variance, $0.counter] } ?? []
            let stats = [bn.mean, bn.variance]
            let outs = [bn.y, bn.pooled].compactMap { $0 }
            return ([bn.x, bn.gamma, bn.beta] + state, stats + outs + state)
        case .maxPool2dBatchNormBackward(let x, let m, let v, let g, let y, let dp, let dx, let dg, let db, _, _, _, _):
            return ([x, m, v, g, y, dp], [dx, dg, db])
        case .batchNormEval(let x, let g, let b, let m, let v, let y, _, _, _, _):
            return ([x, g, b, m, v], [y])
        case .relu(let x, let y, _), .maxPool2d(let x, let y, _, _, _), .globalMaxPool(let x, let y, _, _),
             .softmax(let x, let y, _, _):
            return ([x], [y])
        case .copy(let y, let pieces, _):
            return (pieces.map(\.source), [y])
        case .multiboxDetection(let p, let b, let a, let y, _, _, _, _):
            return ([p, b, a], [y])
        case .multiboxTarget(let a, let l, let bl, let bm, let cl, _):
            return ([a, l], [bl, bm, cl])
        case .multiboxLoss(let c, let b, let cl, let bl, let bm, let pe, let dc, let db, let m, _, _, _):
            return ([c, b, cl, bl, bm], [pe, dc, db, m])
        case .reluBackward(let y, let dy, let dx, _):
            return ([y, dy], [dx])
        case .accumulate(let into, let from, _):
            return ([into, from], [into])
        case .conv2dBackward(let x, let w, let dy, let dx, let dw, let db, _, _, _, _, _, _, _):
            return ([x, w, dy], (dx.map { [$0] } ?? []) + [dw] + (db.map { [$0] } ?? []))
        case .conv2dPairBackward(let x, let a, let b, let dx, _, _, _, _, _, _):
            return ([x, a.weight, a.dy, b.weight, b.dy],
                    (dx.map { [$0] } ?? []) + [a.dWeight, b.dWeight] + [a.dBias, b.dBias].compactMap { $0 })
        case .batchNormBackward(let x, let m, let v, let g, let y, let dy, let dx, let dg, let db, _, _, _):
            return ([x, m, v, g, dy] + (y.map { [$0] } ?? []), [dx, dg, db])
        case .maxPool2dBackward(let x, let dy, let dx, _, _, _), .globalMaxPoolBackward(let x, let dy, let dx, _, _):
            return ([x, dy], [dx])
        case .scatter(let x, _, let dests, _):
            return ([x], dests)
        case .sgd(let slots, _):
            return (slots, slots)
        case .family(let f):
            return (f.base.reads, f.base.writes)
        }
    }
}

/// Parameter layout of the params region: state_dict order, each tensor 64-byte aligned.
public struct ParameterSlot: Codable, Hashable, Sendable {
    public var name: String
    public var shape: [Int]
    /// "F32" or "I64" as in the checkpoint; stored as float in the region either way.
    public var dtype: String
    public var trainable: Bool
    /// Offset in floats.
    public var offset: Int
    public var count: Int
    public var node: Int
}

/// The params region: parameters, then their gradients at the same offsets plus
/// `gradientOffset` (llm.c style, so the optimiser is one loop per tensor), then a few
/// hyper-parameter floats the train step reads (learning rate, weight decay).
public struct ParameterLayout: Sendable {
    public var slots: [ParameterSlot]
    /// Floats of the parameters alone.
    public var totalFloats: Int
    public var gradientOffset: Int { totalFloats }
    public var hyperOffset: Int { 2 * totalFloats }
    public static let hyperFloats = 16
    /// Floats of the whole region.
    public var regionFloats: Int { 2 * totalFloats + ParameterLayout.hyperFloats }

    public init(graph: Graph) {
        var slots: [ParameterSlot] = []
        var offset = 0
        for (node, info) in graph.parameters {
            let count = node.type.elementCount
            slots.append(ParameterSlot(name: info.name, shape: node.type.dims,
                                       dtype: node.type.dtype == .i64 ? "I64" : "F32",
                                       trainable: info.trainable, offset: offset, count: count, node: node.id))
            offset += (count + 15) / 16 * 16
        }
        self.slots = slots
        self.totalFloats = offset
    }

    public func slot(forNode id: Int) -> ParameterSlot? { slots.first { $0.node == id } }
}

extension KernelBody {
    /// Floating-point operations of the kernel for a batch of `n` (multiply-add = 2), for
    /// GFLOP/s in profiles. Only the compute-bound kernels are counted.
    public func flops(batch n: Int) -> Double {
        func conv(_ c: Int, _ h: Int, _ w: Int, _ o: Int, _ k: Int, _ s: Int, _ p: Int) -> Double {
            let oh = (h + 2 * p - k) / s + 1, ow = (w + 2 * p - k) / s + 1
            return 2.0 * Double(n) * Double(o * oh * ow) * Double(c * k * k)
        }
        switch self {
        case .conv2d(_, _, _, _, let c, let h, let w, let o, let k, let s, let p, _, _),
             .conv2dFoldedBatchNorm(_, _, _, _, _, _, _, _, _, _, _, let c, let h, let w, let o, let k, let s, let p, _, _):
            return conv(c, h, w, o, k, s, p)
        case .conv2dPair(_, let a, let b, let c, let h, let w, let k, let s, let p):
            return conv(c, h, w, a.o + b.o, k, s, p)
        case .conv2dBackward(_, _, _, let dx, _, _, let c, let h, let w, let o, let k, let s, let p):
            return conv(c, h, w, o, k, s, p) * (dx == nil ? 1 : 2)
        case .conv2dPairBackward(_, let a, let b, let dx, let c, let h, let w, let k, let s, let p):
            return conv(c, h, w, a.o + b.o, k, s, p) * (dx == nil ? 1 : 2)
        case .family(let f):
            return f.base.flops(batch: n)
        default:
            return 0
        }
    }
}
