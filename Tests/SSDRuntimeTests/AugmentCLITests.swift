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

    func testEvalIgnoresObjectsTheShiftCutsAndSaysHowMany() throws {
        // Written here: two 128x128 validation images, one banana-like rectangle each; the shift
        // (32 px right and down) cuts the first at its centre and keeps the second.
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ssdc-cut-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for split in ["bananas_train", "bananas_val"] {
            try FileManager.default.createDirectory(atPath: "\(dir)/\(split)/images", withIntermediateDirectories: true)
            var csv = "img_name,label,xmin,ymin,xmax,ymax\n"
            for (i, box) in [(80, 20, 120, 60), (20, 20, 60, 60)].enumerated() {
                var image = RGBImage(width: 128, height: 128, fill: .init(40, 90, 40))
                image.fillRectangle(x0: box.0, y0: box.1, x1: box.2, y1: box.3, color: .init(230, 200, 40))
                try image.savePNG(to: "\(dir)/\(split)/images/\(i).png")
                csv += "\(i).png,0,\(box.0),\(box.1),\(box.2),\(box.3)\n"
            }
            try csv.write(toFile: "\(dir)/\(split)/label.csv", atomically: true, encoding: .utf8)
        }
        let r = try ssdc(["run", "--eval", "--data", dir, "--weights", Self.weights, "--threads", "2",
                          "--eval-transform", "shift"])
        XCTAssertEqual(r.status, 0, r.stderr + r.stdout)
        XCTAssertTrue(r.stdout.contains("1 objects cut off at their centre, ignored"), r.stdout)
        XCTAssertTrue(r.stdout.contains("counted as background instead: mAP@0.5 "), r.stdout)
        let plain = try ssdc(["run", "--eval", "--data", dir, "--weights", Self.weights, "--threads", "2"])
        XCTAssertFalse(plain.stdout.contains("cut off"), plain.stdout)
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
