import Foundation
import SSDDriver
import SSDIO
import SSDRuntime
import XCTest

/// Checkpoints are checked on load: values no trained model holds are refused with the
/// tensor's name, and old checkpoints' one-element num_batches_tracked still load.
final class WeightCheckTests: XCTestCase {
    static let root: String = {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ssdc-weightcheck-data-\(getpid())").path
        try! SyntheticBananas.generate(into: dir, trainCount: 4, valCount: 4, size: 64, seed: 5)
        return dir
    }()

    /// A session of the built-in TinySSD (64x64, as TrainingTests, so the library is cached once).
    func session() throws -> ModelSession {
        let data = try DetectionDataSet.load(root: Self.root, split: .val)
        let m = try ModelResolver.resolve(nil, size: (64, 64))
        m.library.setThreads(2)
        return ModelSession(library: m.library)
    }

    func loadError(_ weights: [String: HostTensor], into s: ModelSession) -> String {
        do {
            try s.loadStateDict(weights, source: "w.safetensors")
            return "no error"
        } catch {
            return "\(error)"
        }
    }

    func testNonFiniteValuesAndNegativeVariancesAreRefusedByName() throws {
        var w = try Fixtures.load("tinyssd_weights")
        var conv = w["blk_0.0.0.weight"]!.floats
        conv[5] = .nan
        conv[9] = -.infinity
        w["blk_0.0.0.weight"] = HostTensor(floats: conv, shape: w["blk_0.0.0.weight"]!.shape)
        w["cls_1.bias"] = HostTensor(doubles: [Double](repeating: 0, count: 7) + [1e300], shape: [8])  // inf as float32
        var variance = w["blk_0.0.1.running_var"]!.floats
        variance[3] = -0.5
        w["blk_0.0.1.running_var"] = HostTensor(floats: variance, shape: [16])
        let s = try session()
        let m = loadError(w, into: s)
        XCTAssertTrue(m.contains("w.safetensors does not fit model tinyssd"), m)
        XCTAssertTrue(m.contains("tensor blk_0.0.0.weight has 2 non-finite values (the first, nan, at index 5)"), m)
        XCTAssertTrue(m.contains("tensor cls_1.bias has 1 non-finite value (the first, inf, at index 7)"), m)
        XCTAssertTrue(m.contains("tensor blk_0.0.1.running_var has 1 negative variance (the first, -0.5, at index 3)"), m)
        XCTAssertNoThrow(try s.loadStateDict(try Fixtures.load("tinyssd_weights"), source: "good"))
    }

    func testAOneElementVectorFillsAScalarAsInPyTorch() throws {
        var w = try Fixtures.load("tinyssd_weights")
        w["blk_0.0.1.num_batches_tracked"] = HostTensor(int64s: [42], shape: [1])
        let s = try session()
        try s.loadStateDict(w, source: "old.safetensors")
        let back = s.stateDict()["blk_0.0.1.num_batches_tracked"]!
        XCTAssertEqual(back.shape, [], "the state dict keeps the model's scalar shape")
        XCTAssertEqual(back.int64s, [42])
        w["blk_0.0.1.num_batches_tracked"] = HostTensor(int64s: [1, 2], shape: [2])
        var m = loadError(w, into: s)
        XCTAssertTrue(m.contains("tensor blk_0.0.1.num_batches_tracked has shape [2], the model needs []"), m)
        w["blk_0.0.1.num_batches_tracked"] = HostTensor(int64s: [1], shape: [1, 1])
        m = loadError(w, into: s)
        XCTAssertTrue(m.contains("tensor blk_0.0.1.num_batches_tracked has shape [1, 1], the model needs []"), m)
    }

    func testEvaluationOfAnOverflowingModelFailsInsteadOfGivingAClassError() throws {
        var w = try Fixtures.load("tinyssd_weights")
        let shape = w["blk_0.0.0.weight"]!.shape
        w["blk_0.0.0.weight"] = HostTensor(floats: [Float](repeating: 3e38, count: shape.reduce(1, *)), shape: shape)
        let s = try session()
        try s.loadStateDict(w, source: "huge.safetensors")  // finite, so it loads
        let data = try DetectionDataSet.load(root: Self.root, split: .val)
        XCTAssertThrowsError(try Evaluator.evaluate(s, data: data, batchSize: 4, maxBoxes: data.maxBoxes)) { error in
            XCTAssertTrue("\(error)".contains("gave a non-finite loss"), "\(error)")
            XCTAssertTrue("\(error)".contains("bananas_val/label.csv"), "\(error)")
        }
    }
}
