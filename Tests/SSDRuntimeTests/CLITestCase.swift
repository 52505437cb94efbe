import Foundation
import SSDCompiler
import XCTest

/// A test of the built `ssdc` executable: each test gets a fresh temporary folder (`tmp`),
/// removed afterwards, and runs ssdc with `ssdc(...)`.
class CLITestCase: XCTestCase {
    /// The ssdc executable built beside this test bundle.
    static var ssdc: String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("ssdc").path
    }

    var tmp: String!

    override func setUpWithError() throws {
        guard FileManager.default.isExecutableFile(atPath: Self.ssdc) else {
            throw XCTSkip("ssdc is not built at \(Self.ssdc); run `swift build` before `swift test`")
        }
        let folder = "ssdc-\(String(describing: type(of: self)))-\(getpid())-\(name.filter { $0.isLetter })"
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent(folder).path
        try? FileManager.default.removeItem(atPath: tmp)
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        if let tmp { try? FileManager.default.removeItem(atPath: tmp) }
    }

    /// Runs ssdc with `args` in `dir`, with this process's environment plus `extra`.
    func ssdc(_ args: [String], in dir: String? = nil, environment extra: [String: String] = [:]) throws -> ProcessResult {
        var env = ProcessInfo.processInfo.environment
        env.merge(extra) { $1 }
        return try Shell.run(Self.ssdc, args, environment: env, currentDirectory: dir)
    }
}
