import Foundation

/// The contract between the compiler, which writes a model library, and the runtime, which
/// loads it: the ABI version, the C symbols the library exports, and the manifest that
/// describes its memory and programs. Both sides name symbols and read and write the
/// manifest only through this module, so they cannot drift apart.
public enum ABI {
    /// Raised whenever the C calling convention or the manifest's meaning changes; the
    /// runtime refuses a library built for another version.
    public static let version = 2

    /// The entry point of `program`: (N, P, F, B, S), or (N, G, Y, P, F, B, S) when the
    /// program takes label rows.
    public static func entry(_ program: String) -> String { "ssdc_\(program)" }

    /// The scratch query of `program`: floats of scratch for N (and G) examples.
    public static func scratchEntry(_ program: String) -> String { "ssdc_\(program)_scratch_floats" }

    /// `const char *ssdc_manifest(void)`: the manifest's JSON, embedded in the library.
    public static let manifestSymbol = "ssdc_manifest"
    /// `int ssdc_abi_version(void)`.
    public static let versionSymbol = "ssdc_abi_version"
    /// `void ssdc_set_threads(int)`: the OpenMP thread count.
    public static let setThreadsSymbol = "ssdc_set_threads"
    /// `void ssdc_params_changed(void)`: parameters were written from outside a program.
    public static let parametersChangedSymbol = "ssdc_params_changed"
    /// `void ssdc_set_profiling(int)`: per-kernel timing on or off.
    public static let setProfilingSymbol = "ssdc_set_profiling"
    /// `double *ssdc_profile(const char *program)`: seconds per kernel of a program.
    public static let profileSymbol = "ssdc_profile"
}

/// What a model library holds, as JSON (manifest.json beside the library, and embedded in
/// it under `ABI.manifestSymbol`): snake_case keys, sorted and pretty-printed, so the
/// emitted C that embeds it is the same on every run.
public struct Manifest: Codable, Sendable {
    public struct Parameter: Codable, Sendable {
        public var name: String
        public var shape: [Int]
        public var dtype: String
        public var trainable: Bool
        public var offset: Int
        public var count: Int

        public init(name: String, shape: [Int], dtype: String, trainable: Bool, offset: Int, count: Int) {
            (self.name, self.shape, self.dtype, self.trainable, self.offset, self.count) = (name, shape, dtype, trainable, offset, count)
        }
    }
    public struct Value: Codable, Sendable {
        public var name: String
        public var region: String
        /// Bytes (per example for the batched region); for constants, the C symbol.
        public var offset: Int
        public var symbol: String?
        /// Full shape, -1 for the batch axis.
        public var shape: [Int]
        public var dtype: String

        public init(name: String, region: String, offset: Int, symbol: String?, shape: [Int], dtype: String) {
            (self.name, self.region, self.offset, self.symbol, self.shape, self.dtype) = (name, region, offset, symbol, shape, dtype)
        }
    }
    public struct KernelInfo: Codable, Sendable {
        public var name: String
        public var kind: String
        public var nodes: [Int]

        public init(name: String, kind: String, nodes: [Int]) {
            (self.name, self.kind, self.nodes) = (name, kind, nodes)
        }
    }
    public struct ProgramInfo: Codable, Sendable {
        public var name: String
        public var mode: String
        public var entry: String
        public var scratchEntry: String
        public var fixedBytes: Int
        public var batchedBytesPerExample: Int
        /// The entry point takes the label rows: (N, G, Y, P, F, B, S) instead of
        /// (N, P, F, B, S), and its scratch query (N, G).
        public var takesLabels: Bool
        public var inputs: [Value]
        public var outputs: [Value]
        public var kernels: [KernelInfo]

        /// A program whose entry points are named by `ABI.entry` and `ABI.scratchEntry`.
        public init(name: String, mode: String, fixedBytes: Int, batchedBytesPerExample: Int, takesLabels: Bool,
                    inputs: [Value], outputs: [Value], kernels: [KernelInfo]) {
            (self.name, self.mode, entry, scratchEntry) = (name, mode, ABI.entry(name), ABI.scratchEntry(name))
            (self.fixedBytes, self.batchedBytesPerExample, self.takesLabels) = (fixedBytes, batchedBytesPerExample, takesLabels)
            (self.inputs, self.outputs, self.kernels) = (inputs, outputs, kernels)
        }
    }
    public struct Compiler: Codable, Sendable {
        public var ssdc: String
        public var cc: String
        public var ccVersion: String
        public var flags: [String]

        public init(ssdc: String, cc: String, ccVersion: String, flags: [String]) {
            (self.ssdc, self.cc, self.ccVersion, self.flags) = (ssdc, cc, ccVersion, flags)
        }
    }
    public var abiVersion: Int
    public var model: String
    public var attributes: [String: String]
    public var paramsFloats: Int
    /// The params region: parameters, gradients from gradientsOffset, hyper-parameters
    /// (learning rate, weight decay) from hyperOffset; regionFloats in all.
    public var gradientsOffset: Int
    public var hyperOffset: Int
    public var regionFloats: Int
    public var loss: String?
    public var parameters: [Parameter]
    public var programs: [ProgramInfo]
    /// Absent from the copy embedded in the library, so the emitted C does not depend
    /// on the machine it was generated on.
    public var compiler: Compiler?

    /// A manifest of this ABI version.
    public init(model: String, attributes: [String: String], paramsFloats: Int, gradientsOffset: Int, hyperOffset: Int,
                regionFloats: Int, loss: String?, parameters: [Parameter], programs: [ProgramInfo], compiler: Compiler?) {
        abiVersion = ABI.version
        (self.model, self.attributes, self.paramsFloats) = (model, attributes, paramsFloats)
        (self.gradientsOffset, self.hyperOffset, self.regionFloats) = (gradientsOffset, hyperOffset, regionFloats)
        (self.loss, self.parameters, self.programs, self.compiler) = (loss, parameters, programs, compiler)
    }

    /// The JSON form. Encoding cannot fail: the manifest holds only strings, integers and
    /// booleans (no floats that could be non-finite).
    public func json() -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted]
        e.keyEncodingStrategy = .convertToSnakeCase
        return String(decoding: try! e.encode(self), as: UTF8.self)
    }

    /// Reads the JSON form written by `json()`, from `source` (a library or file, named in
    /// errors). The ABI version is checked before the rest, so a library built for another
    /// version is refused as such even when its manifest has other fields.
    public static func decode(_ data: Data, from source: String) throws -> Manifest {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        struct Version: Decodable { var abiVersion: Int }
        do {
            let version = try decoder.decode(Version.self, from: data).abiVersion
            guard version == ABI.version else {
                throw ManifestError("\(source) has ABI version \(version); this ssdc expects \(ABI.version). Recompile the model.")
            }
            return try decoder.decode(Manifest.self, from: data)
        } catch let error as ManifestError {
            throw error
        } catch {
            throw ManifestError("\(source): its manifest is not one this ssdc reads (\(AtomicFile.describe(error))). Recompile the model with `ssdc compile`.")
        }
    }
}

/// A manifest that cannot be used: the library or file and the problem in words.
public struct ManifestError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
