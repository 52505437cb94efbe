import Foundation
import SSDGraph

/// Turns planned programs into model.c and model.h.
///
/// Each kernel becomes one static function preceded by a comment naming the graph nodes and
/// model-file lines it implements; the entry point of a program calls its kernels in order.
/// The text depends only on the programs (fixed iteration orders, `%.9g` floats), so the
/// same model always gives byte-identical C. How each kernel body is written is one row
/// per KernelBody case in `body(_:)`.
public struct CEmitter {
    public let model: CompiledModel

    public init(_ model: CompiledModel) { self.model = model }

    /// The inference graph: a superset of the model graph with the same node ids.
    var graph: Graph { model.inferenceGraph }

    // MARK: buffers

    /// C expression for a buffer's base pointer inside a kernel.
    func ptr(_ p: Program, _ id: Int) -> String {
        let b = p.buffers[id]
        switch b.region {
        case .params: return "(P + \(b.offset / 4))"
        case .fixed: return "((float *)(F + \(b.offset)))"
        case .batched: return "((float *)(B + (size_t)\(b.offset) * N))"
        case .constant: return cName(b.name)
        case .labels: return "Y"
        }
    }

    func cName(_ s: String) -> String {
        "c_" + s.map { $0.isLetter || $0.isNumber ? String($0) : "_" }.joined()
    }

    static func macro(_ s: String) -> String {
        s.uppercased().map { $0.isLetter || $0.isNumber ? String($0) : "_" }.joined()
    }

    static func float(_ x: Float) -> String {
        if x.isNaN { return "NAN" }
        if x.isInfinite { return x > 0 ? "INFINITY" : "-INFINITY" }
        var s = String(format: "%.9g", Double(x))
        if !s.contains(".") && !s.contains("e") { s += ".0" }
        return s + "f"
    }

    // MARK: kernels

    func comment(_ p: Program, _ k: Kernel) -> String {
        var lines = ["/* \(k.name)  [\(k.kind.rawValue)]"]
        for id in k.nodes {
            let n = graph[id]
            let attrs = n.op.attributeText.isEmpty ? "" : " {\(n.op.attributeText)}"
            lines.append(" *   %\(id) \(n.op.mnemonic)\(attrs) : \(n.type)  \(n.name)  \(n.location)")
        }
        let (r, w) = p.uses(k)
        lines.append(" *   reads  \(r.map { place(p, $0) }.joined(separator: ", "))")
        lines.append(" *   writes \(w.map { place(p, $0) }.joined(separator: ", "))")
        lines.append(" */")
        return lines.joined(separator: "\n")
    }

    /// Where a buffer lives, as comments and the kernel listing show it: parameters by
    /// float index, workspaces by byte offset (per example in the batched region).
    func place(_ p: Program, _ id: Int) -> String {
        let b = p.buffers[id]
        switch b.region {
        case .params: return "\(b.name) P[\(b.offset / 4)]"
        case .fixed: return "\(b.name) F+\(b.offset)"
        case .batched: return "\(b.name) B+\(b.offset)*N"
        case .constant: return "\(b.name) \(cName(b.name))"
        case .labels: return "\(b.name) Y (N x G rows)"
        }
    }

    /// A conv's in-place output: the ssd_conv2d_out_t declaration, and the destination pointer.
    func inPlace(_ p: Program, _ name: String, _ y: Int, _ into: OutputLayout) -> (String, String) {
        ("const ssd_conv2d_out_t \(name) = { \(into.image), \(into.channel), \(into.pixel) }; /* in place in \(p.buffers[y].name) */",
         ptr(p, y) + (into.offset == 0 ? "" : " + \(into.offset)"))
    }

    /// Whether a program writes the params region (a train step: SGD, BN running statistics).
    func writesParameters(_ p: Program) -> Bool {
        p.kernels.contains { k in p.uses(k).writes.contains { p.buffers[$0].region == .params } }
    }

    /// The bookkeeping of what a kernel derives from the parameters alone (BN folded into a
    /// conv's weights): the result stays in the program's F between calls (MemoryPlan keeps
    /// those buffers apart for the whole program), tagged with the P and F it was made for
    /// and the parameters' generation, which the host bumps after writing P
    /// (ssdc_params_changed) and so does every program that writes P. Sessions have their
    /// own F, so two sessions of one library each recompute into theirs.
    func weightCache() -> [String] {
        [
            "/* Caches of values derived from the parameters (see ssdc_params_changed). */",
            "typedef struct { const float *P; const char *F; uint64_t generation; } ssdc_cache_t;",
            "static uint64_t ssdc_params_generation = 1;",
            "",
            "void ssdc_params_changed(void) {",
            "#pragma omp critical(ssdc_cache)",
            "    ++ssdc_params_generation;",
            "}",
            "",
            "/* 0 if the cache holds the values for P and F at the current generation, else that",
            " * generation (to pass to ssdc_cache_filled once the values are recomputed). */",
            "static inline uint64_t ssdc_cache_generation(const ssdc_cache_t *c, const float *P, const char *F) {",
            "    uint64_t g;",
            "#pragma omp critical(ssdc_cache)",
            "    g = c->P == P && c->F == F && c->generation == ssdc_params_generation ? 0 : ssdc_params_generation;",
            "    return g;",
            "}",
            "",
            "static inline void ssdc_cache_filled(ssdc_cache_t *c, const float *P, const char *F, uint64_t generation) {",
            "#pragma omp critical(ssdc_cache)",
            "    { c->P = P; c->F = F; c->generation = generation; }",
            "}",
            "",
        ]
    }

    func body(_ p: Program, _ k: Kernel) -> [String] {
        let P = { (id: Int) in self.ptr(p, id) }
        switch k.body {
        case .conv2d(let x, let w, let b, let y, let c, let h, let wd, let o, let ks, let s, let pad, let relu, let into):
            let geometry = "const ssd_conv2d_t g = ssd_conv2d_geometry((int)N, \(c), \(h), \(wd), \(o), \(ks), \(s), \(pad));"
            guard let into else {
                return [geometry, "ssd_conv2d_forward(&g, \(P(x)), \(P(w)), \(b.map(P) ?? "NULL"), \(P(y)), \(relu ? 1 : 0), S);"]
            }
            let (layout, dst) = inPlace(p, "into", y, into)
            return [geometry, layout,
                    "ssd_conv2d_forward_strided(&g, \(P(x)), \(P(w)), \(b.map(P) ?? "NULL"), \(dst), &into, \(relu ? 1 : 0), S);"]
        case .conv2dPair(let x, let a, let b, let c, let h, let wd, let ks, let s, let pad):
            let (layout1, dst1) = inPlace(p, "into1", a.y, a.into), (layout2, dst2) = inPlace(p, "into2", b.y, b.into)
            return [
                "const ssd_conv2d_t g = ssd_conv2d_geometry((int)N, \(c), \(h), \(wd), \(a.o + b.o), \(ks), \(s), \(pad));",
                layout1, layout2,
                "ssd_conv2d_forward_pair(&g, \(a.o), \(P(x)), \(P(a.weight)), \(a.bias.map(P) ?? "NULL"), \(dst1), &into1,",
                "                        \(P(b.weight)), \(b.bias.map(P) ?? "NULL"), \(dst2), &into2, S);",
            ]
        case .conv2dFoldedBatchNorm(let x, let w, let b, let g, let be, let m, let v, let eps, let fw, let fb, let y,
                                    let c, let h, let wd, let o, let ks, let s, let pad, let relu, let pool):
            let per = c * ks * ks
            return [
                "float *restrict fw = \(P(fw)), *restrict fb = \(P(fb));",
                "static ssdc_cache_t cache; /* fw, fb depend on the parameters only: kept in F between calls */",
                "const uint64_t generation = ssdc_cache_generation(&cache, P, F);",
                "if (generation) {",
                "    const float *restrict w = \(P(w)), *restrict gamma = \(P(g)), *restrict beta = \(P(be));",
                "    const float *restrict mean = \(P(m)), *restrict var = \(P(v));",
                "    for (int o = 0; o < \(o); o++) {",
                "        const float scale = gamma[o] / sqrtf(var[o] + \(CEmitter.float(eps)));",
                "        for (int i = 0; i < \(per); i++) fw[o * \(per) + i] = w[o * \(per) + i] * scale;",
                "        fb[o] = (\(b.map { "\(P($0))[o]" } ?? "0.0f") - mean[o]) * scale + beta[o];",
                "    }",
                "    ssdc_cache_filled(&cache, P, F, generation);",
                "}",
                "const ssd_conv2d_t g = ssd_conv2d_geometry((int)N, \(c), \(h), \(wd), \(o), \(ks), \(s), \(pad));",
                "ssd_conv2d_forward\(pool ? "_pool" : "")(&g, \(P(x)), fw, fb, \(P(y)), \(relu ? 1 : 0), S);",
            ]
        case .batchNormTrain(let bn):
            let hw = bn.h * bn.w
            var lines = ["ssd_bn_stats((int)N, \(bn.c), \(hw), \(P(bn.x)), \(P(bn.mean)), \(P(bn.variance)));"]
            if let pooled = bn.pooled {
                lines.append("ssd_bn_apply_relu_maxpool2((int)N, \(bn.c), \(bn.h), \(bn.w), \(P(bn.x)), \(P(bn.mean)), \(P(bn.variance)), \(P(bn.gamma)), \(P(bn.beta)), \(CEmitter.float(bn.eps)), \(bn.y.map(P) ?? "NULL"), \(P(pooled)));")
            } else {
                lines.append("ssd_bn_apply((int)N, \(bn.c), \(hw), \(P(bn.x)), \(P(bn.mean)), \(P(bn.variance)), \(P(bn.gamma)), \(P(bn.beta)), \(CEmitter.float(bn.eps)), \(bn.relu ? 1 : 0), \(P(bn.y!)));")
            }
            if let r = bn.running {
                lines.append("ssd_bn_update_running(\(bn.c), \(P(bn.mean)), \(P(bn.variance)), N * \(hw), \(CEmitter.float(r.momentum)), \(P(r.mean)), \(P(r.variance)));")
                lines.append("\(P(r.counter))[0] += 1.0f; /* num_batches_tracked */")
            }
            return lines
        case .maxPool2dBatchNormBackward(let x, let m, let v, let g, let y, let dp, let dx, let dg, let db, let c, let h, let w, let eps):
            return ["ssd_maxpool2_bn_relu_backward((int)N, \(c), \(h), \(w), \(P(x)), \(P(m)), \(P(v)), \(P(g)), \(CEmitter.float(eps)), \(P(y)), \(P(dp)), \(P(dx)), \(P(dg)), \(P(db)));"]
        case .batchNormEval(let x, let g, let b, let m, let v, let y, let c, let hw, let eps, let relu):
            return [
                "ssd_bn_apply((int)N, \(c), \(hw), \(P(x)), \(P(m)), \(P(v)), \(P(g)), \(P(b)), \(CEmitter.float(eps)), \(relu ? 1 : 0), \(P(y)));",
            ]
        case .relu(let x, let y, let count):
            return [
                "const float *restrict x = \(P(x));",
                "float *restrict y = \(P(y));",
                "const int64_t n = N * \(count);",
                "#pragma omp parallel for simd schedule(static)",
                "for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;",
            ]
        case .maxPool2d(let x, let y, let c, let h, let w):
            return ["ssd_maxpool2_forward((int)N, \(c), \(h), \(w), \(P(x)), \(P(y)));"]
        case .globalMaxPool(let x, let y, let c, let hw):
            return ["ssd_global_maxpool_forward((int)N, \(c), \(hw), \(P(x)), \(P(y)));"]
        case .softmax(let x, let y, let rows, let cols):
            return ["ssd_softmax_rows((int)(N * \(rows)), \(cols), \(P(x)), \(P(y)));"]
        case .multiboxDetection(let probs, let bbox, let anchors, let y, let a, let q1, let nms, let pos):
            return ["ssd_multibox_detection((int)N, \(a), \(q1), \(P(probs)), \(P(bbox)), \(P(anchors)), \(CEmitter.float(nms)), \(CEmitter.float(pos)), \(P(y)), S);"]
        case .copy(let y, let pieces, let yElements):
            var out = ["float *restrict y = \(P(y));"]
            for (i, piece) in pieces.enumerated() {
                out += copyPiece(p, piece, index: i, yElements: yElements)
            }
            return out
        case .multiboxTarget(let anchors, let labels, let bl, let bm, let cl, let a):
            return ["ssd_multibox_target((int)N, \(a), (int)G, \(P(anchors)), \(P(labels)), 0.5f, \(P(bl)), \(P(bm)), \(P(cl)), S);"]
        case .multiboxLoss(let c, let b, let cl, let bl, let bm, let pe, let dc, let db, let m, let a, let q1, let cfg):
            return [
                "const ssd_loss_config_t cfg = { \(cfg.focal ? 1 : 0), \(CEmitter.float(cfg.focalGamma)), \(CEmitter.float(cfg.focalAlpha)), \(cfg.smoothL1 ? 1 : 0), \(CEmitter.float(cfg.sigma)), \(CEmitter.float(cfg.clsWeight)), \(CEmitter.float(cfg.bboxWeight)), \(CEmitter.float(cfg.negativeMiningRatio)) };",
                "ssd_multibox_loss(&cfg, (int)N, \(a), \(q1), \(P(c)), \(P(b)), \(P(cl)), \(P(bl)), \(P(bm)), \(P(pe)), \(P(dc)), \(P(db)), (double *)\(P(m)), S);",
            ]
        case .reluBackward(let y, let dy, let dx, let count):
            return [
                "const float *restrict y = \(P(y));",
                "const float *restrict dy = \(P(dy));",
                "float *restrict dx = \(P(dx));",
                "const int64_t n = N * \(count);",
                "#pragma omp parallel for simd schedule(static)",
                "for (int64_t i = 0; i < n; i++) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;",
            ]
        case .accumulate(let into, let from, let count):
            return [
                "float *restrict a = \(P(into));",
                "const float *restrict b = \(P(from));",
                "const int64_t n = N * \(count);",
                "#pragma omp parallel for simd schedule(static)",
                "for (int64_t i = 0; i < n; i++) a[i] += b[i];",
            ]
        case .conv2dBackward(let x, let w, let dy, let dx, let dw, let db, let c, let h, let wd, let o, let ks, let s, let pad):
            var lines = ["const ssd_conv2d_t g = ssd_conv2d_geometry((int)N, \(c), \(h), \(wd), \(o), \(ks), \(s), \(pad));"]
            if let dx { lines.append("ssd_conv2d_backward_data(&g, \(P(dy)), \(P(w)), \(P(dx)), S);") }
            lines.append("ssd_conv2d_backward_weight(&g, \(P(x)), \(P(dy)), \(P(dw)), \(db.map(P) ?? "NULL"), S);")
            return lines
        case .conv2dPairBackward(let x, let a, let b, let dx, let c, let h, let wd, let ks, let s, let pad):
            return [
                "const ssd_conv2d_t g = ssd_conv2d_geometry((int)N, \(c), \(h), \(wd), \(a.o + b.o), \(ks), \(s), \(pad));",
                "ssd_conv2d_backward_pair(&g, \(a.o), \(P(x)), \(P(a.weight)), \(P(a.dy)), \(P(a.dWeight)), \(a.dBias.map(P) ?? "NULL"),",
                "                         \(P(b.weight)), \(P(b.dy)), \(P(b.dWeight)), \(b.dBias.map(P) ?? "NULL"), \(dx.map(P) ?? "NULL"), S);",
            ]
        case .batchNormBackward(let x, let m, let v, let g, let y, let dy, let dx, let dg, let db, let c, let hw, let eps):
            return ["ssd_bn_backward((int)N, \(c), \(hw), \(P(x)), \(P(m)), \(P(v)), \(P(g)), \(CEmitter.float(eps)), \(y.map(P) ?? "NULL"), \(P(dy)), \(P(dx)), \(P(dg)), \(P(db)));"]
        case .maxPool2dBackward(let x, let dy, let dx, let c, let h, let w):
            return ["ssd_maxpool2_backward((int)N, \(c), \(h), \(w), \(P(x)), \(P(dy)), \(P(dx)));"]
        case .globalMaxPoolBackward(let x, let dy, let dx, let c, let hw):
            return ["ssd_global_maxpool_backward((int)N, \(c), \(hw), \(P(x)), \(P(dy)), \(P(dx)));"]
        case .scatter(let x, let pieces, let dests, let xElements):
            var out = ["const float *restrict x = \(P(x));"]
            for (i, piece) in pieces.enumerated() {
                out += copyPiece(p, piece, index: i, yElements: xElements, scatterInto: dests[i])
            }
            return out
        case .sgd(let slots, let counts):
            let hyper = model.layout.hyperOffset
            // Under mpirun the gradients become those of the global batch here (a no-op in one process).
            var lines = ["ssd_allreduce_gradients(\(model.layout.totalFloats), P + \(model.layout.gradientOffset)); /* sum over ranks, weighted by batch share */",
                         "const float lr = P[\(hyper)], wd = P[\(hyper + 1)];"]
            for (b, n) in zip(slots, counts) {
                let off = p.buffers[b].offset / 4
                lines.append("ssd_sgd_update(\(n), P + \(off), P + \(off + model.layout.gradientOffset), lr, wd); /* \(p.buffers[b].name) */")
            }
            return lines
        case .family(let f):
            return f.base.body(P)
        }
    }

    /// One piece of a fused permute/reshape/concat: loops over the permuted view in row-major
    /// order, reading the source through permuted strides and writing runs of `inner`
    /// elements into the destination rows.
    func copyPiece(_ p: Program, _ piece: CopyPiece, index: Int, yElements: Int, scatterInto dest: Int? = nil) -> [String] {
        let dims = piece.sourceDims
        var strides = Array(repeating: 1, count: dims.count)
        for i in stride(from: dims.count - 2, through: 0, by: -1) { strides[i] = strides[i + 1] * dims[i + 1] }
        let pdims = piece.perm.map { dims[$0] }
        let pstrides = piece.perm.map { strides[$0] }
        let total = dims.reduce(1, *)
        let src = p.buffers[piece.source]
        let srcBatched = src.type.batched
        var out: [String] = []
        let scatter = dest != nil
        if scatter {
            out.append("/* piece \(index): rows of \(piece.inner) at +\(piece.dstOffset) of \(piece.dstRow) -> \(p.buffers[dest!].name) \(dims) un-permuted \(piece.perm) */")
        } else {
            out.append("/* piece \(index): \(src.name) \(dims) permuted \(piece.perm) -> rows of \(piece.inner) at +\(piece.dstOffset) of \(piece.dstRow) */")
        }
        out.append("#pragma omp parallel for schedule(static)")
        out.append("for (int64_t n = 0; n < N; n++) {")
        if let dest {
            out.append("    float *restrict g = \(ptr(p, dest)) + n * \(total);")
            out.append("    const float *restrict xn = x + n * \(yElements);")
        } else {
            out.append("    const float *restrict x = \(ptr(p, piece.source))\(srcBatched ? " + n * \(total)" : "");")
            out.append("    float *restrict yn = y + n * \(yElements);")
        }
        let simple = piece.inner == total
        out.append("    int64_t lin = 0;")
        var indent = "    "
        for (d, size) in pdims.enumerated() {
            out.append("\(indent)for (int64_t i\(d) = 0; i\(d) < \(size); i\(d)++) {")
            indent += "    "
        }
        let srcIndex = pdims.indices.map { "i\($0) * \(pstrides[$0])" }.joined(separator: " + ")
        let packed = simple ? "\(piece.dstOffset) + lin" : "(lin / \(piece.inner)) * \(piece.dstRow) + \(piece.dstOffset) + lin % \(piece.inner)"
        let unpacked = srcIndex.isEmpty ? "0" : srcIndex
        if scatter {
            out.append("\(indent)g[\(unpacked)] = xn[\(packed)];")
        } else {
            out.append("\(indent)yn[\(packed)] = x[\(unpacked)];")
        }
        out.append("\(indent)lin++;")
        for _ in pdims {
            indent.removeLast(4)
            out.append("\(indent)}")
        }
        out.append("}")
        return out
    }

    /// Scratch floats a kernel needs from the shared scratch region (0 for none).
    func scratchQuery(_ k: Kernel) -> String? {
        switch k.body {
        case .conv2d(_, _, _, _, let c, let h, let w, let o, let ks, let s, let pad, _, _),
             .conv2dFoldedBatchNorm(_, _, _, _, _, _, _, _, _, _, _, let c, let h, let w, let o, let ks, let s, let pad, _, false):
            return "{ const ssd_conv2d_t g = ssd_conv2d_geometry((int)N, \(c), \(h), \(w), \(o), \(ks), \(s), \(pad)); t = ssd_conv2d_scratch_floats(&g); }"
        case .conv2dFoldedBatchNorm(_, _, _, _, _, _, _, _, _, _, _, let c, let h, let w, let o, let ks, let s, let pad, _, true):
            return "{ const ssd_conv2d_t g = ssd_conv2d_geometry((int)N, \(c), \(h), \(w), \(o), \(ks), \(s), \(pad)); t = ssd_conv2d_pool_scratch_floats(&g); }"
        case .conv2dPair(_, let a, let b, let c, let h, let w, let ks, let s, let pad):
            return "{ const ssd_conv2d_t g = ssd_conv2d_geometry((int)N, \(c), \(h), \(w), \(a.o + b.o), \(ks), \(s), \(pad)); t = ssd_conv2d_pair_scratch_floats(&g); }"
        case .multiboxDetection(_, _, _, _, let a, _, _, _):
            return "t = ssd_detection_scratch_floats(\(a)) * (size_t)N;"
        case .conv2dBackward(_, _, _, _, _, _, let c, let h, let w, let o, let ks, let s, let pad):
            return "{ const ssd_conv2d_t g = ssd_conv2d_geometry((int)N, \(c), \(h), \(w), \(o), \(ks), \(s), \(pad)); t = ssd_conv2d_scratch_floats(&g); }"
        case .conv2dPairBackward(_, let a, let b, _, let c, let h, let w, let ks, let s, let pad):
            return "{ const ssd_conv2d_t g = ssd_conv2d_geometry((int)N, \(c), \(h), \(w), \(a.o + b.o), \(ks), \(s), \(pad)); t = ssd_conv2d_pair_backward_scratch_floats(&g); }"
        case .multiboxTarget(_, _, _, _, _, let a):
            return "t = ssd_target_scratch_floats(\(a), (int)G) * (size_t)N;"
        case .multiboxLoss(_, _, _, _, _, _, _, _, _, let a, let q1, _):
            return "t = ssd_loss_scratch_floats((int)N, \(a), \(q1));"
        case .family(let f):
            return f.base.scratchQuery
        default: return nil
        }
    }

    // MARK: files

    public func source() -> String {
        var out: [String] = []
        out.append("/* model.c — generated by ssdc from graph \"\(graph.name)\". Do not edit: recompile the model. */")
        out.append("#include <math.h>")
        out.append("#include <stddef.h>")
        out.append("#include <stdint.h>")
        out.append("#include <string.h>")
        out.append("#include \"ssd_runtime.h\"")
        out.append("#include \"model.h\"")
        out.append("")
        out.append("#include <omp.h>")
        out.append("")
        out.append("enum { SSDC_OK = 0, SSDC_ERR_BATCH = 1, SSDC_ERR_NULL = 2 };")
        out.append("")
        out.append("/* Profiling: when on, each kernel's wall time is summed per program (ssdc_profile). */")
        out.append("static int ssdc_profiling = 0;")
        out.append("#define SSDC_TIMED(times, i, call) do { double t0_ = ssdc_profiling ? omp_get_wtime() : 0.0; call; if (ssdc_profiling) times[i] += omp_get_wtime() - t0_; } while (0)")
        out.append("")
        out += weightCache()
        out += constants()
        for p in model.programs {
            out.append("/* ==== program \(p.name) (BatchNorm: \(p.mode == .train ? "batch statistics" : "running statistics")) ==== */")
            out.append("")
            // A step that takes labels passes G (rows per image) and Y to the kernel that reads them.
            let labels = p.takesLabels
            func readsLabels(_ k: Kernel) -> Bool { p.uses(k).reads.contains { p.buffers[$0].region == .labels } }
            for k in p.kernels {
                out.append(comment(p, k))
                let rows = readsLabels(k) ? "int64_t G, const float *restrict Y, " : ""
                out.append("static void \(p.name)_\(k.name)(int64_t N, \(rows)float *restrict P, char *restrict F, char *restrict B, float *restrict S) {")
                out.append("    (void)P; (void)F; (void)B; (void)S;")
                for line in body(p, k) { out.append("    " + line) }
                out.append("}")
                out.append("")
            }
            out.append("size_t ssdc_\(p.name)_scratch_floats(int64_t N\(labels ? ", int64_t G" : "")) {")
            out.append("    size_t s = 1, t = 0;")
            for k in p.kernels {
                if let q = scratchQuery(k) { out.append("    \(q) if (t > s) s = t;") }
            }
            out.append("    return s;")
            out.append("}")
            out.append("")
            out.append("static double \(p.name)_times[\(max(p.kernels.count, 1))];")
            out.append("")
            out.append("int ssdc_\(p.name)(int64_t N, \(labels ? "int64_t G, const float *Y, " : "")float *P, char *F, char *B, float *S) {")
            out.append("    if (N < 1\(labels ? " || G < 1" : "")) return SSDC_ERR_BATCH;")
            out.append("    if (!P || !F || !B || !S\(labels ? " || !Y" : "")) return SSDC_ERR_NULL;")
            if writesParameters(p) { out.append("    ssdc_params_changed(); /* this program updates P */") }
            for (i, k) in p.kernels.enumerated() {
                out.append("    SSDC_TIMED(\(p.name)_times, \(i), \(p.name)_\(k.name)(N, \(readsLabels(k) ? "G, Y, " : "")P, F, B, S));")
            }
            out.append("    return SSDC_OK;")
            out.append("}")
            out.append("")
        }
        out.append("void ssdc_set_threads(int n) { ssd_set_num_threads(n); }")
        out.append("")
        out.append("void ssdc_set_profiling(int on) { ssdc_profiling = on; }")
        out.append("")
        out.append("/* Seconds spent in each kernel of a program since profiling was turned on (NULL if unknown). */")
        out.append("double *ssdc_profile(const char *program) {")
        for p in model.programs {
            out.append("    if (!strcmp(program, \"\(p.name)\")) return \(p.name)_times;")
        }
        out.append("    return NULL;")
        out.append("}")
        out.append("")
        out.append("int ssdc_abi_version(void) { return SSDC_ABI_VERSION; }")
        out.append("")
        out.append("const char *ssdc_manifest(void) {")
        out.append("    return \(cString(model.manifestJSON(withCompiler: false)));")
        out.append("}")
        return out.joined(separator: "\n") + "\n"
    }

    func constants() -> [String] {
        var out: [String] = []
        for (name, node) in model.constantNames {
            let values = model.constants[node]!
            out.append("/* \(name): folded at compile time from %\(node) (\(graph[node].op.mnemonic), \(graph[node].location)), \(graph[node].type) */")
            out.append("const float \(cName(name))[\(values.count)] = {")
            var line = "   "
            for (i, v) in values.enumerated() {
                let s = " " + CEmitter.float(v) + (i + 1 < values.count ? "," : "")
                if line.count + s.count > 100 { out.append(line); line = "   " }
                line += s
            }
            out.append(line)
            out.append("};")
            out.append("")
        }
        return out
    }

    func cString(_ s: String) -> String {
        var out = "\""
        var col = 0
        for ch in s.unicodeScalars {
            switch ch {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n\"\n        \""; col = 0
            default: out.unicodeScalars.append(ch)
            }
            col += 1
            if col > 100, ch == "," { out += "\"\n        \""; col = 0 }
        }
        return out + "\""
    }

    public func header() -> String {
        var out: [String] = []
        out.append("/* model.h — the ABI of the library ssdc built from graph \"\(graph.name)\". Generated; do not edit.")
        out.append(" *")
        out.append(" * Memory is the caller's: P holds parameters and BN state (floats, offsets below),")
        out.append(" * F a fixed-size workspace, B a workspace of <PROGRAM>_BATCHED_BYTES per example")
        out.append(" * (buffer offsets there are per example: multiply by N), S scratch of")
        out.append(" * ssdc_<program>_scratch_floats(N) floats. Train and eval steps also take G, the label")
        out.append(" * rows per image, and Y. Entry points return 0, or 1 for a batch size (or G) below 1,")
        out.append(" * 2 for a NULL region. They never print or exit. */")
        out.append("#ifndef SSDC_MODEL_H")
        out.append("#define SSDC_MODEL_H")
        out.append("#include <stddef.h>")
        out.append("#include <stdint.h>")
        out.append("")
        out.append("#define SSDC_ABI_VERSION \(CompiledModel.abiVersion)")
        out.append("#define SSDC_PARAMS_FLOATS \(model.layout.totalFloats)")
        out.append("#define SSDC_GRADS_OFFSET \(model.layout.gradientOffset) /* gradients mirror the parameters from here */")
        out.append("#define SSDC_HYPER_OFFSET \(model.layout.hyperOffset) /* [0] learning rate, [1] weight decay */")
        out.append("#define SSDC_PARAMS_REGION_FLOATS \(model.layout.regionFloats)")
        for (k, v) in graph.attributes.sorted(by: { $0.key < $1.key }) where Int(v) != nil {
            out.append("#define SSDC_\(CEmitter.macro(k)) \(v)")
        }
        out.append("")
        out.append("/* parameter offsets in P (floats), state_dict order */")
        for s in model.layout.slots {
            out.append("#define SSDC_PARAM_\(CEmitter.macro(s.name)) \(s.offset) /* \(s.shape) \(s.dtype) */")
        }
        for p in model.programs {
            let m = CEmitter.macro(p.name)
            out.append("")
            out.append("/* program \(p.name) */")
            out.append("#define SSDC_\(m)_FIXED_BYTES \(p.fixedBytes)")
            out.append("#define SSDC_\(m)_BATCHED_BYTES \(p.batchedBytesPerExample)")
            for (name, b) in p.inputs where p.buffers[b].region != .labels {
                out.append("#define SSDC_\(m)_IN_\(CEmitter.macro(name)) \(p.buffers[b].offset) /* \(p.buffers[b].region.rawValue), \(p.buffers[b].type) */")
            }
            for (name, b, type) in p.outputs {
                out.append("#define SSDC_\(m)_OUT_\(CEmitter.macro(name)) \(p.buffers[b].offset) /* \(p.buffers[b].region.rawValue), \(type) */")
            }
            if p.takesLabels {
                out.append("/* Y: the ground-truth rows, N x G x 5 floats (class, xmin, ymin, xmax, ymax; class -1 pads). */")
                out.append("int ssdc_\(p.name)(int64_t N, int64_t G, const float *Y, float *P, char *F, char *B, float *S);")
                out.append("size_t ssdc_\(p.name)_scratch_floats(int64_t N, int64_t G);")
            } else {
                out.append("int ssdc_\(p.name)(int64_t N, float *P, char *F, char *B, float *S);")
                out.append("size_t ssdc_\(p.name)_scratch_floats(int64_t N);")
            }
        }
        out.append("")
        for (name, node) in model.constantNames {
            out.append("extern const float \(cName(name))[\(model.constants[node]!.count)];")
        }
        out.append("void ssdc_set_threads(int n);")
        out.append("/* Call after writing into P (loading weights): caches derived from the parameters are")
        out.append(" * recomputed on the next call. */")
        out.append("void ssdc_params_changed(void);")
        out.append("void ssdc_set_profiling(int on);")
        out.append("double *ssdc_profile(const char *program);")
        out.append("int ssdc_abi_version(void);")
        out.append("/* The manifest (JSON): parameters, programs, buffers, as manifest.json. */")
        out.append("const char *ssdc_manifest(void);")
        out.append("#endif")
        return out.joined(separator: "\n") + "\n"
    }
}
