import SSDGraph

/// Pass 3: lowering. Turns the typed graph, with its folded constants (pass 1) and its
/// fusion plan (pass 2), into a kernel program for one mode: every value gets a place —
/// a view of a buffer (reshape, permute: no copy until a consumer needs contiguous memory;
/// a concat reads its inputs' views directly), a buffer of its own, or a constant — and every
/// group of the plan becomes one kernel, chosen by its ops and their geometry (which conv
/// route, which pooling kernel). Its printer is kernels.txt.
public struct Lowering {
    public let graph: Graph
    public let mode: Program.Mode
    public let layout: ParameterLayout

    /// Pass 1's result: folded constant values, by node.
    public let constantValues: [Int: [Float]]
    /// Pass 2's result.
    public let plan: FusionPlan

    var buffers: [Buffer] = []
    var kernels: [Kernel] = []
    /// How each node's value is stored: a view of a buffer.
    var views: [Int: View] = [:]
    /// Constant buffers, by node (made only when something reads them).
    fileprivate(set) var constantBuffers: [Int: Int] = [:]
    /// A train step updates BN running statistics in the forward pass.
    var updateRunningStats = false
    /// Batch mean/variance buffers of each training-mode BN node (read by its backward).
    var bnStatistics: [Int: (mean: Int, variance: Int)] = [:]
    /// Buffers of concats that some conv writes in place, made when the first one is lowered.
    var concatBuffers: [Int: Int] = [:]

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
        self.constantValues = ConstantFolding(graph).values
        self.plan = FusionPlan(graph, mode: mode)
    }

    var fusedAway: Set<Int> { plan.fusedAway }
    var epilogueOf: [Int: Int] { plan.epilogueOf }
    var pairedWith: [Int: Int] { plan.pairedWith }

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

    mutating func addKernel(_ kind: FusionKind, _ nodes: [Int], _ family: any KernelFamily) {
        let index = kernels.count
        let ops = nodes.map { graph[$0].op.mnemonic }
        var parts: [String] = []
        for op in ops where !parts.contains(op) { parts.append(op) }
        let name = String(format: "k%02d_", index) + (family.kernelName ?? parts.joined(separator: "_"))
        kernels.append(Kernel(index: index, kind: kind, nodes: nodes, body: KernelBody(family), name: name))
    }

    mutating func run(name: String) throws -> Program {
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

            case _ where constantValues[n.id] != nil:
                continue  // folded (pass 1)

            case .anchors:
                throw GraphError(location: n.location, node: n.name, message: "internal: anchors were not folded")

            case .reshape:
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
                    if plan.writtenInPlace.contains(i) { continue }
                    let v = try sourceView(of: i)
                    nodes += v.nodes
                    pieces.append(CopyPiece(source: v.buffer, sourceDims: v.sourceDims,
                                            perm: v.perm ?? Array(0..<v.sourceDims.count),
                                            inner: inner, dstRow: dstRow, dstOffset: offset))
                }
                if !pieces.isEmpty {
                    addKernel(.injective, nodes + [n.id], Copy(y: y, pieces: pieces, yElements: n.type.elementCount))
                }
                views[n.id] = View(buffer: y, sourceDims: n.type.dims, perm: nil, nodes: [])

            case .conv2d(let stride, let padding):
                let x = try materialized(n.inputs[0])
                let w = try materialized(n.inputs[1])
                let bias = n.inputs.count > 2 ? try materialized(n.inputs[2]) : nil
                if let ip = plan.inPlace[n.id] {
                    let y = concatBuffer(ip.concat)
                    let xt = graph[n.inputs[0]].type, wt = graph[n.inputs[1]].type
                    let nodes = [n.id] + ip.chain.reversed() + [ip.concat]
                    func geometry(_ o: Int) -> SquareConv {
                        SquareConv(c: xt.dims[0], h: xt.dims[1], w: xt.dims[2], o: o, k: wt.dims[2], stride: stride, pad: padding)
                    }
                    if let m = pairedWith[n.id], let iq = plan.inPlace[m] {
                        let mw = try materialized(graph[m].inputs[1])
                        let mb = graph[m].inputs.count > 2 ? try materialized(graph[m].inputs[2]) : nil
                        let first = PairedConv(weight: w, bias: bias, y: y, o: wt.dims[0], into: ip.into)
                        let second = PairedConv(weight: mw, bias: mb, y: concatBuffer(iq.concat), o: graph[m].type.dims[0], into: iq.into)
                        addKernel(.outElementwiseFusable, nodes + [m] + iq.chain.reversed() + [iq.concat],
                                  Conv2dPairForward(x: x, first: first, second: second, geometry: geometry(first.o + second.o)))
                        continue
                    }
                    addKernel(.outElementwiseFusable, nodes,
                              Conv2dForward(x: x, weight: w, bias: bias, y: y, geometry: geometry(wt.dims[0]), relu: false, into: ip.into))
                    continue
                }
                if let bn = plan.foldedBatchNorm[n.id], case .batchNorm(let eps, _) = graph[bn].op {
                    let (epilogue, last) = plan.epilogue(after: bn)
                    let xt = graph[n.inputs[0]].type, wt = graph[n.inputs[1]].type
                    let stats = try graph[bn].inputs[1...4].map { try materialized($0) }
                    let fw = newBuffer(valueName(n.id) + ".folded_weight", TensorType(wt.dims, batched: false), region: .fixed)
                    let fb = newBuffer(valueName(n.id) + ".folded_bias", TensorType([wt.dims[0]], batched: false), region: .fixed)
                    // conv + BN + ReLU + 2x2 max pool in one kernel when the pool is the ReLU's only
                    // consumer: the full-size output is never written.
                    let pool = plan.poolAfter[last]
                    let out = pool ?? last
                    let square = SquareConv(c: xt.dims[0], h: xt.dims[1], w: xt.dims[2], o: wt.dims[0],
                                            k: wt.dims[2], stride: stride, pad: padding)
                    let prepared = square.preparedFloats > 0
                        ? newBuffer(valueName(n.id) + ".winograd_weight", TensorType([square.preparedFloats], batched: false), region: .fixed)
                        : nil
                    let y = newBuffer(valueName(out), graph[out].type, region: .batched)
                    addKernel(.outElementwiseFusable, [n.id, bn] + (epilogue ? [last] : []) + (pool.map { [$0] } ?? []),
                              Conv2dFoldedBatchNorm(x: x, weight: w, bias: bias, gamma: stats[0], beta: stats[1],
                                                    runningMean: stats[2], runningVar: stats[3], eps: eps, foldedWeight: fw,
                                                    foldedBias: fb, prepared: prepared, y: y, geometry: square,
                                                    relu: epilogue, pool: pool != nil))
                    views[out] = View(buffer: y, sourceDims: graph[out].type.dims, perm: nil, nodes: [])
                    continue
                }
                let (epilogue, last) = plan.epilogue(after: n.id)
                let y = newBuffer(valueName(last), n.type, region: .batched)
                let xt = graph[n.inputs[0]].type, wt = graph[n.inputs[1]].type
                addKernel(.outElementwiseFusable, [n.id] + (epilogue ? [last] : []),
                          Conv2dForward(x: x, weight: w, bias: bias, y: y,
                                        geometry: SquareConv(c: xt.dims[0], h: xt.dims[1], w: xt.dims[2], o: wt.dims[0],
                                                             k: wt.dims[2], stride: stride, pad: padding),
                                        relu: epilogue, into: nil))
                views[last] = View(buffer: y, sourceDims: n.type.dims, perm: nil, nodes: [])

            case .batchNorm(let eps, let momentum):
                let ins = try n.inputs.map { try materialized($0) }
                let (epilogue, last) = plan.epilogue(after: n.id)
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
                    if let pool = plan.poolAfter[last] {
                        pooled = newBuffer(valueName(pool), graph[pool].type, region: .batched)
                        views[pool] = View(buffer: pooled!, sourceDims: graph[pool].type.dims, perm: nil, nodes: [])
                        nodes.append(pool)
                    }
                    // The full-size output is needed only by a consumer other than the fused pool:
                    // the train step's backward recomputes it from x (MaxPool2dBatchNormBackward).
                    let keepFull = pooled == nil
                    addKernel(.outElementwiseFusable, nodes, BatchNormTrain(
                        x: ins[0], gamma: ins[1], beta: ins[2], mean: mean, variance: variance,
                        y: keepFull ? y : nil, pooled: pooled, c: c, h: n.type.dims[1], w: n.type.dims[2], eps: eps, relu: epilogue,
                        running: updateRunningStats ? RunningStats(mean: ins[3], variance: ins[4], counter: ins[5], momentum: momentum) : nil))
                    bnStatistics[n.id] = (mean, variance)
                case .eval:
                    addKernel(.outElementwiseFusable, nodes,
                              BatchNormEval(x: ins[0], gamma: ins[1], beta: ins[2], runningMean: ins[3],
                                            runningVar: ins[4], y: y, c: c, hw: hw, eps: eps, relu: epilogue))
                }
                views[last] = View(buffer: y, sourceDims: n.type.dims, perm: nil, nodes: [])

            case .relu:
                let x = try materialized(n.inputs[0])
                let y = newBuffer(valueName(n.id), n.type, region: n.type.batched ? .batched : .fixed)
                addKernel(.elementwise, [n.id], Relu(x: x, y: y, count: n.type.elementCount))
                views[n.id] = View(buffer: y, sourceDims: n.type.dims, perm: nil, nodes: [])

            case .maxPool2d:
                let x = try materialized(n.inputs[0])
                let xt = graph[n.inputs[0]].type
                let y = newBuffer(valueName(n.id), n.type, region: .batched)
                addKernel(.outElementwiseFusable, [n.id], MaxPool2x2(x: x, y: y, c: xt.dims[0], h: xt.dims[1], w: xt.dims[2]))
                views[n.id] = View(buffer: y, sourceDims: n.type.dims, perm: nil, nodes: [])

            case .globalMaxPool:
                let x = try materialized(n.inputs[0])
                let xt = graph[n.inputs[0]].type
                let y = newBuffer(valueName(n.id), n.type, region: .batched)
                addKernel(.reduction, [n.id], GlobalMaxPool(x: x, y: y, c: xt.dims[0], hw: xt.dims[1] * xt.dims[2]))
                views[n.id] = View(buffer: y, sourceDims: n.type.dims, perm: nil, nodes: [])

            case .softmax:
                let x = try materialized(n.inputs[0])
                let y = newBuffer(valueName(n.id), n.type, region: n.type.batched ? .batched : .fixed)
                let cols = n.type.dims.last!
                addKernel(.opaque, [n.id], Softmax(x: x, y: y, rows: n.type.elementCount / cols, cols: cols))
                views[n.id] = View(buffer: y, sourceDims: n.type.dims, perm: nil, nodes: [])

            case .convolution(let attributes):
                let xt = graph[n.inputs[0]].type, wt = graph[n.inputs[1]].type
                let x = try materialized(n.inputs[0]), w = try materialized(n.inputs[1])
                let bias = n.inputs.count > 2 ? try materialized(n.inputs[2]) : nil
                let (epilogue, last) = plan.epilogue(after: n.id)
                let y = newBuffer(valueName(last), n.type, region: .batched)
                addKernel(.outElementwiseFusable, [n.id] + (epilogue ? [last] : []), ConvolutionForward(
                    x: x, weight: w, bias: bias, y: y, geometry: ConvGeometry(input: xt, weight: wt, attributes: attributes),
                    epilogue: Epilogue(graph[last].op)))
                views[last] = View(buffer: y, sourceDims: n.type.dims, perm: nil, nodes: [])

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
                let (epilogue, last) = plan.epilogue(after: n.id)
                let y = newBuffer(valueName(last), n.type, region: n.type.batched ? .batched : .fixed)
                addKernel(.elementwise, [n.id] + (epilogue ? [last] : []), Add(a: a, b: b, y: y, count: n.type.elementCount,
                                                                               batched: n.type.batched, epilogue: Epilogue(graph[last].op)))
                views[last] = View(buffer: y, sourceDims: n.type.dims, perm: nil, nodes: [])

            case .mulChannels:
                let x = try materialized(n.inputs[0]), s = try materialized(n.inputs[1])
                let y = newBuffer(valueName(n.id), n.type, region: .batched)
                addKernel(.broadcast, [n.id], MulChannels(
                    x: x, s: s, y: y, c: n.type.dims[0], hw: n.type.dims[1] * n.type.dims[2],
                    perExample: graph[n.inputs[1]].type.batched))
                views[n.id] = View(buffer: y, sourceDims: n.type.dims, perm: nil, nodes: [])

            case .l2Norm(let eps):
                let x = try materialized(n.inputs[0]), w = try materialized(n.inputs[1])
                let y = newBuffer(valueName(n.id), n.type, region: .batched)
                addKernel(.reduction, [n.id], L2NormForward(
                    x: x, weight: w, y: y, c: n.type.dims[0], hw: n.type.dims[1] * n.type.dims[2], eps: eps))
                views[n.id] = View(buffer: y, sourceDims: n.type.dims, perm: nil, nodes: [])

            case .standardize(let eps):
                let x = try materialized(n.inputs[0])
                let y = newBuffer(valueName(n.id), n.type, region: .batched)
                addKernel(.reduction, [n.id], Standardize(x: x, y: y, size: n.type.dims.reduce(1, *), eps: eps))
                views[n.id] = View(buffer: y, sourceDims: n.type.dims, perm: nil, nodes: [])

            case .multiboxDetection(let nms, let pos):
                let ins = try n.inputs.map { try materialized($0) }
                let y = newBuffer(valueName(n.id), n.type, region: .batched)
                let probs = graph[n.inputs[0]].type
                addKernel(.opaque, [n.id], MultiboxDetection(probs: ins[0], bboxPreds: ins[1], anchors: ins[2], y: y,
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
        addKernel(kind, [n.id], make(x, y))
        views[n.id] = View(buffer: y, sourceDims: n.type.dims, perm: nil, nodes: [])
    }

    /// The buffer of a concat that convs write in place, made on first use.
    mutating func concatBuffer(_ concat: Int) -> Int {
        if let b = concatBuffers[concat] { return b }
        let b = newBuffer(valueName(concat), graph[concat].type, region: .batched)
        concatBuffers[concat] = b
        return b
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
        addKernel(.injective, v.nodes, Copy(y: y, pieces: [piece], yElements: t.elementCount))
        let m = View(buffer: y, sourceDims: t.dims, perm: nil, nodes: [])
        views[node] = m
        return m
    }
}
