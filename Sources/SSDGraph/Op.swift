/// How an op may be fused with its neighbours, after TVM's op pattern kinds. The fusion
/// pass decides from these kinds alone, never from op names.
public enum FusionKind: String, Codable, Sendable {
    /// Each output element depends on the same element of each input (relu).
    case elementwise
    /// Elementwise with broadcasting of some inputs.
    case broadcast
    /// Output elements are input elements moved around (permute, reshape, concat).
    case injective
    /// Reduces some axes (global max pool).
    case reduction
    /// Heavy op whose output can take an elementwise epilogue while it is hot (conv,
    /// batch norm, pooling).
    case outElementwiseFusable
    /// Not fused with anything (softmax, detection, anchors).
    case opaque
}

/// How a parameter is initialised (SPEC section 1: PyTorch's defaults; Xavier as an option).
public enum Initializer: Codable, Hashable, Sendable {
    /// U(-b, b) with b = 1/sqrt(fanIn): PyTorch's conv weight (kaiming_uniform, a=sqrt(5))
    /// and conv bias defaults.
    case uniformFanIn(fanIn: Int)
    /// Xavier/Glorot uniform: U(-b, b), b = sqrt(6 / (fanIn + fanOut)).
    case xavier(fanIn: Int, fanOut: Int)
    case constant(Float)
}

/// A parameter or a piece of persistent state (BN running statistics).
public struct ParameterInfo: Codable, Hashable, Sendable {
    /// The PyTorch state_dict name, e.g. `blk_0.0.1.running_mean`.
    public var name: String
    public var initializer: Initializer
    /// Trained by SGD (conv weight/bias, BN weight/bias) or state (running stats, counter).
    public var trainable: Bool

    public init(name: String, initializer: Initializer, trainable: Bool) {
        self.name = name
        self.initializer = initializer
        self.trainable = trainable
    }
}

/// The ops of the typed graph. Each declares its shape rule (`resultType`) and fusion kind
/// (`fusionKind`) here, in one table; gradient rules live beside them in the compiler's
/// autodiff table.
public enum Op: Codable, Hashable, Sendable {
    /// A batched network input, e.g. the images X.
    case input(name: String)
    case parameter(ParameterInfo)
    /// inputs: x (N,C,H,W), weight (O,C,k,k), [bias (O)].
    case conv2d(stride: Int, padding: Int)
    /// inputs: x, weight, bias, running_mean, running_var, num_batches_tracked.
    /// Training mode normalises with batch statistics; evaluation with the running ones.
    case batchNorm(eps: Float, momentum: Float)
    case relu
    /// kernel 2, stride 2 (PyTorch MaxPool2d(2)).
    case maxPool2d
    /// AdaptiveMaxPool2d((1,1)).
    case globalMaxPool
    /// A permutation of the full axes (the batch axis must stay first).
    case permute([Int])
    /// A reshape of the per-example dims (the batch axis is kept).
    case reshape([Int])
    case concat(axis: Int)
    case softmax(axis: Int)
    /// d2l's multibox_prior for a feature map; depends only on its shape, so the compiler
    /// folds it to a constant.
    case anchors(sizes: [Float], ratios: [Float])
    /// d2l's multibox_detection. inputs: probs (N,A,q+1), bbox_preds (N,4A), anchors (1,A,4).
    case multiboxDetection(nmsThreshold: Float, posThreshold: Float)
    /// nn.Conv2d in general: any kernel, stride, padding and dilation per axis, and groups
    /// (depthwise when groups == C == O). inputs: x (N,C,H,W), weight (O,C/groups,kh,kw),
    /// [bias (O)]. The plain case (square kernel, dilation 1, one group) stays `conv2d`.
    case convolution(ConvAttributes)
    /// nn.MaxPool2d / nn.AvgPool2d with any window, stride, padding and ceil mode.
    case pool2d(PoolAttributes)
    /// AdaptiveAvgPool2d((1,1)).
    case globalAvgPool
    /// An elementwise activation other than ReLU.
    case activation(Activation)
    /// a + b, same type (a residual connection).
    case add
    /// x (N,C,H,W) times a per-channel factor s: a parameter (C) or a value (N,C,1,1) of
    /// the same example (squeeze-excite).
    case mulChannels
    /// nn.Upsample(scale_factor=(sh,sw), mode="nearest").
    case upsampleNearest(scaleH: Int, scaleW: Int)
    /// SSD300's L2Norm: x / (sqrt(sum over channels of x^2) + eps) * weight (C).
    case l2Norm(eps: Float)
    /// Per-example standardisation over all of an example's values: (x - mean) / sqrt(var + eps),
    /// var biased (PyTorch: F.layer_norm(x, x.shape[1:], eps=eps), no weights).
    case standardize(eps: Float)

    public var mnemonic: String {
        switch self {
        case .input: return "input"
        case .parameter: return "parameter"
        case .conv2d: return "conv2d"
        case .batchNorm: return "batch_norm"
        case .relu: return "relu"
        case .maxPool2d: return "max_pool2d"
        case .globalMaxPool: return "global_max_pool"
        case .permute: return "permute"
        case .reshape: return "reshape"
        case .concat: return "concat"
        case .softmax: return "softmax"
        case .anchors: return "anchors"
        case .multiboxDetection: return "multibox_detection"
        case .convolution: return "conv2d"
        case .pool2d(let p): return p.kind == .max ? "max_pool2d" : "avg_pool2d"
        case .globalAvgPool: return "global_avg_pool"
        case .activation(let a): return a.rawValue
        case .add: return "add"
        case .mulChannels: return "mul_channels"
        case .upsampleNearest: return "upsample_nearest"
        case .l2Norm: return "l2_norm"
        case .standardize: return "standardize"
        }
    }

    public var fusionKind: FusionKind {
        switch self {
        case .input, .parameter: return .opaque
        case .conv2d, .batchNorm, .maxPool2d: return .outElementwiseFusable
        case .relu: return .elementwise
        case .globalMaxPool: return .reduction
        case .permute, .reshape, .concat: return .injective
        case .softmax, .anchors, .multiboxDetection: return .opaque
        case .convolution, .pool2d: return .outElementwiseFusable
        case .globalAvgPool, .l2Norm, .standardize: return .reduction
        case .activation, .add: return .elementwise
        case .mulChannels: return .broadcast
        case .upsampleNearest: return .injective
        }
    }

    /// Whether gradients flow through this op (anchors and detection are not).
    public var isDifferentiable: Bool {
        switch self {
        case .anchors, .multiboxDetection, .input, .parameter: return false
        default: return true
        }
    }

    /// Attributes for dumps, in a fixed order.
    public var attributeText: String {
        switch self {
        case .input(let name): return "name=\(name)"
        case .parameter(let p): return "name=\(p.name)\(p.trainable ? "" : " state")"
        case .conv2d(let s, let p): return "stride=\(s) padding=\(p)"
        case .batchNorm(let eps, let m): return "eps=\(eps) momentum=\(m)"
        case .permute(let perm): return "perm=\(perm)"
        case .reshape(let dims): return "dims=\(dims)"
        case .concat(let axis), .softmax(let axis): return "axis=\(axis)"
        case .anchors(let sizes, let ratios): return "sizes=\(sizes) ratios=\(ratios)"
        case .multiboxDetection(let nms, let pos): return "nms=\(nms) pos=\(pos)"
        case .relu, .maxPool2d, .globalMaxPool, .globalAvgPool, .activation, .add, .mulChannels: return ""
        case .convolution(let a): return a.description
        case .pool2d(let p): return p.description
        case .upsampleNearest(let sh, let sw): return "scale=\(sh)x\(sw)"
        case .l2Norm(let eps), .standardize(let eps): return "eps=\(eps)"
        }
    }

    /// The shape rule: the result type for these input types, or a message saying what
    /// does not fit (the builder adds the file:line).
    public func resultType(_ t: [TensorType]) -> Result<TensorType, GraphOpError> {
        func fail(_ m: String) -> Result<TensorType, GraphOpError> { .failure(GraphOpError(m)) }
        switch self {
        case .input, .parameter:
            return fail("\(mnemonic) has no shape rule: its type is declared")

        case .conv2d(let stride, let padding):
            guard t.count == 2 || t.count == 3 else { return fail("conv2d takes x, weight and an optional bias") }
            let x = t[0], w = t[1]
            guard x.batched, x.dims.count == 3 else { return fail("conv2d expects x of shape (N,C,H,W), got \(x)") }
            guard !w.batched, w.dims.count == 4, w.dims[2] == w.dims[3] else {
                return fail("conv2d expects a square weight (O,C,k,k), got \(w)")
            }
            guard w.dims[1] == x.dims[0] else {
                return fail("conv2d expects \(w.dims[1]) input channels, got \(x.dims[0]) from a value of type \(x)")
            }
            if t.count == 3 {
                guard t[2].dims == [w.dims[0]], !t[2].batched else {
                    return fail("conv2d bias must have shape (\(w.dims[0])), got \(t[2])")
                }
            }
            let k = w.dims[2]
            let oh = (x.dims[1] + 2 * padding - k) / stride + 1
            let ow = (x.dims[2] + 2 * padding - k) / stride + 1
            guard stride > 0, oh > 0, ow > 0 else {
                return fail("conv2d output would be empty for input \(x) with kernel \(k), stride \(stride), padding \(padding)")
            }
            return .success(TensorType([w.dims[0], oh, ow], batched: true))

        case .batchNorm:
            guard t.count == 6 else { return fail("batch_norm takes x, weight, bias, running_mean, running_var, num_batches_tracked") }
            let x = t[0]
            guard x.batched, x.dims.count == 3 else { return fail("batch_norm expects x of shape (N,C,H,W), got \(x)") }
            let c = x.dims[0]
            for (i, name) in ["weight", "bias", "running_mean", "running_var"].enumerated()
            where t[i + 1].dims != [c] {
                return fail("batch_norm expects \(name) of shape (\(c)) for \(c) channels, got \(t[i + 1])")
            }
            return .success(x)

        case .relu:
            guard t.count == 1 else { return fail("relu takes one input") }
            return .success(t[0])

        case .maxPool2d:
            guard t.count == 1, t[0].batched, t[0].dims.count == 3 else { return fail("max_pool2d expects (N,C,H,W), got \(t.first.map { "\($0)" } ?? "nothing")") }
            let x = t[0]
            guard x.dims[1] >= 2, x.dims[2] >= 2 else { return fail("max_pool2d needs H, W >= 2, got \(x)") }
            return .success(TensorType([x.dims[0], x.dims[1] / 2, x.dims[2] / 2], batched: true))

        case .globalMaxPool:
            guard t.count == 1, t[0].batched, t[0].dims.count == 3 else { return fail("global_max_pool expects (N,C,H,W)") }
            return .success(TensorType([t[0].dims[0], 1, 1], batched: true))

        case .permute(let perm):
            guard t.count == 1 else { return fail("permute takes one input") }
            let x = t[0]
            guard perm.sorted() == Array(0..<x.rank) else { return fail("permute \(perm) is not a permutation of the \(x.rank) axes of \(x)") }
            if x.batched {
                guard perm[0] == 0 else { return fail("permute must keep the batch axis first, got \(perm)") }
                return .success(TensorType(perm.dropFirst().map { x.dims[$0 - 1] }, batched: true, dtype: x.dtype))
            }
            return .success(TensorType(perm.map { x.dims[$0] }, batched: false, dtype: x.dtype))

        case .reshape(let dims):
            guard t.count == 1 else { return fail("reshape takes one input") }
            let x = t[0]
            let known = dims.filter { $0 != -1 }.reduce(1, *)
            let holes = dims.filter { $0 == -1 }.count
            guard holes <= 1, dims.allSatisfy({ $0 > 0 || $0 == -1 }) else { return fail("reshape \(dims): at most one -1 and positive sizes") }
            var out = dims
            if holes == 1 {
                guard known > 0, x.elementCount % known == 0 else { return fail("reshape \(dims) does not divide the \(x.elementCount) elements of \(x)") }
                out[out.firstIndex(of: -1)!] = x.elementCount / known
            }
            guard out.reduce(1, *) == x.elementCount else { return fail("reshape to \(out) needs \(out.reduce(1, *)) elements, \(x) has \(x.elementCount)") }
            return .success(TensorType(out, batched: x.batched, dtype: x.dtype))

        case .concat(let axis):
            guard let first = t.first else { return fail("concat of nothing") }
            guard axis >= 0, axis < first.rank, !(first.batched && axis == 0) else {
                return fail("concat axis \(axis) is not a non-batch axis of \(first)")
            }
            let a = first.batched ? axis - 1 : axis
            var total = 0
            for (i, x) in t.enumerated() {
                guard x.batched == first.batched, x.dims.count == first.dims.count, x.dtype == first.dtype else {
                    return fail("concat input \(i) has type \(x), input 0 has \(first)")
                }
                for d in 0..<x.dims.count where d != a && x.dims[d] != first.dims[d] {
                    return fail("concat input \(i) has type \(x), which differs from \(first) off axis \(axis)")
                }
                total += x.dims[a]
            }
            var dims = first.dims
            dims[a] = total
            return .success(TensorType(dims, batched: first.batched, dtype: first.dtype))

        case .softmax(let axis):
            guard t.count == 1 else { return fail("softmax takes one input") }
            guard axis == t[0].rank - 1 else { return fail("softmax is supported over the last axis only (axis \(t[0].rank - 1)), got \(axis)") }
            return .success(t[0])

        case .anchors(let sizes, let ratios):
            guard t.count == 1, t[0].batched, t[0].dims.count == 3 else { return fail("anchors expect a feature map (N,C,H,W)") }
            guard !sizes.isEmpty, !ratios.isEmpty else { return fail("anchors need at least one size and one ratio") }
            let perPixel = sizes.count + ratios.count - 1
            return .success(TensorType([1, t[0].dims[1] * t[0].dims[2] * perPixel, 4], batched: false))

        case .multiboxDetection:
            guard t.count == 3 else { return fail("multibox_detection takes probs, bbox_preds, anchors") }
            let probs = t[0], offsets = t[1], anchors = t[2]
            guard probs.batched, probs.dims.count == 2, probs.dims[1] >= 2 else { return fail("multibox_detection expects probs (N,A,q+1), got \(probs)") }
            let a = probs.dims[0]
            guard offsets.batched, offsets.dims == [4 * a] else { return fail("multibox_detection expects bbox_preds (N,\(4 * a)), got \(offsets)") }
            guard !anchors.batched, anchors.dims == [1, a, 4] else { return fail("multibox_detection expects anchors (1,\(a),4), got \(anchors)") }
            return .success(TensorType([a, 6], batched: true))

        case .convolution(let a):
            return a.resultType(t)

        case .pool2d(let p):
            guard t.count == 1, t[0].batched, t[0].dims.count == 3 else { return fail("\(mnemonic) expects (N,C,H,W), got \(t.first.map { "\($0)" } ?? "nothing")") }
            let x = t[0]
            guard let oh = p.outputSize(x.dims[1], axis: 0), let ow = p.outputSize(x.dims[2], axis: 1) else {
                return fail("\(mnemonic) \(p) does not fit input \(x): padding must be at most half the window and the output non-empty")
            }
            return .success(TensorType([x.dims[0], oh, ow], batched: true))

        case .globalAvgPool:
            guard t.count == 1, t[0].batched, t[0].dims.count == 3 else { return fail("global_avg_pool expects (N,C,H,W)") }
            return .success(TensorType([t[0].dims[0], 1, 1], batched: true))

        case .activation:
            guard t.count == 1 else { return fail("\(mnemonic) takes one input") }
            return .success(t[0])

        case .add:
            guard t.count == 2 else { return fail("add takes two inputs") }
            guard t[0] == t[1] else { return fail("add needs two values of the same type, got \(t[0]) and \(t[1])") }
            return .success(t[0])

        case .mulChannels:
            guard t.count == 2, t[0].batched, t[0].dims.count == 3 else { return fail("mul_channels expects x (N,C,H,W) and a per-channel factor") }
            let c = t[0].dims[0], s = t[1]
            let ok = (s.batched && s.dims == [c, 1, 1]) || (!s.batched && (s.dims == [c] || s.dims == [c, 1, 1]))
            guard ok else { return fail("mul_channels expects a factor of shape (N,\(c),1,1) or (\(c)) for \(t[0]), got \(s)") }
            return .success(t[0])

        case .upsampleNearest(let sh, let sw):
            guard t.count == 1, t[0].batched, t[0].dims.count == 3 else { return fail("upsample_nearest expects (N,C,H,W)") }
            guard sh >= 1, sw >= 1 else { return fail("upsample_nearest needs scale factors >= 1, got \(sh)x\(sw)") }
            let x = t[0]
            return .success(TensorType([x.dims[0], x.dims[1] * sh, x.dims[2] * sw], batched: true))

        case .l2Norm:
            guard t.count == 2, t[0].batched, t[0].dims.count == 3 else { return fail("l2_norm expects x (N,C,H,W) and a weight (C)") }
            guard !t[1].batched, t[1].dims == [t[0].dims[0]] else {
                return fail("l2_norm expects a weight of shape (\(t[0].dims[0])) for \(t[0]), got \(t[1])")
            }
            return .success(t[0])

        case .standardize(let eps):
            guard t.count == 1, t[0].batched, !t[0].dims.isEmpty else { return fail("standardize expects one batched tensor (N,...)") }
            guard eps.isFinite, eps > 0 else { return fail("standardize needs eps > 0, got \(eps)") }
            return .success(t[0])
        }
    }
}

public struct GraphOpError: Error, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
}
