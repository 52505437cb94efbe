import Foundation
import SSDABI
import SSDCompiler
import SSDGraph
import SSDModels
import SSDRuntime

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
            return try ResolvedModel.load(directory: spec)
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
        let dir = CacheDirectory.path + "/build/\(graph.name)-\(dims)-\(h.hex.prefix(12))"
        let result = try Driver.compile(graph, into: dir, training: training)
        return ResolvedModel(graph: graph, directory: dir, library: try ModelLibrary(path: result.libraryPath))
    }
}
