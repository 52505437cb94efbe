import Foundation
import XCTest
@testable import SSDIO

final class ImageIOTests: XCTestCase {
    /// Runs `body`, expecting an ImageIOError of `kind` whose message names `path`.
    private func assertError(_ kind: ImageIOError.Kind, path: String,
                             file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Void)
    {
        do {
            try body()
            XCTFail("expected ImageIOError.\(kind)", file: file, line: line)
        } catch let error as ImageIOError {
            XCTAssertEqual(error.kind, kind, error.description, file: file, line: line)
            XCTAssertTrue(error.description.contains(path), "message lacks file name: \(error)", file: file, line: line)
            XCTAssertEqual(error.localizedDescription, error.description, file: file, line: line)
        } catch {
            XCTFail("unexpected error \(error)", file: file, line: line)
        }
    }

    /// A deterministic, busy test image (so compression has real work to do).
    private func patternImage(width: Int, height: Int) -> RGBImage {
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        var state: UInt32 = 12345
        for i in pixels.indices {
            state = state &* 1_103_515_245 &+ 12345
            pixels[i] = UInt8(truncatingIfNeeded: (state >> 16) ^ UInt32(i / 3 % width))
        }
        return RGBImage(width: width, height: height, pixels: pixels)
    }

    // MARK: PNG

    func testPNGRoundTrip() throws {
        let dir = try TestSupport.makeTempDirectory(self)
        let image = patternImage(width: 37, height: 23)
        let path = dir + "/nested/dirs/out.png"
        try image.savePNG(to: path)
        XCTAssertEqual(try RGBImage.load(path), image)
        // Deterministic encoding; overwriting works and leaves no temp files.
        XCTAssertEqual(try TestSupport.readFile(path), try image.pngData())
        try image.savePNG(to: path)
        XCTAssertEqual(try TestSupport.directoryEntries(dir + "/nested/dirs"), ["out.png"])
        // 1x1 and a single row/column are valid too.
        for (w, h) in [(1, 1), (7, 1), (1, 5)] {
            let small = patternImage(width: w, height: h)
            XCTAssertEqual(try RGBImage.decode(try small.pngData()), small)
        }
    }

    /// Every PNG colour type / bit depth / interlace combination decodes to
    /// the expected 8-bit RGB (palette and gray expanded, alpha dropped,
    /// 16-bit reduced to the high byte).
    func testPNGVariantsDecodeToRGB() throws {
        for variant in TestVectors.pngVariants {
            let image = try RGBImage.decode(TestSupport.bytes(base64: variant.base64), source: variant.name)
            XCTAssertEqual(image.width, 5, variant.name)
            XCTAssertEqual(image.height, 3, variant.name)
            XCTAssertEqual(image.pixels, variant.rgb, variant.name)
        }
    }

    func testSavePNGErrors() throws {
        let dir = try TestSupport.makeTempDirectory(self)
        let empty = RGBImage(width: 0, height: 4)
        assertError(.invalidImage, path: dir + "/empty.png") { try empty.savePNG(to: dir + "/empty.png") }
        try TestSupport.writeFile([0], to: dir + "/file")
        let blocked = dir + "/file/sub/x.png"
        assertError(.writeFailed, path: blocked) { try RGBImage(width: 2, height: 2).savePNG(to: blocked) }
        XCTAssertEqual(try TestSupport.directoryEntries(dir), ["file"])
    }

    // MARK: JPEG

    private func assertSamples(_ image: RGBImage, _ samples: [(x: Int, y: Int, rgb: [UInt8])], tolerance: Int,
                               _ name: String, file: StaticString = #filePath, line: UInt = #line)
    {
        for s in samples {
            let c = image[s.x, s.y]
            let got = [c.r, c.g, c.b]
            let close = zip(got, s.rgb).allSatisfy { abs(Int($0) - Int($1)) <= tolerance }
            XCTAssertTrue(close, "\(name) (\(s.x), \(s.y)): got \(got), expected \(s.rgb)", file: file, line: line)
        }
    }

    /// Expected values come from Pillow; libjpeg versions may differ by a
    /// rounding step in the IDCT/upsampling, hence a small tolerance.
    func testJPEGVariants() throws {
        let cases: [(String, String, [(x: Int, y: Int, rgb: [UInt8])])] = [
            ("gray", TestVectors.jpegGray, TestVectors.jpegGraySamples),
            ("progressive", TestVectors.jpegProgressive, TestVectors.jpegProgressiveSamples),
            ("baseline444", TestVectors.jpegBaseline444, TestVectors.jpegBaseline444Samples),
        ]
        for (name, base64, samples) in cases {
            let image = try RGBImage.decode(TestSupport.bytes(base64: base64), source: name)
            XCTAssertEqual(image.width, 16, name)
            XCTAssertEqual(image.height, 16, name)
            assertSamples(image, samples, tolerance: 2, name)
        }
        // Gray is expanded by copying the value into all three channels.
        let gray = try RGBImage.decode(TestSupport.bytes(base64: TestVectors.jpegGray))
        for y in 0 ..< 16 { for x in 0 ..< 16 { let c = gray[x, y]; XCTAssertTrue(c.r == c.g && c.g == c.b) } }
    }

    func testCMYKJPEGIsReportedAsUnsupported() {
        assertError(.unsupported, path: "cmyk.jpg") {
            _ = try RGBImage.decode(TestSupport.bytes(base64: TestVectors.jpegCMYK), source: "cmyk.jpg")
        }
    }

    // MARK: Real data set images (when ../shared is there; the fixture twins below run everywhere)

    func testDecodeBananaPNG() throws {
        try assertPNG(TestSupport.sharedFile("banana-detection/bananas_train/images/0.png"), size: 256, [
            (0, 0, .init(217, 214, 241)), (255, 0, .init(28, 23, 17)), (0, 255, .init(198, 194, 209)),
            (255, 255, .init(68, 71, 54)), (128, 128, .init(177, 168, 163)), (37, 201, .init(118, 98, 99)),
            (200, 61, .init(153, 155, 144)),
        ], sum: 24_255_542, weightedSum: 3_027_641_595)
    }

    func testDecodeBananaJPEG() throws {
        let path = try TestSupport.sharedFile("banana.jpg")
        let image = try RGBImage.load(path)
        XCTAssertEqual(image.width, 256)
        XCTAssertEqual(image.height, 256)
        assertSamples(image, [
            (0, 0, [144, 124, 91]), (255, 0, [67, 66, 35]), (0, 255, [29, 42, 16]), (255, 255, [60, 91, 24]),
            (128, 128, [113, 106, 98]), (37, 201, [249, 205, 100]), (200, 61, [84, 85, 51]),
        ], tolerance: 2, "banana.jpg")
        let mean = Double(image.pixels.reduce(0) { $0 + Int($1) }) / Double(image.pixels.count)
        XCTAssertEqual(mean, 95.59522501627605, accuracy: 0.05) // Pillow's mean
    }

    // MARK: Committed fixture images (the same checks, on every machine)

    func testDecodeFixturePNG() throws {
        try assertPNG(TestSupport.fixtureFile("tiny-bananas/bananas_train/images/0.png"), size: 128, [
            (0, 0, .init(111, 141, 187)), (127, 0, .init(114, 144, 187)), (0, 127, .init(113, 143, 181)),
            (127, 127, .init(115, 142, 191)), (64, 64, .init(247, 100, 166)), (28, 60, .init(239, 197, 50)),
            (100, 30, .init(174, 116, 136)),
        ], sum: 7_098_526, weightedSum: 886_876_993)
    }

    /// A size x size PNG decodes to exactly these pixels and checksums, all read independently
    /// with Pillow (PNG is lossless): the plain sum and a position-weighted sum of the bytes.
    func assertPNG(_ path: String, size: Int, _ expected: [(Int, Int, RGBImage.Color)], sum: Int, weightedSum: Int,
                   file: StaticString = #filePath, line: UInt = #line) throws {
        let image = try RGBImage.load(path)
        XCTAssertEqual(image.width, size, file: file, line: line)
        XCTAssertEqual(image.height, size, file: file, line: line)
        for (x, y, color) in expected { XCTAssertEqual(image[x, y], color, "pixel (\(x), \(y))", file: file, line: line) }
        XCTAssertEqual(image.pixels.reduce(0) { $0 + Int($1) }, sum, file: file, line: line)
        let weighted = image.pixels.enumerated().reduce(0) { $0 + Int($1.element) * ($1.offset % 251) }
        XCTAssertEqual(weighted, weightedSum, file: file, line: line)
    }

    func testDecodeFixtureJPEG() throws {
        let path = TestSupport.fixtureFile("images/banana.jpg")
        let image = try RGBImage.load(path)
        XCTAssertEqual(image.width, 256)
        XCTAssertEqual(image.height, 256)
        assertSamples(image, [
            (0, 0, [59, 81, 95]), (255, 0, [45, 76, 81]), (0, 255, [41, 76, 80]), (255, 255, [35, 70, 72]),
            (128, 128, [69, 84, 103]), (159, 150, [250, 213, 37]), (200, 61, [61, 79, 101]),
        ], tolerance: 2, "banana.jpg")
        let mean = Double(image.pixels.reduce(0) { $0 + Int($1) }) / Double(image.pixels.count)
        XCTAssertEqual(mean, 77.50494384765625, accuracy: 0.05) // Pillow's mean
    }

    func testTruncatedFixtureJPEG() throws {
        let dir = try TestSupport.makeTempDirectory(self)
        let bytes = try TestSupport.readFile(TestSupport.fixtureFile("images/banana.jpg"))
        let path = dir + "/banana-truncated.jpg"
        try TestSupport.writeFile(Array(bytes.prefix(bytes.count * 2 / 3)), to: path)
        assertError(.corrupt, path: path) { _ = try RGBImage.load(path) }
    }

    func testFormatIsDetectedByContentNotExtension() throws {
        let dir = try TestSupport.makeTempDirectory(self)
        let pngBytes = try patternImage(width: 4, height: 4).pngData()
        try TestSupport.writeFile(pngBytes, to: dir + "/actually-png.jpg")
        XCTAssertEqual(try RGBImage.load(dir + "/actually-png.jpg"), patternImage(width: 4, height: 4))
        try TestSupport.writeFile(TestSupport.bytes(base64: TestVectors.jpegBaseline444), to: dir + "/actually-jpeg.png")
        XCTAssertEqual(try RGBImage.load(dir + "/actually-jpeg.png").width, 16)
        try TestSupport.writeFile(pngBytes, to: dir + "/no-extension")
        XCTAssertEqual(try RGBImage.load(dir + "/no-extension").width, 4)
    }

    // MARK: Load errors

    func testMissingAndUnreadableFiles() throws {
        let dir = try TestSupport.makeTempDirectory(self)
        assertError(.fileNotFound, path: dir + "/missing.png") { _ = try RGBImage.load(dir + "/missing.png") }
        assertError(.unreadable, path: dir) { _ = try RGBImage.load(dir) }
    }

    func testNotAnImage() throws {
        let dir = try TestSupport.makeTempDirectory(self)
        try TestSupport.writeFile(Array("hello, this is text".utf8), to: dir + "/text.png")
        assertError(.notAnImage, path: dir + "/text.png") { _ = try RGBImage.load(dir + "/text.png") }
        try TestSupport.writeFile([], to: dir + "/empty.jpg")
        assertError(.notAnImage, path: dir + "/empty.jpg") { _ = try RGBImage.load(dir + "/empty.jpg") }
        // GIF magic: a real image format, but not one we read.
        try TestSupport.writeFile(Array("GIF89a".utf8) + [1, 0, 1, 0], to: dir + "/x.gif")
        assertError(.notAnImage, path: dir + "/x.gif") { _ = try RGBImage.load(dir + "/x.gif") }
    }

    func testTruncatedAndCorruptPNG() throws {
        let dir = try TestSupport.makeTempDirectory(self)
        let good = try patternImage(width: 64, height: 64).pngData()

        // Cut at several points: inside the signature's aftermath, IHDR, IDAT.
        for cut in [8, 20, 40, good.count / 2, good.count - 20] {
            let path = dir + "/cut\(cut).png"
            try TestSupport.writeFile(Array(good.prefix(cut)), to: path)
            assertError(.corrupt, path: path) { _ = try RGBImage.load(path) }
        }
        // Only the signature's first bytes: not recognisable as PNG at all.
        try TestSupport.writeFile(Array(good.prefix(4)), to: dir + "/sig.png")
        assertError(.notAnImage, path: dir + "/sig.png") { _ = try RGBImage.load(dir + "/sig.png") }

        // Flip bytes in the middle of the compressed data: CRC mismatch.
        var corrupt = good
        for i in stride(from: good.count / 2, to: good.count / 2 + 16, by: 1) { corrupt[i] ^= 0x5A }
        try TestSupport.writeFile(corrupt, to: dir + "/corrupt.png")
        assertError(.corrupt, path: dir + "/corrupt.png") { _ = try RGBImage.load(dir + "/corrupt.png") }

        // Bad IHDR (zero width) with a recomputed-or-not CRC is rejected too.
        var badHeader = good
        badHeader[16] = 0; badHeader[17] = 0; badHeader[18] = 0; badHeader[19] = 0
        try TestSupport.writeFile(badHeader, to: dir + "/badheader.png")
        assertError(.corrupt, path: dir + "/badheader.png") { _ = try RGBImage.load(dir + "/badheader.png") }
    }

    func testTruncatedAndCorruptJPEG() throws {
        let dir = try TestSupport.makeTempDirectory(self)
        let good = TestSupport.bytes(base64: TestVectors.jpegBaseline444)
        for cut in [3, 50, good.count / 2, good.count - 2] {
            let path = dir + "/cut\(cut).jpg"
            try TestSupport.writeFile(Array(good.prefix(cut)), to: path)
            assertError(.corrupt, path: path) { _ = try RGBImage.load(path) }
        }
        // SOI followed by garbage.
        try TestSupport.writeFile([0xFF, 0xD8, 0xFF, 0x00, 1, 2, 3, 4, 5, 6, 7, 8], to: dir + "/garbage.jpg")
        assertError(.corrupt, path: dir + "/garbage.jpg") { _ = try RGBImage.load(dir + "/garbage.jpg") }
    }

    // MARK: Conversion

    func testToCHWFloats() {
        // 2x2: (0,0)=(1,2,3) (1,0)=(4,5,6) (0,1)=(7,8,9) (1,1)=(10,11,255)
        let image = RGBImage(width: 2, height: 2, pixels: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 255])
        let chw = image.toCHWFloats()
        XCTAssertEqual(chw, [1, 4, 7, 10, 2, 5, 8, 11, 3, 6, 9, 255])
        var batch = [Float](repeating: -1, count: 14)
        batch.withUnsafeMutableBufferPointer { image.writeCHWFloats(into: $0.baseAddress! + 1) }
        XCTAssertEqual(batch, [-1] + chw + [-1])
    }

    // MARK: Resize

    func testResizeConstantImageStaysConstant() {
        let color = RGBImage.Color(17, 130, 251)
        let image = RGBImage(width: 13, height: 7, fill: color)
        for (w, h) in [(1, 1), (5, 3), (13, 7), (26, 14), (100, 3), (4, 50), (256, 256)] {
            let out = image.resized(width: w, height: h)
            XCTAssertEqual(out.width, w)
            XCTAssertEqual(out.height, h)
            XCTAssertEqual(out, RGBImage(width: w, height: h, fill: color), "\(w)x\(h)")
        }
    }

    func testResizeHalfPixelCentres() {
        // Upscale [0, 100] to 4 samples: source coords -0.25(->0), 0.25, 0.75, 1.25(->1).
        let row = RGBImage(width: 2, height: 1, pixels: [0, 0, 0, 100, 200, 40])
        let up = row.resized(width: 4, height: 1)
        XCTAssertEqual(up.pixels, [0, 0, 0, 25, 50, 10, 75, 150, 30, 100, 200, 40])
        // Downscale by 2 averages pairs: source coords 0.5 and 2.5.
        let four = RGBImage(width: 4, height: 1, pixels: [0, 0, 0, 10, 10, 10, 20, 20, 20, 31, 31, 31])
        XCTAssertEqual(four.resized(width: 2, height: 1).pixels, [5, 5, 5, 26, 26, 26])
        // Same along y.
        let column = RGBImage(width: 1, height: 2, pixels: [0, 0, 0, 100, 100, 100])
        XCTAssertEqual(column.resized(width: 1, height: 4).pixels.enumerated().filter { $0.offset % 3 == 0 }.map(\.element),
                       [0, 25, 75, 100])
    }

    func testResizeGradientIsSensible() {
        // Horizontal ramp 0...255 over 256 columns in red, constant green,
        // vertical ramp in blue.
        var image = RGBImage(width: 256, height: 64)
        for y in 0 ..< 64 { for x in 0 ..< 256 { image[x, y] = .init(UInt8(x), 77, UInt8(y * 4)) } }
        for (w, h) in [(300, 100), (128, 32), (97, 41)] {
            let out = image.resized(width: w, height: h)
            for y in 0 ..< h {
                var previous = -1
                for x in 0 ..< w {
                    let c = out[x, y]
                    XCTAssertGreaterThanOrEqual(Int(c.r), previous, "red must not decrease along x")
                    previous = Int(c.r)
                    XCTAssertEqual(c.g, 77)
                }
                // The blue ramp is the same across a row.
                XCTAssertTrue((0 ..< w).allSatisfy { out[$0, y].b == out[0, y].b })
            }
            // Ends stay near the original ends; the middle maps to the middle.
            XCTAssertLessThanOrEqual(Int(out[0, 0].r), 2)
            XCTAssertGreaterThanOrEqual(Int(out[w - 1, 0].r), 253)
            XCTAssertEqual(Double(out[w / 2, 0].r), (Double(w / 2) + 0.5) * 256 / Double(w) - 0.5, accuracy: 1.0)
        }
    }
}
