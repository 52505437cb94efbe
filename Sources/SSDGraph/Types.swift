/// Where in a model file a graph node was made: the DSL call's file name and line.
///
/// Only the file's last path component is kept, so dumps and emitted C do not depend on
/// the directory a model was compiled from (emitted C must be byte-identical across
/// machines).
public struct SourceLocation: Codable, Hashable, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int

    public init(file: String, line: Int) {
        self.file = file.split(separator: "/").last.map(String.init) ?? file
        self.line = line
    }

    public init(_ filePath: StaticString, _ line: UInt) {
        self.init(file: "\(filePath)", line: Int(line))
    }

    public var description: String { "\(file):\(line)" }
}

public enum DType: String, Codable, Hashable, Sendable {
    case f32
    case f64
    case i64
}

/// The static type of a value. A batched value's first dimension is the batch size N,
/// which is left open until run time (so one compiled library serves every batch size,
/// including the last partial batch of an epoch); `dims` are the dimensions after N.
public struct TensorType: Codable, Hashable, Sendable, CustomStringConvertible {
    public var dims: [Int]
    public var batched: Bool
    public var dtype: DType

    public init(_ dims: [Int], batched: Bool, dtype: DType = .f32) {
        self.dims = dims
        self.batched = batched
        self.dtype = dtype
    }

    /// Rank including the batch axis.
    public var rank: Int { dims.count + (batched ? 1 : 0) }

    /// Elements per example (batched) or in all (unbatched).
    public var elementCount: Int { dims.reduce(1, *) }

    /// The full shape with the batch axis given a concrete size.
    public func shape(batch n: Int) -> [Int] { batched ? [n] + dims : dims }

    /// Dimension `axis` of the full shape; nil for the open batch axis.
    public func dim(_ axis: Int) -> Int? {
        if batched { return axis == 0 ? nil : dims[axis - 1] }
        return dims[axis]
    }

    public var description: String {
        let ds = (batched ? ["N"] : []) + dims.map(String.init)
        return "\(dtype.rawValue)[\(ds.joined(separator: ","))]"
    }
}

/// A shape or channel error found while the graph is built, pointing at the DSL call.
public struct GraphError: Error, CustomStringConvertible, Equatable, Codable, Sendable {
    public var location: SourceLocation
    public var node: String
    public var message: String

    public init(location: SourceLocation, node: String, message: String) {
        self.location = location
        self.node = node
        self.message = message
    }

    public var description: String {
        "\(location): error: \(message)" + (node.isEmpty ? "" : " (in \(node))")
    }
}
