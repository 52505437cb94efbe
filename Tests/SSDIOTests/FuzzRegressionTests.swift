import Foundation
import XCTest

import SSDIO

/// Inputs that scripts/fuzz.sh found (or that were found while building it) stay here as tests.
/// The seed corpora in Tests/Fuzz/corpus are replayed too, so a crashing input added there by
/// hand is a test at once: a trap would end the test process.
final class FuzzRegressionTests: XCTestCase {
    private let header = "img_name,label,xmin,ymin,xmax,ymax\n"

    /// A banana-layout data set with one 8x8 image, a.png, and `label` as its label.csv.
    private func makeSet(label: [UInt8]) throws -> String {
        let root = try TestSupport.makeTempDirectory(self)
        try RGBImage(width: 8, height: 8, fill: .green).savePNG(to: root + "/bananas_train/images/a.png")
        try TestSupport.writeFile(label, to: root + "/bananas_train/label.csv")
        return root
    }

    private func corpus(_ target: String) throws -> [(name: String, bytes: [UInt8])] {
        let dir = TestSupport.packageRoot.appendingPathComponent("Tests/Fuzz/corpus/\(target)").path
        return try FileManager.default.contentsOfDirectory(atPath: dir).sorted().map {
            ($0, try TestSupport.readFile(dir + "/" + $0))
        }
    }

    /// label 9223372036854775807 (Int.max) trapped on `maxLabel + 1` (the class count).
    func testHugeClassLabelIsAnErrorAtItsLine() throws {
        for label in ["9223372036854775807", "\(DetectionDataSet.maxClassCount)"] {
            let root = try makeSet(label: Array((header + "a.png,\(label),1,1,4,5\n").utf8))
            XCTAssertThrowsError(try DetectionDataSet.load(root: root, split: .train)) { error in
                let text = "\(error)"
                XCTAssertTrue(text.contains("label.csv:2:") && text.contains("too large"), text)
            }
        }
        let root = try makeSet(label: Array((header + "a.png,\(DetectionDataSet.maxClassCount - 1),1,1,4,5\n").utf8))
        XCTAssertEqual(try DetectionDataSet.load(root: root, split: .train).classCount, DetectionDataSet.maxClassCount)
    }

    /// A 389-byte progressive JPEG claiming 65296x16383 pixels made libjpeg allocate gigabytes
    /// (libFuzzer: out-of-memory); a PNG header can claim as much. Both are refused up front.
    func testHugeImageHeadersAreRefusedBeforeDecoding() throws {
        let dir = TestSupport.packageRoot.appendingPathComponent("Tests/Fuzz/corpus/image").path
        for (file, size) in [("regress_jpeg_huge_header.jpg", "65296x16383"), ("regress_png_huge_header.png", "20000x20000")] {
            XCTAssertThrowsError(try RGBImage.decode(TestSupport.readFile(dir + "/" + file), source: file)) { error in
                guard let e = error as? ImageIOError else { return XCTFail("\(file): \(error)") }
                XCTAssertEqual(e.kind, .unsupported, "\(e)")
                XCTAssertTrue(e.detail.contains("image is \(size), more than the limit"), "\(e)")
            }
        }
    }

    func testLabelCorpusReplays() throws {
        let files = try corpus("labels")
        XCTAssertFalse(files.isEmpty)
        for (name, bytes) in files {
            let root = try makeSet(label: bytes)
            if let set = try? DetectionDataSet.load(root: root, split: .train, cacheImages: false) {
                XCTAssertTrue(set.labels(indices: Array(0 ..< set.count)).allSatisfy(\.isFinite), name)
            }
        }
    }

    func testSafeTensorsCorpusReplays() throws {
        let files = try corpus("safetensors")
        XCTAssertFalse(files.isEmpty)
        for (name, bytes) in files {
            guard let (tensors, metadata) = try? SafeTensors.decode(bytes, source: name) else { continue }
            let again = try SafeTensors.decode(SafeTensors.encode(tensors, metadata: metadata))
            XCTAssertEqual(again.tensors, tensors, name)
            XCTAssertEqual(again.metadata, metadata, name)
        }
    }

    func testImageCorpusReplays() throws {
        let files = try corpus("image")
        XCTAssertFalse(files.isEmpty)
        for (name, bytes) in files {
            guard let image = try? RGBImage.decode(bytes, source: name) else { continue }
            XCTAssertEqual(try RGBImage.decode(image.pngData()), image, name)
        }
    }
}
