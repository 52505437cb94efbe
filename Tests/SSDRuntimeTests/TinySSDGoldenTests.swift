import Foundation
import SSDCompiler
import SSDDriver
import SSDGraph
import SSDIO
import SSDModels
import SSDRuntime
import XCTest

/// Files in Tests/Fixtures, made by scripts/make_fixtures.py (PyTorch + d2l).
enum Fixtures {
    static let directory: String = {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures").path
    }()

    static func load(_ name: String) throws -> [String: HostTensor] {
        try SafeTensors.read("\(directory)/\(name).safetensors")
    }

    static var packageRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }
}

/// max |a - b| / max |b|, the relative error the tolerances are stated in.
func relativeError(_ a: [Float], _ b: [Float]) -> Double {
    precondition(a.count == b.count)
    let scale = max(b.map { Double(abs($0)) }.max() ?? 0, 1e-30)
    return zip(a, b).map { Double(abs($0 - $1)) }.max().map { $0 / scale } ?? 0
}

/// Compares detection outputs (N, A, 6) as sets of rows per image: every reference row has
/// a row with the same class and score and box within `tol`. Rows are sorted by (class,
/// score) and matched within a small window, so near-equal scores may swap places.
func detectionMismatches(_ got: [Float], _ ref: [Float], rowsPerImage a: Int, tol: Float) -> [String] {
    var problems: [String] = []
    let images = ref.count / (a * 6)
    for n in 0..<images {
        func rows(_ v: [Float]) -> [[Float]] {
            (0..<a).map { Array(v[((n * a + $0) * 6)..<((n * a + $0) * 6 + 6)]) }
                .sorted { ($0[0], $0[1], $0[2], $0[3]) < ($1[0], $1[1], $1[2], $1[3]) }
        }
        var mine = rows(got)
        let theirs = rows(ref)
        var used = [Bool](repeating: false, count: mine.count)
        for (i, r) in theirs.enumerated() {
            let lo = max(0, i - 32), hi = min(mine.count, i + 33)
            if let j = (lo..<hi).first(where: { !used[$0] && zip(mine[$0], r).allSatisfy { abs($0 - $1) <= tol } }) {
                used[j] = true
            } else if problems.count < 5 {
                problems.append("image \(n): no row matches \(r) (nearest by order: \(mine[min(i, mine.count - 1)]))")
            }
        }
        mine.removeAll()
    }
    return problems
}

final class TinySSDGoldenTests: XCTestCase {
    /// The built-in TinySSD at the fixtures' 128x128 input, with the fixtures' weights.
    static func session(height: Int = 128, width: Int = 128) throws -> (ResolvedModel, ModelSession) {
        let m = try ModelResolver.resolve(nil, size: (height, width))
        let s = ModelSession(library: m.library)
        try s.loadStateDict(try Fixtures.load("tinyssd_weights"), source: "tinyssd_weights.safetensors")
        return (m, s)
    }

    func testParameterNamesAndShapesMatchPyTorchStateDict() throws {
        let weights = try Fixtures.load("tinyssd_weights")
        let graph = try BuiltinModels.tinySSD.graph(height: 256, width: 256)
        let ours = Dictionary(uniqueKeysWithValues: graph.parameters.map { ($0.info.name, $0.node.type.dims) })
        XCTAssertEqual(Set(ours.keys), Set(weights.keys))
        for (name, t) in weights { XCTAssertEqual(ours[name], t.shape, name) }
        // state_dict order: the first few names as PyTorch lists them.
        XCTAssertEqual(graph.parameters.prefix(7).map(\.info.name), [
            "blk_0.0.0.weight", "blk_0.0.0.bias", "blk_0.0.1.weight", "blk_0.0.1.bias",
            "blk_0.0.1.running_mean", "blk_0.0.1.running_var", "blk_0.0.1.num_batches_tracked",
        ])
    }

    func testAnchorsAt256MatchMultiboxPrior() throws {
        let ref = try Fixtures.load("tinyssd_anchors256")["anchors"]!
        let (m, s) = try Self.session(height: 256, width: 256)
        _ = m
        let x = HostTensor(floats: [Float](repeating: 0, count: 3 * 256 * 256), shape: [1, 3, 256, 256])
        let out = try s.run("infer", inputs: ["X": x])
        let anchors = try XCTUnwrap(out["anchors"])
        XCTAssertEqual(anchors.shape, [1, 5444, 4])
        let diff = zip(anchors.floats, ref.floats).map { abs($0 - $1) }.max()!
        XCTAssertLessThanOrEqual(diff, 1e-6)
    }

    func testForwardMatchesPyTorchInTrainAndEvalMode() throws {
        let fx = try Fixtures.load("tinyssd_forward")
        let (_, s) = try Self.session()
        for (program, prefix) in [("forward_train", "train"), ("infer", "eval")] {
            let out = try s.run(program, inputs: ["X": fx["X"]!])
            for name in ["cls_preds", "bbox_preds"] {
                let got = try XCTUnwrap(out[name]), ref = fx["\(prefix).\(name)"]!
                XCTAssertEqual(got.shape, ref.shape)
                let err = relativeError(got.floats, ref.floats)
                XCTAssertLessThanOrEqual(err, 1e-4, "\(program) \(name): relative error \(err)")
            }
            let anchorDiff = zip(out["anchors"]!.floats, fx["fwd.anchors"]!.floats).map { abs($0 - $1) }.max()!
            XCTAssertLessThanOrEqual(anchorDiff, 1e-6)
        }
    }

    func testProbsAndDetectionMatchD2L() throws {
        let fx = try Fixtures.load("tinyssd_forward")
        let (_, s) = try Self.session()
        let out = try s.run("infer", inputs: ["X": fx["X"]!])
        XCTAssertLessThanOrEqual(relativeError(out["probs"]!.floats, fx["eval.probs"]!.floats), 1e-4)
        let det = try XCTUnwrap(out["detection"])
        XCTAssertEqual(det.shape, fx["eval.detection"]!.shape)
        let problems = detectionMismatches(det.floats, fx["eval.detection"]!.floats, rowsPerImage: det.shape[1], tol: 1e-4)
        XCTAssertTrue(problems.isEmpty, problems.joined(separator: "\n"))
        // Kept rows first: the first row of each image has a class unless all are background.
        XCTAssertGreaterThanOrEqual(det.floats[0], 0)
    }

    func testBatchSizeIsOpenAtRunTime() throws {
        // One library, batch 2 then batch 1: the second image alone gives the same outputs
        // in eval mode (no batch statistics).
        let fx = try Fixtures.load("tinyssd_forward")
        let (_, s) = try Self.session()
        let x = fx["X"]!
        let both = try s.run("infer", inputs: ["X": x])
        let per = 3 * 128 * 128
        let second = HostTensor(floats: Array(x.floats[per...]), shape: [1, 3, 128, 128])
        let one = try s.run("infer", inputs: ["X": second])
        let a = one["cls_preds"]!.floats, b = Array(both["cls_preds"]!.floats[a.count...])
        XCTAssertEqual(relativeError(a, b), 0, accuracy: 1e-6)
    }

    func testLargeBatchRunsOneImagePerThreadWithTheValuesOfBatchOne() throws {
        // Two threads and six images: infer runs one image per thread (model.c's
        // infer_by_image), each in a workspace of its own; every output of every image must
        // be exactly what that image alone gives.
        let fx = try Fixtures.load("tinyssd_forward")
        let (m, s) = try Self.session()
        m.library.setThreads(2)
        defer { m.library.setThreads(ProcessInfo.processInfo.activeProcessorCount) }
        let per = 3 * 128 * 128, x = fx["X"]!.floats
        var batch: [Float] = []
        for k in 0..<6 { batch += x[(k % 2) * per ..< (k % 2 + 1) * per].map { $0 * (1 + 0.05 * Float(k)) } }
        let all = try s.run("infer", inputs: ["X": HostTensor(floats: batch, shape: [6, 3, 128, 128])])
        for k in 0..<6 {
            let one = try s.run("infer", inputs: ["X": HostTensor(floats: Array(batch[k * per ..< (k + 1) * per]), shape: [1, 3, 128, 128])])
            for name in ["cls_preds", "bbox_preds", "probs", "detection"] {
                let a = one[name]!.floats
                XCTAssertEqual(Array(all[name]!.floats[k * a.count ..< (k + 1) * a.count]), a, "\(name) of image \(k)")
            }
        }
    }
}
