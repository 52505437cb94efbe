// SSD300 (Liu et al., "SSD: Single Shot MultiBox Detector", ECCV 2016) in the ssdc DSL.
//
// A VGG16 base truncated after conv5_3, with fc6/fc7 turned into convolutions (fc6 dilated),
// four extra layers (conv8_2 .. conv11_2), and 3x3 class and box predictors on six feature
// maps of 38, 19, 10, 5, 3 and 1 pixels for a 300x300 input: 8732 anchors, as in the paper.
//
//   ssdc run --train --model Examples/ssd300-vgg16/model.swift --data builtin:shapes
//
// Two departures from the paper, both so that it trains from scratch on two cores:
// channel counts are the paper's divided by `widthDivisor`, and every convolution of the
// base and the extra layers is followed by a batch norm (the paper fine-tunes an ImageNet
// VGG16 without BN; trained from scratch, SSD needs BN, as ScratchDet (Zhu et al. 2019)
// shows). A conv that feeds a BN has no bias. scripts/examples_torch.py has the same network
// in PyTorch, with the same parameter names.
import SSDGraph

/// The paper's channel counts are divided by this (8: conv1 has 8 channels, fc7 128).
let widthDivisor = 8

func scaled(_ channels: Int) -> Int { channels / widthDivisor }

/// [conv without bias, batch norm, ReLU]: one "convX_Y" of the paper.
func convBNReLU(_ inChannels: Int, _ outChannels: Int, kernelSize: Int, stride: Int = 1,
                padding: Int = 0, dilation: Int = 1) -> [any Layer] {
    [Conv2d(inChannels, outChannels, kernelSize: kernelSize, stride: stride, padding: padding,
            dilation: dilation, bias: false),
     BatchNorm2d(outChannels),
     ReLU()]
}

/// The 3x3 convolutions of one VGG stage (conv4_1, conv4_2, conv4_3 for count 3).
func vggConvs(_ inChannels: Int, _ outChannels: Int, count: Int) -> [any Layer] {
    (0..<count).flatMap { i in
        convBNReLU(i == 0 ? inChannels : outChannels, outChannels, kernelSize: 3, padding: 1)
    }
}

/// One extra feature layer (conv8 .. conv11): a 1x1 conv that halves the channels, then a
/// 3x3 conv that either halves the map (stride 2, padding 1) or shrinks it by 2 (no padding).
func extraLayer(_ inChannels: Int, _ midChannels: Int, _ outChannels: Int,
                stride: Int, padding: Int) -> Sequential {
    Sequential {
        convBNReLU(inChannels, midChannels, kernelSize: 1)  // convX_1
        convBNReLU(midChannels, outChannels, kernelSize: 3, stride: stride, padding: padding)  // convX_2
    }
}

// Default boxes. The scales s_k of the paper (0.1 for conv4_3, then 0.2 .. 0.88 in equal steps)
// with the extra box of size sqrt(s_k * s_k+1), and aspect ratios {1, 2, 1/2} on conv4_3,
// conv10_2 and conv11_2 (4 boxes) and {1, 2, 3, 1/2, 1/3} elsewhere (6 boxes): d2l's
// multibox_prior gives len(sizes) + len(ratios) - 1 boxes per pixel, the paper's counts.
let sizes: [[Float]] = [[0.1, 0.141], [0.2, 0.272], [0.37, 0.447], [0.54, 0.619], [0.71, 0.79],
                        [0.88, 0.961]]
let fourBoxes: [Float] = [1, 2, 0.5]
let sixBoxes: [Float] = [1, 2, 3, 0.5, 1.0 / 3]
let ratios: [[Float]] = [fourBoxes, sixBoxes, sixBoxes, sixBoxes, fourBoxes, fourBoxes]

/// Permutes channels last and flattens per example, so that the predictions of every scale
/// can be concatenated (channel k*(q+1)+j of a pixel is class j of its anchor k).
func flattenPred(_ pred: Tensor) -> Tensor {
    pred.permuted(0, 2, 3, 1).flattened()
}

/// The anchors and the 3x3 predictors `cls_i` and `bbox_i` of each source feature map.
func multiboxHeads(_ sources: [Tensor], numClasses: Int) -> SSDOutputs {
    var anchors: [Tensor] = [], clsPreds: [Tensor] = [], bboxPreds: [Tensor] = []
    for (i, y) in sources.enumerated() {
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

func ssd300(numClasses: Int) -> Model {
    Model(name: "ssd300-vgg16", numClasses: numClasses, inputSize: (300, 300)) { input in
        // VGG16: conv1_x .. conv3_x with 2x2 max pools, 300 -> 150 -> 75 -> 38 (pool3 rounds
        // up, "ceil mode", so that conv4_3 is 38x38).
        let pool1 = Named("conv1", Sequential {
            vggConvs(3, scaled(64), count: 2)
            MaxPool2d(2)
        })(input)
        let pool2 = Named("conv2", Sequential {
            vggConvs(scaled(64), scaled(128), count: 2)
            MaxPool2d(2)
        })(pool1)
        let pool3 = Named("conv3", Sequential {
            vggConvs(scaled(128), scaled(256), count: 3)
            MaxPool2d(2, ceilMode: true)
        })(pool2)
        let conv4_3 = Named("conv4", Sequential { vggConvs(scaled(256), scaled(512), count: 3) })(pool3)

        // pool4 (38 -> 19), conv5_x, and pool5 changed to 3x3 stride 1 so that fc6 stays 19x19.
        let pool5 = Named("conv5", Sequential {
            MaxPool2d(2)
            vggConvs(scaled(512), scaled(512), count: 3)
            MaxPool2d(3, stride: 1, padding: 1)
        })(conv4_3)
        // fc6 as a 3x3 conv with dilation 6 (the "atrous" fc6 of DeepLab), fc7 as a 1x1 conv.
        let fc6 = Named("fc6", Sequential {
            convBNReLU(scaled(512), scaled(1024), kernelSize: 3, padding: 6, dilation: 6)
        })(pool5)
        let fc7 = Named("fc7", Sequential { convBNReLU(scaled(1024), scaled(1024), kernelSize: 1) })(fc6)

        // Extra feature layers: 19 -> 10 -> 5 -> 3 -> 1.
        let conv8_2 = Named("conv8", extraLayer(scaled(1024), scaled(256), scaled(512), stride: 2, padding: 1))(fc7)
        let conv9_2 = Named("conv9", extraLayer(scaled(512), scaled(128), scaled(256), stride: 2, padding: 1))(conv8_2)
        let conv10_2 = Named("conv10", extraLayer(scaled(256), scaled(128), scaled(256), stride: 1, padding: 0))(conv9_2)
        let conv11_2 = Named("conv11", extraLayer(scaled(256), scaled(128), scaled(256), stride: 1, padding: 0))(conv10_2)

        // conv4_3's activations are much larger than the other sources': L2-normalise them
        // over channels and learn a per-channel scale starting at 20 (ParseNet).
        let conv4_3Normed = Named("conv4_3_norm", L2Norm(scaled(512), scale: 20))(conv4_3)
        return multiboxHeads([conv4_3Normed, fc7, conv8_2, conv9_2, conv10_2, conv11_2],
                             numClasses: numClasses)
    }
}

let model = ssd300(numClasses: requestedNumClasses(default: 3))
