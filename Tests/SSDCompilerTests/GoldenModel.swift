import SSDGraph

// A two-scale SSD small enough to read, for the golden emitted-C test. Changing this file
// changes the golden C (its comments name these lines): regenerate it deliberately with
// SSDC_UPDATE_GOLDEN=1 swift test --filter GoldenCTests.

func goldenBlock(_ cin: Int, _ cout: Int) -> Sequential {
    Sequential {
        Conv2d(cin, cout, kernelSize: 3, padding: 1)
        BatchNorm2d(cout)
        ReLU()
        MaxPool2d(2)
    }
}

let goldenModel = Model(name: "golden", numClasses: 2, register: false) { x in
    let y1 = Named("blk_0", goldenBlock(3, 4))(x)
    let y2 = Named("blk_1", AdaptiveMaxPool2d((1, 1)))(y1)
    var anchors: [Tensor] = [], cls: [Tensor] = [], bbox: [Tensor] = []
    for (i, y) in [y1, y2].enumerated() {
        anchors.append(multiboxPrior(y, sizes: [0.3, 0.5], ratios: [1, 2]))
        cls.append(Named("cls_\(i)", Conv2d(4, 3 * 3, kernelSize: 3, padding: 1))(y).permuted(0, 2, 3, 1).flattened())
        bbox.append(Named("bbox_\(i)", Conv2d(4, 3 * 4, kernelSize: 3, padding: 1))(y).permuted(0, 2, 3, 1).flattened())
    }
    return SSDOutputs(anchors: concat(anchors, axis: 1),
                      clsPreds: concat(cls, axis: 1).reshaped(perExample: -1, 3),
                      bboxPreds: concat(bbox, axis: 1))
}
