import Foundation
import SSDIO
import XCTest

/// The command line of augmentation, schedules, validation mAP and eval transforms.
final class AugmentCLITests: CLITestCase {
    static let tinyData = Fixtures.directory + "/tiny-bananas"
    static let weights = Fixtures.directory + "/tinyssd_weights.safetensors"

    func testEvalPrintsBothMAPsAndTakesATransform() throws {
        for transform in [nil, "mirror", "shift", "shrink", "dark"] {
            let r = try ssdc(["run", "--eval", "--data", Self.tinyData, "--weights", Self.weights, "--batch-size", "2", "--threads", "2"]
                             + (transform.map { ["--eval-transform", $0] } ?? []))
            XCTAssertEqual(r.status, 0, r.stderr + r.stdout)
            XCTAssertTrue(r.stdout.contains("/bananas_val\(transform.map { ", \($0)" } ?? "") (2 images): "), r.stdout)
            XCTAssertTrue(r.stdout.contains("mAP@0.5 ") && r.stdout.contains("mAP@[0.5:0.95] "), r.stdout)
        }
    }

    func testBadAugmentationAndScheduleOptionsAreNamed() throws {
        for (args, message) in [(["--flip-probability", "2"], "--flip-probability must be between 0 and 1, got 2.0"),
                                (["--crop-min-iou", "0.1,x"], "--crop-min-iou 0.1,x: expected comma-separated choices"),
                                (["--crop-min-iou", "0.1,3"], "--crop-min-iou: 3.0 is not an IoU"),
                                (["--augment", "heavy"], "--augment"),
                                (["--lr-schedule", "cosine", "--warmup-epochs=-1"], "--warmup-epochs must be a number >= 0"),
                                (["--ema", "1"], "--ema must be a decay between 0 and 1 (exclusive), got 1.0"),
                                (["--ema", "nan"], "--ema must be a decay between 0 and 1 (exclusive), got nan")] {
            let r = try ssdc(["run", "--train", "--data", Self.tinyData, "--epochs", "1"] + args)
            XCTAssertNotEqual(r.status, 0)
            XCTAssertTrue(r.stderr.contains(message), "\(args): \(r.stderr)")
        }
    }

    func testTrainRecordsAugmentationScheduleAndReportsValidation() throws {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("ssdc-augcli-\(getpid())").path
        try? FileManager.default.removeItem(atPath: out)
        defer { try? FileManager.default.removeItem(atPath: out) }
        let r = try ssdc(["run", "--train", "--data", Self.tinyData, "--input-size", "128x128", "--batch-size", "2", "--threads", "2",
                          "--epochs", "1", "--lr-schedule", "step", "--warmup-epochs", "0.5", "--out", out])
        XCTAssertEqual(r.status, 0, r.stderr + r.stdout)
        XCTAssertTrue(r.stdout.contains("augmentation: ssd (photometric p 0.5"), r.stdout)
        XCTAssertTrue(r.stdout.contains(", val mAP@0.5 ") && r.stdout.contains("mAP@[0.5:0.95] "), r.stdout)
        let settings = try String(contentsOfFile: out + "/settings.json", encoding: .utf8)
        XCTAssertTrue(settings.contains("\"augmentation\"") && settings.contains("\"warmupEpochs\" : 0.5"), settings)
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/curves.png"))
        let again = try ssdc(["run", "--train", "--data", Self.tinyData, "--input-size", "128x128", "--batch-size", "2", "--threads", "2",
                              "--epochs", "2", "--augment", "none", "--resume", "--out", out])
        XCTAssertNotEqual(again.status, 0)
        XCTAssertTrue(again.stderr.contains("--augment: the run used ssd (") && again.stderr.contains("--lr-schedule: the run used step"), again.stderr)
    }

    func testSaveAugmentedWritesTheTrainingImagesWithTheirBoxes() throws {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("ssdc-augsave-\(getpid())").path
        try? FileManager.default.removeItem(atPath: out)
        defer { try? FileManager.default.removeItem(atPath: out) }
        let r = try ssdc(["run", "--train", "--data", Self.tinyData, "--input-size", "128x128", "--batch-size", "2", "--threads", "2",
                          "--epochs", "1", "--save-augmented", "3", "--out", out])
        XCTAssertEqual(r.status, 0, r.stderr + r.stdout)
        XCTAssertTrue(r.stdout.contains("wrote 3 augmented training images to \(out)/augmented"), r.stdout)
        for i in 0..<3 {
            let image = try RGBImage.load(out + String(format: "/augmented/%05d.png", i))
            XCTAssertEqual([image.width, image.height], [128, 128], "the model's input size")
            XCTAssertTrue((0..<128).contains { y in (0..<128).contains { x in image[x, y] == .cyan } }, "image \(i) has its box drawn")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + "/augmented/00003.png"))
    }
}
