import SSDCompiler
import SSDGraph
import XCTest

/// The exercises' loss variants chosen in the DSL reach the compiled train step.
final class LossConfigTests: XCTestCase {
    func testModelDeclaredLossReachesTheTrainStep() throws {
        let m = Model(name: "variant", numClasses: 2, loss: Loss(smoothL1Sigma: 3, focalGamma: 2, negativeMiningRatio: 3, bboxWeight: 0.5),
                      register: false) { x in
            let f = Named("head", Conv2d(3, 2 * 3, kernelSize: 3, padding: 1))(x)
            let b = Named("box", Conv2d(3, 2 * 4, kernelSize: 3, padding: 1))(x)
            return SSDOutputs(anchors: multiboxPrior(f, sizes: [0.3], ratios: [1, 2]),
                              clsPreds: f.permuted(0, 2, 3, 1).reshaped(perExample: -1, 3),
                              bboxPreds: b.permuted(0, 2, 3, 1).flattened())
        }
        let g = try m.graph(height: 4, width: 4)
        let c = try LossConfig(graph: g)
        XCTAssertTrue(c.smoothL1); XCTAssertEqual(c.sigma, 3)
        XCTAssertTrue(c.focal); XCTAssertEqual(c.focalGamma, 2); XCTAssertEqual(c.focalAlpha, 0.25)
        XCTAssertEqual(c.negativeMiningRatio, 3); XCTAssertEqual(c.bboxWeight, 0.5); XCTAssertEqual(c.clsWeight, 1)
        let model = try CompiledModel(graph: g, toolchain: GoldenCTests.toolchain, training: .init(loss: c))
        let source = CEmitter(model).source()
        // focal on, gamma 2, alpha 0.25, smooth L1 on, sigma 3, weights 1 and 0.5, mining 3
        XCTAssertTrue(source.contains("const ssd_loss_config_t cfg = { 1, 2.0f, 0.25f, 1, 3.0f, 1.0f, 0.5f, 3.0f };"), "loss config not emitted")
        XCTAssertEqual(try LossConfig(graph: try goldenModel.graph(height: 8, width: 8)), LossConfig())
    }
}
