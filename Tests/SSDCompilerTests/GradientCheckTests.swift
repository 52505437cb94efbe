import Foundation
import SSDCompiler
import SSDGraph
import SSDIO
import SSDRuntime
import XCTest

/// The compiled train step's gradients against central finite differences of its own loss,
/// on the small two-scale model (conv, BN, ReLU, max pool, global max pool, permute,
/// flatten, concat, target, loss: every op on the training path).
///
/// ReLU and max pool make the loss piecewise smooth, and in float32 the step cannot be
/// tiny, so an interval may contain a kink (PyTorch in float64 shows the same finite
/// differences there). A kink shows as forward and backward differences that disagree;
/// such entries are skipped and counted, and most entries must be checked.
final class GradientCheckTests: XCTestCase {
    func testTrainStepGradientsMatchFiniteDifferences() throws {
        try checkGradients(goldenModel, size: 8, names: [
            "blk_0.0.weight", "blk_0.0.bias", "blk_0.1.weight", "blk_0.1.bias", "cls_0.weight", "cls_1.weight",
            "cls_1.bias", "bbox_0.weight", "bbox_1.bias"])
    }

    /// For each named parameter, its 3 largest gradient entries and 2 random ones against
    /// central differences of the compiled step's loss; at least 75% must be off a kink.
    func checkGradients(_ model: Model, size: Int, names: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let graph = try model.graph(height: size, width: size)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ssdc-gradcheck-\(model.name)-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try Driver.compile(graph, into: dir, training: .init())
        let s = ModelSession(library: try ModelLibrary(path: r.libraryPath))
        s.initializeParameters(seed: 3, graph: graph)
        var rng = SplitMix64(seed: 5)
        let x = HostTensor(floats: (0..<(2 * 3 * size * size)).map { _ in rng.uniform(2) }, shape: [2, 3, size, size])
        let y = HostTensor(floats: [1, 0.1, 0.2, 0.6, 0.7, 0, 0.5, 0.4, 0.95, 0.9,
                                    0, 0.3, 0.1, 0.8, 0.6, -1, 0, 0, 0, 0], shape: [2, 2, 5])
        // lr = wd = 0: the step leaves the weights alone, so it can be run again and again.
        s.setHyperParameters(learningRate: 0, weightDecay: 0)
        func loss() throws -> Double {
            let out = try s.run("train_step", inputs: ["X": x, "Y": y], outputs: ["loss.per_example"])
            let l = out["loss.per_example"]!.floats
            return l.map(Double.init).reduce(0, +) / Double(l.count)
        }
        let f0 = try loss()
        let grads = s.gradients()
        var state = s.stateDict()
        var checked = 0, kinks = 0
        for name in names {
            let g = try XCTUnwrap(grads[name], "no gradient for \(name)", file: file, line: line).floats
            let p0 = state[name]!
            // The entries with the largest gradients, plus a few random ones.
            var picks = Array(g.indices.sorted { abs(g[$0]) > abs(g[$1]) }.prefix(3))
            for _ in 0..<2 { picks.append(Int(rng.next() % UInt64(g.count))) }
            for i in picks {
                let h: Float = 2e-3
                var v = p0.floats
                v[i] += h; state[name] = HostTensor(floats: v, shape: p0.shape); try s.loadStateDict(state, source: "fd")
                let up = try loss()
                v[i] -= 2 * h; state[name] = HostTensor(floats: v, shape: p0.shape); try s.loadStateDict(state, source: "fd")
                let down = try loss()
                state[name] = p0; try s.loadStateDict(state, source: "fd")
                let fd = (up - down) / Double(2 * h)
                let tol = 2e-2 * max(abs(Double(g[i])), 2e-2)
                if abs((up - f0) / Double(h) - (f0 - down) / Double(h)) > tol { kinks += 1; continue }
                XCTAssertEqual(Double(g[i]), fd, accuracy: tol, "\(name)[\(i)]: analytic \(g[i]) vs finite difference \(fd)",
                               file: file, line: line)
                checked += 1
            }
        }
        XCTAssertEqual(checked + kinks, 5 * names.count, file: file, line: line)
        XCTAssertGreaterThanOrEqual(checked, 5 * names.count * 3 / 4, "too many entries near a kink (\(kinks)) to check the gradient",
                                    file: file, line: line)
    }

    /// G, the label rows per image, is chosen per call: padding rows (class -1) change
    /// nothing, so one library trains on data sets with any number of boxes per image.
    func testLabelRowsAreARunTimeDimension() throws {
        let graph = try goldenModel.graph(height: 8, width: 8)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ssdc-rows-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let s = ModelSession(library: try ModelLibrary(path: try Driver.compile(graph, into: dir).libraryPath))
        s.initializeParameters(seed: 3, graph: graph)
        s.setHyperParameters(learningRate: 0, weightDecay: 0)
        var rng = SplitMix64(seed: 5)
        let x = HostTensor(floats: (0..<(2 * 3 * 64)).map { _ in rng.uniform(2) }, shape: [2, 3, 8, 8])
        let boxes: [[Float]] = [[1, 0.1, 0.2, 0.6, 0.7], [0, 0.5, 0.4, 0.95, 0.9], [0, 0.3, 0.1, 0.8, 0.6]]
        let pad: [Float] = [-1, 0, 0, 0, 0]
        func loss(_ rows: [[[Float]]]) throws -> [Float] {
            let y = HostTensor(floats: rows.flatMap { $0.flatMap { $0 } }, shape: [2, rows[0].count, 5])
            return try s.run("train_step", inputs: ["X": x, "Y": y], outputs: ["loss.per_example"])["loss.per_example"]!.floats
        }
        let two = try loss([[boxes[0], boxes[1]], [boxes[2], pad]])
        let five = try loss([[boxes[0], boxes[1], pad, pad, pad], [boxes[2], pad, pad, pad, pad]])
        XCTAssertEqual(two, five, "padding rows must not change the loss")
        let one = try loss([[boxes[0]], [boxes[2]]])
        XCTAssertEqual(one[1], two[1], "image 1 has the same single box")
        XCTAssertNotEqual(one[0], two[0], "image 0 lost a box")
        XCTAssertThrowsError(try s.run("train_step", inputs: ["X": x, "Y": HostTensor(floats: [], shape: [2, 0, 5])]))
    }
}
