import Foundation
import XCTest

/// Helpers shared by the SSDIO tests.
enum TestSupport {
    /// The package root, found from this file's location
    /// (<root>/Tests/SSDIOTests/TestSupport.swift), so tests do not depend on
    /// the working directory `swift test` was started from.
    /// Symlinks are resolved so a checkout reached through a link still finds
    /// its real neighbours.
    static let packageRoot: URL = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
        .deletingLastPathComponent() // SSDIOTests
        .deletingLastPathComponent() // Tests
        .deletingLastPathComponent() // root

    /// The shared data directory that sits beside the repository (../shared/data).
    static let sharedData: URL = packageRoot.deletingLastPathComponent()
        .appendingPathComponent("shared").appendingPathComponent("data")

    /// Path of a shared data file, or an XCTSkip if it is not present.
    static func sharedFile(_ relativePath: String) throws -> String {
        let path = sharedData.appendingPathComponent(relativePath).path
        guard FileManager.default.fileExists(atPath: path) else {
            throw XCTSkip("shared data file not present: \(path)")
        }
        return path
    }

    /// Tests/Fixtures: committed files, so the tests that need a real picture or data set run
    /// on a fresh clone too. `images/banana.jpg` is the generator's
    /// `SyntheticBananas.makeSample(index: 2, split: .val, size: 256, seed: 9)` saved by Pillow
    /// as JPEG (quality 90); `tiny-bananas` is `SyntheticBananas.generate(trainCount: 4,
    /// valCount: 2, size: 128, seed: 9)`, a data set in the banana-detection layout.
    static let fixtures: URL = packageRoot.appendingPathComponent("Tests").appendingPathComponent("Fixtures")

    /// Path of a committed fixture file (see `fixtures`).
    static func fixtureFile(_ relativePath: String) -> String {
        fixtures.appendingPathComponent(relativePath).path
    }

    /// A fresh, empty temporary directory; removed when the test finishes.
    static func makeTempDirectory(_ testCase: XCTestCase) throws -> String {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("ssdio-tests-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        testCase.addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }

    static func writeFile(_ bytes: [UInt8], to path: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    static func readFile(_ path: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    static func bytes(hex: String) -> [UInt8] {
        let digits = Array(hex.unicodeScalars.filter { !$0.properties.isWhitespace })
        precondition(digits.count % 2 == 0)
        return stride(from: 0, to: digits.count, by: 2).map {
            UInt8(String(String.UnicodeScalarView(digits[$0 ..< $0 + 2])), radix: 16)!
        }
    }

    static func bytes(base64: String) -> [UInt8] {
        [UInt8](Data(base64Encoded: base64)!)
    }

    /// Files other than `.`/`..` in a directory (to spot leftover temp files).
    static func directoryEntries(_ path: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: path).sorted()
    }
}
