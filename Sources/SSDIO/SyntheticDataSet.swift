// A small synthetic stand-in for the banana-detection data set, for tests and
// for machines without the real one. Same layout and label format:
//
//   ROOT/bananas_train/images/K.png, ROOT/bananas_train/label.csv
//   ROOT/bananas_val/images/K.png,   ROOT/bananas_val/label.csv
//
// Each image has a varied background (gradients, waves, noise), a few
// distractor rectangles and ellipses in non-yellow colours, and exactly one
// "banana": a yellow crescent with a darker outline and a brown stem at one
// tip, 20-60 px across (at size 256), class 0, labelled with its tight
// bounding box in pixels (xmax/ymax exclusive: one past the last pixel).
//
// Every image depends only on (seed, split, index), so generation runs in
// parallel and produces the same bytes on every run.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

public enum SyntheticBananas {
    /// A generated image and its one box, in pixels (xmax, ymax exclusive).
    public struct Sample: Sendable {
        public var image: RGBImage
        public var xmin: Int
        public var ymin: Int
        public var xmax: Int
        public var ymax: Int
    }

    /// Writes a synthetic banana-detection data set into `root` (created if
    /// needed; existing files of the same names are overwritten).
    public static func generate(into root: String, trainCount: Int = 200, valCount: Int = 50,
                                size: Int = 256, seed: UInt64 = 0) throws
    {
        precondition(trainCount >= 0 && valCount >= 0, "SyntheticBananas: negative image count")
        precondition(size >= 32, "SyntheticBananas: size \(size) too small (need >= 32)")
        for (split, count) in [(DetectionDataSet.Split.train, trainCount), (.val, valCount)] {
            let directory = "\(root)/\(split.directoryName)"
            let images = "\(directory)/images"
            try SyntheticData.createDirectory(images)
            let boxes = UnsafeMutablePointer<(Int, Int, Int, Int)>.allocate(capacity: max(count, 1))
            defer { boxes.deallocate() }
            let shared = DataSetPointer(boxes)
            try DataSetParallel.forEach(count) { i in
                let sample = makeSample(index: i, split: split, size: size, seed: seed)
                let path = "\(images)/\(i).png"
                try SyntheticData.write(try sample.image.pngData(), to: path)
                shared.pointer[i] = (sample.xmin, sample.ymin, sample.xmax, sample.ymax)
            }
            // label.csv last, so a split with a label file has all its images.
            var csv = DetectionDataSet.csvHeader.joined(separator: ",") + "\n"
            for i in 0 ..< count {
                let b = boxes[i]
                csv += "\(i).png,0,\(b.0),\(b.1),\(b.2),\(b.3)\n"
            }
            try SyntheticData.write(Array(csv.utf8), to: "\(directory)/label.csv")
        }
    }

    /// Generates the default synthetic set at `root` unless
    /// `root/bananas_train/label.csv` already exists; returns `root`.
    /// The set is built in a hidden sibling directory and renamed into place,
    /// so an interrupted run never leaves a partial data set at `root`.
    @discardableResult
    public static func ensure(at root: String, trainCount: Int = 200, valCount: Int = 50,
                              size: Int = 256, seed: UInt64 = 0) throws -> String
    {
        try SyntheticData.ensure(at: root) {
            try generate(into: $0, trainCount: trainCount, valCount: valCount, size: size, seed: seed)
        }
    }

    // MARK: One image

    /// The image with index `index` of `split` (what `generate` writes as `index.png`).
    public static func makeSample(index: Int, split: DetectionDataSet.Split, size: Int = 256,
                                  seed: UInt64 = 0) -> Sample
    {
        precondition(size >= 32, "SyntheticBananas: size \(size) too small (need >= 32)")
        var rng = SyntheticRNG(seed: seed, split: split == .train ? 1 : 2, index: UInt64(index))
        var pixels = [UInt8](repeating: 0, count: size * size * 3)
        var box = (0, 0, 0, 0)
        pixels.withUnsafeMutableBufferPointer { buffer in
            let canvas = Canvas(p: buffer.baseAddress!, size: size)
            paintBackground(canvas, &rng)
            let distractors = 1 + rng.int(below: 5)
            for _ in 0 ..< distractors { paintDistractor(canvas, &rng) }
            box = paintBanana(canvas, &rng)
            addNoise(canvas, amplitude: 2 + rng.int(below: 9), &rng)
        }
        return Sample(image: RGBImage(width: size, height: size, pixels: pixels),
                      xmin: box.0, ymin: box.1, xmax: box.2, ymax: box.3)
    }

    struct Canvas {
        let p: UnsafeMutablePointer<UInt8>
        let size: Int

        @inline(__always) func set(_ x: Int, _ y: Int, _ c: RGB) {
            let i = (y * size + x) * 3
            p[i] = c.r
            p[i + 1] = c.g
            p[i + 2] = c.b
        }

        /// Fills x in x0...x1 of row y (clipped).
        func span(_ y: Int, _ x0: Int, _ x1: Int, _ c: RGB) {
            guard y >= 0, y < size else { return }
            let a = max(x0, 0), b = min(x1, size - 1)
            guard a <= b else { return }
            var i = (y * size + a) * 3
            for _ in a ... b {
                p[i] = c.r
                p[i + 1] = c.g
                p[i + 2] = c.b
                i += 3
            }
        }
    }

    struct RGB {
        var r: UInt8, g: UInt8, b: UInt8
        init(_ r: UInt8, _ g: UInt8, _ b: UInt8) {
            self.r = r
            self.g = g
            self.b = b
        }

        init(_ r: Float, _ g: Float, _ b: Float) {
            self.r = UInt8(max(0, min(255, r.rounded())))
            self.g = UInt8(max(0, min(255, g.rounded())))
            self.b = UInt8(max(0, min(255, b.rounded())))
        }
    }

    /// A random colour whose hue avoids yellow (30-80 degrees), so only the
    /// bananas are yellow.
    private static func nonYellowColor(_ rng: inout SyntheticRNG, saturation: ClosedRange<Float>,
                                       value: ClosedRange<Float>) -> (Float, Float, Float)
    {
        var hue = rng.float(0, 310)
        if hue >= 30 { hue += 50 }
        let s = rng.float(saturation.lowerBound, saturation.upperBound)
        let v = rng.float(value.lowerBound, value.upperBound) * 255
        let h = hue / 60
        let sector = Int(h) % 6
        let f = h - Float(Int(h))
        let p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f))
        switch sector {
        case 0: return (v, t, p)
        case 1: return (q, v, p)
        case 2: return (p, v, t)
        case 3: return (p, q, v)
        case 4: return (t, p, v)
        default: return (v, p, q)
        }
    }

    /// A gradient, wave or radial blend of two non-yellow colours of `saturation`.
    static func paintBackground(_ canvas: Canvas, _ rng: inout SyntheticRNG, saturation: ClosedRange<Float> = 0.1 ... 0.7) {
        let n = canvas.size
        let c0 = nonYellowColor(&rng, saturation: saturation, value: 0.2 ... 0.95)
        let c1 = nonYellowColor(&rng, saturation: saturation, value: 0.2 ... 0.95)
        let d = (c1.0 - c0.0, c1.1 - c0.1, c1.2 - c0.2)
        let kind = rng.int(below: 3)
        // Per row / per column terms; the blend weight is t = rowTerm[y] + colTerm[x]
        // (linear gradient or sum of two waves), or a radial distance.
        var rowTerm = [Float](repeating: 0, count: n)
        var colTerm = [Float](repeating: 0, count: n)
        let scale = 1 / Float(n)
        switch kind {
        case 0: // linear gradient in a random direction
            let angle = rng.float(0, 2 * Float.pi)
            let ca = cos(angle), sa = sin(angle)
            for i in 0 ..< n {
                let u = (Float(i) - Float(n) / 2) * scale * 0.7071
                colTerm[i] = 0.5 + ca * u
                rowTerm[i] = sa * u
            }
        case 1: // soft waves
            let fx = rng.float(1, 6) * 2 * Float.pi * scale, px = rng.float(0, 6.3)
            let fy = rng.float(1, 6) * 2 * Float.pi * scale, py = rng.float(0, 6.3)
            for i in 0 ..< n {
                colTerm[i] = 0.5 + 0.25 * sin(fx * Float(i) + px)
                rowTerm[i] = 0.25 * sin(fy * Float(i) + py)
            }
        default: // radial, from a random centre
            let cx = rng.float(0, Float(n)), cy = rng.float(0, Float(n))
            for i in 0 ..< n {
                let dx = (Float(i) - cx) * scale, dy = (Float(i) - cy) * scale
                colTerm[i] = dx * dx
                rowTerm[i] = dy * dy
            }
        }
        let radial = kind == 2
        rowTerm.withUnsafeBufferPointer { rows in
            colTerm.withUnsafeBufferPointer { cols in
                var i = 0
                for y in 0 ..< n {
                    let ry = rows[y]
                    for x in 0 ..< n {
                        var t = ry + cols[x]
                        if radial { t = min(1, t.squareRoot() * 1.2) }
                        t = max(0, min(1, t))
                        canvas.p[i] = UInt8(c0.0 + d.0 * t)
                        canvas.p[i + 1] = UInt8(c0.1 + d.1 * t)
                        canvas.p[i + 2] = UInt8(c0.2 + d.2 * t)
                        i += 3
                    }
                }
            }
        }
    }

    /// A filled rectangle or ellipse in a non-yellow colour, possibly
    /// partly outside the image.
    private static func paintDistractor(_ canvas: Canvas, _ rng: inout SyntheticRNG) {
        let n = canvas.size
        let c = nonYellowColor(&rng, saturation: 0.3 ... 1.0, value: 0.15 ... 1.0)
        let color = RGB(c.0, c.1, c.2)
        let w = 6 + rng.int(below: max(n / 3, 1)), h = 6 + rng.int(below: max(n / 3, 1))
        let x0 = rng.int(below: n + w) - w / 2, y0 = rng.int(below: n + h) - h / 2
        if rng.int(below: 2) == 0 {
            for y in y0 ..< y0 + h { canvas.span(y, x0, x0 + w - 1, color) }
        } else {
            let a = Float(w) / 2, b = Float(h) / 2
            let cx = Float(x0) + a, cy = Float(y0) + b
            for y in y0 ..< y0 + h {
                let v = (Float(y) + 0.5 - cy) / b
                let half = a * max(0, 1 - v * v).squareRoot()
                canvas.span(y, Int((cx - half).rounded()), Int((cx + half).rounded()) - 1, color)
            }
        }
    }

    /// Paints the banana and returns its tight box (xmin, ymin, xmax+1, ymax+1).
    private static func paintBanana(_ canvas: Canvas, _ rng: inout SyntheticRNG) -> (Int, Int, Int, Int) {
        let n = canvas.size
        let unit = Float(n) / 256
        // Crescent = outer disc (radius r, centre 0) minus inner disc (radius
        // r2, centre (0, -d)) in the banana's own frame, then rotated.
        let r = max(rng.float(10, 30) * unit, 6)
        let d = r * rng.float(0.3, 0.5)
        let r2 = r * rng.float(0.88, 1.0)
        let tipV = (r2 * r2 - r * r - d * d) / (2 * d)
        let tipU = max(0, r * r - tipV * tipV).squareRoot()
        let stemR = max(1.5, 0.14 * r)
        let stemSide: Float = rng.int(below: 2) == 0 ? -1 : 1
        let stemU = stemSide * (tipU + 0.6 * stemR), stemV = tipV - 0.3 * stemR
        let angle = rng.float(0, 2 * Float.pi)
        let ca = cos(angle), sa = sin(angle)

        let extent = Int((r + 2 * stemR).rounded(.up)) + 2
        let lo = extent + 1, hi = n - extent - 2
        let cx = Float(lo + rng.int(below: max(hi - lo, 1))), cy = Float(lo + rng.int(below: max(hi - lo, 1)))

        // Mask over the window: 0 outside, 1 body, 2 stem.
        let side = 2 * extent + 1
        var mask = [UInt8](repeating: 0, count: side * side)
        let ox = Int(cx) - extent, oy = Int(cy) - extent
        var minX = Int.max, minY = Int.max, maxX = Int.min, maxY = Int.min
        mask.withUnsafeMutableBufferPointer { m in
            for j in 0 ..< side {
                let dy = Float(oy + j) + 0.5 - cy
                for i in 0 ..< side {
                    let dx = Float(ox + i) + 0.5 - cx
                    let u = dx * ca + dy * sa, v = -dx * sa + dy * ca
                    var value: UInt8 = 0
                    if u * u + v * v <= r * r && u * u + (v + d) * (v + d) > r2 * r2 {
                        value = 1
                    }
                    let su = u - stemU, sv = v - stemV
                    if su * su + sv * sv <= stemR * stemR { value = 2 }
                    if value != 0 {
                        m[j * side + i] = value
                        minX = min(minX, ox + i)
                        maxX = max(maxX, ox + i)
                        minY = min(minY, oy + j)
                        maxY = max(maxY, oy + j)
                    }
                }
            }
        }

        // Colours: a yellow body (slightly varied, darker towards the tips),
        // a darker brownish outline, a brown stem.
        let body = (rng.float(220, 255), rng.float(180, 225), rng.float(15, 75))
        let outline = RGB(body.0 * 0.55, body.1 * 0.42, body.2 * 0.3)
        let stem = RGB(rng.float(70, 110), rng.float(45, 70), rng.float(10, 30))
        mask.withUnsafeBufferPointer { m in
            for j in 0 ..< side {
                for i in 0 ..< side {
                    let value = m[j * side + i]
                    if value == 0 { continue }
                    let x = ox + i, y = oy + j
                    if value == 2 {
                        canvas.set(x, y, stem)
                        continue
                    }
                    let edge = i == 0 || j == 0 || i == side - 1 || j == side - 1
                        || m[j * side + i - 1] == 0 || m[j * side + i + 1] == 0
                        || m[(j - 1) * side + i] == 0 || m[(j + 1) * side + i] == 0
                    if edge {
                        canvas.set(x, y, outline)
                    } else {
                        let dx = Float(x) + 0.5 - cx, dy = Float(y) + 0.5 - cy
                        let u = dx * ca + dy * sa
                        let shade = 1 - 0.22 * min(1, abs(u) / r)
                        canvas.set(x, y, RGB(body.0 * shade, body.1 * shade, body.2 * shade))
                    }
                }
            }
        }
        return (minX, minY, maxX + 1, maxY + 1)
    }

    /// Adds uniform noise in -amplitude...amplitude to every channel.
    static func addNoise(_ canvas: Canvas, amplitude: Int, _ rng: inout SyntheticRNG) {
        let total = canvas.size * canvas.size * 3
        let span = UInt64(2 * amplitude + 1)
        var i = 0
        while i < total {
            var bits = rng.next()
            for _ in 0 ..< 8 where i < total {
                // (byte * span) >> 8 is uniform enough in 0..<span for noise.
                let offset = Int(((bits & 0xFF) * span) >> 8) - amplitude
                bits >>= 8
                let v = Int(canvas.p[i]) + offset
                canvas.p[i] = UInt8(v < 0 ? 0 : (v > 255 ? 255 : v))
                i += 1
            }
        }
    }
}

/// What the generated data sets share: writing files and putting a set in place.
enum SyntheticData {
    /// Writes `bytes` to `path`, with an error naming the file.
    static func write(_ bytes: [UInt8], to path: String) throws {
        do {
            try Data(bytes).write(to: URL(fileURLWithPath: path))
        } catch {
            throw DetectionDataSetError(path: path, "cannot write: \(error.localizedDescription)")
        }
    }

    /// Creates `path` and its parents, with an error naming it.
    static func createDirectory(_ path: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw DetectionDataSetError(path: path, "cannot create directory: \(error.localizedDescription)")
        }
    }

    /// Runs `generate` on a hidden sibling directory of `root` and renames the result into
    /// place, unless `root/bananas_train/label.csv` already exists; returns `root`.
    static func ensure(at root: String, generate: (String) throws -> Void) throws -> String {
        let fm = FileManager.default
        var trimmed = root
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed.removeLast() }
        let marker = "\(trimmed)/bananas_train/label.csv"
        if fm.fileExists(atPath: marker) { return root }

        let parent = (trimmed as NSString).deletingLastPathComponent
        let parentDir = parent.isEmpty ? "." : parent
        let base = (trimmed as NSString).lastPathComponent
        do {
            try fm.createDirectory(atPath: parentDir, withIntermediateDirectories: true)
        } catch {
            throw DetectionDataSetError(path: parentDir, "cannot create directory: \(error.localizedDescription)")
        }
        let temp = "\(parentDir)/.\(base).partial-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        defer { try? fm.removeItem(atPath: temp) }
        try generate(temp)

        var isDirectory: ObjCBool = false
        if !fm.fileExists(atPath: trimmed, isDirectory: &isDirectory) {
            if rename(temp, trimmed) == 0 { return root }
            if fm.fileExists(atPath: marker) { return root } // another process won the race
            throw DetectionDataSetError(path: trimmed, "cannot move the generated data set into place: "
                + String(cString: strerror(errno)))
        }
        guard isDirectory.boolValue else {
            throw DetectionDataSetError(path: trimmed, "exists and is not a directory")
        }
        // An existing empty directory is replaced whole.
        if (try? fm.contentsOfDirectory(atPath: trimmed))?.isEmpty == true, rmdir(trimmed) == 0 {
            if rename(temp, trimmed) == 0 { return root }
            if fm.fileExists(atPath: marker) { return root }
            throw DetectionDataSetError(path: trimmed, "cannot move the generated data set into place: "
                + String(cString: strerror(errno)))
        }
        if fm.fileExists(atPath: marker) { return root }
        // A non-empty directory: add the two splits, val first, so that
        // bananas_train/label.csv (the marker) appears only when all is there.
        let splits: [DetectionDataSet.Split] = [.val, .train]
        for split in splits where fm.fileExists(atPath: "\(trimmed)/\(split.directoryName)") {
            throw DetectionDataSetError(
                path: "\(trimmed)/\(split.directoryName)",
                "exists but \(marker) does not; remove it or choose another directory for the synthetic data set")
        }
        for split in splits {
            let from = "\(temp)/\(split.directoryName)", to = "\(trimmed)/\(split.directoryName)"
            if rename(from, to) != 0 {
                throw DetectionDataSetError(path: to, "cannot move the generated split into place: "
                    + String(cString: strerror(errno)))
            }
        }
        return root
    }
}

/// SplitMix64 for the synthetic images, seeded from (seed, split, index).
struct SyntheticRNG {
    private var state: UInt64

    init(seed: UInt64, split: UInt64, index: UInt64) {
        state = SyntheticRNG.mix(seed ^ SyntheticRNG.mix(split &* 0x1000_0000_01B3 &+ index &+ 0x5851_F42D_4C95_7F2D))
    }

    static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return SyntheticRNG.mix(state)
    }

    /// 0..<bound (tiny modulo bias is irrelevant for image content).
    mutating func int(below bound: Int) -> Int {
        precondition(bound > 0)
        return Int(next() % UInt64(bound))
    }

    /// Uniform in [lo, hi).
    mutating func float(_ lo: Float, _ hi: Float) -> Float {
        lo + (hi - lo) * Float(next() >> 40) / Float(1 << 24)
    }
}
