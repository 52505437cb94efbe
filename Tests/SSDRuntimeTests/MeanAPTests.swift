import SSDRuntime
import XCTest

final class MeanAPTests: XCTestCase {
    typealias B = MeanAveragePrecision.Box

    func testPerfectDetectionsGiveOne() {
        var m = MeanAveragePrecision()
        m.add(detections: [(0, 0.9, B(0, 0, 0.5, 0.5))], truth: [(0, B(0, 0, 0.5, 0.5))])
        m.add(detections: [(0, 0.8, B(0.2, 0.2, 0.6, 0.6))], truth: [(0, B(0.2, 0.2, 0.6, 0.6))])
        XCTAssertEqual(m.mean, 1, accuracy: 1e-12)
    }

    func testFalsePositiveRankedFirstAndAMiss() {
        // Scores: FP 0.9, TP 0.8; one of two truths never found.
        var m = MeanAveragePrecision()
        m.add(detections: [(0, 0.9, B(0.6, 0.6, 0.9, 0.9)), (0, 0.8, B(0, 0, 0.5, 0.5))],
              truth: [(0, B(0, 0, 0.5, 0.5)), (0, B(0.1, 0.6, 0.3, 0.9))])
        // PR points: (r 0, p 0), (r 0.5, p 0.5) -> AP = 0.5 * 0.5.
        XCTAssertEqual(m.averagePrecision(ofClass: 0)!, 0.25, accuracy: 1e-12)
    }

    func testDuplicateDetectionIsAFalsePositiveAndIoUThreshold() {
        var m = MeanAveragePrecision()
        m.add(detections: [(0, 0.9, B(0, 0, 0.5, 0.5)), (0, 0.8, B(0, 0, 0.5, 0.5)), (1, 0.7, B(0, 0, 0.2, 0.2))],
              truth: [(0, B(0, 0, 0.5, 0.5)), (1, B(0, 0, 0.5, 0.5))])
        XCTAssertEqual(m.averagePrecision(ofClass: 0)!, 1, accuracy: 1e-12)  // the duplicate comes after full recall
        XCTAssertEqual(m.averagePrecision(ofClass: 1)!, 0, accuracy: 1e-12)  // IoU 0.16 < 0.5
        XCTAssertEqual(m.mean, 0.5, accuracy: 1e-12)
    }
}

final class IgnoredObjectsTests: XCTestCase {
    typealias B = MeanAveragePrecision.Box

    func testADetectionOfAnIgnoredObjectIsNeitherFoundNorFalse() {
        // Ranked first: a detection of the ignored object. Counted as a false positive it
        // would halve AP; ignored, the one truth is found at precision 1.
        var m = MeanAveragePrecision(), strict = MeanAveragePrecision()
        let dets: [(cls: Int, score: Float, box: B)] = [(0, 0.9, B(0.8, 0, 1, 0.3)), (0, 0.8, B(0, 0, 0.5, 0.5))]
        m.add(detections: dets, truth: [(0, B(0, 0, 0.5, 0.5))], ignoring: [(0, B(0.8, 0, 1, 0.3))])
        strict.add(detections: dets, truth: [(0, B(0, 0, 0.5, 0.5))])
        XCTAssertEqual(m.mean, 1, accuracy: 1e-12)
        XCTAssertEqual(strict.mean, 0.5, accuracy: 1e-12)
        // Only a match counts: a detection far from the ignored object is still false, and
        // an ignored object of another class does not excuse it.
        var far = MeanAveragePrecision()
        far.add(detections: [(0, 0.9, B(0.5, 0.5, 0.7, 0.7)), (0, 0.8, B(0, 0, 0.5, 0.5))], truth: [(0, B(0, 0, 0.5, 0.5))],
                ignoring: [(0, B(0.8, 0, 1, 0.3)), (1, B(0.5, 0.5, 0.7, 0.7))])
        XCTAssertEqual(far.mean, 0.5, accuracy: 1e-12)
        // An ignored object is never missed: it adds nothing to the truths to find.
        var alone = MeanAveragePrecision()
        alone.add(detections: [(0, 0.8, B(0, 0, 0.5, 0.5))], truth: [(0, B(0, 0, 0.5, 0.5))], ignoring: [(0, B(0.8, 0, 1, 0.3))])
        XCTAssertEqual(alone.mean, 1, accuracy: 1e-12)
    }

    func testDetectionsAreClippedToThePicture() {
        XCTAssertEqual(detectionBoxInPicture([-0.1, 0.2, 1.3, 0.9] as [Float]), [0, 0.2, 1, 0.9])
        // A box reaching past the edge of a cut object fits it once clipped (IoU 0.44 -> 0.64).
        let truth = B(87 / 256, 208 / 256, 131 / 256, 1), reaching = B(87.3 / 256, 220.9 / 256, 139.6 / 256, 276.8 / 256)
        let c = detectionBoxInPicture([reaching.xmin, reaching.ymin, reaching.xmax, reaching.ymax])
        var raw = MeanAveragePrecision(), clipped = MeanAveragePrecision()
        raw.add(detections: [(0, 0.9, reaching)], truth: [(0, truth)])
        clipped.add(detections: [(0, 0.9, B(c[0], c[1], c[2], c[3]))], truth: [(0, truth)])
        XCTAssertEqual(raw.mean, 0)
        XCTAssertEqual(clipped.mean, 1)
    }
}

final class COCOMeanAPTests: XCTestCase {
    typealias B = MeanAveragePrecision.Box

    func testCOCOMeanAveragesTheTenThresholds() {
        var m = COCOMeanAveragePrecision()
        XCTAssertEqual(COCOMeanAveragePrecision.thresholds.first, 0.5)
        XCTAssertEqual(COCOMeanAveragePrecision.thresholds.last!, 0.95, accuracy: 1e-6)
        // One detection of IoU 0.72 with its truth: found at thresholds 0.5...0.7 (5 of 10).
        m.add(detections: [(0, 0.9, B(0, 0, 1, 0.72))], truth: [(0, B(0, 0, 1, 1))])
        XCTAssertEqual(m.mean50, 1, accuracy: 1e-12)
        XCTAssertEqual(m.mean, 0.5, accuracy: 1e-12)
        var exact = COCOMeanAveragePrecision()
        exact.add(detections: [(0, 0.9, B(0, 0, 1, 1))], truth: [(0, B(0, 0, 1, 1))])
        XCTAssertEqual(exact.mean, 1, accuracy: 1e-12)
    }
}
