import Foundation
import XCTest
import SSDIO

final class DataSetTests: XCTestCase {
    // MARK: Helpers

    /// ../shared/data/banana-detection beside the package root, or skip.
    private func realDataRoot() throws -> String {
        let root = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent() // SSDIOTests
            .deletingLastPathComponent() // Tests
            .deletingLastPathComponent() // package root
            .deletingLastPathComponent() // its parent
            .appendingPathComponent("shared/data/banana-detection").path
        guard FileManager.default.fileExists(atPath: root + "/bananas_val/label.csv") else {
            throw XCTSkip("banana-detection data set not present at \(root)")
        }
        return root
    }

    private func tempDir() throws -> String {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("ssdio-dataset-tests-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }

    private func write(_ text: String, to path: String) throws {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    }

    /// A small data set: `images` (name -> side length, nil for none) and a label file.
    private func makeSet(label: String?, images: [String: Int] = ["a.png": 16, "b.png": 16],
                         split: DetectionDataSet.Split = .train) throws -> String
    {
        let root = try tempDir()
        let dir = "\(root)/\(split.directoryName)"
        try FileManager.default.createDirectory(atPath: dir + "/images", withIntermediateDirectories: true)
        for (name, side) in images {
            var image = RGBImage(width: side, height: side, fill: .init(10, 20, 30))
            image.fillRectangle(x0: 2, y0: 3, x1: 5, y1: 6, color: .yellow)
            try image.savePNG(to: "\(dir)/images/\(name)")
        }
        if let label { try write(label, to: dir + "/label.csv") }
        return root
    }

    private let header = "img_name,label,xmin,ymin,xmax,ymax\n"

    /// Expects `body` to throw a DetectionDataSetError whose message contains
    /// every string in `mentions`.
    private func assertDataSetError(_ mentions: [String], file: StaticString = #filePath, line: UInt = #line,
                                    _ body: () throws -> Void)
    {
        do {
            try body()
            XCTFail("expected an error mentioning \(mentions)", file: file, line: line)
        } catch let error as DetectionDataSetError {
            for m in mentions {
                XCTAssertTrue(error.description.contains(m), "'\(error)' does not mention '\(m)'", file: file, line: line)
            }
            XCTAssertEqual(error.localizedDescription, error.description, file: file, line: line)
        } catch {
            XCTFail("unexpected error type: \(error)", file: file, line: line)
        }
    }

    private func bytes(_ path: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    // MARK: The real banana-detection set (when ../shared is there; testTinyFixtureSplits runs everywhere)

    func testRealValidationSplit() throws {
        let root = try realDataRoot()
        let val = try DetectionDataSet.load(root: root, split: .val)
        XCTAssertEqual(val.count, 100)
        XCTAssertEqual(val.width, 256)
        XCTAssertEqual(val.height, 256)
        XCTAssertEqual(val.maxBoxes, 1)
        XCTAssertEqual(val.classCount, 1)
        XCTAssertEqual(val.imageNames.first, "0.png")
        XCTAssertEqual(val.boxes[0], [.init(label: 0, xmin: 183, ymin: 63, xmax: 241, ymax: 112)])

        let batch = try val.batch(indices: [0, 99, 5])
        XCTAssertEqual(batch.x.count, 3 * 3 * 256 * 256)
        XCTAssertEqual(batch.y.count, 3 * 1 * 5)
        let row0: [Float] = [0, 183 / 256, 63 / 256, 241 / 256, 112 / 256]
        XCTAssertEqual(Array(batch.y[0 ..< 5]), row0)
        // The pixels are the image's, channel-major, 0...255.
        let plane = 3 * 256 * 256
        for (n, i) in [0, 99, 5].enumerated() {
            let expected = try RGBImage.load(val.imagePath(i)).toCHWFloats()
            XCTAssertEqual(Array(batch.x[n * plane ..< (n + 1) * plane]), expected, "image \(i)")
        }
        XCTAssertEqual(batch.x.min(), 0)
        XCTAssertLessThanOrEqual(batch.x.max()!, 255)
        XCTAssertGreaterThan(batch.x.max()!, 200)
        // A second (cached) batch gives the same numbers.
        XCTAssertEqual(try val.batch(indices: [99]).x, Array(batch.x[plane ..< 2 * plane]))
        // Without the cache too.
        let uncached = try DetectionDataSet.load(root: root, split: .val, cacheImages: false)
        XCTAssertEqual(try uncached.batch(indices: [0, 99, 5]).x, batch.x)
        XCTAssertEqual(try uncached.image(at: 5).toCHWFloats(), Array(batch.x[2 * plane ..< 3 * plane]))

        // The whole split in batches of 32: 32, 32, 32, 4.
        let order = EpochOrder(count: val.count, batchSize: 32, seed: 7)
        let sizes = try order.batches(epoch: 0).map { indices -> Int in
            let b = try val.batch(indices: indices)
            XCTAssertEqual(b.x.count, indices.count * plane)
            XCTAssertEqual(b.y.count, indices.count * 5)
            return indices.count
        }
        XCTAssertEqual(sizes, [32, 32, 32, 4])
    }

    func testRealTrainSplit() throws {
        let root = try realDataRoot()
        let start = Date()
        let train = try DetectionDataSet.load(root: root, split: .train)
        XCTAssertEqual(train.count, 1000)
        XCTAssertEqual(train.width, 256)
        XCTAssertEqual(train.height, 256)
        XCTAssertEqual(train.maxBoxes, 1)
        XCTAssertEqual(train.imageNames[0], "0.png")
        XCTAssertEqual(train.boxes[0], [.init(label: 0, xmin: 104, ymin: 20, xmax: 143, ymax: 58)])
        let row0: [Float] = [0, 104 / 256, 20 / 256, 143 / 256, 58 / 256]
        let padding: [Float] = [-1, 0, 0, 0, 0]
        XCTAssertEqual(train.labels(indices: [0]), row0)
        XCTAssertEqual(train.labels(indices: [0], boxesPerImage: 2), row0 + padding)
        for b in train.boxes.joined() {
            XCTAssertEqual(b.label, 0)
            XCTAssertTrue(b.xmin >= 0 && b.xmin < b.xmax && b.xmax <= 256 && b.ymin >= 0 && b.ymin < b.ymax && b.ymax <= 256)
        }
        print("train split: labels and headers loaded in \(Date().timeIntervalSince(start)) s")

        // Decode everything once (parallel), then the partial last batch.
        let decodeStart = Date()
        try train.preload()
        print("train split: 1000 images decoded in \(Date().timeIntervalSince(decodeStart)) s")
        let order = EpochOrder(count: train.count, batchSize: 32, seed: 1)
        let batches = order.batches(epoch: 3)
        XCTAssertEqual(batches.count, 32)
        XCTAssertEqual(batches.last!.count, 8)
        let last = try train.batch(indices: batches.last!)
        XCTAssertEqual(last.x.count, 8 * 3 * 256 * 256)
        XCTAssertEqual(last.y.count, 8 * 5)
        XCTAssertEqual(try train.batch(indices: [0]).x, try RGBImage.load(train.imagePath(0)).toCHWFloats())
        let batchStart = Date()
        _ = try train.batch(indices: batches[0])
        print("train split: one cached batch of 32 in \(Date().timeIntervalSince(batchStart)) s")
    }

    // MARK: The committed tiny set (the same checks, on every machine)

    func testTinyFixtureSplits() throws {
        let root = TestSupport.fixtureFile("tiny-bananas")
        let train = try DetectionDataSet.load(root: root, split: .train)
        let val = try DetectionDataSet.load(root: root, split: .val)
        XCTAssertEqual(train.count, 4)
        XCTAssertEqual(val.count, 2)
        for set in [train, val] {
            XCTAssertEqual(set.width, 128)
            XCTAssertEqual(set.height, 128)
            XCTAssertEqual(set.maxBoxes, 1)
            XCTAssertEqual(set.classCount, 1)
        }
        XCTAssertEqual(train.imageNames, ["0.png", "1.png", "2.png", "3.png"])
        XCTAssertEqual(train.boxes[0], [.init(label: 0, xmin: 18, ymin: 52, xmax: 32, ymax: 63)])
        XCTAssertEqual(val.boxes[1], [.init(label: 0, xmin: 105, ymin: 36, xmax: 116, ymax: 52)])
        let row0: [Float] = [0, 18 / 128, 52 / 128, 32 / 128, 63 / 128]
        XCTAssertEqual(train.labels(indices: [0]), row0)
        XCTAssertEqual(train.labels(indices: [0], boxesPerImage: 2), row0 + [-1, 0, 0, 0, 0])

        let batch = try train.batch(indices: [3, 0, 2])
        let plane = 3 * 128 * 128
        XCTAssertEqual(batch.x.count, 3 * plane)
        XCTAssertEqual(Array(batch.y[5 ..< 10]), row0)
        // The pixels are the image's, channel-major, 0...255.
        for (n, i) in [3, 0, 2].enumerated() {
            let expected = try RGBImage.load(train.imagePath(i)).toCHWFloats()
            XCTAssertEqual(Array(batch.x[n * plane ..< (n + 1) * plane]), expected, "image \(i)")
        }
        XCTAssertGreaterThan(batch.x.max()!, 200)
        XCTAssertLessThanOrEqual(batch.x.max()!, 255)
        // Cached, uncached and preloaded give the same numbers.
        XCTAssertEqual(try train.batch(indices: [0]).x, Array(batch.x[plane ..< 2 * plane]))
        let uncached = try DetectionDataSet.load(root: root, split: .train, cacheImages: false)
        XCTAssertEqual(try uncached.batch(indices: [3, 0, 2]).x, batch.x)
        try train.preload()
        XCTAssertEqual(try train.batch(indices: [3, 0, 2]).x, batch.x)

        // The whole split in batches of 3: 3, then 1.
        let sizes = try EpochOrder(count: train.count, batchSize: 3, seed: 1).batches(epoch: 2).map { indices -> Int in
            let b = try train.batch(indices: indices)
            XCTAssertEqual(b.x.count, indices.count * plane)
            XCTAssertEqual(b.y.count, indices.count * 5)
            return indices.count
        }
        XCTAssertEqual(sizes, [3, 1])
    }

    // MARK: Epoch order

    func testEpochOrderIsDeterministicPermutation() {
        let order = EpochOrder(count: 100, batchSize: 32, seed: 42)
        XCTAssertEqual(order.batchesPerEpoch, 4)
        let p0 = order.permutation(epoch: 0)
        XCTAssertEqual(p0.sorted(), Array(0 ..< 100))
        XCTAssertNotEqual(p0, Array(0 ..< 100))
        XCTAssertEqual(p0, EpochOrder(count: 100, batchSize: 32, seed: 42).permutation(epoch: 0))
        XCTAssertNotEqual(p0, order.permutation(epoch: 1))
        XCTAssertNotEqual(p0, EpochOrder(count: 100, batchSize: 32, seed: 43).permutation(epoch: 0))
        // The exact order is fixed by our own SplitMix64 + Fisher-Yates, not by the platform.
        XCTAssertEqual(Array(EpochOrder(count: 10, batchSize: 4, seed: 0).permutation(epoch: 0)).sorted(), Array(0 ..< 10))

        let batches = order.batches(epoch: 0)
        XCTAssertEqual(batches.map(\.count), [32, 32, 32, 4])
        XCTAssertEqual(Array(batches.joined()), p0)

        // Every epoch is a permutation; the first elements vary across epochs.
        var firsts = Set<Int>()
        for epoch in 0 ..< 20 {
            let p = order.permutation(epoch: epoch)
            XCTAssertEqual(p.sorted(), Array(0 ..< 100))
            firsts.insert(p[0])
        }
        XCTAssertGreaterThan(firsts.count, 10)

        let plain = EpochOrder(count: 5, batchSize: 2, shuffle: false)
        XCTAssertEqual(plain.batches(epoch: 9), [[0, 1], [2, 3], [4]])
        XCTAssertEqual(EpochOrder(count: 3, batchSize: 32).batches(epoch: 0).map(\.count), [3])
        XCTAssertEqual(EpochOrder(count: 0, batchSize: 32).batches(epoch: 0), [])
        XCTAssertEqual(EpochOrder(count: 64, batchSize: 32).batchesPerEpoch, 2)
    }

    func testShuffleIsRoughlyUniform() {
        // Position of element 0 over many epochs: every slot of 8 should be hit.
        let order = EpochOrder(count: 8, batchSize: 8, seed: 5)
        var counts = [Int](repeating: 0, count: 8)
        for epoch in 0 ..< 4000 { counts[order.permutation(epoch: epoch).firstIndex(of: 0)!] += 1 }
        for c in counts { XCTAssertTrue((380 ... 620).contains(c), "position counts \(counts)") }
    }

    // MARK: Malformed input

    func testMissingLabelFile() throws {
        let root = try makeSet(label: nil)
        assertDataSetError(["bananas_train/label.csv", "missing"]) {
            _ = try DetectionDataSet.load(root: root, split: .train)
        }
        assertDataSetError(["bananas_val/label.csv"]) { _ = try DetectionDataSet.load(root: root, split: .val) }
    }

    func testWrongHeader() throws {
        let root = try makeSet(label: "name,label,xmin,ymin,xmax,ymax\na.png,0,1,1,4,4\n")
        assertDataSetError(["label.csv:1:", "header"]) { _ = try DetectionDataSet.load(root: root, split: .train) }
        let empty = try makeSet(label: "")
        assertDataSetError(["label.csv", "empty"]) { _ = try DetectionDataSet.load(root: empty, split: .train) }
        let noRows = try makeSet(label: header)
        assertDataSetError(["label.csv", "no data rows"]) { _ = try DetectionDataSet.load(root: noRows, split: .train) }
    }

    func testRowErrorsNameFileAndLine() throws {
        let cases: [(row: String, mentions: [String])] = [
            ("b.png,0,1,1,4", ["expected 6 fields", "found 5"]),
            ("b.png,0,1,1,4,4,9", ["expected 6 fields", "found 7"]),
            ("b.png,zero,1,1,4,4", ["label 'zero' is not a number"]),
            ("b.png,0.5,1,1,4,4", ["not an integer"]),
            ("b.png,0,1,abc,4,4", ["ymin 'abc' is not a number"]),
            ("b.png,0,1,1,nan,4", ["xmax 'nan' is not a number"]),
            ("b.png,0,1,1,4,", ["ymax '' is not a number"]),
            ("b.png,-1,1,1,4,4", ["negative class -1"]),
            ("b.png,0,4,1,4,4", ["xmin 4 >= xmax 4"]),
            ("b.png,0,5,1,4,4", ["xmin 5 >= xmax 4"]),
            ("b.png,0,1,6,4,3", ["ymin 6 >= ymax 3"]),
            ("b.png,0,1,1,17,4", ["outside", "16x16", "b.png"]),
            ("b.png,0,-1,1,4,4", ["outside"]),
            ("b.png,0,1,1,4,16.5", ["outside"]),
            (",0,1,1,4,4", ["empty img_name"]),
            ("../b.png,0,1,1,4,4", ["inside images/"]),
        ]
        for (row, mentions) in cases {
            // The bad row is on line 4 (after a blank line that is skipped but counted).
            let root = try makeSet(label: header + "a.png,0,1,1,4,4\n\n" + row + "\n")
            assertDataSetError(["bananas_train/label.csv:4: "] + mentions) {
                _ = try DetectionDataSet.load(root: root, split: .train)
            }
        }
    }

    func testMissingAndCorruptImages() throws {
        // Listed but absent.
        let missing = try makeSet(label: header + "a.png,0,1,1,4,4\nc.png,0,1,1,4,4\n")
        assertDataSetError(["images/c.png", "not found", "label.csv:3"]) {
            _ = try DetectionDataSet.load(root: missing, split: .train)
        }
        // Not an image at all.
        let garbage = try makeSet(label: header + "a.png,0,1,1,4,4\nb.png,0,1,1,4,4\n")
        try write("this is not a png", to: garbage + "/bananas_train/images/b.png")
        assertDataSetError(["images/b.png", "label.csv:3"]) { _ = try DetectionDataSet.load(root: garbage, split: .train) }
        // A directory in place of an image.
        let directory = try makeSet(label: header + "a.png,0,1,1,4,4\nd.png,0,1,1,4,4\n")
        try FileManager.default.createDirectory(atPath: directory + "/bananas_train/images/d.png",
                                                withIntermediateDirectories: true)
        assertDataSetError(["images/d.png"]) { _ = try DetectionDataSet.load(root: directory, split: .train) }

        // A truncated PNG whose header is intact: loading succeeds (it only
        // reads headers), decoding reports the image.
        let truncated = try makeSet(label: header + "a.png,0,1,1,4,4\nb.png,0,1,1,4,4\n")
        let path = truncated + "/bananas_train/images/b.png"
        let png = try bytes(path)
        try Data(png.prefix(40)).write(to: URL(fileURLWithPath: path))
        let set = try DetectionDataSet.load(root: truncated, split: .train)
        XCTAssertEqual(set.count, 2)
        XCTAssertNoThrow(try set.batch(indices: [0]))
        assertDataSetError(["images/b.png", "label.csv:3"]) { _ = try set.batch(indices: [0, 1]) }
        assertDataSetError(["images/b.png"]) { try set.preload() }
        let uncached = try DetectionDataSet.load(root: truncated, split: .train, cacheImages: false)
        assertDataSetError(["images/b.png"]) { _ = try uncached.batch(indices: [1]) }
        assertDataSetError(["out of range"]) { _ = try set.batch(indices: [2]) }
    }

    func testImagesOfDifferentSizes() throws {
        let root = try makeSet(label: header + "a.png,0,1,1,4,4\nb.png,0,1,1,4,4\n", images: ["a.png": 16, "b.png": 20])
        assertDataSetError(["images/b.png", "20x20", "16x16"]) { _ = try DetectionDataSet.load(root: root, split: .train) }
    }

    func testSeveralBoxesPerImageAndPadding() throws {
        let root = try makeSet(
            label: "\u{FEFF}img_name, label, xmin, ymin, xmax, ymax\r\n"
                + "b.png,0,1,2,5,6\r\n" + "a.png,1,0,0,16,16\r\n" + "b.png,2,8,8,12,14\r\n" + "b.png,2,8,8,12,14\r\n")
        let set = try DetectionDataSet.load(root: root, split: .train)
        XCTAssertEqual(set.imageNames, ["b.png", "a.png"])
        XCTAssertEqual(set.count, 2)
        XCTAssertEqual(set.maxBoxes, 3) // duplicate rows are separate boxes
        XCTAssertEqual(set.classCount, 3)
        XCTAssertEqual(set.boxes[0].count, 3)
        let batch = try set.batch(indices: [1, 0])
        XCTAssertEqual(batch.x.count, 2 * 3 * 16 * 16)
        let s: Float = 16
        let expectedY: [Float] = [
            1, 0, 0, 1, 1,
            -1, 0, 0, 0, 0,
            -1, 0, 0, 0, 0,
            0, 1 / s, 2 / s, 5 / s, 6 / s,
            2, 8 / s, 8 / s, 12 / s, 14 / s,
            2, 8 / s, 8 / s, 12 / s, 14 / s,
        ]
        XCTAssertEqual(batch.y, expectedY)
        // Pixel check: the yellow square at x 2...5, y 3...6 over (10, 20, 30).
        let plane = 16 * 16
        XCTAssertEqual(batch.x[0], 10)
        XCTAssertEqual(batch.x[plane], 20)
        XCTAssertEqual(batch.x[2 * plane], 30)
        XCTAssertEqual(batch.x[3 * 16 + 2], 255)
        XCTAssertEqual(batch.x[plane + 3 * 16 + 2], 255)
        XCTAssertEqual(batch.x[2 * plane + 3 * 16 + 2], 0)
        XCTAssertEqual(try set.batch(indices: [0], boxesPerImage: 4).y.count, 20)
    }

    // MARK: Synthetic data

    func testSyntheticIsDeterministicAndLoads() throws {
        let a = try tempDir(), b = try tempDir(), c = try tempDir()
        let start = Date()
        try SyntheticBananas.generate(into: a, trainCount: 12, valCount: 4, seed: 3)
        print("synthetic: 16 images in \(Date().timeIntervalSince(start)) s")
        try SyntheticBananas.generate(into: b, trainCount: 12, valCount: 4, seed: 3)
        try SyntheticBananas.generate(into: c, trainCount: 12, valCount: 4, seed: 4)
        for split in DetectionDataSet.Split.allCases {
            let dir = "/\(split.directoryName)"
            XCTAssertEqual(try bytes(a + dir + "/label.csv"), try bytes(b + dir + "/label.csv"))
            XCTAssertNotEqual(try bytes(a + dir + "/label.csv"), try bytes(c + dir + "/label.csv"))
            for i in 0 ..< (split == .train ? 12 : 4) {
                let name = "\(dir)/images/\(i).png"
                XCTAssertEqual(try bytes(a + name), try bytes(b + name), name)
                XCTAssertNotEqual(try bytes(a + name), try bytes(c + name), name)
            }
        }
        // Train and val images differ.
        XCTAssertNotEqual(try bytes(a + "/bananas_train/images/0.png"), try bytes(a + "/bananas_val/images/0.png"))

        let train = try DetectionDataSet.load(root: a, split: .train)
        let val = try DetectionDataSet.load(root: a, split: .val)
        XCTAssertEqual(train.count, 12)
        XCTAssertEqual(val.count, 4)
        XCTAssertEqual(train.width, 256)
        XCTAssertEqual(train.maxBoxes, 1)
        XCTAssertEqual(train.classCount, 1)
        for set in [train, val] {
            for i in 0 ..< set.count {
                let box = set.boxes[i][0]
                XCTAssertEqual(box.label, 0)
                XCTAssertTrue(box.xmin >= 0 && box.ymin >= 0 && box.xmax <= 256 && box.ymax <= 256, "\(box)")
                let w = box.xmax - box.xmin, h = box.ymax - box.ymin
                XCTAssertTrue(max(w, h) >= 18 && max(w, h) <= 70 && min(w, h) >= 6, "box size \(w)x\(h)")
                // The box is mostly about the banana: yellow pixels inside,
                // and its outer rows/columns touch the object (tightness).
                let image = try set.image(at: i)
                func yellow(_ x: Int, _ y: Int) -> Bool {
                    let p = image[x, y]
                    return p.r > 170 && p.g > 130 && p.b < 120 && Int(p.r) - Int(p.b) > 110
                }
                let x0 = Int(box.xmin), y0 = Int(box.ymin), x1 = Int(box.xmax) - 1, y1 = Int(box.ymax) - 1
                var inside = 0
                for y in y0 ... y1 { for x in x0 ... x1 where yellow(x, y) { inside += 1 } }
                XCTAssertGreaterThan(inside, Int(w * h) / 8, "image \(i): too few yellow pixels in its box")
            }
        }
        // The sample API matches the files.
        let sample = SyntheticBananas.makeSample(index: 5, split: .train, seed: 3)
        XCTAssertEqual(try train.image(at: 5), sample.image)
        XCTAssertEqual(train.boxes[5][0], .init(label: 0, xmin: Float(sample.xmin), ymin: Float(sample.ymin),
                                                xmax: Float(sample.xmax), ymax: Float(sample.ymax)))
    }

    func testSyntheticSmallSize() throws {
        for size in [32, 64] {
            for i in 0 ..< 20 {
                let s = SyntheticBananas.makeSample(index: i, split: .val, size: size, seed: 1)
                XCTAssertEqual(s.image.width, size)
                XCTAssertTrue(s.xmin >= 0 && s.ymin >= 0 && s.xmin < s.xmax && s.ymin < s.ymax
                    && s.xmax <= size && s.ymax <= size, "\(size): \(s.xmin),\(s.ymin),\(s.xmax),\(s.ymax)")
            }
        }
    }

    func testEnsureGeneratesOnceAtomically() throws {
        let parent = try tempDir()
        let root = parent + "/nested/synthetic"
        XCTAssertEqual(try SyntheticBananas.ensure(at: root, trainCount: 3, valCount: 2), root)
        XCTAssertEqual(try DetectionDataSet.load(root: root, split: .train).count, 3)
        XCTAssertEqual(try DetectionDataSet.load(root: root, split: .val).count, 2)
        // No temporary directories left beside it.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: parent + "/nested"), ["synthetic"])

        // A second call keeps what is there.
        let label = root + "/bananas_train/label.csv"
        let marked = try String(contentsOfFile: label, encoding: .utf8) + "0.png,0,1,1,2,2\n"
        try write(marked, to: label)
        _ = try SyntheticBananas.ensure(at: root, trainCount: 3, valCount: 2)
        XCTAssertEqual(try String(contentsOfFile: label, encoding: .utf8), marked)

        // An existing empty directory is filled.
        let empty = parent + "/empty"
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        _ = try SyntheticBananas.ensure(at: empty + "/", trainCount: 2, valCount: 1)
        XCTAssertEqual(try DetectionDataSet.load(root: empty, split: .train).count, 2)

        // A non-empty directory without the splits gets them added.
        let other = parent + "/other"
        try write("keep me", to: other + "/README")
        _ = try SyntheticBananas.ensure(at: other, trainCount: 2, valCount: 1)
        XCTAssertEqual(try DetectionDataSet.load(root: other, split: .val).count, 1)
        XCTAssertEqual(try String(contentsOfFile: other + "/README", encoding: .utf8), "keep me")

        // A half-present set is not silently mixed with new data.
        let half = parent + "/half"
        try write("x", to: half + "/bananas_val/label.csv")
        assertDataSetError(["bananas_val", "exists"]) { _ = try SyntheticBananas.ensure(at: half, trainCount: 2, valCount: 1) }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: parent).sorted(),
                       ["empty", "half", "nested", "other"])
    }
}
