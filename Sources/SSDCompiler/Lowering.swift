import SSDGraph

/// Lowers a typed graph to a kernel program for one mode, fusing as the op kinds allow:
///
/// - constants: anchors depend only on shapes, and concat/reshape of constants are
///   constants, so they are evaluated here and emitted as static arrays;
/// - injective ops (reshape, permute) make views, not copies; a view is materialised only
///   where a consumer needs contiguous memory, and a concat reads its inputs' views
///   directly (one copy kernel for the inputs not written in place, see below);
/// - an elementwise op (ReLU) whose producer is out-elementwise-fusable (conv, batch norm)
///   and has no other consumer becomes that kernel's epilogue;
/// - a conv whose value reaches a concat only through a permute and reshapes (the SSD
///   prediction heads) writes straight into the concat's buffer in the permuted layout,
///   so its permute, flatten and concat cost no copy at all; two such convs of one input
///   with the same geometry (a scale's cls and bbox heads) are one conv kernel.
public struct Lowering {
    public let graph: Graph
    public let mode: Program.Mode
    public let layout: ParameterLayout

    var buffers: [Buffer] = []
    var kernels: [Kernel] = []
    /// How each node's value is stored: a view of a buffer.
    var views: [Int: View] = [:]
    /// Folded constant values, by node.
    public private(set) var constantValues: [Int: [Float]] = [:]
    /// Constant buffers, by node (made only when something reads them).
    fileprivate(set) var constantBuffers: [Int: Int] = [:]
    var consumers: [Int: [Int]] = [:]
    var outputNodes: Set<Int> = []
    var fusedAway: Set<Int> = []
    /// A train step updates BN running statistics in the forward pass.
    var updateRunningStats = false
    /// Batch mean/variance buffers of each training-mode BN node (read by its backward).
    var bnStatistics: [Int: (mean: Int, variance: Int)] = [:]
    /// ReLU nodes computed as the epilogue of their producer: relu -> producer.
    var epilogueOf: [Int: Int] = [:]
    /// Convs written in place into a concat: conv -> (concat, layout, the views between).
    var inPlace: [Int: (concat: Int, into: OutputLayout, chain: [Int])] = [:]
    /// Buffers of concats that some conv writes in place, made when the first one is lowered.
    var concatBuffers: [Int: Int] = [:]
    /// Inputs of concats whose values those convs write in place.
    var writtenInPlace: Set<Int> = []
    /// In-place convs computed together with another of the same input: first -> second.
    var pairedWith: [Int: Int] = [:]

    /// A value as some permutation of a contiguous buffer's elements.
    struct View {
        var buffer: Int
        /// Per-example dims of the buffer as the permutation sees them.
        var sourceDims: [Int]
        /// Per-example permutation; nil for the buffer itself (identity).
        var perm: [Int]?
        /// Injective nodes folded into this view (for kernel comments).
        var nodes: [Int]
    }

    public init(graph: Graph, mode: Program.Mode) {
        self.graph = graph
        self.mode = mode
        self.layout = ParameterLayout(graph: graph)
    }

    /// The program, the folded constants it reads (by node), and their buffers.
    public static func lower(_ graph: Graph, mode: Program.Mode, name: String) throws
        -> (program: Program, constants: [Int: [Float]], constantBuffers: [Int: Int])
    {
        var l = Lowering(graph: graph, mode: mode)
        let p = try l.run(name: name)
        return (p, l.constantValues, l.constantBuffers)
    }

    /// A name for a node's value in comments and C identifiers.
    func valueName(_ node: Int) -> String {
        graph[node].name.isEmpty ? "v\(node)_\(graph[node].op.mnemonic)" : graph[node].name
    }

    mutating func newBuffer(_ name: String, _ type: TensorType, region: Region) -> Int {
        let elementBytes = 4
        let b = Buffer(id: buffers.count, name: name, region: region,
                       bytes: type.elementCount * elementBytes, offset: 0, type: type)
        buffers.append(b)
        return b.id
    }

    mutating func addKernel(_ kind: FusionKind, _ nodes: [Int], _ body: KernelBody) {
        let index = kernels.count
        let ops = nodes.map { graph[$0].op.mnemonic }
        var parts: [String] = []
        for op in ops where !parts.contains(op) { parts.append(op) }
        let name = String(format: "k%02d_", index) + (body.trainingName ?? parts.joined(separator: "_"))
        kernels.append(Kernel(index: index, kind: kind, nodes: nodes, body: body, name: name))
    }

    mutating func run(name: String) throws -> Program {
        for n in graph.nodes { for i in n.inputs { consumers[i, default: []].append(n.id) } }
        outputNodes = Set(graph.outputs.map(\.node))
        planInPlaceConcats()
        var inputs: [(String, Int)] = []
        // Parameters live in the params region at their state_dict offsets; placing them
        // first lets a fused kernel read parameters of nodes after its first node (a BN
        // folded into the conv before it).
        for n in graph.nodes {
            guard case .parameter(let info) = n.op, let slot = layout.slot(forNode: n.id) else { continue }
            let b = Buffer(id: buffers.count, name: info.name, region: .params, bytes: slot.count * 4,
                           offset: slot.offset * 4, type: n.type)
            buffers.append(b)
            views[n.id] = View(buffer: b.id, sourceDims: n.type.dims, perm: nil, nodes: [])
        }

        for n in graph.nodes {
            if fusedAway.contains(n.id) { continue }
            switch n.op {
            case .input(let name):
                let b = newBuffer(name, n.type, region: .batched)
                views[n.id] = View(buffer: b, sourceDims: n.type.dims, perm: nil, nodes: [])
                inputs.append((name, b))

            case .parameter:
                continue  // placed before the walk

            case .anchors(let sizes, let ratios):
                let x = graph[n.inputs[0]].type
                constantValues[n.id] = MultiboxPrior.anchors(height: x.dims[1], width: x.dims[2], sizes: sizes, ratios: ratios)

            case .reshape:
                if let c = constantValues[n.inputs[0]] { constantValues[n.id] = c; continue }
                var v = try view(of: n.inputs[0])
                if v.perm == nil { v.sourceDims = n.type.dims }
                v.nodes.append(n.id)
                views[n.id] = v

            case .permute(let perm):
                var v = try view(of: n.inputs[0])
                if v.perm != nil { v = try materialize(n.inputs[0]) }
                let p = n.type.batched ? perm.dropFirst().map { $0 - 1 } : perm
                v.sourceDims = graph[n.inputs[0]].type.dims
                v.perm = p
                v.nodes.append(n.id)
                views[n.id] = v

            case .concat(let axis):
                if n.inputs.allSatisfy({ constantValues[$0] != nil }) {
                    constantValues[n.id] = foldConcat(n, axis: axis)
                    continue
                }
                let y = concatBuffers[n.id] ?? newBuffer(valueName(n.id), n.type, region: n.type.batched ? .batched : .fixed)
                let a = n.type.batched ? axis - 1 : axis
                let dstRow = n.type.dims[a...].reduce(1, *)
                var offset = 0
                var pieces: [CopyPiece] = []
                var nodes: [Int] = []
                for i in n.inputs {
                    let t = graph[i].type
                    let inner = t.dims[a...].reduce(1, *)
                    defer { offset += inner }
                    if writtenInPlace.contains(i) { continue }
                    let v = try sourceView(of: i)
                    nodes += v.nodes
                    pieces.append(CopyPiece(source: v.buffer, sourceDims: v.sourceDims,
                                            perm: v.perm ?? Array(0..<v.sourceDims.count),
                                            inner: inner, dstRow: dstRow, dstOffset: offset))
                }
                if !pieces.isEmpty {
                    addKernel(.injective, nodes + [n.id], .copy(y: y, pieces: pieces, yElements: n.type.elementCount))
                }
                views[n.id] = View(buffer: y, sourceDims: n.type.dims, perm: nil, nodes: [])

            case .conv2d(let stride, let padding):
                let x = try materialized(n.inputs[0])
                let w = try materialized(n.inputs[1])
                let bias = n.inputs.count > 2 ? try materialized(n.inputs[2]) : nil
                if let ip = inPlace[n.id] {
                    let y = concatBuffer(ip.concat)
                    let xt = graph[n.inputs[0]].type, wt = graph[n.inputs[1]].type
                    let nodes = [n.id] + ip.chain.reversed() + [ip.concat]
                    if let m = pairedWith[n.id], let iq = inPlace[m] {
                        let mw = try materialized(graph[m].inputs[1])
                        let mb = graph[m].inputs.count > 2 ? try materialized(graph[m].inputs[2]) : nil
                        let first = PairedConv(weight: w, bias: bias, y: y, o: wt.dims[0], into: ip.into)
                        let second = PairedConv(weight: mw, bias: mb, y: concatBuffer(iq.concat), o: graph[m].type.dims[0], into: iq.into)
                        addKernel(.outElementwiseFusable, nodes + [m] + iq.chain.reversed() + [iq.concat],
                                  .conv2dPair(x: x, first: first, second: second, c: xt.dims[0], h: xt.dims[1], w: xt.dims[2],
                                              k: wt.dims[2], stride: stride, pad: padding))
                        continue
                    }
                    addKernel(.outElementwiseFusable, nodes,
                              .conv2d(x: x, weight: w, bias: bias, y: y, c: xt.dims[0], h: xt.dims[1], w: xt.dims[2],
                                      o: wt.dims[0], k: wt.dims[2], stride: stride, pad: padding, relu: false, into: ip.into))
                    continue
                }
                if mode == .eval, let bn = foldableBatchNorm(after: n), case .batchNorm(let eps, _) = graph[bn].op {
                    fusedAway.insert(bn)
                    let (epilogue, last) = reluEpilogue(after: graph[bn])
                    let xt = graph[n.inputs[0]].type, wt = graph[n.inputs[1]].type
                    let stats = try graph[bn].inputs[1...4].map { try materialized($0) }
                    let fw = newBuffer(valueName(n.id) + ".folded_weight", TensorType(wt.dims, batched: false), region: .fixed)
                    let fb = newBuffer(valueName(n.id) + ".folded_bias", TensorType([wt.dims[0]], batched: false), region: .fixed)
                    // conv + BN + ReLU + 2x2 max pool in one kernel when the pool is the ReLU's only
                    // consumer: the full-size output is never written.
                    let pool = epilogue ? poolAfter(last) : nil
                    if let pool { fusedAway.insert(pool) }
                    let out = pool ?? last
                    let y = newBuffer(valueName(out), graph[out].type, region: .batched)
                    addKernel(.outElementwiseFusable, [n.id, bn] + (epilogue ? [last] : []) + (pool.map { [$0] } ?? []),
                              .conv2dFoldedBatchNorm(x: x, weight: w, bias: bias, gamma: stats[0], beta: stats[1],
                                                     runningMean: stats[2], runningVar: stats[3], eps: eps, foldedWeight: fw,
                                                     foldedBias: fb, y: y, c: xt.dims[0], h: xt.dims[1], w: xt.dims[2],
                                                     o: wt.dims[0], k: wt.dims[2], stride: stride, pad: padding, relu: epilogue,
                                                     pool: pool != nil))
                    views[out] = View(buffer: y, sourceDims: graph[out].type.dims, perm: nil, nodes: [])
                    continue
                }
                let (epilogue, last) = reluEpilogue(after: n)
                let y = newBuffer(valueName(last), n.type, region: .batched)
                let xt = graph[n.inputs[0]].type, wt = graph[n.inputs[1]].type
                addKernel(.outElementwiseFusable, [n.id] + (epilogue ? [last] : []),
                          .conv2d(x: x, weight: w, bias: bias, y: y, c: xt.dims[0], h: xt.dims[1], w: xt.dims[2],
                                  o: wt.dims[0], k: wt.dims[2], stride: stride, pad: padding, relu: epilogue, into: nil))
                views[last] = View(buffer: y, sourceDims: n.type.dims, perm: nil, nodes: [])

            case .batchNorm(let eps, let momentum):
                let ins = try n.inputs.map { try materialized($0) }
                let (epilogue, last) = reluEpilogue(after: n)
                let y = newBuffer(valueName(last), n.type, region: .batched)
                let c = n.type.dims[0], hw = n.type.dims[1] * n.type.dims[2]
                var nodes = [n.id] + (epilogue ? [last] : [])
                switch mode {
                case .train:
                    let stat = TensorType([c], batched: false)
                    let mean = newBuffer(valueName(n.id) + ".batch_mean", stat, region: .fixed)
                    let variance = newBuffer(valueName(n.id) + ".batch_var", stat, region: .fixed)
                    // BN + ReLU + max pool in one pass when the pool is the ReLU's only consumer.
                    var pooled: Int? = nil
                    if epilogue, let pool = poolAfter(last) {
                        fusedAway.insert(pool)
                        pooled = newBuffer(valueName(pool), graph[pool].type, region: .batched)
                        views[pool] = View(buffer: pooled!, sourceDims: graph[pool].type.dims, perm: nil, nodes: [])
                        nodes.append(pool)
                    }
                    // The full-size output is needed by a train step's backward, or by a consumer
                    // other than the fused pool.
                    let keepFull = pooled == nil || updateRunningStats
                    addKernel(.outElementwiseFusable, nodes, .batchNormTrain(BatchNormTrain(
                        x: ins[0], gamma: ins[1], beta: ins[2], mean: mean, variance: variance,
                        y: keepFull ? y : nil, pooled: pooled, c: c, h: n.type.dims[1], w: n.type.dims[2], eps: eps, relu: epilogue,
                        running: updateRunningStats ? RunningStats(mean: ins[3], variance: ins[4], counter: ins[5], momentum: momentum) : nil)))
                    bnStatistics[n.id] = (mean, variance)
                case .eval:
                    addKernel(.outElementwiseFusable, nodes,
                              .batchNormEval(x: ins[0], gamma: ins[1], beta: ins[2], runningMean: ins[3],
                                             runningVar: ins[4], y: y, c: c, hw: hw, eps: eps, relu: epilogue))
                }
                views[last] = View(buffer: y, sourceDims: n.type.dims, perm: nil, nodes: [])

            case .relu:
                let x = try materialized(n.inputs[0])
                let y = newBuffer(valueName(n.id), n.type, region: n.type.batched ? .batched : .fixed)
                addKernel(.elementwise, [n.id], .relu(x: x, y: y, count: n.type.elementCount))
                views[n.id] = View(buffer: y, sourceDims: n.type.dims, perm: nil, nodes: [])

            case .maxPool2d:
                let x = try materialized(n.inputs[0])
                let xt = graph[n.inputs[0]].type
                let y = newBuffer(valueName(n.id), n.type, region: .batched)
                addKernel(.outElementwiseFusable, [n.id], .maxPool2d(x: x, y: y, c: xt.dims[0], h: xt.dims[1], w: xt.dims[2]))
                views[n.id] = View(buffer: y, sourceDims: n.type.dims, perm: nil, nodes: [])

            case .globalMaxPool:
                let x = try materialized(n.inputs[0])
                let xt = graph[n.inputs[0]].type
                let y = newBuffer(valueName(n.id), n.type, region: .batched)
                addKernel(.reduction, [n.id], .globalMaxPool(x: x, y: y, c: xt.dims[0], hw: xt.dims[1] * xt.dims[2]))
                views[n.id] = View(buffer: y, sourceDims: n.type.dims, perm: nil, nodes: [])

            case .softmax:
                let x = try materialized(n.inputs[0])
                let y = newBuffer(valueName(n.id), n.type, region: n.type.batched ? .batched : .fixed)
                let cols = n.type.dims.last!
                addKernel(.opaque, [n.id], .softmax(x: x, y: y, rows: n.type.elementCount / cols, cols: cols))
                views[n.id] = View(buffer: y, sourceDims: n.type.dims, perm: nil, nodes: [])

            case .convolution(let attributes):
                let xt = graph[n.inputs[0]].type, wt = graph[n.inputs[1]].type
                let x = try materialized(n.inputs[0]), w = try materialized(n.inputs[1])
                let bias = n.inputs.count > 2 ? try materialized(n.inputs[2]) : nil
                let y = newBuffer(valueName(n.id), n.type, region: .batched)
                addKernel(.outElementwiseFusable, [n.id], .family(AnyKernelFamily(ConvolutionForward(
                    x: x, weight: w, bias: bias, y: y, geometry: ConvGeometry(input: xt, weight: wt, attributes: attributes),
                    epilogue: .none))))
                views[n.id] = View(buffer: y, sourceDims: n.type.dims, perm: nil, nodes: [])

            case .pool2d(let attributes):
                let xt = graph[n.inputs[0]].type
                try addUnary(n, .outElementwiseFusable) { x, y in
                    PoolForward(x: x, y: y, c: xt.dims[0], h: xt.dims[1], w: xt.dims[2], attributes: attributes)
                }

            case .globalAvgPool:
                let xt = graph[n.inputs[0]].type
                try addUnary(n, .reduction) { x, y in
                    GlobalAvgPool(x: x, y: y, c: xt.dims[0], hw: xt.dims[1] * xt.dims[2], backward: false)
                }

            case .activation(let a):
                try addUnary(n, .elementwise) { x, y in ActivationForward(x: x, y: y, count: n.type.elementCount, activation: a) }

            case .upsampleNearest(let sh, let sw):
                let xt = graph[n.inputs[0]].type
                try addUnary(n, .injective) { x, y in
                    UpsampleNearest(x: x, y: y, c: xt.dims[0], h: xt.dims[1], w: xt.dims[2], sh: sh, sw: sw, backward: false)
                }

            case .add:
                let a = try materialized(n.inputs[0]), b = try materialized(n.inputs[1])
                let y = newBuffer(valueName(n.id), n.type, region: n.type.batched ? .batched : .fixed)
                addKernel(.elementwise, [n.id], .family(AnyKernelFamily(Add(a: a, b: b, y: y, count: n.type.elementCount,
                                                                              batched: n.type.batched))))
                views[n.id] = View(buffer: y, sourceDims: n.type.dims, perm: nil, nodes: [])

            case .mulChannels:
                let x = try materialized(n.inputs[0]), s = try materialized(n.inputs[1])
                let y = newBuffer(valueName(n.id), n.type, region: .batched)
                addKernel(.broadcast, [n.id], .family(AnyKernelFamily(MulChannels(
                    x: x, s: s, y: y, c: n.type.dims[0], hw: n.type.dims[1] * n.type.dims[2],
                    perExample: graph[n.inputs[1]].type.batched))))
                views[n.id] = View(buffer: y, sourceDims: n.type.dims, perm: nil, nodes: [])

            case .l2Norm(let eps):
                let x = try materialized(n.inputs[0]), w = try materialized(n.inputs[1])
                let y = newBuffer(valueName(n.id), n.type, region: .batched)
                addKernel(.reduction, [n.id], .family(AnyKernelFamily(L2NormForward(
                    x: x, weight: w, y: y, c: n.type.dims[0], hw: n.type.dims[1] * n.type.dims[2], eps: eps))))
                views[n.id] = View(buffer: y, sourceDims: n.type.dims, perm: nil, nodes: [])

            case .multiboxDetection(let nms, let pos):
                let ins = try n.inputs.map { try materialized($0) }
                let y = newBuffer(valueName(n.id), n.type, region: .batched)
                let probs = graph[n.inputs[0]].type
                addKernel(.opaque, [n.id], .multiboxDetection(probs: ins[0], bboxPreds: ins[1], anchors: ins[2], y: y,
                                                              anchorsCount: probs.dims[0], classes: probs.dims[1],
                                                              nms: nms, pos: pos))
                views[n.id] = View(buffer: y, sourceDims: n.type.dims, perm: nil, nodes: [])
            }
        }

        var outputs: [(String, Int, TensorType)] = []
        for o in graph.outputs {
            outputs.append((o.name, try materialized(o.node), graph[o.node].type))
        }
        return Program(name: name, mode: mode, kernels: kernels, buffers: buffers, inputs: inputs, outputs: outputs)
    }

    /// A one-input kernel of a family: its input materialised, a new buffer for its value.
    mutating func addUnary<F: KernelFamily>(_ n: Node, _ kind: FusionKind, _ make: (Int, Int) -> F) throws {
        let x = try materialized(n.inputs[0])
        let y = newBuffer(valueName(n.id), n.type, region: n.type.batched ? .batched : .fixed)
        addKernel(kind, [n.id], .family(AnyKernelFamily(make(x, y))))
        views[n.id] = View(buffer: y, sourceDims: n.type.dims, perm: nil, nodes: [])
    }

    /// Finds the convs that can write into a concat in place: each input of a batched concat
    /// (along an axis with nothing but the batch before it) that is a chain of reshapes and at
    /// most one permute over a conv, where every value on the way has that one consumer and
    /// none is a graph output, and the permuted layout keeps the pixels of a channel at one
    /// stride (true of NCHW -> NHWC). The chain's nodes are then fused away.
    mutating func planInPlaceConcats() {
        for c in graph.nodes {
            guard case .concat(let axis) = c.op, c.type.batched, axis >= 1,
                  c.type.dims[..<(axis - 1)].reduce(1, *) == 1 else { continue }
            var offset = 0
            for i in c.inputs {
                defer { offset += graph[i].type.elementCount }
                guard consumers[i] == [c.id], !outputNodes.contains(i),
                      let (src, dims, perm, chain) = try? injectiveChain(from: i, isRoot: false),
                      case .conv2d = graph[src].op, dims == graph[src].type.dims, dims.count == 3,
                      !outputNodes.contains(src), inPlace[src] == nil else { continue }
                let path = [src] + chain.reversed()
                guard zip(path, path.dropFirst()).allSatisfy({ consumers[$0.0] == [$0.1] }),
                      chain.allSatisfy({ !outputNodes.contains($0) }) else { continue }
                // Strides of the source's (channel, row, column) in the permuted order.
                var stride = [0, 0, 0], s = 1
                for k in (0..<3).reversed() { stride[perm[k]] = s; s *= dims[perm[k]] }
                guard stride[1] == dims[2] * stride[2] else { continue }
                inPlace[src] = (c.id, OutputLayout(image: c.type.elementCount, offset: offset,
                                                   channel: stride[0], pixel: stride[2]), chain)
                fusedAway.formUnion(chain)
                writtenInPlace.insert(i)
            }
        }
        // Pairs: in-place convs of the same input with the same kernel size, stride and
        // padding run as one conv (the second is computed with the first).
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
            }
        }
    }

    /// The buffer of a concat that convs write in place, made on first use.
    mutating func concatBuffer(_ concat: Int) -> Int {
        if let b = concatBuffers[concat] { return b }
        let b = newBuffer(valueName(concat), graph[concat].type, region: .batched)
        concatBuffers[concat] = b
        return b
    }

    /// If `n`'s only consumer is an elementwise op that can run as its epilogue (and `n` is
    /// not itself an output), fuse it: returns (true, that consumer).
    mutating func reluEpilogue(after n: Node) -> (Bool, Int) {
        guard !outputNodes.contains(n.id), let cs = consumers[n.id], cs.count == 1 else { return (false, n.id) }
        let c = graph[cs[0]]
        guard c.op.fusionKind == .elementwise, case .relu = c.op, n.op.fusionKind == .outElementwiseFusable else {
            return (false, n.id)
        }
        fusedAway.insert(c.id)
        epilogueOf[c.id] = n.id
        return (true, c.id)
    }

    /// An eval-mode BN that is the only consumer of conv `n` (and `n` no output): it can be
    /// folded into the conv's weights.
    func foldableBatchNorm(after n: Node) -> Int? {
        guard !outputNodes.contains(n.id), let cs = consumers[n.id], cs.count == 1,
              case .batchNorm = graph[cs[0]].op, graph[cs[0]].inputs[0] == n.id else { return nil }
        return cs[0]
    }

    /// A 2x2 max pool that is the only consumer of `node` (and neither is an output).
    func poolAfter(_ node: Int) -> Int? {
        guard !outputNodes.contains(node), let cs = consumers[node], cs.count == 1, case .maxPool2d = graph[cs[0]].op,
              !outputNodes.contains(cs[0]) else { return nil }
        return cs[0]
    }

    func view(of node: Int) throws -> View {
        guard let v = views[node] else {
            throw GraphError(location: graph[node].location, node: graph[node].name,
                             message: "internal: value %\(node) (\(graph[node].op.mnemonic)) was not lowered")
        }
        return v
    }

    /// A view for reading by a copy; constants become constant buffers.
    mutating func sourceView(of node: Int) throws -> View {
        if constantValues[node] != nil {
            return View(buffer: constantBuffer(node), sourceDims: graph[node].type.dims, perm: nil, nodes: [])
        }
        return try view(of: node)
    }

    mutating func constantBuffer(_ node: Int) -> Int {
        if let b = constantBuffers[node] { return b }
        let b = newBuffer(valueName(node), graph[node].type, region: .constant)
        constantBuffers[node] = b
        return b
    }

    /// The buffer holding `node`'s value contiguously, copying a permuted view if needed.
    mutating func materialized(_ node: Int) throws -> Int {
        if constantValues[node] != nil { return constantBuffer(node) }
        let v = try view(of: node)
        if v.perm == nil { return v.buffer }
        return try materialize(node).buffer
    }

    mutating func materialize(_ node: Int) throws -> View {
        let v = try view(of: node)
        guard let perm = v.perm else { return v }
        let t = graph[node].type
        let y = newBuffer(valueName(node), t, region: t.batched ? .batched : .fixed)
        let piece = CopyPiece(source: v.buffer, sourceDims: v.sourceDims, perm: perm,
                              inner: t.elementCount, dstRow: t.elementCount, dstOffset: 0)
        addKernel(.injective, v.nodes, .copy(y: y, pieces: [piece], yElements: t.elementCount))
        let m = View(buffer: y, sourceDims: t.dims, perm: nil, nodes: [])
        views[node] = m
        return m
    }

    func foldConcat(_ n: Node, axis: Int) -> [Float] {
        let a = n.type.batched ? axis - 1 : axis
        let outer = n.type.dims[..<a].reduce(1, *)
        var out: [Float] = []
        out.reserveCapacity(n.type.elementCount)
        for o in 0..<outer {
            for i in n.inputs {
                let inner = graph[i].type.dims[a...].reduce(1, *)
                out += constantValues[i]![(o * inner)..<((o + 1) * inner)]
            }
        }
        return out
    }
}
