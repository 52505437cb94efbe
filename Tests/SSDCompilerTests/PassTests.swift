import Foundation
import SSDCompiler
import SSDGraph
import XCTest

/// Each pass on its own, through its printer: constant folding, the fusion plan (every
/// pattern of its table), and the Graphviz picture.
final class PassTests: XCTestCase {
    func testConstantFoldingFoldsAnchorsAndTheirConcat() throws {
        let g = try goldenModel.graph(height: 8, width: 8)
        let folded = ConstantFolding(g)
        let anchors = try XCTUnwrap(g.output("anchors"))
        XCTAssertEqual(folded.values[anchors.id]?.count, anchors.type.elementCount)
        let anchorNodes = g.nodes.filter { if case .anchors = $0.op { return true }; return false }
        XCTAssertEqual(anchorNodes.count, 2)
        for n in anchorNodes { XCTAssertNotNil(folded.values[n.id]) }
        // Nothing that depends on the input is folded.
        let x = try XCTUnwrap(g.nodes.first { if case .input = $0.op { return true }; return false })
        XCTAssertTrue(g.nodes.filter { $0.inputs.contains(x.id) }.allSatisfy { folded.values[$0.id] == nil })
        XCTAssertTrue(folded.dump(g).contains("constant (\(anchors.type.elementCount) floats)"))
    }

    func testFusionPlanUsesEveryPattern() throws {
        let g = try goldenModel.graph(height: 8, width: 8)
        func patterns(_ p: FusionPlan) -> [String: Int] { p.groups.reduce(into: [:]) { $0[$1.pattern, default: 0] += 1 } }
        // Batch statistics: heads written in place and paired; BN + ReLU + pool in one pass.
        let train = FusionPlan(g, mode: .train)
        XCTAssertEqual(patterns(train), ["write-in-place": 4, "pair": 2, "epilogue": 1, "pool-after-epilogue": 1])
        // Inference: the BN is folded into the conv, which then takes the ReLU and the pool.
        let eval = FusionPlan(g, mode: .eval)
        XCTAssertEqual(patterns(eval), ["write-in-place": 4, "pair": 2, "fold-batch-norm": 1, "epilogue": 1, "pool-after-epilogue": 1])
        for p in FusionPlan.patterns { XCTAssertTrue(eval.dump().contains(p.name + ":") || train.dump().contains(p.name + ":"), p.name) }
    }

    func testActivationsFuseIntoGeneralConvsAndAdds() throws {
        let b = GraphBuilder(name: "epilogues")
        let x = b.input("X", [4, 6, 6], location: SourceLocation(file: "t.swift", line: 1))
        let a = relu6(Named("a", Conv2d(4, 4, kernelSize: 3, padding: 1, groups: 4))(x))
        let c = relu(Named("c", Conv2d(4, 4, kernelSize: 3, padding: 2, dilation: 2))(x))
        let bn = sigmoid(Named("bn", BatchNorm2d(4))(x))
        b.output("y", relu6(a + c))
        b.output("bn", bn)
        let g = try b.finish()
        let plan = FusionPlan(g, mode: .eval)
        let fused = plan.groups.filter { $0.pattern == "epilogue" }.map { $0.nodes.map { g[$0].op.mnemonic } }
        XCTAssertEqual(fused, [["conv2d", "relu6"], ["conv2d", "relu"], ["add", "relu6"]], plan.dump())
        // A sigmoid is no epilogue of anything (the kernels apply ReLU and ReLU6 only).
        XCTAssertFalse(plan.fusedAway.contains(bn.id!))
    }

    func testAValueThatIsAnOutputIsNotFusedAway() throws {
        let b = GraphBuilder(name: "outputs")
        let x = b.input("X", [3, 6, 6], location: SourceLocation(file: "t.swift", line: 1))
        let conv = Conv2d(3, 4, kernelSize: 3, padding: 1)(x)
        b.output("conv", conv)
        b.output("act", relu(conv))
        let plan = FusionPlan(try b.finish(), mode: .eval)
        XCTAssertTrue(plan.groups.isEmpty, plan.dump())
    }

    func testDumpAfterEveryPass() throws {
        let model = try CompiledModel(graph: try goldenModel.graph(height: 8, width: 8), toolchain: GoldenCTests.toolchain)
        for pass in Pass.allCases {
            let text = model.dump(after: pass)
            XCTAssertFalse(text.isEmpty, pass.rawValue)
        }
        XCTAssertTrue(model.dump(after: .graph).hasPrefix("graph golden"))
        XCTAssertTrue(model.dump(after: .fuse).contains("fusion plan of golden"))
        XCTAssertTrue(model.dump(after: .lower).contains("program train_step"))
        XCTAssertTrue(model.dump(after: .emit).contains("int ssdc_infer("))
    }

    func testGraphvizPictureHasAClusterPerKernel() throws {
        let model = try CompiledModel(graph: try goldenModel.graph(height: 8, width: 8), toolchain: GoldenCTests.toolchain)
        let dot = model.dot()
        let infer = try XCTUnwrap(model.programs.first { $0.name == "infer" })
        let clusters = dot.components(separatedBy: "subgraph \"cluster_").count - 1
        XCTAssertEqual(clusters, infer.kernels.count, "one cluster per inference kernel")
        XCTAssertTrue(dot.contains("GoldenModel.swift:"), "nodes name their model-file line")
        // Every value node appears once; parameters only inside their op's box.
        for n in model.inferenceGraph.nodes {
            let declared = dot.components(separatedBy: "  n\(n.id) [label=").count - 1
            if case .parameter = n.op { XCTAssertEqual(declared, 0) } else { XCTAssertEqual(declared, 1, "%\(n.id)") }
        }
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/dot") {
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("golden-\(getpid()).dot").path
            try dot.write(toFile: file, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(atPath: file) }
            let r = try Shell.run("/usr/bin/dot", ["-Tsvg", file, "-o", "/dev/null"])
            XCTAssertEqual(r.status, 0, "Graphviz rejects graph.dot: \(r.stderr)")
        } else {
            print("PassTests: Graphviz (dot) not installed, graph.dot not rendered")
        }
    }
}
