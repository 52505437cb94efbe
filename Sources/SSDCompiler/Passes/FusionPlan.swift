import SSDGraph

/// Pass 2: the fusion plan. Which graph nodes are computed together in one kernel, decided
/// from the ops' fusion kinds and the graph's shape (single consumers, outputs) alone,
/// before any buffer exists. Lowering (pass 3) turns each group into one kernel, and
/// autodiff reads the same plan to fuse the backward the same way.
///
/// The patterns, in the order they are tried (`FusionPlan.patterns` prints them):
///
/// 1. write-in-place: a conv (out-elementwise-fusable) whose value reaches a batched concat
///    only through reshapes and at most one permute (injective), each with that one consumer,
///    writes straight into the concat's buffer in the permuted layout (the SSD heads);
/// 2. pair: two such convs of one input with the same kernel, stride and padding are one
///    conv with both weight sets (a scale's class and box heads);
/// 3. fold-batch-norm (inference only): an eval-mode BN that is a conv's only consumer is
///    folded into the conv's weights;
/// 4. epilogue: an elementwise ReLU that is the only consumer of an out-elementwise-fusable
///    kernel (conv, BN, folded conv) runs in that kernel's output loop; so does a ReLU or
///    ReLU6 after a general conv or after an add (elementwise into elementwise), whose
///    kernels take either activation;
/// 5. pool-after-epilogue: a 2x2 max pool that is the only consumer of such an epilogue is
///    computed by the same kernel (BN with batch statistics, or a folded conv).
public struct FusionPlan: Sendable {
    public struct Pattern: Sendable {
        public var name: String
        public var summary: String
    }

    public static let patterns: [Pattern] = [
        .init(name: "write-in-place", summary: "out-elementwise-fusable -> injective* -> concat: written in the concat's layout"),
        .init(name: "pair", summary: "two write-in-place convs of one input, same geometry: one conv"),
        .init(name: "fold-batch-norm", summary: "conv -> eval BN: BN folded into the weights (inference)"),
        .init(name: "epilogue", summary: "out-elementwise-fusable or add -> elementwise (ReLU, ReLU6): applied in the output loop"),
        .init(name: "pool-after-epilogue", summary: "... -> ReLU epilogue -> 2x2 max pool: pooled in the same pass"),
    ]

    /// A conv written into a concat: the concat, the layout, and the views between.
    public struct InPlaceWrite: Sendable {
        public var concat: Int
        public var into: OutputLayout
        public var chain: [Int]
    }

    /// One fused group, for the printer: the pattern and the nodes, root first.
    public struct Group: Sendable {
        public var pattern: String
        public var nodes: [Int]
    }

    public let mode: Program.Mode
    /// Nodes computed by another node's kernel (lowering skips them).
    public private(set) var fusedAway: Set<Int> = []
    /// ReLU nodes computed as the epilogue of their producer: relu -> producer.
    public private(set) var epilogueOf: [Int: Int] = [:]
    /// Eval-mode BNs folded into the conv before them: conv -> bn.
    public private(set) var foldedBatchNorm: [Int: Int] = [:]
    /// 2x2 max pools computed with the epilogue before them: relu -> pool.
    public private(set) var poolAfter: [Int: Int] = [:]
    public private(set) var inPlace: [Int: InPlaceWrite] = [:]
    /// Inputs of concats whose values a conv writes in place.
    public private(set) var writtenInPlace: Set<Int> = []
    /// In-place convs computed together with another of the same input: first -> second.
    public private(set) var pairedWith: [Int: Int] = [:]
    public private(set) var groups: [Group] = []

    let graph: Graph
    /// Each node's consumers, in graph order.
    public let consumers: [Int: [Int]]
    let outputs: Set<Int>

    public init(_ graph: Graph, mode: Program.Mode) {
        self.graph = graph
        self.mode = mode
        var consumers: [Int: [Int]] = [:]
        for n in graph.nodes { for i in n.inputs { consumers[i, default: []].append(n.id) } }
        self.consumers = consumers
        self.outputs = Set(graph.outputs.map(\.node))
        planInPlaceConcats()
        for n in graph.nodes where !fusedAway.contains(n.id) {
            switch n.op {
            case .conv2d where inPlace[n.id] == nil:
                if mode == .eval, let bn = foldableBatchNorm(after: n.id) {
                    fusedAway.insert(bn)
                    foldedBatchNorm[n.id] = bn
                    groups.append(Group(pattern: "fold-batch-norm", nodes: [n.id, bn]))
                    if let relu = planEpilogue(after: bn) { planPool(after: relu) }
                } else {
                    planEpilogue(after: n.id)
                }
            case .convolution, .add:
                planEpilogue(after: n.id, allowing: [.relu, .activation(.relu6)])
            case .batchNorm:
                // With batch statistics the pool fuses too; with running ones (a BN no conv
                // absorbed) only the ReLU.
                if let relu = planEpilogue(after: n.id), mode == .train { planPool(after: relu) }
            default:
                break
            }
        }
    }

    /// The node whose kernel writes `relu`'s value, and whether `n` took an epilogue: the
    /// lowering's view of pattern 4.
    public func epilogue(after n: Int) -> (fused: Bool, last: Int) {
        if let relu = epilogueOf.first(where: { $0.value == n })?.key { return (true, relu) }
        return (false, n)
    }

    func single(_ n: Int) -> Int? {
        guard !outputs.contains(n), let cs = consumers[n], cs.count == 1 else { return nil }
        return cs[0]
    }

    /// Pattern 4: fuses the activation consuming `n` (one of `allowing`: the ones `n`'s kernel
    /// can apply), if it can; returns it.
    @discardableResult
    mutating func planEpilogue(after n: Int, allowing: [Op] = [.relu]) -> Int? {
        guard let c = single(n), graph[c].op.fusionKind == .elementwise, allowing.contains(graph[c].op),
              [.outElementwiseFusable, .elementwise].contains(graph[n].op.fusionKind) else { return nil }
        fusedAway.insert(c)
        epilogueOf[c] = n
        groups.append(Group(pattern: "epilogue", nodes: [n, c]))
        return c
    }

    /// Pattern 5.
    mutating func planPool(after relu: Int) {
        guard let p = single(relu), case .maxPool2d = graph[p].op, !outputs.contains(p) else { return }
        fusedAway.insert(p)
        poolAfter[relu] = p
        groups.append(Group(pattern: "pool-after-epilogue", nodes: [relu, p]))
    }

    /// Pattern 3's condition: an eval-mode BN that is the only consumer of conv `n`.
    func foldableBatchNorm(after n: Int) -> Int? {
        guard let c = single(n), case .batchNorm = graph[c].op, graph[c].inputs[0] == n else { return nil }
        return c
    }

    /// Patterns 1 and 2. A permuted layout qualifies when it keeps the pixels of a channel
    /// at one stride (true of NCHW -> NHWC).
    mutating func planInPlaceConcats() {
        for c in graph.nodes {
            guard case .concat(let axis) = c.op, c.type.batched, axis >= 1,
                  c.type.dims[..<(axis - 1)].reduce(1, *) == 1 else { continue }
            var offset = 0
            for i in c.inputs {
                defer { offset += graph[i].type.elementCount }
                guard consumers[i] == [c.id], !outputs.contains(i) else { continue }
                let (src, dims, perm, chain) = graph.injectiveChain(from: i, isRoot: false)
                guard case .conv2d = graph[src].op, dims == graph[src].type.dims, dims.count == 3,
                      !outputs.contains(src), inPlace[src] == nil else { continue }
                let path = [src] + chain.reversed()
                guard zip(path, path.dropFirst()).allSatisfy({ consumers[$0.0] == [$0.1] }),
                      chain.allSatisfy({ !outputs.contains($0) }) else { continue }
                // Strides of the source's (channel, row, column) in the permuted order.
                var stride = [0, 0, 0], s = 1
                for k in (0..<3).reversed() { stride[perm[k]] = s; s *= dims[perm[k]] }
                guard stride[1] == dims[2] * stride[2] else { continue }
                inPlace[src] = InPlaceWrite(concat: c.id, into: OutputLayout(image: c.type.elementCount, offset: offset,
                                                                             channel: stride[0], pixel: stride[2]), chain: chain)
                fusedAway.formUnion(chain)
                writtenInPlace.insert(i)
                groups.append(Group(pattern: "write-in-place", nodes: path + [c.id]))
            }
        }
        let g = graph
        func kernelShape(_ n: Int) -> ArraySlice<Int> { g[g[n].inputs[1]].type.dims.dropFirst(2) }
        var byInput: [Int: [Int]] = [:]
        for src in inPlace.keys.sorted() { byInput[g[src].inputs[0], default: []].append(src) }
        for x in byInput.keys.sorted() {
            var open = byInput[x]!
            while let a = open.first {
                open.removeFirst()
                guard let j = open.firstIndex(where: { g[$0].op == g[a].op && kernelShape($0) == kernelShape(a) }) else { continue }
                let b = open.remove(at: j)
                pairedWith[a] = b
                fusedAway.insert(b)
                groups.append(Group(pattern: "pair", nodes: [a, b]))
            }
        }
    }

    /// The printer (`ssdc compile --dump-after fuse`, fusion.txt): the groups in the order
    /// they were formed, each with its pattern and nodes.
    public func dump() -> String {
        var out = ["fusion plan of \(graph.name) (\(mode == .train ? "batch statistics" : "running statistics")): \(groups.count) groups"]
        for g in groups {
            let nodes = g.nodes.map { "%\($0) \(graph[$0].op.mnemonic)" }.joined(separator: " + ")
            out.append("  \(g.pattern): \(nodes)  \(graph[g.nodes[0]].location)")
        }
        return out.joined(separator: "\n") + "\n"
    }
}

extension Graph {
    /// Walks back from `node` through reshapes and at most one permute to the value they
    /// view; returns it with the dims the permutation sees and the injective nodes passed.
    /// `isRoot`: `node` itself is the permute being differentiated (left out of the chain).
    public func injectiveChain(from node: Int, isRoot: Bool) -> (source: Int, dims: [Int], perm: [Int], chain: [Int]) {
        var chain: [Int] = []
        var cur = node
        while true {
            let c = self[cur]
            if case .reshape = c.op {
                chain.append(cur); cur = c.inputs[0]; continue
            }
            if case .permute(let p) = c.op {
                chain.append(cur)
                let perm = c.type.batched ? p.dropFirst().map { $0 - 1 } : p
                cur = c.inputs[0]
                // Reshapes below the permute are views of the same memory: the permute sees
                // the dims of the value under them.
                let dims = self[cur].type.dims
                while case .reshape = self[cur].op { chain.append(cur); cur = self[cur].inputs[0] }
                return (cur, dims, perm, isRoot ? chain.filter { $0 != node } : chain)
            }
            break
        }
        let dims = self[cur].type.dims
        return (cur, dims, Array(0..<dims.count), isRoot ? chain.filter { $0 != node } : chain)
    }
}
