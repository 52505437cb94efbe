#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SSDABI

/// The processes of a data-parallel training run started by mpirun: K ranks, each running
/// the compiled train step on its part of every global batch, with the gradients summed
/// across ranks before SGD (in the emitted C, `ssd_allreduce_gradients`), so every rank
/// holds the same parameters after every step.
///
/// MPI is reached only through the shim library (Runtime/mpi/ssd_mpi.c, built with mpicc
/// by the compiler's Toolchain.mpiShim), loaded here with dlopen; a process not started by
/// mpirun never creates one.
public final class DataParallel {
    public let rank: Int
    public let size: Int
    /// Whether BatchNorm uses the global batch's statistics and backward sums (--sync-bn).
    public let syncBatchNorm: Bool
    private let handle: UnsafeMutableRawPointer

    /// The run this process belongs to, once joined (errors end the whole job through it).
    nonisolated(unsafe) public private(set) static var current: DataParallel?

    /// Whether this process was started by an MPI launcher (Open MPI's mpirun, or one that
    /// sets the PMI variables).
    public static var launchedByMPI: Bool {
        let env = ProcessInfo.processInfo.environment
        return ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"].contains { env[$0] != nil }
    }

    /// Joins the MPI job when started by mpirun; nil (one process, as without MPI) otherwise.
    /// `shim` gives the path of the MPI shim library; it is called (and may build the shim)
    /// only when this process joins a job.
    public static func joinIfLaunched(syncBatchNorm: Bool = false, shim: () throws -> String) throws -> DataParallel? {
        guard launchedByMPI else { return nil }
        if let current { return current }
        let run = try DataParallel(shim: try shim(), syncBatchNorm: syncBatchNorm)
        current = run
        return run
    }

    private init(shim: String, syncBatchNorm: Bool) throws {
        // RTLD_GLOBAL: Open MPI's own plugins resolve libmpi's symbols through the global scope.
        guard let h = dlopen(shim, RTLD_NOW | RTLD_GLOBAL) else {
            throw RuntimeError("cannot load the MPI shim \(shim): \(String(cString: dlerror()))")
        }
        handle = h
        typealias Init = @convention(c) (UnsafeMutablePointer<Int32>, UnsafeMutablePointer<Int32>) -> Int32
        var r: Int32 = 0, k: Int32 = 1
        let status = try Self.symbol(h, shim, "ssd_mpi_init", as: Init.self)(&r, &k)
        guard status == 0 else { throw RuntimeError("MPI_Init_thread failed with code \(status)") }
        rank = Int(r)
        size = Int(k)
        self.syncBatchNorm = syncBatchNorm
    }

    private static func symbol<T>(_ h: UnsafeMutableRawPointer, _ path: String, _ name: String, as: T.Type) throws -> T {
        guard let s = dlsym(h, name) else { throw RuntimeError("\(path): missing symbol \(name)") }
        return unsafeBitCast(s, to: T.self)
    }

    private func shim<T>(_ name: String, as type: T.Type) -> T {
        // The shim is built from Runtime/mpi/ssd_mpi.c with these symbols, so they exist.
        unsafeBitCast(dlsym(handle, name)!, to: T.self)
    }

    public var isRoot: Bool { rank == 0 }

    /// This rank's part of a global batch: the batch cut into `size` contiguous runs in rank
    /// order, whose lengths differ by at most one. Every rank computes the same cut.
    public func part(of batch: [Int]) -> ArraySlice<Int> {
        let n = batch.count
        return batch[(n * rank / size)..<(n * (rank + 1) / size)]
    }

    /// Points the model library's reduction hooks (collective.c) at the shim's.
    public func attach(_ library: ModelLibrary) throws {
        typealias Set = @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?, Int32) -> Void
        let set = try library.symbol("ssd_set_collectives", as: Set.self)
        set(dlsym(handle, "ssd_mpi_sum_floats"), dlsym(handle, "ssd_mpi_sum_doubles"), syncBatchNorm ? 1 : 0)
    }

    /// Tells the library this rank's examples in the next step and the global batch's.
    public func setShare(_ library: ModelLibrary, local: Int, global: Int) throws {
        typealias Share = @convention(c) (Int64, Int64) -> Void
        try library.symbol("ssd_set_batch_share", as: Share.self)(Int64(local), Int64(global))
    }

    /// Each element summed over the ranks, in rank order (the same result on every rank).
    public func sum(_ values: [Double]) -> [Double] {
        typealias Sum = @convention(c) (UnsafeMutablePointer<Double>, Int64) -> Void
        var v = values
        v.withUnsafeMutableBufferPointer { shim("ssd_mpi_sum_doubles", as: Sum.self)($0.baseAddress!, Int64($0.count)) }
        return v
    }

    /// Per-item lists that each rank filled for its own items (the others empty), as every
    /// rank's union: the lengths are summed first, then each rank writes its items at their
    /// offsets into a zero array and the arrays are summed (x + 0 is x, so exact).
    public func gather(_ items: [[Float]]) -> [[Float]] {
        let lengths = sum(items.map { Double($0.count) }).map { Int($0) }
        var offsets = [0]
        for l in lengths { offsets.append(offsets.last! + l) }
        var flat = [Double](repeating: 0, count: offsets.last!)
        for (i, item) in items.enumerated() where !item.isEmpty {
            for (k, v) in item.enumerated() { flat[offsets[i] + k] = Double(v) }
        }
        let all = flat.isEmpty ? [] : sum(flat)
        return lengths.indices.map { i in all[offsets[i]..<offsets[i + 1]].map { Float($0) } }
    }

    /// Rank 0's value, on every rank.
    public func fromRoot(_ value: Int) -> Int { Int(sum([isRoot ? Double(value) : 0])[0]) }

    /// Every parameter and BN statistic as rank 0 holds them, on every rank.
    public func broadcastParameters(_ session: ModelSession) {
        typealias Bcast = @convention(c) (UnsafeMutablePointer<Float>, Int64) -> Void
        shim("ssd_mpi_broadcast_floats", as: Bcast.self)(session.params.floats, Int64(session.manifest.paramsFloats))
    }

    /// The metrics of one step summed over the ranks.
    public func sum(_ m: MetricAccumulator) -> MetricAccumulator {
        let s = sum([m.correct, m.anchors, m.absError, m.entries, m.lossSum, Double(m.examples)])
        var out = MetricAccumulator()
        (out.correct, out.anchors, out.absError, out.entries, out.lossSum, out.examples) = (s[0], s[1], s[2], s[3], s[4], Int(s[5]))
        return out
    }

    /// Without sync-bn each rank updates the BN running statistics from its own batch; their
    /// mean over the ranks keeps every rank's state (and so its checkpoint) the same.
    public func averageRunningStatistics(_ session: ModelSession) {
        guard !syncBatchNorm else { return }  // then the statistics are the global batch's already
        let buffers = session.manifest.parameters.filter { !$0.trainable && $0.dtype != "I64" }
        var values: [Double] = []
        for p in buffers { values += UnsafeBufferPointer(start: session.params.floats + p.offset, count: p.count).map(Double.init) }
        let sums = sum(values)
        var i = 0
        for p in buffers {
            for j in 0..<p.count { session.params.floats[p.offset + j] = Float(sums[i + j] / Double(size)) }
            i += p.count
        }
    }

    /// Throws unless every rank holds the same parameters and BN state. Each rank cuts a
    /// 64-bit hash of its state into four 16-bit pieces x; a piece is the same on all K ranks
    /// exactly when (sum x)^2 = K * sum x^2 (Cauchy-Schwarz), exact in doubles up to 1024
    /// ranks. Every rank reaches the same verdict from the same sums: all throw, or none.
    public func requireSameParameters(_ session: ModelSession, epoch: Int) throws {
        var hash = ContentHash()
        hash.add(Data(bytes: session.params.floats, count: session.manifest.paramsFloats * 4))
        let h = UInt64(hash.hex.prefix(16), radix: 16)!
        let pieces = (0..<4).map { Double((h >> (16 * UInt64($0))) & 0xFFFF) }
        let sums = sum(pieces + pieces.map { $0 * $0 })
        guard (0..<4).allSatisfy({ sums[$0] * sums[$0] == Double(size) * sums[4 + $0] }) else {
            throw RuntimeError("after epoch \(epoch) the \(size) ranks hold different parameters (do they run the same ssdc, model and data?)")
        }
    }

    /// The median seconds of one sum of `count` floats across the ranks, alone (no step
    /// around it whose imbalance the sum would wait for); a first sum lines the ranks up.
    public func timeSum(floats count: Int, repeats: Int = 7) -> Double {
        typealias Sum = @convention(c) (UnsafeMutablePointer<Float>, Int64, Float) -> Void
        let f = shim("ssd_mpi_sum_floats", as: Sum.self)
        var data = [Float](repeating: 1, count: count)
        var times: [Double] = []
        data.withUnsafeMutableBufferPointer { b in
            f(b.baseAddress!, Int64(count), 1)
            for _ in 0..<repeats {
                let t = Date()
                f(b.baseAddress!, Int64(count), 1)
                times.append(Date().timeIntervalSince(t))
            }
        }
        return times.sorted()[repeats / 2]
    }

    /// Seconds this rank has spent summing gradients.
    public var reduceSeconds: Double {
        typealias Seconds = @convention(c) () -> Double
        return shim("ssd_mpi_reduce_seconds", as: Seconds.self)()
    }

    /// Ends every rank of the job (after an error on this one): no rank is left waiting.
    public func abort(_ code: Int32) -> Never {
        typealias Abort = @convention(c) (Int32) -> Void
        fflush(nil)
        shim("ssd_mpi_abort", as: Abort.self)(code)
        exit(code)
    }

    /// Leaves the job (all ranks call it at the end of a run).
    public func finish() {
        typealias Finalize = @convention(c) () -> Void
        fflush(nil)
        shim("ssd_mpi_finalize", as: Finalize.self)()
        Self.current = nil
    }
}

extension MetricAccumulator {
    /// Adds another accumulator's sums (a step's, to an epoch's).
    public mutating func add(_ other: MetricAccumulator) {
        correct += other.correct; anchors += other.anchors; absError += other.absError
        entries += other.entries; lossSum += other.lossSum; examples += other.examples
    }
}
