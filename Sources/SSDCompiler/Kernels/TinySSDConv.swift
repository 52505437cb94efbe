import SSDGraph

/// The square-kernel convolutions of TinySSD's route (Winograd F(2x2,3x3) or direct, by
/// the runtime's choice; Runtime/conv.c), their fused forms and their gradients.

/// The runtime's `ssd_conv2d_t` geometry of a square-kernel conv, as C.
struct SquareConv: Hashable, Sendable {
    var c: Int, h: Int, w: Int, o: Int, k: Int, stride: Int, pad: Int

    var call: String { "ssd_conv2d_geometry((int)N, \(c), \(h), \(w), \(o), \(k), \(stride), \(pad))" }

    var declaration: String { "const ssd_conv2d_t g = \(call);" }

    func flops(batch n: Int) -> Double {
        let oh = (h + 2 * pad - k) / stride + 1, ow = (w + 2 * pad - k) / stride + 1
        return 2.0 * Double(n) * Double(o * oh * ow) * Double(c * k * k)
    }

    func scratch(_ function: String) -> String { "{ \(declaration) t = \(function)(&g); }" }

    /// Floats of the Winograd-transformed weights `ssd_conv2d_prepare` writes for this conv,
    /// where Runtime/winograd.c's forward takes the shape (3x3, stride 1, pad 1, width a
    /// multiple of 16, even height, 16+ channels each side) at some batch size, else 0:
    /// 36 x O (rounded up to 4) x C where winograd4.c's F(4x4) takes it (height a multiple
    /// of 4, width of 32, at most 128 channels each side), else 16 x O x C for F(2x2). The
    /// runtime checks the size it is given against its own rule and prepares nothing if it
    /// falls short, so a mismatch costs speed, never correctness.
    var preparedFloats: Int {
        let oh = (h + 2 * pad - k) / stride + 1, ow = (w + 2 * pad - k) / stride + 1
        guard k == 3, stride == 1, pad == 1, ow % 16 == 0, oh % 2 == 0, oh >= 2, min(c, o) >= 16 else { return 0 }
        let tiles4 = oh % 4 == 0 && ow % 32 == 0 && max(c, o) <= 128
        return (tiles4 ? 36 : 16) * ((o + 3) / 4 * 4) * c
    }
}

/// A conv's in-place output: the ssd_conv2d_out_t declaration and the destination pointer.
func inPlaceOutput(_ ctx: KernelContext, _ name: String, _ y: Int, _ into: OutputLayout) -> (String, String) {
    ("const ssd_conv2d_out_t \(name) = { \(into.image), \(into.channel), \(into.pixel) }; /* in place in \(ctx.buffers[y].name) */",
     ctx.pointer(y) + (into.offset == 0 ? "" : " + \(into.offset)"))
}

/// Conv (+ ReLU epilogue); `into` nil: y is the conv's own NCHW buffer, else a wider buffer
/// (a concat) written in place in the layout `into` gives.
public struct Conv2dForward: KernelFamily {
    public var x: Int, weight: Int, bias: Int?, y: Int
    var geometry: SquareConv
    public var relu: Bool
    public var into: OutputLayout?

    public var reads: [Int] { [x, weight] + (bias.map { [$0] } ?? []) }
    public var writes: [Int] { [y] }
    public func flops(batch n: Int) -> Double { geometry.flops(batch: n) }
    public var scratchQuery: String? { geometry.scratch("ssd_conv2d_scratch_floats") }

    public func body(_ ctx: KernelContext) -> [String] {
        let P = ctx.pointer, b = CText.optional(bias, P)
        guard let into else {
            return [geometry.declaration, "ssd_conv2d_forward(&g, \(P(x)), \(P(weight)), \(b), \(P(y)), \(relu ? 1 : 0), S);"]
        }
        let (layout, dst) = inPlaceOutput(ctx, "into", y, into)
        return [geometry.declaration, layout,
                "ssd_conv2d_forward_strided(&g, \(P(x)), \(P(weight)), \(b), \(dst), &into, \(relu ? 1 : 0), S);"]
    }
}

/// Two convs of one input with the same geometry, each written in place (a scale's cls and
/// bbox heads), as one conv of first.o + second.o output channels.
public struct Conv2dPairForward: KernelFamily {
    public var x: Int
    public var first: PairedConv, second: PairedConv
    var geometry: SquareConv  // o = first.o + second.o

    public var kernelName: String? { "conv2d_pair_permute_reshape_concat" }
    public var reads: [Int] { [x, first.weight] + (first.bias.map { [$0] } ?? []) + [second.weight] + (second.bias.map { [$0] } ?? []) }
    public var writes: [Int] { [first.y, second.y] }
    public func flops(batch n: Int) -> Double { geometry.flops(batch: n) }
    public var scratchQuery: String? { geometry.scratch("ssd_conv2d_pair_scratch_floats") }

    public func body(_ ctx: KernelContext) -> [String] {
        let P = ctx.pointer
        let (layout1, dst1) = inPlaceOutput(ctx, "into1", first.y, first.into), (layout2, dst2) = inPlaceOutput(ctx, "into2", second.y, second.into)
        return [
            geometry.declaration, layout1, layout2,
            "ssd_conv2d_forward_pair(&g, \(first.o), \(P(x)), \(P(first.weight)), \(CText.optional(first.bias, P)), \(dst1), &into1,",
            "                        \(P(second.weight)), \(CText.optional(second.bias, P)), \(dst2), &into2, S);",
        ]
    }
}

/// Inference: an eval-mode BN folded into the conv before it. The folded weights
/// w * gamma / sqrt(var + eps) and bias (b - mean) * gamma / sqrt(var + eps) + beta depend on
/// the parameters only: computed into `foldedWeight`/`foldedBias` when the parameters have
/// changed since the last call (see CEmitter's weight cache) and kept in F otherwise; then
/// one conv with the ReLU epilogue replaces conv + BN + ReLU. `pool`: a 2x2 max pool after
/// the ReLU is done by the same kernel, and y is the pooled output. `prepared`: where the
/// runtime's Winograd path can take the conv, the folded weights' Winograd transform
/// (`SquareConv.preparedFloats`), kept in F beside them, so no call transforms them again.
public struct Conv2dFoldedBatchNorm: KernelFamily {
    public var x: Int, weight: Int, bias: Int?, gamma: Int, beta: Int, runningMean: Int, runningVar: Int
    public var eps: Float
    public var foldedWeight: Int, foldedBias: Int, prepared: Int?, y: Int
    var geometry: SquareConv
    public var relu: Bool, pool: Bool

    public var reads: [Int] { [x, weight, gamma, beta, runningMean, runningVar] + (bias.map { [$0] } ?? []) }
    public var writes: [Int] { [foldedWeight, foldedBias] + (prepared.map { [$0] } ?? []) + [y] }
    public var persistent: [Int] { [foldedWeight, foldedBias] + (prepared.map { [$0] } ?? []) }
    public func flops(batch n: Int) -> Double { geometry.flops(batch: n) }
    public var scratchQuery: String? { geometry.scratch(pool ? "ssd_conv2d_pool_scratch_floats" : "ssd_conv2d_scratch_floats") }

    public func body(_ ctx: KernelContext) -> [String] {
        let P = ctx.pointer
        let per = geometry.c * geometry.k * geometry.k
        var head: [String]
        if let prepared {
            head = [
                "float *restrict fw = \(P(foldedWeight)), *restrict fb = \(P(foldedBias)), *restrict fu = \(P(prepared));",
                "static ssdc_cache_t cache; /* fw, fb and fu (fw transformed) depend on the parameters only: kept in F between calls */",
                "ssd_conv2d_t g = \(geometry.call);",
                "g.prepared = fu;",
                "g.prepared_floats = \(geometry.preparedFloats);",
            ]
        } else {
            head = [
                "float *restrict fw = \(P(foldedWeight)), *restrict fb = \(P(foldedBias));",
                "static ssdc_cache_t cache; /* fw, fb depend on the parameters only: kept in F between calls */",
            ]
        }
        return head + [
            "const uint64_t generation = ssdc_cache_generation(&cache, P, F);",
            "if (generation) {",
            "    const float *restrict w = \(P(weight)), *restrict gamma = \(P(gamma)), *restrict beta = \(P(beta));",
            "    const float *restrict mean = \(P(runningMean)), *restrict var = \(P(runningVar));",
            "    for (int o = 0; o < \(geometry.o); o++) {",
            "        const float scale = gamma[o] / sqrtf(var[o] + \(CText.float(eps)));",
            "        for (int i = 0; i < \(per); i++) fw[o * \(per) + i] = w[o * \(per) + i] * scale;",
            "        fb[o] = (\(bias.map { "\(P($0))[o]" } ?? "0.0f") - mean[o]) * scale + beta[o];",
            "    }",
        ] + (prepared == nil ? [] : ["    ssd_conv2d_prepare(&g, fw);"]) + [
            "    ssdc_cache_filled(&cache, P, F, generation);",
            "}",
        ] + (prepared == nil ? [geometry.declaration] : []) + [
            "ssd_conv2d_forward\(pool ? "_pool" : "")(&g, \(P(x)), fw, fb, \(P(y)), \(relu ? 1 : 0), S);",
        ]
    }
}

/// Gradients of a square-kernel conv: dx (when its input needs one), dW and db.
public struct Conv2dBackward: KernelFamily {
    public var x: Int, weight: Int, dy: Int
    public var dx: Int?, dWeight: Int, dBias: Int?
    var geometry: SquareConv

    public var kernelName: String? { "conv2d_backward" }
    public var reads: [Int] { [x, weight, dy] }
    public var writes: [Int] { (dx.map { [$0] } ?? []) + [dWeight] + (dBias.map { [$0] } ?? []) }
    public func flops(batch n: Int) -> Double { geometry.flops(batch: n) * (dx == nil ? 1 : 2) }
    public var scratchQuery: String? { geometry.scratch("ssd_conv2d_scratch_floats") }

    public func body(_ ctx: KernelContext) -> [String] {
        let P = ctx.pointer
        var lines = [geometry.declaration]
        if let dx { lines.append("ssd_conv2d_backward_data(&g, \(P(dy)), \(P(weight)), \(P(dx)), S);") }
        lines.append("ssd_conv2d_backward_weight(&g, \(P(x)), \(P(dy)), \(P(dWeight)), \(CText.optional(dBias, P)), S);")
        return lines
    }
}

/// Backward of a `Conv2dPairForward`: one backward-data for both convs (dx, if needed) and
/// each conv's weight and bias gradients.
public struct Conv2dPairBackward: KernelFamily {
    public var x: Int
    public var first: PairedGradient, second: PairedGradient
    public var dx: Int?
    var geometry: SquareConv  // o = first.o + second.o

    public var kernelName: String? { "conv2d_pair_backward" }
    public var reads: [Int] { [x, first.weight, first.dy, second.weight, second.dy] }
    public var writes: [Int] { (dx.map { [$0] } ?? []) + [first.dWeight, second.dWeight] + [first.dBias, second.dBias].compactMap { $0 } }
    public func flops(batch n: Int) -> Double { geometry.flops(batch: n) * (dx == nil ? 1 : 2) }
    public var scratchQuery: String? { geometry.scratch("ssd_conv2d_pair_backward_scratch_floats") }

    public func body(_ ctx: KernelContext) -> [String] {
        let P = ctx.pointer, a = first, b = second
        return [
            geometry.declaration,
            "ssd_conv2d_backward_pair(&g, \(a.o), \(P(x)), \(P(a.weight)), \(P(a.dy)), \(P(a.dWeight)), \(CText.optional(a.dBias, P)),",
            "                         \(P(b.weight)), \(P(b.dy)), \(P(b.dWeight)), \(CText.optional(b.dBias, P)), \(CText.optional(dx, P)), S);",
        ]
    }
}
