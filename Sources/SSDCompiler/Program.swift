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
    public func uses(_ k: Kernel) -> (reads: [Int], writes: [Int]) { (k.body.reads, k.body.writes) }
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
