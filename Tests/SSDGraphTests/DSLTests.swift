import Foundation
import SSDGraph
import SSDModels
import XCTest

final class DSLTests: XCTestCase {
    func testTinySSDShapesFollowTheChapter() throws {
        let g = try BuiltinModels.tinySSD.graph(height: 256, width: 256)
        XCTAssertEqual(g.output("anchors")?.type.dims, [1, 5444, 4])
        XCTAssertEqual(g.output("cls_preds")?.type, TensorType([5444, 2], batched: true))
        XCTAssertEqual(g.output("bbox_preds")?.type, TensorType([21776], batched: true))
        // Feature maps of the five blocks: 32, 16, 8, 4, 1.
        let anchorNodes = g.nodes.filter { if case .anchors = $0.op { return true } else { return false } }
        XCTAssertEqual(anchorNodes.map { g[$0.inputs[0]].type.dims }, [[64, 32, 32], [128, 16, 16], [128, 8, 8], [128, 4, 4], [128, 1, 1]])
        XCTAssertEqual(g.parameters.count, 104)
    }

    func testLargerInputSizeFollows() throws {
        let g = try BuiltinModels.tinySSD.graph(height: 512, width: 512)
        XCTAssertEqual(g.output("anchors")?.type.dims, [1, (64 * 64 + 32 * 32 + 16 * 16 + 8 * 8 + 1) * 4, 4])
    }

    func testChannelMismatchNamesTheDSLLine() {
        let b = GraphBuilder(name: "bad")
        let x = b.input("X", [3, 16, 16], location: SourceLocation(file: "t", line: 1))
        let conv = Conv2d(16, 32, kernelSize: 3, padding: 1); let line = #line
        _ = Named("blk_0", conv)(x)
        XCTAssertThrowsError(try b.finish()) { error in
            let e = error as! GraphError
            XCTAssertEqual(e.location, SourceLocation(file: "DSLTests.swift", line: line))
            XCTAssertTrue(e.message.contains("expects 16 input channels, got 3"), e.message)
            XCTAssertEqual(e.node, "blk_0")
            XCTAssertTrue("\(e)".hasPrefix("DSLTests.swift:\(line): error:"), "\(e)")
        }
    }

    func testOnlyTheFirstErrorIsReportedAndLaterOpsAreSkipped() {
        let b = GraphBuilder(name: "bad")
        let x = b.input("X", [3, 8, 8], location: SourceLocation(file: "t", line: 1))
        let y = Conv2d(4, 4, kernelSize: 3)(x)
        let z = relu(maxPool2d(y))
        XCTAssertNil(z.id)
        XCTAssertEqual(b.errors.count, 1)
    }

    func testFunctionalOpErrorsNameTheirCallSite() {
        let b = GraphBuilder(name: "bad")
        let x = b.input("X", [3, 8, 8], location: SourceLocation(file: "t", line: 1))
        let y = b.input("Y", [3, 4, 4], location: SourceLocation(file: "t", line: 2))
        _ = concat([x, y], axis: 1); let line = #line
        XCTAssertEqual(b.errors.first?.location.line, line)
        XCTAssertTrue(b.errors.first?.message.contains("differs") ?? false)
    }

    func testModelContractIsChecked() {
        let m = Model(name: "wrong", numClasses: 3, register: false) { x in
            let f = Conv2d(3, 8, kernelSize: 3, padding: 1)(x)
            let a = multiboxPrior(f, sizes: [0.2], ratios: [1])  // 1 anchor per pixel
            return SSDOutputs(anchors: a, clsPreds: f.permuted(0, 2, 3, 1).reshaped(perExample: -1, 2),
                              bboxPreds: f.flattened())
        }
        XCTAssertThrowsError(try m.graph(height: 4, width: 4)) { e in
            XCTAssertTrue("\(e)".contains("cls_preds must have shape (N,16,4)"), "\(e)")
        }
    }

    func testParameterNamesFollowModulePaths() throws {
        let b = GraphBuilder(name: "names")
        let x = b.input("X", [3, 8, 8], location: SourceLocation(file: "t", line: 1))
        _ = Named("blk_0", Sequential { Sequential { Conv2d(3, 4, kernelSize: 3); BatchNorm2d(4) } })(x)
        XCTAssertEqual(b.graph.parameters.map(\.info.name), [
            "blk_0.0.0.weight", "blk_0.0.0.bias", "blk_0.0.1.weight", "blk_0.0.1.bias",
            "blk_0.0.1.running_mean", "blk_0.0.1.running_var", "blk_0.0.1.num_batches_tracked",
        ])
    }

    func testLayerBuilderHandlesLoopsConditionsAndArrays() {
        let flag = true
        let s = Sequential {
            ReLU()
            for _ in 0..<3 { ReLU(); MaxPool2d(2) }   // buildArray flattens
            if flag { ReLU() }                       // buildOptional (true)
            if !flag { ReLU() }                      // buildOptional (false)
            if flag { ReLU() } else { MaxPool2d(2); MaxPool2d(2) }  // buildEither(first:)
            if !flag { ReLU() } else { MaxPool2d(2); MaxPool2d(2) } // buildEither(second:)
            [ReLU(), ReLU()] as [any Layer]          // buildExpression of an array
        }
        XCTAssertEqual(s.layers.count, 1 + 6 + 1 + 0 + 1 + 2 + 2)
    }

    func testGraphSurvivesJSONAndVerifies() throws {
        let g = try BuiltinModels.tinySSD.graph(height: 128, width: 128)
        let data = try JSONEncoder().encode(g)
        let back = try JSONDecoder().decode(Graph.self, from: data)
        XCTAssertEqual(back, g)
        try back.verify()
        var broken = g
        broken.nodes[3].type = TensorType([16, 1, 1], batched: true)
        XCTAssertThrowsError(try broken.verify())
    }

    func testGraphDumpIsReadable() throws {
        let text = try BuiltinModels.tinySSD.graph(height: 256, width: 256).text
        XCTAssertTrue(text.contains("%3 = conv2d(%0, %1, %2) {stride=1 padding=1} : f32[N,16,256,256]  blk_0.0.0  model.swift:"), text)
    }

    func testAnchorsOfAPixel() {
        // One 2x2 map, sizes (0.5), ratios (1, 4): pixel (0,0) centre (0.25, 0.25).
        let a = MultiboxPrior.anchors(height: 2, width: 2, sizes: [0.5], ratios: [1, 4])
        XCTAssertEqual(a.count, 2 * 2 * 2 * 4)
        XCTAssertEqual(Array(a[0..<4]), [0, 0, 0.5, 0.5])
        XCTAssertEqual(Array(a[4..<8]), [-0.25, 0.125, 0.75, 0.375])  // w = 0.5*2 = 1, h = 0.25
    }
}
