// 8-bit RGB images: loading PNG/JPEG (through the CImageIO shim), saving PNG,
// resizing, conversion to the network's float layout, and simple drawing of
// boxes and labels for visualising detections.

import CImageIO
import Foundation

/// An image loading / saving failure. The message always names the file.
public struct ImageIOError: Error, LocalizedError, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: String, Sendable {
        /// The path does not exist.
        case fileNotFound
        /// The path exists but cannot be read (permissions, a directory, I/O error).
        case unreadable
        /// The content is neither PNG nor JPEG (checked by magic bytes).
        case notAnImage
        /// A PNG/JPEG that the decoder rejected: corrupt or truncated.
        case corrupt
        /// A valid image of a kind we do not convert (e.g. CMYK JPEG), or too large.
        case unsupported
        /// Saving failed (directory not creatable, disk full, ...).
        case writeFailed
        /// The in-memory image cannot be encoded (e.g. zero width).
        case invalidImage
    }

    public var kind: Kind
    public var path: String
    public var detail: String

    public init(_ kind: Kind, path: String, _ detail: String) {
        self.kind = kind
        self.path = path
        self.detail = detail
    }

    public var description: String { "image '\(path)': \(detail)" }
    public var errorDescription: String? { description }
}

/// An 8-bit RGB image, interleaved (R, G, B per pixel), row-major, no padding:
/// the byte for channel `c` of pixel (x, y) is `pixels[(y * width + x) * 3 + c]`.
public struct RGBImage: Sendable, Equatable {
    /// An RGB colour for drawing.
    public struct Color: Sendable, Equatable, Hashable {
        public var r: UInt8
        public var g: UInt8
        public var b: UInt8
        public init(_ r: UInt8, _ g: UInt8, _ b: UInt8) {
            self.r = r
            self.g = g
            self.b = b
        }

        public static let black = Color(0, 0, 0)
        public static let white = Color(255, 255, 255)
        public static let red = Color(255, 0, 0)
        public static let green = Color(0, 255, 0)
        public static let blue = Color(0, 0, 255)
        public static let yellow = Color(255, 255, 0)
        public static let cyan = Color(0, 255, 255)
        public static let magenta = Color(255, 0, 255)

        /// Black or white, whichever reads better on top of this colour
        /// (Rec. 601 luma threshold).
        public var contrasting: Color {
            let luma = 299 * Int(r) + 587 * Int(g) + 114 * Int(b)
            return luma >= 128_000 ? .black : .white
        }
    }

    public let width: Int
    public let height: Int
    /// `width * height * 3` bytes. Keep the count unchanged when mutating.
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width >= 0 && height >= 0, "RGBImage: negative size \(width)x\(height)")
        precondition(pixels.count == width * height * 3,
                     "RGBImage: \(pixels.count) bytes for \(width)x\(height) (need \(width * height * 3))")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// A solid image.
    public init(width: Int, height: Int, fill: Color = .black) {
        precondition(width >= 0 && height >= 0, "RGBImage: negative size \(width)x\(height)")
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for i in stride(from: 0, to: pixels.count, by: 3) {
            pixels[i] = fill.r
            pixels[i + 1] = fill.g
            pixels[i + 2] = fill.b
        }
        self.init(width: width, height: height, pixels: pixels)
    }

    /// Pixel access; (x, y) must be inside the image.
    public subscript(x: Int, y: Int) -> Color {
        get {
            precondition(x >= 0 && x < width && y >= 0 && y < height, "pixel (\(x), \(y)) outside \(width)x\(height)")
            let i = (y * width + x) * 3
            return Color(pixels[i], pixels[i + 1], pixels[i + 2])
        }
        set {
            precondition(x >= 0 && x < width && y >= 0 && y < height, "pixel (\(x), \(y)) outside \(width)x\(height)")
            let i = (y * width + x) * 3
            pixels[i] = newValue.r
            pixels[i + 1] = newValue.g
            pixels[i + 2] = newValue.b
        }
    }

    // MARK: Loading and saving

    /// Loads a PNG or JPEG. The format is chosen by the file's magic bytes,
    /// never by its extension. Errors name the file.
    public static func load(_ path: String) throws -> RGBImage {
        let data: [UInt8]
        do {
            data = try FileIO.readAll(path)
        } catch {
            switch error.kind {
            case .notFound: throw ImageIOError(.fileNotFound, path: path, "no such file")
            default: throw ImageIOError(.unreadable, path: path, "cannot read: \(error.reason)")
            }
        }
        return try decode(data, source: path)
    }

    /// Decodes PNG or JPEG bytes held in memory; `source` names them in errors.
    public static func decode(_ data: [UInt8], source: String = "<memory>") throws -> RGBImage {
        if data.isEmpty {
            throw ImageIOError(.notAnImage, path: source, "not an image: the file is empty")
        }
        typealias DecodeFunction = (UnsafePointer<UInt8>?, Int, UnsafeMutablePointer<cimageio_image>?,
                                    UnsafeMutablePointer<CChar>?, Int) -> cimageio_status
        let format: String
        let decoder: DecodeFunction
        let isPNG = data.withUnsafeBufferPointer { cimageio_is_png($0.baseAddress, $0.count) != 0 }
        let isJPEG = data.withUnsafeBufferPointer { cimageio_is_jpeg($0.baseAddress, $0.count) != 0 }
        if isPNG {
            format = "PNG"
            decoder = cimageio_decode_png_memory
        } else if isJPEG {
            format = "JPEG"
            decoder = cimageio_decode_jpeg_memory
        } else {
            let head = data.prefix(8).map { String(format: "%02x", $0) }.joined(separator: " ")
            throw ImageIOError(.notAnImage, path: source, "not a PNG or JPEG image (starts with bytes \(head))")
        }

        var image = cimageio_image()
        var message = [CChar](repeating: 0, count: Int(CIMAGEIO_ERRMSG_CAPACITY))
        let status = data.withUnsafeBufferPointer { input in
            message.withUnsafeMutableBufferPointer { msg in
                decoder(input.baseAddress, input.count, &image, msg.baseAddress, msg.count)
            }
        }
        // The shim always NUL-terminates; decode up to the first NUL.
        let text = String(decoding: message.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard status == CIMAGEIO_OK, let buffer = image.pixels else {
            cimageio_free(image.pixels)
            switch status {
            case CIMAGEIO_ERR_UNSUPPORTED:
                throw ImageIOError(.unsupported, path: source, "unsupported \(format): \(text)")
            case CIMAGEIO_ERR_NOMEM:
                throw ImageIOError(.unsupported, path: source, "\(format) too large to decode: \(text)")
            case CIMAGEIO_ERR_NOT_FORMAT:
                throw ImageIOError(.notAnImage, path: source, "not a \(format) image: \(text)")
            default:
                throw ImageIOError(.corrupt, path: source, "corrupt or truncated \(format): \(text)")
            }
        }
        defer { cimageio_free(buffer) }
        let width = Int(image.width), height = Int(image.height)
        let pixels = [UInt8](UnsafeBufferPointer(start: buffer, count: width * height * 3))
        return RGBImage(width: width, height: height, pixels: pixels)
    }

    /// The image encoded as PNG bytes (deterministic for identical pixels).
    public func pngData() throws -> [UInt8] {
        try encodePNG(naming: "<memory>")
    }

    /// Saves as PNG. Written to a temporary file in the same directory and
    /// renamed into place, so readers never see a half-written file; parent
    /// directories are created.
    public func savePNG(to path: String) throws {
        let data = try encodePNG(naming: path)
        do {
            try FileIO.writeAtomically(data, to: path)
        } catch {
            throw ImageIOError(.writeFailed, path: path, "cannot write: \(error.reason)")
        }
    }

    private func encodePNG(naming path: String) throws -> [UInt8] {
        guard width > 0, height > 0, width <= Int(Int32.max), height <= Int(Int32.max) else {
            throw ImageIOError(.invalidImage, path: path, "cannot encode a \(width)x\(height) image as PNG")
        }
        var output: UnsafeMutablePointer<UInt8>?
        var size = 0
        var message = [CChar](repeating: 0, count: Int(CIMAGEIO_ERRMSG_CAPACITY))
        let status = pixels.withUnsafeBufferPointer { rgb in
            message.withUnsafeMutableBufferPointer { msg in
                cimageio_encode_png_memory(rgb.baseAddress, Int32(width), Int32(height),
                                           &output, &size, msg.baseAddress, msg.count)
            }
        }
        defer { cimageio_free(output) }
        guard status == CIMAGEIO_OK, let output else {
            let text = String(decoding: message.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw ImageIOError(.writeFailed, path: path, "PNG encoding failed: \(text)")
        }
        return [UInt8](UnsafeBufferPointer(start: output, count: size))
    }

    // MARK: Resizing and conversion

    /// Bilinear resize with half-pixel centres: output pixel i samples source
    /// coordinate (i + 0.5) * in/out - 0.5, clamped to the image (the
    /// convention of OpenCV's INTER_LINEAR and PyTorch's align_corners=False).
    /// No antialiasing, so strong downscaling aliases like those do too.
    /// Results are rounded to nearest.
    public func resized(width newWidth: Int, height newHeight: Int) -> RGBImage {
        precondition(newWidth > 0 && newHeight > 0, "resized: target size \(newWidth)x\(newHeight) must be positive")
        precondition(width > 0 && height > 0, "resized: cannot resize an empty image")
        if newWidth == width && newHeight == height { return self }

        let xTaps = RGBImage.linearTaps(outputSize: newWidth, inputSize: width)
        let yTaps = RGBImage.linearTaps(outputSize: newHeight, inputSize: height)
        var out = [UInt8](repeating: 0, count: newWidth * newHeight * 3)
        let srcStride = width * 3
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for oy in 0 ..< newHeight {
                    let (y0, y1, wy) = yTaps[oy]
                    let row0 = y0 * srcStride, row1 = y1 * srcStride
                    for ox in 0 ..< newWidth {
                        let (x0, x1, wx) = xTaps[ox]
                        let o = (oy * newWidth + ox) * 3
                        for c in 0 ..< 3 {
                            let p00 = Float(src[row0 + x0 * 3 + c]), p01 = Float(src[row0 + x1 * 3 + c])
                            let p10 = Float(src[row1 + x0 * 3 + c]), p11 = Float(src[row1 + x1 * 3 + c])
                            let top = p00 + (p01 - p00) * wx
                            let bottom = p10 + (p11 - p10) * wx
                            let v = top + (bottom - top) * wy
                            dst[o + c] = UInt8(max(0, min(255, (v + 0.5).rounded(.down))))
                        }
                    }
                }
            }
        }
        return RGBImage(width: newWidth, height: newHeight, pixels: out)
    }

    /// For each output index: the two source indices to blend and the weight
    /// of the second one.
    static func linearTaps(outputSize: Int, inputSize: Int) -> [(Int, Int, Float)] {
        let scale = Double(inputSize) / Double(outputSize)
        return (0 ..< outputSize).map { i in
            let source = max(0, (Double(i) + 0.5) * scale - 0.5)
            let i0 = min(Int(source), inputSize - 1)
            let i1 = min(i0 + 1, inputSize - 1)
            return (i0, i1, Float(source - Double(i0)))
        }
    }

    /// Channel-major floats, 3 x height x width, values 0...255 (not
    /// normalised: the network is fed raw 0..255 pixel values).
    public func toCHWFloats() -> [Float] {
        [Float](unsafeUninitializedCapacity: 3 * width * height) { out, initialized in
            if let base = out.baseAddress { writeCHWFloats(into: base) }
            initialized = 3 * width * height
        }
    }

    /// The image of 3 x height x width channel-major floats (0...255, as `toCHWFloats()`
    /// gives them), each value rounded and clamped to a byte.
    public init(chwFloats source: UnsafePointer<Float>, width: Int, height: Int) {
        let plane = width * height
        var pixels = [UInt8](repeating: 0, count: 3 * plane)
        for i in 0 ..< plane {
            for c in 0 ..< 3 { pixels[i * 3 + c] = UInt8(min(max(source[c * plane + i].rounded(), 0), 255)) }
        }
        self.init(width: width, height: height, pixels: pixels)
    }

    /// Writes the 3 x height x width floats of `toCHWFloats()` straight into
    /// `destination` (e.g. one slot of a batch buffer), avoiding a temporary.
    public func writeCHWFloats(into destination: UnsafeMutablePointer<Float>) {
        let plane = width * height
        pixels.withUnsafeBufferPointer { src in
            for i in 0 ..< plane {
                destination[i] = Float(src[i * 3])
                destination[plane + i] = Float(src[i * 3 + 1])
                destination[2 * plane + i] = Float(src[i * 3 + 2])
            }
        }
    }

    // MARK: Drawing

    /// Fills the rectangle with corners (x0, y0) and (x1, y1), both inclusive,
    /// in either order. Parts outside the image are ignored.
    public mutating func fillRectangle(x0: Int, y0: Int, x1: Int, y1: Int, color: Color) {
        let left = max(min(x0, x1), 0), right = min(max(x0, x1), width - 1)
        let top = max(min(y0, y1), 0), bottom = min(max(y0, y1), height - 1)
        guard left <= right, top <= bottom else { return }
        let w = width
        pixels.withUnsafeMutableBufferPointer { p in
            for y in top ... bottom {
                for x in left ... right {
                    let i = (y * w + x) * 3
                    p[i] = color.r
                    p[i + 1] = color.g
                    p[i + 2] = color.b
                }
            }
        }
    }

    /// Draws the outline of the rectangle with corners (x0, y0) and (x1, y1),
    /// both inclusive, in either order. The outline grows inward from those
    /// edges by `thickness` pixels, so it never extends past the box; parts
    /// outside the image are clipped.
    public mutating func drawRectangle(x0: Int, y0: Int, x1: Int, y1: Int, color: Color, thickness: Int = 1) {
        guard thickness > 0 else { return }
        let left = min(x0, x1), right = max(x0, x1)
        let top = min(y0, y1), bottom = max(y0, y1)
        let t = thickness - 1
        fillRectangle(x0: left, y0: top, x1: right, y1: min(top + t, bottom), color: color)        // top edge
        fillRectangle(x0: left, y0: max(bottom - t, top), x1: right, y1: bottom, color: color)     // bottom edge
        fillRectangle(x0: left, y0: top, x1: min(left + t, right), y1: bottom, color: color)       // left edge
        fillRectangle(x0: max(right - t, left), y0: top, x1: right, y1: bottom, color: color)      // right edge
    }

    /// Size of the box `drawText` fills for `text` at `scale`: the glyphs plus
    /// a one-unit margin on every side.
    public static func textSize(_ text: String, scale: Int = 1) -> (width: Int, height: Int) {
        let s = max(scale, 1)
        let n = text.count
        let glyphsWidth = n == 0 ? 0 : n * BitmapFont.advance - (BitmapFont.advance - BitmapFont.glyphWidth)
        return ((glyphsWidth + 2) * s, (BitmapFont.glyphHeight + 2) * s)
    }

    /// Draws one line of text with the built-in 5x7 font. (x, y) is the top-left
    /// corner of the label box, whose size is `textSize(text, scale:)`; it is
    /// filled with `background` (pass nil for transparent) so the text stays
    /// readable over any image. Each font pixel becomes a `scale` x `scale`
    /// block. Lower-case letters are drawn as capitals; characters the font
    /// lacks are drawn as '?'. Everything is clipped to the image.
    public mutating func drawText(_ text: String, x: Int, y: Int, color: Color = .white, scale: Int = 1,
                                  background: Color? = .black)
    {
        let s = max(scale, 1)
        let size = RGBImage.textSize(text, scale: s)
        if let background {
            fillRectangle(x0: x, y0: y, x1: x + size.width - 1, y1: y + size.height - 1, color: background)
        }
        var penX = x + s // one-unit margin
        let penY = y + s
        for character in text {
            let rows = BitmapFont.glyph(for: character)
            for (row, bits) in rows.enumerated() {
                for column in 0 ..< BitmapFont.glyphWidth where bits & (1 << (BitmapFont.glyphWidth - 1 - column)) != 0 {
                    let px = penX + column * s, py = penY + row * s
                    fillRectangle(x0: px, y0: py, x1: px + s - 1, y1: py + s - 1, color: color)
                }
            }
            penX += BitmapFont.advance * s
        }
    }

    /// Draws a detection: the box outline plus `label` (e.g. "banana 0.97") on
    /// a filled tag in the box colour, placed just above the box's top-left
    /// corner, or inside the box when there is no room above. The tag is
    /// shifted left if needed to stay inside the image.
    public mutating func drawLabeledBox(x0: Int, y0: Int, x1: Int, y1: Int, label: String, color: Color,
                                        thickness: Int = 2, textColor: Color? = nil, scale: Int = 1)
    {
        drawRectangle(x0: x0, y0: y0, x1: x1, y1: y1, color: color, thickness: thickness)
        guard !label.isEmpty else { return }
        let size = RGBImage.textSize(label, scale: scale)
        let left = min(x0, x1), top = min(y0, y1)
        let tagY = top - size.height >= 0 ? top - size.height : max(top, 0)
        let tagX = max(0, min(left, width - size.width))
        drawText(label, x: tagX, y: tagY, color: textColor ?? color.contrasting, scale: scale, background: color)
    }
}
