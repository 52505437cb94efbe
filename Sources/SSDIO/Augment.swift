// Data augmentation as the SSD paper (Liu et al. 2016, section 2.2 and 3.6) and ssd.pytorch
// do it: photometric distortion, zoom-out onto a canvas of the mean colour, a random crop
// constrained by its IoU with some object, a horizontal flip, then a resize to the model's
// input size. Also the fixed transforms `ssdc run --eval --eval-transform` measures
// robustness with (mirror, shift, shrink, dark).
//
// The geometric steps are all axis-aligned scalings, translations and flips, so they are
// composed into one map from output to source coordinates (`Frame`) and the pixels are
// sampled once, bilinearly, at the end: no 4x canvas is ever allocated, and every box
// moves through exactly the map its pixels move through. Randomness comes from the run's
// seed, the epoch and the data-set index of the image, never from the order or the thread
// an image is processed on.

import Dispatch

/// The options of `--augment ssd`: each step's probability and range (recorded in a run's
/// settings.json).
public struct AugmentOptions: Codable, Equatable, Sendable {
    /// Probability of each photometric distortion (brightness, contrast, saturation, hue).
    public var photometricProbability: Float = 0.5
    /// Brightness: a value added to every channel, uniform in -brightness...brightness (0...255 scale).
    public var brightness: Float = 32
    /// Contrast: pixels scaled by a factor uniform in 1-contrast...1+contrast.
    public var contrast: Float = 0.5
    /// Saturation: HSV saturation scaled by a factor uniform in 1-saturation...1+saturation.
    public var saturation: Float = 0.5
    /// Hue: HSV hue shifted by degrees uniform in -hue...hue.
    public var hue: Float = 18
    /// Probability of placing the image on a larger canvas of the mean colour.
    public var zoomOutProbability: Float = 0.5
    /// The canvas is up to this many times the image's width and height.
    public var zoomOutMax: Float = 4
    /// The crop's choices, one drawn uniformly per image: nil keeps the whole image, a
    /// number is the least IoU the crop must have with some object (0: any crop).
    public var cropMinIoUs: [Float?] = [nil, 0.1, 0.3, 0.5, 0.7, 0.9, 0]
    /// A crop's sides are at least this fraction of the image's.
    public var cropMinScale: Float = 0.3
    /// A crop's height / width lies within 1/cropMaxAspect...cropMaxAspect.
    public var cropMaxAspect: Float = 2
    /// Probability of a horizontal flip.
    public var flipProbability: Float = 0.5

    public init() {}

    /// Attempts at a crop that meets its constraint before the image is kept whole (ssd.pytorch's 50).
    static let cropTrials = 50

    /// Problems with the options, in the words of the command line (empty when all are valid).
    public var problems: [String] {
        var p: [String] = []
        func check(_ ok: Bool, _ text: String) { if !ok { p.append(text) } }
        for (name, v) in [("--photometric-probability", photometricProbability), ("--zoom-out-probability", zoomOutProbability),
                          ("--flip-probability", flipProbability)] {
            check((0...1).contains(v), "\(name) must be between 0 and 1, got \(v)")
        }
        check(brightness.isFinite && (0...255).contains(brightness), "--brightness must be between 0 and 255, got \(brightness)")
        check((0...1).contains(contrast), "--contrast must be between 0 and 1, got \(contrast)")
        check((0...1).contains(saturation), "--saturation must be between 0 and 1, got \(saturation)")
        check((0...180).contains(hue), "--hue must be between 0 and 180 degrees, got \(hue)")
        check(zoomOutMax.isFinite && zoomOutMax >= 1 && zoomOutMax <= 16, "--zoom-out-max must be between 1 and 16, got \(zoomOutMax)")
        check(!cropMinIoUs.isEmpty, "--crop-min-iou needs at least one choice")
        for case let v? in cropMinIoUs { check((0...1).contains(v), "--crop-min-iou: \(v) is not an IoU between 0 and 1") }
        check(cropMinScale > 0 && cropMinScale <= 1, "--crop-min-scale must be above 0 and at most 1, got \(cropMinScale)")
        check(cropMaxAspect.isFinite && cropMaxAspect >= 1, "--crop-max-aspect must be at least 1, got \(cropMaxAspect)")
        return p
    }

    /// Parses `--crop-min-iou`: comma-separated choices, `none` (keep the whole image),
    /// `any` (a crop with no IoU constraint) or an IoU.
    public static func parseCropChoices(_ text: String) -> [Float?]? {
        var out: [Float?] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let s = part.trimmingCharacters(in: .whitespaces).lowercased()
            switch s {
            case "none": out.append(nil)
            case "any": out.append(0)
            default:
                guard let v = Float(s), v.isFinite else { return nil }
                out.append(v)
            }
        }
        return out
    }

    /// The choices as `--crop-min-iou` takes them.
    public static func describeCropChoices(_ choices: [Float?]) -> String {
        choices.map { $0.map { $0 == 0 ? "any" : "\($0)" } ?? "none" }.joined(separator: ",")
    }
}

/// The fill of canvases (zoom-out, shift, shrink): the ImageNet mean colour, RGB 0...255, as SSD uses.
public let augmentMeanColor: [Float] = [123.68, 116.78, 103.94]

/// A map x_source = scale * x + offset along one axis (continuous pixel coordinates: pixel
/// i covers [i, i + 1)).
public struct AxisMap: Sendable, Equatable {
    public var scale: Float = 1
    public var offset: Float = 0
    func callAsFunction(_ x: Float) -> Float { scale * x + offset }
    /// This map applied after `inner`: x -> self(inner(x)).
    func after(scale s: Float, offset o: Float) -> AxisMap { AxisMap(scale: scale * s, offset: scale * o + offset) }
}

/// The current picture during a chain of geometric steps: its size, where its points lie in
/// the source image, and the boxes in its own pixel coordinates.
public struct Frame: Sendable {
    public var width: Float
    public var height: Float
    public var mapX = AxisMap()
    public var mapY = AxisMap()
    public var boxes: [DetectionDataSet.Box]
    /// Objects a crop cut off at their centre (so no longer in `boxes`) of which some part is
    /// still in the picture, clipped to it. Training drops them, as SSD does; evaluation
    /// ignores detections of them (PASCAL VOC's rule for "difficult" objects), since where the
    /// hidden half of an object lies is not in the picture.
    public var cut: [DetectionDataSet.Box] = []

    /// The source image itself.
    public init(width: Int, height: Int, boxes: [DetectionDataSet.Box]) {
        self.width = Float(width)
        self.height = Float(height)
        self.boxes = boxes
    }

    /// The picture placed at (left, top) on a canvas of the given size (the rest: mean colour).
    public mutating func zoomOut(canvasWidth: Float, canvasHeight: Float, left: Float, top: Float) {
        mapX = mapX.after(scale: 1, offset: -left)
        mapY = mapY.after(scale: 1, offset: -top)
        width = canvasWidth
        height = canvasHeight
        moveBoxes { .init(label: $0.label, xmin: $0.xmin + left, ymin: $0.ymin + top, xmax: $0.xmax + left, ymax: $0.ymax + top) }
    }

    /// Applies a geometric step to the boxes and the cut objects alike.
    private mutating func moveBoxes(_ step: (DetectionDataSet.Box) -> DetectionDataSet.Box) {
        boxes = boxes.map(step)
        cut = cut.map(step)
    }

    /// The part from (x, y), `w` x `h` (it may reach past the picture: that is mean colour).
    /// Boxes whose centre falls outside are dropped (to `cut` if a part remains), the others
    /// clipped to it.
    public mutating func crop(x: Float, y: Float, width w: Float, height h: Float) {
        mapX = mapX.after(scale: 1, offset: x)
        mapY = mapY.after(scale: 1, offset: y)
        width = w
        height = h
        func clip(_ b: DetectionDataSet.Box) -> DetectionDataSet.Box {
            .init(label: b.label, xmin: max(b.xmin - x, 0), ymin: max(b.ymin - y, 0), xmax: min(b.xmax - x, w), ymax: min(b.ymax - y, h))
        }
        func visible(_ b: DetectionDataSet.Box) -> Bool { b.xmax > b.xmin && b.ymax > b.ymin }
        var kept: [DetectionDataSet.Box] = []
        cut = cut.map(clip).filter(visible)
        for b in boxes {
            let cx = (b.xmin + b.xmax) / 2 - x, cy = (b.ymin + b.ymax) / 2 - y, c = clip(b)
            if cx >= 0, cx < w, cy >= 0, cy < h {
                kept.append(c)
            } else if visible(c) {
                cut.append(c)
            }
        }
        boxes = kept
    }

    /// Mirrored left to right.
    public mutating func flip() {
        mapX = mapX.after(scale: -1, offset: width)
        let w = width
        moveBoxes { .init(label: $0.label, xmin: w - $0.xmax, ymin: $0.ymin, xmax: w - $0.xmin, ymax: $0.ymax) }
    }

    /// Stretched to `w` x `h`.
    public mutating func resize(width w: Int, height h: Int) {
        let sx = width / Float(w), sy = height / Float(h)
        mapX = mapX.after(scale: sx, offset: 0)
        mapY = mapY.after(scale: sy, offset: 0)
        width = Float(w)
        height = Float(h)
        moveBoxes { .init(label: $0.label, xmin: $0.xmin / sx, ymin: $0.ymin / sy, xmax: $0.xmax / sx, ymax: $0.ymax / sy) }
    }

    /// Samples the picture (must be integer-sized, e.g. after `resize`) from `source`
    /// (3 x sourceHeight x sourceWidth floats, channel-major) into `out` (3 x height x width):
    /// bilinear, pixel centres at i + 0.5, points outside the source take the mean colour.
    /// An identity frame copies the source exactly.
    public func render(source: UnsafePointer<Float>, sourceWidth sw: Int, sourceHeight sh: Int, into out: UnsafeMutablePointer<Float>) {
        let w = Int(width), h = Int(height)
        let xs = Frame.taps(count: w, map: mapX, size: sw), ys = Frame.taps(count: h, map: mapY, size: sh)
        let plane = w * h, sourcePlane = sw * sh
        for c in 0..<3 {
            let src = source + c * sourcePlane, dst = out + c * plane
            let fill = augmentMeanColor[c]
            func at(_ x: Int, _ y: Int) -> Float { x < 0 || y < 0 ? fill : src[y * sw + x] }
            for oy in 0..<h {
                let (y0, y1, wy) = ys[oy]
                for ox in 0..<w {
                    let (x0, x1, wx) = xs[ox]
                    let top = wx == 0 ? at(x0, y0) : at(x0, y0) + (at(x1, y0) - at(x0, y0)) * wx
                    if wy == 0 { dst[oy * w + ox] = top; continue }
                    let bottom = wx == 0 ? at(x0, y1) : at(x0, y1) + (at(x1, y1) - at(x0, y1)) * wx
                    dst[oy * w + ox] = top + (bottom - top) * wy
                }
            }
        }
    }

    /// For each output index along an axis: the two source indices to blend (-1: outside,
    /// the mean colour) and the weight of the second.
    static func taps(count: Int, map: AxisMap, size: Int) -> [(Int, Int, Float)] {
        (0..<count).map { i in
            let u = map(Float(i) + 0.5) - 0.5
            let f = u.rounded(.down)
            let i0 = Int(f), frac = u - f
            func inside(_ k: Int) -> Int { k >= 0 && k < size ? k : -1 }
            return (inside(i0), inside(i0 + 1), frac)
        }
    }
}

/// Photometric distortion, in place on 3 x plane channel-major floats (0...255).
enum Photometric {
    static func brightness(_ p: UnsafeMutablePointer<Float>, count: Int, delta: Float) {
        for i in 0..<count { p[i] = min(max(p[i] + delta, 0), 255) }
    }

    static func contrast(_ p: UnsafeMutablePointer<Float>, count: Int, factor: Float) {
        for i in 0..<count { p[i] = min(max(p[i] * factor, 0), 255) }
    }

    /// Saturation scaled by `saturation` and hue turned by `hue` degrees, through HSV.
    static func hsv(_ p: UnsafeMutablePointer<Float>, plane: Int, saturation: Float, hue: Float) {
        let r = p, g = p + plane, b = p + 2 * plane
        for i in 0..<plane {
            let mx = max(r[i], g[i], b[i]), mn = min(r[i], g[i], b[i])
            let d = mx - mn
            var h: Float = 0
            if d > 0 {
                if mx == r[i] { h = 60 * ((g[i] - b[i]) / d) } else if mx == g[i] { h = 60 * ((b[i] - r[i]) / d + 2) } else { h = 60 * ((r[i] - g[i]) / d + 4) }
            }
            var s = mx > 0 ? d / mx : 0
            s = min(s * saturation, 1)
            h = (h + hue).truncatingRemainder(dividingBy: 360)
            if h < 0 { h += 360 }
            // HSV -> RGB with v = mx.
            let c = mx * s, hp = h / 60
            let x = c * (1 - abs(hp.truncatingRemainder(dividingBy: 2) - 1)), m = mx - c
            let (r1, g1, b1): (Float, Float, Float)
            switch Int(hp) {
            case 0: (r1, g1, b1) = (c, x, 0)
            case 1: (r1, g1, b1) = (x, c, 0)
            case 2: (r1, g1, b1) = (0, c, x)
            case 3: (r1, g1, b1) = (0, x, c)
            case 4: (r1, g1, b1) = (x, 0, c)
            default: (r1, g1, b1) = (c, 0, x)
            }
            r[i] = r1 + m; g[i] = g1 + m; b[i] = b1 + m
        }
    }
}

/// SplitMix64 seeded by (seed, epoch, index): the random stream of one image in one epoch.
public struct AugmentRNG {
    private var state: UInt64

    public init(seed: UInt64, epoch: Int, index: Int) {
        state = AugmentRNG.mix(seed ^ AugmentRNG.mix(UInt64(bitPattern: Int64(epoch)) &+ 0xA076_1D64_78BD_642F))
        state ^= AugmentRNG.mix(UInt64(bitPattern: Int64(index)) &+ 0xE703_7ED1_A0B4_28DB)
    }

    static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return AugmentRNG.mix(state)
    }

    /// Uniform in [0, 1).
    mutating func unit() -> Float { Float(next() >> 40) / Float(1 << 24) }
    mutating func uniform(_ a: Float, _ b: Float) -> Float { a + (b - a) * unit() }
    mutating func chance(_ p: Float) -> Bool { p > 0 && unit() < p }
    mutating func pick(below n: Int) -> Int { Int(next() % UInt64(n)) }
}

/// The SSD augmentation of one run: options, seed and the output size.
public struct Augmenter: Sendable {
    public let options: AugmentOptions
    public let seed: UInt64

    public init(options: AugmentOptions, seed: UInt64) {
        self.options = options
        self.seed = seed
    }

    /// The geometric steps drawn for an image of `width` x `height` with `boxes`, ending in
    /// a resize to `outWidth` x `outHeight`.
    public func frame(width: Int, height: Int, boxes: [DetectionDataSet.Box], outWidth: Int, outHeight: Int,
                      rng: inout AugmentRNG) -> Frame {
        var f = Frame(width: width, height: height, boxes: boxes)
        let o = options
        if rng.chance(o.zoomOutProbability) {
            let s = rng.uniform(1, o.zoomOutMax)
            let cw = f.width * s, ch = f.height * s
            f.zoomOut(canvasWidth: cw, canvasHeight: ch, left: rng.uniform(0, cw - f.width), top: rng.uniform(0, ch - f.height))
        }
        if let minIoU = o.cropMinIoUs[rng.pick(below: o.cropMinIoUs.count)], let c = cropRect(f, minIoU: minIoU, rng: &rng) {
            f.crop(x: c.x, y: c.y, width: c.w, height: c.h)
        }
        if rng.chance(o.flipProbability) { f.flip() }
        f.resize(width: outWidth, height: outHeight)
        return f
    }

    /// A crop of `f` whose IoU with some box is at least `minIoU` and that holds the centre
    /// of some box (so no image loses all its objects), or nil after `cropTrials` misses.
    func cropRect(_ f: Frame, minIoU: Float, rng: inout AugmentRNG) -> (x: Float, y: Float, w: Float, h: Float)? {
        let o = options
        for _ in 0..<AugmentOptions.cropTrials {
            let w = rng.uniform(o.cropMinScale * f.width, f.width), h = rng.uniform(o.cropMinScale * f.height, f.height)
            let aspect = (h / f.height) / (w / f.width)
            guard aspect >= 1 / o.cropMaxAspect, aspect <= o.cropMaxAspect else { continue }
            let x = rng.uniform(0, f.width - w), y = rng.uniform(0, f.height - h)
            var best: Float = 0, holdsCentre = false
            for b in f.boxes {
                let iw = max(0, min(b.xmax, x + w) - max(b.xmin, x)), ih = max(0, min(b.ymax, y + h) - max(b.ymin, y))
                let inter = iw * ih, union = (b.xmax - b.xmin) * (b.ymax - b.ymin) + w * h - inter
                best = max(best, union > 0 ? inter / union : 0)
                let cx = (b.xmin + b.xmax) / 2, cy = (b.ymin + b.ymax) / 2
                if cx >= x, cx < x + w, cy >= y, cy < y + h { holdsCentre = true }
            }
            if holdsCentre && best >= minIoU { return (x, y, w, h) }
        }
        return nil
    }

    /// Photometric distortion of one image in place (3 x plane floats), as ssd.pytorch's
    /// PhotometricDistort: brightness, then contrast either before or after saturation and hue.
    func distort(_ p: UnsafeMutablePointer<Float>, plane: Int, rng: inout AugmentRNG) {
        let o = options
        if rng.chance(o.photometricProbability) { Photometric.brightness(p, count: 3 * plane, delta: rng.uniform(-o.brightness, o.brightness)) }
        let contrastFirst = rng.chance(0.5)
        let contrast = rng.chance(o.photometricProbability) ? rng.uniform(1 - o.contrast, 1 + o.contrast) : nil
        if contrastFirst, let contrast { Photometric.contrast(p, count: 3 * plane, factor: contrast) }
        let s = rng.chance(o.photometricProbability) ? rng.uniform(1 - o.saturation, 1 + o.saturation) : 1
        let h = rng.chance(o.photometricProbability) ? rng.uniform(-o.hue, o.hue) : 0
        if s != 1 || h != 0 { Photometric.hsv(p, plane: plane, saturation: s, hue: h) }
        if !contrastFirst, let contrast { Photometric.contrast(p, count: 3 * plane, factor: contrast) }
    }

    /// The augmented batch of `indices` in `epoch`: images at `size` (the model's input;
    /// nil: the data set's), labels as `DetectionDataSet.batch` gives them. Each image
    /// depends only on (seed, epoch, index).
    public func batch(_ data: DetectionDataSet, indices: [Int], epoch: Int, boxesPerImage g: Int,
                      size: (height: Int, width: Int)? = nil) throws -> (x: [Float], y: [Float]) {
        let (plain, _) = try data.batch(indices: indices, boxesPerImage: g)
        let (oh, ow) = size ?? (data.height, data.width)
        return transformBatch(plain, data: data, indices: indices, boxesPerImage: g, size: (oh, ow)) { i, plane, pixels in
            var rng = AugmentRNG(seed: seed, epoch: epoch, index: i)
            if options.photometricProbability > 0 { distort(pixels, plane: plane, rng: &rng) }
            return frame(width: data.width, height: data.height, boxes: data.boxes[i], outWidth: ow, outHeight: oh, rng: &rng)
        }
    }
}

/// The fixed transforms of `ssdc run --eval --eval-transform`, to measure how a model copes
/// with poses and placements its training set lacks.
public enum ImageTransform: String, CaseIterable, Sendable {
    /// Mirrored left to right.
    case mirror
    /// Moved right and down by a quarter of the width and height (mean colour fills the gap).
    case shift
    /// Scaled down 2x, centred on a canvas of the original size filled with the mean colour.
    case shrink
    /// Brightness halved.
    case dark

    /// The frame of this transform for a `width` x `height` image, resized to `size`.
    public func frame(width: Int, height: Int, boxes: [DetectionDataSet.Box], size: (height: Int, width: Int)? = nil) -> Frame {
        var f = Frame(width: width, height: height, boxes: boxes)
        let w = Float(width), h = Float(height)
        switch self {
        case .mirror: f.flip()
        case .shift: f.crop(x: -(w / 4).rounded(.down), y: -(h / 4).rounded(.down), width: w, height: h)
        case .shrink: f.zoomOut(canvasWidth: 2 * w, canvasHeight: 2 * h, left: w / 2, top: h / 2)
        case .dark: break
        }
        f.resize(width: size?.width ?? width, height: size?.height ?? height)
        return f
    }

    /// The objects of image `index` this transform cuts off at their centre, with the part
    /// still in the picture, as fractions of it (the labels' units): what evaluation ignores.
    public func cutBoxes(_ data: DetectionDataSet, index: Int) -> [DetectionDataSet.Box] {
        let f = frame(width: data.width, height: data.height, boxes: data.boxes[index])
        return f.cut.map { .init(label: $0.label, xmin: $0.xmin / f.width, ymin: $0.ymin / f.height, xmax: $0.xmax / f.width, ymax: $0.ymax / f.height) }
    }

    /// The batch of `indices` with this transform applied to images and labels, at `size`
    /// (nil: the data set's).
    public func batch(_ data: DetectionDataSet, indices: [Int], boxesPerImage g: Int,
                      size: (height: Int, width: Int)? = nil) throws -> (x: [Float], y: [Float]) {
        let (plain, _) = try data.batch(indices: indices, boxesPerImage: g)
        let out = size ?? (data.height, data.width)
        return transformBatch(plain, data: data, indices: indices, boxesPerImage: g, size: out) { i, plane, pixels in
            if self == .dark { for k in 0..<3 * plane { pixels[k] *= 0.5 } }
            return frame(width: data.width, height: data.height, boxes: data.boxes[i], size: out)
        }
    }
}

extension DetectionDataSet {
    /// The batch of `indices` as `batch(indices:boxesPerImage:)` gives it, with the images
    /// resized (bilinear) to `size`, the model's input; the data set's own size returns the
    /// plain batch unchanged. Labels are fractions of the image, so they stay as they are.
    public func batch(indices: [Int], boxesPerImage g: Int, size: (height: Int, width: Int)) throws -> (x: [Float], y: [Float]) {
        let plain = try batch(indices: indices, boxesPerImage: g)
        guard size != (height, width) else { return plain }
        let resized = transformBatch(plain.x, data: self, indices: indices, boxesPerImage: g, size: size) { i, _, _ in
            var f = Frame(width: width, height: height, boxes: boxes[i])
            f.resize(width: size.width, height: size.height)
            return f
        }
        return (resized.x, plain.y)
    }
}

/// Applies `prepare` (which may change the pixels of image `i` in place and returns its
/// frame) and renders each image of a batch, in parallel; labels as `DetectionDataSet.labels`.
func transformBatch(_ plain: [Float], data: DetectionDataSet, indices: [Int], boxesPerImage g: Int,
                    size out: (height: Int, width: Int),
                    prepare: @Sendable (Int, Int, UnsafeMutablePointer<Float>) -> Frame) -> (x: [Float], y: [Float]) {
    let plane = data.width * data.height, size = 3 * plane, outSize = 3 * out.height * out.width
    var x = [Float](repeating: 0, count: indices.count * outSize)
    var y = [Float](repeating: 0, count: indices.count * g * 5)
    let frames = UnsafeMutablePointer<Frame?>.allocate(capacity: indices.count)
    frames.initialize(repeating: nil, count: indices.count)
    defer { frames.deinitialize(count: indices.count); frames.deallocate() }
    let shared = DataSetPointer(frames)
    plain.withUnsafeBufferPointer { src in
        x.withUnsafeMutableBufferPointer { out in
            let source = DataSetPointer(UnsafeMutablePointer(mutating: src.baseAddress!)), dest = DataSetPointer(out.baseAddress!)
            DispatchQueue.concurrentPerform(iterations: indices.count) { n in
                let scratch = UnsafeMutablePointer<Float>.allocate(capacity: size)
                defer { scratch.deallocate() }
                scratch.update(from: source.pointer + n * size, count: size)
                let f = prepare(indices[n], plane, scratch)
                f.render(source: scratch, sourceWidth: data.width, sourceHeight: data.height, into: dest.pointer + n * outSize)
                shared.pointer[n] = f
            }
        }
    }
    let w = Float(out.width), h = Float(out.height)
    for n in 0..<indices.count {
        let boxes = frames[n]!.boxes
        for j in 0..<g {
            let o = (n * g + j) * 5
            guard j < boxes.count else { y[o] = -1; continue }
            let b = boxes[j]
            y[o] = Float(b.label); y[o + 1] = b.xmin / w; y[o + 2] = b.ymin / h; y[o + 3] = b.xmax / w; y[o + 4] = b.ymax / h
        }
    }
    return (x, y)
}

extension AugmentOptions {
    /// One line for settings differences and the training banner.
    public var summary: String {
        "ssd (photometric p \(photometricProbability): brightness \(brightness), contrast \(contrast), saturation \(saturation), hue \(hue); "
            + "zoom-out p \(zoomOutProbability) up to \(zoomOutMax)x; crop \(AugmentOptions.describeCropChoices(cropMinIoUs)), "
            + "min scale \(cropMinScale), max aspect \(cropMaxAspect); flip p \(flipProbability))"
    }
}
