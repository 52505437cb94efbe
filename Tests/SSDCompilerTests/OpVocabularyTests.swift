import Foundation
import SSDCompiler
import SSDGraph
import SSDIO
import SSDRuntime
import XCTest

/// The SSD-family ops beyond TinySSD's, each compiled and run in both BN modes against the
/// reference interpreter (forward), and all of them together in one small SSD whose train
/// step's gradients are checked by finite differences (backward).
extension KernelTests {
    func testDilatedAndGroupedConv() throws {
        try check("conv_dilated", input: [4, 11, 9]) { x in
            [("y", Conv2d(4, 6, kernelSize: 3, stride: 2, padding: 2, dilation: 2)(x))]
        }
        try check("conv_groups", input: [4, 7, 8]) { x in
            [("y", Conv2d(4, 6, kernelSize: 3, padding: 1, groups: 2, bias: false)(x))]
        }
        // ReLU6 and ReLU as the epilogues of a general conv and of an add.
        try check("epilogues", input: [4, 7, 8]) { x in
            let a = relu6(Named("a", Conv2d(4, 4, kernelSize: 3, padding: 2, dilation: 2))(x))
            let b = relu(Named("b", Conv2d(4, 4, kernelSize: 3, padding: 1, groups: 4))(x))
            return [("a", a), ("b", b), ("sum", relu6(a + b))]
        }
        try check("conv_5x5", input: [3, 6, 6]) { x in
            [("y", Named("a", Conv2d(3, 2, kernelSize: 5, stride: 3, padding: 1))(x)),
             ("dilated_1x1", Named("b", Conv2d(3, 4, kernelSize: 1, dilation: 3))(x))]
        }
    }

    func testDepthwiseConv() throws {
        try check("dwconv", input: [5, 9, 8], batch: 3) { x in
            [("s1", Named("a", Conv2d(5, 5, kernelSize: 3, padding: 1, groups: 5))(x)),
             ("s2", Named("b", Conv2d(5, 5, kernelSize: 3, stride: 2, padding: 1, groups: 5, bias: false))(x)),
             ("d2", Named("c", Conv2d(5, 5, kernelSize: 3, padding: 2, dilation: 2, groups: 5))(x))]
        }
    }

    func testPoolingPyTorchSemantics() throws {
        try check("pools", input: [3, 7, 10]) { x in
            [("max_ceil", MaxPool2d(2, ceilMode: true)(x)),
             ("max_3s2p1", MaxPool2d(3, stride: 2, padding: 1)(x)),
             ("max_3s1p1", MaxPool2d(3, stride: 1, padding: 1)(x)),
             ("avg_incl", AvgPool2d(3, stride: 2, padding: 1, ceilMode: true)(x)),
             ("avg_excl", AvgPool2d(3, stride: 2, padding: 1, ceilMode: true, countIncludePad: false)(x)),
             ("gap", AdaptiveAvgPool2d((1, 1))(x))]
        }
    }

    func testActivations() throws {
        try check("acts", input: [2, 5, 5]) { x in
            Activation.allCases.map { a in (a.rawValue, ActivationLayer(a)(x)) }
        }
    }

    func testAddMulUpsampleL2Norm() throws {
        try check("misc", input: [4, 5, 6]) { x in
            let a = Named("a", Conv2d(4, 4, kernelSize: 1))(x)
            let se = hardSigmoid(Named("se", Conv2d(4, 4, kernelSize: 1))(globalAvgPool(x)))
            return [("residual", a + x),
                    ("se", x * se),
                    ("up", upsampleNearest(x, scale: 2)),
                    ("l2", Named("l2", L2Norm(4))(x)),
                    ("std", Standardize()(x))]
        }
    }

    func testNewOpShapeErrorsNameTheLine() throws {
        let b = GraphBuilder(name: "bad")
        let x = b.input("X", [4, 5, 5], location: SourceLocation(file: "m.swift", line: 1))
        _ = Conv2d(4, 6, kernelSize: 3, groups: 4, file: "m.swift", line: 7)(x)
        XCTAssertThrowsError(try b.finish()) { e in
            XCTAssertEqual((e as? GraphError)?.location.line, 7)
            XCTAssertTrue("\(e)".contains("divisible by 4"), "\(e)")
        }
        let c = GraphBuilder(name: "bad2")
        let y = c.input("X", [4, 5, 5], location: SourceLocation(file: "m.swift", line: 1))
        _ = MaxPool2d(2, padding: 2, file: "m.swift", line: 9)(y)
        XCTAssertThrowsError(try c.finish()) { e in XCTAssertEqual((e as? GraphError)?.location.line, 9) }
    }
}

/// Every new op on a training path: a small two-scale SSD with a residual add, depthwise,
/// dilated and grouped convs, ReLU6, hard-swish, sigmoid, L2Norm, pooling with ceil mode,
/// upsample, squeeze-excite, and standardisation (of the input, which needs no gradient, and
/// inside the network).
let vocabularyModel = Model(name: "vocabulary", numClasses: 2, register: false) { x in
    let stem = Named("stem", Sequential { Conv2d(3, 4, kernelSize: 3, padding: 1); BatchNorm2d(4); ReLU6() })(Standardize()(x))
    let dw = Named("dw", Sequential {
        Conv2d(4, 4, kernelSize: 3, padding: 1, groups: 4); BatchNorm2d(4); HardSwish()
    })(stem)
    // 14x14 -> 8x8: ceil mode adds the last window here (floor would give 7).
    let y1 = Named("pool", MaxPool2d(3, stride: 2, padding: 1, ceilMode: true))(dw + stem)
    let l2 = Named("l2", L2Norm(4, scale: 5))(Standardize()(y1))
    let dil = sigmoid(Named("dil", Conv2d(4, 6, kernelSize: 3, padding: 2, dilation: 2, groups: 2))(l2))
    let se = hardSigmoid(Named("se", Conv2d(6, 6, kernelSize: 1))(globalAvgPool(dil)))
    let y2 = Named("avg", AvgPool2d(2, ceilMode: true, countIncludePad: false))(dil * se)
    let top = upsampleNearest(Named("lat", Conv2d(6, 4, kernelSize: 1))(y2), scale: 2)
    let fused = relu(top + Named("lat1", Conv2d(4, 4, kernelSize: 1))(y1))
    var anchors: [Tensor] = [], cls: [Tensor] = [], bbox: [Tensor] = []
    for (i, (y, c)) in [(fused, 4), (y2, 6)].enumerated() {
        anchors.append(multiboxPrior(y, sizes: [0.3, 0.5], ratios: [1, 2]))
        cls.append(Named("cls_\(i)", Conv2d(c, 3 * 3, kernelSize: 3, padding: 1))(y).permuted(0, 2, 3, 1).flattened())
        bbox.append(Named("bbox_\(i)", Conv2d(c, 3 * 4, kernelSize: 3, padding: 1))(y).permuted(0, 2, 3, 1).flattened())
    }
    return SSDOutputs(anchors: concat(anchors, axis: 1),
                      clsPreds: concat(cls, axis: 1).reshaped(perExample: -1, 3),
                      bboxPreds: concat(bbox, axis: 1))
}

extension KernelTests {
    func testVocabularyModelForward() throws {
        try compare(try vocabularyModel.graph(height: 14, width: 14), name: "vocabulary", input: [3, 14, 14], tolerance: 2e-5)
    }
}

extension GradientCheckTests {
    func testVocabularyModelGradientsMatchFiniteDifferences() throws {
        try checkGradients(vocabularyModel, size: 14, names: [
            "stem.0.weight", "stem.1.bias", "dw.0.weight", "dw.0.bias", "dw.1.weight", "l2.weight", "dil.weight",
            "dil.bias", "se.weight", "se.bias", "lat.weight", "lat1.bias", "cls_0.weight", "bbox_1.weight",
        ])
    }
}
