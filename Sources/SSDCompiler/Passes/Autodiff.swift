import SSDGraph

/// Reverse-mode differentiation of the typed graph into a train step.
///
/// The train step is one program: the training-mode forward (BN running statistics
/// updated), anchor labelling (multibox_target), the loss and its gradient with respect to
/// the predictions, the backward pass, and SGD. Backward walks the forward graph in
/// reverse; each differentiable op has its gradient rule in `gradientRule` (one table,
/// one case per op), which emits backward kernels reading the forward buffers it needs.
/// Those buffers stay alive because the memory planner sees the reads. Gradients of
/// parameters go to the params region at the parameters' offsets + gradientOffset.
///
/// The backward is emitted as kernels rather than as more graph nodes: its ops (conv
/// backward data/weight, BN backward) exist only at kernel level, and their fusion (BN
/// backward through the ReLU mask, the scatter of the heads' concat back into each head
/// in one pass) is decided here, from the same kinds as the forward fusion.
extension Lowering {
    /// What a train step is compiled with. The rows of ground truth per image (G of the
    /// labels Y, padding rows have class -1) are not among them: G is a run-time argument.
    public struct TrainStepOptions: Sendable {
        public var loss: LossConfig
        public init(loss: LossConfig = LossConfig()) {
            self.loss = loss
        }
    }

    public static func lowerTrainStep(_ graph: Graph, options: TrainStepOptions) throws -> Program {
        var l = Lowering(graph: graph, mode: .train)
        l.updateRunningStats = true
        var p = try l.run(name: "train_step")
        try l.appendTrainStep(&p, options: options, backward: true)
        return p
    }

    /// Evaluation-mode forward, labelling and loss, without backward or update: the
    /// validation metrics of the same loss the train step minimises.
    public static func lowerEvalStep(_ graph: Graph, options: TrainStepOptions) throws -> Program {
        var l = Lowering(graph: graph, mode: .eval)
        var p = try l.run(name: "eval_step")
        try l.appendTrainStep(&p, options: options, backward: false)
        return p
    }

    /// The gradient bookkeeping of one backward pass.
    struct Backward {
        /// node -> buffer holding d loss / d value.
        var grads: [Int: Int] = [:]
        /// Nodes whose gradient was produced by a fused rule of a consumer (heads' chains).
        var handled: Set<Int> = []
        /// BN nodes whose ReLU epilogue's mask is applied inside BN backward (recomputed from x).
        var reluMask: Set<Int> = []
        /// Buffers that are the gradient of more than one value (both inputs of an add get
        /// its output's gradient): never accumulated into in place.
        var shared: Set<Int> = []
    }

    mutating func appendTrainStep(_ p: inout Program, options: TrainStepOptions, backward: Bool) throws {
        guard let cls = graph.output("cls_preds"), let bbox = graph.output("bbox_preds"), let anchorsNode = graph.output("anchors") else {
            throw GraphError(location: SourceLocation(file: graph.name, line: 0), node: graph.name,
                             message: "training needs an SSD model (anchors, cls_preds, bbox_preds)")
        }
        let a = cls.type.dims[0], q1 = cls.type.dims[1]
        let at = cls.location

        // Labels and the anchor targets (SPEC section 3).
        let labels = buffers.count
        buffers.append(Buffer(id: labels, name: "Y", region: .labels, bytes: 0, offset: 0,
                              type: TensorType([-1, 5], batched: true)))
        let anchors = try materialized(anchorsNode.id)
        let bboxLabels = newBuffer("target.bbox_labels", TensorType([4 * a], batched: true), region: .batched)
        let bboxMasks = newBuffer("target.bbox_masks", TensorType([4 * a], batched: true), region: .batched)
        let clsLabels = newBuffer("target.cls_labels", TensorType([a], batched: true), region: .batched)
        addKernel(.opaque, [anchorsNode.id], MultiboxTarget(anchors: anchors, labels: labels, bboxLabels: bboxLabels,
                                                            bboxMasks: bboxMasks, clsLabels: clsLabels, anchorsCount: a))

        // Loss, metrics and the gradient of the batch-mean loss (SPEC section 4).
        let perExample = newBuffer("loss.per_example", TensorType([1], batched: true), region: .batched)
        let metrics = newBuffer("metrics", TensorType([4], batched: false, dtype: .f64), region: .fixed)
        buffers[metrics].bytes = 4 * 8
        let dCls = newBuffer("grad.cls_preds", cls.type, region: .batched)
        let dBbox = newBuffer("grad.bbox_preds", bbox.type, region: .batched)
        addKernel(.opaque, [cls.id, bbox.id], MultiboxLoss(
            clsPreds: try materialized(cls.id), bboxPreds: try materialized(bbox.id), clsLabels: clsLabels,
            bboxLabels: bboxLabels, bboxMasks: bboxMasks, perExample: perExample, dClsPreds: dCls, dBboxPreds: dBbox,
            metrics: metrics, anchorsCount: a, classes: q1, config: options.loss))
        _ = at

        if !backward {
            finishTrainStep(&p, labels: labels, bboxLabels: bboxLabels, bboxMasks: bboxMasks, clsLabels: clsLabels,
                            perExample: perExample, metrics: metrics)
            return
        }

        // Backward, in reverse graph order.
        var bw = Backward()
        bw.grads[cls.id] = dCls
        bw.grads[bbox.id] = dBbox
        for n in graph.nodes.reversed() where !bw.handled.contains(n.id) {
            guard let dy = bw.grads[n.id] else { continue }
            try gradientRule(n, dy: dy, &bw)
        }

        // SGD on every trainable parameter.
        var slots: [Int] = [], counts: [Int] = []
        for s in layout.slots where s.trainable {
            guard let b = parameterBuffer(s.node) else { continue }
            slots.append(b)
            counts.append(s.count)
        }
        addKernel(.opaque, layout.slots.filter(\.trainable).map(\.node), SGD(slots: slots, counts: counts))
        finishTrainStep(&p, labels: labels, bboxLabels: bboxLabels, bboxMasks: bboxMasks, clsLabels: clsLabels,
                        perExample: perExample, metrics: metrics)
    }

    mutating func finishTrainStep(_ p: inout Program, labels: Int, bboxLabels: Int, bboxMasks: Int, clsLabels: Int,
                                  perExample: Int, metrics: Int) {
        p.kernels = kernels
        p.buffers = buffers
        p.inputs.append((name: "Y", buffer: labels))
        p.outputs += [
            ("target.bbox_labels", bboxLabels, buffers[bboxLabels].type),
            ("target.bbox_masks", bboxMasks, buffers[bboxMasks].type),
            ("target.cls_labels", clsLabels, buffers[clsLabels].type),
            ("loss.per_example", perExample, buffers[perExample].type),
            ("metrics", metrics, buffers[metrics].type),
        ]
    }

    /// The buffer of a parameter node (its value in the params region).
    func parameterBuffer(_ node: Int) -> Int? {
        guard case .parameter = graph[node].op, let v = views[node] else { return nil }
        return v.buffer
    }

    /// A buffer in the params region for a parameter's gradient.
    mutating func gradientBuffer(ofParameter node: Int) -> Int {
        let slot = layout.slot(forNode: node)!
        let id = buffers.count
        buffers.append(Buffer(id: id, name: "grad." + slot.name, region: .params, bytes: slot.count * 4,
                              offset: (layout.gradientOffset + slot.offset) * 4, type: graph[node].type))
        return id
    }

    /// Records `buffer` as (a contribution to) the gradient of `node`: the first one is
    /// taken as it is, later ones are added into it.
    mutating func contribute(_ node: Int, _ buffer: Int, _ bw: inout Backward, from: Int) {
        guard graph[node].op.isDifferentiable, !isInput(node) else { return }
        if let existing = bw.grads[node], bw.shared.contains(existing) {
            let t = graph[node].type
            let sum = newBuffer("grad." + valueName(node), t, region: t.batched ? .batched : .fixed)
            addKernel(.elementwise, [from], Add(a: existing, b: buffer, y: sum, count: t.elementCount,
                                                                        batched: t.batched, gradient: true))
            bw.grads[node] = sum
        } else if let existing = bw.grads[node] {
            addKernel(.elementwise, [from], Accumulate(into: existing, from: buffer, count: graph[node].type.elementCount))
        } else {
            bw.grads[node] = buffer
        }
    }

    func isTrainableParameter(_ node: Int) -> Bool {
        if case .parameter(let p) = graph[node].op { return p.trainable }
        return false
    }

    func isInput(_ node: Int) -> Bool {
        if case .input = graph[node].op { return true }
        return false
    }

    /// Whether a value needs a gradient: it depends on a trainable parameter.
    func needsGradient(_ node: Int) -> Bool {
        switch graph[node].op {
        case .input, .anchors: return false
        case .parameter(let p): return p.trainable
        default: return graph[node].inputs.contains { needsGradient($0) }
        }
    }

    /// The gradient rules, one per differentiable op.
    mutating func gradientRule(_ n: Node, dy: Int, _ bw: inout Backward) throws {
        switch n.op {
        case .input, .parameter, .anchors, .multiboxDetection, .softmax:
            return

        case .reshape:
            // A view: the gradient is the same memory.
            contribute(n.inputs[0], dy, &bw, from: n.id)

        case .relu:
            let input = n.inputs[0]
            if let producer = epilogueOf[n.id], case .batchNorm = graph[producer].op {
                // Fused into BN backward as its mask (recomputed there from BN's input).
                bw.reluMask.insert(producer)
                contribute(producer, dy, &bw, from: n.id)
            } else {
                let y = try materialized(n.id)
                let dx = newBuffer("grad." + valueName(input), graph[input].type, region: .batched)
                addKernel(.elementwise, [n.id], Relu(x: y, y: dx, count: n.type.elementCount, dy: dy))
                contribute(input, dx, &bw, from: n.id)
            }

        case .conv2d(let stride, let pad):
            let x = n.inputs[0]
            let xt = graph[x].type, wt = graph[n.inputs[1]].type
            let dx = needsGradient(x) ? newBuffer("grad." + valueName(x), xt, region: .batched) : nil
            func gradients(_ c: Node, dy: Int) throws -> PairedGradient {
                PairedGradient(weight: try materialized(c.inputs[1]), dy: dy, dWeight: gradientBuffer(ofParameter: c.inputs[1]),
                               dBias: c.inputs.count > 2 ? gradientBuffer(ofParameter: c.inputs[2]) : nil, o: c.type.dims[0])
            }
            let mine = try gradients(n, dy: dy)
            func geometry(_ o: Int) -> SquareConv {
                SquareConv(c: xt.dims[0], h: xt.dims[1], w: xt.dims[2], o: o, k: wt.dims[2], stride: stride, pad: pad)
            }
            if let first = pairedWith.first(where: { $0.value == n.id })?.key, let dyFirst = bw.grads[first] {
                // The second conv of a forward pair (reverse order meets it first): both convs'
                // backward in one kernel, with one backward-data into their shared input.
                let firstGradients = try gradients(graph[first], dy: dyFirst)
                addKernel(.outElementwiseFusable, [first, n.id], Conv2dPairBackward(
                    x: try materialized(x), first: firstGradients, second: mine, dx: dx, geometry: geometry(firstGradients.o + mine.o)))
                bw.handled.insert(first)
            } else {
                addKernel(.outElementwiseFusable, [n.id], Conv2dBackward(
                    x: try materialized(x), weight: mine.weight, dy: dy, dx: dx, dWeight: mine.dWeight, dBias: mine.dBias,
                    geometry: geometry(wt.dims[0])))
            }
            if let dx { contribute(x, dx, &bw, from: n.id) }

        case .batchNorm(let eps, _):
            guard let stats = bnStatistics[n.id] else {
                throw GraphError(location: n.location, node: n.name, message: "internal: BN without batch statistics in a train step")
            }
            let x = n.inputs[0]
            let dx = newBuffer("grad." + valueName(x), graph[x].type, region: .batched)
            addKernel(.outElementwiseFusable, [n.id] + (bw.reluMask.contains(n.id) ? epilogueOf.filter { $0.value == n.id }.map(\.key) : []),
                      BatchNormBackward(x: try materialized(x), mean: stats.mean, variance: stats.variance,
                                        gamma: try materialized(n.inputs[1]),
                                        reluBeta: bw.reluMask.contains(n.id) ? try materialized(n.inputs[2]) : nil, dy: dy, dx: dx,
                                        dGamma: gradientBuffer(ofParameter: n.inputs[1]), dBeta: gradientBuffer(ofParameter: n.inputs[2]),
                                        c: n.type.dims[0], hw: n.type.dims[1] * n.type.dims[2], eps: eps))
            if needsGradient(x) { contribute(x, dx, &bw, from: n.id) }

        case .maxPool2d where fusedPoolBackward(n) != nil:
            // Max pool over a ReLU fused into a training-mode BN: one backward kernel for all three.
            let (relu, bn) = fusedPoolBackward(n)!
            guard let stats = bnStatistics[bn], case .batchNorm(let eps, _) = graph[bn].op else { return }
            let bx = graph[bn].inputs[0], xt = graph[bx].type
            let dx = newBuffer("grad." + valueName(bx), xt, region: .batched)
            addKernel(.outElementwiseFusable, [n.id, relu, bn], MaxPool2dBatchNormBackward(
                x: try materialized(bx), mean: stats.mean, variance: stats.variance, gamma: try materialized(graph[bn].inputs[1]),
                beta: try materialized(graph[bn].inputs[2]), dPooled: dy, dx: dx, dGamma: gradientBuffer(ofParameter: graph[bn].inputs[1]),
                dBeta: gradientBuffer(ofParameter: graph[bn].inputs[2]), c: xt.dims[0], h: xt.dims[1], w: xt.dims[2], eps: eps))
            bw.handled.formUnion([relu, bn])
            if needsGradient(bx) { contribute(bx, dx, &bw, from: n.id) }

        case .maxPool2d:
            let x = n.inputs[0], xt = graph[x].type
            let dx = newBuffer("grad." + valueName(x), xt, region: .batched)
            addKernel(.outElementwiseFusable, [n.id], MaxPool2x2(x: try materialized(x), y: dx,
                                                                  c: xt.dims[0], h: xt.dims[1], w: xt.dims[2], dy: dy))
            contribute(x, dx, &bw, from: n.id)

        case .globalMaxPool:
            let x = n.inputs[0], xt = graph[x].type
            let dx = newBuffer("grad." + valueName(x), xt, region: .batched)
            addKernel(.reduction, [n.id], GlobalMaxPool(x: try materialized(x), y: dx, c: xt.dims[0], hw: xt.dims[1] * xt.dims[2], dy: dy))
            contribute(x, dx, &bw, from: n.id)

        case .add:
            // Both inputs get dy itself: no kernel, but the buffer is now shared.
            bw.shared.insert(dy)
            for i in n.inputs where needsGradient(i) { contribute(i, dy, &bw, from: n.id) }

        case .convolution(let attributes):
            let x = n.inputs[0]
            let xt = graph[x].type
            let dx = needsGradient(x) ? newBuffer("grad." + valueName(x), xt, region: .batched) : nil
            addKernel(.outElementwiseFusable, [n.id], ConvolutionBackward(
                x: try materialized(x), weight: try materialized(n.inputs[1]), dy: dy, dx: dx,
                dWeight: gradientBuffer(ofParameter: n.inputs[1]),
                dBias: n.inputs.count > 2 ? gradientBuffer(ofParameter: n.inputs[2]) : nil,
                geometry: ConvGeometry(input: xt, weight: graph[n.inputs[1]].type, attributes: attributes)))
            if let dx { contribute(x, dx, &bw, from: n.id) }

        case .pool2d(let attributes):
            let x = n.inputs[0], xt = graph[x].type
            let dx = newBuffer("grad." + valueName(x), xt, region: .batched)
            addKernel(.outElementwiseFusable, [n.id], PoolBackward(
                x: try materialized(x), dy: dy, dx: dx, c: xt.dims[0], h: xt.dims[1], w: xt.dims[2], attributes: attributes))
            contribute(x, dx, &bw, from: n.id)

        case .globalAvgPool:
            let x = n.inputs[0], xt = graph[x].type
            let dx = newBuffer("grad." + valueName(x), xt, region: .batched)
            addKernel(.reduction, [n.id], GlobalAvgPool(
                x: dy, y: dx, c: xt.dims[0], hw: xt.dims[1] * xt.dims[2], backward: true))
            contribute(x, dx, &bw, from: n.id)

        case .activation(let a):
            let x = n.inputs[0], xt = graph[x].type
            let dx = newBuffer("grad." + valueName(x), xt, region: xt.batched ? .batched : .fixed)
            // An activation computed as its producer's epilogue (ReLU6) has no input value of
            // its own; ReLU6's gradient test 0 < x < 6 is the same on its output.
            let fused = epilogueOf[n.id] != nil
            let source = try materialized(ActivationForward.backwardReadsOutput(a) || fused ? n.id : x)
            addKernel(.elementwise, [n.id], ActivationBackward(
                source: source, dy: dy, dx: dx, count: n.type.elementCount, activation: a))
            contribute(x, dx, &bw, from: n.id)

        case .upsampleNearest(let sh, let sw):
            let x = n.inputs[0], xt = graph[x].type
            let dx = newBuffer("grad." + valueName(x), xt, region: .batched)
            addKernel(.injective, [n.id], UpsampleNearest(
                x: dy, y: dx, c: xt.dims[0], h: xt.dims[1], w: xt.dims[2], sh: sh, sw: sw, backward: true))
            contribute(x, dx, &bw, from: n.id)

        case .mulChannels:
            let x = n.inputs[0], s = n.inputs[1], xt = graph[x].type, st = graph[s].type
            let dx = needsGradient(x) ? newBuffer("grad." + valueName(x), xt, region: .batched) : nil
            let ds: Int? = !needsGradient(s) ? nil
                : isTrainableParameter(s) ? gradientBuffer(ofParameter: s)
                : newBuffer("grad." + valueName(s), st, region: st.batched ? .batched : .fixed)
            addKernel(.broadcast, [n.id], MulChannelsBackward(
                x: try materialized(x), s: try materialized(s), dy: dy, dx: dx, ds: ds,
                c: xt.dims[0], hw: xt.dims[1] * xt.dims[2], perExample: st.batched))
            if let dx { contribute(x, dx, &bw, from: n.id) }
            if let ds, !isTrainableParameter(s) { contribute(s, ds, &bw, from: n.id) }

        case .l2Norm(let eps):
            let x = n.inputs[0], xt = graph[x].type
            let dx = needsGradient(x) ? newBuffer("grad." + valueName(x), xt, region: .batched) : nil
            addKernel(.reduction, [n.id], L2NormBackward(
                x: try materialized(x), weight: try materialized(n.inputs[1]), dy: dy, dx: dx,
                dWeight: gradientBuffer(ofParameter: n.inputs[1]), c: xt.dims[0], hw: xt.dims[1] * xt.dims[2], eps: eps))
            if let dx { contribute(x, dx, &bw, from: n.id) }

        case .standardize(let eps):
            let x = n.inputs[0], xt = graph[x].type
            if needsGradient(x) {
                let dx = newBuffer("grad." + valueName(x), xt, region: .batched)
                addKernel(.reduction, [n.id], Standardize(x: try materialized(x), y: dx, dy: dy, size: xt.dims.reduce(1, *), eps: eps))
                contribute(x, dx, &bw, from: n.id)
            }

        case .permute, .concat:
            // Injective: each input chain (reshape/permute back to a materialised value) gets
            // its slice of dy, un-permuted, in one scatter kernel.
            let inputs: [Int]
            let axis: Int
            if case .concat(let ax) = n.op { inputs = n.inputs; axis = ax } else { inputs = [n.id]; axis = 1 }
            let a = n.type.batched ? axis - 1 : axis
            let dstRow = n.type.dims[a...].reduce(1, *)
            var offset = 0
            var pieces: [CopyPiece] = [], dests: [Int] = [], sources: [Int] = [], nodes: [Int] = [n.id]
            for i in inputs {
                let inner = graph[i].type.dims[a...].reduce(1, *)
                defer { offset += inner }
                let (source, sourceDims, perm, chain) = graph.injectiveChain(from: i, isRoot: i == n.id)
                nodes += chain
                bw.handled.formUnion(chain)
                guard needsGradient(source) else { continue }
                let dest = newBuffer("grad." + valueName(source), graph[source].type, region: .batched)
                pieces.append(CopyPiece(source: dest, sourceDims: sourceDims, perm: perm, inner: inner, dstRow: dstRow, dstOffset: offset))
                dests.append(dest)
                sources.append(source)
            }
            if !pieces.isEmpty {
                addKernel(.injective, nodes, Scatter(x: dy, pieces: pieces, destinations: dests, xElements: n.type.elementCount))
            }
            for (s, d) in zip(sources, dests) { contribute(s, d, &bw, from: n.id) }
        }
    }

    /// For a max pool whose input is a ReLU computed as the epilogue of a training-mode BN,
    /// with the pool its only consumer: (relu, bn), whose backward fuses with the pool's.
    func fusedPoolBackward(_ pool: Node) -> (relu: Int, bn: Int)? {
        let relu = pool.inputs[0]
        guard case .relu = graph[relu].op, let bn = epilogueOf[relu], case .batchNorm = graph[bn].op,
              plan.consumers[relu] == [pool.id], bnStatistics[bn] != nil else { return nil }
        return (relu, bn)
    }
}
