import Foundation
import XCTest
@testable import SSDIO

final class DrawingTests: XCTestCase {
    private let background = RGBImage.Color(10, 20, 30)

    /// Set of (x, y) pixels whose colour is `color`.
    private func pixels(of image: RGBImage, equalTo color: RGBImage.Color) -> Set<[Int]> {
        var result = Set<[Int]>()
        for y in 0 ..< image.height { for x in 0 ..< image.width where image[x, y] == color { result.insert([x, y]) } }
        return result
    }

    func testRectangleOutlineInside() {
        var image = RGBImage(width: 20, height: 15, fill: background)
        image.drawRectangle(x0: 2, y0: 3, x1: 10, y1: 8, color: .red)
        let red = pixels(of: image, equalTo: .red)
        var expected = Set<[Int]>()
        for x in 2 ... 10 { expected.insert([x, 3]); expected.insert([x, 8]) }
        for y in 3 ... 8 { expected.insert([2, y]); expected.insert([10, y]) }
        XCTAssertEqual(red, expected)
        XCTAssertEqual(image[5, 5], background) // interior untouched
    }

    func testThickRectangleGrowsInwardAndCornersMayBeSwapped() {
        var image = RGBImage(width: 20, height: 20, fill: background)
        image.drawRectangle(x0: 12, y0: 14, x1: 3, y1: 4, color: .green, thickness: 3)
        let green = pixels(of: image, equalTo: .green)
        // Nothing outside the box [3, 12] x [4, 14].
        XCTAssertTrue(green.allSatisfy { (3 ... 12).contains($0[0]) && (4 ... 14).contains($0[1]) })
        // Three pixels of border on each side, interior free.
        for d in 0 ..< 3 {
            XCTAssertTrue(green.contains([3 + d, 9]))
            XCTAssertTrue(green.contains([12 - d, 9]))
            XCTAssertTrue(green.contains([7, 4 + d]))
            XCTAssertTrue(green.contains([7, 14 - d]))
        }
        XCTAssertFalse(green.contains([6, 9]))
        XCTAssertFalse(green.contains([7, 7]))
        // Thickness larger than the box fills it.
        var small = RGBImage(width: 5, height: 5, fill: background)
        small.drawRectangle(x0: 1, y0: 1, x1: 3, y1: 3, color: .blue, thickness: 10)
        XCTAssertEqual(pixels(of: small, equalTo: .blue).count, 9)
    }

    func testDrawingIsClippedToTheImage() {
        var image = RGBImage(width: 10, height: 8, fill: background)
        // Partly outside on every side, far outside, and huge values.
        image.drawRectangle(x0: -5, y0: -5, x1: 4, y1: 3, color: .red, thickness: 2)
        image.drawRectangle(x0: 7, y0: 6, x1: 100, y1: 100, color: .red)
        image.drawRectangle(x0: 50, y0: 50, x1: 60, y1: 60, color: .blue)
        image.drawRectangle(x0: -1_000_000, y0: -1_000_000, x1: 1_000_000, y1: 1_000_000, color: .blue)
        image.fillRectangle(x0: -3, y0: 2, x1: -1, y1: 4, color: .blue)
        image.drawText("OFF EDGE 0.97", x: 6, y: 5, color: .white, scale: 3)
        image.drawText("LEFT", x: -20, y: 6, color: .white, scale: 2)
        XCTAssertEqual(image.pixels.count, 10 * 8 * 3)
        // First box: its left/top edges are off-image; the right edge (x 3...4)
        // and bottom edge (y 2...3) are visible, the interior is untouched.
        XCTAssertEqual(image[4, 3], .red)
        XCTAssertEqual(image[3, 0], .red)
        XCTAssertEqual(image[0, 2], .red)
        XCTAssertEqual(image[2, 1], background)
        XCTAssertEqual(image[5, 1], background)
        // The huge rectangle lies outside the image: nothing of it is drawn.
        XCTAssertFalse(pixels(of: image, equalTo: .blue).contains([0, 4]))
        // Drawing on an empty image is a no-op rather than a crash.
        var empty = RGBImage(width: 0, height: 0)
        empty.drawRectangle(x0: 0, y0: 0, x1: 5, y1: 5, color: .red)
        empty.drawText("1", x: 0, y: 0)
        XCTAssertEqual(empty.pixels, [])
    }

    func testTextBoxAndGlyphs() {
        var image = RGBImage(width: 60, height: 30, fill: background)
        let size = RGBImage.textSize("0.97", scale: 2)
        // 4 glyphs of 5 columns, 1 column between, 1 unit margin around.
        XCTAssertEqual(size.width, (4 * 6 - 1 + 2) * 2)
        XCTAssertEqual(size.height, (7 + 2) * 2)
        image.drawText("0.97", x: 3, y: 4, color: .yellow, scale: 2, background: .black)
        let inked = pixels(of: image, equalTo: .yellow)
        let box = pixels(of: image, equalTo: .black)
        XCTAssertFalse(inked.isEmpty)
        // Everything drawn lies in the label box; the margin row/column is background only.
        let all = inked.union(box)
        XCTAssertEqual(all.count, size.width * size.height)
        XCTAssertTrue(all.allSatisfy { (3 ..< 3 + size.width).contains($0[0]) && (4 ..< 4 + size.height).contains($0[1]) })
        XCTAssertTrue((3 ..< 3 + size.width).allSatisfy { box.contains([$0, 4]) && box.contains([$0, 5]) })
        // Ink count equals the font's bits times scale^2.
        let bits = "0.97".map { BitmapFont.glyph(for: $0).reduce(0) { $0 + $1.nonzeroBitCount } }.reduce(0, +)
        XCTAssertEqual(inked.count, bits * 4)

        // Without a background only ink is drawn.
        var plain = RGBImage(width: 20, height: 10, fill: background)
        plain.drawText("1", x: 0, y: 0, color: .white, background: nil)
        XCTAssertEqual(pixels(of: plain, equalTo: .white).count, BitmapFont.glyph(for: "1").reduce(0) { $0 + $1.nonzeroBitCount })
        XCTAssertEqual(pixels(of: plain, equalTo: background).count + pixels(of: plain, equalTo: .white).count, 200)
    }

    func testFontCoverage() {
        let required = Array("0123456789.- :ABCDEFGHIJKLMNOPQRSTUVWXYZ")
        for c in required { XCTAssertNotNil(BitmapFont.glyphs[c], "missing glyph '\(c)'") }
        for c in required where c != " " {
            XCTAssertGreaterThan(BitmapFont.glyph(for: c).reduce(0) { $0 + $1.nonzeroBitCount }, 0, "'\(c)' has no ink")
        }
        // Distinct glyphs for distinct characters.
        let shapes = Dictionary(grouping: required, by: { BitmapFont.glyph(for: $0) })
        XCTAssertEqual(shapes.count, required.count, "some glyphs look identical")
        // Lower case maps to upper case; unknown characters to '?'.
        XCTAssertEqual(BitmapFont.glyph(for: "b"), BitmapFont.glyph(for: "B"))
        XCTAssertEqual(BitmapFont.glyph(for: "~"), BitmapFont.glyph(for: "?"))
        XCTAssertEqual(BitmapFont.glyph(for: "é"), BitmapFont.glyph(for: "?"))
        XCTAssertTrue(BitmapFont.glyphs.values.allSatisfy { $0.count == BitmapFont.glyphHeight && $0.allSatisfy { $0 < 32 } })
    }

    func testLabeledBoxPlacement() {
        // Room above: the tag sits right above the box's top-left corner.
        var image = RGBImage(width: 120, height: 80, fill: background)
        image.drawLabeledBox(x0: 20, y0: 40, x1: 70, y1: 70, label: "banana 0.97", color: .cyan)
        let size = RGBImage.textSize("banana 0.97")
        XCTAssertEqual(image[20, 40 - size.height], .cyan)           // tag background, top-left
        XCTAssertEqual(image[20, 39], .cyan)
        XCTAssertEqual(image[19, 39], background)
        XCTAssertFalse(pixels(of: image, equalTo: .black).isEmpty)    // text contrasts with cyan
        XCTAssertEqual(RGBImage.Color.cyan.contrasting, .black)
        XCTAssertEqual(RGBImage.Color.blue.contrasting, .white)

        // Box touching the top: tag goes inside; box at the right edge: tag shifts left.
        var edge = RGBImage(width: 60, height: 40, fill: background)
        edge.drawLabeledBox(x0: 50, y0: 0, x1: 59, y1: 30, label: "0.50", color: .red, textColor: .white)
        let tag = RGBImage.textSize("0.50")
        XCTAssertEqual(edge[60 - tag.width, 0], .red)
        XCTAssertEqual(edge[60 - tag.width - 1, 0], background)
        XCTAssertFalse(pixels(of: edge, equalTo: .white).isEmpty)
    }

    /// Writes a demo image to the temporary directory (handy to eyeball the font).
    func testDemoImageRenders() throws {
        var image = RGBImage(width: 256, height: 128, fill: .init(40, 60, 40))
        image.drawLabeledBox(x0: 30, y0: 30, x1: 150, y1: 110, label: "banana 0.97", color: .yellow, scale: 2)
        image.drawText("0123456789 .-:%()/+=_,!?", x: 2, y: 2, color: .white, scale: 1)
        image.drawText("abcdefghijklmnopqrstuvwxyz", x: 2, y: 116, color: .white)
        let dir = try TestSupport.makeTempDirectory(self)
        try image.savePNG(to: dir + "/demo.png")
        XCTAssertEqual(try RGBImage.load(dir + "/demo.png"), image)
        if let keep = ProcessInfo.processInfo.environment["SSDIO_DEMO_PNG"] { try image.savePNG(to: keep) }
    }
}
