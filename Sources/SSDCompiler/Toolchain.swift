#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import SSDABI

/// The C compiler a library is built with, and its flags.
public struct ToolchainInfo: Codable, Hashable, Sendable {
    public var cc: String
    public var version: String
    public var flags: [String]

    public init(cc: String, version: String, flags: [String]) {
        self.cc = cc
        self.version = version
        self.flags = flags
    }

    /// Compile flags for model.c and the runtime.
    public static let defaultFlags = ["-std=c11", "-O3", "-march=native", "-fopenmp", "-fPIC"]
    /// `-Wl,-z,defs` makes a missing runtime symbol a build error rather than a dlopen failure.
    public static let linkFlags = ["-shared", "-fopenmp", "-Wl,-z,defs", "-lm"]
}

/// The CPU a library (or an exported bundle) is built for: the `-march` it passes. The
/// runtime picks its micro-kernel from what that target has: AVX-512 (x86-64-v4, or native
/// on such a CPU), AVX2 + FMA (x86-64-v3), else the portable C paths (generic).
public enum BuildTarget: String, CaseIterable, Sendable {
    case native
    case x86_64_v3 = "x86-64-v3"
    case x86_64_v4 = "x86-64-v4"
    case generic

    /// The compiler flag; generic passes none, so any C11 compiler on any CPU builds the
    /// runtime's portable C paths.
    public var marchFlag: String {
        switch self {
        case .native: return "-march=native"
        case .x86_64_v3: return "-march=x86-64-v3"
        case .x86_64_v4: return "-march=x86-64-v4"
        case .generic: return ""
        }
    }
}

public struct ToolchainError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

/// Result of running a tool.
public struct ProcessResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
}

public enum Shell {
    /// Runs an executable (a path, or a name searched on PATH) and captures its output.
    public static func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil,
                           currentDirectory: String? = nil) throws -> ProcessResult {
        guard let path = which(executable) else {
            throw ToolchainError("\(executable): not found")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = arguments
        if let environment { p.environment = environment }
        if let currentDirectory { p.currentDirectoryURL = URL(fileURLWithPath: currentDirectory) }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        // Read both pipes while the process runs, so a chatty compiler cannot fill one and block.
        nonisolated(unsafe) var errData = Data()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async {
            errData = err.fileHandleForReading.readDataToEndOfFile()
            group.leave()
        }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        p.waitUntilExit()
        return ProcessResult(status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                             stderr: String(decoding: errData, as: UTF8.self))
    }

    public static func which(_ name: String) -> String? {
        if name.contains("/") { return FileManager.default.isExecutableFile(atPath: name) ? name : nil }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }
}

/// Finds the C compiler and the runtime sources, and builds model libraries.
public enum Toolchain {
    /// `SSDC_CC`, else `CC`, else Debian's clang at /usr/bin/clang, else `clang`/`cc` on
    /// PATH. Debian's clang comes first because the Swift toolchain's clang (often first on
    /// PATH) has no OpenMP headers.
    public static func findCC() throws -> String {
        let env = ProcessInfo.processInfo.environment
        for key in ["SSDC_CC", "CC"] {
            if let v = env[key], !v.isEmpty {
                guard let p = Shell.which(v) else { throw ToolchainError("\(key)=\(v): no such compiler") }
                return p
            }
        }
        for c in ["/usr/bin/clang", "clang", "cc"] {
            if let p = Shell.which(c) { return p }
        }
        throw ToolchainError("no C compiler found: install clang (apt-get install clang libomp-dev) or set SSDC_CC")
    }

    /// The compiler and its flags for `target` (the default flags' -march replaced).
    public static func info(target: BuildTarget = .native) throws -> ToolchainInfo {
        let cc = try findCC()
        let v = (try? Shell.run(cc, ["--version"]))?.stdout.split(separator: "\n").first.map(String.init) ?? "unknown"
        let flags = ToolchainInfo.defaultFlags.compactMap { $0 == "-march=native" ? (target.marchFlag.isEmpty ? nil : target.marchFlag) : $0 }
        return ToolchainInfo(cc: cc, version: v, flags: flags)
    }

    /// Directory of the hand-written C runtime: `SSDC_RUNTIME_DIR`, else Runtime/ of the
    /// package this tool was built from.
    public static func runtimeDirectory() throws -> String {
        if let d = ProcessInfo.processInfo.environment["SSDC_RUNTIME_DIR"] { return d }
        let here = URL(fileURLWithPath: #filePath)  // Sources/SSDCompiler/Toolchain.swift
        let dir = here.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Runtime").path
        guard FileManager.default.fileExists(atPath: dir + "/ssd_runtime.h") else {
            throw ToolchainError("cannot find the ssdc C runtime (ssd_runtime.h) at \(dir); set SSDC_RUNTIME_DIR")
        }
        return dir
    }

    public static func runtimeSources() throws -> [String] {
        let dir = try runtimeDirectory()
        return try AtomicFile.directoryListing(dir).filter { $0.hasSuffix(".c") }.sorted().map { "\(dir)/\($0)" }
    }

    /// Compiles model.c (in `dir`, beside model.h) and links it with the runtime into a
    /// shared library. The runtime's objects are built once per (sources, compiler, flags)
    /// and the library is cached under a hash of every input, so an unchanged model is not
    /// rebuilt. Returns the library path in the cache and whether it was a cache hit.
    public static func buildLibrary(sourceDir dir: String, toolchain: ToolchainInfo) throws -> (path: String, cached: Bool) {
        let runtime = try runtimeObjects(toolchain: toolchain)
        var hasher = ContentHash()
        hasher.add(runtime.key)
        for f in ["model.c", "model.h"] {
            hasher.add(f)
            hasher.add(try AtomicFile.read("\(dir)/\(f)"))
        }
        let cache = CacheDirectory.path + "/lib"
        try AtomicFile.makeDirectory(cache)
        let lib = "\(cache)/libssdc-\(hasher.hex).so"
        // A damaged entry (an interrupted write by an older ssdc, a failing disk) is rebuilt.
        if ELFFile.problem(lib, kind: .sharedLibrary) == nil { return (lib, true) }

        let tmp = AtomicFile.temporaryPath(for: lib)
        let args = toolchain.flags + ["-I", try runtimeDirectory(), "-I", dir, "\(dir)/model.c"] + runtime.objects
            + ToolchainInfo.linkFlags + ["-o", tmp]
        try buildVerified(tmp, into: lib, kind: .sharedLibrary, toolchain: toolchain, arguments: args)
        return (lib, false)
    }

    /// Runs the compiler to write `tmp`, checks that it wrote a complete ELF file, and
    /// renames it to `dest`. Another process building the same file at the same time
    /// writes its own temporary file, and either rename leaves a complete `dest`.
    static func buildVerified(_ tmp: String, into dest: String, kind: ELFFile.Kind, toolchain: ToolchainInfo,
                              arguments: [String]) throws {
        let r: ProcessResult
        do {
            r = try Shell.run(toolchain.cc, arguments)
        } catch {
            unlink(tmp)
            throw error
        }
        guard r.status == 0 else {
            unlink(tmp)
            throw ToolchainError(explain(r.stderr, cc: toolchain.cc, output: dest))
        }
        if let problem = ELFFile.problem(tmp, kind: kind) {
            unlink(tmp)
            throw ToolchainError("\(toolchain.cc) reported success but wrote an incomplete \(dest): \(problem)")
        }
        try AtomicFile.replace(dest, with: tmp)
    }

    /// The runtime compiled to objects (in parallel, one clang per file), cached by a hash of
    /// its sources, the compiler and the flags.
    static func runtimeObjects(toolchain: ToolchainInfo) throws -> (key: String, objects: [String]) {
        let rdir = try runtimeDirectory()
        let sources = try runtimeSources()
        var hasher = ContentHash()
        hasher.add(toolchain.cc); hasher.add(toolchain.version); hasher.add(toolchain.flags.joined(separator: " "))
        let headers = try AtomicFile.directoryListing(rdir).filter { $0.hasSuffix(".h") }.sorted()
        for f in headers.map({ "\(rdir)/\($0)" }) + sources {
            hasher.add((f as NSString).lastPathComponent)
            hasher.add(try AtomicFile.read(f))
        }
        let key = hasher.hex
        let odir = CacheDirectory.path + "/runtime-\(key)"
        let objects = sources.map { "\(odir)/\((($0 as NSString).lastPathComponent as NSString).deletingPathExtension).o" }
        if objects.allSatisfy({ ELFFile.problem($0, kind: .object) == nil }) { return (key, objects) }

        try AtomicFile.makeDirectory(odir)
        let failures = ErrorBox()
        DispatchQueue.concurrentPerform(iterations: sources.count) { i in
            guard ELFFile.problem(objects[i], kind: .object) != nil else { return }
            let tmp = AtomicFile.temporaryPath(for: objects[i])
            let args = toolchain.flags + ["-I", rdir, "-c", sources[i], "-o", tmp]
            do {
                try buildVerified(tmp, into: objects[i], kind: .object, toolchain: toolchain, arguments: args)
            } catch {
                failures.add("\(error)")
            }
        }
        if let first = failures.first { throw ToolchainError(first) }
        return (key, objects)
    }

    /// Turns the common build failures into advice: what to install, or that the disk is full.
    static func explain(_ stderr: String, cc: String, output: String) -> String {
        if outOfSpace(stderr) {
            return "cannot build \(output): no space left on device (the disk is full, or a file-size limit was hit). Free some space (the cache is \(CacheDirectory.path); SSDC_CACHE_DIR moves it) and compile again.\n\(stderr)"
        }
        if stderr.contains("omp.h") || stderr.contains("-lomp") || stderr.contains("libomp") || stderr.contains("fopenmp") {
            return "\(cc) cannot build with OpenMP. Install Debian's clang and OpenMP runtime (apt-get install clang libomp-dev) or point SSDC_CC at a compiler with OpenMP.\n\(stderr)"
        }
        return "C compilation failed (\(cc)):\n\(stderr)"
    }

    /// Whether a tool's error output says it ran out of disk space (or hit a file-size limit).
    public static func outOfSpace(_ stderr: String) -> Bool {
        ["No space left on device", "Disk quota exceeded", "File too large", "File size limit exceeded"]
            .contains { stderr.contains($0) }
    }
}

/// Collects messages from concurrent work.
final class ErrorBox: @unchecked Sendable {
    private let lock = NSLock()
    private var messages: [String] = []
    func add(_ m: String) { lock.lock(); messages.append(m); lock.unlock() }
    var first: String? { lock.lock(); defer { lock.unlock() }; return messages.first }
}
