import SSDCompiler
import SSDGraph

/// A slow, obviously-correct interpreter of the typed graph, in double precision, written
/// straight from the ops' definitions (PyTorch semantics). It is the oracle the compiled
/// kernels are checked against.
struct ReferenceInterpreter {
    let graph: Graph
    let mode: Program.Mode

    /// Values by node: full shape (with the batch) and elements in row-major order.
    struct Value { var shape: [Int]; var data: [Double] }

    func run(inputs: [String: Value], params: [String: [Double]]) -> [Int: Value] {
        var v: [Int: Value] = [:]
        for n in graph.nodes {
            let ins = n.inputs.map { v[$0]! }
            switch n.op {
            case .input(let name): v[n.id] = inputs[name]!
            case .parameter(let p): v[n.id] = Value(shape: n.type.dims, data: params[p.name]!)
            case .conv2d(let s, let p): v[n.id] = conv(ins[0], ins[1], ins.count > 2 ? ins[2] : nil, stride: s, pad: p)
            case .batchNorm(let eps, _): v[n.id] = batchNorm(ins, eps: Double(eps))
            case .relu: v[n.id] = Value(shape: ins[0].shape, data: ins[0].data.map { max($0, 0) })
            case .maxPool2d: v[n.id] = maxPool(ins[0])
            case .globalMaxPool: v[n.id] = globalMaxPool(ins[0])
            case .permute(let perm): v[n.id] = permute(ins[0], perm)
            case .reshape:
                v[n.id] = Value(shape: n.type.shape(batch: ins[0].shape[0]), data: ins[0].data)
            case .concat(let axis): v[n.id] = concat(ins, axis: axis)
            case .softmax: v[n.id] = softmax(ins[0])
            case .anchors(let sizes, let ratios):
                let a = MultiboxPrior.anchors(height: ins[0].shape[2], width: ins[0].shape[3], sizes: sizes, ratios: ratios)
                v[n.id] = Value(shape: n.type.dims, data: a.map(Double.init))
            case .multiboxDetection:
                fatalError("the reference interpreter leaves detection to the d2l fixtures")
            }
        }
        return v
    }

    func conv(_ x: Value, _ w: Value, _ b: Value?, stride: Int, pad: Int) -> Value {
        let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (o, k) = (w.shape[0], w.shape[2])
        let oh = (h + 2 * pad - k) / stride + 1, ow = (wd + 2 * pad - k) / stride + 1
        var y = [Double](repeating: 0, count: n * o * oh * ow)
        for ni in 0..<n { for oi in 0..<o { for yi in 0..<oh { for xi in 0..<ow {
            var acc = b?.data[oi] ?? 0
            for ci in 0..<c { for ky in 0..<k { for kx in 0..<k {
                let iy = yi * stride - pad + ky, ix = xi * stride - pad + kx
                if iy < 0 || iy >= h || ix < 0 || ix >= wd { continue }
                acc += x.data[((ni * c + ci) * h + iy) * wd + ix] * w.data[((oi * c + ci) * k + ky) * k + kx]
            } } }
            y[((ni * o + oi) * oh + yi) * ow + xi] = acc
        } } } }
        return Value(shape: [n, o, oh, ow], data: y)
    }

    func batchNorm(_ ins: [Value], eps: Double) -> Value {
        let x = ins[0]
        let (n, c, hw) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
        var y = x.data
        for ci in 0..<c {
            var mean = 0.0, variance = 0.0
            if mode == .train {
                var values: [Double] = []
                for ni in 0..<n { for i in 0..<hw { values.append(x.data[(ni * c + ci) * hw + i]) } }
                mean = values.reduce(0, +) / Double(values.count)
                variance = values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(values.count)
            } else {
                mean = ins[3].data[ci]
                variance = ins[4].data[ci]
            }
            for ni in 0..<n { for i in 0..<hw {
                let j = (ni * c + ci) * hw + i
                y[j] = ins[1].data[ci] * (x.data[j] - mean) / (variance + eps).squareRoot() + ins[2].data[ci]
            } }
        }
        return Value(shape: x.shape, data: y)
    }

    func maxPool(_ x: Value) -> Value {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let oh = h / 2, ow = w / 2
        var y: [Double] = []
        for ni in 0..<n { for ci in 0..<c { for yi in 0..<oh { for xi in 0..<ow {
            var m = -Double.infinity
            for dy in 0..<2 { for dx in 0..<2 { m = max(m, x.data[((ni * c + ci) * h + 2 * yi + dy) * w + 2 * xi + dx]) } }
            y.append(m)
        } } } }
        return Value(shape: [n, c, oh, ow], data: y)
    }

    func globalMaxPool(_ x: Value) -> Value {
        let (n, c, hw) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
        var y: [Double] = []
        for i in 0..<(n * c) { y.append(x.data[(i * hw)..<((i + 1) * hw)].max()!) }
        return Value(shape: [n, c, 1, 1], data: y)
    }

    func permute(_ x: Value, _ perm: [Int]) -> Value {
        let shape = perm.map { x.shape[$0] }
        var strides = [Int](repeating: 1, count: x.shape.count)
        for i in stride(from: x.shape.count - 2, through: 0, by: -1) { strides[i] = strides[i + 1] * x.shape[i + 1] }
        var y: [Double] = []
        var idx = [Int](repeating: 0, count: shape.count)
        for _ in 0..<x.data.count {
            var src = 0
            for d in 0..<shape.count { src += idx[d] * strides[perm[d]] }
            y.append(x.data[src])
            var d = shape.count - 1
            while d >= 0 { idx[d] += 1; if idx[d] < shape[d] { break }; idx[d] = 0; d -= 1 }
        }
        return Value(shape: shape, data: y)
    }

    func concat(_ xs: [Value], axis: Int) -> Value {
        let outer = xs[0].shape[..<axis].reduce(1, *)
        var shape = xs[0].shape
        shape[axis] = xs.map { $0.shape[axis] }.reduce(0, +)
        var y: [Double] = []
        for o in 0..<outer {
            for x in xs {
                let inner = x.shape[axis...].reduce(1, *)
                y += x.data[(o * inner)..<((o + 1) * inner)]
            }
        }
        return Value(shape: shape, data: y)
    }

    func softmax(_ x: Value) -> Value {
        let cols = x.shape.last!
        var y: [Double] = []
        for r in 0..<(x.data.count / cols) {
            let row = x.data[(r * cols)..<((r + 1) * cols)]
            let m = row.max()!
            let e = row.map { Foundation.exp($0 - m) }
            let s = e.reduce(0, +)
            y += e.map { $0 / s }
        }
        return Value(shape: x.shape, data: y)
    }
}

import Foundation
