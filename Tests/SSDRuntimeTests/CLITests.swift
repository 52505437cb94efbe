import Foundation
import SSDCompiler
import SSDIO
import XCTest

/// The command line as a user meets it, including what it says about bad input.
final class CLITests: CLITestCase {
    func testCompileExampleFromAnotherDirectory() throws {
        let model = Fixtures.packageRoot + "/Examples/tinyssd/model.swift"
        let r = try ssdc(["compile", model, "-o", "out", "--input-size", "128x128"], in: tmp)
        XCTAssertEqual(r.status, 0, r.stderr + r.stdout)
        for f in ["graph.txt", "graph.json", "model.c", "model.h", "manifest.json", "kernels.txt", "libmodel.so"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: "\(tmp!)/out/\(f)"), "missing \(f)")
        }
        let manifest = try String(contentsOfFile: "\(tmp!)/out/manifest.json", encoding: .utf8)
        XCTAssertTrue(manifest.contains("\"blk_0.0.0.weight\""))
        XCTAssertTrue(manifest.contains("\"flags\""))
        let json = try JSONSerialization.jsonObject(with: Data(manifest.utf8)) as? [String: Any]
        let programs = json?["programs"] as? [[String: Any]] ?? []
        let labelled = programs.filter { $0["takes_labels"] as? Bool == true }.compactMap { $0["name"] as? String }
        XCTAssertEqual(labelled.sorted(), ["eval_step", "train_step"], "the steps take the label rows at run time")
    }

    func testShapeErrorInAModelFileNamesItsLine() throws {
        let file = "\(tmp!)/bad_model.swift"
        try """
        import SSDGraph

        let model = Model(name: "bad", numClasses: 1) { x in
            let y = Named("a", Conv2d(3, 8, kernelSize: 3, padding: 1))(x)
            let z = Named("b", Conv2d(16, 8, kernelSize: 3, padding: 1))(y)
            let a = multiboxPrior(z, sizes: [0.2], ratios: [1])
            return SSDOutputs(anchors: a, clsPreds: z.reshaped(perExample: -1, 2), bboxPreds: z.flattened())
        }
        """.write(toFile: file, atomically: true, encoding: .utf8)
        let r = try ssdc(["compile", file, "-o", "\(tmp!)/out"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue((r.stdout + r.stderr).contains("bad_model.swift:5: error: conv2d expects 16 input channels, got 8"), r.stdout + r.stderr)
    }

    func testSwiftErrorsInAModelFileAreShownWithTheirLine() throws {
        let file = "\(tmp!)/typo.swift"
        try "import SSDGraph\nlet model = Modle(name: \"x\", numClasses: 1) { x in fatalError() }\n"
            .write(toFile: file, atomically: true, encoding: .utf8)
        let r = try ssdc(["compile", file])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue((r.stdout + r.stderr).contains("typo.swift:2:"), r.stdout + r.stderr)
    }

    func testMissingCompilerOrOpenMPSaysWhatToInstall() throws {
        let model = Fixtures.packageRoot + "/Examples/tinyssd/model.swift"
        var env = ProcessInfo.processInfo.environment
        env["SSDC_CACHE_DIR"] = tmp + "/cache"  // nothing cached: the compiler must run
        env["SSDC_CC"] = "/nonexistent/clang"
        var r = try Shell.run(Self.ssdc, ["compile", model, "-o", tmp + "/out", "--input-size", "64x64"], environment: env)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("SSDC_CC=/nonexistent/clang: no such compiler"), r.stderr)
        // The Swift toolchain's clang has no omp.h.
        let swiftClang = "/opt/swift/usr/bin/clang"
        guard FileManager.default.isExecutableFile(atPath: swiftClang) else { return }
        env["SSDC_CC"] = swiftClang
        r = try Shell.run(Self.ssdc, ["compile", model, "-o", tmp + "/out", "--input-size", "64x64"], environment: env)
        if r.status != 0 {
            XCTAssertTrue(r.stderr.contains("apt-get install clang libomp-dev"), r.stderr)
        }
    }

    func forwardInput() throws -> String {
        let fx = try Fixtures.load("tinyssd_forward")
        let path = "\(tmp!)/in.safetensors"
        try SafeTensors.write(["X": fx["X"]!], to: path)
        return path
    }

    func testForwardWritesTheIssueTensors() throws {
        let out = "\(tmp!)/out.safetensors"
        let r = try ssdc(["run", "--forward", "--input-size", "128x128", "--weights", Fixtures.directory + "/tinyssd_weights.safetensors",
                          "--input", try forwardInput(), "--out", out, "--threads", "2"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let t = try SafeTensors.read(out)
        XCTAssertEqual(Set(t.keys), ["fwd.anchors", "fwd.cls_preds", "fwd.bbox_preds", "probs", "detection"])
        XCTAssertEqual(t["detection"]?.shape, [2, 1364, 6])
        let fx = try Fixtures.load("tinyssd_forward")
        XCTAssertLessThanOrEqual(relativeError(t["fwd.cls_preds"]!.floats, fx["eval.cls_preds"]!.floats), 1e-4)

        let train = try ssdc(["run", "--forward", "--bn", "train", "--input-size", "128x128", "--weights", Fixtures.directory + "/tinyssd_weights.safetensors",
                              "--input", try forwardInput(), "--out", out])
        XCTAssertEqual(train.status, 0, train.stderr)
        let tt = try SafeTensors.read(out)
        XCTAssertEqual(Set(tt.keys), ["fwd.anchors", "fwd.cls_preds", "fwd.bbox_preds"])
        XCTAssertLessThanOrEqual(relativeError(tt["fwd.bbox_preds"]!.floats, fx["train.bbox_preds"]!.floats), 1e-4)
    }

    func testMissingAndMisshapenWeightsAreAllListed() throws {
        var w = try Fixtures.load("tinyssd_weights")
        w["blk_0.0.0.weight"] = nil
        w["cls_1.bias"] = HostTensor(floats: [0, 0], shape: [2])
        w["extra.weight"] = HostTensor(floats: [1], shape: [1])
        let bad = "\(tmp!)/bad.safetensors"
        try SafeTensors.write(w, to: bad)
        let r = try ssdc(["run", "--forward", "--input-size", "128x128", "--weights", bad, "--input", try forwardInput(), "--out", "\(tmp!)/o.safetensors"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("bad.safetensors does not fit model tinyssd"), r.stderr)
        XCTAssertTrue(r.stderr.contains("missing tensor blk_0.0.0.weight"), r.stderr)
        XCTAssertTrue(r.stderr.contains("tensor cls_1.bias has shape [2], the model needs [8]"), r.stderr)
        XCTAssertTrue(r.stderr.contains("unexpected tensor extra.weight"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(tmp!)/o.safetensors"))
    }

    func testCorruptWeightsFileIsNamed() throws {
        let bad = "\(tmp!)/corrupt.safetensors"
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: bad))
        let r = try ssdc(["run", "--forward", "--weights", bad, "--input", bad, "--out", "\(tmp!)/o.safetensors"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("corrupt.safetensors"), r.stderr)
    }

    func testPredictGoesOnAfterAnUnreadableImage() throws {
        let junk = "\(tmp!)/junk.png"
        try Data("not a png".utf8).write(to: URL(fileURLWithPath: junk))
        let good = Fixtures.directory + "/images/banana.jpg"
        let r = try ssdc(["run", "--predict", junk, "\(tmp!)/missing.png", good, "--input-size", "128x128",
                          "--weights", Fixtures.directory + "/tinyssd_weights.safetensors", "--threshold", "0.0", "--out", "\(tmp!)/pred"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("junk.png"), r.stderr)
        XCTAssertTrue(r.stderr.contains("missing.png"), r.stderr)
        XCTAssertTrue(r.stdout.contains("banana.jpg:"), r.stdout)
        let annotated = try RGBImage.load("\(tmp!)/pred/banana.png")
        let original = try RGBImage.load(good)
        XCTAssertEqual(annotated.width, original.width)
        XCTAssertNotEqual(annotated.pixels, original.pixels, "boxes should have been drawn")
    }
}
