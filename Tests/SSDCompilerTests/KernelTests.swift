import Foundation
import SSDCompiler
import SSDGraph
import SSDIO
import SSDRuntime
import XCTest

/// Each op, alone and in the fusions the compiler makes, compiled to C and run, against the
/// slow reference interpreter. Parameters are random (seeded), BN running statistics too,
/// so the eval path is exercised with non-trivial values.
final class KernelTests: XCTestCase {
    /// Builds a graph with `body`, compiles it, runs both programs, and compares every
    /// output with the reference interpreter (max |diff| relative to max |ref|).
    func check(_ name: String, input dims: [Int], batch: Int = 2, tolerance: Double = 1e-5,
               file: StaticString = #filePath, line: UInt = #line,
               _ body: (Tensor) -> [(String, Tensor)]) throws {
        _ = try checkGraph(name, input: dims, batch: batch, tolerance: tolerance, file: file, line: line, body)
    }

    /// `check`, returning the graph it built.
    @discardableResult
    func checkGraph(_ name: String, input dims: [Int], batch: Int = 2, tolerance: Double = 1e-5,
                    file: StaticString = #filePath, line: UInt = #line,
                    _ body: (Tensor) -> [(String, Tensor)]) throws -> Graph {
        let b = GraphBuilder(name: name)
        let x = b.input("X", dims, location: SourceLocation(file, line))
        for (n, t) in body(x) { b.output(n, t) }
        let graph = try b.finish()
        try compare(graph, name: name, input: dims, batch: batch, tolerance: tolerance, file: file, line: line)
        return graph
    }

    /// Compiles `graph`, runs its forward programs in both BN modes on a random input, and
    /// compares every output with the reference interpreter.
    func compare(_ graph: Graph, name: String, input dims: [Int], batch: Int = 2, tolerance: Double = 1e-5,
                 file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ssdc-kernel-\(name)-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let result = try Driver.compile(graph, into: dir)
        let session = ModelSession(library: try ModelLibrary(path: result.libraryPath))
        session.initializeParameters(seed: 7, graph: graph)
        // Give BN state random, valid values so eval mode is not the identity.
        var state = session.stateDict()
        var rng = SplitMix64(seed: 11)
        for (k, v) in state where k.hasSuffix("running_mean") || k.hasSuffix("running_var") || (k.hasSuffix(".weight") && v.shape.count == 1) {
            let positive = !k.hasSuffix("running_mean")
            state[k] = HostTensor(floats: (0..<v.count).map { _ in positive ? 0.5 + abs(rng.uniform(1)) : rng.uniform(2) }, shape: v.shape)
        }
        try session.loadStateDict(state, source: "test state")

        let count = batch * dims.reduce(1, *)
        let xs = (0..<count).map { _ in rng.uniform(3) }
        let input = HostTensor(floats: xs, shape: [batch] + dims)
        let params = state.mapValues { $0.floats.map(Double.init) }

        for (program, mode) in [("forward_train", Program.Mode.train), ("infer", .eval)] {
            let got = try session.run(program, inputs: ["X": input])
            let ref = ReferenceInterpreter(graph: graph, mode: mode)
                .run(inputs: ["X": .init(shape: [batch] + dims, data: xs.map(Double.init))], params: params)
            for o in graph.outputs {
                let r = ref[o.node]!
                let g = try XCTUnwrap(got[o.name], "missing output \(o.name)", file: file, line: line)
                XCTAssertEqual(g.shape, r.shape, "\(name)/\(program)/\(o.name) shape", file: file, line: line)
                let scale = max(r.data.map(abs).max() ?? 0, 1e-30)
                let diff = zip(g.floats, r.data).map { abs(Double($0) - $1) }.max() ?? 0
                XCTAssertLessThanOrEqual(diff / scale, tolerance, "\(name)/\(program)/\(o.name): max |diff| \(diff), max |ref| \(scale)", file: file, line: line)
            }
        }
    }

    func testConvPadded() throws {
        try check("conv_pad", input: [3, 9, 7]) { x in [("y", Conv2d(3, 5, kernelSize: 3, padding: 1)(x))] }
    }

    func testConvStridedUnpadded() throws {
        try check("conv_stride", input: [4, 11, 10]) { x in [("y", Conv2d(4, 6, kernelSize: 3, stride: 2)(x))] }
    }

    func testConvOneByOneNoBias() throws {
        try check("conv_1x1", input: [7, 5, 5]) { x in [("y", Conv2d(7, 3, kernelSize: 1, bias: false)(x))] }
    }

    func testConvReluFusedEpilogue() throws {
        try check("conv_relu", input: [3, 8, 8]) { x in [("y", relu(Conv2d(3, 4, kernelSize: 3, padding: 1)(x)))] }
    }

    func testBatchNormReluBothModes() throws {
        try check("bn_relu", input: [3, 6, 5], batch: 3) { x in
            [("y", Sequential { Conv2d(3, 4, kernelSize: 3, padding: 1); BatchNorm2d(4); ReLU() }(x))]
        }
    }

    func testFoldedBatchNormFollowsWeightChanges() throws {
        // Eval mode folds the BN into the conv's weights once and keeps them between calls;
        // every way the parameters change must show in the next forward: new weights loaded,
        // and another session of the same library with its own weights run in between (a
        // train step's updates: GoldenCTests.testProgramsWritingParametersInvalidateCaches).
        let b = GraphBuilder(name: "fold_cache")
        let x = b.input("X", [3, 8, 8], location: SourceLocation(#filePath, #line))
        b.output("y", Sequential { Conv2d(3, 4, kernelSize: 3, padding: 1); BatchNorm2d(4); ReLU() }(x))
        let graph = try b.finish()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ssdc-kernel-fold-cache-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let library = try ModelLibrary(path: try Driver.compile(graph, into: dir).libraryPath)
        var rng = SplitMix64(seed: 5)
        let xs = (0..<2 * 3 * 64).map { _ in rng.uniform(3) }
        let input = HostTensor(floats: xs, shape: [2, 3, 8, 8])

        /// Random weights and valid BN statistics.
        func randomState(_ session: ModelSession) -> [String: HostTensor] {
            session.stateDict().mapValues { v in
                v.shape.isEmpty ? v : HostTensor(floats: (0..<v.count).map { _ in 0.5 + abs(rng.uniform(1)) }, shape: v.shape)
            }
        }
        /// infer's output against the reference interpreter on the session's parameters.
        func checkInfer(_ session: ModelSession, _ what: String) throws {
            let got = try XCTUnwrap(try session.run("infer", inputs: ["X": input])["y"])
            let params = session.stateDict().mapValues { $0.floats.map(Double.init) }
            let ref = ReferenceInterpreter(graph: graph, mode: .eval)
                .run(inputs: ["X": .init(shape: [2, 3, 8, 8], data: xs.map(Double.init))], params: params)[graph.outputs[0].node]!
            let scale = max(ref.data.map(abs).max() ?? 0, 1e-30)
            let diff = zip(got.floats, ref.data).map { abs(Double($0) - $1) }.max() ?? 0
            XCTAssertLessThanOrEqual(diff / scale, 1e-5, "\(what): max |diff| \(diff), max |ref| \(scale)")
        }

        let a = ModelSession(library: library)
        try a.loadStateDict(randomState(a), source: "state A1")
        try checkInfer(a, "first weights")
        try checkInfer(a, "same weights, second call")
        try a.loadStateDict(randomState(a), source: "state A2")
        try checkInfer(a, "after loading new weights")
        let other = ModelSession(library: library)
        try other.loadStateDict(randomState(other), source: "state B")
        try checkInfer(other, "another session")
        try checkInfer(a, "the first session again")
    }

    func testConvBatchNormReluPoolBothModes() throws {
        // Pattern pool-after-epilogue: BN + ReLU + 2x2 pool in one pass (batch statistics),
        // conv + folded BN + ReLU + pool in one kernel (inference).
        let g = try checkGraph("conv_bn_relu_pool", input: [3, 8, 6], batch: 3) { x in
            // (the pool is not an output itself: the plan fuses only values nothing else reads)
            [("y", globalMaxPool(Sequential { Conv2d(3, 4, kernelSize: 3, padding: 1); BatchNorm2d(4); ReLU(); MaxPool2d(2) }(x)))]
        }
        let model = try CompiledModel(graph: g, toolchain: GoldenCTests.toolchain)
        XCTAssertTrue(model.programs[0].kernels.contains { $0.name.hasSuffix("batch_norm_relu_max_pool2d") })
        XCTAssertTrue(model.programs[1].kernels.contains { $0.name.hasSuffix("conv2d_batch_norm_relu_max_pool2d") })
    }

    func testBatchNormAloneIsAnOutput() throws {
        // The BN value is an output, so the ReLU must not be fused into it.
        try check("bn_out", input: [2, 4, 4], batch: 2) { x in
            let y = BatchNorm2d(2)(x)
            return [("bn", y), ("act", relu(y))]
        }
    }

    func testMaxPoolOddSizes() throws {
        try check("maxpool", input: [3, 7, 9]) { x in [("y", maxPool2d(x))] }
    }

    func testGlobalMaxPool() throws {
        try check("gmp", input: [5, 3, 4]) { x in [("y", globalMaxPool(x))] }
    }

    func testHeadsPermuteFlattenConcat() throws {
        // The chapter's flatten_pred/concat_preds over two scales, then a reshape.
        try check("heads", input: [4, 6, 6]) { x in
            let a = Named("cls_0", Conv2d(4, 6, kernelSize: 3, padding: 1))(x)
            let small = maxPool2d(x)
            let b = Named("cls_1", Conv2d(4, 6, kernelSize: 3, padding: 1))(small)
            let flat = concat([a, b].map { $0.permuted(0, 2, 3, 1).flattened() }, axis: 1)
            return [("preds", flat.reshaped(perExample: -1, 3))]
        }
    }

    func testConcatInPlaceAndCopiedInputsMixed() throws {
        // In place: a conv flattened without a permute (NCHW), a stride-2 conv (the im2col
        // path) permuted, and a conv of the same geometry as the first, paired with it.
        // Copied: a conv that is also an output, and a ReLU of the input.
        let graph = try checkGraph("concat_mixed", input: [3, 6, 6]) { x in
            let plain = Named("plain", Conv2d(3, 2, kernelSize: 3, padding: 1))(x).flattened()
            let strided = Named("strided", Conv2d(3, 4, kernelSize: 3, stride: 2, padding: 1))(x)
                .permuted(0, 2, 3, 1).flattened()
            let shown = Named("shown", Conv2d(3, 2, kernelSize: 1))(x)
            let twin = Named("twin", Conv2d(3, 3, kernelSize: 3, padding: 1))(x).permuted(0, 2, 3, 1).flattened()
            let cat = concat([plain, strided, shown.permuted(0, 2, 3, 1).flattened(), relu(x).flattened(), twin], axis: 1)
            return [("cat", cat), ("shown", shown)]
        }
        let p = try Lowering.lower(graph, mode: .train, name: "forward_train").program
        let inPlace = p.kernels.filter { $0.name.hasSuffix("_concat") && $0.kind != .injective }
        XCTAssertEqual(inPlace.map { graph[$0.nodes[0]].name }, ["plain", "strided"])
        XCTAssertTrue(inPlace[0].name.hasSuffix("conv2d_pair_permute_reshape_concat"))
        XCTAssertTrue(inPlace[0].nodes.contains { graph[$0].name == "twin" })
        let copies = p.kernels.filter { $0.kind == .injective }
        XCTAssertEqual(copies.count, 1)
        guard let copy = copies.first?.body.base as? Copy else { return XCTFail("no copy kernel") }
        XCTAssertEqual(copy.pieces.map(\.dstOffset), [2 * 36 + 4 * 9, 2 * 36 + 4 * 9 + 2 * 36])
    }

    func testPermuteMaterialisedAndConcatInnerAxis() throws {
        try check("permute", input: [3, 4, 5]) { x in
            let p = x.permuted(0, 3, 1, 2)
            return [("p", p), ("cat", concat([x, relu(x)], axis: 2))]
        }
    }

    func testSoftmaxLastAxis() throws {
        try check("softmax", input: [6, 3]) { x in [("y", softmax(x, axis: 2))] }
    }

    func testRuntimeCTestPrograms() throws {
        // The runtime's own C tests: fast kernels against slow references. test_kernels runs
        // once per micro-kernel ISA this machine can execute: the native build (AVX-512 where
        // the CPU has it) and, when that was AVX-512, again with AVX-512 off (the AVX2 kernel).
        let kernels = ["threads.c", "gemm.c", "gemm_avx512.c", "conv.c", "conv_direct.c", "conv_general.c", "winograd.c", "winograd4.c", "winograd_avx512.c", "bn.c", "pool.c", "optim.c", "fused.c", "collective.c"]
        let native = try runCTest("test_kernels", kernels)
        if native == "avx512" {
            XCTAssertEqual(try runCTest("test_kernels", kernels, extraFlags: ["-mno-avx512f"]), "avx2",
                           "test_kernels with -mno-avx512f should use the AVX2 micro-kernel")
        } else {
            print("test_kernels: AVX-512 micro-kernel skipped (the native build uses \(native ?? "?"); this CPU lacks AVX-512F)")
        }
        _ = try runCTest("test_fused", kernels)
        _ = try runCTest("test_ssd_ops", ["detect.c", "target.c", "loss.c", "threads.c"])
        _ = try runCTest("test_ops", ["threads.c", "gemm.c", "gemm_avx512.c", "conv_general.c", "conv_direct.c", "dwconv.c", "pool_general.c", "activation.c", "resize.c", "l2norm.c", "standardize.c", "eltwise.c"])
    }

    /// Builds Runtime/tests/`test`.c with the runtime `sources` (-march=native plus
    /// `extraFlags`), runs it and checks that nothing failed. Returns the micro-kernel ISA the
    /// program reports ("micro-kernel: avx512, 4 x 48"), if it reports one.
    @discardableResult
    private func runCTest(_ test: String, _ sources: [String], extraFlags: [String] = []) throws -> String? {
        let cc = try Toolchain.findCC()
        let dir = try Toolchain.runtimeDirectory()
        let exe = FileManager.default.temporaryDirectory.appendingPathComponent("\(test)-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: exe) }
        let name = ([test] + extraFlags).joined(separator: " ")
        let build = try Shell.run(cc, ["-std=c11", "-O2", "-march=native"] + extraFlags + ["-fopenmp", "-I", dir]
            + sources.map { "\(dir)/\($0)" } + ["\(dir)/tests/\(test).c", "-lm", "-o", exe])
        XCTAssertEqual(build.status, 0, "\(name) does not build:\n\(build.stderr)")
        guard build.status == 0 else { return nil }
        let r = try Shell.run(exe, [])
        let lines = r.stdout.split(separator: "\n")
        let summary = lines.last(where: { $0.contains("passed,") }) ?? "no summary"
        XCTAssertEqual(r.status, 0, "\(name): \(summary)\n\(lines.filter { $0.contains("FAIL") }.joined(separator: "\n"))")
        XCTAssertTrue(summary.hasSuffix(" 0 failed"), "\(name): \(summary)")
        let isa = lines.first(where: { $0.hasPrefix("micro-kernel: ") })
            .map { String($0.dropFirst("micro-kernel: ".count).prefix { $0 != "," }) }
        print("\(name): \(isa.map { "\($0) micro-kernel, " } ?? "")\(summary)")
        return isa
    }

    /// The golden model's infer program places an output over the input X, so its
    /// one-image-per-thread route stages the outputs until every image has read its input.
    /// With two threads and six images, each image's outputs must be exactly those of that
    /// image alone.
    func testOneImagePerThreadRouteWithStagedOutputsGivesBatchOneValues() throws {
        let graph = try goldenModel.graph(height: 8, width: 8)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ssdc-kernel-by-image-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let library = try ModelLibrary(path: try Driver.compile(graph, into: dir).libraryPath)
        library.setThreads(2)
        let session = ModelSession(library: library)
        session.initializeParameters(seed: 3, graph: graph)
        var rng = SplitMix64(seed: 9)
        let per = 3 * 64, xs = (0..<6 * per).map { _ in rng.uniform(3) }
        let all = try session.run("infer", inputs: ["X": HostTensor(floats: xs, shape: [6, 3, 8, 8])])
        XCTAssertEqual(Set(all.keys), ["cls_preds", "bbox_preds", "probs", "detection", "anchors"])
        for k in 0..<6 {
            let one = try session.run("infer", inputs: ["X": HostTensor(floats: Array(xs[k * per ..< (k + 1) * per]), shape: [1, 3, 8, 8])])
            for name in ["cls_preds", "bbox_preds", "probs", "detection"] {
                let a = one[name]!.floats
                XCTAssertEqual(Array(all[name]!.floats[k * a.count ..< (k + 1) * a.count]), a, "\(name) of image \(k)")
            }
        }
    }
}
