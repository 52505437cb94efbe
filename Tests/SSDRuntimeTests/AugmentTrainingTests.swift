import Foundation
import SSDCompiler
import SSDDriver
import SSDIO
@testable import SSDRuntime
import XCTest

/// The training side of augmentation: `none` is the plain batch, the pipeline keeps the
/// order, the learning-rate schedules, validation mAP every epoch and curves.png.
final class AugmentTrainingTests: XCTestCase {
    static let root: String = {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ssdc-augtrain-data-\(getpid())").path
        try! SyntheticBananas.generate(into: dir, trainCount: 12, valCount: 4, size: 64, seed: 6)
        return dir
    }()

    override class func tearDown() { try? FileManager.default.removeItem(atPath: root) }

    func testAugmentNoneGivesExactlyThePlainBatch() throws {
        let data = try DetectionDataSet.load(root: Self.root, split: .train)
        let plain = try data.batch(indices: [5, 2, 9], boxesPerImage: 2)
        let none = try TrainBatchSource(data: data, augmentation: nil, seed: 4, boxesPerImage: 2).batch(indices: [5, 2, 9], epoch: 3)
        XCTAssertEqual(none.x, plain.x)
        XCTAssertEqual(none.y, plain.y)
        let ssd = try TrainBatchSource(data: data, augmentation: AugmentOptions(), seed: 4, boxesPerImage: 2).batch(indices: [5, 2, 9], epoch: 3)
        XCTAssertNotEqual(ssd.x, plain.x)
    }

    func testPipelineHandsOutItemsInOrderWhateverTheTiming() throws {
        let p = BatchPipeline(count: 20, depth: 3) { k -> Int in
            usleep(UInt32((k * 7919) % 5) * 1000)
            return k * k
        }
        var got: [Int] = []
        for k in 0..<20 {
            if k % 4 == 0 { usleep(3000) }
            got.append(try p.next())
        }
        XCTAssertEqual(got, (0..<20).map { $0 * $0 })
    }

    func testPipelineThrowsAnItemsErrorInItsPlace() throws {
        struct Failure: Error {}
        let p = BatchPipeline(count: 5) { k -> Int in
            if k == 2 { throw Failure() }
            return k
        }
        XCTAssertEqual(try p.next(), 0)
        XCTAssertEqual(try p.next(), 1)
        XCTAssertThrowsError(try p.next())
    }

    func testPipelinedAugmentedBatchesEqualSequentialOnes() throws {
        let data = try DetectionDataSet.load(root: Self.root, split: .train)
        let source = TrainBatchSource(data: data, augmentation: AugmentOptions(), seed: 2, boxesPerImage: 1)
        let batches = EpochOrder(count: data.count, batchSize: 5, seed: 2).batches(epoch: 1)
        let p = BatchPipeline(count: batches.count) { b in try source.batch(indices: batches[b], epoch: 1) }
        for indices in batches {
            let a = try p.next(), b = try source.batch(indices: indices, epoch: 1)
            XCTAssertEqual(a.x, b.x)
            XCTAssertEqual(a.y, b.y)
        }
    }

    func testLearningRateSchedules() {
        let constant = LRSchedule()
        XCTAssertEqual((0..<30).map { constant.rate(base: 0.2, step: $0, stepsPerEpoch: 3, epochs: 10) }, Array(repeating: 0.2, count: 30))
        var step = LRSchedule(kind: .step)
        step.stepEpochs = 2
        step.stepFactor = 0.5
        // 3 steps an epoch: epochs 1-2 at 0.2, 3-4 at 0.1, 5 at 0.05.
        XCTAssertEqual([0, 5, 6, 11, 12].map { step.rate(base: 0.2, step: $0, stepsPerEpoch: 3, epochs: 5) }, [0.2, 0.2, 0.1, 0.1, 0.05])
        var cosine = LRSchedule(kind: .cosine)
        cosine.minLR = 0.02
        XCTAssertEqual(cosine.rate(base: 0.2, step: 0, stepsPerEpoch: 4, epochs: 10), 0.2, accuracy: 1e-7)
        XCTAssertEqual(cosine.rate(base: 0.2, step: 20, stepsPerEpoch: 4, epochs: 10), 0.11, accuracy: 1e-6)  // halfway
        XCTAssertEqual(cosine.rate(base: 0.2, step: 40, stepsPerEpoch: 4, epochs: 10), 0.02, accuracy: 1e-7)
        var warm = LRSchedule(kind: .cosine)
        warm.warmupEpochs = 1
        XCTAssertEqual((0..<4).map { warm.rate(base: 0.2, step: $0, stepsPerEpoch: 4, epochs: 5) }, [0.05, 0.1, 0.15, 0.2])
        XCTAssertEqual(warm.rate(base: 0.2, step: 12, stepsPerEpoch: 4, epochs: 5), 0.1, accuracy: 1e-6, "cosine halfway after the warm-up")
        var bad = LRSchedule(kind: .step)
        bad.stepFactor = 0
        XCTAssertEqual(bad.problems.count, 1)
    }

    func testCurvesAreAPNGWhoseLinesFollowTheValues() throws {
        let points = (1...5).map { CurvePoint(epoch: $0, loss: 1 / Double($0), classError: 0.1 / Double($0), bboxMAE: 0.01,
                                              validationMAP50: 0.2 * Double($0) - 0.1, validationMAP: 0.1 * Double($0)) }
        let image = TrainingCurves.draw(points)
        let decoded = try RGBImage.decode(try image.pngData())
        XCTAssertEqual([decoded.width, decoded.height], [TrainingCurves.width, TrainingCurves.height])
        var changed = points
        changed[2].validationMAP50 = 0.9
        changed[2].loss = 0.01
        let other = TrainingCurves.draw(changed)
        var differing = 0
        for i in stride(from: 0, to: image.pixels.count, by: 3) where image.pixels[i..<i + 3] != other.pixels[i..<i + 3] { differing += 1 }
        XCTAssertGreaterThan(differing, 200, "the curves moved")
        let colours = Set((0..<decoded.width * decoded.height).map { decoded[$0 % decoded.width, $0 / decoded.width] })
        XCTAssertGreaterThan(colours.count, 6, "axes, text and five coloured series")
    }

    /// A validation mAP that ends high (as a good run's does) runs through the top right of
    /// its panel: the legend moves to a corner where it hides no point of the lines.
    func testCurvesLegendDoesNotHideTheLines() throws {
        let points = (1...20).map { e in CurvePoint(epoch: e, loss: 1, classError: 0.01, bboxMAE: 0.01,
                                                   validationMAP50: e >= 15 ? 0.95 : 0.05 * Double(e), validationMAP: 0.4) }
        let image = TrainingCurves.draw(points)
        // epoch 18 of 20 at 0.95 in the right panel (x from 560, 360 wide; y from 350 up, 300 high)
        let x = 560 + Int((17.0 / 19.0 * 360).rounded()), y = 350 - Int((0.95 * 300).rounded())
        XCTAssertEqual(image[x, y], RGBImage.Color(214, 39, 40), "the val mAP@0.5 point at epoch 18 is drawn, not covered")
    }

    func makeTrainer(dir: String?, augment: Bool, epochs: Int = 2) throws -> Trainer {
        let data = try DetectionDataSet.load(root: Self.root, split: .train)
        let m = try ModelResolver.resolve(nil, size: (64, 64))
        m.library.setThreads(2)
        let session = ModelSession(library: m.library)
        session.initializeParameters(seed: 1, graph: m.graph)
        var settings = TrainSettings(data: Self.root, threads: 2, model: "built-in", loss: "default")
        settings.epochs = epochs
        settings.batchSize = 6
        settings.learningRate = 0.1
        settings.augmentation = augment ? AugmentOptions() : nil
        settings.lrSchedule = LRSchedule(kind: .cosine)
        let t = Trainer(model: m, session: session, data: data, settings: settings, runDirectory: dir)
        t.validation = try DetectionDataSet.load(root: Self.root, split: .val)
        return t
    }

    func testValidationEveryEpochCurvesAndRecordedAugmentation() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ssdc-augtrain-run-\(getpid())").path
        try? FileManager.default.removeItem(atPath: dir)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let history = try makeTrainer(dir: dir, augment: true).train()
        XCTAssertEqual(history.count, 2)
        for m in history {
            XCTAssertNotNil(m.validationMAP50)
            XCTAssertLessThanOrEqual(m.validationMAP!, m.validationMAP50!)
        }
        XCTAssertEqual(history.last!.learningRate!, 0.1 * 0.5 * (1 + cos(0.75 * Double.pi)), accuracy: 1e-6, "cosine at the last step (1.5 of 2 epochs done)")
        let rows = try String(contentsOfFile: dir + "/metrics.csv", encoding: .utf8).split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false) }
        XCTAssertEqual(rows[0].suffix(3), ["val_map50", "val_map", "lr"])
        XCTAssertEqual(rows[2][7], Substring(String(format: "%.4f", history[1].validationMAP50!)))
        let png = try RGBImage.load(dir + "/curves.png")
        XCTAssertEqual([png.width, png.height], [TrainingCurves.width, TrainingCurves.height])
        let settings = try String(contentsOfFile: dir + "/settings.json", encoding: .utf8)
        XCTAssertTrue(settings.contains("\"zoomOutMax\""), settings)
        XCTAssertTrue(settings.contains("\"cosine\""), settings)
        let plain = try makeTrainer(dir: dir, augment: false, epochs: 3)
        XCTAssertThrowsError(try plain.resume()) { error in
            XCTAssertTrue("\(error)".contains("--augment: the run used ssd ("), "\(error)")
            XCTAssertTrue("\(error)".contains("now none"), "\(error)")
        }
        plain.close()
    }

    func testValidationBetweenEpochsDoesNotChangeTraining() throws {
        let with = try makeTrainer(dir: nil, augment: true, epochs: 3)
        let without = try makeTrainer(dir: nil, augment: true, epochs: 3)
        without.validation = nil
        let a = try with.train(), b = try without.train()
        XCTAssertEqual(a.map(\.loss), b.map(\.loss))
        XCTAssertNil(b.last!.validationMAP50)
    }

    func testAnOlderMetricsFileKeepsItsRowsOnResume() {
        let log = MetricsLog(text: "epoch,loss,class_err,bbox_mae,seconds,examples_per_sec,data_seconds\n1,0.5,1e-2,1e-3,1.0,30.0,0.1\n", upToEpoch: 1)
        XCTAssertEqual(log.rows, ["1,0.5,1e-2,1e-3,1.0,30.0,0.1,,,"])
        XCTAssertEqual(log.points, [CurvePoint(epoch: 1, loss: 0.5, classError: 1e-2, bboxMAE: 1e-3)])
    }
}
