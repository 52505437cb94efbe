import Foundation
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

    /// Compiles and runs `path`, returning the graph of the model it defines (the first, or
    /// the one named `name`) at the given input size.
    public static func graph(fromFile path: String, name: String? = nil, height: Int = 256, width: Int = 256) throws -> Graph {
        let file = URL(fileURLWithPath: path).standardizedFileURL.path
        guard FileManager.default.fileExists(atPath: file) else { throw Error(description: "\(path): no such model file") }
        let source = try Data(contentsOf: URL(fileURLWithPath: file))
        let (lib, modules) = try libraryDirectory()
        let swiftc = ProcessInfo.processInfo.environment["SSDC_SWIFTC"] ?? "swiftc"

        // The model program is cached by its source and the library it links.
        var h = ContentHash()
        h.add(source); h.add(file)
        for f in ["\(lib)/libSSDGraph.so", "\(modules)/SSDGraph.swiftmodule"] {
            let attrs = try? FileManager.default.attributesOfItem(atPath: f)
            h.add("\(attrs?[.modificationDate] ?? "")\(attrs?[.size] ?? "")")
        }
        let dir = Toolchain.cacheDirectory() + "/models"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let exe = "\(dir)/model-\(h.hex)"
        if !FileManager.default.fileExists(atPath: exe) {
            let tmp = exe + ".\(ProcessInfo.processInfo.processIdentifier).tmp"
            let args = ["-module-name", "SSDCUserModel", "-I", modules, "-L", lib, "-lSSDGraph",
                        "-Xlinker", "-rpath", "-Xlinker", lib, file, "-o", tmp]
            let r = try Shell.run(swiftc, args)
            guard r.status == 0 else {
                throw Error(description: "\(path) does not compile:\n" + r.stderr + r.stdout)
            }
            try FileManager.default.moveItem(atPath: tmp, toPath: exe)
        }

        let out = NSTemporaryDirectory() + "ssdc-graph-\(ProcessInfo.processInfo.processIdentifier)-\(h.hex).json"
        defer { try? FileManager.default.removeItem(atPath: out) }
        var env = ProcessInfo.processInfo.environment
        env["SSDC_GRAPH_OUT"] = out
        env["SSDC_INPUT_SIZE"] = "\(height)x\(width)"
        let r = try Shell.run(exe, [], environment: env)
        guard r.status == 0 else {
            throw Error(description: "\(path): the model program failed (exit \(r.status)):\n" + r.stderr + r.stdout)
        }
        guard let data = FileManager.default.contents(atPath: out) else {
            throw Error(description: "\(path) defines no model: create one with `let model = Model(name: ..., numClasses: ...) { x in ... }`")
        }
        let export = try JSONDecoder().decode(ModelExport.self, from: data)
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
}
