import Foundation
import SSDABI
import SSDGraph

/// A model lowered to planned programs, ready to emit: the forward program with batch
/// statistics (PyTorch's train mode) and the inference program (eval mode, with softmax
/// and detection).
public struct CompiledModel: Sendable {
    public static let version = "0.1.0"

    public var graph: Graph
    /// The graph the inference program was lowered from (graph + probs + detection).
    public var inferenceGraph: Graph
    public var layout: ParameterLayout
    public var programs: [Program]
    /// Folded constants by node, and the names they are emitted under.
    public var constants: [Int: [Float]]
    public var constantNames: [(name: String, node: Int)]
    /// The C compiler and flags the library is built with (recorded in the manifest).
    public var toolchain: ToolchainInfo

    /// The train step's settings, nil for an inference-only library.
    public var training: Lowering.TrainStepOptions?

    public init(graph: Graph, toolchain: ToolchainInfo, training: Lowering.TrainStepOptions? = Lowering.TrainStepOptions()) throws {
        try graph.verify()
        self.graph = graph
        self.toolchain = toolchain
        // SSD models get softmax + detection; any other graph is run as it is in eval mode.
        inferenceGraph = graph.output("cls_preds") != nil ? try CompiledModel.withDetection(graph) : graph
        layout = ParameterLayout(graph: graph)
        programs = []
        constants = [:]
        constantNames = []
        var seen: Set<String> = []
        let isSSD = graph.output("cls_preds") != nil
        self.training = isSSD ? training : nil
        for (name, mode, g) in [("forward_train", Program.Mode.train, graph), ("infer", .eval, inferenceGraph)] {
            let lowered = try Lowering.lower(g, mode: mode, name: name)
            programs.append(try MemoryPlan.plan(lowered.program))
            for (node, buffer) in lowered.constantBuffers.sorted(by: { $0.key < $1.key }) {
                let bname = lowered.program.buffers[buffer].name
                constants[node] = lowered.constants[node]
                if seen.insert(bname).inserted { constantNames.append((bname, node)) }
            }
        }
        if let options = self.training {
            programs.append(try MemoryPlan.plan(try Lowering.lowerTrainStep(graph, options: options)))
            programs.append(try MemoryPlan.plan(try Lowering.lowerEvalStep(graph, options: options)))
        }
    }

    /// Appends softmax over classes and d2l's multibox_detection (SPEC section 6) to the
    /// model's outputs: the inference graph's extra outputs `probs` and `detection`.
    public static func withDetection(_ graph: Graph) throws -> Graph {
        var g = graph
        guard let cls = g.outputs.first(where: { $0.name == "cls_preds" }),
              let bbox = g.outputs.first(where: { $0.name == "bbox_preds" }),
              let anchors = g.outputs.first(where: { $0.name == "anchors" }) else {
            throw GraphError(location: SourceLocation(file: graph.name, line: 0), node: graph.name,
                             message: "an SSD model must give anchors, cls_preds and bbox_preds")
        }
        let at = g[cls.node].location
        let probs = try g.append(.softmax(axis: 2), [cls.node], name: "probs", location: at)
        let det = try g.append(.multiboxDetection(nmsThreshold: 0.5, posThreshold: 0.009999999),
                               [probs, bbox.node, anchors.node], name: "detection", location: at)
        g.outputs += [Graph.Output(name: "probs", node: probs), Graph.Output(name: "detection", node: det)]
        return g
    }

    public func program(_ name: String) -> Program? { programs.first { $0.name == name } }

    // MARK: manifest

    /// The manifest (SSDABI's contract with the runtime) of this model's library.
    public var manifest: Manifest { manifest(withCompiler: true) }

    public func manifest(withCompiler: Bool) -> Manifest {
        func value(_ p: Program, _ name: String, _ id: Int, _ type: TensorType? = nil) -> Manifest.Value {
            let b = p.buffers[id]
            let t = type ?? b.type
            return Manifest.Value(name: name, region: b.region.rawValue, offset: b.offset,
                                  symbol: b.region == .constant ? CEmitter(self).cName(b.name) : nil,
                                  shape: t.batched ? [-1] + t.dims : t.dims, dtype: t.dtype.rawValue)
        }
        return Manifest(
            model: graph.name, attributes: graph.attributes,
            paramsFloats: layout.totalFloats, gradientsOffset: layout.gradientOffset, hyperOffset: layout.hyperOffset,
            regionFloats: layout.regionFloats, loss: training?.loss.summary,
            parameters: layout.slots.map {
                .init(name: $0.name, shape: $0.shape, dtype: $0.dtype, trainable: $0.trainable, offset: $0.offset, count: $0.count)
            },
            programs: programs.map { p in
                .init(name: p.name, mode: p.mode.rawValue,
                      fixedBytes: p.fixedBytes, batchedBytesPerExample: p.batchedBytesPerExample, takesLabels: p.takesLabels,
                      inputs: p.inputs.map { value(p, $0.name, $0.buffer) },
                      outputs: p.outputs.map { value(p, $0.name, $0.buffer, $0.type) },
                      kernels: p.kernels.map { .init(name: $0.name, kind: $0.kind.rawValue, nodes: $0.nodes) })
            },
            compiler: withCompiler ? .init(ssdc: CompiledModel.version, cc: toolchain.cc, ccVersion: toolchain.version, flags: toolchain.flags) : nil)
    }

    public func manifestJSON(withCompiler: Bool = true) -> String { manifest(withCompiler: withCompiler).json() }

    /// The fused kernel list: which graph nodes went into which kernel, its kind and buffers.
    public func kernelListing() -> String {
        var out: [String] = []
        for p in programs {
            out.append("program \(p.name) (\(p.name == "train_step" ? "train step" : p.mode.rawValue)): \(p.kernels.count) kernels, fixed \(p.fixedBytes) B, batched \(p.batchedBytesPerExample) B/example")
            let g = p.mode == .eval ? inferenceGraph : graph
            for k in p.kernels {
                out.append("  \(k.name) [\(k.kind.rawValue)]")
                for id in k.nodes {
                    out.append("      %\(id) \(g[id].op.mnemonic) \(g[id].name) \(g[id].location)")
                }
                let (r, w) = p.uses(k)
                let e = CEmitter(self)
                out.append("      reads  \(r.map { e.place(p, $0) }.joined(separator: ", "))")
                out.append("      writes \(w.map { e.place(p, $0) }.joined(separator: ", "))")
            }
        }
        return out.joined(separator: "\n") + "\n"
    }
}
