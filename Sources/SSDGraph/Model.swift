#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// The three values every SSD model gives, as in the chapter's TinySSD.forward.
public struct SSDOutputs {
    /// (1, A, 4) anchor corners.
    public var anchors: Tensor
    /// (N, A, q+1) class scores.
    public var clsPreds: Tensor
    /// (N, 4A) box offsets.
    public var bboxPreds: Tensor

    public init(anchors: Tensor, clsPreds: Tensor, bboxPreds: Tensor) {
        self.anchors = anchors
        self.clsPreds = clsPreds
        self.bboxPreds = bboxPreds
    }
}

/// An SSD model written in the DSL: its forward function applied to an input of a given
/// size gives a typed graph.
///
/// A model file handed to `ssdc compile` creates one with `let model = Model(...)`.
/// Like a SwiftPM manifest, the model registers itself; when the program exits the
/// registered graphs (or their build errors) are written to the file named by the
/// environment variable `SSDC_GRAPH_OUT`, where ssdc picks them up.
public final class Model: @unchecked Sendable {
    public let name: String
    public let numClasses: Int
    public let inputChannels: Int
    /// The input (height, width) the model is written for; nil: any size ssdc asks for.
    public let inputSize: (height: Int, width: Int)?
    private let forward: (Tensor) -> SSDOutputs
    public let location: SourceLocation

    /// The training loss the model asks for (the CLI's loss options override it).
    public let loss: Loss

    public init(name: String, numClasses: Int, inputChannels: Int = 3, inputSize: (Int, Int)? = nil,
                loss: Loss = Loss(), file: StaticString = #filePath, line: UInt = #line,
                register: Bool = true,
                forward: @escaping (Tensor) -> SSDOutputs) {
        self.name = name
        self.numClasses = numClasses
        self.inputSize = inputSize.map { (height: $0.0, width: $0.1) }
        self.loss = loss
        self.inputChannels = inputChannels
        self.forward = forward
        self.location = SourceLocation(file, line)
        if register { ModelRegistry.register(self) }
    }

    /// The typed graph for inputs of `height` x `width`, or the first error found.
    public func graph(height: Int, width: Int) throws -> Graph {
        let b = GraphBuilder(name: name)
        b.setAttribute("num_classes", String(numClasses))
        b.setAttribute("input", "\(inputChannels)x\(height)x\(width)")
        if loss != Loss() { b.setAttribute("loss", loss.attribute) }
        let x = b.input("X", [inputChannels, height, width], location: location)
        let out = forward(x)
        b.output("anchors", out.anchors)
        b.output("cls_preds", out.clsPreds)
        b.output("bbox_preds", out.bboxPreds)
        let g = try b.finish()
        try Model.checkContract(g, numClasses: numClasses, location: location)
        return g
    }

    /// The outputs must have the shapes the training and detection code assume.
    static func checkContract(_ g: Graph, numClasses q: Int, location: SourceLocation) throws {
        guard let anchors = g.output("anchors"), let cls = g.output("cls_preds"), let bbox = g.output("bbox_preds") else {
            throw GraphError(location: location, node: g.name, message: "the model must give anchors, cls_preds and bbox_preds")
        }
        guard !anchors.type.batched, anchors.type.dims.count == 3, anchors.type.dims[0] == 1, anchors.type.dims[2] == 4 else {
            throw GraphError(location: anchors.location, node: "anchors", message: "anchors must have shape (1,A,4), got \(anchors.type)")
        }
        let a = anchors.type.dims[1]
        guard cls.type.batched, cls.type.dims == [a, q + 1] else {
            throw GraphError(location: cls.location, node: "cls_preds", message: "cls_preds must have shape (N,\(a),\(q + 1)) for \(a) anchors and \(q) classes, got \(cls.type)")
        }
        guard bbox.type.batched, bbox.type.dims == [4 * a] else {
            throw GraphError(location: bbox.location, node: "bbox_preds", message: "bbox_preds must have shape (N,\(4 * a)) for \(a) anchors, got \(bbox.type)")
        }
    }
}

/// The loss of SPEC sections 4 and 7 as a model file declares it, e.g.
/// `Model(name: "tinyssd", numClasses: 1, loss: Loss(smoothL1Sigma: 1, focalGamma: 2))`.
/// nil fields keep the chapter's choice (cross-entropy, L1, no mining, weights 1).
public struct Loss: Codable, Equatable, Sendable {
    public var smoothL1Sigma: Float?
    public var focalGamma: Float?
    public var focalAlpha: Float
    public var negativeMiningRatio: Float?
    public var clsWeight: Float
    public var bboxWeight: Float

    public init(smoothL1Sigma: Float? = nil, focalGamma: Float? = nil, focalAlpha: Float = 0.25,
                negativeMiningRatio: Float? = nil, clsWeight: Float = 1, bboxWeight: Float = 1) {
        self.smoothL1Sigma = smoothL1Sigma
        self.focalGamma = focalGamma
        self.focalAlpha = focalAlpha
        self.negativeMiningRatio = negativeMiningRatio
        self.clsWeight = clsWeight
        self.bboxWeight = bboxWeight
    }

    /// As stored in the graph's attributes (sorted JSON).
    public var attribute: String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return String(decoding: try! e.encode(self), as: UTF8.self)
    }

    public init(attribute: String) throws {
        self = try JSONDecoder().decode(Loss.self, from: Data(attribute.utf8))
    }
}

/// What a model program hands to ssdc: for each registered model, its graph at the
/// requested input size or the error that stopped it.
public struct ModelExport: Codable {
    public struct Entry: Codable {
        public var name: String
        public var graph: Graph?
        public var error: GraphError?
    }
    public var models: [Entry]
}


/// The class count ssdc asks a model file for (`SSDC_NUM_CLASSES`, set from the data set's
/// classes.txt), else `defaultCount`. A model written for any data set says
/// `let model = mySSD(numClasses: requestedNumClasses(default: 1))`.
public func requestedNumClasses(default defaultCount: Int) -> Int {
    guard let text = ProcessInfo.processInfo.environment["SSDC_NUM_CLASSES"], let q = Int(text), q >= 1 else { return defaultCount }
    return q
}

public enum ModelRegistry {
    nonisolated(unsafe) static var models: [Model] = []

    static func register(_ model: Model) {
        // Only a model program run by ssdc exports; a process that merely links models
        // (ssdc itself, tests) must not write anything at exit.
        if models.isEmpty, ProcessInfo.processInfo.environment["SSDC_GRAPH_OUT"] != nil {
            atexit { ModelRegistry.exportAtExit() }
        }
        models.append(model)
    }

    /// The input size a model gets when it declares none and ssdc asks for none: the
    /// chapter's 256x256.
    public static let defaultInputSize = (height: 256, width: 256)

    /// Input size requested by ssdc (`SSDC_INPUT_SIZE=HxW`), else `defaultInputSize`.
    static func requestedSize() -> (Int, Int) {
        let parts = (ProcessInfo.processInfo.environment["SSDC_INPUT_SIZE"] ?? "").split(separator: "x").compactMap { Int($0) }
        return parts.count == 2 ? (parts[0], parts[1]) : defaultInputSize
    }

    public static func export() -> ModelExport {
        let requested = requestedSize()
        return ModelExport(models: models.map { m in
            let (h, w) = m.inputSize ?? requested
            do { return .init(name: m.name, graph: try m.graph(height: h, width: w), error: nil) }
            catch let e as GraphError { return .init(name: m.name, graph: nil, error: e) }
            catch { return .init(name: m.name, graph: nil, error: GraphError(location: m.location, node: m.name, message: "\(error)")) }
        })
    }

    static func exportAtExit() {
        let export = export()
        guard let path = ProcessInfo.processInfo.environment["SSDC_GRAPH_OUT"] else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        do {
            try encoder.encode(export).write(to: URL(fileURLWithPath: path))
        } catch {
            // ssdc reads a missing file as "defines no model": say what went wrong instead.
            FileHandle.standardError.write(Data("error: cannot write the model's graph to \(path): \(error.localizedDescription)\n".utf8))
            _exit(1)  // (this runs in an atexit handler, where exit() must not be called)
        }
    }
}
