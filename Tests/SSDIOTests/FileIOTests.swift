import Foundation
import XCTest
@testable import SSDIO

final class FileIOTests: XCTestCase {
    func testReadAllRegularEmptyAndUnknownSizeFiles() throws {
        let dir = try TestSupport.makeTempDirectory(self)
        let bytes = (0 ..< 200_000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        try TestSupport.writeFile(bytes, to: dir + "/data.bin")
        XCTAssertEqual(try FileIO.readAll(dir + "/data.bin"), bytes)
        try TestSupport.writeFile([], to: dir + "/empty.bin")
        XCTAssertEqual(try FileIO.readAll(dir + "/empty.bin"), [])
        // /proc files report size 0 but have content: read until EOF.
        if FileManager.default.fileExists(atPath: "/proc/self/status") {
            XCTAssertFalse(try FileIO.readAll("/proc/self/status").isEmpty)
        }
    }

    func testReadAllFailureKinds() throws {
        let dir = try TestSupport.makeTempDirectory(self)
        XCTAssertThrowsError(try FileIO.readAll(dir + "/missing")) { XCTAssertEqual(($0 as? FileIOFailure)?.kind, .notFound) }
        XCTAssertThrowsError(try FileIO.readAll(dir)) { XCTAssertEqual(($0 as? FileIOFailure)?.kind, .isDirectory) }
    }

    func testWriteAtomicallyRejectsDirectoryPaths() throws {
        let dir = try TestSupport.makeTempDirectory(self)
        XCTAssertThrowsError(try FileIO.writeAtomically([1], to: dir + "/"))
        XCTAssertThrowsError(try FileIO.writeAtomically([1], to: ""))
        // Renaming over an existing directory fails and cleans up the temp file.
        try FileManager.default.createDirectory(atPath: dir + "/taken", withIntermediateDirectories: false)
        XCTAssertThrowsError(try FileIO.writeAtomically([1], to: dir + "/taken"))
        XCTAssertEqual(try TestSupport.directoryEntries(dir), ["taken"])
    }

    func testSplitPath() {
        XCTAssertTrue(FileIO.splitPath("a/b/c.txt") == ("a/b", "c.txt"))
        XCTAssertTrue(FileIO.splitPath("c.txt") == (".", "c.txt"))
        XCTAssertTrue(FileIO.splitPath("/c") == ("/", "c"))
    }
}
