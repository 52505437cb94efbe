import Foundation
import XCTest
@testable import SSDIO

final class SyntheticShapesTests: XCTestCase {
    func testLayoutClassesAndRowsPerImage() throws {
        let root = try TestSupport.makeTempDirectory(self)
        try SyntheticShapes.generate(into: root, trainCount: 24, valCount: 6, size: 96, seed: 2)
        for (split, count) in [(DetectionDataSet.Split.train, 24), (.val, 6)] {
            let classes = try String(contentsOfFile: "\(root)/\(split.directoryName)/classes.txt", encoding: .utf8)
            XCTAssertEqual(classes, "disc\nsquare\ntriangle\nring\n")
            let data = try DetectionDataSet.load(root: root, split: split)
            XCTAssertEqual(data.count, count)
            XCTAssertEqual(data.classNames, SyntheticShapes.classNames)
            XCTAssertEqual(data.classCount, 4)
            XCTAssertTrue(data.boxes.allSatisfy { (1 ... 4).contains($0.count) }, "\(data.boxes.map(\.count))")
            for (i, boxes) in data.boxes.enumerated() {
                let sample = SyntheticShapes.makeSample(index: i, split: split, size: 96, seed: 2)
                XCTAssertEqual(try data.image(at: i), sample.image)
                XCTAssertEqual(boxes.map(\.label), sample.objects.map(\.label))
            }
            // Padding rows of images with fewer boxes than the largest count have class -1.
            let y = data.labels(indices: Array(0 ..< count))
            let g = data.maxBoxes
            for (i, boxes) in data.boxes.enumerated() {
                for j in 0 ..< g { XCTAssertEqual(y[(i * g + j) * 5] == -1, j >= boxes.count) }
            }
        }
        let train = try DetectionDataSet.load(root: root, split: .train)
        XCTAssertEqual(train.maxBoxes, 4)
        XCTAssertEqual(Set(train.boxes.map(\.count)), [1, 2, 3, 4])
    }

    /// Each box is the tight box of its object's pixels: every pixel drawn for it lies inside,
    /// and an object that nothing covers reaches all four sides. Pixels show the class colour.
    func testBoxesMatchDrawnPixels() {
        var overlapping = 0, classesSeen = Set<Int>()
        for index in 0 ..< 40 {
            let size = 128
            let sample = SyntheticShapes.makeSample(index: index, split: .train, size: size, seed: 5)
            for (k, o) in sample.objects.enumerated() {
                classesSeen.insert(o.label)
                var minX = Int.max, minY = Int.max, maxX = Int.min, maxY = Int.min
                for y in 0 ..< size {
                    for x in 0 ..< size where sample.owners[y * size + x] == k + 1 {
                        minX = min(minX, x); maxX = max(maxX, x)
                        minY = min(minY, y); maxY = max(maxY, y)
                    }
                }
                XCTAssertTrue(o.xmin <= minX && o.ymin <= minY && maxX < o.xmax && maxY < o.ymax,
                              "image \(index) object \(k): pixels outside its box")
                let covered = sample.objects[(k + 1)...].contains {
                    $0.xmin < o.xmax && o.xmin < $0.xmax && $0.ymin < o.ymax && o.ymin < $0.ymax
                }
                if covered {
                    overlapping += 1
                } else {
                    XCTAssertEqual([minX, minY, maxX + 1, maxY + 1], [o.xmin, o.ymin, o.xmax, o.ymax], "image \(index) object \(k)")
                }
                // The object's centre pixel (a ring: a pixel on its band) has its class colour.
                let cx = (o.xmin + o.xmax) / 2, cy = (o.ymin + o.ymax) / 2
                let (px, py) = o.label == 3 ? (cx, o.ymin + (o.ymax - o.ymin) / 8 + 1) : (cx, cy)
                if sample.owners[py * size + px] == k + 1 {
                    let c = sample.image[px, py], base = [(220, 45, 40), (40, 85, 225), (45, 185, 65), (160, 60, 210)][o.label]
                    let dominant = [Int(c.r), Int(c.g), Int(c.b)].enumerated().max { $0.element < $1.element }!.offset
                    let expected = [base.0, base.1, base.2].enumerated().max { $0.element < $1.element }!.offset
                    XCTAssertEqual(dominant, expected, "image \(index) object \(k) colour \(c)")
                }
            }
        }
        XCTAssertGreaterThan(overlapping, 0, "some objects overlap")
        XCTAssertEqual(classesSeen, [0, 1, 2, 3])
    }

    func testSameSeedSameBytes() throws {
        let a = try TestSupport.makeTempDirectory(self), b = try TestSupport.makeTempDirectory(self)
        let c = try TestSupport.makeTempDirectory(self)
        try SyntheticShapes.generate(into: a, trainCount: 6, valCount: 2, size: 64, seed: 7)
        try SyntheticShapes.generate(into: b, trainCount: 6, valCount: 2, size: 64, seed: 7)
        try SyntheticShapes.generate(into: c, trainCount: 6, valCount: 2, size: 64, seed: 8)
        let files = ["label.csv", "classes.txt"] + (0 ..< 6).map { "images/\($0).png" }
        for file in files.map({ "bananas_train/\($0)" }) + ["bananas_val/label.csv", "bananas_val/images/1.png"] {
            XCTAssertEqual(try TestSupport.readFile("\(a)/\(file)"), try TestSupport.readFile("\(b)/\(file)"), file)
        }
        XCTAssertNotEqual(try TestSupport.readFile("\(a)/bananas_train/label.csv"), try TestSupport.readFile("\(c)/bananas_train/label.csv"))
    }

    func testEnsureGeneratesOnceIntoPlace() throws {
        let root = try TestSupport.makeTempDirectory(self) + "/shapes"
        try SyntheticShapes.ensure(at: root, trainCount: 2, valCount: 1, size: 64)
        let label = "\(root)/bananas_train/label.csv"
        let first = try TestSupport.readFile(label)
        try SyntheticShapes.ensure(at: root, trainCount: 5, valCount: 1, size: 64)
        XCTAssertEqual(try TestSupport.readFile(label), first, "an existing set is kept")
        XCTAssertEqual(try DetectionDataSet.load(root: root, split: .val).classNames, SyntheticShapes.classNames)
    }
}
