#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Checks that a file the compiler wrote (or the cache holds) is a complete ELF file of
/// the expected kind before it is renamed into place, taken from the cache, or dlopened:
/// dlopen maps a truncated library and the process dies with SIGBUS when it touches a
/// page past the end of the file.
public enum ELFFile {
    public enum Kind: Sendable {
        case object, sharedLibrary, executable

        var types: Set<UInt16> {
            switch self {
            case .object: return [1]  // ET_REL
            case .sharedLibrary: return [3]  // ET_DYN
            case .executable: return [2, 3]  // ET_EXEC, or ET_DYN for a position-independent one
            }
        }

        var noun: String {
            switch self {
            case .object: return "an object file"
            case .sharedLibrary: return "a shared library"
            case .executable: return "an executable"
            }
        }
    }

    /// nil when `path` is a complete 64-bit little-endian ELF file of `kind`, else the
    /// problem in words: missing, not a regular file, not ELF, the wrong kind, or shorter
    /// than its section table or one of its loaded segments says it is (truncated).
    public static func problem(_ path: String, kind: Kind) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return AtomicFile.reason(errno) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { return AtomicFile.reason(errno) }
        guard (info.st_mode & S_IFMT) == S_IFREG else { return "not a regular file" }
        let size = UInt64(info.st_size)
        guard size > 0 else { return "empty (0 bytes): it was not completely written" }
        guard let header = bytes(fd, at: 0, count: 64) else { return "truncated (\(size) bytes, shorter than an ELF header)" }
        guard header[0 ..< 4] == [0x7f, 0x45, 0x4c, 0x46] else { return "not an ELF file (not \(kind.noun) built by ssdc)" }
        guard header[4] == 2, header[5] == 1 else { return "not a 64-bit little-endian ELF file" }
        let type = UInt16(le: header, 16)
        guard kind.types.contains(type) else { return "not \(kind.noun) (ELF type \(type))" }

        let sectionsEnd = UInt64(le: header, 40) + UInt64(UInt16(le: header, 58)) * UInt64(UInt16(le: header, 60))
        var needed = sectionsEnd
        let phoff = UInt64(le: header, 32), phentsize = UInt64(UInt16(le: header, 54)), phnum = UInt64(UInt16(le: header, 56))
        if phnum > 0, phentsize >= 56 {
            guard phoff + phnum * phentsize <= size, let table = bytes(fd, at: phoff, count: Int(phnum * phentsize)) else {
                return truncated(size, needed: phoff + phnum * phentsize)
            }
            for i in 0 ..< Int(phnum) {
                let base = i * Int(phentsize)
                guard UInt32(le: table, base) == 1 else { continue }  // PT_LOAD
                needed = max(needed, UInt64(le: table, base + 8) + UInt64(le: table, base + 32))  // p_offset + p_filesz
            }
        }
        return needed > size ? truncated(size, needed: needed) : nil
    }

    private static func truncated(_ size: UInt64, needed: UInt64) -> String {
        "truncated: \(size) bytes, its ELF headers describe \(needed) (an interrupted write, or the disk was full)"
    }

    private static func bytes(_ fd: Int32, at offset: UInt64, count: Int) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: count)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, count, off_t(offset)) }
        return n == count ? buffer : nil
    }
}

private extension FixedWidthInteger {
    /// A little-endian integer at `offset` of `bytes`.
    init(le bytes: [UInt8], _ offset: Int) {
        var v = Self.zero
        for i in (0 ..< MemoryLayout<Self>.size).reversed() { v = v << 8 | Self(bytes[offset + i]) }
        self = v
    }
}
