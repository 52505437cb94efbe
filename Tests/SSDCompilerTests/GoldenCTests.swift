import Foundation
import SSDCompiler
import SSDGraph
import SSDIO
import SSDModels
import XCTest

/// The emitted C of a small model is compared byte for byte with committed files, so a
/// refactor that should not change kernels cannot change them silently (tinygrad's
/// "process replay"). Set SSDC_UPDATE_GOLDEN=1 to rewrite them on purpose.
final class GoldenCTests: XCTestCase {
    static let goldenDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden").path
    static let toolchain = ToolchainInfo(cc: "cc", version: "golden", flags: ToolchainInfo.defaultFlags)

    func emitted() throws -> [(String, String)] {
        let graph = try goldenModel.graph(height: 8, width: 8)
        let model = try CompiledModel(graph: graph, toolchain: Self.toolchain)
        let e = CEmitter(model)
        return [("golden_model.c", e.source()), ("golden_model.h", e.header()), ("golden_kernels.txt", model.kernelListing())]
    }

    func testEmittedCMatchesGolden() throws {
        let update = ProcessInfo.processInfo.environment["SSDC_UPDATE_GOLDEN"] == "1"
        for (name, text) in try emitted() {
            let path = "\(Self.goldenDir)/\(name)"
            if update {
                try text.write(toFile: path, atomically: true, encoding: .utf8)
                continue
            }
            let golden = try String(contentsOfFile: path, encoding: .utf8)
            if golden != text {
                let a = golden.split(separator: "\n", omittingEmptySubsequences: false)
                let b = text.split(separator: "\n", omittingEmptySubsequences: false)
                let i = (0..<min(a.count, b.count)).first { a[$0] != b[$0] } ?? min(a.count, b.count)
                XCTFail("\(name) differs from the golden file at line \(i + 1):\n- \(i < a.count ? a[i] : "<end>")\n+ \(i < b.count ? b[i] : "<end>")\nIf the change is intended: SSDC_UPDATE_GOLDEN=1 swift test --filter GoldenCTests")
            }
        }
    }

    /// A program that writes the parameters (the train step: SGD, BN running statistics)
    /// invalidates what eval programs derived from them (BN folded into the convs, kept in F
    /// between calls); the others do not, so inference keeps its cache.
    func testProgramsWritingParametersInvalidateCaches() throws {
        let source = try XCTUnwrap(try emitted().first { $0.0 == "golden_model.c" }?.1)
        for (program, invalidates) in [("train_step", true), ("infer", false), ("forward_train", false), ("eval_step", false)] {
            let start = try XCTUnwrap(source.range(of: "int ssdc_\(program)(int64_t N"), program)
            let entry = source[start.lowerBound...].prefix { $0 != "}" }
            XCTAssertEqual(entry.contains("ssdc_params_changed();"), invalidates, program)
        }
        XCTAssertTrue(source.contains("ssdc_cache_generation(&cache, P, F)"), "the folded conv+BN kernels use the cache")
    }

    func testEmissionIsDeterministic() throws {
        let a = try emitted(), b = try emitted()
        XCTAssertEqual(a.map(\.1), b.map(\.1))
    }

    /// Every kernel function of every program is directly preceded by its own comment, which
    /// names each of the kernel's graph nodes with the model-file line it came from; and the
    /// C has no kernel function besides these.
    func testEveryKernelHasACommentNamingNodesAndLines() throws {
        let graph = try goldenModel.graph(height: 8, width: 8)
        let model = try CompiledModel(graph: graph, toolchain: Self.toolchain)
        let c = CEmitter(model).source()
        let kernels = model.programs.flatMap { p in p.kernels.map { (p.name, $0) } }
        XCTAssertGreaterThan(kernels.count, 10)
        // Besides the kernels, an eval program's one-image-per-thread route (<program>_image).
        let functions = c.components(separatedBy: "\nstatic void ").dropFirst().filter { f in !model.programs.contains { f.hasPrefix("\($0.name)_image(") } }
        XCTAssertEqual(functions.count, kernels.count, "every kernel function in the C is one of the programs' kernels")
        XCTAssertTrue(c.contains("static void infer_image("), "infer runs large batches one image per thread")
        for (program, k) in kernels {
            let function = "\nstatic void \(program)_\(k.name)("
            guard let start = c.range(of: function) else {
                XCTFail("no function \(program)_\(k.name) in the C"); continue
            }
            let before = c[..<start.lowerBound]
            guard before.hasSuffix(" */"), let open = before.range(of: "\n/* \(k.name)  [", options: .backwards) else {
                XCTFail("\(program)_\(k.name) is not preceded by its comment"); continue
            }
            let comment = before[open.upperBound...]
            XCTAssertFalse(comment.dropLast(3).contains("*/"), "\(program)_\(k.name): the comment before it is another kernel's")
            let lines = comment.split(separator: "\n")
            for id in k.nodes {
                let node = model.inferenceGraph[id]
                XCTAssertEqual(node.location.file, "GoldenModel.swift", "%\(id) has no model-file location")
                let named = lines.contains { $0.hasPrefix(" *   %\(id) \(node.op.mnemonic)") && $0.hasSuffix("  GoldenModel.swift:\(node.location.line)") }
                XCTAssertTrue(named, "\(program)_\(k.name): comment does not name %\(id) \(node.op.mnemonic) at GoldenModel.swift:\(node.location.line):\n\(comment)")
            }
        }
    }

    /// Inference keeps the Winograd transform of the folded weights in F for the convs that
    /// path can take (3x3, 16+ channels each side, width a multiple of 16), prepared when the
    /// parameters change and not on every call; the others (the 3-channel stem, the 8x8 maps)
    /// get none. TinySSD at 256x256: 36 x O x C floats (F(4x4)) for the seven convs on maps
    /// of 32+ pixels a side, 16 x O x C (F(2x2)) for the two on 16 x 16 maps.
    func testInferenceKeepsWinogradWeightsOfTheConvsThatUseThem() throws {
        let graph = try BuiltinModels.tinySSD.graph(height: 256, width: 256)
        let model = try CompiledModel(graph: graph, toolchain: Self.toolchain)
        let infer = try XCTUnwrap(model.programs.first { $0.name == "infer" })
        var prepared: [Int] = []
        for k in infer.kernels {
            guard let conv = k.body.base as? Conv2dFoldedBatchNorm else { continue }
            if let u = conv.prepared {
                XCTAssertEqual(infer.buffers[u].region, .fixed, "\(k.name): the Winograd weights are not kept in F")
                prepared.append(infer.buffers[u].type.elementCount)
            }
        }
        XCTAssertEqual(prepared, [36 * 16 * 16, 36 * 32 * 16, 36 * 32 * 32, 36 * 64 * 32, 36 * 64 * 64,
                                  36 * 128 * 64, 36 * 128 * 128, 16 * 128 * 128, 16 * 128 * 128])
        let c = CEmitter(model).source()
        XCTAssertEqual(c.components(separatedBy: "    ssd_conv2d_prepare(&g, fw);\n").count - 1, 2 * 9,
                       "in infer and eval_step, each prepares its weights inside the block that refolds them")
    }

    /// Anchors depend only on shapes, so they are folded into a constant array: every program's
    /// anchors output and every detection or labelling kernel use that constant, no kernel writes
    /// it, and its values are d2l's multibox_prior for TinySSD at 256x256 (the PyTorch fixture).
    func testAnchorsAreCompileTimeConstants() throws {
        let graph = try BuiltinModels.tinySSD.graph(height: 256, width: 256)
        let model = try CompiledModel(graph: graph, toolchain: Self.toolchain)
        for p in model.programs {
            let anchors = try XCTUnwrap(p.outputs.first { $0.name == "anchors" }, "\(p.name) has no anchors output")
            XCTAssertEqual(p.buffers[anchors.buffer].region, .constant, "\(p.name): anchors are not a constant")
            for k in p.kernels {
                let written = p.uses(k).writes.filter { p.buffers[$0].region == .constant }
                XCTAssertEqual(written, [], "\(p.name).\(k.name) writes a constant")
                let read = (k.body.base as? MultiboxDetection)?.anchors ?? (k.body.base as? MultiboxTarget)?.anchors
                if let read { XCTAssertEqual(read, anchors.buffer, "\(p.name).\(k.name) reads anchors other than the constant") }
            }
        }
        let values = try XCTUnwrap(Self.constantArray("c_anchors", in: CEmitter(model).source()), "no constant c_anchors in the C")
        let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/tinyssd_anchors256.safetensors").path
        let d2l = try XCTUnwrap(try SafeTensors.read(fixture)["anchors"])
        XCTAssertEqual(values.count, d2l.floats.count)
        let diff = zip(values, d2l.floats).map { abs($0 - $1) }.max() ?? .infinity
        XCTAssertLessThanOrEqual(diff, 1e-6, "emitted anchors differ from d2l's")
    }

    /// The values of `const float NAME[n] = { ... };` in emitted C, or nil if it is not there
    /// or a value is not a C float literal.
    static func constantArray(_ name: String, in c: String) -> [Float]? {
        guard let start = c.range(of: "\nconst float \(name)["),
              let open = c[start.upperBound...].range(of: "= {"),
              let close = c[open.upperBound...].range(of: "};") else { return nil }
        let literals = c[open.upperBound..<close.lowerBound].split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        let values = literals.compactMap { $0.hasSuffix("f") ? Float($0.dropLast()) : nil }
        return values.count == literals.count ? values : nil
    }
}
