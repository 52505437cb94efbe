import CImageIO
import Foundation
import XCTest

/// Direct tests of the C shim's file-path entry points (SSDIO itself uses the
/// in-memory ones): status codes, messages, and no crash/exit on bad input.
final class CImageIOShimTests: XCTestCase {
    private func message(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    func testFileEncodeDecodeAndErrors() throws {
        let dir = try TestSupport.makeTempDirectory(self)
        let path = dir + "/shim.png"
        let rgb: [UInt8] = (0 ..< 4 * 3 * 3).map { UInt8($0 * 5) }
        var msg = [CChar](repeating: 0, count: Int(CIMAGEIO_ERRMSG_CAPACITY))

        XCTAssertEqual(cimageio_encode_png_file(rgb, 4, 3, path, &msg, msg.count), CIMAGEIO_OK)
        var image = cimageio_image()
        XCTAssertEqual(cimageio_decode_png_file(path, &image, &msg, msg.count), CIMAGEIO_OK)
        XCTAssertEqual(image.width, 4)
        XCTAssertEqual(image.height, 3)
        XCTAssertEqual(Array(UnsafeBufferPointer(start: image.pixels, count: rgb.count)), rgb)
        cimageio_free(image.pixels)

        // A PNG given to the JPEG decoder: wrong signature, not a crash.
        XCTAssertEqual(cimageio_decode_jpeg_file(path, &image, &msg, msg.count), CIMAGEIO_ERR_NOT_FORMAT)
        XCTAssertNil(image.pixels)
        XCTAssertEqual(message(msg), "missing JPEG signature")

        XCTAssertEqual(cimageio_decode_png_file(dir + "/missing.png", &image, &msg, msg.count), CIMAGEIO_ERR_IO)
        XCTAssertTrue(message(msg).contains("No such file"), message(msg))

        XCTAssertEqual(cimageio_encode_png_file(rgb, 0, 3, path, &msg, msg.count), CIMAGEIO_ERR_ARGUMENT)
        XCTAssertEqual(cimageio_encode_png_file(rgb, 4, 3, dir + "/no/such/dir.png", &msg, msg.count), CIMAGEIO_ERR_IO)

        // Truncated PNG: libpng's error comes back as a message, not a longjmp into Swift.
        let bytes = try TestSupport.readFile(path)
        try TestSupport.writeFile(Array(bytes.prefix(bytes.count - 20)), to: dir + "/cut.png")
        XCTAssertEqual(cimageio_decode_png_file(dir + "/cut.png", &image, &msg, msg.count), CIMAGEIO_ERR_CORRUPT)
        XCTAssertFalse(message(msg).isEmpty)

        // Truncated JPEG: libjpeg's warning is promoted to an error.
        let jpeg = TestSupport.bytes(base64: TestVectors.jpegBaseline444)
        try TestSupport.writeFile(Array(jpeg.prefix(jpeg.count / 2)), to: dir + "/cut.jpg")
        XCTAssertEqual(cimageio_decode_jpeg_file(dir + "/cut.jpg", &image, &msg, msg.count), CIMAGEIO_ERR_CORRUPT)
        XCTAssertTrue(message(msg).lowercased().contains("premature end"), message(msg))

        // A tiny message buffer is truncated but stays NUL-terminated.
        var tiny = [CChar](repeating: 1, count: 4)
        XCTAssertEqual(cimageio_decode_jpeg_file(dir + "/cut.jpg", &image, &tiny, tiny.count), CIMAGEIO_ERR_CORRUPT)
        XCTAssertEqual(tiny[3], 0)
    }
}
