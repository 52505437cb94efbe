import Foundation
import XCTest
import SSDIO

/// Writes RecordIO detection records the way MXNet's im2rec does (the format of RecordIO.swift),
/// so the reader is tested on files built here byte by byte.
private enum RecordWriter {
    static let magic: [UInt8] = [0x0A, 0x23, 0xD7, 0xCE]

    static func le32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }
    static func le64(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }

    /// One record: a single part, or parts cut at each 4-byte aligned magic in the payload.
    static func record(_ payload: [UInt8]) -> [UInt8] {
        var parts: [ArraySlice<UInt8>] = []
        var start = 0
        for i in stride(from: 0, to: payload.count - payload.count % 4, by: 4) where Array(payload[i ..< i + 4]) == magic {
            parts.append(payload[start ..< i])
            start = i + 4
        }
        parts.append(payload[start...])
        var out: [UInt8] = []
        for (k, part) in parts.enumerated() {
            let flag: UInt32 = parts.count == 1 ? 0 : (k == 0 ? 1 : (k == parts.count - 1 ? 3 : 2))
            out += magic + le32(flag << 29 | UInt32(part.count)) + part
            out += [UInt8](repeating: 0, count: (4 - part.count % 4) % 4)
        }
        return out
    }

    /// IRHeader, the label floats, the image bytes.
    static func payload(label: [Float], image: [UInt8], id: UInt64 = 0) -> [UInt8] {
        le32(UInt32(label.count)) + le32(Float(0).bitPattern) + le64(id) + le64(0)
            + label.flatMap { le32($0.bitPattern) } + image
    }

    /// A detection label: header [4, 5, width, height], then the objects' five floats each.
    static func detectionLabel(_ objects: [[Float]], width: Int, height: Int) -> [Float] {
        [4, 5, Float(width), Float(height)] + objects.flatMap { $0 }
    }

    /// Writes `payloads` as `dir/<split>.rec` and, unless `index` is false, `<split>.idx`.
    /// Returns each record's offset.
    @discardableResult
    static func write(_ payloads: [[UInt8]], split: String, to dir: String, index: Bool = true) throws -> [Int] {
        var rec: [UInt8] = []
        var offsets: [Int] = []
        for p in payloads {
            offsets.append(rec.count)
            rec += record(p)
        }
        try TestSupport.writeFile(rec, to: "\(dir)/\(split).rec")
        if index {
            let idx = offsets.enumerated().map { "\($0)\t\($1)\n" }.joined()
            try TestSupport.writeFile(Array(idx.utf8), to: "\(dir)/\(split).idx")
        }
        return offsets
    }
}

final class RecordIOTests: XCTestCase {
    /// A 32x24 PNG: grey with a coloured rectangle at (x0, y0)...(x1, y1) exclusive.
    private func picture(_ x0: Int, _ y0: Int, _ x1: Int, _ y1: Int, _ color: RGBImage.Color) throws -> RGBImage {
        var image = RGBImage(width: 32, height: 24, fill: .init(90, 90, 90))
        image.fillRectangle(x0: x0, y0: y0, x1: x1 - 1, y1: y1 - 1, color: color)
        return image
    }

    private func expectError(_ mentions: [String], file: StaticString = #filePath, line: UInt = #line,
                             _ body: () throws -> Void) {
        do {
            try body()
            XCTFail("expected an error mentioning \(mentions)", file: file, line: line)
        } catch let error as DetectionDataSetError {
            for m in mentions {
                XCTAssertTrue(error.description.contains(m), "'\(error)' does not mention '\(m)'", file: file, line: line)
            }
        } catch {
            XCTFail("unexpected error type: \(error)", file: file, line: line)
        }
    }

    /// Three records of 32x24 images with 1, 2 and 0 objects (the third has a padding row).
    private func writeSmallSet(in dir: String) throws -> [RGBImage] {
        let images = [try picture(4, 6, 12, 18, .red), try picture(16, 2, 30, 10, .blue), try picture(0, 0, 1, 1, .green)]
        let labels: [[[Float]]] = [
            [[0, 4 / 32, 6 / 24, 12 / 32, 18 / 24]],
            [[1, 16 / 32, 2 / 24, 30 / 32, 10 / 24], [0, 0, 0, 0.5, 0.5]],
            [[-1, 0, 0, 0, 0]],
        ]
        let payloads = try zip(images, labels).enumerated().map { i, pair in
            RecordWriter.payload(label: RecordWriter.detectionLabel(pair.1, width: 32, height: 24),
                                 image: try pair.0.pngData(), id: UInt64(i))
        }
        try RecordWriter.write(payloads, split: "train", to: dir)
        return images
    }

    func testReadsBoxesAndPixelsOfRecords() throws {
        let dir = try TestSupport.makeTempDirectory(self)
        let images = try writeSmallSet(in: dir)
        let data = try DetectionDataSet.load(root: dir, split: .train)
        XCTAssertEqual(data.count, 3)
        XCTAssertEqual(data.width, 32)
        XCTAssertEqual(data.height, 24)
        XCTAssertEqual(data.maxBoxes, 2)
        XCTAssertEqual(data.classCount, 2)
        XCTAssertNil(data.classNames)
        XCTAssertEqual(data.location, dir + "/train.rec")
        XCTAssertEqual(data.boxes[0], [.init(label: 0, xmin: 4, ymin: 6, xmax: 12, ymax: 18)])
        XCTAssertEqual(data.boxes[1].map(\.label), [1, 0])
        XCTAssertEqual(data.boxes[2], [], "a class -1 object is padding")
        let (x, y) = try data.batch(indices: [1, 0, 2])
        XCTAssertEqual(x, [1, 0, 2].flatMap { images[$0].toCHWFloats() })
        let expected: [Float] = [1, 16 / 32, 2 / 24, 30 / 32, 10 / 24, 0, 0, 0, 0.5, 0.5,
                                 0, 4 / 32, 6 / 24, 12 / 32, 18 / 24, -1, 0, 0, 0, 0,
                                 -1, 0, 0, 0, 0, -1, 0, 0, 0, 0]
        XCTAssertEqual(y.count, expected.count)
        for (a, b) in zip(y, expected) { XCTAssertEqual(a, b, accuracy: 1e-6) }
    }

    func testJPEGRecordsDecode() throws {
        let dir = try TestSupport.makeTempDirectory(self)
        let jpeg = try TestSupport.readFile(TestSupport.fixtureFile("images/banana.jpg"))
        let label = RecordWriter.detectionLabel([[0, 0.25, 0.25, 0.75, 0.5]], width: 256, height: 256)
        try RecordWriter.write([RecordWriter.payload(label: label, image: jpeg)], split: "val", to: dir, index: false)
        let data = try DetectionDataSet.load(root: dir, split: .val)
        XCTAssertEqual(data.boxes[0], [.init(label: 0, xmin: 64, ymin: 64, xmax: 192, ymax: 128)])
        XCTAssertEqual(try data.batch(indices: [0]).x, try RGBImage.load(TestSupport.fixtureFile("images/banana.jpg")).toCHWFloats())
    }

    /// The packer's output for a generated multi-class set (scripts/pack_recordio.py on
    /// `SyntheticShapes.generate(trainCount: 3, valCount: 2, size: 64, seed: 9)`) reads back as
    /// the generator's images and boxes. MXNet 1.9.1's reader read the same files, and its
    /// writer wrote identical bytes from their records.
    func testPackedFixtureMatchesTheGenerator() throws {
        let root = TestSupport.fixtureFile("tiny-shapes-rec")
        for (split, count) in [(DetectionDataSet.Split.train, 3), (.val, 2)] {
            let data = try DetectionDataSet.load(root: root, split: split)
            XCTAssertEqual(data.count, count)
            XCTAssertEqual(data.classNames, SyntheticShapes.classNames)
            for i in 0 ..< count {
                let sample = SyntheticShapes.makeSample(index: i, split: split, size: 64, seed: 9)
                XCTAssertEqual(try data.image(at: i), sample.image, "\(split) \(i)")
                XCTAssertEqual(data.boxes[i], sample.objects.map {
                    .init(label: $0.label, xmin: Float($0.xmin), ymin: Float($0.ymin), xmax: Float($0.xmax), ymax: Float($0.ymax))
                }, "\(split) \(i)")
            }
        }
    }

    func testIndexFileChoosesAndOrdersRecords() throws {
        let dir = try TestSupport.makeTempDirectory(self)
        _ = try writeSmallSet(in: dir)
        let offsets = try RecordIO.records(in: TestSupport.readFile(dir + "/train.rec"), path: "train.rec").map(\.offset)
        try TestSupport.writeFile(Array("7\t\(offsets[2])\n3\t\(offsets[0])\n".utf8), to: dir + "/train.idx")
        let data = try DetectionDataSet.load(root: dir, split: .train)
        XCTAssertEqual(data.imageNames, ["record 2", "record 0"])
        XCTAssertEqual(data.boxes[1], [.init(label: 0, xmin: 4, ymin: 6, xmax: 12, ymax: 18)])

        try TestSupport.writeFile(Array("0\t0\n1\t5\n".utf8), to: dir + "/train.idx")
        expectError([dir + "/train.idx:2", "offset 5 of key 1 is not the start of a record"]) {
            _ = try DetectionDataSet.load(root: dir, split: .train)
        }
        try TestSupport.writeFile(Array("0 zero\n".utf8), to: dir + "/train.idx")
        expectError([dir + "/train.idx:1", "expected 'index<TAB>byte offset'"]) {
            _ = try DetectionDataSet.load(root: dir, split: .train)
        }
    }

    /// A payload holding the magic at 4-byte aligned offsets is stored in parts; these bytes
    /// are what MXNet 1.9.1's MXRecordIO.write gives for it.
    func testRecordSplitInParts() throws {
        let payload = Array("abcd".utf8) + RecordWriter.magic + Array("efghijkl".utf8) + RecordWriter.magic + Array("xyz".utf8)
        let file = TestSupport.bytes(hex: "0a23d7ce04000020616263640a23d7ce0800004065666768696a6b6c0a23d7ce0300006078797a00")
        XCTAssertEqual(RecordWriter.record(payload), file)
        let records = try RecordIO.records(in: file + RecordWriter.record([1, 2, 3, 4, 5]), path: "x.rec")
        XCTAssertEqual(records, [.init(number: 0, offset: 0, payload: payload), .init(number: 1, offset: file.count, payload: [1, 2, 3, 4, 5])])

        // A first part never followed by its last.
        expectError(["x.rec", "record 0 at byte offset 0", "truncated"]) {
            _ = try RecordIO.records(in: Array(file[0 ..< 12]), path: "x.rec")
        }
        // A middle part where a record starts.
        expectError(["record 0 at byte offset 0", "continuation flag 2 at the start of a record"]) {
            _ = try RecordIO.records(in: Array(file[12 ..< 28]), path: "x.rec")
        }
    }

    // MARK: Corrupt files, each a clear error naming file, record and offset

    func testBadMagicAndTruncation() throws {
        let dir = try TestSupport.makeTempDirectory(self)
        _ = try writeSmallSet(in: dir)
        let path = dir + "/train.rec"
        let good = try TestSupport.readFile(path)
        let offsets = try RecordIO.records(in: good, path: path).map(\.offset)

        var bad = good
        bad[offsets[1]] ^= 0xFF
        try TestSupport.writeFile(bad, to: path)
        expectError([path, "record 1 at byte offset \(offsets[1])", "bad magic 0xced723f5", "expected 0xced7230a"]) {
            _ = try DetectionDataSet.load(root: dir, split: .train)
        }

        try TestSupport.writeFile(Array(good[0 ..< offsets[2] + 40]), to: path)
        expectError([path, "record 2 at byte offset \(offsets[2])", "truncated: the header gives"]) {
            _ = try DetectionDataSet.load(root: dir, split: .train)
        }
        try TestSupport.writeFile(Array(good[0 ..< offsets[2] + 5]), to: path)
        expectError([path, "record 2 at byte offset \(offsets[2])", "truncated: 5 bytes left"]) {
            _ = try DetectionDataSet.load(root: dir, split: .train)
        }
    }

    /// Writes one record with `label` (and a good PNG unless `image` is given) and expects
    /// loading, then decoding, to fail mentioning `mentions`.
    private func expectRecordError(label: [Float], image: [UInt8]? = nil, classes: String? = nil, _ mentions: [String],
                                   file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = try TestSupport.makeTempDirectory(self)
        let png = try picture(1, 1, 5, 5, .red).pngData()
        let good = RecordWriter.payload(label: RecordWriter.detectionLabel([[0, 0, 0, 0.5, 0.5]], width: 32, height: 24), image: png)
        try RecordWriter.write([good, RecordWriter.payload(label: label, image: image ?? png)], split: "train", to: dir)
        if let classes { try TestSupport.writeFile(Array(classes.utf8), to: dir + "/classes.txt") }
        let offset = RecordWriter.record(good).count
        expectError([dir + "/train.rec", "record 1 at byte offset \(offset)"] + mentions, file: file, line: line) {
            let data = try DetectionDataSet.load(root: dir, split: .train)
            _ = try data.batch(indices: [0, 1])
        }
    }

    func testBadLabelsAndImages() throws {
        try expectRecordError(label: [4, 5, 32, 24, 0, 0.1, 0.1, 0.2, 0.2, 1, 0.3],
                              ["label width 11 does not divide into objects", "not a multiple of the object width 5"])
        try expectRecordError(label: [1, 5, 0, 0, 0, 1, 1], ["label header width 1 is not an integer from 2"])
        try expectRecordError(label: [2, 4, 0, 0, 1, 1], ["label object width 4 is not an integer >= 5"])
        try expectRecordError(label: [2, 5, 2.5, 0, 0, 1, 1], ["object 0: class 2.5 is out of range"])
        try expectRecordError(label: [2, 5, -3, 0, 0, 1, 1], ["object 0: class -3 is out of range"])
        try expectRecordError(label: [2, 5, 0, 0.5, 0, 0.25, 1], ["object 0: box (0.5, 0, 0.25, 1) is not inside 0...1"])
        try expectRecordError(label: [2, 5, 0, 0, 0, 1.5, 1], ["is not inside 0...1"])
        try expectRecordError(label: [], ["single label (flag 0)"])
        try expectRecordError(label: [2, 5, 1, 0, 0, 1, 1], classes: "only\n",
                              ["class 1 is outside the 1 class of ", "/classes.txt (0...0)"])
        try expectRecordError(label: [2, 5, 0, 0, 0, 1, 1], image: Array("not an image".utf8),
                              ["image does not decode", "not a PNG or JPEG"])
        try expectRecordError(label: [2, 5, 0, 0, 0, 1, 1], image: try RGBImage(width: 8, height: 8).pngData(),
                              ["image is 8x8, expected 32x24"])
    }

    func testHeaderAnnouncingMoreLabelsThanThePayloadHolds() throws {
        var payload = RecordWriter.payload(label: [2, 5, 0, 0, 0, 1, 1], image: [])
        payload.replaceSubrange(0 ..< 4, with: RecordWriter.le32(1000))
        let record = RecordIO.Record(number: 4, offset: 96, payload: payload)
        XCTAssertThrowsError(try RecordIO.detection(record, path: "p.rec")) { error in
            XCTAssertEqual("\(error)", "p.rec: record 4 at byte offset 96: truncated: the header announces 1000 label floats "
                + "but the payload holds only 7 after it")
        }
    }

    func testMissingSplitNamesBothLayouts() throws {
        let dir = try TestSupport.makeTempDirectory(self)
        _ = try writeSmallSet(in: dir)
        expectError([dir + "/bananas_val/label.csv", "missing label file", "or RecordIO files ROOT/train.rec, ROOT/val.rec"]) {
            _ = try DetectionDataSet.load(root: dir, split: .val)
        }
    }
}
