import Foundation
import SSDCompiler
import SSDDriver
import SSDIO
import SSDRuntime
import XCTest

/// Short training runs on a small generated data set: the loss falls, the same seed gives
/// the same numbers, and an interrupted run resumed from its checkpoint ends where an
/// uninterrupted one does.
final class TrainingTests: XCTestCase {
    static let root: String = {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ssdc-train-data-\(getpid())").path
        try! SyntheticBananas.generate(into: dir, trainCount: 48, valCount: 16, size: 64, seed: 3)
        return dir
    }()

    func makeTrainer(epochs: Int, out: String?) throws -> Trainer {
        let data = try DetectionDataSet.load(root: Self.root, split: .train)
        let m = try ModelResolver.resolve(nil, size: (64, 64))
        m.library.setThreads(2)
        let session = ModelSession(library: m.library)
        session.initializeParameters(seed: 1, graph: m.graph)
        var settings = TrainSettings(data: Self.root, threads: 2, model: "built-in", loss: "default")
        settings.epochs = epochs
        settings.batchSize = 16
        settings.learningRate = 0.1
        return Trainer(model: m, session: session, data: data, settings: settings, runDirectory: out)
    }

    func testLossFallsAndRunsRepeat() throws {
        let a = try makeTrainer(epochs: 6, out: nil).train()
        XCTAssertEqual(a.count, 6)
        XCTAssertLessThan(a.last!.loss, 0.5 * a.first!.loss, "loss by epoch: \(a.map(\.loss))")
        XCTAssertLessThan(a.last!.classError, a.first!.classError)
        let b = try makeTrainer(epochs: 6, out: nil).train()
        XCTAssertEqual(a.map(\.loss), b.map(\.loss), "same seed and threads must give the same numbers")
    }

    func testResumeContinuesFromTheCheckpoint() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ssdc-run-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let full = try makeTrainer(epochs: 4, out: nil).train()
        _ = try makeTrainer(epochs: 2, out: dir).train()
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        XCTAssertEqual(files, ["checkpoint.safetensors", "curves.png", "metrics.csv", "settings.json"], "no temporary files left")
        let resumed = try makeTrainer(epochs: 4, out: dir)
        let first = try resumed.resume()
        XCTAssertEqual(first, 3)
        let rest = try resumed.train(from: first)
        XCTAssertEqual(rest.map(\.loss), Array(full.map(\.loss)[2...]))
        let csv = try String(contentsOfFile: dir + "/metrics.csv", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(csv.count, 5)  // header + 4 epochs
        let ckpt = try SafeTensors.readWithMetadata(dir + "/checkpoint.safetensors")
        XCTAssertEqual(ckpt.metadata["epoch"], "4")
        XCTAssertEqual(ckpt.tensors["blk_0.0.1.num_batches_tracked"]?.int64s, [12])  // 3 batches x 4 epochs
    }
}
