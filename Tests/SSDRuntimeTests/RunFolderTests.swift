#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SSDCompiler
import SSDDriver
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

    override class func tearDown() {
        try? FileManager.default.removeItem(atPath: root)
    }

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
        let m = try ModelResolver.resolve(nil, size: (64, 64))
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
                       ["checkpoint.safetensors", "curves.png", "metrics.csv", "settings.json"], "the lock file goes with the lock")
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
        t.session.params.floats[p.offset + p.count - 1] = 0
        let count = t.session.manifest.parameters.map(\.count).reduce(0, +)
        let c0 = Date()
        for _ in 0..<10 { _ = t.session.firstNonFiniteParameter() }
        let check = Date().timeIntervalSince(c0) / 10
        let s0 = Date()
        _ = try t.train()
        let step = Date().timeIntervalSince(s0)
        // Measured in a debug build: 12 ms for TinySSD's 1.0M values against 230 ms for this
        // smallest of steps (8 images of 64x64); a real step (32 of 256x256) takes seconds.
        XCTAssertLessThan(check, step / 4, "checking \(count) values took \(check) s, a train step \(step) s")
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

    /// Older versions wrote the checkpoint and then appended the row in place: a full disk
    /// left epoch 2's checkpoint with one byte of its row, which resuming kept as a row.
    func testAPartialRowLeftByACrashIsDroppedOnResume() throws {
        _ = try makeTrainer(epochs: 2).train()
        let rows = try metricsRows()
        try (rows[0...1].map { $0 + "\n" }.joined() + "2").write(toFile: dir + "/metrics.csv", atomically: true, encoding: .utf8)
        let t = try makeTrainer(epochs: 3)
        XCTAssertEqual(try t.resume(), 3)
        _ = try t.train(from: 3)
        let now = try metricsRows()
        XCTAssertEqual(now.last, "")
        XCTAssertEqual(now.dropLast().map { $0.split(separator: ",", omittingEmptySubsequences: false).count }, [10, 10, 10], "\(now)")
        XCTAssertEqual(now.dropLast().map { $0.split(separator: ",")[0] }, ["epoch", "1", "3"])
    }

    func testStaleTemporaryFilesOfKilledWritesAreRemoved() throws {
        _ = try makeTrainer(epochs: 1).train()
        let stale = ["\(dir)/.checkpoint.safetensors.tmp-999999-1", "\(dir)/.metrics.csv.tmp-1-2"]
        for f in stale { try Data([1, 2, 3]).write(to: URL(fileURLWithPath: f)) }
        let t = try makeTrainer(epochs: 1)
        _ = try t.resume()
        for f in stale { XCTAssertFalse(FileManager.default.fileExists(atPath: f), f) }
    }

    // MARK: the command line

    func ssdc(_ args: [String]) throws -> ProcessResult {
        guard FileManager.default.isExecutableFile(atPath: CLITestCase.ssdc) else {
            throw XCTSkip("ssdc is not built at \(CLITestCase.ssdc); run `swift build` before `swift test`")
        }
        return try Shell.run(CLITestCase.ssdc, args)
    }

    func train(_ extra: [String], out: String? = nil) -> [String] {
        ["run", "--train", "--data", Self.root, "--input-size", "64x64", "--batch-size", "8", "--lr", "0.1", "--threads", "2",
         "--out", out ?? dir] + extra
    }

    func testTrainCommandKeepsRunsApart() throws {
        var r = try ssdc(train(["--epochs", "1"]))
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("epoch 1, class err"), r.stdout)

        r = try ssdc(train(["--epochs", "1"]))
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("error: \(dir) already holds a run (checkpoint.safetensors, curves.png, metrics.csv, settings.json); continue it with --resume, or train into a new --out"), r.stderr)

        r = try ssdc(train(["--epochs", "2", "--resume", "--lr", "0.05", "--seed", "3"]))
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("--lr: the run used 0.1, now 0.05"), r.stderr)
        XCTAssertTrue(r.stderr.contains("--seed: the run used 0, now 3"), r.stderr)

        // Another training holds the folder: here, this process.
        let lock = open(dir + "/.lock", O_RDWR | O_CREAT, 0o644)
        XCTAssertEqual(flock(lock, LOCK_EX | LOCK_NB), 0)
        _ = Array("\(getpid())\n".utf8).withUnsafeBytes { write(lock, $0.baseAddress, $0.count) }
        r = try ssdc(train(["--epochs", "2", "--resume"]))
        unlink(dir + "/.lock")
        close(lock)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("another ssdc (pid \(getpid())) is training into \(dir)"), r.stderr)

        r = try ssdc(train(["--epochs", "2", "--resume"]))
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("resuming \(dir) at epoch 2"), r.stdout)
        r = try ssdc(train(["--epochs", "2", "--resume"]))
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("nothing to do: \(dir) has finished 2 epochs and --epochs is 2"), r.stdout)
        XCTAssertEqual(try metricsRows().count, 4)
    }

    /// A file size limit stands in for a full disk: the checkpoint cannot be written. The
    /// error names it, no temporary file or partial row is left, and the run resumes.
    func testTrainCommandOnAFullDiskLeavesAResumableRun() throws {
        let warm = try ssdc(train(["--epochs", "1"], out: tmp + "/warm"))  // the model library is cached before the limit
        XCTAssertEqual(warm.status, 0, warm.stderr)
        // 1 MiB: room for the model library (copied from the cache), not for the checkpoint.
        let command = "trap '' XFSZ; ulimit -f 1024; exec \"$0\" \"$@\""
        var r = try Shell.run("/bin/bash", ["-c", command, CLITestCase.ssdc] + train(["--epochs", "1"]))
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("\(dir)/checkpoint.safetensors") && r.stderr.contains("too large"), r.stderr)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).sorted(), ["curves.png", "metrics.csv", "settings.json"])
        XCTAssertEqual(try metricsRows().last, "", "no partial row")

        r = try ssdc(train(["--epochs", "1", "--resume"]))
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("resuming \(dir) at epoch 1 (it stopped before its first checkpoint)"), r.stdout)
        XCTAssertEqual(try metricsRows().count, 3)
        func numbers(_ row: String?) -> [Substring] { row.map { Array($0.split(separator: ",").prefix(4)) } ?? [] }
        let uninterrupted = try String(contentsOfFile: tmp + "/warm/metrics.csv", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(numbers(try metricsRows()[1]), numbers(String(uninterrupted[1])), "the same loss and errors as an uninterrupted run")
    }
}
