#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SSDCompiler
import SSDIO
@testable import SSDRuntime
import XCTest

/// A run folder holds one run: never replaced or mixed with another, not written by two
/// trainings at once, never given a non-finite checkpoint, and left consistent by a crash
/// or a full disk. One batch per epoch of a tiny generated set keeps each test to seconds.
final class RunFolderTests: XCTestCase {
    static let root: String = {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ssdc-runfolder-data-\(getpid())").path
        try! SyntheticBananas.generate(into: dir, trainCount: 8, valCount: 2, size: 64, seed: 5)
        return dir
    }()

    var tmp: String!
    var dir: String { tmp + "/run" }

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent("ssdc-runfolder-\(getpid())-\(name.filter { $0.isLetter })").path
        try? FileManager.default.removeItem(atPath: tmp)
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        if let tmp { try? FileManager.default.removeItem(atPath: tmp) }
    }

    func makeTrainer(epochs: Int, lr: Float = 0.1, batchSize: Int = 8, threads: Int = 2) throws -> Trainer {
        let data = try DetectionDataSet.load(root: Self.root, split: .train)
        let m = try ModelResolver.resolve(nil, height: 64, width: 64, training: .init(maxBoxes: data.maxBoxes))
        m.library.setThreads(threads)
        let session = ModelSession(library: m.library)
        session.initializeParameters(seed: 1, graph: m.graph)
        var settings = TrainSettings(data: Self.root, threads: threads, model: "built-in", loss: "default")
        settings.epochs = epochs
        settings.batchSize = batchSize
        settings.learningRate = lr
        return Trainer(model: m, session: session, data: data, settings: settings, runDirectory: dir)
    }

    func assertThrows(_ body: () throws -> Void, containing parts: [String], file: StaticString = #filePath, line: UInt = #line) {
        do {
            try body()
            XCTFail("no error; expected one saying \(parts)", file: file, line: line)
        } catch {
            for p in parts { XCTAssertTrue("\(error)".contains(p), "\(error)\nlacks: \(p)", file: file, line: line) }
        }
    }

    func metricsRows() throws -> [String] {
        try String(contentsOfFile: dir + "/metrics.csv", encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    }

    func checkpointEpoch() throws -> String? {
        try SafeTensors.readWithMetadata(dir + "/checkpoint.safetensors").metadata["epoch"]
    }

    // MARK: one run per folder

    func testANewRunRefusesAFolderHoldingARun() throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        _ = try makeTrainer(epochs: 1).train()  // an existing empty folder is fine
        let before = try metricsRows()
        assertThrows({ _ = try self.makeTrainer(epochs: 1).train() }, containing: ["\(dir) already holds a run", "--resume", "new --out"])
        XCTAssertEqual(try metricsRows(), before)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).sorted(),
                       ["checkpoint.safetensors", "metrics.csv", "settings.json"], "the lock file goes with the lock")
    }

    func testResumeRefusesChangedSettingsUnlessAllowedAndThenRecordsThem() throws {
        _ = try makeTrainer(epochs: 1).train()
        let settings = try String(contentsOfFile: dir + "/settings.json", encoding: .utf8)
        assertThrows({ _ = try self.makeTrainer(epochs: 2, lr: 0.05, batchSize: 4).resume() },
                     containing: ["--lr: the run used 0.1, now 0.05", "--batch-size: the run used 8, now 4", "--allow-changed-settings"])
        XCTAssertEqual(try String(contentsOfFile: dir + "/settings.json", encoding: .utf8), settings)

        let sameButThreads = try makeTrainer(epochs: 2, threads: 1)
        XCTAssertEqual(try sameButThreads.resume(), 2, "the thread count does not change the numbers")
        sameButThreads.close()

        let changed = try makeTrainer(epochs: 2, lr: 0.05)
        XCTAssertEqual(try changed.resume(allowingChangedSettings: true), 2)
        _ = try changed.train(from: 2)
        let recorded = try JSONDecoder().decode(TrainSettings.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/settings.json")))
        XCTAssertEqual(recorded.learningRate, 0.05)
        XCTAssertEqual(recorded.changes, [SettingsChange(fromEpoch: 2, differences: ["--lr: the run used 0.1, now 0.05"])])
    }

    func testASecondTrainingIntoTheFolderIsLockedOut() throws {
        _ = try makeTrainer(epochs: 1).train()
        let first = try makeTrainer(epochs: 2)
        XCTAssertEqual(try first.resume(), 2)  // holds the lock until its training ends
        let message = "another ssdc (pid \(getpid())) is training into \(dir)"
        assertThrows({ _ = try self.makeTrainer(epochs: 2).resume() }, containing: [message])
        assertThrows({ _ = try self.makeTrainer(epochs: 2).train() }, containing: [message])
        _ = try first.train(from: 2)
        XCTAssertEqual(try makeTrainer(epochs: 2).resume(), 3, "the lock ends with the training")
    }

    // MARK: non-finite training

    func testDivergenceStopsBeforeAnyCheckpointAndKeepsTheLastGoodOne() throws {
        _ = try makeTrainer(epochs: 1).train()
        let huge = try makeTrainer(epochs: 4, lr: 1e30)
        XCTAssertEqual(try huge.resume(allowingChangedSettings: true), 2)
        var message = ""
        XCTAssertThrowsError(try huge.train(from: 2)) { message = "\($0)" }
        let kept = try XCTUnwrap(try checkpointEpoch().flatMap { Int($0) })
        XCTAssertLessThan(kept, 4, message)
        XCTAssertTrue(message.hasPrefix("epoch \(kept + 1), batch 1 of 1: the loss is nan; training stopped, try a smaller --lr"), message)
        XCTAssertTrue(message.hasSuffix("the checkpoint of epoch \(kept) in \(dir) is kept"), message)
        let weights = try SafeTensors.read(dir + "/checkpoint.safetensors")
        XCTAssertTrue(weights.values.allSatisfy { $0.dtype != .f32 || $0.floats.allSatisfy(\.isFinite) })
        XCTAssertEqual(try metricsRows().count, kept + 2, "the header, a row per kept epoch and the final newline")
    }

    /// BatchNorm's running mean is not used by the train step's forward, so an infinite one
    /// leaves the loss finite: only the check of the parameters stops it reaching a checkpoint.
    func testANonFiniteParameterStopsTrainingBeforeTheFirstCheckpoint() throws {
        let t = try makeTrainer(epochs: 2)
        let p = try XCTUnwrap(t.session.manifest.parameters.first { $0.name.hasSuffix("running_mean") })
        t.session.params.floats[p.offset] = .infinity
        assertThrows({ _ = try t.train() },
                     containing: ["epoch 1, batch 1 of 1: parameter \(p.name) is not finite after the step", "no checkpoint was written"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/checkpoint.safetensors"))
        XCTAssertEqual(try metricsRows(), [MetricsLog.header, ""])
    }

    func testANonFiniteLearningRateIsNamed() throws {
        let t = try makeTrainer(epochs: 1, lr: .nan)
        assertThrows({ _ = try t.train() }, containing: ["--lr must be a finite number, got nan"])
    }

    func testFindingANonFiniteParameterIsCheap() throws {
        let t = try makeTrainer(epochs: 1)
        XCTAssertNil(t.session.firstNonFiniteParameter())
        let p = t.session.manifest.parameters[3]
        t.session.params.floats[p.offset + p.count - 1] = .infinity
        XCTAssertEqual(t.session.firstNonFiniteParameter(), p.name)
    }

    // MARK: checkpoint metadata

    func testResumeValidatesTheCheckpointEpoch() throws {
        _ = try makeTrainer(epochs: 2).train()
        let good = try SafeTensors.read(dir + "/checkpoint.safetensors")
        for bad in ["-3", "0", "1.5", "99999999999999999999", String(Int.max), "3"] {
            try SafeTensors.write(good, metadata: ["epoch": bad], to: dir + "/checkpoint.safetensors")
            assertThrows({ _ = try self.makeTrainer(epochs: 4).resume() },
                         containing: ["\(dir)/checkpoint.safetensors", "\"\(bad)\" is not an epoch of the run (an integer from 1 to 2)"])
        }
        try SafeTensors.write(good, metadata: [:], to: dir + "/checkpoint.safetensors")
        assertThrows({ _ = try self.makeTrainer(epochs: 4).resume() }, containing: ["\(dir)/checkpoint.safetensors has no epoch"])
    }

    func testResumingAFinishedRunChangesNothing() throws {
        _ = try makeTrainer(epochs: 2).train()
        let metrics = try metricsRows()
        let shorter = try makeTrainer(epochs: 1)
        XCTAssertEqual(try shorter.resume(), 3, "beyond --epochs: nothing to do")
        XCTAssertEqual(try shorter.train(from: 3).count, 0)
        XCTAssertEqual(try metricsRows(), metrics)
        XCTAssertEqual(try checkpointEpoch(), "2")
    }

    // MARK: crashes

    func testAPartialRowLeftByACrashIsDroppedOnResume() throws {
        _ = try makeTrainer(epochs: 1).train()
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/metrics.csv"))
        try h.seekToEnd()
        try h.write(contentsOf: Data("2".utf8))  // what a full disk left of epoch 2's row
        try h.close()
        let t = try makeTrainer(epochs: 2)
        XCTAssertEqual(try t.resume(), 2)
        _ = try t.train(from: 2)
        let rows = try metricsRows()
        XCTAssertEqual(rows.count, 4, "\(rows)")
        XCTAssertEqual(rows.dropLast().map { $0.split(separator: ",").first.map(String.init) }, ["epoch", "1", "2"])
        XCTAssertEqual(rows.last, "")
    }

    func testStaleTemporaryFilesOfKilledWritesAreRemoved() throws {
        _ = try makeTrainer(epochs: 1).train()
        let stale = ["\(dir)/.checkpoint.safetensors.tmp-999999-1", "\(dir)/.metrics.csv.tmp-1-2"]
        for f in stale { try Data([1, 2, 3]).write(to: URL(fileURLWithPath: f)) }
        let t = try makeTrainer(epochs: 1)
        _ = try t.resume()
        for f in stale { XCTAssertFalse(FileManager.default.fileExists(atPath: f), f) }
    }
}
