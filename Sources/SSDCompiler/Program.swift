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
    case conv2d(x: Int, weight: Int, bias: Int?, y: Int, c: Int, h: Int, w: Int, o: Int, k: Int,
                stride: Int, pad: Int, relu: Bool)
    /// Batch statistics into mean/var, then normalise (training-mode forward).
    case batchNormTrain(x: Int, gamma: Int, beta: Int, mean: Int, variance: Int, y: Int,
                        c: Int, hw: Int, eps: Float, relu: Bool)
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
    /// Region sizes after planning.
    public var fixedBytes: Int = 0
    public var batchedBytesPerExample: Int = 0

    /// Buffer ids read and written by a kernel (for liveness).
    public func uses(_ k: Kernel) -> (reads: [Int], writes: [Int]) {
        switch k.body {
        case .conv2d(let x, let w, let b, let y, _, _, _, _, _, _, _, _):
            return ([x, w] + (b.map { [$0] } ?? []), [y])
        case .batchNormTrain(let x, let g, let b, let m, let v, let y, _, _, _, _):
            return ([x, g, b], [m, v, y])
        case .batchNormEval(let x, let g, let b, let m, let v, let y, _, _, _, _):
            return ([x, g, b, m, v], [y])
        case .relu(let x, let y, _), .maxPool2d(let x, let y, _, _, _), .globalMaxPool(let x, let y, _, _),
             .softmax(let x, let y, _, _):
            return ([x], [y])
        case .copy(let y, let pieces, _):
            return (pieces.map(\.source), [y])
        case .multiboxDetection(let p, let b, let a, let y, _, _, _, _):
            return ([p, b, a], [y])
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

public struct ParameterLayout: Sendable {
    public var slots: [ParameterSlot]
    public var totalFloats: Int

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
