import Foundation
import SSDCompiler
import SSDIO
import XCTest

/// `ssdc export`: the bundle builds with gcc and make alone, and its detect program gives
/// what `ssdc run --forward` and `--predict` give on the same picture.
final class ExportTests: CLITestCase {
    static let weights = Fixtures.directory + "/tinyssd_weights.safetensors"
    static let size = "128x128"

    /// The committed banana picture at 150x100, so detect has to resize it (to 128x128), as
    /// a binary PPM and a PNG in `tmp`; returns the image and the two paths.
    func writePicture() throws -> (image: RGBImage, ppm: String, png: String) {
        let image = try RGBImage.load(Fixtures.directory + "/images/banana.jpg").resized(width: 150, height: 100)
        let ppm = "\(tmp!)/banana.ppm", png = "\(tmp!)/banana.png"
        let header = Data("P6\n# banana\n\(image.width) \(image.height)\n255\n".utf8)
        try (header + Data(image.pixels)).write(to: URL(fileURLWithPath: ppm))
        try image.savePNG(to: png)
        return (image, ppm, png)
    }

    /// The detection rows `ssdc run --forward` gives for `image` resized to the model input.
    func referenceRows(_ image: RGBImage) throws -> [[Float]] {
        let x = HostTensor(floats: image.resized(width: 128, height: 128).toCHWFloats(), shape: [1, 3, 128, 128])
        try SafeTensors.write(["X": x], to: "\(tmp!)/x.safetensors")
        let r = try ssdc(["run", "--forward", "--input", "\(tmp!)/x.safetensors", "--out", "\(tmp!)/y.safetensors",
                          "--weights", Self.weights, "--input-size", Self.size])
        XCTAssertEqual(r.status, 0, r.stderr + r.stdout)
        let rows = try XCTUnwrap(try SafeTensors.read("\(tmp!)/y.safetensors")["detection"]).floats
        return stride(from: 0, to: rows.count, by: 6).map { Array(rows[$0 ..< $0 + 6]) }
    }

    /// Exports TinySSD at 128x128 with the fixture weights into `tmp/name`.
    func export(_ name: String, _ options: [String] = []) throws -> String {
        let dir = "\(tmp!)/\(name)"
        let r = try ssdc(["export", "--weights", Self.weights, "-o", dir, "--input-size", Self.size] + options)
        XCTAssertEqual(r.status, 0, r.stderr + r.stdout)
        return dir
    }

    /// Runs make in `dir` with `arguments`; fails the test with the compiler's output if it fails.
    func make(_ dir: String, _ arguments: [String]) throws {
        let start = Date()
        let r = try Shell.run("make", ["-C", dir, "-j2"] + arguments)
        XCTAssertEqual(r.status, 0, "make \(arguments.joined(separator: " ")) failed:\n\(r.stdout)\n\(r.stderr)")
        print("make \(arguments.joined(separator: " ")): \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
    }

    /// Runs a built program (through `runner`, e.g. qemu with its arguments, if given) and
    /// returns its output.
    func run(_ program: String, _ arguments: [String], runner: [String] = []) throws -> String {
        let r = try runner.isEmpty ? Shell.run(program, arguments) : Shell.run(runner[0], runner.dropFirst() + [program] + arguments)
        XCTAssertEqual(r.status, 0, "\(program) \(arguments.joined(separator: " ")):\n\(r.stderr)")
        return r.stdout
    }

    /// `detect --raw` lines as rows of 6 numbers.
    func parseRows(_ text: String) -> [[Float]] {
        text.split(separator: "\n").map { $0.split(separator: " ").compactMap { Float($0) } }
    }

    /// Same rows, same classes, the numbers within `tolerance`; returns the largest difference.
    @discardableResult
    func assertRows(_ rows: [[Float]], match reference: [[Float]], tolerance: Float = 1e-4, _ what: String,
                    file: StaticString = #filePath, line: UInt = #line) -> Float {
        XCTAssertEqual(rows.count, reference.count, "\(what): number of detection rows", file: file, line: line)
        var worst: Float = 0
        for (i, (a, b)) in zip(rows, reference).enumerated() {
            guard a.count == 6, a[0] == b[0] else {
                XCTFail("\(what): row \(i) is \(a), ssdc gives \(b)", file: file, line: line)
                return .infinity
            }
            worst = max(worst, zip(a, b).map { abs($0 - $1) }.max()!)
        }
        XCTAssertLessThanOrEqual(worst, tolerance, "\(what): largest difference from ssdc run --forward", file: file, line: line)
        print("\(what): \(rows.count) rows, max abs difference from ssdc run --forward \(worst)")
        return worst
    }

    func requireTools(_ tools: [String], _ why: String) throws {
        for t in tools where Shell.which(t) == nil { throw XCTSkip("\(t) is not installed: \(why)") }
    }

    /// The default bundle (native, OpenMP, weights.bin) built with gcc: detect reads the PPM
    /// and the PNG, and gives ssdc's detection rows, and the detections of `ssdc run --predict`.
    func testBundleBuiltWithGCCMatchesSSDC() throws {
        try requireTools(["gcc", "make"], "the bundle is built with gcc and make")
        let picture = try writePicture()
        let reference = try referenceRows(picture.image)
        let dir = try export("bundle")
        for f in ["Makefile", "README.md", "model.c", "model.h", "bundle.h", "bundle.c", "bundle_config.h", "detect.c",
                  "weights.bin", "noomp/omp.h", "runtime/ssd_runtime.h", "runtime/conv.c"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: "\(dir)/\(f)"), "the bundle has no \(f)")
        }
        try make(dir, ["CC=gcc"])
        for f in ["libmodel.a", "libmodel.so", "detect"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: "\(dir)/\(f)"), "make built no \(f)")
        }
        let weights = ["--weights", "\(dir)/weights.bin"]
        assertRows(parseRows(try run("\(dir)/detect", weights + ["--raw", picture.ppm])), match: reference, "gcc, PPM")
        assertRows(parseRows(try run("\(dir)/detect", weights + ["--raw", picture.png])), match: reference, "gcc, PNG")
        let wrong = try Shell.run("\(dir)/detect", ["--weights", "\(dir)/model.h", picture.ppm])
        XCTAssertEqual(wrong.status, 1)
        XCTAssertTrue(wrong.stderr.contains("model.h: the weights file must hold 1012592 float32 values"), wrong.stderr)

        // Thresholded detections in pixels, as --predict prints them (3 and 1 decimals).
        let threshold = "0.5"
        let found = try run("\(dir)/detect", weights + ["--threshold", threshold, picture.png]).split(separator: "\n")
        let p = try ssdc(["run", "--predict", "--weights", Self.weights, "--input-size", Self.size, "--threshold", threshold,
                          "--out", "\(tmp!)/predictions", picture.png])
        XCTAssertEqual(p.status, 0, p.stderr + p.stdout)
        let predicted = p.stdout.split(separator: "\n").filter { $0.contains(" box (") }
        XCTAssertFalse(predicted.isEmpty, "no detections above \(threshold) to compare: \(p.stdout)")
        XCTAssertEqual(found.count, predicted.count, "detect:\n\(found.joined(separator: "\n"))\nssdc:\n\(p.stdout)")
        for (d, s) in zip(found, predicted) {
            let dn = d.split(separator: " ").compactMap { Float($0) }  // class, score, 4 box edges
            let sn = s.split(whereSeparator: { " (),".contains($0) }).compactMap { Float($0) }  // score, 4 box edges
            XCTAssertEqual(dn.count, 6, String(d))
            XCTAssertEqual(sn.count, 5, String(s))
            guard dn.count == 6, sn.count == 5 else { continue }
            XCTAssertEqual(dn[1], sn[0], accuracy: 5e-4 + 1e-4, "score: \(d) vs \(s)")
            for k in 0..<4 { XCTAssertEqual(dn[2 + k], sn[1 + k], accuracy: 0.05 + 1e-2, "box: \(d) vs \(s)") }
        }
    }

    /// --embed-weights and --target generic, built with gcc without OpenMP and without libpng:
    /// detect needs no weights file and gives the same rows.
    func testEmbeddedWeightsGenericWithoutOpenMPMatchesSSDC() throws {
        try requireTools(["gcc", "make"], "the bundle is built with gcc and make")
        let picture = try writePicture()
        let reference = try referenceRows(picture.image)
        let dir = try export("embedded", ["--embed-weights", "--target", "generic"])
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(dir)/weights.c"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(dir)/weights.bin"), "an embedded bundle has no weights file")
        let makefile = try String(contentsOfFile: "\(dir)/Makefile", encoding: .utf8)
        XCTAssertFalse(makefile.contains("-march"), "--target generic passes no -march")
        try make(dir, ["CC=gcc", "OPENMP=0", "PNG=0"])
        assertRows(parseRows(try run("\(dir)/detect", ["--raw", picture.ppm])), match: reference, "gcc, generic, no OpenMP, embedded")
        let nm = try Shell.run("nm", ["-u", "\(dir)/detect"])
        XCTAssertFalse(nm.stdout.contains("omp_") || nm.stdout.contains("GOMP_"), "built with OPENMP=0 but uses OpenMP:\n\(nm.stdout)")
    }

    /// The generic bundle cross-built for aarch64 with Debian's gcc and run under qemu.
    func testAArch64CrossBuildUnderQEMUMatchesSSDC() throws {
        try requireTools(["make", "aarch64-linux-gnu-gcc", "aarch64-linux-gnu-ar"],
                         "the aarch64 cross-build needs Debian's crossbuild-essential-arm64")
        try requireTools(["qemu-aarch64"], "running the aarch64 build needs qemu-user")
        let picture = try writePicture()
        let reference = try referenceRows(picture.image)
        let dir = try export("aarch64", ["--target", "generic"])
        try make(dir, ["CC=aarch64-linux-gnu-gcc", "AR=aarch64-linux-gnu-ar", "PNG=0"])
        let out = try run("\(dir)/detect", ["--raw", "--threads", "2", "--weights", "\(dir)/weights.bin", picture.ppm],
                          runner: ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"])
        assertRows(parseRows(out), match: reference, "aarch64 under qemu")
    }
}
