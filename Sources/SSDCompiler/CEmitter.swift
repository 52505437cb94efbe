import Foundation
import SSDABI
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

    /// The batched inputs and outputs (one of each buffer) a program copies per image when it
    /// runs one image per thread: an eval-mode program without labels that leaves P alone, so
    /// each image's values depend on that image only. nil: the program runs batched only.
    func imageCopies(_ p: Program) -> (inputs: [Buffer], outputs: [Buffer])? {
        guard p.mode == .eval, !p.takesLabels, !writesParameters(p) else { return nil }
        let ins = p.inputs.map { p.buffers[$0.buffer] }
        guard !ins.isEmpty, ins.allSatisfy({ $0.region == .batched }) else { return nil }
        var seen = Set<Int>()
        return (ins, p.outputs.map { p.buffers[$0.buffer] }.filter { $0.region == .batched && seen.insert($0.id).inserted })
    }

    /// The route of a batch through `p` one image per thread (see `imageCopies`). When an
    /// output shares bytes with an input in the batched plan, the outputs are staged (output
    /// k at `staging[k]` bytes per image) and copied into B after the last image has read
    /// its input.
    func imageRoute(_ p: Program, inputs ins: [Buffer], outputs outs: [Buffer]) -> [String] {
        let n = p.name
        let staged = ins.contains { i in outs.contains { o in i.offset < o.offset + o.bytes && o.offset < i.offset + i.bytes } }
        let staging = outs.indices.map { k in outs[..<k].map(\.bytes).reduce(0, +) }
        let outBytes = outs.map(\.bytes).reduce(0, +)
        var out = [
            "/* A batch of at least SSDC_BY_IMAGE_MIN images per thread runs one image per thread: each",
            " * thread takes whole images through every kernel in a workspace of its own (B and S for",
            " * N = 1), so an image's activations stay in that core's caches instead of the whole batch",
            " * streaming through memory layer by layer, and the kernels run serially (no barrier per",
            " * layer). The first image runs alone on all threads, which fills the caches derived from",
            " * the parameters before the threads share them. Every image's values are those of a batch",
            " * of one. When profiling, kernel times are those of thread 0's images." + (staged ? "" : " */"),
        ]
        if staged {
            out += [" * An output shares bytes with the input here, so outputs are staged in O (\(outBytes) bytes per",
                    " * image) and copied into B once every image has read its input. */"]
        }
        out.append("static void \(n)_image(int64_t i, int64_t N, float *P, char *F, char *B, char *Bi, float *Si, char *O, int timed) {")
        if !staged { out.append("    (void)O;") }
        for c in ins {
            out.append("    memcpy(Bi + \(c.offset), B + (size_t)\(c.offset) * N + (size_t)i * \(c.bytes), \(c.bytes));")
        }
        for (k, kernel) in p.kernels.enumerated() {
            out.append("    SSDC_TIMED_IF(timed, \(n)_times, \(k), \(n)_\(kernel.name)(1, P, F, Bi, Si));")
        }
        for (c, at) in zip(outs, staging) {
            let dest = staged ? "O + (size_t)\(at) * N" : "B + (size_t)\(c.offset) * N"
            out.append("    memcpy(\(dest) + (size_t)i * \(c.bytes), Bi + \(c.offset), \(c.bytes));")
        }
        out += [
            "}",
            "",
            "/* 1 if the batch ran one image per thread, 0 if it is to run batched. */",
            "static int \(n)_by_image(int64_t N, float *P, char *F, char *B) {",
            "    const int T = ssd_get_num_threads();",
            "    if (T < 2 || N < (int64_t)SSDC_BY_IMAGE_MIN * T || !ssd_by_image_enabled()) return 0;",
            "    const size_t bytes = ((size_t)\(p.batchedBytesPerExample) + 63) / 64 * 64;",
            "    const size_t scratch = (\(ABI.scratchEntry(n))(1) * sizeof(float) + 63) / 64 * 64;",
            "    char *W = ssd_thread_workspace((size_t)T * (bytes + scratch)\(staged ? " + (size_t)N * \(outBytes)" : ""));",
            "    if (!W) return 0;",
            "    char *O = \(staged ? "W + (size_t)T * (bytes + scratch)" : "NULL");",
            "    \(n)_image(0, N, P, F, B, W, (float *)(W + bytes), O, 1);",
            "#pragma omp parallel num_threads(T)",
            "    {",
            "        const int t = omp_get_thread_num();",
            "        char *Bi = W + (size_t)t * (bytes + scratch);",
            "#pragma omp for schedule(dynamic, 1)",
            "        for (int64_t i = 1; i < N; i++) \(n)_image(i, N, P, F, B, Bi, (float *)(Bi + bytes), O, t == 0);",
            "    }",
        ]
        if staged {
            for (c, at) in zip(outs, staging) {
                out.append("    memcpy(B + (size_t)\(c.offset) * N, O + (size_t)\(at) * N, (size_t)\(c.bytes) * N);")
            }
        }
        out += ["    return 1;", "}", ""]
        return out
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
            "void \(ABI.parametersChangedSymbol)(void) {",
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

    /// A kernel's C statements: its family writes them (Sources/SSDCompiler/Kernels).
    func body(_ p: Program, _ k: Kernel) -> [String] {
        k.body.base.body(KernelContext(pointer: { self.ptr(p, $0) }, buffers: p.buffers, layout: model.layout))
    }

    /// Scratch floats a kernel needs from the shared scratch region (nil for none).
    func scratchQuery(_ k: Kernel) -> String? { k.body.base.scratchQuery }

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
        out.append("/* Least images per thread for an eval program to run one image per thread. */")
        out.append("#ifndef SSDC_BY_IMAGE_MIN")
        out.append("#define SSDC_BY_IMAGE_MIN 2")
        out.append("#endif")
        out.append("#define SSDC_TIMED_IF(on, times, i, call) do { const int on_ = ssdc_profiling && (on); double t0_ = on_ ? omp_get_wtime() : 0.0; call; if (on_) times[i] += omp_get_wtime() - t0_; } while (0)")
        out.append("#define SSDC_TIMED(times, i, call) SSDC_TIMED_IF(1, times, i, call)")
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
            out.append("size_t \(ABI.scratchEntry(p.name))(int64_t N\(labels ? ", int64_t G" : "")) {")
            out.append("    size_t s = 1, t = 0;")
            for k in p.kernels {
                if let q = scratchQuery(k) { out.append("    \(q) if (t > s) s = t;") }
            }
            out.append("    return s;")
            out.append("}")
            out.append("")
            out.append("static double \(p.name)_times[\(max(p.kernels.count, 1))];")
            out.append("")
            let byImage = imageCopies(p)
            if let byImage { out += imageRoute(p, inputs: byImage.inputs, outputs: byImage.outputs) }
            out.append("int \(ABI.entry(p.name))(int64_t N, \(labels ? "int64_t G, const float *Y, " : "")float *P, char *F, char *B, float *S) {")
            out.append("    if (N < 1\(labels ? " || G < 1" : "")) return SSDC_ERR_BATCH;")
            out.append("    if (!P || !F || !B || !S\(labels ? " || !Y" : "")) return SSDC_ERR_NULL;")
            if byImage != nil { out.append("    if (\(p.name)_by_image(N, P, F, B)) return SSDC_OK;") }
            if writesParameters(p) { out.append("    ssdc_params_changed(); /* this program updates P */") }
            for (i, k) in p.kernels.enumerated() {
                out.append("    SSDC_TIMED(\(p.name)_times, \(i), \(p.name)_\(k.name)(N, \(readsLabels(k) ? "G, Y, " : "")P, F, B, S));")
            }
            out.append("    return SSDC_OK;")
            out.append("}")
            out.append("")
        }
        out.append("void \(ABI.setThreadsSymbol)(int n) { ssd_set_num_threads(n); }")
        out.append("")
        out.append("void \(ABI.setProfilingSymbol)(int on) { ssdc_profiling = on; }")
        out.append("")
        out.append("/* Seconds spent in each kernel of a program since profiling was turned on (NULL if unknown). */")
        out.append("double *\(ABI.profileSymbol)(const char *program) {")
        for p in model.programs {
            out.append("    if (!strcmp(program, \"\(p.name)\")) return \(p.name)_times;")
        }
        out.append("    return NULL;")
        out.append("}")
        out.append("")
        out.append("int \(ABI.versionSymbol)(void) { return SSDC_ABI_VERSION; }")
        out.append("")
        out.append("const char *\(ABI.manifestSymbol)(void) {")
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
        out.append("#define SSDC_ABI_VERSION \(ABI.version)")
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
                out.append("int \(ABI.entry(p.name))(int64_t N, int64_t G, const float *Y, float *P, char *F, char *B, float *S);")
                out.append("size_t \(ABI.scratchEntry(p.name))(int64_t N, int64_t G);")
            } else {
                out.append("int \(ABI.entry(p.name))(int64_t N, float *P, char *F, char *B, float *S);")
                out.append("size_t \(ABI.scratchEntry(p.name))(int64_t N);")
            }
        }
        out.append("")
        for (name, node) in model.constantNames {
            out.append("extern const float \(cName(name))[\(model.constants[node]!.count)];")
        }
        out.append("void \(ABI.setThreadsSymbol)(int n);")
        out.append("/* Call after writing into P (loading weights): caches derived from the parameters are")
        out.append(" * recomputed on the next call. */")
        out.append("void \(ABI.parametersChangedSymbol)(void);")
        out.append("void \(ABI.setProfilingSymbol)(int on);")
        out.append("double *\(ABI.profileSymbol)(const char *program);")
        out.append("int \(ABI.versionSymbol)(void);")
        out.append("/* The manifest (JSON): parameters, programs, buffers, as manifest.json. */")
        out.append("const char *\(ABI.manifestSymbol)(void);")
        out.append("#endif")
        return out.joined(separator: "\n") + "\n"
    }
}
