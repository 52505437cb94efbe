#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SSDABI

/// A training run's folder (settings.json, metrics.csv, checkpoint.safetensors), held by one
/// trainer at a time: opening it takes an exclusive lock on RUNDIR/.lock, so a second ssdc
/// training into the same folder fails at once instead of interleaving its epochs.
final class RunDirectory {
    let path: String
    private var lockDescriptor: Int32

    static let lockName = ".lock"
    /// The files a run consists of; temporary files of their atomic writes are named after them.
    static let runFiles = ["checkpoint.safetensors", "curves.png", "metrics.csv", "settings.json"]

    var settingsPath: String { "\(path)/settings.json" }
    var metricsPath: String { "\(path)/metrics.csv" }
    var curvesPath: String { "\(path)/curves.png" }
    var checkpointPath: String { "\(path)/checkpoint.safetensors" }

    /// Creates the folder if needed, locks it (without waiting) and removes temporary files
    /// that killed writes left behind: holding the lock, no other writer can own them.
    init(path: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw RuntimeError("cannot create the run folder \(path): \(error.localizedDescription)")
        }
        self.path = path
        lockDescriptor = try Self.lock("\(path)/\(Self.lockName)", folder: path)
        try removeStaleTemporaries()
    }

    deinit { release() }

    /// Unlocks the folder. The lock file is removed while still locked, so the folder holds
    /// only the run; a waiting process that opened the removed file notices it (see `lock`).
    func release() {
        guard lockDescriptor >= 0 else { return }
        unlink("\(path)/\(Self.lockName)")
        close(lockDescriptor)
        lockDescriptor = -1
    }

    /// Locks `file` with flock, records our pid in it, and returns the open descriptor.
    private static func lock(_ file: String, folder: String) throws -> Int32 {
        while true {
            let fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
            if fd < 0 { throw RuntimeError("cannot create \(file): \(String(cString: strerror(errno)))") }
            if flock(fd, LOCK_EX | LOCK_NB) != 0 {
                let code = errno
                let owner = readPid(fd)
                close(fd)
                if code == EWOULDBLOCK {
                    let who = owner.map { "another ssdc (pid \($0))" } ?? "another ssdc"
                    throw RuntimeError("\(who) is training into \(folder); wait for it to finish, or train into another --out")
                }
                throw RuntimeError("cannot lock \(file): \(String(cString: strerror(code)))")
            }
            // The previous holder may have removed the file between our open and flock;
            // then we hold a lock nobody else sees, and must lock the current file instead.
            var held = stat(), current = stat()
            if fstat(fd, &held) == 0, stat(file, &current) == 0, held.st_ino == current.st_ino, held.st_dev == current.st_dev {
                let pid = Array("\(getpid())\n".utf8)
                if ftruncate(fd, 0) == 0 { _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) } }
                return fd
            }
            close(fd)
        }
    }

    private static func readPid(_ fd: Int32) -> Int? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return nil }
        return Int(String(decoding: buffer[..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Whether `name` is a temporary file of an atomic write of one of the run's files
    /// (SSDIO's FileIO.writeAtomically and AtomicFile name them `.NAME.tmp-PID-RANDOM`).
    static func isTemporary(_ name: String) -> Bool {
        runFiles.contains { name.hasPrefix(".\($0).tmp-") }
    }

    private func removeStaleTemporaries() throws {
        for name in try entries() where Self.isTemporary(name) {
            unlink("\(path)/\(name)")
        }
    }

    private func entries() throws -> [String] {
        do {
            return try FileManager.default.contentsOfDirectory(atPath: path).sorted()
        } catch {
            throw RuntimeError("cannot list the run folder \(path): \(error.localizedDescription)")
        }
    }

    /// A new run starts only in an empty folder: anything else would mix with, or replace,
    /// what is there.
    func requireEmpty() throws {
        let found = try entries().filter { $0 != Self.lockName && !Self.isTemporary($0) }
        guard !found.isEmpty else { return }
        let what = found.contains(where: Self.runFiles.contains) ? "already holds a run" : "is not empty"
        let shown = found.prefix(5).joined(separator: ", ") + (found.count > 5 ? ", ..." : "")
        throw RuntimeError("\(path) \(what) (\(shown)); continue it with --resume, or train into a new --out")
    }

    // MARK: settings

    /// The settings the run recorded, or nil when it has no settings.json.
    func readSettings() throws -> TrainSettings? {
        guard FileManager.default.fileExists(atPath: settingsPath) else { return nil }
        do {
            return try JSONDecoder().decode(TrainSettings.self, from: Data(contentsOf: URL(fileURLWithPath: settingsPath)))
        } catch {
            throw RuntimeError("\(settingsPath) is not a readable settings file of a run: \(AtomicFile.describe(error))")
        }
    }

    func writeSettings(_ settings: TrainSettings) throws {
        try settings.checkEncodable()
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data: Data
        do {
            data = try e.encode(settings)
        } catch {
            throw RuntimeError("cannot write \(settingsPath): \(AtomicFile.describe(error))")
        }
        try AtomicFile.write(data, to: settingsPath)
    }

    // MARK: writing
}

/// metrics.csv: a header and one row per finished epoch. It is rewritten whole (atomically)
/// after every epoch, so a crash or a full disk never leaves a partial row.
struct MetricsLog {
    static let header = "epoch,loss,class_err,bbox_mae,seconds,examples_per_sec,data_seconds,val_map50,val_map,lr"
    /// The columns of metrics.csv before validation and the learning rate were added; a
    /// resumed older run keeps its rows (the new cells empty).
    static let olderFields = 7
    private(set) var rows: [String] = []

    init() {}

    /// The rows of `text` for epochs 1...`epoch`. A last line without its newline is the
    /// remains of an interrupted append (older ssdc versions appended in place) and is
    /// dropped, as are rows that are not a complete row of an epoch.
    init(text: String, upToEpoch epoch: Int) {
        let fields = Self.header.split(separator: ",").count
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        lines.removeLast()  // after the last newline: empty, or a partial row
        rows = lines.compactMap { line in
            let cells = line.split(separator: ",", omittingEmptySubsequences: false)
            guard cells.count == fields || cells.count == Self.olderFields, let e = Int(cells[0]), e >= 1, e <= epoch else { return nil }
            return String(line) + String(repeating: ",", count: fields - cells.count)
        }
    }

    mutating func append(_ m: EpochMetrics) {
        func cell(_ v: Double?, _ format: String) -> String { v.map { String(format: format, $0) } ?? "" }
        rows.append(String(format: "%d,%.6f,%.6e,%.6e,%.3f,%.2f,%.3f,", m.epoch, m.loss, m.classError, m.bboxMAE, m.seconds,
                           m.examplesPerSecond, m.dataSeconds)
                    + [cell(m.validationMAP50, "%.4f"), cell(m.validationMAP, "%.4f"), cell(m.learningRate, "%.6g")].joined(separator: ","))
    }

    /// The rows as numbers, for the curves.
    var points: [CurvePoint] {
        rows.map { row in
            let c = row.split(separator: ",", omittingEmptySubsequences: false).map { Double($0) }
            return CurvePoint(epoch: Int(c[0] ?? 0), loss: c[1], classError: c[2], bboxMAE: c[3],
                              validationMAP50: c.count > 7 ? c[7] : nil, validationMAP: c.count > 8 ? c[8] : nil)
        }
    }

    var text: String { ([Self.header] + rows).map { $0 + "\n" }.joined() }

    func write(to path: String) throws {
        try AtomicFile.write(Data(text.utf8), to: path)
    }
}

extension TrainSettings {
    /// The differences from the settings a run recorded that change its numbers, one line
    /// per option in the words of the command line. The thread count is not among them
    /// (results do not depend on it), nor --epochs (a run may be extended or cut short).
    public func differences(from run: TrainSettings) -> [String] {
        func line(_ option: String, _ was: String, _ now: String) -> String? {
            was == now ? nil : "\(option): the run used \(was), now \(now)"
        }
        func path(_ p: String?) -> String { p.map { URL(fileURLWithPath: $0).standardizedFileURL.path } ?? "none" }
        return [
            line("--data", path(run.data), path(data)),
            line("--model", run.model, model),
            line("the loss", run.loss, loss),
            line("--batch-size", "\(run.batchSize)", "\(batchSize)"),
            line("--lr", "\(run.learningRate)", "\(learningRate)"),
            line("--wd", "\(run.weightDecay)", "\(weightDecay)"),
            line("--seed", "\(run.seed)", "\(seed)"),
            line("--weights", path(run.initialWeights), path(initialWeights)),
            line("--augment", run.augmentation?.summary ?? "none", augmentation?.summary ?? "none"),
            line("--lr-schedule", (run.lrSchedule ?? LRSchedule()).summary, (lrSchedule ?? LRSchedule()).summary),
            line("--sync-bn", run.syncBatchNorm == true ? "it" : "no sync-bn", syncBatchNorm == true ? "it" : "no sync-bn"),
            line("--ema", run.ema.map { "\($0)" } ?? "none", ema.map { "\($0)" } ?? "none"),
        ].compactMap { $0 }
    }

    /// JSON has no NaN or infinity; say which option holds one rather than let the encoder
    /// report an invalid value of `learningRate`.
    func checkEncodable() throws {
        for (option, value) in [("--lr", learningRate), ("--wd", weightDecay)] where !value.isFinite {
            throw RuntimeError("\(option) must be a finite number, got \(value)")
        }
    }
}

extension ModelSession {
    /// The name of the first parameter or buffer holding NaN or infinity, or nil when all
    /// are finite. One branch-free pass over the parameter memory comparing exponent bits:
    /// 12 ms for TinySSD's million values even in a debug build, against a train step of a
    /// second or more.
    func firstNonFiniteParameter() -> String? {
        let bits = UnsafeRawPointer(params.floats).assumingMemoryBound(to: UInt32.self)
        for p in manifest.parameters {
            let values = UnsafeBufferPointer(start: bits + p.offset, count: p.count)
            var any: UInt32 = 0
            for v in values { any |= (v & 0x7F80_0000) == 0x7F80_0000 ? 1 : 0 }
            if any != 0 { return p.name }
        }
        return nil
    }
}
