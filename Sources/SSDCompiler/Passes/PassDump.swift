import SSDGraph

/// The compiler's passes in order, each with a printer: `ssdc compile --dump-after PASS`
/// prints what that pass produced, and compile writes the same text into its output
/// folder (the file named here).
public enum Pass: String, CaseIterable, Sendable {
    /// The typed graph the model file built (graph.txt).
    case graph
    /// Pass 1, constant folding: the anchors and their concat (constants.txt).
    case fold
    /// Pass 2, the fusion plan: fused groups and the pattern that made each (fusion.txt).
    case fuse
    /// Pass 3 and the memory plan: kernels with their nodes and planned buffers, the train
    /// step's backward and update included (kernels.txt).
    case lower
    /// The emitted C (model.c).
    case emit

    public var file: String {
        switch self {
        case .graph: return "graph.txt"
        case .fold: return "constants.txt"
        case .fuse: return "fusion.txt"
        case .lower: return "kernels.txt"
        case .emit: return "model.c"
        }
    }
}

extension CompiledModel {
    /// The printer of `pass` for this model.
    public func dump(after pass: Pass) -> String {
        switch pass {
        case .graph:
            return graph.text
        case .fold:
            return ConstantFolding(inferenceGraph).dump(inferenceGraph)
        case .fuse:
            // The forward with batch statistics (also the train step's forward), then inference.
            return FusionPlan(graph, mode: .train).dump() + "\n" + FusionPlan(inferenceGraph, mode: .eval).dump()
        case .lower:
            return kernelListing()
        case .emit:
            return CEmitter(self).source()
        }
    }

    /// The inference program as a Graphviz graph (graph.dot): one box per value with its op,
    /// type and model-file line, edges along the data flow, and each fused kernel a
    /// cluster named after its C function. Parameters are listed inside their op's box.
    public func dot() -> String {
        let g = inferenceGraph
        guard let program = programs.first(where: { $0.name == "infer" }) else { return "digraph {}\n" }
        func isParameter(_ id: Int) -> Bool { if case .parameter = g[id].op { return true }; return false }
        func quote(_ s: String) -> String { "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" }
        func label(_ n: Node) -> String {
            var lines = ["%\(n.id) \(n.op.mnemonic)"]
            if !n.op.attributeText.isEmpty { lines.append(n.op.attributeText) }
            let params = n.inputs.filter(isParameter).map { g[$0] }
            for p in params { lines.append("\(p.name.split(separator: ".").last ?? "") \(p.type.dims.map(String.init).joined(separator: "x"))") }
            lines.append("\(n.type)")
            lines.append(n.location.description)
            return lines.joined(separator: "\\n")
        }
        var out = ["digraph \(quote(g.name)) {", "  rankdir=TB;", "  node [shape=box, fontname=\"Helvetica\", fontsize=10];",
                   "  edge [color=\"#555555\"];"]
        var placed: Set<Int> = []
        for k in program.kernels {
            let nodes = k.nodes.filter { !isParameter($0) && !placed.contains($0) && $0 < g.nodes.count }
            guard !nodes.isEmpty else { continue }
            out.append("  subgraph \(quote("cluster_" + k.name)) {")
            out.append("    label=\(quote("\(k.name) [\(k.kind.rawValue)]")); style=rounded; color=\"#3366aa\"; fontsize=10;")
            for id in nodes { out.append("    n\(id) [label=\(quote(label(g[id])))];"); placed.insert(id) }
            out.append("  }")
        }
        let constants = ConstantFolding(g).values
        for n in g.nodes where !isParameter(n.id) && !placed.contains(n.id) {
            let style = (n.op.mnemonic == "input" || constants[n.id] != nil) ? ", style=dashed" : ""
            out.append("  n\(n.id) [label=\(quote(label(n)))\(style)];")
        }
        for n in g.nodes where !isParameter(n.id) {
            for i in n.inputs where !isParameter(i) { out.append("  n\(i) -> n\(n.id);") }
        }
        for o in g.outputs {
            out.append("  out_\(o.name.map { $0.isLetter || $0.isNumber ? String($0) : "_" }.joined()) [label=\(quote(o.name)), shape=ellipse];")
            out.append("  n\(o.node) -> out_\(o.name.map { $0.isLetter || $0.isNumber ? String($0) : "_" }.joined());")
        }
        out.append("}")
        return out.joined(separator: "\n") + "\n"
    }
}
