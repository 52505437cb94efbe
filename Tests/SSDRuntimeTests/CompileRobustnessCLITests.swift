import Foundation
import SSDABI
import SSDCompiler
import SSDIO
import XCTest

/// `ssdc compile` and the cache under a full disk, concurrent use, a model file that never
/// finishes, and damaged compiled directories: each ends with a clear error or a success,
/// never a partial file, a crash or a process left behind.
final class CompileRobustnessCLITests: CLITestCase {
    static let model = Fixtures.packageRoot + "/Examples/tinyssd/model.swift"

    /// The example compiled at 64x64 into `dir` with the usual cache (quick once cached).
    func compiledExample(_ dir: String) throws -> String {
        let r = try ssdc(["compile", Self.model, "--input-size", "64x64", "-o", dir])
        XCTAssertEqual(r.status, 0, r.stderr)
        return dir
    }

    /// A fresh cache holding only the C runtime's objects (copied from the usual cache), so
    /// a test races on the model program and the library without rebuilding the runtime.
    func freshCacheWithRuntime() throws -> [String: String] {
        _ = try compiledExample("\(tmp!)/warm")
        let cache = "\(tmp!)/cache"
        try FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true)
        let usual = CacheDirectory.path
        for d in try FileManager.default.contentsOfDirectory(atPath: usual) where d.hasPrefix("runtime-") {
            try FileManager.default.copyItem(atPath: "\(usual)/\(d)", toPath: "\(cache)/\(d)")
        }
        var env = ProcessInfo.processInfo.environment
        env["SSDC_CACHE_DIR"] = cache
        return env
    }

    /// Runs the commands at the same time; returns their results in order.
    func concurrently(_ commands: [[String]], environment: [String: String]) -> [ProcessResult?] {
        let results = ResultBox(count: commands.count)
        DispatchQueue.concurrentPerform(iterations: commands.count) { i in
            results.set(i, try? Shell.run(CLITestCase.ssdc, commands[i], environment: environment))
        }
        return results.values
    }

    // MARK: concurrent use of one cache

    func testConcurrentCompilesOfANewModelSharingACacheAllSucceed() throws {
        let env = try freshCacheWithRuntime()
        let dirs = (0 ..< 4).map { "\(tmp!)/out\($0)" }
        let results = concurrently(dirs.map { ["compile", Self.model, "--input-size", "64x64", "-o", $0] }, environment: env)
        for (dir, r) in zip(dirs, results) {
            XCTAssertEqual(r?.status, 0, r?.stderr ?? "did not run")
            XCTAssertNil(ELFFile.problem("\(dir)/libmodel.so", kind: .sharedLibrary))
        }
        let cache = env["SSDC_CACHE_DIR"]!
        for sub in ["lib", "models"] {
            let names = try FileManager.default.contentsOfDirectory(atPath: "\(cache)/\(sub)")
            XCTAssertEqual(names.filter { $0.contains(".tmp") }, [], "temporary files left in \(sub)")
            XCTAssertEqual(names.count, 1, "\(sub): \(names)")
        }
    }

    func testConcurrentForwardRunsSharingACacheAllSucceed() throws {
        let env = try freshCacheWithRuntime()
        let fx = try Fixtures.load("tinyssd_forward")
        let input = "\(tmp!)/in.safetensors"
        try SafeTensors.write(["X": fx["X"]!], to: input)
        let results = concurrently((0 ..< 4).map {
            ["run", "--forward", "--input-size", "128x128", "--weights", Fixtures.directory + "/tinyssd_weights.safetensors",
             "--input", input, "--out", "\(tmp!)/out\($0).safetensors", "--threads", "1"]
        }, environment: env)
        for r in results { XCTAssertEqual(r?.status, 0, r?.stderr ?? "did not run") }
    }

    // MARK: a full disk

    /// A file-size limit (ulimit -f, with SIGXFSZ ignored so writes fail with EFBIG) stands
    /// in for a full disk: the copy of the library into the output directory fails.
    func testAFullDiskWhileCopyingTheLibraryLeavesNoPartialFile() throws {
        let dir = try compiledExample("\(tmp!)/out")
        try FileManager.default.removeItem(atPath: "\(dir)/libmodel.so")
        let command = "trap '' XFSZ; ulimit -f 100; exec '\(CLITestCase.ssdc)' compile '\(Self.model)' --input-size 64x64 -o '\(dir)'"
        let r = try Shell.run("/bin/bash", ["-c", command])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("cannot write \(dir)/libmodel.so: file too large (no space left"), r.stderr)
        XCTAssertFalse(r.stderr.contains("Code="), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(dir)/libmodel.so"), "a partial library was left")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.contains(".tmp") }, [])
        // With space again, the same command succeeds.
        XCTAssertEqual(try compiledExample(dir), dir)
        XCTAssertNil(ELFFile.problem("\(dir)/libmodel.so", kind: .sharedLibrary))
    }

    // MARK: damaged compiled directories

    func forward(model dir: String) throws -> ProcessResult {
        try ssdc(["run", "--forward", "--model", dir, "--weights", Fixtures.directory + "/tinyssd_weights.safetensors",
                  "--input", "\(tmp!)/in.safetensors", "--out", "\(tmp!)/o.safetensors"])
    }

    func testATruncatedLibraryIsAnErrorNotABusError() throws {
        let dir = try compiledExample("\(tmp!)/out")
        let lib = "\(dir)/libmodel.so"
        let data = try Data(contentsOf: URL(fileURLWithPath: lib))
        try data.prefix(data.count * 2 / 3).write(to: URL(fileURLWithPath: lib))
        let r = try forward(model: dir)
        XCTAssertEqual(r.status, 1, "exit \(r.status) (135 is SIGBUS): \(r.stderr)")
        XCTAssertTrue(r.stderr.contains("cannot load \(lib): truncated: "), r.stderr)
        XCTAssertTrue(r.stderr.contains("Recompile the model with `ssdc compile`"), r.stderr)
    }

    func testACorruptGraphJSONIsNamed() throws {
        let dir = try compiledExample("\(tmp!)/out")
        try "{\"nodes\": [".write(toFile: "\(dir)/graph.json", atomically: true, encoding: .utf8)
        var r = try forward(model: dir)
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("\(dir)/graph.json is damaged: not valid JSON"), r.stderr)
        try "{\"name\": \"x\"}".write(toFile: "\(dir)/graph.json", atomically: true, encoding: .utf8)
        r = try forward(model: dir)
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("\(dir)/graph.json is damaged: missing \""), r.stderr)
        XCTAssertFalse(r.stderr.contains("DecodingError"), r.stderr)
    }

    // MARK: a model program that never finishes

    static let loopingModel = "import SSDGraph\nwhile true {}\n"

    /// Live processes (not zombies) whose command line mentions `text`.
    static func processes(mentioning text: String) -> [Int] {
        let pids = (try? FileManager.default.contentsOfDirectory(atPath: "/proc"))?.compactMap { Int($0) } ?? []
        return pids.filter { pid in
            guard let cmd = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"),
                  String(decoding: cmd, as: UTF8.self).contains(text) else { return false }
            return RobustnessProbe.isAlive(pid)
        }
    }

    func testAModelProgramThatLoopsForeverIsStoppedAtItsTimeLimit() throws {
        let file = "\(tmp!)/loop.swift"
        try Self.loopingModel.write(toFile: file, atomically: true, encoding: .utf8)
        var env = ProcessInfo.processInfo.environment
        env["SSDC_CACHE_DIR"] = "\(tmp!)/cache"
        let start = Date()
        let r = try ssdc(["compile", file, "--model-timeout", "2", "-o", "\(tmp!)/out"], environment: env)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("\(file): the model program did not finish within 2 s (an infinite loop?); raise --model-timeout"), r.stderr)
        XCTAssertLessThan(Date().timeIntervalSince(start), 60)
        XCTAssertEqual(Self.processes(mentioning: "\(tmp!)/cache/models/model-"), [])
    }

    func testKillingSsdcEndsTheModelProgram() throws {
        let file = "\(tmp!)/loop.swift"
        try Self.loopingModel.write(toFile: file, atomically: true, encoding: .utf8)
        for signal in [SIGTERM, SIGKILL] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: CLITestCase.ssdc)
            p.arguments = ["compile", file, "-o", "\(tmp!)/out"]
            var env = ProcessInfo.processInfo.environment
            env["SSDC_CACHE_DIR"] = "\(tmp!)/cache"
            p.environment = env
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            let marker = "\(tmp!)/cache/models/model-"
            let deadline = Date().addingTimeInterval(120)
            while Self.processes(mentioning: marker).isEmpty && Date() < deadline && p.isRunning { usleep(100_000) }
            XCTAssertFalse(Self.processes(mentioning: marker).isEmpty, "the model program never started")
            kill(p.processIdentifier, signal)
            // Wait for ssdc's death by /proc, not Process (which waits for a pipe a
            // surviving program would keep open); end survivors so the test cannot hang.
            let end = Date().addingTimeInterval(20)
            while RobustnessProbe.isAlive(Int(p.processIdentifier)) && Date() < end { usleep(50_000) }
            usleep(300_000)
            let survivors = Self.processes(mentioning: marker)
            for pid in survivors { kill(pid_t(pid), SIGKILL) }
            p.waitUntilExit()
            XCTAssertEqual(survivors, [], "the model program outlived ssdc (signal \(signal))")
        }
    }

    func testAnInvalidModelTimeoutIsRefused() throws {
        var r = try ssdc(["compile", Self.model, "--model-timeout", "0"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("--model-timeout must be a number of seconds greater than 0"), r.stderr)
        var env = ProcessInfo.processInfo.environment
        env["SSDC_MODEL_TIMEOUT"] = "soon"
        r = try ssdc(["run", "--forward", "--model", Self.model, "--weights", "w", "--input", "i", "--out", "o"], environment: env)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("SSDC_MODEL_TIMEOUT=soon: expected a number of seconds greater than 0"), r.stderr)
    }
}

/// Whether a process is alive: a zombie (dead, waiting for a parent that does not reap it,
/// as in some containers) is not.
enum RobustnessProbe {
    static func isAlive(_ pid: Int) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        return !stat[stat.index(close, offsetBy: 2)...].hasPrefix("Z")
    }
}

/// Results filled in from concurrent work.
final class ResultBox: @unchecked Sendable {
    private let lock = NSLock()
    private var results: [ProcessResult?]
    init(count: Int) { results = Array(repeating: nil, count: count) }
    func set(_ i: Int, _ r: ProcessResult?) { lock.lock(); results[i] = r; lock.unlock() }
    var values: [ProcessResult?] { lock.lock(); defer { lock.unlock() }; return results }
}
