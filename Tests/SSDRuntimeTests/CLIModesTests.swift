import Foundation
import SSDCompiler
import SSDIO
import SSDRuntime
import XCTest

/// Each mode of `ssdc run` and `ssdc bench` end to end through the built executable, on the
/// committed tiny data set (Tests/Fixtures/tiny-bananas: 4 + 2 images of 128x128) and the
/// PyTorch fixtures, a few steps each, checking what they print and write.
final class CLIModesTests: CLITestCase {
    static let tinyData = Fixtures.directory + "/tiny-bananas"
    static let weights = Fixtures.directory + "/tinyssd_weights.safetensors"

    /// The number after the first `label ` in `text`, e.g. "class err 1.2e-02" -> 0.012.
    func number(after label: String, in text: String, file: StaticString = #filePath, line: UInt = #line) -> Double? {
        guard let r = text.range(of: label + " ") else {
            XCTFail("no '\(label)' in: \(text)", file: file, line: line)
            return nil
        }
        let digits = text[r.upperBound...].prefix { !$0.isWhitespace && $0 != "," }
        let value = Double(digits)
        XCTAssertNotNil(value, "'\(label)' is followed by '\(digits)', not a number", file: file, line: line)
        return value
    }

    /// Without --out, each run gets its own folder (the main job run twice keeps both), and
    /// runs/latest, which --resume continues, points to the newest.
    func testTrainWithoutOutMakesANewFolderEachTimeAndResumesTheLatest() throws {
        let args = ["run", "--train", "--data", Self.tinyData, "--input-size", "128x128", "--batch-size", "2", "--threads", "2"]
        for _ in 0..<2 {
            let r = try ssdc(args + ["--epochs", "1"], in: tmp)
            XCTAssertEqual(r.status, 0, r.stderr + r.stdout)
        }
        let runs = try FileManager.default.contentsOfDirectory(atPath: "\(tmp!)/runs").filter { !$0.hasPrefix(".") }.sorted()
        XCTAssertEqual(runs.count, 3, "two run folders and runs/latest: \(runs)")
        let folders = runs.filter { $0 != "latest" }
        let latest = try FileManager.default.destinationOfSymbolicLink(atPath: "\(tmp!)/runs/latest")
        XCTAssertEqual(latest, folders.last)
        for f in folders { XCTAssertTrue(FileManager.default.fileExists(atPath: "\(tmp!)/runs/\(f)/checkpoint.safetensors"), f) }
        let r = try ssdc(args + ["--epochs", "2", "--resume"], in: tmp)
        XCTAssertEqual(r.status, 0, r.stderr + r.stdout)
        XCTAssertTrue(r.stdout.contains("resuming runs/latest at epoch 2"), r.stdout)
        let csv = try String(contentsOfFile: "\(tmp!)/runs/\(folders.last!)/metrics.csv", encoding: .utf8)
        XCTAssertEqual(csv.split(separator: "\n").count, 3, csv)
    }

    func testTrainWritesMetricsAndACheckpointThatEvalLoads() throws {
        let run = "\(tmp!)/run"  // does not exist yet: a fresh run folder
        let r = try ssdc(["run", "--train", "--data", Self.tinyData, "--input-size", "128x128", "--epochs", "1",
                          "--batch-size", "2", "--threads", "2", "--seed", "1", "--out", run])
        XCTAssertEqual(r.status, 0, r.stderr + r.stdout)
        XCTAssertTrue(r.stdout.contains("training tinyssd on 4 images"), r.stdout)
        XCTAssertTrue(r.stdout.contains("epoch 1, class err "), r.stdout)

        // metrics.csv: the header and one row of finite numbers, for epoch 1.
        let csv = try String(contentsOfFile: run + "/metrics.csv", encoding: .utf8)
        let rows = csv.split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false) }
        XCTAssertEqual(rows.count, 2, csv)
        XCTAssertEqual(rows.first?.first, "epoch", csv)
        if rows.count == 2 {
            XCTAssertEqual(rows[0].count, rows[1].count, csv)
            XCTAssertEqual(rows[1].first, "1", csv)
            for field in rows[1] {
                XCTAssertTrue(Double(field)?.isFinite == true, "metrics field '\(field)' is not a finite number: \(csv)")
            }
        }

        // The checkpoint has every tensor of the model under PyTorch's names, all finite.
        let checkpoint = run + "/checkpoint.safetensors"
        let saved = try SafeTensors.read(checkpoint)
        let reference = try Fixtures.load("tinyssd_weights")
        XCTAssertEqual(Set(saved.keys), Set(reference.keys))
        for (name, t) in reference {
            XCTAssertEqual(saved[name]?.shape, t.shape, name)
        }
        XCTAssertTrue(saved.values.allSatisfy { $0.floats.allSatisfy(\.isFinite) }, "non-finite values in the checkpoint")

        // ... and --eval loads it.
        let e = try ssdc(["run", "--eval", "--data", Self.tinyData, "--weights", checkpoint, "--batch-size", "2", "--threads", "2"])
        XCTAssertEqual(e.status, 0, e.stderr + e.stdout)
        XCTAssertTrue(e.stdout.contains("(2 images): class err "), e.stdout)
    }

    func testEvalPrintsClassErrorBoxErrorLossAndMAP() throws {
        let r = try ssdc(["run", "--eval", "--data", Self.tinyData, "--weights", Self.weights, "--batch-size", "2", "--threads", "2"])
        XCTAssertEqual(r.status, 0, r.stderr + r.stdout)
        XCTAssertTrue(r.stdout.contains(Self.tinyData + "/bananas_val (2 images): "), r.stdout)
        let classError = number(after: "class err", in: r.stdout)
        let bboxMAE = number(after: "bbox mae", in: r.stdout)
        let loss = number(after: "loss", in: r.stdout)
        let meanAP = number(after: "mAP@0.5", in: r.stdout)
        // Errors are fractions, the loss is positive, mAP is a fraction.
        for (name, v, range) in [("class err", classError, 0.0...1.0), ("bbox mae", bboxMAE, 0.0...1.0),
                                 ("loss", loss, 1e-6...1e3), ("mAP", meanAP, 0.0...1.0)] {
            XCTAssertTrue(v.map { range.contains($0) } ?? false, "\(name) \(String(describing: v)) outside \(range): \(r.stdout)")
        }
    }

    /// One step on PyTorch's fixture batch (X, Y of 128x128) from the fixture weights: the loss
    /// is PyTorch's, and every gradient and every state_dict entry is written.
    func testStepWritesLossGradientsAndState() throws {
        let fx = try Fixtures.load("tinyssd_step")
        let out = "\(tmp!)/step.safetensors"
        let r = try ssdc(["run", "--step", "--weights", Self.weights, "--input", Fixtures.directory + "/tinyssd_step.safetensors",
                          "--out", out, "--lr", "0.2", "--wd", "5e-4", "--threads", "2"])
        XCTAssertEqual(r.status, 0, r.stderr + r.stdout)
        XCTAssertTrue(r.stdout.contains("wrote") && r.stdout.contains(out), r.stdout)
        let t = try SafeTensors.read(out)

        for name in ["fwd.anchors", "fwd.cls_preds", "fwd.bbox_preds", "loss.per_example", "loss.mean",
                     "target.bbox_labels", "target.bbox_masks", "target.cls_labels"] {
            XCTAssertEqual(t[name]?.shape, fx[name]?.shape, name)
        }
        let perExample = try XCTUnwrap(t["loss.per_example"]).floats
        for (a, b) in zip(perExample, fx["loss.per_example"]!.floats) {
            XCTAssertEqual(Double(a), Double(b), accuracy: 1e-5 * Double(abs(b)))
        }
        XCTAssertEqual(Double(t["loss.mean"]!.floats[0]), Double(fx["loss.mean"]!.floats[0]),
                       accuracy: 1e-5 * Double(abs(fx["loss.mean"]!.floats[0])))

        // A gradient for every trainable tensor, the whole state_dict after the step.
        let weights = try Fixtures.load("tinyssd_weights")
        let grads = Set(t.keys.filter { $0.hasPrefix("grad.") })
        XCTAssertEqual(grads, Set(fx.keys.filter { $0.hasPrefix("grad.") }))
        XCTAssertEqual(Set(t.keys.filter { $0.hasPrefix("state.") }), Set(weights.keys.map { "state.\($0)" }))
        for name in fx.keys where name.hasPrefix("state.") && name.hasSuffix("running_mean") {
            XCTAssertLessThanOrEqual(relativeError(t[name]!.floats, fx[name]!.floats), 1e-4, name)
        }
        // The step moved the weights: state = w - lr * (grad + wd * w).
        let w = weights["cls_0.bias"]!.floats, g = t["grad.cls_0.bias"]!.floats
        let expected = zip(w, g).map { $0 - 0.2 * ($1 + 5e-4 * $0) }
        XCTAssertLessThanOrEqual(relativeError(t["state.cls_0.bias"]!.floats, expected), 1e-5)
    }

    /// `bench`, as short as its options allow (the cold compile of TinySSD dominates), with a
    /// run's loss options: its train step is the one that run takes.
    func testBenchPrintsItsFiguresAsJSON() throws {
        let r = try ssdc(["bench", "--threads", "2", "--batch-size", "1", "--steps", "1", "--repeats", "1", "--json",
                          "--negative-mining-ratio", "3", "--bbox-weight", "30"])
        XCTAssertEqual(r.status, 0, r.stderr + r.stdout)
        let line = try XCTUnwrap(r.stdout.split(separator: "\n").last, r.stdout)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], r.stdout)
        for key in ["train_examples_per_sec", "infer_b1_ms", "infer_b32_examples_per_sec", "compile_seconds",
                    "compile_cached_seconds", "peak_rss_bytes"] {
            let v = (json[key] as? NSNumber)?.doubleValue
            XCTAssertTrue(v.map { $0.isFinite && $0 > 0 } ?? false, "\(key) = \(String(describing: json[key])) in \(line)")
        }
        XCTAssertEqual(json["threads"] as? Int, 2)
        XCTAssertEqual(json["batch_size"] as? Int, 1)
        XCTAssertEqual(json["ssdc_version"] as? String, CompiledModel.version)
        XCTAssertEqual(json["loss"] as? String, "cross-entropy, L1, weights cls=1.0 bbox=30.0, hard negatives 1:3.0")
        // The micro-kernel follows the CPU (the library is built with -march=native).
        let flags = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
            .split(separator: "\n").first { $0.hasPrefix("flags") }.map { $0.split(separator: " ").map(String.init) } ?? []
        let expected = flags.contains("avx512f") ? "avx512" : flags.contains("avx2") && flags.contains("fma") ? "avx2" : "portable"
        XCTAssertEqual(json["isa"] as? String, expected, String(line))
        XCTAssertTrue(((json["train_conv_gflops"] as? NSNumber)?.doubleValue ?? 0) > 0, String(line))
    }
}

/// `ssdc compile --target`: the library's micro-kernel follows the target, and every target
/// computes the same forward.
final class CompileTargetTests: CLITestCase {
    func testTargetsPickTheirKernelsAndAgree() throws {
        let model = Fixtures.packageRoot + "/Examples/tinyssd/model.swift"
        let weights = Fixtures.directory + "/tinyssd_weights.safetensors"
        var rng = SplitMix64(seed: 3)
        let input = "\(tmp!)/x.safetensors"
        try SafeTensors.write(["X": HostTensor(floats: (0..<(2 * 3 * 64 * 64)).map { _ in 127.5 + rng.uniform(127.5) },
                                               shape: [2, 3, 64, 64])], to: input)
        var outputs: [String: [Float]] = [:]
        for (target, isa) in [("native", nil), ("x86-64-v3", "avx2"), ("generic", "portable")] {
            let dir = "\(tmp!)/\(target)"
            var r = try ssdc(["compile", model, "--input-size", "64x64", "--target", target, "-o", dir])
            XCTAssertEqual(r.status, 0, r.stderr)
            let manifest = try String(contentsOfFile: "\(dir)/manifest.json", encoding: .utf8)
            XCTAssertEqual(manifest.contains("-march="), target != "generic", target)
            if target != "generic" { XCTAssertTrue(manifest.contains("-march=\(target)"), target) }
            if let isa { XCTAssertEqual(try ModelLibrary(path: "\(dir)/libmodel.so").isa, isa, target) }
            r = try ssdc(["run", "--forward", "--model", dir, "--input-size", "64x64", "--weights", weights,
                          "--input", input, "--out", "\(dir)/out.safetensors"])
            XCTAssertEqual(r.status, 0, r.stderr)
            outputs[target] = try SafeTensors.read("\(dir)/out.safetensors")["fwd.cls_preds"]?.floats
        }
        let native = try XCTUnwrap(outputs["native"])
        for target in ["x86-64-v3", "generic"] {
            let other = try XCTUnwrap(outputs[target])
            XCTAssertLessThanOrEqual(relativeError(other, native), 1e-5, target)
        }
    }
}
