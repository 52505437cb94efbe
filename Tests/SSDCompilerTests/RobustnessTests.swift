import Foundation
import SSDABI
@testable import SSDCompiler
import SSDRuntime
import XCTest

/// The file steps of the build cache (temporary file, check, rename), the check of a
/// library before dlopen, and the time-limited process group a model program runs in.
final class RobustnessTests: XCTestCase {
    var tmp: String!

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent("ssdc-robust-\(getpid())-\(name.filter { $0.isLetter })").path
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        if let tmp { try? FileManager.default.removeItem(atPath: tmp) }
    }

    /// Files in `tmp` whose names mark them as AtomicFile's temporary files.
    func leftoverTemporaries() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: tmp).filter { $0.contains(".tmp-") }
    }

    /// A small shared library and an object file built by the C compiler.
    func buildLibrary() throws -> (library: String, object: String) {
        let cc = try Toolchain.findCC()
        let source = "\(tmp!)/lib.c"
        // A few pages of initialised data, so the loaded segments reach far into the file.
        try "int table[8192] = {1, 2, 3};\nint get(int i) { return table[i]; }\n".write(toFile: source, atomically: true, encoding: .utf8)
        let lib = "\(tmp!)/libtiny.so", object = "\(tmp!)/tiny.o"
        var r = try Shell.run(cc, ["-shared", "-fPIC", source, "-o", lib])
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try Shell.run(cc, ["-c", "-fPIC", source, "-o", object])
        XCTAssertEqual(r.status, 0, r.stderr)
        return (lib, object)
    }

    func truncate(_ path: String, to fraction: Double) throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        try data.prefix(Int(Double(data.count) * fraction)).write(to: URL(fileURLWithPath: path))
    }

    // MARK: atomic replace

    func testReplaceOverwritesAnExistingFile() throws {
        let dest = "\(tmp!)/lib.so"
        try AtomicFile.write(Data("old".utf8), to: dest)
        let source = AtomicFile.temporaryPath(for: dest)
        try Data("new".utf8).write(to: URL(fileURLWithPath: source))
        // FileManager.moveItem fails here with "A file with the same name already exists".
        try AtomicFile.replace(dest, with: source)
        XCTAssertEqual(FileManager.default.contents(atPath: dest), Data("new".utf8))
        XCTAssertEqual(try leftoverTemporaries(), [])
    }

    func testConcurrentWritersOfOneFileAllSucceedAndLeaveAWholeFile() throws {
        let dest = "\(tmp!)/entry"
        let copies = (0 ..< 16).map { i in Data(repeating: UInt8(i), count: 200_000) }
        let failures = ErrorBox()
        DispatchQueue.concurrentPerform(iterations: copies.count) { i in
            do { try AtomicFile.write(copies[i], to: dest) } catch { failures.add("\(error)") }
        }
        XCTAssertNil(failures.first)
        let result = try XCTUnwrap(FileManager.default.contents(atPath: dest))
        XCTAssertTrue(copies.contains(result), "the file is one writer's whole data, not a mix")
        XCTAssertEqual(try leftoverTemporaries(), [])
    }

    func testCopyReplacesTheDestinationWhole() throws {
        let source = "\(tmp!)/a", dest = "\(tmp!)/b"
        try Data(repeating: 7, count: 3_000_000).write(to: URL(fileURLWithPath: source))
        try Data("previous".utf8).write(to: URL(fileURLWithPath: dest))
        try AtomicFile.copy(source, to: dest)
        XCTAssertEqual(FileManager.default.contents(atPath: dest), FileManager.default.contents(atPath: source))
        XCTAssertEqual(try leftoverTemporaries(), [])
    }

    func testFileErrorsAreInWords() throws {
        XCTAssertThrowsError(try AtomicFile.write(Data(), to: "\(tmp!)/missing/dir/file")) { error in
            XCTAssertEqual("\(error)", "cannot write \(self.tmp!)/missing/dir/file: No such file or directory")
        }
        try Data().write(to: URL(fileURLWithPath: "\(tmp!)/plain"))
        XCTAssertThrowsError(try AtomicFile.makeDirectory("\(tmp!)/plain/sub")) { error in
            XCTAssertTrue("\(error)".contains("\(self.tmp!)/plain: a file of that name is in the way"), "\(error)")
        }
        XCTAssertThrowsError(try AtomicFile.read("\(tmp!)/nothing")) { error in
            XCTAssertFalse("\(error)".contains("Code="), "\(error)")
            XCTAssertTrue("\(error)".contains("\(self.tmp!)/nothing"), "\(error)")
        }
        XCTAssertTrue(AtomicFile.reason(ENOSPC).contains("no space left on device"))
        XCTAssertTrue(AtomicFile.describe(NSError(domain: NSCocoaErrorDomain, code: 516)).contains("already exists"))
        struct Pair: Decodable { var a: [Int] }
        XCTAssertThrowsError(try JSONDecoder().decode(Pair.self, from: Data("{\"a\": [1, ".utf8))) { error in
            XCTAssertTrue(AtomicFile.describe(error).hasPrefix("not valid JSON (cut short"), AtomicFile.describe(error))
        }
        XCTAssertThrowsError(try JSONDecoder().decode(Pair.self, from: Data("{\"a\": [1, \"x\"]}".utf8))) { error in
            XCTAssertTrue(AtomicFile.describe(error).hasPrefix("expected Int at .a[1]: "), AtomicFile.describe(error))
        }
    }

    // MARK: checking libraries

    func testELFCheckFindsTruncatedEmptyAndForeignFiles() throws {
        let (lib, object) = try buildLibrary()
        XCTAssertNil(ELFFile.problem(lib, kind: .sharedLibrary))
        XCTAssertNil(ELFFile.problem(object, kind: .object))
        XCTAssertEqual(ELFFile.problem(object, kind: .sharedLibrary), "not a shared library (ELF type 1)")
        XCTAssertEqual(ELFFile.problem(tmp, kind: .sharedLibrary), "not a regular file")
        XCTAssertEqual(ELFFile.problem("\(tmp!)/lib.c", kind: .sharedLibrary), "not an ELF file (not a shared library built by ssdc)")
        XCTAssertEqual(ELFFile.problem("\(tmp!)/none.so", kind: .sharedLibrary), "No such file or directory")
        try truncate(lib, to: 0.6)
        XCTAssertTrue(ELFFile.problem(lib, kind: .sharedLibrary)?.hasPrefix("truncated: ") ?? false)
        try truncate(lib, to: 0)
        XCTAssertEqual(ELFFile.problem(lib, kind: .sharedLibrary), "empty (0 bytes): it was not completely written")
    }

    /// dlopen of a truncated library maps pages past the end of the file and the process
    /// dies with SIGBUS; the loader must refuse it first, naming the file.
    func testLoaderRefusesATruncatedLibraryBeforeDlopen() throws {
        let (lib, _) = try buildLibrary()
        try truncate(lib, to: 0.5)
        XCTAssertThrowsError(try ModelLibrary(path: lib)) { error in
            let message = "\(error)"
            XCTAssertTrue(message.hasPrefix("cannot load \(lib): truncated: "), message)
            XCTAssertTrue(message.contains("Recompile the model with `ssdc compile`"), message)
        }
    }

    // MARK: building into the cache

    /// A stand-in C compiler: a shell script that writes `-o`'s file as `body` says.
    func fakeCompiler(_ body: String) throws -> ToolchainInfo {
        let path = "\(tmp!)/fakecc"
        try "#!/bin/sh\nfor a; do out=\"$a\"; done\n\(body)\n".write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o755)
        return ToolchainInfo(cc: path, version: "fake", flags: [])
    }

    func testAnIncompleteCompilerOutputNeverReachesTheCache() throws {
        let (lib, _) = try buildLibrary()
        let dest = "\(tmp!)/cached.so"
        let toolchain = try fakeCompiler("head -c 3000 \(lib) > \"$out\"; exit 0")
        let output = AtomicFile.temporaryPath(for: dest)
        XCTAssertThrowsError(try Toolchain.buildVerified(output, into: dest, kind: .sharedLibrary, toolchain: toolchain,
                                                         arguments: ["-o", output])) { error in
            XCTAssertTrue("\(error)".contains("wrote an incomplete \(dest): truncated"), "\(error)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dest))
        XCTAssertEqual(try leftoverTemporaries(), [])
    }

    func testAFullDiskDuringTheBuildIsSaidInWords() throws {
        let dest = "\(tmp!)/cached.so"
        let toolchain = try fakeCompiler("echo 'ld: final link failed: No space left on device' >&2; head -c 10 /dev/zero > \"$out\"; exit 1")
        let output = AtomicFile.temporaryPath(for: dest)
        XCTAssertThrowsError(try Toolchain.buildVerified(output, into: dest, kind: .sharedLibrary, toolchain: toolchain,
                                                         arguments: ["-o", output])) { error in
            XCTAssertTrue("\(error)".hasPrefix("cannot build \(dest): no space left on device (the disk is full"), "\(error)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dest))
        XCTAssertEqual(try leftoverTemporaries(), [])
    }

    // MARK: process groups

    /// Whether a process is alive (a zombie waiting for a parent that does not reap it is not).
    static func isAlive(_ pid: Int) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        return !stat[stat.index(close, offsetBy: 2)...].hasPrefix("Z")
    }

    func testATimedOutProgramIsKilledWithEverythingItStarted() throws {
        let start = Date()
        let r = try ProcessGroup.run("/bin/sh", ["-c", "sleep 60 & echo $!; sleep 60"], environment: [:], timeout: 1)
        XCTAssertTrue(r.timedOut)
        XCTAssertLessThan(Date().timeIntervalSince(start), 10)
        let child = try XCTUnwrap(Int(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)), r.stdout)
        XCTAssertFalse(Self.isAlive(child), "the program's background child \(child) was not killed")
    }

    func testAFinishedProgramGivesItsOutputAndStatus() throws {
        let r = try ProcessGroup.run("/bin/sh", ["-c", "echo out; echo err >&2; exit 3"], environment: [:], timeout: 30)
        XCTAssertFalse(r.timedOut)
        XCTAssertEqual(r.status, 3)
        XCTAssertEqual(r.stdout, "out\n")
        XCTAssertEqual(r.stderr, "err\n")
    }
}
