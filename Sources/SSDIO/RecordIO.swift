// Detection data packed as MXNet RecordIO (what `im2rec` writes, e.g. the Pikachu set of the
// chapter's Gluon version):
//
//   ROOT/train.rec, ROOT/train.idx    the training split (the .idx is optional)
//   ROOT/val.rec,   ROOT/val.idx      the validation split
//   ROOT/classes.txt                  optional: class names, one a line, class 0 first
//
// A .rec file is a sequence of records. Each record is the uint32 magic 0xced7230a, a uint32
// `lrecord` (upper 3 bits: continuation flag, lower 29 bits: length), then `length` bytes of
// payload padded with zeros to a multiple of 4. A payload that held the magic at a 4-byte
// aligned position is stored in parts (flag 1 = first, 2 = middle, 3 = last), the magic
// itself being dropped at each cut; reading puts it back.
//
// A detection payload is an IRHeader {uint32 flag; float label; uint64 id; uint64 id2}, then
// `flag` float labels, then the encoded image (JPEG or PNG). The labels are: header width A
// (>= 2), object width B (>= 5), A - 2 further header values, then one object of B floats
// each: class, xmin, ymin, xmax, ymax in 0...1 of the image (further values ignored). An
// object of class -1 is padding and is skipped.
//
// The .idx file has one `key<TAB>offset` line per record, offset being the record's first
// byte in the .rec; when there is one, the split is the records it lists, in its order.
// All little-endian (as MXNet writes them on every platform it runs on).

import Foundation

/// Reading MXNet RecordIO files.
public enum RecordIO {
    /// The first four bytes of every record.
    public static let magic: UInt32 = 0xCED7_230A
    /// Bytes of the IRHeader that starts an image record.
    public static let imageHeaderSize = 24

    /// One logical record: its payload and where its first part starts in the file.
    public struct Record: Sendable, Equatable {
        /// 0-based position in the file.
        public var number: Int
        /// Byte offset of the record's first part (its magic).
        public var offset: Int
        public var payload: [UInt8]

        public init(number: Int, offset: Int, payload: [UInt8]) {
            self.number = number
            self.offset = offset
            self.payload = payload
        }
    }

    /// Splits the bytes of a .rec file (named `path` in errors) into records.
    public static func records(in bytes: [UInt8], path: String) throws -> [Record] {
        var records: [Record] = []
        var position = 0
        while position < bytes.count {
            let number = records.count
            let start = position
            var payload: [UInt8] = []
            // Parts of one logical record: flag 0 alone, or 1, 2..., 3.
            var expectMore = true
            var first = true
            while expectMore {
                let part = try readPart(bytes, at: position, path: path, record: number, recordOffset: start)
                switch (part.flag, first) {
                case (0, true): expectMore = false
                case (1, true): break
                case (2, false): break
                case (3, false): expectMore = false
                default:
                    throw RecordIOError.at(path, number, start, first
                        ? "continuation flag \(part.flag) at the start of a record (expected 0 or 1)"
                        : "part at byte offset \(position) has continuation flag \(part.flag) (expected 2 or 3)")
                }
                if !first { payload += withUnsafeBytes(of: magic.littleEndian, Array.init) }
                payload += bytes[part.payload]
                position = part.next
                first = false
                if expectMore && position >= bytes.count {
                    throw RecordIOError.at(path, number, start, "truncated: the file ends inside a record split in parts")
                }
            }
            records.append(Record(number: number, offset: start, payload: payload))
        }
        return records
    }

    private struct Part {
        var flag: UInt32
        var payload: Range<Int>
        var next: Int
    }

    /// One physical part at `offset`: magic, lrecord, payload, padding.
    private static func readPart(_ bytes: [UInt8], at offset: Int, path: String, record: Int, recordOffset: Int) throws -> Part {
        guard bytes.count - offset >= 8 else {
            throw RecordIOError.at(path, record, recordOffset,
                                   "truncated: \(bytes.count - offset) bytes left where an 8-byte record header belongs")
        }
        let found = uint32(bytes, offset)
        guard found == magic else {
            let part = offset == recordOffset ? "" : " in its part at byte offset \(offset)"
            throw RecordIOError.at(path, record, recordOffset, "bad magic 0x\(hex(found))\(part) (expected 0x\(hex(magic)))")
        }
        let lrecord = uint32(bytes, offset + 4)
        let flag = lrecord >> 29, length = Int(lrecord & (1 << 29 - 1))
        let begin = offset + 8
        guard bytes.count - begin >= length else {
            throw RecordIOError.at(path, record, recordOffset,
                                   "truncated: the header gives \(length) bytes of payload but only \(bytes.count - begin) remain")
        }
        // The padding of the last record may be missing; everything else must be there.
        let next = min(begin + (length + 3) / 4 * 4, bytes.count)
        return Part(flag: flag, payload: begin ..< begin + length, next: next)
    }

    /// The `key -> offset` lines of a .idx file, in file order.
    public static func index(_ text: String, path: String) throws -> [(key: Int, offset: Int, line: Int)] {
        var entries: [(key: Int, offset: Int, line: Int)] = []
        let lines = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" })
        for (i, line) in lines.enumerated() where !line.allSatisfy({ $0 == " " || $0 == "\t" }) {
            let fields = line.split(whereSeparator: { $0 == "\t" || $0 == " " })
            guard fields.count == 2, let key = Int(fields[0]), let offset = Int(fields[1]), offset >= 0 else {
                throw DetectionDataSetError(path: path, line: i + 1, "expected 'index<TAB>byte offset', found '\(line)'")
            }
            entries.append((key, offset, i + 1))
        }
        return entries
    }

    /// A detection record's objects and image bytes.
    public struct DetectionRecord: Sendable, Equatable {
        /// IRHeader.id (im2rec's image index).
        public var id: UInt64
        /// (class, xmin, ymin, xmax, ymax), corners in 0...1; padding objects left out.
        public var objects: [(label: Int, xmin: Float, ymin: Float, xmax: Float, ymax: Float)]
        /// The encoded image.
        public var image: [UInt8]

        public static func == (a: DetectionRecord, b: DetectionRecord) -> Bool {
            a.id == b.id && a.image == b.image && a.objects.elementsEqual(b.objects) { $0 == $1 }
        }
    }

    /// Parses an image record's IRHeader and detection label.
    public static func detection(_ record: Record, path: String) throws -> DetectionRecord {
        let p = record.payload
        func fail(_ message: String) -> DetectionDataSetError { RecordIOError.at(path, record.number, record.offset, message) }
        guard p.count >= imageHeaderSize else {
            throw fail("truncated: \(p.count) bytes of payload, less than the \(imageHeaderSize)-byte image header")
        }
        let count = Int(uint32(p, 0))
        let id = UInt64(uint32(p, 8)) | UInt64(uint32(p, 12)) << 32
        guard count > 0 else {
            throw fail("the image header holds a single label (flag 0); a detection record needs its label array "
                + "(header width, object width, objects)")
        }
        guard count <= (p.count - imageHeaderSize) / 4 else {
            throw fail("truncated: the header announces \(count) label floats but the payload holds only "
                + "\((p.count - imageHeaderSize) / 4) after it")
        }
        let label = (0 ..< count).map { Float(bitPattern: uint32(p, imageHeaderSize + 4 * $0)) }
        guard count >= 2, label[0] >= 2, label[0] == label[0].rounded(), Int(label[0]) <= count else {
            throw fail("label header width \(count >= 1 ? fmt(label[0]) : "missing") is not an integer from 2 to the "
                + "label's \(count) floats")
        }
        let a = Int(label[0])
        guard label[1] >= 5, label[1] == label[1].rounded(), label[1] <= Float(count) else {
            throw fail("label object width \(fmt(label[1])) is not an integer >= 5 (class, xmin, ymin, xmax, ymax)")
        }
        let b = Int(label[1])
        guard (count - a) % b == 0 else {
            throw fail("label width \(count) does not divide into objects: \(count) floats - header width \(a) = "
                + "\(count - a), not a multiple of the object width \(b)")
        }
        var objects: [(label: Int, xmin: Float, ymin: Float, xmax: Float, ymax: Float)] = []
        for j in 0 ..< (count - a) / b {
            let o = a + j * b
            let c = label[o]
            if c == -1 { continue }
            guard c >= 0, c == c.rounded(), c < Float(DetectionDataSet.maxClassCount) else {
                throw fail("object \(j): class \(fmt(c)) is out of range (an integer 0...\(DetectionDataSet.maxClassCount - 1), "
                    + "or -1 for padding)")
            }
            let (x0, y0, x1, y1) = (label[o + 1], label[o + 2], label[o + 3], label[o + 4])
            guard [x0, y0, x1, y1].allSatisfy({ $0.isFinite && $0 >= 0 && $0 <= 1 }), x0 < x1, y0 < y1 else {
                throw fail("object \(j): box (\(fmt(x0)), \(fmt(y0)), \(fmt(x1)), \(fmt(y1))) is not inside 0...1 "
                    + "with xmin < xmax and ymin < ymax")
            }
            objects.append((Int(c), x0, y0, x1, y1))
        }
        return DetectionRecord(id: id, objects: objects, image: Array(p[(imageHeaderSize + 4 * count)...]))
    }

    @inline(__always) static func uint32(_ bytes: [UInt8], _ o: Int) -> UInt32 {
        UInt32(bytes[o]) | UInt32(bytes[o + 1]) << 8 | UInt32(bytes[o + 2]) << 16 | UInt32(bytes[o + 3]) << 24
    }

    private static func hex(_ v: UInt32) -> String { String(v, radix: 16, uppercase: false) }

    private static func fmt(_ v: Float) -> String {
        v == v.rounded() && abs(v) < 1e9 ? String(Int(v)) : String(v)
    }
}

/// Messages about a record name the file, the record's number and its byte offset.
enum RecordIOError {
    static func at(_ path: String, _ record: Int, _ offset: Int, _ message: String) -> DetectionDataSetError {
        DetectionDataSetError(path: path, "record \(record) at byte offset \(offset): \(message)")
    }
}

/// The encoded images of one RecordIO split, decoded on demand by DetectionDataSet.
final class RecordIOImages: Sendable {
    /// The .rec file.
    let path: String
    /// Per image of the split: its record's number and offset (for messages) and its bytes.
    let records: [(number: Int, offset: Int, image: [UInt8])]

    init(path: String, records: [(number: Int, offset: Int, image: [UInt8])]) {
        self.path = path
        self.records = records
    }

    /// Decodes image `index`; errors name the record.
    func decode(_ index: Int) throws -> RGBImage {
        let r = records[index]
        do {
            return try RGBImage.decode(r.image, source: path)
        } catch let error as ImageIOError {
            throw RecordIOError.at(path, r.number, r.offset, "image does not decode: \(error.detail)")
        }
    }

    /// "record 3 at byte offset 1234".
    func location(_ index: Int) -> String {
        "record \(records[index].number) at byte offset \(records[index].offset)"
    }
}

extension DetectionDataSet {
    /// `root/<split>.rec` (the RecordIO layout).
    public static func recordFile(root: String, split: Split) -> String {
        (root.hasSuffix("/") ? root : root + "/") + split.rawValue + ".rec"
    }

    /// Loads a split of the RecordIO layout: every record of `root/<split>.rec`, or those that
    /// `root/<split>.idx` lists when it exists. The image size is that of the first image;
    /// the others are checked when they are decoded.
    static func loadRecordIO(root: String, split: Split, cacheImages: Bool) throws -> DetectionDataSet {
        let recFile = recordFile(root: root, split: split)
        let bytes: [UInt8]
        do {
            bytes = try FileIO.readAll(recFile)
        } catch {
            throw DetectionDataSetError(path: recFile, "cannot read: \(error.reason)")
        }
        let all = try RecordIO.records(in: bytes, path: recFile)
        let chosen = try selectIndexed(all, idxFile: String(recFile.dropLast(4)) + ".idx", recFile: recFile)
        guard !chosen.isEmpty else { throw DetectionDataSetError(path: recFile, "no records") }
        let parsed = try chosen.map { try RecordIO.detection($0, path: recFile) }
        let images = RecordIOImages(path: recFile, records: zip(chosen, parsed).map { ($0.number, $0.offset, $1.image) })
        let first = try images.decode(0)
        let w = Float(first.width), h = Float(first.height)
        let boxes = parsed.map { record in
            record.objects.map { Box(label: $0.label, xmin: $0.xmin * w, ymin: $0.ymin * h, xmax: $0.xmax * w, ymax: $0.ymax * h) }
        }
        return try DetectionDataSet(root: root, split: split, directory: root, records: images, boxes: boxes,
                                    width: first.width, height: first.height, cacheImages: cacheImages)
    }

    /// The records listed by `idxFile` in its order, or all of them when there is no such file.
    private static func selectIndexed(_ all: [RecordIO.Record], idxFile: String, recFile: String) throws -> [RecordIO.Record] {
        let bytes: [UInt8]
        do {
            bytes = try FileIO.readAll(idxFile)
        } catch {
            if case .notFound = error.kind { return all }
            throw DetectionDataSetError(path: idxFile, "cannot read: \(error.reason)")
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw DetectionDataSetError(path: idxFile, "not UTF-8 text")
        }
        var byOffset: [Int: Int] = [:]
        for (i, r) in all.enumerated() { byOffset[r.offset] = i }
        var seen: [Int: Int] = [:]
        return try RecordIO.index(text, path: idxFile).map { entry in
            guard let i = byOffset[entry.offset] else {
                throw DetectionDataSetError(path: idxFile, line: entry.line,
                                            "offset \(entry.offset) of key \(entry.key) is not the start of a record in \(recFile)")
            }
            if let earlier = seen[entry.offset] {
                throw DetectionDataSetError(path: idxFile, line: entry.line, "offset \(entry.offset) already listed at line \(earlier)")
            }
            seen[entry.offset] = entry.line
            return all[i]
        }
    }
}
