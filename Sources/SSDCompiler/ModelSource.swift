#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import SSDABI
import SSDGraph

/// Gets the graph of a model file the way SwiftPM evaluates a Package.swift: compile the
/// file with swiftc against the SSDGraph library, run the program with SSDC_GRAPH_OUT set,
/// and read back the graphs its `Model(...)` values registered.
public enum ModelSource {
    public struct Error: Swift.Error, CustomStringConvertible {
        public var description: String
    }

    /// Directory holding libSSDGraph.so and its Swift module: `SSDC_LIB_DIR`, else the
    /// directory of the running ssdc executable (SwiftPM builds both there).
    static func libraryDirectory() throws -> (lib: String, modules: String) {
        let env = ProcessInfo.processInfo.environment
        var dirs: [String] = []
        if let d = env["SSDC_LIB_DIR"] { dirs.append(d) }
        let exe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        if let real = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            dirs.append(URL(fileURLWithPath: real).deletingLastPathComponent().path)
        }
        dirs.append(exe.deletingLastPathComponent().path)
        for d in dirs {
            for m in ["\(d)/Modules", d] where FileManager.default.fileExists(atPath: "\(m)/SSDGraph.swiftmodule")
                && FileManager.default.fileExists(atPath: "\(d)/libSSDGraph.so") {
                return (d, m)
            }
        }
        throw Error(description: "cannot find libSSDGraph.so and SSDGraph.swiftmodule next to ssdc (looked in \(dirs.joined(separator: ", "))). Build them with `swift build` (all products) or set SSDC_LIB_DIR.")
    }

    /// How long a model program may run when no limit is given: `SSDC_MODEL_TIMEOUT`
    /// (seconds), else 120 s. Building a graph takes well under a second; the limit is for
    /// a model file that loops forever.
    public static func defaultTimeout() throws -> Double {
        guard let text = ProcessInfo.processInfo.environment["SSDC_MODEL_TIMEOUT"] else { return 120 }
        guard let seconds = Double(text), seconds.isFinite, seconds > 0 else {
            throw Error(description: "SSDC_MODEL_TIMEOUT=\(text): expected a number of seconds greater than 0")
        }
        return seconds
    }

    /// Compiles and runs `path`, returning the graph of the model it defines (the first, or
    /// the one named `name`). `size` is the input size asked for (a model that declares its
    /// own keeps it; nil: the model's, else `ModelRegistry.defaultInputSize`), `numClasses`
    /// what `requestedNumClasses` returns in the model file (nil: its default). The program
    /// runs for at most `timeout` seconds (default: `defaultTimeout()`), in its own process group.
    public static func graph(fromFile path: String, name: String? = nil, size: (height: Int, width: Int)? = nil,
                             numClasses: Int? = nil, timeout: Double? = nil) throws -> Graph {
        let limit = try timeout ?? defaultTimeout()
        let file = URL(fileURLWithPath: path).standardizedFileURL.path
        guard FileManager.default.fileExists(atPath: file) else { throw Error(description: "\(path): no such model file") }
        let source = try AtomicFile.read(file)
        let (lib, modules) = try libraryDirectory()
        let swiftc = ProcessInfo.processInfo.environment["SSDC_SWIFTC"] ?? "swiftc"

        // The model program is cached by its source and the library it links.
        var h = ContentHash()
        h.add(source); h.add(file)
        for f in ["\(lib)/libSSDGraph.so", "\(modules)/SSDGraph.swiftmodule"] {
            let attrs = try? FileManager.default.attributesOfItem(atPath: f)
            h.add("\(attrs?[.modificationDate] ?? "")\(attrs?[.size] ?? "")")
        }
        let dir = CacheDirectory.path + "/models"
        try AtomicFile.makeDirectory(dir)
        let exe = "\(dir)/model-\(h.hex)"
        if ELFFile.problem(exe, kind: .executable) != nil {
            try buildProgram(file, shownAs: path, into: exe, swiftc: swiftc, lib: lib, modules: modules)
        }

        let out = NSTemporaryDirectory() + "ssdc-graph-\(ProcessInfo.processInfo.processIdentifier)-\(h.hex).json"
        defer { try? FileManager.default.removeItem(atPath: out) }
        var env = ProcessInfo.processInfo.environment
        env["SSDC_GRAPH_OUT"] = out
        env["SSDC_INPUT_SIZE"] = size.map { "\($0.height)x\($0.width)" }
        env["SSDC_NUM_CLASSES"] = numClasses.map(String.init)
        let r = try ProcessGroup.run(exe, [], environment: env, timeout: limit)
        if r.timedOut {
            let shown = limit == limit.rounded() ? String(Int(limit)) : String(limit)
            throw Error(description: "\(path): the model program did not finish within \(shown) s (an infinite loop?); raise --model-timeout (or SSDC_MODEL_TIMEOUT) if it needs longer")
        }
        guard r.status == 0 else {
            throw Error(description: "\(path): the model program failed (exit \(r.status)):\n" + r.stderr + r.stdout)
        }
        guard let data = FileManager.default.contents(atPath: out) else {
            throw Error(description: "\(path) defines no model: create one with `let model = Model(name: ..., numClasses: ...) { x in ... }`")
        }
        let export: ModelExport
        do {
            export = try JSONDecoder().decode(ModelExport.self, from: data)
        } catch {
            throw Error(description: "\(path): the graph the model program wrote to \(out) is unreadable: \(AtomicFile.describe(error)) (is the disk full?)")
        }
        guard let entry = name.map({ n in export.models.first { $0.name == n } }) ?? export.models.first else {
            throw Error(description: "\(path) defines no model\(name.map { " named \($0)" } ?? "")")
        }
        if let e = entry.error {
            // Name the file as the user gave it, with the line of the DSL call.
            throw Error(description: "\(path.hasSuffix(e.location.file) ? path : e.location.file):\(e.location.line): error: \(e.message)" + (e.node.isEmpty ? "" : " (in \(e.node))"))
        }
        guard let g = entry.graph else { throw Error(description: "\(path): model \(entry.name) gave no graph") }
        try g.verify()
        return g
    }

    /// Compiles the model file with swiftc into the cache entry `exe`, through a temporary
    /// file checked to be a complete executable, so concurrent compiles of one model and a
    /// full disk leave either no entry or a whole one.
    static func buildProgram(_ file: String, shownAs path: String, into exe: String, swiftc: String,
                             lib: String, modules: String) throws {
        let tmp = AtomicFile.temporaryPath(for: exe)
        let args = ["-module-name", "SSDCUserModel", "-I", modules, "-L", lib, "-lSSDGraph",
                    "-Xlinker", "-rpath", "-Xlinker", lib, file, "-o", tmp]
        let r: ProcessResult
        do {
            r = try Shell.run(swiftc, args)
        } catch {
            unlink(tmp)
            throw error
        }
        guard r.status == 0 else {
            unlink(tmp)
            if Toolchain.outOfSpace(r.stderr + r.stdout) {
                throw Error(description: "cannot build the model program \(exe) for \(path): no space left on device (the disk is full). Free some space (the cache is \(CacheDirectory.path)) and compile again.\n" + r.stderr + r.stdout)
            }
            throw Error(description: "\(path) does not compile:\n" + r.stderr + r.stdout)
        }
        if let problem = ELFFile.problem(tmp, kind: .executable) {
            unlink(tmp)
            throw Error(description: "\(swiftc) reported success but wrote an incomplete model program \(exe): \(problem)")
        }
        try AtomicFile.replace(exe, with: tmp)
    }
}
