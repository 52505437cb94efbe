#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// A one-line progress bar on a terminal (images done, examples/s, ETA); silent when
/// stderr is not a terminal, so logs stay clean.
final class ProgressLine {
    let enabled: Bool
    /// `enabled`: false for the ranks other than 0 of a data-parallel run.
    init(enabled: Bool = true) { self.enabled = enabled && isatty(2) != 0 }
    var lastDraw = Date.distantPast

    func update(done: Int, total: Int, rate: Double, elapsed: Double) {
        guard enabled, Date().timeIntervalSince(lastDraw) > 0.2 || done == total else { return }
        lastDraw = Date()
        let width = 30
        let filled = total > 0 ? min(width, width * done / total) : 0
        let eta = rate > 0 ? Double(total - done) / rate : 0
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        let line = String(format: "\r[%@] %d/%d images, %.1f examples/s, ETA %.0f s ", bar, done, total, rate, eta)
        FileHandle.standardError.write(Data(line.utf8))
    }

    func clear() {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }
}
