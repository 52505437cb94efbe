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

    func makeTrainer(epochs: Int, out: String?, ema: Float? = nil) throws -> Trainer {
        let data = try DetectionDataSet.load(root: Self.root, split: .train)
        let m = try ModelResolver.resolve(nil, size: (64, 64))
        m.library.setThreads(2)
        let session = ModelSession(library: m.library)
        session.initializeParameters(seed: 1, graph: m.graph)
        var settings = TrainSettings(data: Self.root, threads: 2, model: "built-in", loss: "default")
        settings.epochs = epochs
        settings.batchSize = 16
        settings.learningRate = 0.1
        settings.ema = ema
        let t = Trainer(model: m, session: session, data: data, settings: settings, runDirectory: out)
        if ema != nil { t.validation = try DetectionDataSet.load(root: Self.root, split: .val) }
        return t
    }

    /// --ema's update, value by value: the first update weighs the old average 0.1
    /// (min(decay, (1 + 0) / (10 + 0))), later ones up to the decay; batch counters are copied.
    func testParameterAverageFollowsItsFormula() throws {
        let trainer = try makeTrainer(epochs: 1, out: nil)
        let session = trainer.session
        let a0 = session.stateDict()
        var average = ParameterAverage(of: session, decay: 0.5)
        var b = a0
        for (name, t) in a0 {
            b[name] = t.dtype == .i64 ? HostTensor(int64s: t.int64s.map { $0 + 7 }, shape: t.shape)
                                      : HostTensor(floats: t.floats.map { 2 * $0 + 1 }, shape: t.shape)
        }
        try session.loadStateDict(b, source: "b")
        average.update(from: session)  // d = 0.1
        average.update(from: session)  // d = min(0.5, 2/11)
        XCTAssertEqual(average.updates, 2)
        let got = average.withAverage(in: session) { session.stateDict() }
        XCTAssertEqual(session.stateDict(), b, "the session keeps its own weights")
        let d1: Float = 0.1, d2: Float = 2.0 / 11.0
        for (name, t) in a0 {
            if t.dtype == .i64 {
                XCTAssertEqual(got[name]!.int64s, b[name]!.int64s, name)
                continue
            }
            let expected = zip(t.floats, b[name]!.floats).map { a, v in d2 * (d1 * a + (1 - d1) * v) + (1 - d2) * v }
            XCTAssertEqual(got[name]!.floats, expected, name)
        }
    }

    /// A run with --ema validates the averaged weights, writes them beside the checkpoint,
    /// and resumed from epoch 2 ends with the same average and metrics as without a stop.
    func testAveragedRunResumesExactlyAndValidatesTheAverage() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("ssdc-ema-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: base) }
        let full = try makeTrainer(epochs: 4, out: base + "/full", ema: 0.9)
        let straight = try full.train()
        let files = try FileManager.default.contentsOfDirectory(atPath: base + "/full").sorted()
        XCTAssertEqual(files, ["checkpoint-ema.safetensors", "checkpoint.safetensors", "curves.png", "metrics.csv", "settings.json"])
        _ = try makeTrainer(epochs: 2, out: base + "/cut", ema: 0.9).train()
        let resumed = try makeTrainer(epochs: 4, out: base + "/cut", ema: 0.9)
        let first = try resumed.resume()
        XCTAssertEqual(first, 3)
        let rest = try resumed.train(from: first)
        XCTAssertEqual(rest.map(\.loss), Array(straight.map(\.loss)[2...]))
        XCTAssertEqual(rest.map(\.validationMAP50), Array(straight.map(\.validationMAP50)[2...]))
        let a = try SafeTensors.readWithMetadata(base + "/full/checkpoint-ema.safetensors")
        let b = try SafeTensors.readWithMetadata(base + "/cut/checkpoint-ema.safetensors")
        XCTAssertEqual(a.tensors, b.tensors, "the average after a resume")
        XCTAssertEqual(a.metadata["ema_updates"], "12")  // 3 batches x 4 epochs
        XCTAssertEqual(b.metadata["epoch"], "4")
        let raw = try SafeTensors.read(base + "/full/checkpoint.safetensors")
        XCTAssertNotEqual(raw["cls_0.weight"], a.tensors["cls_0.weight"], "the average is not the weights")
        // The last epoch's validation figure is that of the averaged weights.
        let check = try makeTrainer(epochs: 1, out: nil, ema: 0.9)
        try check.session.loadStateDict(a.tensors, source: "checkpoint-ema")
        let val = try XCTUnwrap(check.validation)
        let r = try Evaluator.evaluate(check.session, data: val, batchSize: 16, maxBoxes: max(1, val.maxBoxes), size: check.model.inputSize)
        XCTAssertEqual(r.meanAP, straight.last!.validationMAP50)
        // A run that keeps an average cannot resume without it.
        try FileManager.default.removeItem(atPath: base + "/cut/checkpoint-ema.safetensors")
        let broken = try makeTrainer(epochs: 5, out: base + "/cut", ema: 0.9)
        XCTAssertThrowsError(try broken.resume()) { XCTAssertTrue("\($0)".contains("checkpoint-ema.safetensors is missing"), "\($0)") }
        broken.close()
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
