// Low-level file reading and crash-safe writing shared by the safetensors and
// image code. POSIX calls are used directly (rather than Data(contentsOf:))
// so that callers can tell "missing" from "permission denied" from "is a
// directory" and phrase their own error messages around the file name.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

#if !_endian(little)
// HostTensor stores little-endian bytes and reinterprets them in place.
#error("SSDIO assumes a little-endian host")
#endif

/// Why a file operation failed; each module wraps this in its own error type
/// that names the file.
struct FileIOFailure: Error, Sendable {
    enum Kind: Sendable { case notFound, permissionDenied, isDirectory, other }
    var kind: Kind
    /// Short lower-case reason, e.g. "no such file" or "permission denied".
    var reason: String

    static func fromErrno(_ code: Int32, _ action: String) -> FileIOFailure {
        switch code {
        case ENOENT: return FileIOFailure(kind: .notFound, reason: "no such file")
        case EACCES, EPERM: return FileIOFailure(kind: .permissionDenied, reason: "permission denied")
        case EISDIR: return FileIOFailure(kind: .isDirectory, reason: "is a directory")
        default: return FileIOFailure(kind: .other, reason: "\(action): \(String(cString: strerror(code)))")
        }
    }
}

enum FileIO {
    /// Reads a whole regular file into memory.
    static func readAll(_ path: String) throws(FileIOFailure) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw .fromErrno(errno, "cannot open") }
        defer { close(fd) }

        var info = stat()
        if fstat(fd, &info) != 0 { throw .fromErrno(errno, "cannot stat") }
        // open() succeeds on directories on Linux; reject them up front so the
        // message is clear instead of a later EISDIR from read().
        if (info.st_mode & S_IFMT) == S_IFDIR { throw .fromErrno(EISDIR, "cannot read") }

        // Read the size fstat reported straight into the result (one
        // allocation, no copies), then probe for more data in case the file
        // grew or its size is not known in advance (pipes, /proc).
        var buffer = [UInt8](repeating: 0, count: max(Int(info.st_size), 0))
        var filled = 0
        while filled < buffer.count {
            let n = buffer.withUnsafeMutableBytes { raw in read(fd, raw.baseAddress! + filled, raw.count - filled) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .fromErrno(errno, "read error")
            }
            if n == 0 { break } // the file shrank
            filled += n
        }
        if filled < buffer.count {
            buffer.removeSubrange(filled...)
            return buffer
        }
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { raw in read(fd, raw.baseAddress!, raw.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .fromErrno(errno, "read error")
            }
            if n == 0 { break }
            buffer.append(contentsOf: chunk[0 ..< n])
        }
        return buffer
    }

    /// Writes `bytes` to `path` so that a crash never leaves a partial file:
    /// the data goes to a temporary file in the same directory (same file
    /// system, so rename is atomic), is flushed to disk, and then renamed over
    /// the destination. Missing parent directories are created.
    static func writeAtomically(_ data: [UInt8], to path: String) throws(FileIOFailure) {
        if path.isEmpty || path.hasSuffix("/") {
            throw FileIOFailure(kind: .other, reason: "not a file path")
        }
        let (directory, baseName) = splitPath(path)
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw FileIOFailure(kind: .other, reason: "cannot create directory '\(directory)'")
        }

        // Hidden, unique temporary name; pid + random avoids collisions between
        // concurrent writers of the same destination.
        let tempPath = "\(directory)/.\(baseName).tmp-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        let fd = open(tempPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd < 0 { throw .fromErrno(errno, "cannot create temporary file") }

        var failure: FileIOFailure? = data.withUnsafeBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let n = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    return .fromErrno(errno, "write error")
                }
                offset += n
            }
            return nil
        }
        // fsync before rename: otherwise after a power loss the rename may be
        // durable while the data is not, leaving an empty file.
        if failure == nil, fsync(fd) != 0 { failure = .fromErrno(errno, "fsync failed") }
        if close(fd) != 0, failure == nil { failure = .fromErrno(errno, "close failed") }
        if failure == nil, rename(tempPath, path) != 0 { failure = .fromErrno(errno, "cannot rename into place") }
        if let failure {
            unlink(tempPath)
            throw failure
        }
    }

    /// "a/b/c.txt" -> ("a/b", "c.txt"); "c.txt" -> (".", "c.txt"); "/c" -> ("/", "c").
    static func splitPath(_ path: String) -> (directory: String, baseName: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let directory = String(path[..<slash])
        let baseName = String(path[path.index(after: slash)...])
        return (directory.isEmpty ? "/" : directory, baseName)
    }
}
