import ArgumentParser
import SSDIO
import SSDRuntime

enum AugmentMode: String, ExpressibleByArgument, CaseIterable { case ssd, none }

extension LRSchedule.Kind: ExpressibleByArgument {}
extension ImageTransform: ExpressibleByArgument {}

/// --train's data augmentation and learning-rate schedule, and --eval's transform of the
/// validation images.
struct TrainingOptions: ParsableArguments {
    @Option(help: "--train: data augmentation, ssd (the SSD paper's: photometric distortion, zoom-out, IoU-constrained crop, flip) or none (the chapter's).")
    var augment: AugmentMode = .ssd
    @Option(help: "--train --augment ssd: probability of each photometric distortion (brightness, contrast, saturation, hue).")
    var photometricProbability: Float = AugmentOptions().photometricProbability
    @Option(help: "--train --augment ssd: brightness shift, up to this much of 255.")
    var brightness: Float = AugmentOptions().brightness
    @Option(help: "--train --augment ssd: contrast factor from 1-C to 1+C.")
    var contrast: Float = AugmentOptions().contrast
    @Option(help: "--train --augment ssd: saturation factor from 1-S to 1+S.")
    var saturation: Float = AugmentOptions().saturation
    @Option(help: "--train --augment ssd: hue shift, up to this many degrees.")
    var hue: Float = AugmentOptions().hue
    @Option(help: "--train --augment ssd: probability of the zoom-out (the image on a larger canvas of the mean colour).")
    var zoomOutProbability: Float = AugmentOptions().zoomOutProbability
    @Option(help: "--train --augment ssd: the zoom-out's canvas is up to this many times the image.")
    var zoomOutMax: Float = AugmentOptions().zoomOutMax
    @Option(help: "--train --augment ssd: the crop's choices, one drawn per image: none (the whole image), any (no constraint) or the least IoU with some object.")
    var cropMinIou: String = AugmentOptions.describeCropChoices(AugmentOptions().cropMinIoUs)
    @Option(help: "--train --augment ssd: a crop's sides are at least this fraction of the image's.")
    var cropMinScale: Float = AugmentOptions().cropMinScale
    @Option(help: "--train --augment ssd: a crop's aspect ratio (relative to the image's) is within 1/A...A.")
    var cropMaxAspect: Float = AugmentOptions().cropMaxAspect
    @Option(help: "--train --augment ssd: probability of a horizontal flip.")
    var flipProbability: Float = AugmentOptions().flipProbability
    @Option(help: "--train: write the first N training images of epoch 1, as augmented and with their labels drawn, to augmented/ in the run folder (to see what the model sees).")
    var saveAugmented: Int = 0

    @Option(help: "--train: learning-rate schedule, constant, step or cosine (per step).")
    var lrSchedule: LRSchedule.Kind = .constant
    @Option(help: "--train: epochs of linear warm-up of the learning rate (may be fractional).")
    var warmupEpochs: Double = 0
    @Option(help: "--train --lr-schedule step: multiply the rate by --lr-step-factor every this many epochs.")
    var lrStepEpochs: Int = LRSchedule().stepEpochs
    @Option(help: "--train --lr-schedule step: the factor.")
    var lrStepFactor: Float = LRSchedule().stepFactor
    @Option(help: "--train --lr-schedule cosine: the last rate.")
    var minLr: Float = LRSchedule().minLR

    @Option(help: "--train: keep an exponential moving average of the weights and BN statistics, with this decay per step (e.g. 0.99); validation uses it and checkpoint-ema.safetensors holds it.")
    var ema: Float?

    @Option(help: "--eval: evaluate on validation images (and labels) transformed: mirror, shift (by 1/4 of the size), shrink (2x, on a canvas of the mean colour) or dark (brightness x0.5).")
    var evalTransform: ImageTransform?

    func validate() throws {
        if let d = ema, !(d > 0 && d < 1) { throw ValidationError("--ema must be a decay between 0 and 1 (exclusive), got \(d)") }
        if saveAugmented < 0 { throw ValidationError("--save-augmented \(saveAugmented): expected a count of images, 0 or more") }
        if AugmentOptions.parseCropChoices(cropMinIou) == nil {
            throw ValidationError("--crop-min-iou \(cropMinIou): expected comma-separated choices, each none, any or an IoU")
        }
        if let problem = (augmentation?.problems ?? []).first ?? schedule?.problems.first { throw ValidationError(problem) }
    }

    /// The augmentation recorded in the settings; nil for --augment none.
    var augmentation: AugmentOptions? {
        guard augment == .ssd else { return nil }
        var o = AugmentOptions()
        o.photometricProbability = photometricProbability
        o.brightness = brightness
        o.contrast = contrast
        o.saturation = saturation
        o.hue = hue
        o.zoomOutProbability = zoomOutProbability
        o.zoomOutMax = zoomOutMax
        o.cropMinIoUs = AugmentOptions.parseCropChoices(cropMinIou) ?? []
        o.cropMinScale = cropMinScale
        o.cropMaxAspect = cropMaxAspect
        o.flipProbability = flipProbability
        return o
    }

    /// The schedule recorded in the settings; nil for a constant rate without warm-up (the chapter's).
    var schedule: LRSchedule? {
        var s = LRSchedule(kind: lrSchedule)
        s.warmupEpochs = warmupEpochs
        s.stepEpochs = lrStepEpochs
        s.stepFactor = lrStepFactor
        s.minLR = minLr
        return s == LRSchedule() ? nil : s
    }
}
