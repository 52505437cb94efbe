// MobileNetV2 + SSDLite (Sandler et al., "MobileNetV2: Inverted Residuals and Linear
// Bottlenecks", CVPR 2018) in the ssdc DSL, at the paper's 320x320 input.
//
// The base is the paper's table 2 of inverted residual blocks (1x1 expansion, 3x3 depthwise,
// linear 1x1 projection, a residual add where stride is 1 and the channels match); SSDLite
// replaces every 3x3 conv of SSD's extra layers and predictors by a depthwise 3x3 and a 1x1.
// Feature maps: 20 (stride 16), 10 (stride 32), then 5, 3, 2 and 1 from the extra layers.
//
//   ssdc run --train --model Examples/mobilenet-ssdlite/model.swift --data builtin:shapes
//
// Simplifications: the width multiplier also scales the last 1x1 conv (1280 channels at
// width 1), and the first source is the output of the last stride-16 block rather than the
// expansion layer of the next block. scripts/examples_torch.py has the same network in
// PyTorch, with the same parameter names.
import SSDGraph

/// MobileNet's width multiplier: channels are the paper's times this, rounded to multiples of 8.
let width = 0.25

/// MobileNet's channel rounding: to the nearest multiple of 8, never below 90% of `channels`.
func makeDivisible(_ channels: Double, _ divisor: Int = 8) -> Int {
    let rounded = max(divisor, Int(channels + Double(divisor) / 2) / divisor * divisor)
    return Double(rounded) < 0.9 * channels ? rounded + divisor : rounded
}

func scaled(_ channels: Int) -> Int { makeDivisible(Double(channels) * width) }

/// [conv without bias, batch norm, ReLU6]; `groups: channels` makes it depthwise.
func convBNReLU6(_ inChannels: Int, _ outChannels: Int, kernelSize: Int, stride: Int = 1,
                 padding: Int = 0, groups: Int = 1) -> [any Layer] {
    [Conv2d(inChannels, outChannels, kernelSize: kernelSize, stride: stride, padding: padding,
            groups: groups, bias: false),
     BatchNorm2d(outChannels),
     ReLU6()]
}

/// The inverted residual block: expand to `expansion` times the channels, filter each
/// channel with a 3x3 depthwise conv, project back linearly (no ReLU6 after the projection,
/// which would destroy information in the narrow bottleneck), and add the input when the
/// shapes allow.
struct InvertedResidual: Layer {
    var inChannels: Int
    var outChannels: Int
    var stride: Int
    var expansion: Int

    func callAsFunction(_ x: Tensor) -> Tensor {
        let hidden = inChannels * expansion
        let y = Named("conv", Sequential {
            if expansion != 1 {
                convBNReLU6(inChannels, hidden, kernelSize: 1)  // 1x1 expansion
            }
            convBNReLU6(hidden, hidden, kernelSize: 3, stride: stride, padding: 1, groups: hidden)  // depthwise
            Conv2d(hidden, outChannels, kernelSize: 1, bias: false)  // linear bottleneck
            BatchNorm2d(outChannels)
        })(x)
        return stride == 1 && inChannels == outChannels ? x + y : y
    }
}

/// Rows of the paper's table 2: expansion t, output channels c, repeats n, first stride s.
typealias BlockRow = (t: Int, c: Int, n: Int, s: Int)

/// The blocks of the table's rows, and their output channels.
func invertedResiduals(_ inChannels: Int, _ rows: [BlockRow]) -> (blocks: [any Layer], channels: Int) {
    var blocks: [any Layer] = []
    var channels = inChannels
    for row in rows {
        for i in 0..<row.n {
            blocks.append(InvertedResidual(inChannels: channels, outChannels: scaled(row.c),
                                           stride: i == 0 ? row.s : 1, expansion: row.t))
            channels = scaled(row.c)
        }
    }
    return (blocks, channels)
}

/// The table's rows up to output stride 16 (20x20 for 320x320) and the rest (stride 32).
let rowsToStride16: [BlockRow] = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1)]
let rowsToStride32: [BlockRow] = [(6, 160, 3, 2), (6, 320, 1, 1)]

/// An SSDLite extra layer: 1x1 to half the channels, depthwise 3x3 stride 2, 1x1 up.
func extraLayer(_ inChannels: Int, _ outChannels: Int) -> Sequential {
    let mid = outChannels / 2
    return Sequential {
        convBNReLU6(inChannels, mid, kernelSize: 1)
        convBNReLU6(mid, mid, kernelSize: 3, stride: 2, padding: 1, groups: mid)
        convBNReLU6(mid, outChannels, kernelSize: 1)
    }
}

/// An SSDLite predictor: depthwise 3x3 + BN + ReLU6, then a 1x1 conv to the outputs.
func ssdLiteHead(_ inChannels: Int, _ outChannels: Int) -> Sequential {
    Sequential {
        convBNReLU6(inChannels, inChannels, kernelSize: 3, padding: 1, groups: inChannels)
        Conv2d(inChannels, outChannels, kernelSize: 1)
    }
}

// Default boxes: 3 on the stride-16 map (scale 0.1, ratios 1, 2, 1/2), 6 elsewhere with
// scales 0.35 .. 0.95 and the extra box sqrt(s_k * s_k+1), as the TensorFlow SSDLite configs.
let sizes: [[Float]] = [[0.1], [0.35, 0.418], [0.5, 0.57], [0.65, 0.721], [0.8, 0.872], [0.95, 0.975]]
let ratios: [[Float]] = [[1, 2, 0.5]] + Array(repeating: [1, 2, 3, 0.5, 1.0 / 3], count: 5)

/// Permutes channels last and flattens per example, so that the predictions of every scale
/// can be concatenated (channel k*(q+1)+j of a pixel is class j of its anchor k).
func flattenPred(_ pred: Tensor) -> Tensor {
    pred.permuted(0, 2, 3, 1).flattened()
}

/// The anchors and the SSDLite predictors `cls_i` and `bbox_i` of each source feature map.
func multiboxHeads(_ sources: [Tensor], numClasses: Int) -> SSDOutputs {
    var anchors: [Tensor] = [], clsPreds: [Tensor] = [], bboxPreds: [Tensor] = []
    for (i, y) in sources.enumerated() {
        let boxes = sizes[i].count + ratios[i].count - 1
        anchors.append(multiboxPrior(y, sizes: sizes[i], ratios: ratios[i]))
        clsPreds.append(Named("cls_\(i)", ssdLiteHead(y.channels, boxes * (numClasses + 1)))(y))
        bboxPreds.append(Named("bbox_\(i)", ssdLiteHead(y.channels, boxes * 4))(y))
    }
    return SSDOutputs(
        anchors: concat(anchors, axis: 1),
        clsPreds: concat(clsPreds.map(flattenPred), axis: 1).reshaped(perExample: -1, numClasses + 1),
        bboxPreds: concat(bboxPreds.map(flattenPred), axis: 1))
}

func mobileNetV2SSDLite(numClasses: Int) -> Model {
    Model(name: "mobilenet-ssdlite", numClasses: numClasses, inputSize: (320, 320)) { input in
        let stem = scaled(32)
        let (blocks16, channels16) = invertedResiduals(stem, rowsToStride16)
        let (blocks32, channels32) = invertedResiduals(channels16, rowsToStride32)
        // A 3x3 stride-2 conv, then the blocks down to stride 16: 320 -> 20.
        let features16 = Named("features16", Sequential {
            convBNReLU6(3, stem, kernelSize: 3, stride: 2, padding: 1)
            blocks16
        })(input)
        // The stride-32 blocks and the last 1x1 conv: 20 -> 10.
        let features32 = Named("features32", Sequential {
            blocks32
            convBNReLU6(channels32, scaled(1280), kernelSize: 1)
        })(features16)
        // Extra layers: 10 -> 5 -> 3 -> 2 -> 1.
        var sources = [features16, features32]
        for (i, channels) in [512, 256, 256, 128].enumerated() {
            sources.append(Named("extra_\(i)", extraLayer(sources.last!.channels, scaled(channels)))(sources.last!))
        }
        return multiboxHeads(sources, numClasses: numClasses)
    }
}

let model = mobileNetV2SSDLite(numClasses: requestedNumClasses(default: 3))
