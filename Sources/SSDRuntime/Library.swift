#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import SSDABI
import SSDGraph
import SSDIO

public struct RuntimeError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

/// Memory the Swift side owns and hands to the library: 64-byte aligned, zeroed.
final class Region {
    private(set) var base: UnsafeMutableRawPointer
    private(set) var bytes: Int

    init(bytes: Int) {
        self.bytes = max(bytes, 64)
        base = UnsafeMutableRawPointer.allocate(byteCount: self.bytes, alignment: 64)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: self.bytes)
    }

    /// Grows (never shrinks) to at least `bytes`; contents are not kept.
    func reserve(_ bytes: Int) {
        guard bytes > self.bytes else { return }
        base.deallocate()
        self.bytes = bytes
        base = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
    }

    var floats: UnsafeMutablePointer<Float> { base.assumingMemoryBound(to: Float.self) }

    deinit { base.deallocate() }
}

/// A compiled model library loaded with dlopen, with its manifest.
public final class ModelLibrary: @unchecked Sendable {
    typealias Entry = @convention(c) (Int64, UnsafeMutablePointer<Float>?, UnsafeMutablePointer<CChar>?,
                                      UnsafeMutablePointer<CChar>?, UnsafeMutablePointer<Float>?) -> Int32
    typealias ScratchQuery = @convention(c) (Int64) -> Int
    /// A train or eval step: (N, G, Y, P, F, B, S), G label rows per image.
    typealias LabelledEntry = @convention(c) (Int64, Int64, UnsafePointer<Float>?, UnsafeMutablePointer<Float>?,
                                              UnsafeMutablePointer<CChar>?, UnsafeMutablePointer<CChar>?,
                                              UnsafeMutablePointer<Float>?) -> Int32
    typealias LabelledScratchQuery = @convention(c) (Int64, Int64) -> Int
    typealias SetThreads = @convention(c) (Int32) -> Void
    typealias ManifestFn = @convention(c) () -> UnsafePointer<CChar>?

    public let path: String
    public let manifest: Manifest
    private let handle: UnsafeMutableRawPointer

    /// Loads the library at `path`, checked first to be a complete shared library: dlopen
    /// maps a truncated one and the process would die with SIGBUS on first use.
    public init(path: String) throws {
        try Self.checkFile(path)
        guard let h = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            throw RuntimeError("cannot load \(path): \(String(cString: dlerror()))")
        }
        handle = h
        self.path = path
        guard let sym = dlsym(h, ABI.manifestSymbol) else {
            throw RuntimeError("\(path) is not an ssdc model library (no \(ABI.manifestSymbol))")
        }
        let fn = unsafeBitCast(sym, to: ManifestFn.self)
        guard let text = fn() else { throw RuntimeError("\(path): empty manifest") }
        manifest = try Manifest.decode(Data(String(cString: text).utf8), from: path)
    }

    /// Throws, naming the file and what to do, unless `path` is a complete shared library.
    static func checkFile(_ path: String) throws {
        guard let problem = ELFFile.problem(path, kind: .sharedLibrary) else { return }
        throw RuntimeError("cannot load \(path): \(problem). Recompile the model with `ssdc compile`; if it came from the cache, remove \(CacheDirectory.path) and run again.")
    }

    func symbol<T>(_ name: String, as: T.Type) throws -> T {
        guard let s = dlsym(handle, name) else { throw RuntimeError("\(path): missing symbol \(name)") }
        return unsafeBitCast(s, to: T.self)
    }

    typealias SetProfiling = @convention(c) (Int32) -> Void
    typealias Profile = @convention(c) (UnsafePointer<CChar>?) -> UnsafeMutablePointer<Double>?

    /// Turns per-kernel timing on or off (off by default: it costs two clock reads per kernel).
    public func setProfiling(_ on: Bool) {
        if let f = try? symbol(ABI.setProfilingSymbol, as: SetProfiling.self) { f(on ? 1 : 0) }
    }

    /// Seconds spent in each kernel of `program` since profiling was turned on, in order.
    public func profile(_ program: String) -> [Double] {
        guard let f = try? symbol(ABI.profileSymbol, as: Profile.self), let info = try? self.program(program),
              let times = program.withCString({ f($0) }) else { return [] }
        return Array(UnsafeBufferPointer(start: times, count: info.kernels.count))
    }

    /// The runtime's micro-kernel instruction set ("avx512", "avx2" or "portable").
    public var isa: String {
        typealias ISA = @convention(c) () -> UnsafePointer<CChar>?
        guard let f = try? symbol("ssd_runtime_isa", as: ISA.self), let s = f() else { return "unknown" }
        return String(cString: s)
    }

    /// Tells the library that parameters were written from outside its programs, so that
    /// what it derived from them (BN folded into the convs) is recomputed on the next run.
    func parametersChanged() {
        typealias Changed = @convention(c) () -> Void
        if let f = try? symbol(ABI.parametersChangedSymbol, as: Changed.self) { f() }
    }

    public func setThreads(_ n: Int) {
        if let f = try? symbol(ABI.setThreadsSymbol, as: SetThreads.self) { f(Int32(n)) }
    }

    public func program(_ name: String) throws -> Manifest.ProgramInfo {
        guard let p = manifest.programs.first(where: { $0.name == name }) else {
            throw RuntimeError("\(path) has no program \(name)")
        }
        return p
    }

    /// A constant the library exports (e.g. the anchors).
    public func constant(_ v: Manifest.Value) throws -> [Float] {
        guard let sym = v.symbol, let s = dlsym(handle, sym) else { throw RuntimeError("\(path): missing constant \(v.name)") }
        let count = v.shape.reduce(1, *)
        return Array(UnsafeBufferPointer(start: s.assumingMemoryBound(to: Float.self), count: count))
    }
}

/// A loaded model with its memory: parameters (and BN state) plus per-program workspaces.
/// Runs programs on batches and returns their outputs as host tensors.
public final class ModelSession {
    public let library: ModelLibrary
    let params: Region
    private var workspaces: [String: (fixed: Region, batched: Region, scratch: Region)] = [:]

    public init(library: ModelLibrary) {
        self.library = library
        params = Region(bytes: library.manifest.regionFloats * 4)
        library.parametersChanged() /* (a new region may reuse the address of a freed one) */
    }

    public var manifest: Manifest { library.manifest }

    // MARK: parameters

    /// Sets every parameter from PyTorch-named tensors. Missing, unexpected and misshapen
    /// tensors are all reported in one error, like load_state_dict(strict=True), and so are
    /// values no trained model holds (NaN, infinities, a negative running variance): loading
    /// them would only make every later number silently NaN.
    public func loadStateDict(_ tensors: [String: HostTensor], source: String) throws {
        var problems: [String] = []
        var values: [String: [Float]] = [:]
        let names = Set(manifest.parameters.map(\.name))
        for p in manifest.parameters {
            guard let t = tensors[p.name] else { problems.append("missing tensor \(p.name) \(p.shape)"); continue }
            guard Self.shape(t.shape, fits: p.shape) else {
                problems.append("tensor \(p.name) has shape \(t.shape), the model needs \(p.shape)")
                continue
            }
            let v = t.floats
            if let bad = Self.badValues(v, name: p.name) { problems.append("tensor \(p.name) \(bad)") }
            values[p.name] = v
        }
        for name in tensors.keys.sorted() where !names.contains(name) {
            problems.append("unexpected tensor \(name) \(tensors[name]!.shape)")
        }
        guard problems.isEmpty else {
            throw RuntimeError("\(source) does not fit model \(manifest.model):\n  " + problems.joined(separator: "\n  "))
        }
        for p in manifest.parameters {
            values[p.name]!.withUnsafeBufferPointer { src in
                (params.floats + p.offset).update(from: src.baseAddress!, count: p.count)
            }
        }
        library.parametersChanged()
    }

    /// Whether a checkpoint tensor of shape `given` can fill a parameter of shape `needed`.
    /// As PyTorch's load_state_dict, a scalar also takes a one-element vector: old
    /// checkpoints store num_batches_tracked as shape [1].
    static func shape(_ given: [Int], fits needed: [Int]) -> Bool {
        given == needed || (needed.isEmpty && given == [1])
    }

    /// What is wrong with a parameter's values, as they would be loaded (after conversion
    /// to float32, so float64 values beyond its range count as infinite), or nil.
    static func badValues(_ values: [Float], name: String) -> String? {
        var nonFinite = 0, firstNonFinite: Int?
        for (i, v) in values.enumerated() where !v.isFinite {
            nonFinite += 1
            if firstNonFinite == nil { firstNonFinite = i }
        }
        if let first = firstNonFinite {
            return "has \(nonFinite) non-finite value\(nonFinite == 1 ? "" : "s") (the first, \(values[first]), at index \(first))"
        }
        guard name.hasSuffix("running_var"), let first = values.firstIndex(where: { $0 < 0 }) else { return nil }
        let negative = values.lazy.filter { $0 < 0 }.count
        return "has \(negative) negative variance\(negative == 1 ? "" : "s") (the first, \(values[first]), at index \(first))"
    }

    /// Calls `body` with the parameters and BN state as the library holds them: the first
    /// gradientsOffset floats of the params region, in model.h's order and offsets.
    public func withParameters<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        try body(UnsafeBufferPointer(start: params.floats, count: manifest.gradientsOffset))
    }

    /// The state dict with PyTorch's names and dtypes (num_batches_tracked as int64).
    public func stateDict() -> [String: HostTensor] {
        var out: [String: HostTensor] = [:]
        for p in manifest.parameters {
            let values = Array(UnsafeBufferPointer(start: params.floats + p.offset, count: p.count))
            out[p.name] = p.dtype == "I64"
                ? HostTensor(int64s: values.map { Int64($0) }, shape: p.shape)
                : HostTensor(floats: values, shape: p.shape)
        }
        return out
    }

    /// Initialises parameters as PyTorch's defaults (or their declared initialiser) from a seed.
    public func initializeParameters(seed: UInt64, graph: Graph) {
        var rng = SplitMix64(seed: seed)
        let inits = Dictionary(uniqueKeysWithValues: graph.parameters.map { ($0.info.name, $0.info.initializer) })
        for p in manifest.parameters {
            let values: [Float]
            switch inits[p.name] ?? .constant(0) {
            case .constant(let c): values = Array(repeating: c, count: p.count)
            case .uniformFanIn(let fanIn):
                let b = 1 / Float(fanIn).squareRoot()
                values = (0..<p.count).map { _ in rng.uniform(b) }
            case .xavier(let fanIn, let fanOut):
                let b = (6 / Float(fanIn + fanOut)).squareRoot()
                values = (0..<p.count).map { _ in rng.uniform(b) }
            }
            values.withUnsafeBufferPointer { (params.floats + p.offset).update(from: $0.baseAddress!, count: p.count) }
        }
        library.parametersChanged()
    }

    /// Gradients of the trainable parameters left by the last train step, by parameter name.
    public func gradients() -> [String: HostTensor] {
        var out: [String: HostTensor] = [:]
        for p in manifest.parameters where p.trainable {
            let start = params.floats + manifest.gradientsOffset + p.offset
            out[p.name] = HostTensor(floats: Array(UnsafeBufferPointer(start: start, count: p.count)), shape: p.shape)
        }
        return out
    }

    /// Learning rate and weight decay the next train step uses.
    public func setHyperParameters(learningRate: Float, weightDecay: Float) {
        params.floats[manifest.hyperOffset] = learningRate
        params.floats[manifest.hyperOffset + 1] = weightDecay
    }

    // MARK: running

    /// Runs `program` on a batch. `inputs` are the program's inputs by name, each a
    /// batched tensor of the same N; a step's labels Y are (N, G, 5) for any G >= 1.
    /// Returns every output of the program.
    public func run(_ programName: String, inputs: [String: HostTensor], outputs wanted: Set<String>? = nil) throws -> [String: HostTensor] {
        let p = try library.program(programName)
        var n: Int? = nil
        var rows = 0
        for v in p.inputs {
            guard let t = inputs[v.name] else { throw RuntimeError("program \(p.name) needs input \(v.name) \(v.shape)") }
            var dims = Array(v.shape.dropFirst())
            if v.region == "labels", t.shape.count == 3 {
                rows = t.shape[1]
                dims[0] = rows
                guard rows >= 1 else { throw RuntimeError("input \(v.name) has shape \(t.shape): at least one row per image is needed") }
            }
            guard t.shape.count == v.shape.count, Array(t.shape.dropFirst()) == dims else {
                throw RuntimeError("input \(v.name) has shape \(t.shape), the model needs (N,\(dims.map(String.init).joined(separator: ",")))")
            }
            if let n, n != t.shape[0] { throw RuntimeError("inputs disagree on the batch size: \(n) and \(t.shape[0])") }
            n = t.shape[0]
        }
        guard let batch = n, batch >= 1 else { throw RuntimeError("empty batch") }

        let ws = try workspace(p, batch: batch, rows: rows)
        for v in p.inputs where v.region != "labels" {
            let t = inputs[v.name]!, dst = ws.batched.base + v.offset * batch
            guard t.bytes.count == t.shape.reduce(1, *) * t.dtype.byteSize else {
                throw RuntimeError("input \(v.name): \(t.bytes.count) bytes do not match its shape \(t.shape)")
            }
            if t.dtype == .f32 {
                t.bytes.withUnsafeBytes { dst.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }  // no intermediate array
            } else {
                let values = t.floats
                values.withUnsafeBufferPointer { dst.assumingMemoryBound(to: Float.self).update(from: $0.baseAddress!, count: values.count) }
            }
        }
        let fixed = ws.fixed.base.assumingMemoryBound(to: CChar.self), batched = ws.batched.base.assumingMemoryBound(to: CChar.self)
        let status: Int32
        if p.takesLabels {
            let entry = try library.symbol(p.entry, as: ModelLibrary.LabelledEntry.self)
            let y = inputs[p.inputs.first { $0.region == "labels" }!.name]!.floats
            status = y.withUnsafeBufferPointer { entry(Int64(batch), Int64(rows), $0.baseAddress, params.floats, fixed, batched, ws.scratch.floats) }
        } else {
            let entry = try library.symbol(p.entry, as: ModelLibrary.Entry.self)
            status = entry(Int64(batch), params.floats, fixed, batched, ws.scratch.floats)
        }
        guard status == 0 else { throw RuntimeError("\(p.entry) failed with code \(status)") }

        var out: [String: HostTensor] = [:]
        for v in p.outputs where wanted?.contains(v.name) ?? true {
            if v.region == "constant" {
                out[v.name] = HostTensor(floats: try library.constant(v), shape: v.shape)
                continue
            }
            let shape = v.shape.map { $0 == -1 ? batch : $0 }
            let count = shape.reduce(1, *)
            let base = v.region == "batched" ? ws.batched.base + v.offset * batch : ws.fixed.base + v.offset
            out[v.name] = v.dtype == "f64"
                ? HostTensor(doubles: Array(UnsafeBufferPointer(start: base.assumingMemoryBound(to: Double.self), count: count)), shape: shape)
                : HostTensor(floats: UnsafeBufferPointer(start: base.assumingMemoryBound(to: Float.self), count: count), shape: shape)
        }
        return out
    }

    private func workspace(_ p: Manifest.ProgramInfo, batch: Int, rows: Int) throws -> (fixed: Region, batched: Region, scratch: Region) {
        let scratchBytes = p.takesLabels
            ? try library.symbol(p.scratchEntry, as: ModelLibrary.LabelledScratchQuery.self)(Int64(batch), Int64(rows)) * 4
            : try library.symbol(p.scratchEntry, as: ModelLibrary.ScratchQuery.self)(Int64(batch)) * 4
        if let ws = workspaces[p.name] {
            ws.batched.reserve(p.batchedBytesPerExample * batch)
            ws.scratch.reserve(scratchBytes)
            return ws
        }
        let ws = (Region(bytes: p.fixedBytes), Region(bytes: p.batchedBytesPerExample * batch), Region(bytes: scratchBytes))
        workspaces[p.name] = ws
        return ws
    }
}

/// SplitMix64: a small, fast, seedable generator; the same seed gives the same weights.
public struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E3779B97F4A7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        return z ^ (z >> 31)
    }
    /// Uniform in [-b, b).
    public mutating func uniform(_ b: Float) -> Float {
        Float(Double(next() >> 11) / Double(1 << 53) * 2 - 1) * b
    }
}
