import Foundation
import SSDABI
import SSDGraph

/// A model ready to run: its graph, the directory of its compiled files and the library.
public struct ResolvedModel {
    public var graph: Graph
    public var directory: String
    public var library: ModelLibrary

    public init(graph: Graph, directory: String, library: ModelLibrary) {
        self.graph = graph
        self.directory = directory
        self.library = library
    }

    /// Loads a directory written by `ssdc compile`: its graph.json and libmodel.so. Needs
    /// no compiler; a model file is compiled first by SSDDriver's ModelResolver.
    public static func load(directory: String) throws -> ResolvedModel {
        let graphFile = "\(directory)/graph.json"
        guard let data = FileManager.default.contents(atPath: graphFile) else {
            throw RuntimeError("\(directory) is not a directory written by `ssdc compile` (no graph.json)")
        }
        let graph = try decodeGraph(data, file: graphFile)
        return ResolvedModel(graph: graph, directory: directory, library: try ModelLibrary(path: "\(directory)/libmodel.so"))
    }

    /// Input height and width the model was compiled for.
    public var inputSize: (height: Int, width: Int) {
        let x = graph.inputs.first?.node.type.dims ?? []
        return x.count == 3 ? (x[1], x[2]) : (0, 0)
    }

    /// Input channels (3 for RGB images).
    public var inputChannels: Int { graph.inputs.first?.node.type.dims.first ?? 0 }

    public var numClasses: Int { Int(graph.attributes["num_classes"] ?? "1") ?? 1 }

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
