/// One node of the typed graph: an op applied to earlier nodes' values. Every node makes
/// exactly one value, named by the node's id (`%id` in dumps).
public struct Node: Codable, Hashable, Sendable {
    public var id: Int
    public var op: Op
    public var inputs: [Int]
    public var type: TensorType
    /// The module path that made it (`blk_0.0.0` for a conv, `cls_preds` for a model value).
    public var name: String
    public var location: SourceLocation

    public init(id: Int, op: Op, inputs: [Int], type: TensorType, name: String, location: SourceLocation) {
        self.id = id
        self.op = op
        self.inputs = inputs
        self.type = type
        self.name = name
        self.location = location
    }
}

/// A typed graph in topological order (a node only uses values of nodes before it),
/// with named outputs. This is what a model file produces and what the compiler takes.
public struct Graph: Codable, Hashable, Sendable {
    public var name: String
    public var nodes: [Node]
    /// Named results, e.g. "anchors", "cls_preds", "bbox_preds".
    public var outputs: [Output]
    /// Model facts the compiler and runtime need (number of classes, input size).
    public var attributes: [String: String]

    public struct Output: Codable, Hashable, Sendable {
        public var name: String
        public var node: Int
        public init(name: String, node: Int) { self.name = name; self.node = node }
    }

    public init(name: String, nodes: [Node] = [], outputs: [Output] = [], attributes: [String: String] = [:]) {
        self.name = name
        self.nodes = nodes
        self.outputs = outputs
        self.attributes = attributes
    }

    public subscript(_ id: Int) -> Node { nodes[id] }

    public func output(_ name: String) -> Node? {
        outputs.first { $0.name == name }.map { nodes[$0.node] }
    }

    /// Parameters and state in graph order (the order of PyTorch's state_dict).
    public var parameters: [(node: Node, info: ParameterInfo)] {
        nodes.compactMap { n in
            if case .parameter(let p) = n.op { return (n, p) }
            return nil
        }
    }

    public var inputs: [(node: Node, name: String)] {
        nodes.compactMap { n in
            if case .input(let name) = n.op { return (n, name) }
            return nil
        }
    }

    /// Appends a node, checking its type with the op's shape rule. Used by the builder and
    /// by compiler passes that extend a graph (detection heads, training).
    @discardableResult
    public mutating func append(_ op: Op, _ inputs: [Int], name: String, location: SourceLocation,
                                type declared: TensorType? = nil) throws -> Int {
        let type: TensorType
        if let declared {
            type = declared
        } else {
            switch op.resultType(inputs.map { nodes[$0].type }) {
            case .success(let t): type = t
            case .failure(let e): throw GraphError(location: location, node: name, message: e.message)
            }
        }
        let id = nodes.count
        nodes.append(Node(id: id, op: op, inputs: inputs, type: type, name: name, location: location))
        return id
    }

    /// Checks the whole graph: topological order, ids, and every node's type against its
    /// op's shape rule (a graph read from a file is not trusted).
    public func verify() throws {
        for (i, n) in nodes.enumerated() {
            guard n.id == i else { throw GraphError(location: n.location, node: n.name, message: "node id \(n.id) at position \(i)") }
            for input in n.inputs where input < 0 || input >= i {
                throw GraphError(location: n.location, node: n.name, message: "node %\(i) uses %\(input), which is not an earlier node")
            }
            switch n.op {
            case .input, .parameter: continue
            default:
                switch n.op.resultType(n.inputs.map { nodes[$0].type }) {
                case .success(let t) where t == n.type: continue
                case .success(let t): throw GraphError(location: n.location, node: n.name, message: "node %\(i) is typed \(n.type) but its op gives \(t)")
                case .failure(let e): throw GraphError(location: n.location, node: n.name, message: e.message)
                }
            }
        }
        for o in outputs where o.node < 0 || o.node >= nodes.count {
            throw GraphError(location: SourceLocation(file: name, line: 0), node: o.name, message: "output \(o.name) names no node")
        }
    }

    /// A readable dump: one line per node, `%id = op(inputs) attrs : type  name  file:line`.
    public var text: String {
        var lines = ["graph \(name)"]
        for (k, v) in attributes.sorted(by: { $0.key < $1.key }) { lines.append("  attribute \(k) = \(v)") }
        for n in nodes {
            let args = n.inputs.map { "%\($0)" }.joined(separator: ", ")
            let attrs = n.op.attributeText.isEmpty ? "" : " {\(n.op.attributeText)}"
            lines.append("  %\(n.id) = \(n.op.mnemonic)(\(args))\(attrs) : \(n.type)  \(n.name)  \(n.location)")
        }
        for o in outputs { lines.append("  output \(o.name) = %\(o.node)") }
        return lines.joined(separator: "\n") + "\n"
    }
}
