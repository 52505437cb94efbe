#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Foundation
import SSDABI
import SSDCompiler
import SSDDriver
import SSDGraph
import SSDIO
import SSDModels
import SSDRuntime

/// `ssdc bench`: what the compiler buys, measured on this machine.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure training examples/s, inference latency and throughput, compile time and peak memory.")

    @Option(help: "A model .swift file (default: the built-in TinySSD).") var model: String?
    @Option(help: "Input size HxW (default: the model's own, else 256x256).") var inputSize: String?
    @Option(help: "OpenMP threads.") var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Option(help: "Training batch size.") var batchSize: Int = 32
    @Option(help: "Timed training steps (after one warm-up step).") var steps: Int = 4
    @Option(help: "Inference batch-1 repetitions (median reported).") var repeats: Int = 20
    @Flag(help: "Time every kernel and report GFLOP/s of the convolutions.") var profile = false
    @Flag(help: "Print one JSON object instead of the table.") var json = false
    /// The training loss, as `run --train` takes it (default: the model's own), so the
    /// train figure is that of the step a run takes.
    @OptionGroup var lossOptions: LossOptions

    func validate() throws {
        _ = try ModelOptions.threadCount(option: threads, environment: nil)
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1, got \(batchSize)") }
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1, got \(steps)") }
        guard repeats >= 1 else { throw ValidationError("--repeats must be at least 1, got \(repeats)") }
    }

    func run() throws {
        // Compile time: cold in an empty cache, then cached.
        let cache = FileManager.default.temporaryDirectory.appendingPathComponent("ssdc-bench-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: cache) }
        setenv("SSDC_CACHE_DIR", cache, 1)
        let size = try parseInputSize(inputSize)
        func buildGraph() throws -> Graph {
            if let model { return try ModelSource.graph(fromFile: model, size: size) }
            let (h, w) = size ?? ModelRegistry.defaultInputSize
            return try BuiltinModels.tinySSD.graph(height: h, width: w)
        }
        var t = Date()
        let graph = try buildGraph()
        let training = Lowering.TrainStepOptions(loss: lossOptions.isSet ? lossOptions.config : try LossConfig(graph: graph))
        _ = try Driver.compile(graph, into: cache + "/model", training: training)
        let cold = Date().timeIntervalSince(t)
        t = Date()
        let result = try Driver.compile(try buildGraph(), into: cache + "/model", training: training)
        let cached = Date().timeIntervalSince(t)
        let input = graph.inputs.first?.node.type.dims ?? []
        guard input.count == 3 else { throw ValidationError("\(graph.name) has no (C,H,W) input") }
        let (c, h, w) = (input[0], input[1], input[2])

        let lib = try ModelLibrary(path: result.libraryPath)
        lib.setThreads(threads)
        // Under mpirun each rank steps on its part of the batch, as `ssdc run --train` does.
        let parallel = try DataParallel.joinIfLaunched(shim: Toolchain.mpiShim)
        try parallel?.attach(lib)
        let ranks = parallel?.size ?? 1, rank = parallel?.rank ?? 0
        let local = batchSize * (rank + 1) / ranks - batchSize * rank / ranks
        guard local >= 1 else { throw ValidationError("--batch-size \(batchSize) is smaller than the \(ranks) ranks") }
        try parallel?.setShare(lib, local: local, global: batchSize)
        let session = ModelSession(library: lib)
        session.initializeParameters(seed: 0, graph: graph)
        session.setHyperParameters(learningRate: 0.01, weightDecay: 5e-4)
        var rng = SplitMix64(seed: 1)

        func images(_ n: Int) -> HostTensor {
            HostTensor(floats: (0..<(n * c * h * w)).map { _ in 127.5 + rng.uniform(127.5) }, shape: [n, c, h, w])
        }
        func labels(_ n: Int) -> HostTensor {
            var y: [Float] = []
            for _ in 0..<n {
                let x0 = 0.1 + abs(rng.uniform(0.5)), y0 = 0.1 + abs(rng.uniform(0.5))
                y += [0, x0, y0, x0 + 0.2, y0 + 0.15]
            }
            return HostTensor(floats: y, shape: [n, 1, 5])
        }

        // Training.
        let x = images(local), y = labels(local)
        let wanted: Set<String> = ["metrics"]
        _ = try session.run("train_step", inputs: ["X": x, "Y": y], outputs: wanted)
        lib.setProfiling(profile)
        let reduceBefore = parallel?.reduceSeconds ?? 0
        t = Date()
        for _ in 0..<steps { _ = try session.run("train_step", inputs: ["X": x, "Y": y], outputs: wanted) }
        let trainSeconds = Date().timeIntervalSince(t)
        let allreducePerStep = ((parallel?.reduceSeconds ?? 0) - reduceBefore) / Double(steps)
        let allreduceAlone = parallel?.timeSum(floats: lib.manifest.paramsFloats)
        let trainRate = Double(steps * batchSize) / trainSeconds
        let trainProfile = profile ? lib.profile("train_step") : []
        lib.setProfiling(false)
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let peakTrain = Int(usage.ru_maxrss) * 1024

        // Inference: batch 1 latency (forward + softmax + detection), batch 32 throughput.
        let one = images(1)
        _ = try session.run("infer", inputs: ["X": one], outputs: ["detection"])
        let before1 = profile ? lib.profile("infer") : []
        lib.setProfiling(profile)
        var times: [Double] = []
        for _ in 0..<repeats {
            let s = Date()
            _ = try session.run("infer", inputs: ["X": one], outputs: ["detection"])
            times.append(Date().timeIntervalSince(s))
        }
        let inferProfile1 = profile ? zip(lib.profile("infer"), before1 + Array(repeating: 0, count: 64)).map { $0 - $1 } : []
        lib.setProfiling(false)
        times.sort()
        let b1 = times[times.count / 2] * 1000
        let x32 = images(32)
        _ = try session.run("infer", inputs: ["X": x32], outputs: ["detection"])
        lib.setProfiling(profile)
        t = Date()
        let inferRuns = 3
        for _ in 0..<inferRuns { _ = try session.run("infer", inputs: ["X": x32], outputs: ["detection"]) }
        let b32 = Double(32 * inferRuns) / Date().timeIntervalSince(t)
        let inferProfile = profile ? zip(lib.profile("infer"), inferProfile1).map { $0 - $1 } : []

        let compiled = result.model
        // The train step's convolutions, counted as direct multiply-adds (see the profile's note).
        let convFlops = compiled.program("train_step")?.kernels.map { $0.body.flops(batch: batchSize) }.reduce(0, +) ?? 0
        let convGflops = convFlops * Double(steps) / trainSeconds / 1e9
        defer { parallel?.finish() }
        guard parallel?.isRoot ?? true else { return }
        if json {
            var o: [String: Any] = [
                "train_examples_per_sec": trainRate, "infer_b1_ms": b1, "infer_b32_examples_per_sec": b32,
                "compile_seconds": cold, "compile_cached_seconds": cached, "peak_rss_bytes": peakTrain,
                "threads": threads, "batch_size": batchSize, "ssdc_version": CompiledModel.version,
                "cc": compiled.toolchain.version, "train_conv_gflop_per_step": convFlops / 1e9,
                "train_conv_gflops": convGflops, "isa": lib.isa, "model": graph.name, "input": "\(c)x\(h)x\(w)",
                "loss": training.loss.summary,
            ]
            if let parallel {
                // Aggregate over the ranks: every step ends in the gradient sum, so all ranks
                // take the same wall time per step.
                o["ranks"] = parallel.size
                o["allreduce_seconds_per_step"] = allreducePerStep
                o["allreduce_alone_seconds"] = allreduceAlone
                o["gradient_bytes"] = lib.manifest.paramsFloats * 4
            }
            let data = try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print("ssdc \(CompiledModel.version) bench: \(graph.name) \(h)x\(w), \(threads) threads, \(ProcessInfo.processInfo.activeProcessorCount) cores, \(compiled.toolchain.version), \(lib.isa) kernels")
            print("  loss: \(training.loss.summary)")
            print(String(format: "  train, batch %d:        %8.2f examples/s  (%.2f s per step; convolutions %.0f GFLOP/s as direct multiply-adds)",
                         batchSize, trainRate, trainSeconds / Double(steps), convGflops))
            if let parallel {
                print(String(format: "  across %d ranks:         %8.2f ms of gradient allreduce per step (%.2f ms for the %.1f MB alone)", parallel.size,
                             allreducePerStep * 1000, (allreduceAlone ?? 0) * 1000, Double(lib.manifest.paramsFloats * 4) / 1e6))
            }
            print(String(format: "  infer, batch 1:         %8.2f ms (forward + softmax + detection, median of %d)", b1, repeats))
            print(String(format: "  infer, batch 32:        %8.2f examples/s", b32))
            print(String(format: "  compile (cold/cached):  %8.2f s / %.2f s", cold, cached))
            print(String(format: "  peak RSS:               %8.1f MiB", Double(peakTrain) / 1048576))
        }
        if profile {
            for (name, times, n, runs) in [("train_step", trainProfile, batchSize, steps), ("infer", inferProfile1, 1, repeats),
                                           ("infer", inferProfile, 32, inferRuns)] {
                guard let p = compiled.program(name) else { continue }
                let total = times.reduce(0, +)
                print("\nprofile of \(name), batch \(n), \(runs) runs: \(String(format: "%.3f", total / Double(runs))) s per run")
                let rows = zip(p.kernels, times).sorted { $0.1 > $1.1 }
                for (k, sec) in rows.prefix(40) {
                    let flops = k.body.flops(batch: n)
                    let gf = flops > 0 ? String(format: "%7.1f GFLOP/s", flops * Double(runs) / sec / 1e9) : String(repeating: " ", count: 15)
                    print(String(format: "  %6.1f%%  %8.2f ms  %@  %@", 100 * sec / total, 1000 * sec / Double(runs), gf, k.name))
                }
            }
            print("""

            GFLOP/s counts a convolution's direct multiply-adds (2·C·O·k²·OH·OW per image, twice
            for a backward with dx); the 3x3 layers that run by Winograd do fewer, so their figure
            can pass the FMA peak (SSDC_WINOGRAD=0 profiles the direct kernels).
            """)
        }
    }
}
