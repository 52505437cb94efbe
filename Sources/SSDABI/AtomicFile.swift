#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Files written whole or not at all: the build cache, `ssdc compile`'s output directory and
/// a training run's settings and metrics.
///
/// Every file is written under a unique temporary name beside its destination (pid and a
/// random number) and renamed into place with rename(2) only once it is complete. So a
/// reader never sees a partial file, a full disk never leaves one behind, and processes
/// sharing a cache may race on any step: rename replaces atomically (FileManager.moveItem
/// refuses an existing destination), and whichever rename comes last leaves a complete,
/// identical file. Errors name the file and say what went wrong in words.
///
/// It lives in SSDABI because both sides write such files (the compiler its cache and
/// output directory, the runtime a run's settings and metrics) and the runtime must not
/// import the compiler; ELFFile's check reuses its errno wording.
public enum AtomicFile {
    /// A hidden, unique temporary name in the directory of `path` (same file system, so
    /// the final rename is atomic).
    public static func temporaryPath(for path: String) -> String {
        let ns = path as NSString
        let dir = ns.deletingLastPathComponent.isEmpty ? "." : ns.deletingLastPathComponent
        return "\(dir)/.\(ns.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0 ... .max))"
    }

    /// Renames `source` over `destination`, replacing an existing file atomically. On
    /// failure `source` is removed.
    public static func replace(_ destination: String, with source: String) throws {
        guard rename(source, destination) == 0 else {
            let code = errno
            unlink(source)
            throw FileError("cannot move \(source) to \(destination): \(reason(code))")
        }
    }

    /// Writes `data` to `path` through a temporary file and a rename.
    public static func write(_ data: Data, to path: String, mode: mode_t = 0o644) throws {
        let tmp = temporaryPath(for: path)
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw FileError("cannot write \(path): \(reason(errno))") }
        let failure = data.withUnsafeBytes { writeAll(fd, $0) }
        try finish(fd, tmp, into: path, failure: failure)
    }

    /// Copies `source` to `destination` through a temporary file that is checked to hold
    /// every byte of the source before it is renamed into place.
    public static func copy(_ source: String, to destination: String) throws {
        let src = open(source, O_RDONLY | O_CLOEXEC)
        guard src >= 0 else { throw FileError("cannot read \(source): \(reason(errno))") }
        defer { close(src) }
        var info = stat()
        guard fstat(src, &info) == 0 else { throw FileError("cannot read \(source): \(reason(errno))") }
        let tmp = temporaryPath(for: destination)
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, info.st_mode & 0o777)
        guard fd >= 0 else { throw FileError("cannot write \(destination): \(reason(errno))") }
        var failure: Int32? = nil
        var copied = 0
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while failure == nil {
            let n = buffer.withUnsafeMutableBytes { systemRead(src, $0.baseAddress!, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 {
                let code = errno
                close(fd); unlink(tmp)
                throw FileError("cannot read \(source): \(reason(code))")
            }
            if n == 0 { break }
            failure = buffer.withUnsafeBytes { writeAll(fd, UnsafeRawBufferPointer(rebasing: $0[0 ..< n])) }
            copied += n
        }
        if failure == nil, copied != Int(info.st_size) {
            close(fd); unlink(tmp)
            throw FileError("cannot copy \(source) to \(destination): read \(copied) of its \(info.st_size) bytes (the file changed while it was copied); compile again")
        }
        try finish(fd, tmp, into: destination, failure: failure)
    }

    /// Reads a whole file.
    public static func read(_ path: String) throws -> Data {
        do {
            return try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw FileError("cannot read \(path): \(describe(error))")
        }
    }

    /// The names in a directory.
    public static func directoryListing(_ path: String) throws -> [String] {
        do {
            return try FileManager.default.contentsOfDirectory(atPath: path)
        } catch {
            throw FileError("cannot list the directory \(path): \(describe(error))")
        }
    }

    /// Creates a directory and its parents. Another process creating it at the same time
    /// is not an error.
    public static func makeDirectory(_ path: String) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw FileError("cannot create the directory \(path): a file of that name is in the way") }
            return
        }
        let parent = (path as NSString).deletingLastPathComponent
        if !parent.isEmpty, parent != path { try makeDirectory(parent) }
        if mkdir(path, 0o755) != 0 {
            let code = errno
            if code == EEXIST, FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue { return }
            throw FileError("cannot create the directory \(path): \(reason(code))")
        }
    }

    /// An errno in words; a full disk says so plainly.
    public static func reason(_ code: Int32) -> String {
        switch code {
        case ENOSPC: return "no space left on device (the disk is full)"
        case EDQUOT: return "disk quota exceeded (no space left on device for this user)"
        case EFBIG: return "file too large (no space left under the file-size limit, ulimit -f)"
        default: return String(cString: strerror(code))
        }
    }

    /// A Foundation error in words: its POSIX cause when it has one (Cocoa codes such as
    /// 256 or 516 mean nothing to a user), or what is wrong where in a JSON file.
    public static func describe(_ error: Error) -> String {
        if let e = error as? DecodingError { return describe(decoding: e) }
        if case EncodingError.invalidValue(let value, let c) = error {
            let path = c.codingPath.map(\.stringValue).joined(separator: ".")
            return "cannot store \(value)" + (path.isEmpty ? "" : " as \(path)")
        }
        let ns = error as NSError
        if ns.domain == NSPOSIXErrorDomain { return reason(Int32(ns.code)) }
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return reason(Int32(underlying.code))
        }
        switch ns.code {
        case NSFileNoSuchFileError, NSFileReadNoSuchFileError: return "no such file or directory"
        case NSFileReadNoPermissionError, NSFileWriteNoPermissionError: return "permission denied"
        case NSFileWriteOutOfSpaceError: return reason(ENOSPC)
        case NSFileWriteFileExistsError: return "a file of that name already exists"
        default: return ns.localizedFailureReason ?? ns.localizedDescription
        }
    }

    /// A DecodingError in words, with the JSON path of the bad value.
    static func describe(decoding error: DecodingError) -> String {
        func at(_ path: [CodingKey]) -> String {
            path.isEmpty ? "" : " at " + path.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
        }
        func detail(_ c: DecodingError.Context) -> String {
            c.debugDescription.hasSuffix(".") ? String(c.debugDescription.dropLast()) : c.debugDescription
        }
        switch error {
        case .dataCorrupted(let c) where c.codingPath.isEmpty:
            let cause = (c.underlyingError as NSError?)?.userInfo[NSDebugDescriptionErrorKey] as? String
            return "not valid JSON (cut short, or not JSON at all)" + (cause.map { ": \($0)" } ?? "")
        case .dataCorrupted(let c): return "an invalid value\(at(c.codingPath)): \(detail(c))"
        case .keyNotFound(let key, let c): return "missing \"\(key.stringValue)\"\(at(c.codingPath))"
        case .typeMismatch(let type, let c): return "expected \(type)\(at(c.codingPath)): \(detail(c))"
        case .valueNotFound(let type, let c): return "missing \(type) value\(at(c.codingPath))"
        @unknown default: return "\(error)"
        }
    }

    /// Writes every byte; returns the errno of a failed write.
    private static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Int32? {
        var offset = 0
        while offset < bytes.count {
            let n = systemWrite(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                return errno
            }
            offset += n
        }
        return nil
    }

    /// Flushes and closes a written temporary file and renames it to `path`, or removes it
    /// and reports the first failure. fsync first: otherwise after a power loss the rename
    /// may be on disk while the data is not.
    private static func finish(_ fd: Int32, _ tmp: String, into path: String, failure: Int32?) throws {
        var failure = failure
        if failure == nil, fsync(fd) != 0 { failure = errno }
        if close(fd) != 0, failure == nil { failure = errno }
        if let failure {
            unlink(tmp)
            throw FileError("cannot write \(path): \(reason(failure))")
        }
        try replace(path, with: tmp)
    }
}

// read(2) and write(2), under names AtomicFile's own read and write do not hide.
private func systemRead(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int { read(fd, buffer, count) }
private func systemWrite(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int { write(fd, buffer, count) }

/// A file operation that failed: the file and the problem in words.
public struct FileError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
