import Foundation
import SSDCompiler
import SSDGraph
import SSDModels

/// A model ready to run: its graph, the directory of its compiled files and the library.
public struct ResolvedModel {
    public var graph: Graph
    public var directory: String
    public var library: ModelLibrary
    public var compile: CompileResult?

    /// Input height and width the model was compiled for.
    public var inputSize: (height: Int, width: Int) {
        let x = graph.inputs.first?.node.type.dims ?? [3, 256, 256]
        return (x[1], x[2])
    }

    public var numClasses: Int { Int(graph.attributes["num_classes"] ?? "1") ?? 1 }
}

public enum ModelResolver {
    /// `--model` may be a directory written by `ssdc compile`, a model .swift file, or
    /// nothing (the built-in TinySSD). Files and the built-in model are compiled into the
    /// cache (and taken from it when unchanged).
    public static func resolve(_ spec: String?, height: Int = 256, width: Int = 256, numClasses: Int = 1,
                               training requested: Lowering.TrainStepOptions = .init(),
                               lossFromModel: Bool = false) throws -> ResolvedModel {
        var training = requested
        let fm = FileManager.default
        var isDir: ObjCBool = false
        if let spec, fm.fileExists(atPath: spec, isDirectory: &isDir), isDir.boolValue {
            let graphFile = "\(spec)/graph.json"
            guard let data = fm.contents(atPath: graphFile) else {
                throw RuntimeError("\(spec) is not a directory written by `ssdc compile` (no graph.json)")
            }
            let graph = try decodeGraph(data, file: graphFile)
            let lib = try ModelLibrary(path: "\(spec)/libmodel.so")
            return ResolvedModel(graph: graph, directory: spec, library: lib, compile: nil)
        }
        let graph: Graph
        if let spec {
            guard fm.fileExists(atPath: spec) else { throw RuntimeError("\(spec): no such model file or directory") }
            graph = try ModelSource.graph(fromFile: spec, height: height, width: width)
        } else {
            graph = try BuiltinModels.tinySSD(numClasses: numClasses).graph(height: height, width: width)
        }
        if lossFromModel { training.loss = try LossConfig(graph: graph) }
        var h = ContentHash()
        h.add(graph.text)
        h.add("loss \(training.loss.summary)")
        let dir = Toolchain.cacheDirectory() + "/build/\(graph.name)-\(height)x\(width)-\(h.hex.prefix(12))"
        let result = try Driver.compile(graph, into: dir, training: training)
        let lib = try ModelLibrary(path: result.libraryPath)
        return ResolvedModel(graph: graph, directory: dir, library: lib, compile: result)
    }

    /// The graph in a compiled directory's graph.json; a damaged file is named, with what
    /// is wrong, rather than left as a bare DecodingError.
    static func decodeGraph(_ data: Data, file: String) throws -> Graph {
        let graph: Graph
        do {
            graph = try JSONDecoder().decode(Graph.self, from: data)
        } catch {
            throw RuntimeError("\(file) is damaged: \(AtomicFile.describe(error)). Recompile the model with `ssdc compile`.")
        }
        do {
            try graph.verify()
        } catch {
            throw RuntimeError("\(file) is damaged: \(error). Recompile the model with `ssdc compile`.")
        }
        return graph
    }
}

