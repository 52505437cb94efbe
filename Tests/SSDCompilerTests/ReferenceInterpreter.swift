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
            case .convolution(let a): v[n.id] = convolution(ins[0], ins[1], ins.count > 2 ? ins[2] : nil, a)
            case .pool2d(let a): v[n.id] = pool(ins[0], a)
            case .globalAvgPool:
                let (b, c, hw) = (ins[0].shape[0], ins[0].shape[1], ins[0].shape[2] * ins[0].shape[3])
                v[n.id] = Value(shape: [b, c, 1, 1], data: (0..<(b * c)).map { i in ins[0].data[(i * hw)..<((i + 1) * hw)].reduce(0, +) / Double(hw) })
            case .activation(let a): v[n.id] = Value(shape: ins[0].shape, data: ins[0].data.map { ReferenceInterpreter.activation(a, $0) })
            case .add: v[n.id] = Value(shape: ins[0].shape, data: zip(ins[0].data, ins[1].data).map { $0 + $1 })
            case .mulChannels: v[n.id] = mulChannels(ins[0], ins[1])
            case .upsampleNearest(let sh, let sw): v[n.id] = upsample(ins[0], sh, sw)
            case .l2Norm(let eps): v[n.id] = l2Norm(ins[0], ins[1], eps: Double(eps))
            case .standardize(let eps): v[n.id] = standardize(ins[0], eps: Double(eps))
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

    /// nn.Conv2d in full generality, straight from its definition.
    func convolution(_ x: Value, _ w: Value, _ b: Value?, _ a: ConvAttributes) -> Value {
        let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (o, cg, kh, kw) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3])
        let oh = a.outputSize(h, kernel: kh, axis: 0), ow = a.outputSize(wd, kernel: kw, axis: 1)
        let og = o / a.groups
        var y = [Double](repeating: 0, count: n * o * oh * ow)
        for ni in 0..<n { for oi in 0..<o { for yi in 0..<oh { for xi in 0..<ow {
            var acc = b?.data[oi] ?? 0
            let g = oi / og
            for cj in 0..<cg { for ky in 0..<kh { for kx in 0..<kw {
                let ci = g * cg + cj
                let iy = yi * a.stride[0] - a.padding[0] + ky * a.dilation[0], ix = xi * a.stride[1] - a.padding[1] + kx * a.dilation[1]
                if iy < 0 || iy >= h || ix < 0 || ix >= wd { continue }
                acc += x.data[((ni * c + ci) * h + iy) * wd + ix] * w.data[((oi * cg + cj) * kh + ky) * kw + kx]
            } } }
            y[((ni * o + oi) * oh + yi) * ow + xi] = acc
        } } } }
        return Value(shape: [n, o, oh, ow], data: y)
    }

    /// PyTorch's max/avg pool (window clipped to the padded input, divisor as in
    /// aten's avg_pool2d: the window inside input + padding, or inside the input alone).
    func pool(_ x: Value, _ a: PoolAttributes) -> Value {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let oh = a.outputSize(h, axis: 0)!, ow = a.outputSize(w, axis: 1)!
        var y: [Double] = []
        for p in 0..<(n * c) { for yi in 0..<oh { for xi in 0..<ow {
            var y0 = yi * a.stride[0] - a.padding[0], x0 = xi * a.stride[1] - a.padding[1]
            var y1 = min(y0 + a.kernel[0], h + a.padding[0]), x1 = min(x0 + a.kernel[1], w + a.padding[1])
            let padded = (y1 - y0) * (x1 - x0)
            y0 = max(y0, 0); x0 = max(x0, 0); y1 = min(y1, h); x1 = min(x1, w)
            var m = -Double.infinity, sum = 0.0
            for iy in y0..<y1 { for ix in x0..<x1 {
                let v = x.data[(p * h + iy) * w + ix]
                m = max(m, v); sum += v
            } }
            y.append(a.kind == .max ? m : sum / Double(a.countIncludePad ? padded : (y1 - y0) * (x1 - x0)))
        } } }
        return Value(shape: [n, c, oh, ow], data: y)
    }

    static func activation(_ a: Activation, _ x: Double) -> Double {
        switch a {
        case .relu6: return min(max(x, 0), 6)
        case .sigmoid: return 1 / (1 + Foundation.exp(-x))
        case .hardSwish: return x * min(max(x + 3, 0), 6) / 6
        case .hardSigmoid: return min(max(x + 3, 0), 6) / 6
        }
    }

    func mulChannels(_ x: Value, _ s: Value) -> Value {
        let (n, c, hw) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
        let perExample = s.data.count == n * c
        var y = x.data
        for ni in 0..<n { for ci in 0..<c { for i in 0..<hw {
            y[(ni * c + ci) * hw + i] *= s.data[perExample ? ni * c + ci : ci]
        } } }
        return Value(shape: x.shape, data: y)
    }

    func upsample(_ x: Value, _ sh: Int, _ sw: Int) -> Value {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        var y: [Double] = []
        for p in 0..<(n * c) { for yi in 0..<(h * sh) { for xi in 0..<(w * sw) {
            y.append(x.data[(p * h + yi / sh) * w + xi / sw])
        } } }
        return Value(shape: [n, c, h * sh, w * sw], data: y)
    }

    func l2Norm(_ x: Value, _ weight: Value, eps: Double) -> Value {
        let (n, c, hw) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
        var y = x.data
        for ni in 0..<n { for i in 0..<hw {
            var ss = 0.0
            for ci in 0..<c { ss += x.data[(ni * c + ci) * hw + i] * x.data[(ni * c + ci) * hw + i] }
            let norm = ss.squareRoot() + eps
            for ci in 0..<c { y[(ni * c + ci) * hw + i] = x.data[(ni * c + ci) * hw + i] / norm * weight.data[ci] }
        } }
        return Value(shape: x.shape, data: y)
    }

    func standardize(_ x: Value, eps: Double) -> Value {
        let n = x.shape[0], d = x.data.count / max(n, 1)
        var y = x.data
        for ni in 0..<n {
            let v = x.data[(ni * d)..<((ni + 1) * d)]
            let mean = v.reduce(0, +) / Double(d)
            let variance = v.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(d)
            for i in 0..<d { y[ni * d + i] = (x.data[ni * d + i] - mean) / (variance + eps).squareRoot() }
        }
        return Value(shape: x.shape, data: y)
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
