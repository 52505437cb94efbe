import Foundation
import SSDABI
import SSDCompiler
import SSDRuntime
import XCTest

/// The contract in SSDABI between the compiler, which writes a library's manifest and
/// entry points, and the runtime, which reads them: a manifest the compiler writes decodes
/// through SSDABI unchanged, the emitted C exports the symbols SSDABI names, and a
/// manifest of another ABI version is refused, naming its file, also by the runtime's loader.
final class ManifestContractTests: XCTestCase {
    var tmp: String!

    override func setUpWithError() throws {
        tmp = NSTemporaryDirectory() + "ssdc-abi-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: tmp) }

    func compiled() throws -> CompiledModel {
        try CompiledModel(graph: try goldenModel.graph(height: 8, width: 8), toolchain: GoldenCTests.toolchain)
    }

    func testTheCompilersManifestDecodesThroughSSDABIUnchanged() throws {
        let model = try compiled()
        for withCompiler in [true, false] {
            let json = model.manifestJSON(withCompiler: withCompiler)
            let manifest = try Manifest.decode(Data(json.utf8), from: "manifest.json")
            XCTAssertEqual(manifest.abiVersion, ABI.version)
            XCTAssertEqual(manifest.json(), json, "decoding and encoding again must give the same bytes")
            XCTAssertEqual(manifest.programs.map(\.name), model.programs.map(\.name))
            XCTAssertEqual(manifest.compiler == nil, !withCompiler)
        }
    }

    func testTheEmittedCExportsTheSymbolsSSDABINames() throws {
        let model = try compiled()
        let source = CEmitter(model).source(), header = CEmitter(model).header()
        XCTAssertTrue(header.contains("#define SSDC_ABI_VERSION \(ABI.version)\n"))
        for p in model.manifest.programs {
            XCTAssertEqual(p.entry, ABI.entry(p.name))
            XCTAssertEqual(p.scratchEntry, ABI.scratchEntry(p.name))
            XCTAssertTrue(source.contains("int \(p.entry)(int64_t N, "), "no entry point \(p.entry)")
            XCTAssertTrue(source.contains("size_t \(p.scratchEntry)(int64_t N"), "no scratch query \(p.scratchEntry)")
        }
        for symbol in [ABI.manifestSymbol, ABI.versionSymbol, ABI.setThreadsSymbol, ABI.parametersChangedSymbol,
                       ABI.setProfilingSymbol, ABI.profileSymbol] {
            // A function's name follows its return type: `int f(`, `double *f(`.
            let named = [" \(symbol)(", "*\(symbol)("]
            XCTAssertTrue(named.contains { source.contains($0) }, "model.c does not define \(symbol)")
            XCTAssertTrue(named.contains { header.contains($0) }, "model.h does not declare \(symbol)")
        }
    }

    func testAManifestOfAnotherABIVersionIsRefusedNamingItsFile() throws {
        var manifest = try compiled().manifest
        manifest.abiVersion = ABI.version + 1
        XCTAssertThrowsError(try Manifest.decode(Data(manifest.json().utf8), from: "/models/old/libmodel.so")) { error in
            XCTAssertEqual("\(error)", "/models/old/libmodel.so has ABI version \(ABI.version + 1); this ssdc expects \(ABI.version). Recompile the model.")
        }
        // Checked before the rest: another version's manifest may not have this one's fields.
        XCTAssertThrowsError(try Manifest.decode(Data(#"{"abi_version": 1, "kernels": []}"#.utf8), from: "a.so")) { error in
            XCTAssertEqual("\(error)", "a.so has ABI version 1; this ssdc expects \(ABI.version). Recompile the model.")
        }
        XCTAssertThrowsError(try Manifest.decode(Data(#"{"abi_version": \#(ABI.version)}"#.utf8), from: "b.so")) { error in
            XCTAssertTrue("\(error)".hasPrefix("b.so: its manifest is not one this ssdc reads (missing \"model\""), "\(error)")
        }
    }

    /// A shared library `name` whose only export is the manifest function, returning `json`.
    func library(_ name: String, manifest json: String) throws -> String {
        let literal = json.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
        let source = "\(tmp!)/\(name).c", lib = "\(tmp!)/\(name).so"
        try "const char *\(ABI.manifestSymbol)(void) { return \"\(literal)\"; }\n".write(toFile: source, atomically: true, encoding: .utf8)
        let r = try Shell.run(try Toolchain.findCC(), ["-shared", "-fPIC", source, "-o", lib])
        XCTAssertEqual(r.status, 0, r.stderr)
        return lib
    }

    /// The runtime's loader reads the embedded manifest through SSDABI: this version's
    /// loads as the compiler wrote it, another version's is refused naming the library.
    func testTheLoaderChecksTheEmbeddedManifestsABIVersion() throws {
        let model = try compiled()
        let current = try ModelLibrary(path: try library("current", manifest: model.manifestJSON(withCompiler: false)))
        XCTAssertEqual(current.manifest.json(), model.manifestJSON(withCompiler: false))
        var old = model.manifest(withCompiler: false)
        old.abiVersion = ABI.version - 1
        let lib = try library("old", manifest: old.json())
        XCTAssertThrowsError(try ModelLibrary(path: lib)) { error in
            XCTAssertEqual("\(error)", "\(lib) has ABI version \(ABI.version - 1); this ssdc expects \(ABI.version). Recompile the model.")
        }
    }
}
