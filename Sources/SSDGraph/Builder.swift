/// Builds a typed graph from DSL calls. It keeps the module path (`blk_0`, `0`, `1`, ...)
/// that names parameters as PyTorch's state_dict does, and the first shape error.
///
/// Shape errors do not throw through the DSL (that would put `try` on every line of a
/// model): the first one is recorded with the file:line of the DSL call, every later op
/// on its result is skipped, and the model reports it when building finishes.
public final class GraphBuilder {
    public private(set) var graph: Graph
    public private(set) var errors: [GraphError] = []
    private var scope: [String] = []
    private var parameterNames: Set<String> = []

    public init(name: String) {
        graph = Graph(name: name)
    }

    /// The dotted module path, e.g. `blk_0.0`.
    public var path: String { scope.joined(separator: ".") }

    /// Runs `body` with `component` appended to the module path.
    public func scoped<T>(_ component: String, _ body: () -> T) -> T {
        scope.append(component)
        defer { scope.removeLast() }
        return body()
    }

    private func qualified(_ local: String) -> String {
        scope.isEmpty ? local : path + "." + local
    }

    public func fail(_ message: String, at location: SourceLocation, node: String? = nil) {
        errors.append(GraphError(location: location, node: node ?? path, message: message))
    }

    /// A batched input of per-example dims `dims`.
    public func input(_ name: String, _ dims: [Int], location: SourceLocation) -> Tensor {
        let id = try! graph.append(.input(name: name), [], name: name, location: location,
                                   type: TensorType(dims, batched: true))
        return Tensor(builder: self, id: id)
    }

    /// A parameter named by the current module path plus `local` (e.g. `weight`).
    public func parameter(_ local: String, _ dims: [Int], dtype: DType = .f32, initializer: Initializer,
                          trainable: Bool, location: SourceLocation) -> Tensor {
        let name = qualified(local)
        if parameterNames.contains(name) {
            fail("parameter \(name) is defined twice (is a layer applied twice?)", at: location, node: name)
            return Tensor(builder: self, id: nil)
        }
        parameterNames.insert(name)
        let info = ParameterInfo(name: name, initializer: initializer, trainable: trainable)
        let id = try! graph.append(.parameter(info), [], name: name, location: location,
                                   type: TensorType(dims, batched: false, dtype: dtype))
        return Tensor(builder: self, id: id)
    }

    /// Applies `op` to `inputs`, checking the op's shape rule.
    public func apply(_ op: Op, _ inputs: [Tensor], location: SourceLocation, name: String? = nil) -> Tensor {
        let ids = inputs.compactMap(\.id)
        guard ids.count == inputs.count else { return Tensor(builder: self, id: nil) }  // an earlier error
        do {
            let id = try graph.append(op, ids, name: name ?? path, location: location)
            return Tensor(builder: self, id: id)
        } catch let e as GraphError {
            errors.append(e)
            return Tensor(builder: self, id: nil)
        } catch {
            fatalError("Graph.append throws only GraphError")
        }
    }

    /// The model-file line of whichever of two values was made last (for operators).
    func laterLocation(_ a: Tensor, _ b: Tensor) -> SourceLocation {
        let last = [a.id, b.id].compactMap { $0 }.max()
        return last.map { graph.nodes[$0].location } ?? SourceLocation(file: graph.name, line: 0)
    }

    public func output(_ name: String, _ t: Tensor) {
        guard let id = t.id else { return }
        if graph.nodes[id].name.isEmpty { graph.nodes[id].name = name }
        graph.outputs.append(Graph.Output(name: name, node: id))
    }

    public func setAttribute(_ key: String, _ value: String) {
        graph.attributes[key] = value
    }

    /// The finished graph, or the errors found while building it.
    public func finish() throws -> Graph {
        if let first = errors.first { throw first }
        try graph.verify()
        return graph
    }
}

/// A value of the graph being built. Its type is static: shape and dtype are known here.
public struct Tensor {
    public let builder: GraphBuilder
    /// nil when an earlier error made this value impossible to build.
    public let id: Int?

    public init(builder: GraphBuilder, id: Int?) {
        self.builder = builder
        self.id = id
    }

    public var type: TensorType? { id.map { builder.graph.nodes[$0].type } }

    /// Channels of a feature map (N,C,H,W), 0 if unknown.
    public var channels: Int { type.map { $0.dims.first ?? 0 } ?? 0 }
}

// MARK: - Functional ops. Each takes the caller's file and line so errors and emitted C
// point at the model file.

public func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int = 1, padding: Int = 0,
                   file: StaticString = #filePath, line: UInt = #line) -> Tensor {
    x.builder.apply(.conv2d(stride: stride, padding: padding), [x, weight] + (bias.map { [$0] } ?? []),
                    location: SourceLocation(file, line))
}

public func relu(_ x: Tensor, file: StaticString = #filePath, line: UInt = #line) -> Tensor {
    x.builder.apply(.relu, [x], location: SourceLocation(file, line))
}

public func relu6(_ x: Tensor, file: StaticString = #filePath, line: UInt = #line) -> Tensor {
    x.builder.apply(.activation(.relu6), [x], location: SourceLocation(file, line))
}

public func sigmoid(_ x: Tensor, file: StaticString = #filePath, line: UInt = #line) -> Tensor {
    x.builder.apply(.activation(.sigmoid), [x], location: SourceLocation(file, line))
}

public func hardSwish(_ x: Tensor, file: StaticString = #filePath, line: UInt = #line) -> Tensor {
    x.builder.apply(.activation(.hardSwish), [x], location: SourceLocation(file, line))
}

public func hardSigmoid(_ x: Tensor, file: StaticString = #filePath, line: UInt = #line) -> Tensor {
    x.builder.apply(.activation(.hardSigmoid), [x], location: SourceLocation(file, line))
}

public func globalAvgPool(_ x: Tensor, file: StaticString = #filePath, line: UInt = #line) -> Tensor {
    x.builder.apply(.globalAvgPool, [x], location: SourceLocation(file, line))
}

/// Nearest-neighbour upsampling by integer factors (nn.Upsample(mode="nearest")).
public func upsampleNearest(_ x: Tensor, scale: Int, file: StaticString = #filePath, line: UInt = #line) -> Tensor {
    x.builder.apply(.upsampleNearest(scaleH: scale, scaleW: scale), [x], location: SourceLocation(file, line))
}

/// Elementwise sum of two values of the same type (a residual connection).
public func add(_ a: Tensor, _ b: Tensor, file: StaticString = #filePath, line: UInt = #line) -> Tensor {
    a.builder.apply(.add, [a, b], location: SourceLocation(file, line))
}

/// x (N,C,H,W) scaled per channel by s, a (N,C,1,1) value or a (C) parameter.
public func mulChannels(_ x: Tensor, _ s: Tensor, file: StaticString = #filePath, line: UInt = #line) -> Tensor {
    x.builder.apply(.mulChannels, [x, s], location: SourceLocation(file, line))
}

extension Tensor {
    /// `a + b`: a residual connection (same type). An operator cannot see its caller's
    /// line, so the node (and any error) takes the line of the later of its operands.
    public static func + (a: Tensor, b: Tensor) -> Tensor {
        a.builder.apply(.add, [a, b], location: a.builder.laterLocation(a, b))
    }

    /// `x * s`: x (N,C,H,W) scaled per channel by s, (N,C,1,1) or a (C) parameter; located
    /// like `+`.
    public static func * (x: Tensor, s: Tensor) -> Tensor {
        x.builder.apply(.mulChannels, [x, s], location: x.builder.laterLocation(x, s))
    }
}

public func maxPool2d(_ x: Tensor, file: StaticString = #filePath, line: UInt = #line) -> Tensor {
    x.builder.apply(.maxPool2d, [x], location: SourceLocation(file, line))
}

public func globalMaxPool(_ x: Tensor, file: StaticString = #filePath, line: UInt = #line) -> Tensor {
    x.builder.apply(.globalMaxPool, [x], location: SourceLocation(file, line))
}

public func softmax(_ x: Tensor, axis: Int, file: StaticString = #filePath, line: UInt = #line) -> Tensor {
    x.builder.apply(.softmax(axis: axis), [x], location: SourceLocation(file, line))
}

/// Concatenates along `axis` (of the full shape, batch axis 0). Like torch.cat.
public func concat(_ xs: [Tensor], axis: Int, file: StaticString = #filePath, line: UInt = #line) -> Tensor {
    guard let first = xs.first else { fatalError("concat of an empty list at \(SourceLocation(file, line))") }
    return first.builder.apply(.concat(axis: axis), xs, location: SourceLocation(file, line))
}

/// d2l's multibox_prior: the anchor boxes of a feature map, shape (1, H*W*boxesPerPixel, 4).
public func multiboxPrior(_ featureMap: Tensor, sizes: [Float], ratios: [Float],
                          file: StaticString = #filePath, line: UInt = #line) -> Tensor {
    featureMap.builder.apply(.anchors(sizes: sizes, ratios: ratios), [featureMap], location: SourceLocation(file, line))
}

/// d2l's multibox_detection: rows [class, conf, xmin, ymin, xmax, ymax] per anchor.
public func multiboxDetection(_ probs: Tensor, _ bboxPreds: Tensor, _ anchors: Tensor,
                              nmsThreshold: Float = 0.5, posThreshold: Float = 0.009999999,
                              file: StaticString = #filePath, line: UInt = #line) -> Tensor {
    probs.builder.apply(.multiboxDetection(nmsThreshold: nmsThreshold, posThreshold: posThreshold),
                        [probs, bboxPreds, anchors], location: SourceLocation(file, line))
}

extension Tensor {
    /// Permutes the full axes (the batch axis 0 stays first), like torch's permute.
    public func permuted(_ perm: Int..., file: StaticString = #filePath, line: UInt = #line) -> Tensor {
        builder.apply(.permute(perm), [self], location: SourceLocation(file, line))
    }

    /// Reshapes the dims after the batch axis (one may be -1), like
    /// `x.reshape(x.shape[0], ...)` in PyTorch.
    public func reshaped(perExample dims: Int..., file: StaticString = #filePath, line: UInt = #line) -> Tensor {
        builder.apply(.reshape(dims), [self], location: SourceLocation(file, line))
    }

    /// torch.flatten(x, start_dim=1) for a batched value.
    public func flattened(file: StaticString = #filePath, line: UInt = #line) -> Tensor {
        builder.apply(.reshape([-1]), [self], location: SourceLocation(file, line))
    }
}
