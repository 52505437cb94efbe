// A small ResNet with a feature pyramid under SSD heads, in the ssdc DSL, at 256x256.
//
// Base: ResNet-18's layout (He et al., "Deep Residual Learning for Image Recognition", CVPR
// 2016): a 7x7 stride-2 conv and a 3x3 stride-2 max pool, then four stages of two basic
// blocks, each stage after the first halving the map with a stride-2 conv and a 1x1 stride-2
// projection on the shortcut. Neck: a feature pyramid (Lin et al., "Feature Pyramid Networks
// for Object Detection", CVPR 2017) on C3..C5: 1x1 lateral convs, nearest 2x upsampling and
// addition top-down, a 3x3 conv to smooth each merged map; P6 and P7 from stride-2 convs as in
// RetinaNet. Heads: SSD's 3x3 class and box predictors on every level (softmax over classes
// in the loss, no sigmoid). Levels: 32, 16, 8, 4 and 2 pixels for a 256x256 input.
//
//   ssdc run --train --model Examples/resnet-fpn-ssd/model.swift --data builtin:shapes
//
// Channel counts are ResNet-18's and FPN's divided by `widthDivisor` so that it trains on
// two cores. scripts/examples_torch.py has the same network in PyTorch, with the same
// parameter names (torchvision's ResNet names for the base).
import SSDGraph

/// ResNet-18's and FPN's channel counts are divided by this (8: stages of 8 .. 64, pyramid 32).
let widthDivisor = 8

func scaled(_ channels: Int) -> Int { channels / widthDivisor }

/// Two 3x3 conv + BN with a ReLU between, added to the shortcut, then a ReLU. When the block
/// changes the map size or the channels, the shortcut is a 1x1 conv + BN ("downsample").
struct BasicBlock: Layer {
    var inChannels: Int
    var outChannels: Int
    var stride: Int

    func callAsFunction(_ x: Tensor) -> Tensor {
        var y = Named("conv1", Conv2d(inChannels, outChannels, kernelSize: 3, stride: stride, padding: 1, bias: false))(x)
        y = relu(Named("bn1", BatchNorm2d(outChannels))(y))
        y = Named("conv2", Conv2d(outChannels, outChannels, kernelSize: 3, padding: 1, bias: false))(y)
        y = Named("bn2", BatchNorm2d(outChannels))(y)
        let shortcut = stride == 1 && inChannels == outChannels ? x : Named("downsample", Sequential {
            Conv2d(inChannels, outChannels, kernelSize: 1, stride: stride, bias: false)
            BatchNorm2d(outChannels)
        })(x)
        return relu(y + shortcut)
    }
}

/// One ResNet stage ("layerN"): `count` basic blocks, the first with `stride`.
func resLayer(_ inChannels: Int, _ outChannels: Int, count: Int, stride: Int) -> Sequential {
    Sequential {
        for i in 0..<count {
            BasicBlock(inChannels: i == 0 ? inChannels : outChannels, outChannels: outChannels,
                       stride: i == 0 ? stride : 1)
        }
    }
}

// Anchors: 4 per position (two sizes, ratios 1, 2, 1/2), scales 0.1 .. 0.7 from P3 to P7
// with the extra box sqrt(s_k * s_k+1).
let sizes: [[Float]] = [[0.1, 0.158], [0.25, 0.316], [0.4, 0.469], [0.55, 0.62], [0.7, 0.771]]
let ratios: [[Float]] = Array(repeating: [1, 2, 0.5], count: 5)

/// Permutes channels last and flattens per example, so that the predictions of every scale
/// can be concatenated (channel k*(q+1)+j of a pixel is class j of its anchor k).
func flattenPred(_ pred: Tensor) -> Tensor {
    pred.permuted(0, 2, 3, 1).flattened()
}

/// The anchors and the 3x3 predictors `cls_i` and `bbox_i` of each pyramid level.
func multiboxHeads(_ levels: [Tensor], numClasses: Int) -> SSDOutputs {
    var anchors: [Tensor] = [], clsPreds: [Tensor] = [], bboxPreds: [Tensor] = []
    for (i, y) in levels.enumerated() {
        let boxes = sizes[i].count + ratios[i].count - 1
        anchors.append(multiboxPrior(y, sizes: sizes[i], ratios: ratios[i]))
        clsPreds.append(Named("cls_\(i)", Conv2d(y.channels, boxes * (numClasses + 1), kernelSize: 3, padding: 1))(y))
        bboxPreds.append(Named("bbox_\(i)", Conv2d(y.channels, boxes * 4, kernelSize: 3, padding: 1))(y))
    }
    return SSDOutputs(
        anchors: concat(anchors, axis: 1),
        clsPreds: concat(clsPreds.map(flattenPred), axis: 1).reshaped(perExample: -1, numClasses + 1),
        bboxPreds: concat(bboxPreds.map(flattenPred), axis: 1))
}

func resNetFPNSSD(numClasses: Int) -> Model {
    Model(name: "resnet-fpn-ssd", numClasses: numClasses, inputSize: (256, 256)) { input in
        // Stem: 256 -> 128 (7x7 conv stride 2) -> 64 (3x3 max pool stride 2).
        var x = Named("conv1", Conv2d(3, scaled(64), kernelSize: 7, stride: 2, padding: 3, bias: false))(input)
        x = relu(Named("bn1", BatchNorm2d(scaled(64)))(x))
        x = Named("maxpool", MaxPool2d(3, stride: 2, padding: 1))(x)
        // C2 .. C5: 64, 32, 16 and 8 pixels.
        let c2 = Named("layer1", resLayer(scaled(64), scaled(64), count: 2, stride: 1))(x)
        let c3 = Named("layer2", resLayer(scaled(64), scaled(128), count: 2, stride: 2))(c2)
        let c4 = Named("layer3", resLayer(scaled(128), scaled(256), count: 2, stride: 2))(c3)
        let c5 = Named("layer4", resLayer(scaled(256), scaled(512), count: 2, stride: 2))(c4)

        // Top-down pathway: each level is its lateral 1x1 conv plus the coarser level upsampled.
        let f = scaled(256)
        let m5 = Named("lateral5", Conv2d(c5.channels, f, kernelSize: 1))(c5)
        let m4 = Named("lateral4", Conv2d(c4.channels, f, kernelSize: 1))(c4) + Upsample(scaleFactor: 2)(m5)
        let m3 = Named("lateral3", Conv2d(c3.channels, f, kernelSize: 1))(c3) + Upsample(scaleFactor: 2)(m4)
        // A 3x3 conv on each merged map reduces the aliasing of the upsampling.
        let p3 = Named("smooth3", Conv2d(f, f, kernelSize: 3, padding: 1))(m3)
        let p4 = Named("smooth4", Conv2d(f, f, kernelSize: 3, padding: 1))(m4)
        let p5 = Named("smooth5", Conv2d(f, f, kernelSize: 3, padding: 1))(m5)
        // Coarser levels for large objects, as RetinaNet: P6 from C5, P7 from ReLU(P6).
        let p6 = Named("p6", Conv2d(c5.channels, f, kernelSize: 3, stride: 2, padding: 1))(c5)
        let p7 = Named("p7", Conv2d(f, f, kernelSize: 3, stride: 2, padding: 1))(relu(p6))
        return multiboxHeads([p3, p4, p5, p6, p7], numClasses: numClasses)
    }
}

let model = resNetFPNSSD(numClasses: requestedNumClasses(default: 3))
