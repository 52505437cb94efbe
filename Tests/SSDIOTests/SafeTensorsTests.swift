import Foundation
import XCTest
@testable import SSDIO

final class SafeTensorsTests: XCTestCase {
    // MARK: Helpers

    /// Builds a safetensors file by hand: u64 LE length, header text, data.
    private func rawFile(header: String, data: [UInt8], declaredLength: UInt64? = nil) -> [UInt8] {
        let headerBytes = Array(header.utf8)
        let n = declaredLength ?? UInt64(headerBytes.count)
        var out: [UInt8] = (0 ..< 8).map { UInt8(truncatingIfNeeded: n >> (8 * UInt64($0))) }
        out += headerBytes
        out += data
        return out
    }

    private func floatBytes(_ values: [Float]) -> [UInt8] {
        values.withUnsafeBytes { [UInt8]($0) }
    }

    /// Runs `body`, expecting a SafeTensorsError of `kind` whose message names
    /// `path` and (if given) `tensor`.
    private func assertError(_ kind: SafeTensorsError.Kind, path: String, tensor: String? = nil,
                             file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Void)
    {
        do {
            try body()
            XCTFail("expected SafeTensorsError.\(kind)", file: file, line: line)
        } catch let error as SafeTensorsError {
            XCTAssertEqual(error.kind, kind, error.description, file: file, line: line)
            XCTAssertTrue(error.description.contains(path), "message lacks file name: \(error)", file: file, line: line)
            XCTAssertEqual(error.localizedDescription, error.description, file: file, line: line)
            if let tensor {
                XCTAssertEqual(error.tensor, tensor, file: file, line: line)
                XCTAssertTrue(error.description.contains("'\(tensor)'"), "message lacks tensor: \(error)", file: file, line: line)
            }
        } catch {
            XCTFail("unexpected error \(error)", file: file, line: line)
        }
    }

    /// Writes `bytes` to a temp file and expects reading it to fail.
    private func assertReadError(_ kind: SafeTensorsError.Kind, bytes: [UInt8], tensor: String? = nil,
                                 file: StaticString = #filePath, line: UInt = #line) throws
    {
        let dir = try TestSupport.makeTempDirectory(self)
        let path = dir + "/bad.safetensors"
        try TestSupport.writeFile(bytes, to: path)
        assertError(kind, path: path, tensor: tensor, file: file, line: line) { _ = try SafeTensors.read(path) }
    }

    // MARK: HostTensor

    func testHostTensorBasics() {
        let t = HostTensor(floats: [1, 2, 3, 4, 5, 6], shape: [2, 3])
        XCTAssertEqual(t.dtype, .f32)
        XCTAssertEqual(t.count, 6)
        XCTAssertEqual(t.bytes.count, 24)
        XCTAssertEqual(t.floats, [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(t.int64s, [1, 2, 3, 4, 5, 6])
        // Raw bytes are little-endian IEEE 754: 1.0f = 00 00 80 3f.
        XCTAssertEqual(Array(t.bytes[0 ..< 4]), [0x00, 0x00, 0x80, 0x3F])

        let scalar = HostTensor(floats: [2.5], shape: [])
        XCTAssertEqual(scalar.count, 1)
        XCTAssertEqual(scalar.floats, [2.5])

        let empty = HostTensor(floats: [], shape: [0, 4])
        XCTAssertEqual(empty.count, 0)
        XCTAssertEqual(empty.bytes, [])

        XCTAssertEqual(HostTensor(int64s: [-1, 1 << 40], shape: [2]).bytes,
                       [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0])
        XCTAssertEqual(HostTensor(dtype: .u8, shape: [3], bytes: [1, 2, 3]), HostTensor(uint8s: [1, 2, 3], shape: [3]))
        XCTAssertNotEqual(HostTensor(floats: [1], shape: [1]), HostTensor(floats: [1], shape: []))
        XCTAssertEqual(HostTensor(floats: [1, 2.5], shape: [2]).description, "HostTensor(F32, shape: [2], values: [1.0, 2.5])")
        XCTAssertEqual(HostTensor(int64s: Array(0 ..< 10), shape: [2, 5]).description,
                       "HostTensor(I64, shape: [2, 5], values: [0, 1, 2, 3, 4, 5, ...])")
    }

    func testConversionsToFloatAndInt64() {
        XCTAssertEqual(HostTensor(doubles: [0.5, -1.25], shape: [2]).floats, [0.5, -1.25])
        XCTAssertEqual(HostTensor(int64s: [-3, 7], shape: [2]).floats, [-3, 7])
        XCTAssertEqual(HostTensor(int32s: [-3, 7], shape: [2]).floats, [-3, 7])
        XCTAssertEqual(HostTensor(uint8s: [0, 255], shape: [2]).floats, [0, 255])
        XCTAssertEqual(HostTensor(int32s: [-3, 7], shape: [2]).int64s, [-3, 7])
        XCTAssertEqual(HostTensor(uint8s: [0, 255], shape: [2]).int64s, [0, 255])
        // Floats truncate toward zero; NaN -> 0; out of range saturates.
        XCTAssertEqual(HostTensor(floats: [2.9, -2.9, .nan, 1e30, -1e30], shape: [5]).int64s,
                       [2, -2, 0, .max, .min])
        XCTAssertEqual(HostTensor(doubles: [7.99], shape: [1]).int64s, [7])
    }

    func testFastFloatAccess() {
        let t = HostTensor(floats: [1, 2, 3], shape: [3])
        let sum = t.withUnsafeFloatBuffer { $0.reduce(0, +) }
        XCTAssertEqual(sum, 6)
        // Non-F32 tensors are converted for the closure.
        XCTAssertEqual(HostTensor(int64s: [4, 5], shape: [2]).withUnsafeFloatBuffer { Array($0) }, [4, 5])

        var destination = [Float](repeating: -1, count: 3)
        destination.withUnsafeMutableBufferPointer { t.copyFloats(into: $0) }
        XCTAssertEqual(destination, [1, 2, 3])
        destination.withUnsafeMutableBufferPointer { HostTensor(uint8s: [9, 8, 7], shape: [3]).copyFloats(into: $0.baseAddress!) }
        XCTAssertEqual(destination, [9, 8, 7])

        let fromPointer = [Float](arrayLiteral: 0.5, 1.5).withUnsafeBufferPointer { HostTensor(floats: $0, shape: [1, 2]) }
        XCTAssertEqual(fromPointer, HostTensor(floats: [0.5, 1.5], shape: [1, 2]))
    }

    // MARK: Round trips

    func testRoundTripWithMetadata() throws {
        let dir = try TestSupport.makeTempDirectory(self)
        let path = dir + "/model.safetensors"
        let tensors: [String: HostTensor] = [
            "conv.weight": HostTensor(floats: (0 ..< 24).map { Float($0) * 0.5 - 3 }, shape: [2, 3, 2, 2]),
            "labels": HostTensor(int64s: [0, -1, 1 << 50], shape: [3]),
            "step": HostTensor(int64s: [1234], shape: []),
            "lr": HostTensor(floats: [0.2], shape: []),
            "f64": HostTensor(doubles: [.pi, -.infinity], shape: [2]),
            "i32": HostTensor(int32s: [.min, .max], shape: [1, 2]),
            "mask": HostTensor(uint8s: [0, 1, 255], shape: [3]),
            "empty": HostTensor(floats: [], shape: [0]),
        ]
        let metadata = ["format": "ssdc", "epoch": "12", "note": "quote \" backslash \\ newline \n tab \t ünïcødé"]
        try SafeTensors.write(tensors, metadata: metadata, to: path)

        let (read, readMetadata) = try SafeTensors.readWithMetadata(path)
        XCTAssertEqual(read, tensors)
        XCTAssertEqual(readMetadata, metadata)
        XCTAssertEqual(try SafeTensors.read(path), tensors)
        XCTAssertEqual(read["labels"]?.int64s, [0, -1, 1 << 50])
        XCTAssertEqual(read["step"]?.shape, [])
        XCTAssertEqual(read["step"]?.int64s, [1234])
    }

    func testRoundTripWithoutMetadataAndOddNames() throws {
        let dir = try TestSupport.makeTempDirectory(self)
        let path = dir + "/x.safetensors"
        let tensors = ["a \"quoted\" name/with\\slash": HostTensor(floats: [1], shape: [1]),
                       "": HostTensor(floats: [2], shape: [1])]
        try SafeTensors.write(tensors, to: path)
        let (read, metadata) = try SafeTensors.readWithMetadata(path)
        XCTAssertEqual(read, tensors)
        XCTAssertEqual(metadata, [:])
    }

    // MARK: Deterministic layout

    func testExactBytesAndDeterminism() throws {
        let a = HostTensor(floats: [1, 2], shape: [2])
        let b = HostTensor(int64s: [5], shape: [])
        let bytes = try SafeTensors.encode(["b": b, "a": a], metadata: ["k": "v"])

        let header = #"{"__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"# +
            #""b":{"dtype":"I64","shape":[],"data_offsets":[8,16]}}"#
        let padded = header + String(repeating: " ", count: (8 - header.utf8.count % 8) % 8)
        XCTAssertEqual(padded.utf8.count % 8, 0)
        let expected = rawFile(header: padded, data: floatBytes([1, 2]) + [5, 0, 0, 0, 0, 0, 0, 0])
        XCTAssertEqual(bytes, expected)

        // Same content, different dictionary construction order -> same bytes.
        var shuffled: [String: HostTensor] = [:]
        for name in ["z", "m", "a", "q", "b"].shuffled() { shuffled[name] = HostTensor(floats: [Float(name.utf8.first!)], shape: [1]) }
        var other: [String: HostTensor] = [:]
        for name in ["b", "q", "a", "m", "z"] { other[name] = shuffled[name] }
        XCTAssertEqual(try SafeTensors.encode(shuffled, metadata: ["x": "1", "y": "2"]),
                       try SafeTensors.encode(other, metadata: ["y": "2", "x": "1"]))

        // Files written twice are byte-identical.
        let dir = try TestSupport.makeTempDirectory(self)
        try SafeTensors.write(shuffled, to: dir + "/1.safetensors")
        try SafeTensors.write(other, to: dir + "/2.safetensors")
        XCTAssertEqual(try TestSupport.readFile(dir + "/1.safetensors"), try TestSupport.readFile(dir + "/2.safetensors"))
    }

    func testWriteCreatesDirectoriesReplacesAtomicallyAndLeavesNoTempFiles() throws {
        let dir = try TestSupport.makeTempDirectory(self)
        let path = dir + "/runs/exp1/ckpt/weights.safetensors"
        try SafeTensors.write(["w": HostTensor(floats: [1], shape: [1])], to: path)
        try SafeTensors.write(["w": HostTensor(floats: [2, 3], shape: [2])], to: path)
        XCTAssertEqual(try SafeTensors.read(path)["w"]?.floats, [2, 3])
        XCTAssertEqual(try TestSupport.directoryEntries(dir + "/runs/exp1/ckpt"), ["weights.safetensors"])

        // Relative paths work too (written relative to the current directory).
        let saved = FileManager.default.currentDirectoryPath
        XCTAssertTrue(FileManager.default.changeCurrentDirectoryPath(dir))
        defer { _ = FileManager.default.changeCurrentDirectoryPath(saved) }
        try SafeTensors.write(["w": HostTensor(floats: [4], shape: [1])], to: "relative.safetensors")
        XCTAssertEqual(try SafeTensors.read(dir + "/relative.safetensors")["w"]?.floats, [4])
    }

    func testWriteErrorsNameFileAndTensor() throws {
        let dir = try TestSupport.makeTempDirectory(self)
        // The parent "directory" is a regular file.
        try TestSupport.writeFile([1], to: dir + "/plainfile")
        let blocked = dir + "/plainfile/sub/w.safetensors"
        assertError(.io, path: blocked) { try SafeTensors.write(["w": HostTensor(floats: [1], shape: [1])], to: blocked) }

        let path = dir + "/w.safetensors"
        assertError(.invalidTensor, path: path, tensor: "__metadata__") {
            try SafeTensors.write(["__metadata__": HostTensor(floats: [1], shape: [1])], to: path)
        }
        var broken = HostTensor(floats: [1, 2], shape: [2])
        broken.bytes.removeLast() // public var: can be made inconsistent
        assertError(.invalidTensor, path: path, tensor: "broken") { try SafeTensors.write(["broken": broken], to: path) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))
        XCTAssertEqual(try TestSupport.directoryEntries(dir), ["plainfile"])
    }

    // MARK: Files from other writers

    /// Bytes produced by Python's safetensors library (see TestVectors).
    func testReadsFileWrittenByPythonSafetensors() throws {
        let bytes = TestSupport.bytes(hex: TestVectors.pythonSafetensorsHex)
        let dir = try TestSupport.makeTempDirectory(self)
        let path = dir + "/python.safetensors"
        try TestSupport.writeFile(bytes, to: path)

        let (t, metadata) = try SafeTensors.readWithMetadata(path)
        XCTAssertEqual(metadata, ["format": "np", "epoch": "3"])
        XCTAssertEqual(Set(t.keys), ["weight", "labels", "scalar", "bias", "counts", "mask", "empty"])
        XCTAssertEqual(t["weight"], HostTensor(floats: [1.5, -2.25, 3.0, 0.0, 1e-3, -7.75], shape: [2, 3]))
        XCTAssertEqual(t["labels"], HostTensor(int64s: [0, -1, 1 << 40, 7], shape: [4]))
        XCTAssertEqual(t["scalar"], HostTensor(floats: [3.25], shape: []))
        XCTAssertEqual(t["bias"], HostTensor(doubles: [0.1, -0.2], shape: [2]))
        XCTAssertEqual(t["counts"], HostTensor(int32s: [1, -2, 300_000], shape: [3]))
        XCTAssertEqual(t["mask"], HostTensor(uint8s: [0, 1, 255, 7, 9], shape: [5]))
        XCTAssertEqual(t["empty"], HostTensor(floats: [], shape: [0, 3]))

        // Our writer emits the same data; only the layout order differs
        // (Python groups by dtype size), so re-encoding round-trips.
        XCTAssertEqual(try SafeTensors.decode(try SafeTensors.encode(t, metadata: metadata)).tensors, t)
    }

    /// A header written by hand following the format description: arbitrary
    /// whitespace, keys in any order, data not in name order, padding.
    func testReadsHandCraftedFile() throws {
        let header = """
        {
          "b" : { "shape" : [ 2 ], "data_offsets" : [ 0, 16 ], "dtype" : "I64" },
          "a" : { "dtype" : "F32", "data_offsets" : [16, 28], "shape" : [3, 1] },
          "__metadata__" : { "source" : "hand" }
        }\u{20}\u{20}\u{20}
        """
        let data: [UInt8] = [2, 0, 0, 0, 0, 0, 0, 0, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF] + floatBytes([0.25, -8, 100])
        let (t, metadata) = try SafeTensors.decode(rawFile(header: header, data: data), source: "hand")
        XCTAssertEqual(metadata, ["source": "hand"])
        XCTAssertEqual(t["b"], HostTensor(int64s: [2, -2], shape: [2]))
        XCTAssertEqual(t["a"], HostTensor(floats: [0.25, -8, 100], shape: [3, 1]))
    }

    /// Reads every safetensors fixture committed under Tests/Fixtures.
    func testReadsCommittedFixtures() throws {
        let fixtures = TestSupport.packageRoot.appendingPathComponent("Tests/Fixtures").path
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: fixtures)) ?? [])
            .filter { $0.hasSuffix(".safetensors") }.sorted()
        if names.isEmpty { throw XCTSkip("no .safetensors files in \(fixtures) yet") }
        for name in names {
            let path = fixtures + "/" + name
            let (tensors, _) = try SafeTensors.readWithMetadata(path)
            for (tensorName, t) in tensors {
                XCTAssertEqual(t.bytes.count, t.count * t.dtype.byteSize, "\(name): \(tensorName)")
            }
        }
    }

    func testReadingFiveMegabytesIsFast() throws {
        let dir = try TestSupport.makeTempDirectory(self)
        let path = dir + "/big.safetensors"
        let n = 5 * 1024 * 1024 / 4
        let big = HostTensor(floats: (0 ..< n).map { Float($0 % 1000) }, shape: [n])
        try SafeTensors.write(["big": big, "small": HostTensor(int64s: [1], shape: [1])], to: path)
        let start = Date()
        var loaded: HostTensor?
        for _ in 0 ..< 5 { loaded = try SafeTensors.read(path)["big"] }
        let perRead = Date().timeIntervalSince(start) / 5
        XCTAssertEqual(loaded, big)
        // A memcpy-based read takes a few milliseconds; a per-element Swift
        // loop in a debug build would take far longer than this bound.
        XCTAssertLessThan(perRead, 0.25, "reading 5 MB took \(perRead) s")
    }

    // MARK: Read errors

    func testMissingFile() throws {
        let dir = try TestSupport.makeTempDirectory(self)
        let path = dir + "/does-not-exist.safetensors"
        assertError(.io, path: path) { _ = try SafeTensors.read(path) }
        assertError(.io, path: dir) { _ = try SafeTensors.read(dir) } // a directory
    }

    func testTruncatedFiles() throws {
        try assertReadError(.truncated, bytes: [])
        try assertReadError(.truncated, bytes: [1, 0, 0])
        // Length says 100 bytes of header, only 10 follow.
        try assertReadError(.headerOutOfRange, bytes: rawFile(header: "{\"a\":1}   ", data: [], declaredLength: 100))
        // Absurd length (e.g. not a safetensors file at all).
        try assertReadError(.headerOutOfRange, bytes: rawFile(header: "{}", data: [], declaredLength: .max))
        // Valid header, but the data section was cut short.
        let good = try SafeTensors.encode(["w": HostTensor(floats: [1, 2, 3, 4], shape: [4])])
        try assertReadError(.offsetsOutOfRange, bytes: Array(good.dropLast(3)), tensor: "w")
    }

    func testBadJSON() throws {
        try assertReadError(.invalidJSON, bytes: rawFile(header: "{\"a\": {\"dtype\": ", data: []))
        try assertReadError(.invalidJSON, bytes: rawFile(header: "", data: []))
        try assertReadError(.invalidJSON, bytes: rawFile(header: "not json at all", data: []))
        try assertReadError(.invalidJSON, bytes: [8, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFE, 0x7B, 0x7D, 0x20, 0x20, 0x20, 0x20])
        try assertReadError(.invalidHeader, bytes: rawFile(header: "[1, 2]", data: []))
        try assertReadError(.invalidHeader, bytes: rawFile(header: #"{"w": 3}"#, data: []), tensor: "w")
        try assertReadError(.invalidHeader, bytes: rawFile(header: #"{"w": {"shape": [1], "data_offsets": [0, 4]}}"#,
                                                          data: [0, 0, 0, 0]), tensor: "w")
    }

    func testUnknownDType() throws {
        let bytes = rawFile(header: #"{"half": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}"#, data: [0, 0, 0, 0])
        try assertReadError(.unknownDType, bytes: bytes, tensor: "half")
        do {
            _ = try SafeTensors.decode(bytes, source: "mem")
        } catch let error as SafeTensorsError {
            XCTAssertTrue(error.description.contains("BF16"), error.description)
        }
    }

    func testBadShapes() throws {
        for shape in ["[-1]", "[2.5]", "[true]", "\"2\"", "[[2]]", "null"] {
            let header = #"{"w": {"dtype": "U8", "shape": \#(shape), "data_offsets": [0, 2]}}"#
            try assertReadError(.invalidShape, bytes: rawFile(header: header, data: [0, 0]), tensor: "w")
        }
    }

    func testOffsetsOutOfRange() throws {
        // End beyond the data section.
        try assertReadError(.offsetsOutOfRange, bytes: rawFile(
            header: #"{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#, data: [0, 0, 0, 0]), tensor: "w")
        // Begin after end.
        try assertReadError(.offsetsOutOfRange, bytes: rawFile(
            header: #"{"w": {"dtype": "U8", "shape": [0], "data_offsets": [4, 2]}}"#, data: [0, 0, 0, 0]), tensor: "w")
        // Negative, missing, or malformed offsets.
        for offsets in ["[-4, 0]", "[0]", "[0, 4, 8]", "[0, \"4\"]", "null"] {
            try assertReadError(.offsetsOutOfRange, bytes: rawFile(
                header: #"{"w": {"dtype": "U8", "shape": [4], "data_offsets": \#(offsets)}}"#, data: [0, 0, 0, 0]), tensor: "w")
        }
    }

    func testOverlappingTensors() throws {
        let header = #"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "#
            + #""b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}"#
        try assertReadError(.overlappingData, bytes: rawFile(header: header, data: [UInt8](repeating: 0, count: 12)), tensor: "b")
        do {
            _ = try SafeTensors.decode(rawFile(header: header, data: [UInt8](repeating: 0, count: 12)), source: "mem")
        } catch let error as SafeTensorsError {
            XCTAssertTrue(error.description.contains("'a'"), "should name both tensors: \(error)")
        }
        // Two tensors sharing exactly the same bytes also overlap.
        let same = #"{"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}, "#
            + #""b": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}}"#
        try assertReadError(.overlappingData, bytes: rawFile(header: same, data: [1, 2, 3, 4]))
        // Empty tensors occupy no bytes and never overlap.
        let empty = #"{"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}, "#
            + #""e": {"dtype": "F32", "shape": [0], "data_offsets": [2, 2]}}"#
        XCTAssertEqual(try SafeTensors.decode(rawFile(header: empty, data: [1, 2, 3, 4])).tensors.count, 2)
    }

    func testSizeMismatch() throws {
        // F32 [3] needs 12 bytes, offsets give 8.
        try assertReadError(.sizeMismatch, bytes: rawFile(
            header: #"{"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}"#,
            data: [UInt8](repeating: 0, count: 12)), tensor: "w")
        // A shape whose byte size overflows.
        try assertReadError(.sizeMismatch, bytes: rawFile(
            header: #"{"w": {"dtype": "F64", "shape": [4611686018427387904, 4], "data_offsets": [0, 8]}}"#,
            data: [UInt8](repeating: 0, count: 8)), tensor: "w")
    }

    func testBadMetadata() throws {
        try assertReadError(.invalidMetadata, bytes: rawFile(header: #"{"__metadata__": {"epoch": 3}}"#, data: []))
        try assertReadError(.invalidMetadata, bytes: rawFile(header: #"{"__metadata__": ["a"]}"#, data: []))
    }
}
