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
        let x = graph.inputs.first?.node.type.dims ?? []
        return x.count == 3 ? (x[1], x[2]) : (0, 0)
    }

    /// Input channels (3 for RGB images).
    public var inputChannels: Int { graph.inputs.first?.node.type.dims.first ?? 0 }

    public var numClasses: Int { Int(graph.attributes["num_classes"] ?? "1") ?? 1 }
}

public enum ModelResolver {
    /// `--model` may be a directory written by `ssdc compile`, a model .swift file, or
    /// nothing (the built-in TinySSD). Files and the built-in model are compiled into the
    /// cache (and taken from it when unchanged). `size` asks for an input size (a model file
    /// that declares one keeps it; nil: the model's own, else the default); `numClasses`
    /// for a class count (the data set's; nil: the model's default).
    public static func resolve(_ spec: String?, size: (height: Int, width: Int)? = nil, numClasses: Int? = nil,
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
            graph = try ModelSource.graph(fromFile: spec, size: size, numClasses: numClasses)
        } else {
            let (h, w) = size ?? ModelRegistry.defaultInputSize
            graph = try BuiltinModels.tinySSD(numClasses: numClasses ?? 1).graph(height: h, width: w)
        }
        if lossFromModel { training.loss = try LossConfig(graph: graph) }
        var h = ContentHash()
        h.add(graph.text)
        h.add("loss \(training.loss.summary)")
        let dims = graph.inputs.first?.node.type.dims.map(String.init).joined(separator: "x") ?? ""
        let dir = Toolchain.cacheDirectory() + "/build/\(graph.name)-\(dims)-\(h.hex.prefix(12))"
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

