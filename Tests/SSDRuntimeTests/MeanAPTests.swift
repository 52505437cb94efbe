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
