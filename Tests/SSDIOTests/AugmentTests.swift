import Foundation
@testable import SSDIO
import XCTest

/// The SSD augmentation moves every box exactly as it moves the pixels, drops and clips boxes
/// as the SSD crop does, and draws all its randomness from (seed, epoch, image index).
final class AugmentTests: XCTestCase {
    typealias Box = DetectionDataSet.Box
    static let size = 64
    static let box = Box(label: 0, xmin: 16, ymin: 20, xmax: 40, ymax: 44)

    /// A grey 64x64 picture with a red rectangle covering exactly `box`, channel-major floats.
    static func picture() -> [Float] {
        var image = RGBImage(width: size, height: size, fill: .init(50, 50, 50))
        image.fillRectangle(x0: Int(box.xmin), y0: Int(box.ymin), x1: Int(box.xmax) - 1, y1: Int(box.ymax) - 1, color: .red)
        return image.toCHWFloats()
    }

    /// Renders `frame` from the picture and checks that the red pixels are exactly those
    /// inside the frame's (one) box, up to one pixel at its edges.
    func assertRectangleFollowsLabel(_ frame: Frame, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(frame.boxes.count, 1, what, file: file, line: line)
        guard let b = frame.boxes.first else { return }
        let w = Int(frame.width), h = Int(frame.height), plane = w * h
        var out = [Float](repeating: -1, count: 3 * plane)
        let source = Self.picture()
        source.withUnsafeBufferPointer { s in
            out.withUnsafeMutableBufferPointer { frame.render(source: s.baseAddress!, sourceWidth: Self.size, sourceHeight: Self.size, into: $0.baseAddress!) }
        }
        var wrong = 0
        for y in 0..<h {
            for x in 0..<w {
                let cx = Float(x) + 0.5, cy = Float(y) + 0.5
                let red = out[y * w + x] > 200 && out[plane + y * w + x] < 80
                let inside = cx > b.xmin + 1 && cx < b.xmax - 1 && cy > b.ymin + 1 && cy < b.ymax - 1
                let outside = cx < b.xmin - 1 || cx > b.xmax + 1 || cy < b.ymin - 1 || cy > b.ymax + 1
                if (inside && !red) || (outside && red) { wrong += 1 }
            }
        }
        XCTAssertEqual(wrong, 0, "\(what): \(wrong) pixels disagree with the label \(b)", file: file, line: line)
        XCTAssertTrue(out.allSatisfy { $0 >= 0 && $0 <= 255 }, "\(what): every pixel rendered", file: file, line: line)
    }

    func start() -> Frame { Frame(width: Self.size, height: Self.size, boxes: [Self.box]) }

    func testEachTransformMovesTheBoxWithThePixels() {
        var f = start()
        f.resize(width: Self.size, height: Self.size)
        assertRectangleFollowsLabel(f, "identity")

        f = start(); f.zoomOut(canvasWidth: 150, canvasHeight: 200, left: 30, top: 70); f.resize(width: 64, height: 64)
        assertRectangleFollowsLabel(f, "zoom-out")

        f = start(); f.crop(x: 10, y: 8, width: 40, height: 44); f.resize(width: 64, height: 64)
        assertRectangleFollowsLabel(f, "crop inside")

        f = start(); f.crop(x: 24, y: 30, width: 36, height: 30); f.resize(width: 64, height: 64)
        XCTAssertEqual(f.boxes.first.map { [$0.xmin, $0.ymin] }, [0, 0], "clipped at the crop's corner")
        assertRectangleFollowsLabel(f, "crop clipping the box")

        f = start(); f.flip(); f.resize(width: 64, height: 64)
        assertRectangleFollowsLabel(f, "flip")

        f = start(); f.resize(width: 48, height: 80)
        assertRectangleFollowsLabel(f, "resize")

        for t in ImageTransform.allCases {
            assertRectangleFollowsLabel(t.frame(width: Self.size, height: Self.size, boxes: [Self.box]), "eval transform \(t)")
        }
    }

    func testCompositionsMoveTheBoxWithThePixels() {
        var o = AugmentOptions()
        o.zoomOutProbability = 1
        o.flipProbability = 1
        o.cropMinIoUs = [0.3]
        let a = Augmenter(options: o, seed: 7)
        var cropped = 0
        for index in 0..<24 {
            var rng = AugmentRNG(seed: 7, epoch: 1, index: index)
            let f = a.frame(width: Self.size, height: Self.size, boxes: [Self.box], outWidth: 64, outHeight: 64, rng: &rng)
            assertRectangleFollowsLabel(f, "zoom-out, crop, flip, resize #\(index)")
            if f.mapX.scale < 4 { cropped += 1 }
        }
        XCTAssertGreaterThan(cropped, 0, "some crops were taken")
    }

    func testBoxesWhoseCentreLeavesTheCropAreDroppedOthersClipped() {
        var f = Frame(width: 100, height: 100, boxes: [
            Box(label: 0, xmin: 10, ymin: 10, xmax: 30, ymax: 30),   // centre (20, 20): outside
            Box(label: 1, xmin: 40, ymin: 30, xmax: 90, ymax: 60),   // centre (65, 45): inside, clipped
            Box(label: 2, xmin: 50, ymin: 50, xmax: 60, ymax: 60),   // inside, unchanged
        ])
        f.crop(x: 25, y: 25, width: 50, height: 50)
        XCTAssertEqual(f.boxes, [Box(label: 1, xmin: 15, ymin: 5, xmax: 50, ymax: 35), Box(label: 2, xmin: 25, ymin: 25, xmax: 35, ymax: 35)])
        // The shift transform drops a box pushed past the border, clips one that straddles it.
        let shifted = ImageTransform.shift.frame(width: 64, height: 64, boxes: [
            Box(label: 0, xmin: 50, ymin: 2, xmax: 62, ymax: 10), Box(label: 1, xmin: 30, ymin: 2, xmax: 50, ymax: 10)])
        XCTAssertEqual(shifted.boxes, [Box(label: 1, xmin: 46, ymin: 18, xmax: 64, ymax: 26)])
    }

    func testObjectsCutAtTheirCentreAreKeptApartWithTheirVisiblePart() {
        var f = Frame(width: 100, height: 100, boxes: [
            Box(label: 0, xmin: 10, ymin: 10, xmax: 30, ymax: 30),   // centre outside, part (25...30) inside
            Box(label: 1, xmin: 0, ymin: 0, xmax: 20, ymax: 20),     // wholly outside
            Box(label: 2, xmin: 50, ymin: 50, xmax: 60, ymax: 60),   // inside
        ])
        f.crop(x: 25, y: 25, width: 50, height: 50)
        XCTAssertEqual(f.boxes, [Box(label: 2, xmin: 25, ymin: 25, xmax: 35, ymax: 35)])
        XCTAssertEqual(f.cut, [Box(label: 0, xmin: 0, ymin: 0, xmax: 5, ymax: 5)], "the visible part; nothing of label 1")
        // Later steps move cut objects with the picture, and a second crop clips or drops them.
        f.flip()
        XCTAssertEqual(f.cut, [Box(label: 0, xmin: 45, ymin: 0, xmax: 50, ymax: 5)])
        f.zoomOut(canvasWidth: 100, canvasHeight: 100, left: 10, top: 20)
        XCTAssertEqual(f.cut, [Box(label: 0, xmin: 55, ymin: 20, xmax: 60, ymax: 25)])
        f.resize(width: 50, height: 50)
        XCTAssertEqual(f.cut, [Box(label: 0, xmin: 27.5, ymin: 10, xmax: 30, ymax: 12.5)])
        var again = f
        again.crop(x: 29, y: 0, width: 10, height: 50)
        XCTAssertEqual(again.cut, [Box(label: 0, xmin: 0, ymin: 10, xmax: 1, ymax: 12.5)])
        again.crop(x: 5, y: 0, width: 5, height: 50)
        XCTAssertEqual(again.cut, [], "no part left")
        // The shift transform: the box pushed past the border is cut, in the labels' units.
        let data = [Box(label: 0, xmin: 40, ymin: 2, xmax: 56, ymax: 10), Box(label: 1, xmin: 50, ymin: 2, xmax: 62, ymax: 10)]
        let shifted = ImageTransform.shift.frame(width: 64, height: 64, boxes: data)
        XCTAssertEqual(shifted.boxes, [])
        XCTAssertEqual(shifted.cut, [Box(label: 0, xmin: 56, ymin: 18, xmax: 64, ymax: 26)], "the centre at 64 is out; the other box is wholly out")
        XCTAssertEqual(ImageTransform.mirror.frame(width: 64, height: 64, boxes: data).cut, [])
    }

    func testRandomCropsMeetTheirIoUAndKeepAnObject() {
        var o = AugmentOptions()
        o.zoomOutProbability = 0
        o.flipProbability = 0
        let a = Augmenter(options: o, seed: 1)
        for index in 0..<50 {
            var rng = AugmentRNG(seed: 1, epoch: 0, index: index)
            let f = Frame(width: 64, height: 64, boxes: [Self.box])
            if let c = a.cropRect(f, minIoU: 0.5, rng: &rng) {
                let iw = min(Self.box.xmax, c.x + c.w) - max(Self.box.xmin, c.x), ih = min(Self.box.ymax, c.y + c.h) - max(Self.box.ymin, c.y)
                let inter = max(0, iw) * max(0, ih)
                XCTAssertGreaterThanOrEqual(inter / (24 * 24 + c.w * c.h - inter), 0.5)
                XCTAssertGreaterThanOrEqual(c.w, 0.3 * 64)
            }
            let g = a.frame(width: 64, height: 64, boxes: [Self.box], outWidth: 64, outHeight: 64, rng: &rng)
            XCTAssertEqual(g.boxes.count, 1, "the crop keeps an object")
        }
    }

    func testSameSeedSameBatchesAndPerImageRandomness() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ssdc-augment-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try SyntheticBananas.generate(into: dir, trainCount: 6, valCount: 2, size: 64, seed: 5)
        let data = try DetectionDataSet.load(root: dir, split: .train)
        let a = Augmenter(options: AugmentOptions(), seed: 11)
        let one = try a.batch(data, indices: [3, 1, 4], epoch: 2, boxesPerImage: 1)
        let two = try a.batch(data, indices: [3, 1, 4], epoch: 2, boxesPerImage: 1)
        XCTAssertEqual(one.x, two.x)
        XCTAssertEqual(one.y, two.y)
        // Image 1 comes out the same in another batch, at another position.
        let other = try a.batch(data, indices: [1, 5], epoch: 2, boxesPerImage: 1)
        let n = 3 * 64 * 64
        XCTAssertEqual(Array(other.x[0..<n]), Array(one.x[n..<2 * n]))
        XCTAssertEqual(Array(other.y[0..<5]), Array(one.y[5..<10]))
        XCTAssertNotEqual(try a.batch(data, indices: [3, 1, 4], epoch: 3, boxesPerImage: 1).x, one.x, "another epoch, other images")
        XCTAssertNotEqual(try Augmenter(options: AugmentOptions(), seed: 12).batch(data, indices: [3, 1, 4], epoch: 2, boxesPerImage: 1).x, one.x)
        XCTAssertNotEqual(one.x, try data.batch(indices: [3, 1, 4], boxesPerImage: 1).x, "augmented")
    }

    func testPhotometricKeepsPixelsInRangeAndDarkHalves() throws {
        var p: [Float] = [0, 128, 255, 10, 200, 30, 255, 0, 90]  // 3 pixels, channel-major
        let a = Augmenter(options: { var o = AugmentOptions(); o.photometricProbability = 1; return o }(), seed: 3)
        var rng = AugmentRNG(seed: 3, epoch: 0, index: 0)
        p.withUnsafeMutableBufferPointer { a.distort($0.baseAddress!, plane: 3, rng: &rng) }
        XCTAssertTrue(p.allSatisfy { $0 >= 0 && $0 <= 255 }, "\(p)")
        var grey: [Float] = [100, 100, 100]
        grey.withUnsafeMutableBufferPointer { Photometric.hsv($0.baseAddress!, plane: 1, saturation: 1.5, hue: 40) }
        XCTAssertEqual(grey, [100, 100, 100], "a grey pixel has no hue or saturation to change")
        var red: [Float] = [200, 0, 0]
        red.withUnsafeMutableBufferPointer { Photometric.hsv($0.baseAddress!, plane: 1, saturation: 1, hue: 120) }
        XCTAssertEqual(red, [0, 200, 0], "red turned by 120 degrees is green")
    }

    func testCropChoicesParse() {
        XCTAssertEqual(AugmentOptions.parseCropChoices("none,0.1, any"), [nil, 0.1, 0])
        XCTAssertNil(AugmentOptions.parseCropChoices("0.1,x"))
        XCTAssertEqual(AugmentOptions.describeCropChoices(AugmentOptions().cropMinIoUs), "none,0.1,0.3,0.5,0.7,0.9,any")
        var o = AugmentOptions()
        o.cropMinIoUs = [1.5]
        o.flipProbability = 2
        XCTAssertEqual(o.problems.count, 2, "\(o.problems)")
    }
}
