import Foundation
import SSDCompiler
import SSDGraph
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

    func testEmissionIsDeterministic() throws {
        let a = try emitted(), b = try emitted()
        XCTAssertEqual(a.map(\.1), b.map(\.1))
    }

    func testEveryKernelHasACommentNamingNodesAndLines() throws {
        let c = try emitted()[0].1
        let kernels = c.components(separatedBy: "\nstatic void ").dropFirst()
        XCTAssertFalse(kernels.isEmpty)
        // Each kernel function is preceded by a comment with a model-file location.
        let comments = c.components(separatedBy: "/* forward_train_k").count + c.components(separatedBy: "/* k").count
        XCTAssertGreaterThan(comments, 1)
        for block in c.components(separatedBy: "*/\nstatic void ").dropLast() {
            let comment = block.components(separatedBy: "/* ").last ?? ""
            XCTAssertTrue(comment.contains("GoldenModel.swift:"), "kernel comment without a model line: \(comment.prefix(200))")
        }
    }

    func testAnchorsAreCompileTimeConstants() throws {
        let c = try emitted()[0].1
        XCTAssertTrue(c.contains("const float c_anchors["), "anchors should be emitted as a constant array")
        XCTAssertFalse(c.contains("multibox_prior("), "no anchor computation at run time")
    }
}
