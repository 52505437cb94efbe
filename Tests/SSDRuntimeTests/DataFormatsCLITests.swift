import Foundation
import SSDIO
import XCTest

/// --data in its other forms: MXNet RecordIO files and the built-in generated sets.
final class DataFormatsCLITests: CLITestCase {
    /// Tests/Fixtures/tiny-bananas-rec is scripts/pack_recordio.py on
    /// `SyntheticBananas.generate(trainCount: 3, valCount: 2, size: 64, seed: 9)`: training and
    /// evaluating on it gives the numbers of the same set in the banana-detection layout.
    func testRecordIOTrainsAndEvaluatesLikeTheFolderLayout() throws {
        let folder = tmp + "/folder"
        try SyntheticBananas.generate(into: folder, trainCount: 3, valCount: 2, size: 64, seed: 9)
        var results: [[String]] = []
        for (name, data) in [("folder", folder), ("rec", Fixtures.directory + "/tiny-bananas-rec")] {
            let run = "\(tmp!)/run-\(name)"
            let t = try ssdc(["run", "--train", "--data", data, "--input-size", "64x64", "--epochs", "1",
                              "--batch-size", "3", "--threads", "2", "--seed", "1", "--out", run])
            XCTAssertEqual(t.status, 0, t.stderr + t.stdout)
            XCTAssertTrue(t.stdout.contains("training tinyssd on 3 images"), t.stdout)
            let e = try ssdc(["run", "--eval", "--data", data, "--weights", run + "/checkpoint.safetensors", "--threads", "2"])
            XCTAssertEqual(e.status, 0, e.stderr + e.stdout)
            let metrics = try String(contentsOfFile: run + "/metrics.csv", encoding: .utf8).split(separator: "\n")
            // Epoch, loss, class err, bbox mae (the rest are timings); the eval line after the data's name.
            results.append([metrics.last.map { $0.split(separator: ",").prefix(4).joined(separator: ",") } ?? "",
                            e.stdout.components(separatedBy: "(2 images): ").last ?? ""])
        }
        XCTAssertEqual(results[0], results[1])
    }

    func testCorruptRecordIOIsAnErrorNamingTheRecord() throws {
        let data = tmp + "/rec"
        try FileManager.default.copyItem(atPath: Fixtures.directory + "/tiny-bananas-rec", toPath: data)
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: data + "/train.rec")))
        bytes.removeLast(100)
        try Data(bytes).write(to: URL(fileURLWithPath: data + "/train.rec"))
        let r = try ssdc(["run", "--train", "--data", data, "--input-size", "64x64", "--epochs", "1", "--out", tmp + "/run"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("error: \(data)/train.rec: record 2 at byte offset "), r.stderr)
        XCTAssertTrue(r.stderr.contains("truncated"), r.stderr)
    }

    /// --predict takes class names from the classes.txt beside RecordIO files too.
    func testPredictReadsClassNamesBesideRecordIO() throws {
        let data = Fixtures.directory + "/tiny-shapes-rec"
        let r = try ssdc(["run", "--predict", Fixtures.directory + "/images/banana.jpg", "--weights",
                          Fixtures.directory + "/tinyssd_weights.safetensors", "--data", data, "--out", tmp + "/pred"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("\(data)/classes.txt names 4 classes but the model has 1 class"), r.stderr)
    }

    func testUnknownBuiltInDataSet() throws {
        let r = try ssdc(["run", "--train", "--data", "builtin:circles", "--out", tmp + "/run"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("--data builtin:circles: no such built-in data set (builtin or builtin:shapes"), r.stderr)
    }
}
