import SSDGraph

/// Pass 1: constant folding. Anchors depend only on the shape of their feature map, and a
/// reshape or concat of constants is a constant, so their values are computed here, once,
/// at compile time; lowering emits them as static arrays and no kernel computes them.
public struct ConstantFolding: Sendable {
    /// Folded values by node, row-major.
    public private(set) var values: [Int: [Float]] = [:]

    public init(_ graph: Graph) {
        for n in graph.nodes {
            switch n.op {
            case .anchors(let sizes, let ratios):
                let x = graph[n.inputs[0]].type
                values[n.id] = MultiboxPrior.anchors(height: x.dims[1], width: x.dims[2], sizes: sizes, ratios: ratios)
            case .reshape:
                if let c = values[n.inputs[0]] { values[n.id] = c }
            case .concat(let axis) where n.inputs.allSatisfy({ values[$0] != nil }):
                values[n.id] = fold(graph, n, axis: axis)
            default:
                break
            }
        }
    }

    func fold(_ graph: Graph, _ n: Node, axis: Int) -> [Float] {
        let a = n.type.batched ? axis - 1 : axis
        let outer = n.type.dims[..<a].reduce(1, *)
        var out: [Float] = []
        out.reserveCapacity(n.type.elementCount)
        for o in 0..<outer {
            for i in n.inputs {
                let inner = graph[i].type.dims[a...].reduce(1, *)
                out += values[i]![(o * inner)..<((o + 1) * inner)]
            }
        }
        return out
    }

    /// The printer (`ssdc compile --dump-after fold`): one line per folded node.
    public func dump(_ graph: Graph) -> String {
        var out = ["constants of \(graph.name): \(values.count) folded"]
        for id in values.keys.sorted() {
            let n = graph[id]
            out.append("  %\(id) \(n.op.mnemonic) : \(n.type) = constant (\(values[id]!.count) floats)  \(n.location)")
        }
        return out.joined(separator: "\n") + "\n"
    }
}
