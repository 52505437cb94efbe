import Foundation
import SSDABI
import SSDGraph

/// The whole pipeline: graph -> planned programs -> C -> shared library, with the files a
/// reader keeps: each pass's printout (graph.txt, constants.txt, fusion.txt, kernels.txt,
/// model.c; see `Pass`), model.h, manifest.json and graph.dot.
public struct CompileResult: Sendable {
    public var model: CompiledModel
    /// The output directory's files.
    public var directory: String
    public var libraryPath: String
    public var cached: Bool
    public var seconds: Double
}

public enum Driver {
    /// Compiles `graph` into `directory` (created if needed) for the CPU `target`. The
    /// library is built in (or taken from) the cache and copied to `directory/libmodel.so`.
    public static func compile(_ graph: Graph, into directory: String,
                               training: Lowering.TrainStepOptions? = Lowering.TrainStepOptions(),
                               target: BuildTarget = .native) throws -> CompileResult {
        let start = Date()
        let toolchain = try Toolchain.info(target: target)
        let model = try CompiledModel(graph: graph, toolchain: toolchain, training: training)
        let emitter = CEmitter(model)
        try AtomicFile.makeDirectory(directory)
        let files: [(String, String)] = [
            ("graph.json", try graphJSON(graph)),
            ("model.h", emitter.header()),
            ("manifest.json", model.manifestJSON() + "\n"),
            ("graph.dot", model.dot()),
        ] + Pass.allCases.map { ($0.file, model.dump(after: $0)) }
        for (name, text) in files {
            try writeIfChanged(text, to: "\(directory)/\(name)")
        }
        let (lib, cached) = try Toolchain.buildLibrary(sourceDir: directory, toolchain: toolchain)
        // Copied whole or not at all (a process loading the old file keeps its copy).
        let dest = "\(directory)/libmodel.so"
        try AtomicFile.copy(lib, to: dest)
        return CompileResult(model: model, directory: directory, libraryPath: dest, cached: cached,
                             seconds: Date().timeIntervalSince(start))
    }

    static func graphJSON(_ g: Graph) throws -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return String(decoding: try e.encode(g), as: UTF8.self) + "\n"
    }

    /// Leaves an unchanged file alone (its time stamp too), so tools watching it do not
    /// rebuild; a changed one is replaced whole (see AtomicFile).
    static func writeIfChanged(_ text: String, to path: String) throws {
        let data = Data(text.utf8)
        if FileManager.default.contents(atPath: path) == data { return }
        try AtomicFile.write(data, to: path)
    }
}
