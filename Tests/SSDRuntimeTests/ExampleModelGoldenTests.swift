import Foundation
import SSDCompiler
import SSDDriver
import SSDIO
import SSDRuntime
import XCTest

/// The example models of Examples/ (the SSD family beyond TinySSD), compiled from their
/// model files, against their PyTorch twins (scripts/examples_torch.py, fixtures by
/// scripts/make_example_fixtures.py): parameter names, the forward in both BN modes,
/// softmax and detection, and one training step.
final class ExampleModelGoldenTests: XCTestCase {
    static let models = ["ssd300-vgg16", "mobilenet-ssdlite", "resnet-fpn-ssd"]

    /// The model compiled for the fixtures' 3 classes (cached across tests by the resolver).
    func resolve(_ name: String) throws -> ResolvedModel {
        try ModelResolver.resolve(Fixtures.packageRoot + "/Examples/\(name)/model.swift", numClasses: 3)
    }

    func fixture(_ name: String, _ kind: String) throws -> (tensors: [String: HostTensor], metadata: [String: String]) {
        try SafeTensors.readWithMetadata("\(Fixtures.directory)/examples/\(name)_\(kind).safetensors")
    }

    /// The batch as float32 (the fixtures store pixels as bytes).
    func floats(_ t: HostTensor) -> HostTensor { HostTensor(floats: t.floats, shape: t.shape) }

    func testParameterNamesAndShapesMatchPyTorch() throws {
        for name in Self.models {
            let m = try resolve(name)
            let weights = try fixture(name, "weights").tensors
            let ours = Dictionary(uniqueKeysWithValues: m.graph.parameters.map { ($0.info.name, $0.node.type.dims) })
            XCTAssertEqual(Set(ours.keys), Set(weights.keys), name)
            for (p, t) in weights { XCTAssertEqual(ours[p], t.shape, "\(name): \(p)") }
        }
    }

    func testForwardProbsAndDetectionMatchPyTorch() throws {
        for name in Self.models {
            let m = try resolve(name)
            let s = ModelSession(library: m.library)
            try s.loadStateDict(try fixture(name, "weights").tensors, source: "\(name)_weights")
            let (fx, meta) = try fixture(name, "forward")
            // PyTorch's own float32 error against float64 on these outputs: train-mode BN over
            // small maps at batch 2 amplifies rounding, so no float32 run can be closer.
            let noise = (try? JSONSerialization.jsonObject(with: Data((meta["float32_noise"] ?? "{}").utf8))) as? [String: Double] ?? [:]
            for (program, prefix) in [("forward_train", "train"), ("infer", "eval")] {
                let out = try s.run(program, inputs: ["X": floats(fx["X"]!)])
                for output in ["cls_preds", "bbox_preds"] {
                    let key = "\(prefix).\(output)"
                    let got = try XCTUnwrap(out[output]), ref = fx[key]!
                    XCTAssertEqual(got.shape, ref.shape, "\(name) \(key)")
                    let tol = max(1e-4, 3 * (noise[key] ?? 0))
                    let err = relativeError(got.floats, ref.floats)
                    XCTAssertLessThanOrEqual(err, tol, "\(name) \(key): relative error \(err), PyTorch float32's \(noise[key] ?? 0)")
                }
                let anchors = zip(out["anchors"]!.floats, fx["fwd.anchors"]!.floats).map { abs($0 - $1) }.max()!
                XCTAssertLessThanOrEqual(anchors, 1e-6, "\(name) anchors")
                guard program == "infer" else { continue }
                XCTAssertLessThanOrEqual(relativeError(out["probs"]!.floats, fx["eval.probs"]!.floats), 1e-4, "\(name) probs")
                let det = try XCTUnwrap(out["detection"])
                XCTAssertEqual(det.shape, fx["eval.detection"]!.shape)
                let problems = detectionMismatches(det.floats, fx["eval.detection"]!.floats, rowsPerImage: det.shape[1], tol: 1e-4)
                XCTAssertTrue(problems.isEmpty, "\(name) detection:\n" + problems.joined(separator: "\n"))
            }
        }
    }

    func testTrainStepMatchesPyTorch() throws {
        for name in Self.models {
            let m = try resolve(name)
            var (fx, meta) = try fixture(name, "step")
            fx["X"] = floats(fx["X"]!)
            // Biases whose float64 gradient is zero (a BN feeding only 1x1 convs into
            // train-mode BNs): measured against their weight's gradient scale.
            let zero = Set((try? JSONSerialization.jsonObject(with: Data((meta["zero_gradients"] ?? "[]").utf8))) as? [String] ?? [])
            // The forward's float32 noise (PyTorch's own), and whether the batch keeps the
            // 2e-6 switch margin make_example_fixtures.py looks for.
            let noise = (try? JSONSerialization.jsonObject(with: Data((try fixture(name, "forward").metadata["float32_noise"] ?? "{}").utf8)))
                as? [String: Double] ?? [:]
            let margin = min(Double(meta["relu_margin"] ?? "0") ?? 0, Double(meta["pool_margin"] ?? "0") ?? 0)
            try checkStep(ModelSession(library: m.library), fixture: fx, weights: try fixture(name, "weights").tensors,
                          zeroGradientBias: { zero.contains($0) }, forwardTolerance: max(1e-4, 3 * (noise["train.cls_preds"] ?? 0)),
                          switchSafe: margin >= 2e-6)
        }
    }

    /// Examples/tinyssd-small-objects, the model of docs/TRAINING.md's runs with a 0.1 anchor:
    /// the chapter's TinySSD but for the 32x32 scale, whose predictors serve 5 anchors per pixel
    /// (a square of size 0.1 after the chapter's 0.2 and 0.272), so 6468 anchors in all.
    func testSmallObjectTinySSDAddsASquareAnchorOfSize01OnTheFinestScale() throws {
        let m = try ModelResolver.resolve(Fixtures.packageRoot + "/Examples/tinyssd-small-objects/model.swift", numClasses: 1)
        let dims = Dictionary(uniqueKeysWithValues: m.graph.parameters.map { ($0.info.name, $0.node.type.dims) })
        XCTAssertEqual(dims["cls_0.weight"], [10, 64, 3, 3])
        XCTAssertEqual(dims["bbox_0.weight"], [20, 64, 3, 3])
        XCTAssertEqual(dims["cls_1.weight"], [8, 128, 3, 3])
        XCTAssertEqual(dims["blk_0.0.0.weight"], [16, 3, 3, 3])
        let s = ModelSession(library: m.library)
        let out = try s.run("infer", inputs: ["X": HostTensor(floats: Array(repeating: 0, count: 3 * 256 * 256), shape: [1, 3, 256, 256])])
        let anchors = try XCTUnwrap(out["anchors"]).floats
        XCTAssertEqual(anchors.count, 6468 * 4)
        // pixel (0, 0) of the 32x32 map: its third anchor is the square of size 0.1 at (1/64, 1/64)
        let c: Float = 0.5 / 32
        for (got, want) in zip(anchors[8..<12], [c - 0.05, c - 0.05, c + 0.05, c + 0.05]) {
            XCTAssertEqual(got, want, accuracy: 1e-6)
        }
    }

    /// Examples/tinyssd-exposure standardises its input first, so an image and the same image
    /// at half the exposure (every pixel times 0.5, as `--eval-transform dark` makes it) give
    /// the same predictions, where the model without it does not.
    func testExposureTinySSDGivesTheSamePredictionsForADarkerImage() throws {
        var rng = SplitMix64(seed: 3)
        let pixels = (0..<(3 * 256 * 256)).map { _ in 128 + rng.uniform(100) }
        func predictions(_ example: String, _ scale: Float) throws -> [Float] {
            let m = try ModelResolver.resolve(Fixtures.packageRoot + "/Examples/\(example)/model.swift", numClasses: 1)
            let s = ModelSession(library: m.library)
            s.initializeParameters(seed: 1, graph: m.graph)
            let out = try s.run("infer", inputs: ["X": HostTensor(floats: pixels.map { $0 * scale }, shape: [1, 3, 256, 256])])
            return try XCTUnwrap(out["probs"]).floats
        }
        func maxDiff(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).map { abs($0 - $1) }.max() ?? .infinity }
        let plain = try predictions("tinyssd-exposure", 1), dark = try predictions("tinyssd-exposure", 0.5)
        XCTAssertEqual(plain.count, 6468 * 2)
        XCTAssertLessThan(maxDiff(plain, dark), 1e-4)
        let rawPlain = try predictions("tinyssd-small-objects", 1), rawDark = try predictions("tinyssd-small-objects", 0.5)
        XCTAssertGreaterThan(maxDiff(rawPlain, rawDark), 1e-3)
    }
}
