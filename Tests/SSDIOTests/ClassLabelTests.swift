import Foundation
import SSDIO
import XCTest

/// Class labels against the class count of a model or of the data set's classes.txt: a
/// typo in label.csv is an error at its line, not an extra class.
final class ClassLabelTests: XCTestCase {
    /// A data set of two 16x16 images with `label` as label.csv and, when given, `classes`
    /// as classes.txt beside it.
    private func makeSet(label: String, classes: String? = nil) throws -> String {
        let root = try TestSupport.makeTempDirectory(self)
        let dir = root + "/bananas_train"
        try FileManager.default.createDirectory(atPath: dir + "/images", withIntermediateDirectories: true)
        for name in ["a.png", "b.png"] {
            try RGBImage(width: 16, height: 16, fill: .init(10, 20, 30)).savePNG(to: "\(dir)/images/\(name)")
        }
        try Data(("img_name,label,xmin,ymin,xmax,ymax\n" + label).utf8).write(to: URL(fileURLWithPath: dir + "/label.csv"))
        if let classes { try Data(classes.utf8).write(to: URL(fileURLWithPath: dir + "/classes.txt")) }
        return root
    }

    private func message(_ body: () throws -> Void) -> String {
        do {
            try body()
            return "no error"
        } catch {
            return "\(error)"
        }
    }

    func testWithoutClassesFileTheCountComesFromTheLabels() throws {
        let data = try DetectionDataSet.load(root: try makeSet(label: "a.png,0,1,1,5,5\nb.png,2,1,1,5,5\n"), split: .train)
        XCTAssertNil(data.classNames)
        XCTAssertEqual(data.classCount, 3)
    }

    func testALabelTypoIsReportedAtItsLineAgainstTheModel() throws {
        let root = try makeSet(label: "a.png,0,1,1,5,5\nb.png,0,2,2,6,6\na.png,7,1,1,5,5\n")
        let data = try DetectionDataSet.load(root: root, split: .train)
        XCTAssertNoThrow(try data.validate(classCount: 8, of: "model big"))
        let m = message { try data.validate(classCount: 1, of: "model tinyssd") }
        XCTAssertTrue(m.hasSuffix("bananas_train/label.csv:4: class 7 is outside the 1 class of model tinyssd (0...0)"), m)
    }

    func testTheFirstBadLineIsReportedEvenWhenItsImageComesLater() throws {
        // Boxes are grouped by image; the report must still give the earliest line.
        let data = try DetectionDataSet.load(root: try makeSet(label: "a.png,0,1,1,5,5\nb.png,5,1,1,5,5\na.png,3,1,1,5,5\n"),
                                             split: .train)
        let m = message { try data.validate(classCount: 2, of: "model two") }
        XCTAssertTrue(m.contains("label.csv:3: class 5 is outside the 2 classes of model two"), m)
    }

    func testClassesFileGivesNamesAndCount() throws {
        let data = try DetectionDataSet.load(root: try makeSet(label: "a.png,0,1,1,5,5\nb.png,1,1,1,5,5\n",
                                                               classes: "banana\n apple \n\npear\n"), split: .train)
        XCTAssertEqual(data.classNames, ["banana", "apple", "pear"])
        XCTAssertEqual(data.classCount, 3, "classes.txt, not the largest label, gives the count")
        XCTAssertNoThrow(try data.validate(classCount: 3, of: "model m"))
        let m = message { try data.validate(classCount: 2, of: "model m") }
        XCTAssertTrue(m.hasSuffix("bananas_train/classes.txt: names 3 classes but model m has 2"), m)
    }

    func testALabelOutsideClassesFileFailsTheLoad() throws {
        let root = try makeSet(label: "a.png,0,1,1,5,5\nb.png,7,1,1,5,5\n", classes: "banana\n")
        let m = message { _ = try DetectionDataSet.load(root: root, split: .train) }
        XCTAssertTrue(m.hasSuffix("bananas_train/label.csv:3: class 7 is outside the 1 class of \(root)/bananas_train/classes.txt (0...0)"), m)
    }

    func testBadClassesFilesAreNamed() throws {
        let dup = try makeSet(label: "a.png,0,1,1,5,5\n", classes: "banana\napple\nbanana\n")
        var m = message { _ = try DetectionDataSet.load(root: dup, split: .train) }
        XCTAssertTrue(m.hasSuffix("classes.txt:3: class name 'banana' already given at line 1"), m)
        let empty = try makeSet(label: "a.png,0,1,1,5,5\n", classes: "\n  \n")
        m = message { _ = try DetectionDataSet.load(root: empty, split: .train) }
        XCTAssertTrue(m.hasSuffix("classes.txt: no class names (expected one a line, class 0 first)"), m)
        XCTAssertNil(try DetectionDataSet.readClassNames(dup + "/bananas_val/classes.txt"), "no file: no names")
    }
}
