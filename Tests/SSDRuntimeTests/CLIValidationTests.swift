import Foundation
import SSDCompiler
import SSDIO
import SSDRuntime
import XCTest

/// What `ssdc run` refuses before it does any harm: bad numbers and thread counts, an --out
/// that is one of its inputs, labels outside the model; and the words it uses to say so.
final class CLIValidationTests: CLITestCase {
    var weights: String { Fixtures.directory + "/tinyssd_weights.safetensors" }

    func testRunHelpSaysWhatItDoesAndThatExactlyOneModeIsChosen() throws {
        let r = try ssdc(["run", "--help"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("USAGE: ssdc run (--train | --step | --eval | --forward | --predict) [<options>]"), r.stdout)
        XCTAssertTrue(r.stdout.contains("Exactly one mode is chosen"), r.stdout)
        let overview = r.stdout.replacingOccurrences(of: "\n", with: " ")
        XCTAssertTrue(overview.contains("Train a model, take one training step, evaluate it, run its forward pass or detect objects"), r.stdout)
        XCTAssertFalse(r.stdout.contains("--train --step --eval --forward --predict"), "modes shown as if all were required")
        let two = try ssdc(["run", "--eval", "--predict", "--weights", weights, "x.png"])
        XCTAssertNotEqual(two.status, 0)
        XCTAssertTrue(two.stderr.contains("--eval") && two.stderr.contains("--predict"), two.stderr)
    }

    func testBadNumbersAreRejectedNamingTheOption() throws {
        let cases: [([String], String)] = [
            (["--lr", "nan"], "--lr must be a finite number >= 0, got nan"),
            (["--lr=-1"], "--lr must be a finite number >= 0, got -1.0"),
            (["--lr", "inf"], "--lr must be a finite number >= 0, got inf"),
            (["--wd", "nan"], "--wd must be a finite number >= 0"),
            (["--wd=-0.5"], "--wd must be a finite number >= 0"),
            (["--threshold", "nan"], "--threshold must be between 0 and 1, got nan"),
            (["--threshold", "1.5"], "--threshold must be between 0 and 1, got 1.5"),
            (["--focal", "inf"], "--focal must be a finite number >= 0"),
            (["--focal=-1"], "--focal must be a finite number >= 0"),
            (["--smooth-l1", "0"], "--smooth-l1 must be a finite number > 0"),
            (["--smooth-l1", "nan"], "--smooth-l1 must be a finite number > 0"),
            (["--focal-alpha", "2"], "--focal-alpha must be between 0 and 1"),
            (["--negative-mining-ratio=-3"], "--negative-mining-ratio must be a finite number > 0"),
            (["--cls-weight", "nan"], "--cls-weight must be a finite number >= 0"),
            (["--bbox-weight=-1"], "--bbox-weight must be a finite number >= 0"),
        ]
        for (args, message) in cases {
            let r = try ssdc(["run", "--step", "--weights", weights, "--input", "in.safetensors", "--out", "\(tmp!)/o.safetensors"] + args)
            XCTAssertNotEqual(r.status, 0, "\(args) accepted")
            XCTAssertTrue(r.stderr.contains(message), "\(args): \(r.stderr)")
        }
    }

    func testThreadCountsOutOfRangeAreRejectedForTheOptionAndTheVariable() throws {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let base = ["run", "--eval", "--weights", weights]
        for t in ["0", "-1", "100000", "3000000000"] {
            let r = try ssdc(base + ["--threads=\(t)"])
            XCTAssertNotEqual(r.status, 0, "--threads \(t) accepted")
            XCTAssertTrue(r.stderr.contains("--threads \(t): the thread count must be between 1 and"), r.stderr)
            XCTAssertTrue(r.stderr.contains("this machine has \(cores) cores"), r.stderr)
        }
        for t in ["abc", "0", "-4", "100000", "2.5"] {
            let r = try ssdc(base, environment: ["SSDC_NUM_THREADS": t])
            XCTAssertNotEqual(r.status, 0, "SSDC_NUM_THREADS=\(t) accepted")
            XCTAssertTrue(r.stderr.contains("SSDC_NUM_THREADS=\(t): the thread count must be a whole number between 1 and"), r.stderr)
        }
        // bench checks its thread count and sizes too.
        for bad in [["--threads=0"], ["--threads=100000"], ["--batch-size=0"], ["--steps=0"]] {
            let r = try ssdc(["bench"] + bad)
            XCTAssertNotEqual(r.status, 0, "bench \(bad) accepted")
            XCTAssertTrue(r.stderr.contains(bad[0].split(separator: "=")[0]), r.stderr)
        }
        // The option wins over the variable, as before.
        let r = try ssdc(["run", "--forward", "--threads", "1", "--weights", weights, "--input", "\(tmp!)/none.safetensors",
                          "--out", "\(tmp!)/o.safetensors"], environment: ["SSDC_NUM_THREADS": "abc"])
        XCTAssertFalse(r.stderr.contains("SSDC_NUM_THREADS"), r.stderr)
    }

    func testForwardAndStepRefuseAnOutThatIsTheirWeightsOrInput() throws {
        let w = "\(tmp!)/w.safetensors"
        try FileManager.default.copyItem(atPath: weights, toPath: w)
        try FileManager.default.createDirectory(atPath: "\(tmp!)/sub", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: "\(tmp!)/link.safetensors", withDestinationPath: w)
        let before = try Data(contentsOf: URL(fileURLWithPath: w))
        let input = "\(tmp!)/in.safetensors"
        try SafeTensors.write(["X": try Fixtures.load("tinyssd_forward")["X"]!], to: input)
        for mode in ["--forward", "--step"] {
            for out in [w, "\(tmp!)/sub/../w.safetensors", "\(tmp!)/link.safetensors"] {
                let r = try ssdc(["run", mode, "--input-size", "128x128", "--weights", w, "--input", input, "--out", out])
                XCTAssertNotEqual(r.status, 0, "\(mode) --out \(out) accepted")
                XCTAssertTrue(r.stderr.contains("--out \(out) is the --weights file \(w); writing it would replace it"), r.stderr)
            }
            let r = try ssdc(["run", mode, "--input-size", "128x128", "--weights", w, "--input", input, "--out", input])
            XCTAssertTrue(r.stderr.contains("is the --input file"), r.stderr)
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: w)), before, "the checkpoint is untouched")
    }

    func testForwardRefusesNaNWeightsNamingTheTensor() throws {
        var w = try Fixtures.load("tinyssd_weights")
        var v = w["bbox_4.weight"]!.floats
        v[0] = .nan
        w["bbox_4.weight"] = HostTensor(floats: v, shape: w["bbox_4.weight"]!.shape)
        let bad = "\(tmp!)/nan.safetensors"
        try SafeTensors.write(w, to: bad)
        let input = "\(tmp!)/in.safetensors"
        try SafeTensors.write(["X": try Fixtures.load("tinyssd_forward")["X"]!], to: input)
        let r = try ssdc(["run", "--forward", "--input-size", "128x128", "--weights", bad, "--input", input, "--out", "\(tmp!)/o.safetensors"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("tensor bbox_4.weight has 1 non-finite value (the first, nan, at index 0)"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(tmp!)/o.safetensors"))
    }

    /// Two small pictures with one base name in two folders.
    func twoPictures() throws -> (String, String) {
        var paths: [String] = []
        for folder in ["a", "b"] {
            try FileManager.default.createDirectory(atPath: "\(tmp!)/\(folder)", withIntermediateDirectories: true)
            var image = RGBImage(width: 96, height: 80, fill: .init(30, 90, 40))
            image.fillRectangle(x0: 20, y0: 20, x1: 60, y1: 50, color: .yellow)
            try image.savePNG(to: "\(tmp!)/\(folder)/x.png")
            paths.append("\(tmp!)/\(folder)/x.png")
        }
        return (paths[0], paths[1])
    }

    func testPredictNeverWritesOverAnInputAndGivesEachImageItsOwnFile() throws {
        let (a, b) = try twoPictures()
        let originalA = try Data(contentsOf: URL(fileURLWithPath: a)), originalB = try Data(contentsOf: URL(fileURLWithPath: b))
        let r = try ssdc(["run", "--predict", a, b, "--input-size", "128x128", "--weights", weights, "--threshold", "0",
                          "--out", "\(tmp!)/a"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: a)), originalA, "the input was written over")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: b)), originalB)
        XCTAssertTrue(r.stdout.contains("-> \(tmp!)/a/a_x.png"), r.stdout)
        XCTAssertTrue(r.stdout.contains("-> \(tmp!)/a/b_x.png"), r.stdout)
        XCTAssertNotEqual(try RGBImage.load("\(tmp!)/a/a_x.png").pixels, try RGBImage.load(a).pixels, "boxes drawn")
        XCTAssertTrue(r.stdout.contains("  banana "), "the built-in one-class model calls its class banana: \(r.stdout)")
    }

    func testOutputNamesAreDistinctAndNeverAnInput() throws {
        let (a, b) = try twoPictures()
        let out = "\(tmp!)/out"
        XCTAssertEqual(OutputPaths.predictions(for: [a], in: out), ["\(out)/x.png"])
        XCTAssertEqual(OutputPaths.predictions(for: [a, b], in: out), ["\(out)/x.png", "\(out)/b_x.png"])
        XCTAssertEqual(OutputPaths.predictions(for: [a, a, a], in: out), ["\(out)/x.png", "\(out)/a_x.png", "\(out)/x-2.png"])
        // Into the input's own folder, reached by another spelling.
        XCTAssertEqual(OutputPaths.predictions(for: [a], in: "\(tmp!)/b/../a"), ["\(tmp!)/b/../a/a_x.png"])
        // An input named like another input's first choice keeps its file.
        try FileManager.default.copyItem(atPath: a, toPath: "\(tmp!)/a/a_x.png")
        let names = OutputPaths.predictions(for: [a, "\(tmp!)/a/a_x.png"], in: "\(tmp!)/a")
        XCTAssertEqual(names, ["\(tmp!)/a/x-2.png", "\(tmp!)/a/a_a_x.png"])
    }

    func testPredictNamesComeFromTheDataSetsClassesFileOrTheOption() throws {
        let (a, _) = try twoPictures()
        let data = "\(tmp!)/data"
        try FileManager.default.createDirectory(atPath: "\(data)/bananas_train", withIntermediateDirectories: true)
        try Data("fruit\n".utf8).write(to: URL(fileURLWithPath: "\(data)/bananas_train/classes.txt"))
        let base = ["run", "--predict", a, "--input-size", "128x128", "--weights", weights, "--threshold", "0", "--out", "\(tmp!)/p"]
        let r = try ssdc(base + ["--data", data])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("  fruit "), r.stdout)
        let named = try ssdc(base + ["--class-names", "apple"])
        XCTAssertTrue(named.stdout.contains("  apple "), named.stdout)
        let wrong = try ssdc(base + ["--class-names", "apple,pear"])
        XCTAssertNotEqual(wrong.status, 0)
        XCTAssertTrue(wrong.stderr.contains("--class-names gives 2 names but the model has 1 class"), wrong.stderr)
    }

    func testPredictIntoAFileNamesItInWords() throws {
        let (a, _) = try twoPictures()
        let r = try ssdc(["run", "--predict", a, "--input-size", "128x128", "--weights", weights, "--out", a])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("--out \(a): cannot create the folder for the annotated images:"), r.stderr)
        XCTAssertFalse(r.stderr.contains("Code="), r.stderr)
    }

    /// A generated one-class data set (64x64) whose `split` label.csv says class 7 at `line`.
    func dataSetWithClass7(split: String, line: Int) throws -> (root: String, labels: String) {
        let root = "\(tmp!)/data"
        try SyntheticBananas.generate(into: root, trainCount: 4, valCount: 4, size: 64, seed: 5)
        let file = "\(root)/bananas_\(split)/label.csv"
        var lines = try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var fields = lines[line - 1].split(separator: ",").map(String.init)
        fields[1] = "7"
        lines[line - 1] = fields.joined(separator: ",")
        try lines.joined(separator: "\n").write(toFile: file, atomically: true, encoding: .utf8)
        return (root, file)
    }

    func testEvalReportsALabelOutsideTheModelAtItsLine() throws {
        let (root, file) = try dataSetWithClass7(split: "val", line: 3)
        let r = try ssdc(["run", "--eval", "--data", root, "--weights", weights, "--batch-size", "4"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("\(file):3: class 7 is outside the 1 class of model tinyssd (0...0)"), r.stderr)
    }

    /// A label typo in the training split used to train a model with 8 classes that eval and
    /// predict could not load; now the built-in model has the data set's classes (one without
    /// classes.txt) and the typo is reported at its line before anything is written.
    func testTrainReportsALabelOutsideTheModelAtItsLine() throws {
        let (root, file) = try dataSetWithClass7(split: "train", line: 4)
        let out = "\(tmp!)/run"
        let r = try ssdc(["run", "--train", "--data", root, "--input-size", "64x64", "--epochs", "1", "--batch-size", "4", "--out", out])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("\(file):4: class 7 is outside the 1 class of model tinyssd"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + "/checkpoint.safetensors"))
    }
}
