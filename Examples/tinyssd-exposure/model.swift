// TinySSD for small objects (Examples/tinyssd-small-objects: one more anchor, a square of size
// 0.1, on the finest scale) that first standardises each input image: its pixels shifted to mean
// 0 and scaled to variance 1, over all channels (`Standardize`, PyTorch's
// F.layer_norm(x, x.shape[1:])). An image taken at another exposure (every pixel times a factor)
// is then the same input to the network, which the chapter's model, fed raw 0..255 pixels, has
// to learn from augmented images. Everything else is Examples/tinyssd-small-objects.
//
// Train it with `ssdc run --train --model Examples/tinyssd-exposure/model.swift ...`.
import SSDGraph

/// One class-prediction layer per scale: num_anchors * (num_classes + 1) channels.
func clsPredictor(_ numInputs: Int, _ numAnchors: Int, _ numClasses: Int) -> Conv2d {
    Conv2d(numInputs, numAnchors * (numClasses + 1), kernelSize: 3, padding: 1)
}

/// One box-offset layer per scale: 4 offsets per anchor.
func bboxPredictor(_ numInputs: Int, _ numAnchors: Int) -> Conv2d {
    Conv2d(numInputs, numAnchors * 4, kernelSize: 3, padding: 1)
}

/// Permutes channels last and flattens per example, so predictions of every scale can be
/// concatenated (channel k*(q+1)+j of a pixel is class j of its anchor k).
func flattenPred(_ pred: Tensor) -> Tensor {
    pred.permuted(0, 2, 3, 1).flattened()
}

func concatPreds(_ preds: [Tensor]) -> Tensor {
    concat(preds.map(flattenPred), axis: 1)
}

/// Twice [3x3 conv, batch norm, ReLU], then a 2x2 max pool that halves height and width.
func downSampleBlock(_ inChannels: Int, _ outChannels: Int) -> Sequential {
    Sequential {
        for i in 0..<2 {
            Conv2d(i == 0 ? inChannels : outChannels, outChannels, kernelSize: 3, padding: 1)
            BatchNorm2d(outChannels)
            ReLU()
        }
        MaxPool2d(2)
    }
}

/// Three down-sample blocks: 3 -> 16 -> 32 -> 64 channels, 256x256 -> 32x32.
func baseNet() -> Sequential {
    let numFilters = [3, 16, 32, 64]
    return Sequential {
        for i in 0..<(numFilters.count - 1) {
            downSampleBlock(numFilters[i], numFilters[i + 1])
        }
    }
}

func getBlk(_ i: Int) -> any Layer {
    switch i {
    case 0: return baseNet()
    case 1: return downSampleBlock(64, 128)
    case 4: return AdaptiveMaxPool2d((1, 1))
    default: return downSampleBlock(128, 128)
    }
}

// The 32x32 scale adds a square anchor of size 0.1; sizes[i][0] stays the base of the ratios.
let sizes: [[Float]] = [[0.2, 0.272, 0.1], [0.37, 0.447], [0.54, 0.619], [0.71, 0.79], [0.88, 0.961]]
let ratios: [[Float]] = Array(repeating: [1, 2, 0.5], count: 5)
/// Anchors per pixel of scale i.
func numAnchors(_ i: Int) -> Int { sizes[i].count + ratios[i].count - 1 }

/// One scale: the block, its anchors, and its two predictors.
func blkForward(_ x: Tensor, _ blk: any Layer, _ size: [Float], _ ratio: [Float],
                _ clsPredictor: any Layer, _ bboxPredictor: any Layer)
    -> (Tensor, Tensor, Tensor, Tensor)
{
    let y = blk(x)
    let anchors = multiboxPrior(y, sizes: size, ratios: ratio)
    return (y, anchors, clsPredictor(y), bboxPredictor(y))
}

/// TinySSD(num_classes): five blocks, each with a class and a box predictor.
func tinySSD(numClasses: Int) -> Model {
    let idxToInChannels = [64, 128, 128, 128, 128]
    return Model(name: "tinyssd-exposure", numClasses: numClasses) { input in
        var x = Standardize()(input)
        var anchors: [Tensor] = [], clsPreds: [Tensor] = [], bboxPreds: [Tensor] = []
        for i in 0..<5 {
            let (y, a, c, b) = blkForward(
                x, Named("blk_\(i)", getBlk(i)), sizes[i], ratios[i],
                Named("cls_\(i)", clsPredictor(idxToInChannels[i], numAnchors(i), numClasses)),
                Named("bbox_\(i)", bboxPredictor(idxToInChannels[i], numAnchors(i))))
            x = y
            anchors.append(a); clsPreds.append(c); bboxPreds.append(b)
        }
        return SSDOutputs(
            anchors: concat(anchors, axis: 1),
            clsPreds: concatPreds(clsPreds).reshaped(perExample: -1, numClasses + 1),
            bboxPreds: concatPreds(bboxPreds))
    }
}

let model = tinySSD(numClasses: 1)
