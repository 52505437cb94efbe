// A generated multi-class detection data set (`--data builtin:shapes`), in the
// banana-detection layout with class names beside each label file:
//
//   ROOT/bananas_train/images/K.png, label.csv, classes.txt
//   ROOT/bananas_val/...
//
// Each image has a muted background (gradient, waves or radial) and 1 to 4
// objects of four classes that differ in shape and colour: a red disc, a blue
// square, a green triangle and a purple ring, 24-72 px across at size 256,
// squares and triangles turned by a random angle, each with a dark outline.
// Objects may overlap (at most IoU 0.3 and half of the smaller box), so some
// are partly hidden; a box is always the tight box of the whole shape (xmax,
// ymax exclusive). label.csv has one row per object, several per image.
//
// Every image depends only on (seed, split, index): generation runs in
// parallel and gives the same bytes on every run.

import Foundation

public enum SyntheticShapes {
    /// The classes, class 0 first (what classes.txt lists).
    public static let classNames = ["disc", "square", "triangle", "ring"]

    /// One object: its class and tight box in pixels (xmax, ymax exclusive).
    public struct Object: Sendable, Equatable {
        public var label: Int
        public var xmin: Int
        public var ymin: Int
        public var xmax: Int
        public var ymax: Int
    }

    /// A generated image and its objects, in drawing order.
    public struct Sample: Sendable {
        public var image: RGBImage
        public var objects: [Object]
        /// Per pixel (row-major): 1 + the index of the object drawn there last, 0 for
        /// background; which pixels each label stands for (the tests check boxes with it).
        var owners: [UInt8]
    }

    /// Writes the data set into `root` (created if needed; files of the same names are
    /// overwritten).
    public static func generate(into root: String, trainCount: Int = 400, valCount: Int = 100,
                                size: Int = 256, seed: UInt64 = 0) throws
    {
        precondition(trainCount >= 0 && valCount >= 0, "SyntheticShapes: negative image count")
        precondition(size >= 64, "SyntheticShapes: size \(size) too small (need >= 64)")
        for (split, count) in [(DetectionDataSet.Split.train, trainCount), (.val, valCount)] {
            let directory = "\(root)/\(split.directoryName)"
            try SyntheticData.createDirectory("\(directory)/images")
            let rows = UnsafeMutablePointer<String>.allocate(capacity: max(count, 1))
            rows.initialize(repeating: "", count: max(count, 1))
            defer {
                rows.deinitialize(count: max(count, 1))
                rows.deallocate()
            }
            let shared = DataSetPointer(rows)
            try DataSetParallel.forEach(count) { i in
                let sample = makeSample(index: i, split: split, size: size, seed: seed)
                try SyntheticData.write(try sample.image.pngData(), to: "\(directory)/images/\(i).png")
                shared.pointer[i] = sample.objects.map { "\(i).png,\($0.label),\($0.xmin),\($0.ymin),\($0.xmax),\($0.ymax)\n" }.joined()
            }
            try SyntheticData.write(Array(classNames.map { $0 + "\n" }.joined().utf8), to: "\(directory)/classes.txt")
            // label.csv last, so a split with a label file has all its images.
            let csv = DetectionDataSet.csvHeader.joined(separator: ",") + "\n" + (0 ..< count).map { rows[$0] }.joined()
            try SyntheticData.write(Array(csv.utf8), to: "\(directory)/label.csv")
        }
    }

    /// Generates the default set at `root` unless `root/bananas_train/label.csv` exists
    /// (built beside it and renamed into place, as SyntheticBananas.ensure); returns `root`.
    @discardableResult
    public static func ensure(at root: String, trainCount: Int = 400, valCount: Int = 100,
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
        precondition(size >= 64, "SyntheticShapes: size \(size) too small (need >= 64)")
        // Streams 3 and 4: different images from the bananas' for the same seed.
        var rng = SyntheticRNG(seed: seed, split: split == .train ? 3 : 4, index: UInt64(index))
        var pixels = [UInt8](repeating: 0, count: size * size * 3)
        var owners = [UInt8](repeating: 0, count: size * size)
        var objects: [Object] = []
        pixels.withUnsafeMutableBufferPointer { buffer in
            let canvas = SyntheticBananas.Canvas(p: buffer.baseAddress!, size: size)
            SyntheticBananas.paintBackground(canvas, &rng, saturation: 0.05 ... 0.25)
            let wanted = 1 + rng.int(below: 4)
            for _ in 0 ..< wanted {
                let shape = Shape.random(&rng, size: size)
                // A few tries to find a place that hides no more than the rule allows.
                for _ in 0 ..< 20 {
                    let placed = shape.placed(&rng, size: size)
                    guard let box = placed.box(size: size),
                          objects.allSatisfy({ acceptableOverlap(box, $0) }) else { continue }
                    owners.withUnsafeMutableBufferPointer { paint(placed, canvas, owner: UInt8(objects.count + 1), owners: $0.baseAddress!) }
                    objects.append(Object(label: placed.label, xmin: box.xmin, ymin: box.ymin, xmax: box.xmax, ymax: box.ymax))
                    break
                }
            }
            SyntheticBananas.addNoise(canvas, amplitude: 2 + rng.int(below: 7), &rng)
        }
        return Sample(image: RGBImage(width: size, height: size, pixels: pixels), objects: objects, owners: owners)
    }

    /// A new box may overlap an earlier one by IoU 0.3 and half of the smaller box at most,
    /// so that every object stays mostly visible.
    private static func acceptableOverlap(_ a: Object, _ b: Object) -> Bool {
        let iw = min(a.xmax, b.xmax) - max(a.xmin, b.xmin), ih = min(a.ymax, b.ymax) - max(a.ymin, b.ymin)
        guard iw > 0, ih > 0 else { return true }
        let inter = Double(iw * ih)
        let areaA = Double((a.xmax - a.xmin) * (a.ymax - a.ymin)), areaB = Double((b.xmax - b.xmin) * (b.ymax - b.ymin))
        return inter / (areaA + areaB - inter) <= 0.3 && inter <= 0.5 * min(areaA, areaB)
    }

    /// One object to draw: class, size, turn and colour; `placed` adds its centre.
    private struct Shape {
        var label: Int
        var radius: Float
        var color: (Float, Float, Float)
        /// Unit vectors from the centre: the square's axis, or the triangle's three corners.
        var directions: [(Float, Float)]
        var cx: Float = 0
        var cy: Float = 0

        /// The class colours (red, blue, green, purple), varied a little per object.
        static let baseColors: [(Float, Float, Float)] = [(220, 45, 40), (40, 85, 225), (45, 185, 65), (160, 60, 210)]

        static func random(_ rng: inout SyntheticRNG, size: Int) -> Shape {
            let label = rng.int(below: classNames.count)
            let unit = Float(size) / 256
            let radius = rng.float(12, 36) * unit
            let angle = rng.float(0, 2 * Float.pi)
            let base = baseColors[label]
            let shade = rng.float(0.85, 1.1)
            let directions = (0 ..< 3).map { k in
                let a = angle + Float(k) * 2 * Float.pi / 3
                return (cos(a), sin(a))
            }
            return Shape(label: label, radius: radius, color: (base.0 * shade, base.1 * shade, base.2 * shade),
                         directions: directions)
        }

        /// The shape at a random centre that keeps it inside the image.
        func placed(_ rng: inout SyntheticRNG, size: Int) -> Shape {
            var s = self
            let margin = radius + 2
            s.cx = rng.float(margin, Float(size) - margin)
            s.cy = rng.float(margin, Float(size) - margin)
            return s
        }

        /// Whether the pixel centre (x + 0.5, y + 0.5) is inside the shape.
        func contains(_ x: Int, _ y: Int) -> Bool {
            let dx = Float(x) + 0.5 - cx, dy = Float(y) + 0.5 - cy
            let r = radius
            switch label {
            case 0: // disc
                return dx * dx + dy * dy <= r * r
            case 1: // square of half side 0.8 r, turned
                let (c, s) = directions[0]
                let u = dx * c + dy * s, v = -dx * s + dy * c
                return abs(u) <= 0.8 * r && abs(v) <= 0.8 * r
            case 2: // equilateral triangle with corners on the circle of radius r, turned
                // The edge opposite each corner lies at distance r/2 from the centre.
                return directions.allSatisfy { -(dx * $0.0 + dy * $0.1) <= r / 2 }
            default: // ring
                let d2 = dx * dx + dy * dy
                return d2 <= r * r && d2 >= 0.3 * r * r
            }
        }

        /// The window that holds the shape (clipped to the image).
        func window(size: Int) -> (x0: Int, y0: Int, x1: Int, y1: Int) {
            let e = Int(radius.rounded(.up)) + 1
            return (max(Int(cx) - e, 0), max(Int(cy) - e, 0), min(Int(cx) + e, size - 1), min(Int(cy) + e, size - 1))
        }

        /// The tight box of the shape's pixels, nil if it covers none.
        func box(size: Int) -> Object? {
            let w = window(size: size)
            var minX = Int.max, minY = Int.max, maxX = Int.min, maxY = Int.min
            for y in w.y0 ... w.y1 {
                for x in w.x0 ... w.x1 where contains(x, y) {
                    minX = min(minX, x)
                    maxX = max(maxX, x)
                    minY = min(minY, y)
                    maxY = max(maxY, y)
                }
            }
            guard minX <= maxX else { return nil }
            return Object(label: label, xmin: minX, ymin: minY, xmax: maxX + 1, ymax: maxY + 1)
        }
    }

    /// Paints `shape`: its colour inside, a darker outline on its edge pixels; records `owner`.
    private static func paint(_ shape: Shape, _ canvas: SyntheticBananas.Canvas, owner: UInt8, owners: UnsafeMutablePointer<UInt8>) {
        let w = shape.window(size: canvas.size)
        let fill = SyntheticBananas.RGB(shape.color.0, shape.color.1, shape.color.2)
        let outline = SyntheticBananas.RGB(shape.color.0 * 0.4, shape.color.1 * 0.4, shape.color.2 * 0.4)
        for y in w.y0 ... w.y1 {
            for x in w.x0 ... w.x1 where shape.contains(x, y) {
                let edge = !shape.contains(x - 1, y) || !shape.contains(x + 1, y)
                    || !shape.contains(x, y - 1) || !shape.contains(x, y + 1)
                canvas.set(x, y, edge ? outline : fill)
                owners[y * canvas.size + x] = owner
            }
        }
    }
}
