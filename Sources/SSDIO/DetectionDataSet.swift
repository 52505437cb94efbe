// The banana-detection data set layout (d2l "Object Detection Data Set"):
//
//   ROOT/bananas_train/label.csv      header img_name,label,xmin,ymin,xmax,ymax
//   ROOT/bananas_train/images/K.png   one image per listed name
//   ROOT/bananas_val/...              the same for the validation split
//   ROOT/bananas_train/classes.txt    optional: class names, one a line, class 0 first
//
// Box coordinates in label.csv are pixels. Several rows with the same
// img_name give several boxes for that image. Loading parses and validates
// the whole label file and reads every image's header (for its size), but the
// pixels are decoded lazily, batch by batch, and cached as uint8 so that later
// epochs only pay for a uint8 -> float copy.
//
// A root holding train.rec/val.rec instead (MXNet RecordIO, see RecordIO.swift)
// loads the same way, its images decoded from the records.

import Dispatch
import Foundation

/// A data-set loading failure. The message names the file and, for problems
/// in label.csv, the line: `.../label.csv:17: expected 6 fields, found 5`.
public struct DetectionDataSetError: Error, LocalizedError, CustomStringConvertible, Equatable, Sendable {
    /// The file at fault (label.csv or an image).
    public var path: String
    /// 1-based line in `path`, when the problem is in a text file.
    public var line: Int?
    public var message: String

    public init(path: String, line: Int? = nil, _ message: String) {
        self.path = path
        self.line = line
        self.message = message
    }

    public var description: String {
        if let line { return "\(path):\(line): \(message)" }
        return "\(path): \(message)"
    }

    public var errorDescription: String? { description }
}

/// One split of a banana-detection style data set.
public struct DetectionDataSet: Sendable {
    public enum Split: String, Sendable, CaseIterable {
        case train
        case val

        /// The split's directory below the data-set root.
        public var directoryName: String { "bananas_\(rawValue)" }
    }

    /// A ground-truth box in pixel coordinates of its image.
    public struct Box: Sendable, Equatable {
        public var label: Int
        public var xmin: Float
        public var ymin: Float
        public var xmax: Float
        public var ymax: Float

        public init(label: Int, xmin: Float, ymin: Float, xmax: Float, ymax: Float) {
            self.label = label
            self.xmin = xmin
            self.ymin = ymin
            self.xmax = xmax
            self.ymax = ymax
        }
    }

    /// Labels must be below this (1 + the largest label is the class count).
    public static let maxClassCount = 1 << 16

    /// The header label.csv must start with.
    public static let csvHeader = ["img_name", "label", "xmin", "ymin", "xmax", "ymax"]

    public let root: String
    public let split: Split
    /// `root/bananas_<split>`.
    public let directory: String
    /// `directory/label.csv`.
    public let labelFile: String
    /// `directory/classes.txt` (which need not exist).
    public var classesFile: String { directory + "/classes.txt" }
    /// Image file names, in order of first appearance in label.csv; index i of
    /// the data set is `imageNames[i]`.
    public let imageNames: [String]
    /// The boxes of each image, in label.csv order.
    public let boxes: [[Box]]
    /// The label.csv line where each image first appears (for messages); for
    /// RecordIO, the image's record number.
    public let firstLines: [Int]
    /// Common size of all images.
    public let width: Int
    public let height: Int
    /// G: the largest number of boxes on one image (the label tensor's middle dimension).
    public let maxBoxes: Int
    /// The number of classes: the names in classes.txt when the split has one,
    /// else 1 + the largest class index in the labels (1 for bananas).
    public let classCount: Int
    /// The class names of `directory/classes.txt` (class 0 first), nil without that file.
    public let classNames: [String]?
    /// The label.csv line of each box in `boxes` (for messages).
    private let boxLines: [[Int]]
    /// The encoded images when the split is a RecordIO file, else nil (images/ files).
    private let records: RecordIOImages?

    private let cache: DecodedImageCache?

    /// Number of images.
    public var count: Int { imageNames.count }

    /// Full path of image `index` (for RecordIO: the .rec file and the record).
    public func imagePath(_ index: Int) -> String {
        if let records { return "\(records.path) \(records.location(index))" }
        return "\(directory)/images/\(imageNames[index])"
    }

    /// Where the data set is read from: the split's directory, or its .rec file.
    public var location: String { records?.path ?? directory }

    // MARK: Loading

    /// Parses and validates `root/bananas_<split>/label.csv` and checks that
    /// every listed image exists, is a PNG/JPEG, and that all images share one
    /// size with every box inside it. Pixels are decoded later, on first use;
    /// with `cacheImages` (the default) each image is decoded once and kept
    /// as uint8 (3 * width * height bytes per image).
    /// Whether `root` holds `split`, in the folder layout or as RecordIO.
    public static func hasSplit(root: String, _ split: Split) -> Bool {
        let directory = root.hasSuffix("/") ? root + split.directoryName : root + "/" + split.directoryName
        return FileManager.default.fileExists(atPath: directory + "/label.csv")
            || FileManager.default.fileExists(atPath: recordFile(root: root, split: split))
    }

    public static func load(root: String, split: Split, cacheImages: Bool = true) throws -> DetectionDataSet {
        let directory = root.hasSuffix("/") ? root + split.directoryName : root + "/" + split.directoryName
        let labelFile = directory + "/label.csv"
        if !FileManager.default.fileExists(atPath: labelFile),
           FileManager.default.fileExists(atPath: recordFile(root: root, split: split)) {
            return try loadRecordIO(root: root, split: split, cacheImages: cacheImages)
        }
        let rows = try parseLabelFile(labelFile)

        // Group rows by image, keeping first-appearance order.
        var indexOfName: [String: Int] = [:]
        var names: [String] = []
        var boxes: [[Box]] = []
        var boxLines: [[Int]] = []
        var firstLines: [Int] = []
        for row in rows {
            if let i = indexOfName[row.name] {
                boxes[i].append(row.box)
                boxLines[i].append(row.line)
            } else {
                indexOfName[row.name] = names.count
                names.append(row.name)
                boxes.append([row.box])
                boxLines.append([row.line])
                firstLines.append(row.line)
            }
        }

        // Image sizes from the file headers; all must agree.
        var size: (width: Int, height: Int, name: String)?
        for (i, name) in names.enumerated() {
            let path = "\(directory)/images/\(name)"
            let s = try imageSize(path: path, listedAt: labelFile, line: firstLines[i])
            if let size {
                if s.width != size.width || s.height != size.height {
                    throw DetectionDataSetError(
                        path: path,
                        "image is \(s.width)x\(s.height) but \(size.name) is \(size.width)x\(size.height); "
                            + "all images of a split must have the same size")
                }
            } else {
                size = (s.width, s.height, path)
            }
        }
        guard let size else {
            throw DetectionDataSetError(path: labelFile, "no images listed")
        }

        // Boxes must lie inside the image.
        let w = Float(size.width), h = Float(size.height)
        for (i, list) in boxes.enumerated() {
            for (j, b) in list.enumerated() where b.xmin < 0 || b.ymin < 0 || b.xmax > w || b.ymax > h {
                throw DetectionDataSetError(
                    path: labelFile, line: boxLines[i][j],
                    "box (\(fmt(b.xmin)), \(fmt(b.ymin)), \(fmt(b.xmax)), \(fmt(b.ymax))) lies outside the "
                        + "\(size.width)x\(size.height) image \(names[i])")
            }
        }

        let classNames = try readClassNames(directory + "/classes.txt")
        let maxLabel = boxes.lazy.flatMap { $0 }.map(\.label).max() ?? 0
        let data = DetectionDataSet(
            root: root, split: split, directory: directory, labelFile: labelFile,
            imageNames: names, boxes: boxes, firstLines: firstLines,
            width: size.width, height: size.height,
            maxBoxes: boxes.map(\.count).max() ?? 0, classCount: classNames?.count ?? maxLabel + 1,
            classNames: classNames, boxLines: boxLines, records: nil,
            cache: cacheImages ? DecodedImageCache(count: names.count, imageBytes: 3 * size.width * size.height) : nil)
        if let classNames { try data.checkLabels(below: classNames.count, of: data.classesFile) }
        return data
    }

    /// Checks the data set against a model with `classCount` classes (described by
    /// `owner` in messages, e.g. "model tinyssd"): classes.txt, when there is one, must
    /// name exactly that many, and every label must be one of them. A label typo is
    /// reported at its line of label.csv instead of growing the model by a class.
    public func validate(classCount: Int, of owner: String) throws {
        if let classNames, classNames.count != classCount {
            throw DetectionDataSetError(
                path: classesFile, "names \(DetectionDataSet.classes(classNames.count)) but \(owner) has \(classCount)")
        }
        try checkLabels(below: classCount, of: owner)
    }

    /// Throws at the first label.csv row whose class is not below `count`.
    private func checkLabels(below count: Int, of owner: String) throws {
        var first: (line: Int, label: Int)?
        for (i, list) in boxes.enumerated() {
            for (j, b) in list.enumerated() where b.label >= count && boxLines[i][j] < first?.line ?? .max {
                first = (boxLines[i][j], b.label)
            }
        }
        if let records, let i = boxes.firstIndex(where: { $0.contains { $0.label >= count } }) {
            let label = boxes[i].first { $0.label >= count }!.label
            throw DetectionDataSetError(
                path: labelFile, "\(records.location(i)): class \(label) is outside the "
                    + "\(DetectionDataSet.classes(count)) of \(owner) (0...\(count - 1))")
        }
        if let first {
            throw DetectionDataSetError(
                path: labelFile, line: first.line,
                "class \(first.label) is outside the \(DetectionDataSet.classes(count)) of \(owner) (0...\(count - 1))")
        }
    }

    /// "1 class", "3 classes".
    private static func classes(_ n: Int) -> String { n == 1 ? "1 class" : "\(n) classes" }

    /// The names in a classes.txt (one a line; blank lines and surrounding spaces are
    /// ignored), or nil when there is no such file.
    public static func readClassNames(_ path: String) throws -> [String]? {
        let bytes: [UInt8]
        do {
            bytes = try FileIO.readAll(path)
        } catch {
            if case .notFound = error.kind { return nil }
            throw DetectionDataSetError(path: path, "cannot read: \(error.reason)")
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw DetectionDataSetError(path: path, "not UTF-8 text")
        }
        var names: [String] = []
        var lineOf: [String: Int] = [:]
        let lines = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" })
        for (i, line) in lines.enumerated() {
            let name = line.trimmingCharacters(in: .whitespaces.union(CharacterSet(charactersIn: "\u{FEFF}")))
            if name.isEmpty { continue }
            if let earlier = lineOf[name] {
                throw DetectionDataSetError(path: path, line: i + 1, "class name '\(name)' already given at line \(earlier)")
            }
            lineOf[name] = i + 1
            names.append(name)
        }
        if names.isEmpty { throw DetectionDataSetError(path: path, "no class names (expected one a line, class 0 first)") }
        return names
    }

    private struct Row {
        var name: String
        var box: Box
        var line: Int
    }

    private static func parseLabelFile(_ path: String) throws -> [Row] {
        let bytes: [UInt8]
        do {
            bytes = try FileIO.readAll(path)
        } catch {
            switch error.kind {
            case .notFound:
                throw DetectionDataSetError(
                    path: path, "missing label file (expected the banana-detection layout "
                        + "ROOT/bananas_train/label.csv, ROOT/bananas_train/images/, ROOT/bananas_val/..., "
                        + "or RecordIO files ROOT/train.rec, ROOT/val.rec)")
            default:
                throw DetectionDataSetError(path: path, "cannot read: \(error.reason)")
            }
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw DetectionDataSetError(path: path, "not UTF-8 text")
        }
        // "\r\n" is a single Character in Swift, so split on all three line ends.
        var lines = text.split(omittingEmptySubsequences: false, whereSeparator: {
            $0 == "\n" || $0 == "\r\n" || $0 == "\r"
        })
        if let first = lines.first, first.hasPrefix("\u{FEFF}") { lines[0] = first.dropFirst() }

        // Header: the first non-blank line.
        guard let headerIndex = lines.firstIndex(where: { !isBlank($0) }) else {
            throw DetectionDataSetError(path: path, "empty file (expected the header \(csvHeader.joined(separator: ",")))")
        }
        let header = splitFields(lines[headerIndex])
        if header != csvHeader {
            throw DetectionDataSetError(
                path: path, line: headerIndex + 1,
                "expected the header '\(csvHeader.joined(separator: ","))', found '\(lines[headerIndex])'")
        }

        var rows: [Row] = []
        for lineIndex in (headerIndex + 1) ..< lines.count where !isBlank(lines[lineIndex]) {
            let lineNumber = lineIndex + 1
            let fields = splitFields(lines[lineIndex])
            func fail(_ message: String) -> DetectionDataSetError {
                DetectionDataSetError(path: path, line: lineNumber, message)
            }
            guard fields.count == csvHeader.count else {
                throw fail("expected \(csvHeader.count) fields (\(csvHeader.joined(separator: ","))), found \(fields.count)")
            }
            let name = fields[0]
            if name.isEmpty { throw fail("empty img_name") }
            if name.hasPrefix("/") || name.split(separator: "/").contains("..") {
                throw fail("img_name '\(name)' must be a path inside images/")
            }
            guard let label = Int(fields[1]) else {
                if let value = Double(fields[1]), value.isFinite {
                    throw fail("label '\(fields[1])' is not an integer class index")
                }
                throw fail("label '\(fields[1])' is not a number")
            }
            if label < 0 { throw fail("negative class \(label) (classes are 0, 1, ...; background is implicit)") }
            // The class count is 1 + the largest label; keep it (and the model it sizes) sane.
            if label >= maxClassCount { throw fail("class \(label) is too large (at most \(maxClassCount - 1))") }
            var coords: [Float] = []
            for k in 2 ..< 6 {
                guard let value = Double(fields[k]), value.isFinite else {
                    throw fail("\(csvHeader[k]) '\(fields[k])' is not a number")
                }
                coords.append(Float(value))
            }
            let box = Box(label: label, xmin: coords[0], ymin: coords[1], xmax: coords[2], ymax: coords[3])
            if box.xmin >= box.xmax {
                throw fail("empty box: xmin \(fmt(box.xmin)) >= xmax \(fmt(box.xmax))")
            }
            if box.ymin >= box.ymax {
                throw fail("empty box: ymin \(fmt(box.ymin)) >= ymax \(fmt(box.ymax))")
            }
            rows.append(Row(name: name, box: box, line: lineNumber))
        }
        if rows.isEmpty {
            throw DetectionDataSetError(path: path, "no data rows after the header")
        }
        return rows
    }

    private static func isBlank(_ line: Substring) -> Bool {
        line.allSatisfy { $0 == " " || $0 == "\t" }
    }

    private static func splitFields(_ line: Substring) -> [String] {
        line.split(separator: ",", omittingEmptySubsequences: false).map {
            String($0.trimmingCharacters(in: .whitespaces))
        }
    }

    private static func fmt(_ v: Float) -> String {
        v == v.rounded() && abs(v) < 1e9 ? String(Int(v)) : String(v)
    }

    /// Width and height from a PNG's IHDR chunk without decoding it; other
    /// files are decoded (which also produces a proper error for non-images).
    private static func imageSize(path: String, listedAt labelFile: String, line: Int) throws -> (width: Int, height: Int) {
        let listed = "(listed at \(labelFile):\(line))"
        guard let handle = FileHandle(forReadingAtPath: path) else {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
                throw DetectionDataSetError(path: path, isDirectory.boolValue ? "is a directory \(listed)"
                                                                               : "cannot open image \(listed)")
            }
            throw DetectionDataSetError(path: path, "image not found \(listed)")
        }
        let head = [UInt8]((try? handle.read(upToCount: 24)) ?? Data())
        try? handle.close()
        let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        let ihdr: [UInt8] = [0x49, 0x48, 0x44, 0x52]
        if head.count == 24, Array(head[0 ..< 8]) == signature, Array(head[12 ..< 16]) == ihdr {
            func be32(_ o: Int) -> Int {
                Int(head[o]) << 24 | Int(head[o + 1]) << 16 | Int(head[o + 2]) << 8 | Int(head[o + 3])
            }
            let w = be32(16), h = be32(20)
            if w == 0 || h == 0 || w > 1 << 16 || h > 1 << 16 {
                throw DetectionDataSetError(path: path, "corrupt PNG header (size \(w)x\(h)) \(listed)")
            }
            return (w, h)
        }
        do {
            let image = try RGBImage.load(path)
            return (image.width, image.height)
        } catch let error as ImageIOError {
            throw DetectionDataSetError(path: path, "\(error.detail) \(listed)")
        }
    }

    // MARK: Batches

    /// The images and labels of `indices`, in that order.
    ///
    /// - `x`: N x 3 x height x width floats, channel-major, pixel values 0...255.
    /// - `y`: N x G x 5 floats, each row `[class, xmin/W, ymin/H, xmax/W, ymax/H]`;
    ///   rows past an image's boxes are padding `[-1, 0, 0, 0, 0]`.
    ///   G is `maxBoxes`, or `boxesPerImage` when given (must be >= maxBoxes),
    ///   e.g. to give train and val batches the same shape.
    public func batch(indices: [Int], boxesPerImage: Int? = nil) throws -> (x: [Float], y: [Float]) {
        let g = boxesPerImage ?? maxBoxes
        precondition(g >= maxBoxes, "boxesPerImage \(g) < maxBoxes \(maxBoxes)")
        for i in indices where i < 0 || i >= count {
            throw DetectionDataSetError(path: labelFile, "batch index \(i) out of range 0..<\(count)")
        }
        return (try images(indices: indices), labels(indices: indices, boxesPerImage: g))
    }

    /// The label part of `batch` alone (no image decoding).
    public func labels(indices: [Int], boxesPerImage: Int? = nil) -> [Float] {
        let g = boxesPerImage ?? maxBoxes
        precondition(g >= maxBoxes, "boxesPerImage \(g) < maxBoxes \(maxBoxes)")
        var y = [Float](repeating: 0, count: indices.count * g * 5)
        let w = Float(width), h = Float(height)
        for (n, i) in indices.enumerated() {
            precondition(i >= 0 && i < count, "index \(i) out of range 0..<\(count)")
            for j in 0 ..< g {
                let o = (n * g + j) * 5
                if j < boxes[i].count {
                    let b = boxes[i][j]
                    y[o] = Float(b.label)
                    y[o + 1] = b.xmin / w
                    y[o + 2] = b.ymin / h
                    y[o + 3] = b.xmax / w
                    y[o + 4] = b.ymax / h
                } else {
                    y[o] = -1
                }
            }
        }
        return y
    }

    /// Decoded image `index` (straight from disk, independent of the cache).
    public func image(at index: Int) throws -> RGBImage {
        precondition(index >= 0 && index < count, "index \(index) out of range 0..<\(count)")
        return try decodeChecked(index)
    }

    /// Decodes every image now (in parallel) instead of on first use, so that
    /// corrupt images are reported up front. A no-op without the cache.
    public func preload() throws {
        guard let cache else { return }
        try cache.withLock { try fillCache(cache, indices: Array(0 ..< count)) }
    }

    private func decodeChecked(_ index: Int) throws -> RGBImage {
        let path = imagePath(index)
        let listed = "(listed at \(labelFile):\(firstLines[index]))"
        let image: RGBImage
        do {
            image = try records?.decode(index) ?? RGBImage.load(path)
        } catch let error as ImageIOError {
            throw DetectionDataSetError(path: path, "\(error.detail) \(listed)")
        }
        if let records, image.width != width || image.height != height {
            throw DetectionDataSetError(path: records.path, "\(records.location(index)): image is \(image.width)x\(image.height), "
                + "expected \(width)x\(height) like the first; all images of a split must have the same size")
        }
        if image.width != width || image.height != height {
            throw DetectionDataSetError(
                path: path, "decoded image is \(image.width)x\(image.height), expected \(width)x\(height) \(listed)")
        }
        return image
    }

    private static func parallelFor(_ n: Int, _ body: @Sendable (Int) throws -> Void) throws {
        try DataSetParallel.forEach(n, body)
    }

    /// Decodes the not-yet-cached images among `indices` into the cache.
    /// Call with the cache lock held.
    private func fillCache(_ cache: DecodedImageCache, indices: [Int]) throws {
        var missing: [Int] = []
        var seen = Set<Int>()
        for i in indices where !cache.decoded[i] && seen.insert(i).inserted { missing.append(i) }
        if missing.isEmpty { return }
        let todo = missing
        let base = DataSetPointer(cache.storage())
        let imageBytes = cache.imageBytes
        let plane = width * height
        try DetectionDataSet.parallelFor(todo.count) { k in
            let i = todo[k]
            let image = try decodeChecked(i)
            let dst = base.pointer + i * imageBytes
            image.pixels.withUnsafeBufferPointer { src in
                let s = src.baseAddress!
                for p in 0 ..< plane {
                    dst[p] = s[3 * p]
                    dst[plane + p] = s[3 * p + 1]
                    dst[2 * plane + p] = s[3 * p + 2]
                }
            }
        }
        for i in missing { cache.decoded[i] = true }
    }

    private func images(indices: [Int]) throws -> [Float] {
        let imageFloats = 3 * width * height
        var x = [Float](repeating: 0, count: indices.count * imageFloats)
        if let cache {
            try cache.withLock {
                try fillCache(cache, indices: indices)
                let base = DataSetPointer(cache.storage())
                x.withUnsafeMutableBufferPointer { out in
                    let outBase = DataSetPointer(out.baseAddress!)
                    // Plain widening copy; split over cores for large batches.
                    try? DetectionDataSet.parallelFor(indices.count) { n in
                        let src = base.pointer + indices[n] * imageFloats
                        let dst = outBase.pointer + n * imageFloats
                        for p in 0 ..< imageFloats { dst[p] = Float(src[p]) }
                    }
                }
            }
        } else {
            try x.withUnsafeMutableBufferPointer { out in
                let outBase = DataSetPointer(out.baseAddress!)
                try DetectionDataSet.parallelFor(indices.count) { n in
                    try decodeChecked(indices[n]).writeCHWFloats(into: outBase.pointer + n * imageFloats)
                }
            }
        }
        return x
    }
}

extension DetectionDataSet {
    /// A split whose images are the encoded `records` (RecordIO) and whose labels are
    /// `boxes` (in pixels), read from `directory` (which may hold classes.txt).
    init(root: String, split: Split, directory: String, records: RecordIOImages, boxes: [[Box]],
         width: Int, height: Int, cacheImages: Bool) throws {
        let classNames = try DetectionDataSet.readClassNames(directory + "/classes.txt")
        let maxLabel = boxes.lazy.flatMap { $0 }.map(\.label).max() ?? 0
        self.init(
            root: root, split: split, directory: directory, labelFile: records.path,
            imageNames: records.records.map { "record \($0.number)" }, boxes: boxes, firstLines: records.records.map(\.number),
            width: width, height: height,
            maxBoxes: boxes.map(\.count).max() ?? 0, classCount: classNames?.count ?? maxLabel + 1,
            classNames: classNames, boxLines: boxes.map { $0.map { _ in 0 } }, records: records,
            cache: cacheImages ? DecodedImageCache(count: boxes.count, imageBytes: 3 * width * height) : nil)
        if let classNames { try checkLabels(below: classNames.count, of: classesFile) }
    }
}

/// A raw pointer handed to parallel workers that write disjoint ranges.
struct DataSetPointer<T>: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<T>
    init(_ pointer: UnsafeMutablePointer<T>) { self.pointer = pointer }
}

/// Parallel loops for the data-set code.
enum DataSetParallel {
    /// Runs `body(i)` for i in 0..<n on all cores and rethrows the error of
    /// the lowest failing index (so the report does not depend on scheduling).
    /// Errors other than DetectionDataSetError are passed through as well.
    static func forEach(_ n: Int, _ body: @Sendable (Int) throws -> Void) throws {
        if n == 0 { return }
        if n == 1 { return try body(0) }
        let slots = UnsafeMutablePointer<ErrorBox?>.allocate(capacity: n)
        slots.initialize(repeating: nil, count: n)
        defer {
            slots.deinitialize(count: n)
            slots.deallocate()
        }
        let shared = DataSetPointer(slots)
        DispatchQueue.concurrentPerform(iterations: n) { i in
            do {
                try body(i)
            } catch {
                shared.pointer[i] = ErrorBox(error: error)
            }
        }
        for i in 0 ..< n { if let box = slots[i] { throw box.error } }
    }

    struct ErrorBox { var error: any Error }
}

/// Decoded pixels of a whole split, channel-major uint8, allocated on first
/// use. Shared by copies of a DetectionDataSet; guarded by `lock`.
private final class DecodedImageCache: @unchecked Sendable {
    let count: Int
    let imageBytes: Int
    var decoded: [Bool]
    private var buffer: UnsafeMutablePointer<UInt8>?
    private let lock = NSLock()

    init(count: Int, imageBytes: Int) {
        self.count = count
        self.imageBytes = imageBytes
        decoded = [Bool](repeating: false, count: count)
    }

    deinit { buffer?.deallocate() }

    /// The storage (count * imageBytes bytes); call with the lock held.
    func storage() -> UnsafeMutablePointer<UInt8> {
        if let buffer { return buffer }
        let b = UnsafeMutablePointer<UInt8>.allocate(capacity: max(count * imageBytes, 1))
        buffer = b
        return b
    }

    func withLock<T>(_ body: () throws -> T) throws -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }
}

// MARK: - Epoch order

/// The order in which a training loop visits a data set: a fresh shuffle per
/// epoch (deterministic for `seed` and the epoch number, independent of the
/// platform's random number generator) cut into batches of `batchSize`, the
/// last batch possibly smaller.
public struct EpochOrder: Sendable, Equatable {
    public let count: Int
    public let batchSize: Int
    public let shuffle: Bool
    public let seed: UInt64

    public init(count: Int, batchSize: Int, shuffle: Bool = true, seed: UInt64 = 0) {
        precondition(count >= 0, "EpochOrder: negative count \(count)")
        precondition(batchSize > 0, "EpochOrder: batchSize must be positive, got \(batchSize)")
        self.count = count
        self.batchSize = batchSize
        self.shuffle = shuffle
        self.seed = seed
    }

    /// Batches per epoch, counting the last partial batch.
    public var batchesPerEpoch: Int { (count + batchSize - 1) / batchSize }

    /// The epoch's visiting order: a permutation of 0..<count (the identity
    /// when `shuffle` is false).
    public func permutation(epoch: Int) -> [Int] {
        var order = Array(0 ..< count)
        guard shuffle, count > 1 else { return order }
        var rng = DataShuffleRNG(seed: seed, stream: UInt64(bitPattern: Int64(epoch)))
        // Fisher-Yates, from the top.
        for i in stride(from: count - 1, to: 0, by: -1) {
            let j = Int(rng.next(below: UInt64(i + 1)))
            order.swapAt(i, j)
        }
        return order
    }

    /// The epoch's batches of indices, in order; all have `batchSize`
    /// elements except possibly the last.
    public func batches(epoch: Int) -> [[Int]] {
        let order = permutation(epoch: epoch)
        return stride(from: 0, to: count, by: batchSize).map {
            Array(order[$0 ..< min($0 + batchSize, count)])
        }
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and fully specified,
/// so shuffles are reproducible everywhere.
private struct DataShuffleRNG {
    private var state: UInt64

    init(seed: UInt64, stream: UInt64) {
        // Decorrelate (seed, epoch) pairs by mixing the stream in once.
        state = seed
        state ^= DataShuffleRNG.mix(stream &+ 0x632B_E59B_D9B4_E019)
    }

    static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return DataShuffleRNG.mix(state)
    }

    /// Uniform in 0..<bound without modulo bias (rejection sampling).
    mutating func next(below bound: UInt64) -> UInt64 {
        precondition(bound > 0)
        let limit = UInt64.max - UInt64.max % bound // multiples of bound below this are unbiased
        while true {
            let r = next()
            if r < limit { return r % bound }
        }
    }
}
