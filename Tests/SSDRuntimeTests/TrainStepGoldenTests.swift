import Foundation
import SSDCompiler
import SSDIO
import SSDRuntime
import XCTest

/// One training step of TinySSD against PyTorch (scripts/make_fixtures.py): targets, loss,
/// every gradient, every updated parameter and the BN state.
final class TrainStepGoldenTests: XCTestCase {
    /// Per-tensor relative L2 error ||a - b|| / ||b||.
    func relativeL2(_ a: [Float], _ b: [Float]) -> Double {
        var num = 0.0, den = 0.0
        for (x, y) in zip(a, b) { num += Double(x - y) * Double(x - y); den += Double(y) * Double(y) }
        return den == 0 ? num.squareRoot() : (num / den).squareRoot()
    }

    func testStepMatchesPyTorch() throws {
        let fx = try Fixtures.load("tinyssd_step")
        let y = fx["Y"]!
        let m = try ModelResolver.resolve(nil, height: 128, width: 128, training: .init(maxBoxes: y.shape[1]))
        let s = ModelSession(library: m.library)
        let weights = try Fixtures.load("tinyssd_weights")
        try s.loadStateDict(weights, source: "tinyssd_weights")
        s.setHyperParameters(learningRate: 0.2, weightDecay: 5e-4)
        let out = try s.run("train_step", inputs: ["X": fx["X"]!, "Y": y])

        for name in ["target.bbox_labels", "target.bbox_masks", "target.cls_labels"] {
            XCTAssertLessThanOrEqual(relativeError(out[name]!.floats, fx[name]!.floats), 1e-5, name)
        }
        XCTAssertLessThanOrEqual(relativeError(out["cls_preds"]!.floats, fx["fwd.cls_preds"]!.floats), 1e-4)
        let perExample = out["loss.per_example"]!.floats
        let ref = fx["loss.per_example"]!.floats
        for (a, b) in zip(perExample, ref) { XCTAssertEqual(Double(a), Double(b), accuracy: 1e-5 * Double(abs(b))) }
        let mean = perExample.map(Double.init).reduce(0, +) / Double(perExample.count)
        XCTAssertEqual(mean, Double(fx["loss.mean"]!.floats[0]), accuracy: 1e-5 * Double(abs(fx["loss.mean"]!.floats[0])))

        // Gradients. Conv biases feeding a BN have a true gradient of zero: what is left is
        // float32 rounding in both, so they are compared in absolute terms.
        let grads = s.gradients()
        var worst: [(String, Double)] = []
        for (name, g) in grads {
            let r = fx["grad.\(name)"]!.floats
            let feedsBN = name.hasPrefix("blk_") && name.hasSuffix(".bias") && !isBN(name)
            if feedsBN {
                XCTAssertLessThanOrEqual(g.floats.map { abs($0) }.max()!, 1e-4, "\(name) should be ~0")
                continue
            }
            let e = relativeL2(g.floats, r)
            worst.append((name, e))
            XCTAssertLessThanOrEqual(e, 1e-3, "grad.\(name): relative L2 error \(e)")
        }
        XCTAssertEqual(grads.count, fx.keys.filter { $0.hasPrefix("grad.") }.count)

        // The state after the SGD step, running statistics and counters included.
        let state = s.stateDict()
        for (name, t) in state {
            let r = try XCTUnwrap(fx["state.\(name)"], name)
            if name.hasSuffix("num_batches_tracked") {
                XCTAssertEqual(t.int64s, r.int64s, name)
                continue
            }
            let e = relativeL2(t.floats, r.floats)
            XCTAssertLessThanOrEqual(e, 1e-5, "state.\(name): relative L2 error \(e)")
        }
        print("worst gradient errors:", worst.sorted { $0.1 > $1.1 }.prefix(4))
    }

    func isBN(_ name: String) -> Bool {
        // BN layers are children 1 and 4 of each down_sample_blk.
        let parts = name.split(separator: ".")
        return parts.count >= 2 && (parts[parts.count - 2] == "1" || parts[parts.count - 2] == "4")
    }
}
