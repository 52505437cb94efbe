import ArgumentParser
import Foundation
import SSDABI
import SSDCompiler
import SSDDriver
import SSDGraph
import SSDIO
import SSDModels
import SSDRuntime

@main
struct SSDC: ParsableCommand {

    static let configuration = CommandConfiguration(
        commandName: "ssdc",
        abstract: "A static-graph compiler for single-shot multibox detectors: Swift DSL -> OpenMP C -> shared library.",
        version: CompiledModel.version,
        subcommands: [Compile.self, Run.self, Bench.self, Export.self]
    )
}

/// Options every command that loads a model shares.
struct ModelOptions: ParsableArguments {
    @Option(help: "A directory written by `ssdc compile`, or a model .swift file. Default: the built-in TinySSD.")
    var model: String?

    @Option(help: "Input size HxW to compile the model for (default: the model's own, else the data's, else 256x256).")
    var inputSize: String?

    @Option(help: "OpenMP threads, 1 to \(ModelOptions.maxThreads) (default: SSDC_NUM_THREADS, else all cores).")
    var threads: Int?

    func validate() throws { _ = try requestedThreads() }

    func parsedSize() throws -> (height: Int, width: Int)? { try parseInputSize(inputSize) }

    func load(numClasses: Int? = nil) throws -> (ResolvedModel, ModelSession) {
        let m = try ModelResolver.resolve(model, size: try parsedSize(), numClasses: numClasses)
        if let t = try requestedThreads() { m.library.setThreads(t) }
        return (m, ModelSession(library: m.library))
    }

    /// The thread count --threads or else SSDC_NUM_THREADS asks for; nil when neither is
    /// set, or the variable is empty (then OpenMP uses all cores).
    func requestedThreads() throws -> Int? {
        try Self.threadCount(option: threads, environment: ProcessInfo.processInfo.environment["SSDC_NUM_THREADS"])
    }

    /// The most threads ssdc starts: a few per core is already slower than one per core;
    /// far more would exhaust memory (each thread has its own stack and scratch).
    static var maxThreads: Int { max(64, 4 * ProcessInfo.processInfo.activeProcessorCount) }

    /// Checks a thread count from the option or the environment variable (the option wins).
    static func threadCount(option: Int?, environment: String?) throws -> Int? {
        let range = 1...maxThreads
        let allowed = "between 1 and \(maxThreads) (this machine has \(ProcessInfo.processInfo.activeProcessorCount) cores)"
        if let option {
            guard range.contains(option) else { throw ValidationError("--threads \(option): the thread count must be \(allowed)") }
            return option
        }
        guard let environment, !environment.isEmpty else { return nil }
        guard let n = Int(environment.trimmingCharacters(in: .whitespaces)), range.contains(n) else {
            throw ValidationError("SSDC_NUM_THREADS=\(environment): the thread count must be a whole number \(allowed)")
        }
        return n
    }
}

struct Compile: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compile a model written in the DSL: each pass's printout (graph.txt, constants.txt, fusion.txt, kernels.txt, model.c), model.h, manifest.json, graph.dot and libmodel.so.")

    @Argument(help: "The model file (Swift, using the SSDGraph DSL), e.g. Examples/tinyssd/model.swift.")
    var file: String

    @Option(name: .shortAndLong, help: "Output directory (default: build/<model name>).")
    var output: String?

    @Option(help: "Input size HxW (default: the model's own, else 256x256).")
    var inputSize: String?

    @Option(help: "The CPU to build for: native (this one), x86-64-v3 (AVX2), x86-64-v4 (AVX-512) or generic (portable C).")
    var target: BuildTarget = .native

    @Option(help: "Seconds the model program may run to build its graph (default: SSDC_MODEL_TIMEOUT, else 120).")
    var modelTimeout: Double?

    @Option(help: "Print what a pass produced: \(Pass.allCases.map(\.rawValue).joined(separator: ", ")) (also written to the output folder).")
    var dumpAfter: Pass?

    func run() throws {
        let size = try parseInputSize(inputSize)
        if let t = modelTimeout, !(t.isFinite && t > 0) { throw ValidationError("--model-timeout must be a number of seconds greater than 0, got \(t)") }
        do {
            let graph = try ModelSource.graph(fromFile: file, size: size, timeout: modelTimeout)
            let dir = output ?? "build/\(graph.name)"
            let r = try Driver.compile(graph, into: dir, training: .init(), target: target)
            let kernels = r.model.programs.map { "\($0.name): \($0.kernels.count) kernels" }.joined(separator: ", ")
            print("compiled \(graph.name) (\(graph.nodes.count) nodes, \(r.model.layout.slots.count) parameter tensors) -> \(dir)")
            print("  \(kernels); library for \(target.rawValue) (\(r.model.toolchain.flags.joined(separator: " "))) \(r.cached ? "from cache" : "built") in \(String(format: "%.2f", r.seconds)) s")
            for f in Pass.allCases.map(\.file) + ["model.h", "manifest.json", "graph.dot", "libmodel.so"] { print("  \(dir)/\(f)") }
            if let dumpAfter { print("\n" + r.model.dump(after: dumpAfter), terminator: "") }
        } catch {
            FileHandle.standardError.write(Data("error: \(describe(error))\n".utf8))
            throw ExitCode.failure
        }
    }
}

enum RunMode: String, EnumerableFlag {
    case train, step, eval, forward, predict
    static func help(for value: RunMode) -> ArgumentHelp? {
        switch value {
        case .train: return "Train on --data (default: the built-in generated set), checkpointing to --out."
        case .step: return "One training step on --input (X, Y); write forward values, targets, loss, gradients and state to --out."
        case .eval: return "Evaluate --weights on the validation split of --data: class err, bbox mae, loss, mAP@0.5, mAP@[0.5:0.95]."
        case .forward: return "Run the forward pass on --input (safetensors with X) and write --out."
        case .predict: return "Detect objects in the given images and write annotated copies."
        }
    }
}

/// The loss variants of the chapter's exercises (SPEC section 7).
struct LossOptions: ParsableArguments {
    @Option(help: "Smooth L1 instead of L1 for box offsets, with this sigma.")
    var smoothL1: Float?
    @Option(help: "Focal loss instead of cross-entropy, with this gamma (alpha from --focal-alpha).")
    var focal: Float?
    @Option(help: "Focal loss alpha.")
    var focalAlpha: Float = 0.25
    @Option(help: "Hard negative mining: keep at most this many negatives per positive.")
    var negativeMiningRatio: Float?
    @Option(help: "Weight of the class loss.")
    var clsWeight: Float = 1
    @Option(help: "Weight of the box-offset loss.")
    var bboxWeight: Float = 1

    /// Whether any loss option was given (then they replace the model's declared loss).
    var isSet: Bool { smoothL1 != nil || focal != nil || negativeMiningRatio != nil || clsWeight != 1 || bboxWeight != 1 }

    func validate() throws {
        if let s = smoothL1 { try requireNumber(s, "--smooth-l1", above: 0) }
        if let g = focal { try requireNumber(g, "--focal", atLeast: 0) }
        try requireNumber(focalAlpha, "--focal-alpha", in: 0...1)
        if let r = negativeMiningRatio { try requireNumber(r, "--negative-mining-ratio", above: 0) }
        try requireNumber(clsWeight, "--cls-weight", atLeast: 0)
        try requireNumber(bboxWeight, "--bbox-weight", atLeast: 0)
    }

    var config: LossConfig {
        var c = LossConfig()
        if let s = smoothL1 { c.smoothL1 = true; c.sigma = s }
        if let g = focal { c.focal = true; c.focalGamma = g; c.focalAlpha = focalAlpha }
        if let r = negativeMiningRatio { c.negativeMiningRatio = r }
        c.clsWeight = clsWeight
        c.bboxWeight = bboxWeight
        return c
    }
}

/// Rejects NaN, infinities and values outside what an option allows, naming the option.
func requireNumber(_ value: Float, _ option: String, atLeast low: Float) throws {
    guard value.isFinite, value >= low else { throw ValidationError("\(option) must be a finite number >= \(plain(low)), got \(value)") }
}

func requireNumber(_ value: Float, _ option: String, above low: Float) throws {
    guard value.isFinite, value > low else { throw ValidationError("\(option) must be a finite number > \(plain(low)), got \(value)") }
}

func requireNumber(_ value: Float, _ option: String, in range: ClosedRange<Float>) throws {
    guard range.contains(value) else {
        throw ValidationError("\(option) must be between \(plain(range.lowerBound)) and \(plain(range.upperBound)), got \(value)")
    }
}

/// 0 rather than 0.0 in messages.
private func plain(_ v: Float) -> String { v == v.rounded() && abs(v) < 1e9 ? String(Int(v)) : String(v) }

enum BNMode: String, ExpressibleByArgument { case train, eval }

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a model, take one training step, evaluate it, run its forward pass or detect objects in images.",
        usage: "ssdc run (--train | --step | --eval | --forward | --predict) [<options>] [<images> ...]",
        discussion: "Exactly one mode is chosen: --train, --step, --eval, --forward or --predict. Each option's help names the modes it is for.")

    @Flag(help: "The mode: exactly one of these.") var mode: RunMode
    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var lossOptions: LossOptions
    @OptionGroup var trainingOptions: TrainingOptions

    @Option(help: "--train/--eval: a banana-detection-style data set (bananas_train/, bananas_val/, optional classes.txt beside each label.csv), or a folder with MXNet RecordIO train.rec, train.idx, val.rec (optional classes.txt), or a built-in generated set: builtin (banana-like, the default) or builtin:shapes (4 classes, 1-4 objects an image). --predict: class names from its classes.txt.")
    var data: String?
    @Option(help: "--train: epochs.") var epochs: Int = 20
    @Option(help: "--train/--eval: batch size.") var batchSize: Int = 32
    @Option(help: "--train/--step: learning rate.") var lr: Float = 0.2
    @Option(help: "--train/--step: weight decay.") var wd: Float = 5e-4
    @Option(help: "--train: seed of the initial weights and the shuffling.") var seed: UInt64 = 0
    @Flag(help: "--train: continue from the last checkpoint in --out.") var resume = false
    @Flag(help: "--train under mpirun: BatchNorm uses the statistics of the whole global batch, summed across ranks (SyncBatchNorm); without it each rank normalises with its own part.")
    var syncBn = false
    @Flag(help: "--train --resume: continue even if --data, --lr, --lr-schedule, --augment, --batch-size, --wd, --seed, --weights, the model or the loss differ from the run's; the change is recorded in settings.json.")
    var allowChangedSettings = false

    @Option(help: "Weights: a safetensors file with PyTorch's state_dict names.")
    var weights: String?
    @Option(help: "--forward: safetensors file holding X (N,3,H,W) float32.")
    var input: String?
    @Option(help: "--forward/--step: output safetensors file; --predict: directory for annotated images (default: predictions); --train: run directory (default: a new runs/DATE-TIME, linked as runs/latest; with --resume, runs/latest).")
    var out: String?
    @Option(help: "--forward: BatchNorm mode, train (batch statistics) or eval (running statistics, adds probs and detection).")
    var bn: BNMode = .eval
    @Option(help: "--predict: smallest score shown.")
    var threshold: Float = 0.9
    @Option(help: "--predict: class names, comma-separated, one per class of the model (default: classes.txt of --data, else banana for the built-in one-class TinySSD, else class 0, class 1, ...).")
    var classNames: String?
    @Argument(help: "--predict: images (PNG or JPEG).")
    var images: [String] = []

    func validate() throws {
        if weights == nil && mode != .train {
            throw ValidationError("--weights W.safetensors is required (a checkpoint with PyTorch's state_dict names)")
        }
        if !images.isEmpty && mode != .predict { throw ValidationError("image arguments are for --predict") }
        if batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
        if epochs < 1 { throw ValidationError("--epochs must be at least 1") }
        try requireNumber(lr, "--lr", atLeast: 0)
        try requireNumber(wd, "--wd", atLeast: 0)
        try requireNumber(threshold, "--threshold", in: 0...1)
        switch mode {
        case .train, .eval: break
        case .step:
            guard let input, let out else { throw ValidationError("--step needs --input BATCH.safetensors (X, Y) and --out OUT.safetensors") }
            try refuseOverwriting(out, inputs: input, weights)
        case .forward:
            guard let input, let out else { throw ValidationError("--forward needs --input IN.safetensors and --out OUT.safetensors") }
            if !images.isEmpty { throw ValidationError("--forward takes no image arguments; put X in --input") }
            try refuseOverwriting(out, inputs: input, weights)
        case .predict:
            if images.isEmpty { throw ValidationError("--predict needs at least one image") }
        }
    }

    /// --out must not name a file the run reads: writing it would replace the checkpoint
    /// or the batch it came from.
    func refuseOverwriting(_ out: String, inputs: String?...) throws {
        for case let file? in inputs where OutputPaths.sameFile(out, file) {
            let option = file == weights ? "--weights" : "--input"
            throw ValidationError("--out \(out) is the \(option) file \(file); writing it would replace it. Choose another --out.")
        }
    }

    func run() throws {
        do {
            try runMode()
        } catch let e as CleanExit {
            throw e
        } catch let e as ExitCode {
            throw e
        } catch {
            let parallel = DataParallel.current
            let rank = parallel.map { $0.size > 1 ? " (rank \($0.rank) of \($0.size))" : "" } ?? ""
            FileHandle.standardError.write(Data("error\(rank): \(describe(error))\n".utf8))
            parallel?.abort(1)  // the other ranks stop too, rather than wait for this one
            throw ExitCode.failure
        }
    }

    func runMode() throws {
        switch mode {
        case .train: return try train()
        case .step: return try step()
        case .eval: return try evaluate()
        case .forward, .predict: break
        }
        let (model, session) = try modelOptions.load(numClasses: try classCountHint())
        try session.loadStateDict(try SafeTensors.read(weights!), source: weights!)
        switch mode {
        case .forward: try forward(session)
        case .predict: try predict(model, session)
        default: break
        }
    }

    /// The threads to use: --threads, else SSDC_NUM_THREADS, else all cores (validate()
    /// has already rejected counts out of range).
    var threadCount: Int {
        (try? modelOptions.requestedThreads()) ?? ProcessInfo.processInfo.activeProcessorCount
    }

    /// The data set: --data, or a built-in generated one (made on first use): `builtin`
    /// (banana-like, the default) or `builtin:shapes` (four classes).
    func dataRoot() throws -> String {
        let generate: (String) throws -> String
        let name: String
        switch data {
        case nil, "builtin": (name, generate) = ("synthetic-bananas", { try SyntheticBananas.ensure(at: $0) })
        case "builtin:shapes": (name, generate) = ("synthetic-shapes", { try SyntheticShapes.ensure(at: $0) })
        case let data?:
            guard !data.hasPrefix("builtin:") else {
                throw RuntimeError("--data \(data): no such built-in data set (builtin or builtin:shapes; ./\(data) for a folder)")
            }
            return data
        }
        let root = CacheDirectory.path + "/data/" + name
        if !FileManager.default.fileExists(atPath: root + "/bananas_train/label.csv") {
            print("generating the built-in data set in \(root) ...")
        }
        return try generate(root)
    }

    func step() throws {
        let batch = try SafeTensors.read(input!)
        guard let x = batch["X"], let y = batch["Y"] else { throw RuntimeError("\(input!) needs tensors X (N,3,H,W) and Y (N,G,5)") }
        guard x.shape.count == 4, y.shape.count == 3, y.shape[2] == 5, y.shape[0] == x.shape[0] else {
            throw RuntimeError("\(input!): X must be (N,3,H,W) and Y (N,G,5) with the same N; got \(x.shape) and \(y.shape)")
        }
        let m = try ModelResolver.resolve(modelOptions.model, size: (x.shape[2], x.shape[3]), numClasses: try classCountHint(),
                                          training: .init(loss: lossOptions.config), lossFromModel: !lossOptions.isSet)
        if let t = try modelOptions.requestedThreads() { m.library.setThreads(t) }
        let session = ModelSession(library: m.library)
        try session.loadStateDict(try SafeTensors.read(weights!), source: weights!)
        session.setHyperParameters(learningRate: lr, weightDecay: wd)
        let outputs = try session.run("train_step", inputs: ["X": x, "Y": y])
        var result: [String: HostTensor] = [:]
        for (k, v) in outputs where k != "metrics" {
            result[["anchors", "cls_preds", "bbox_preds"].contains(k) ? "fwd.\(k)" : k] = v
        }
        let perExample = outputs["loss.per_example"]!.floats
        result["loss.per_example"] = HostTensor(floats: perExample, shape: [perExample.count])
        result["loss.mean"] = HostTensor(floats: [Float(perExample.map(Double.init).reduce(0, +) / Double(perExample.count))], shape: [])
        for (k, v) in session.gradients() { result["grad.\(k)"] = v }
        for (k, v) in session.stateDict() { result["state.\(k)"] = v }
        try SafeTensors.write(result, metadata: ["lr": "\(lr)", "wd": "\(wd)", "loss": m.library.manifest.loss ?? ""], to: out!)
        print(String(format: "loss %.6f; wrote %d tensors to %@", result["loss.mean"]!.floats[0], result.count, out!))
    }

    func evaluate() throws {
        let root = try dataRoot()
        let data = try DetectionDataSet.load(root: root, split: .val)
        let m = try ModelResolver.resolve(modelOptions.model, size: try modelOptions.parsedSize() ?? (data.height, data.width),
                                          numClasses: data.classNames?.count ?? (try classCountHint()),
                                          training: .init(loss: lossOptions.config), lossFromModel: !lossOptions.isSet)
        try data.validate(classCount: m.numClasses, of: "model \(m.graph.name)")
        if let t = try modelOptions.requestedThreads() { m.library.setThreads(t) }
        let session = ModelSession(library: m.library)
        try session.loadStateDict(try SafeTensors.read(weights!), source: weights!)
        let transform = trainingOptions.evalTransform
        // Under mpirun each rank evaluates its part of every batch; rank 0 prints the sum.
        let parallel = try DataParallel.joinIfLaunched(shim: Toolchain.mpiShim)
        defer { parallel?.finish() }
        let r = try Evaluator.evaluate(session, data: data, batchSize: batchSize, maxBoxes: max(1, data.maxBoxes), transform: transform,
                                       size: m.inputSize, parallel: parallel)
        guard parallel?.isRoot ?? true else { return }
        print(String(format: "%@%@ (%d images): class err %.2e, bbox mae %.2e, loss %.4f, mAP@0.5 %.4f, mAP@[0.5:0.95] %.4f",
                     data.location, transform.map { ", \($0.rawValue)" } ?? "", data.count,
                     r.metrics.classError, r.metrics.bboxMAE, r.metrics.meanLoss, r.meanAP, r.meanAPCOCO))
        if let strict = r.cutAsBackground {
            print(String(format: "  %d objects cut off at their centre, ignored as VOC ignores difficult ones; "
                         + "counted as background instead: mAP@0.5 %.4f, mAP@[0.5:0.95] %.4f",
                         r.cutObjects, strict.meanAP, strict.meanAPCOCO))
        }
    }

    func forward(_ session: ModelSession) throws {
        let tensors = try SafeTensors.read(input!)
        guard let x = tensors["X"] else { throw RuntimeError("\(input!) has no tensor X (N,3,H,W)") }
        let outputs = try session.run(bn == .train ? "forward_train" : "infer", inputs: ["X": x])
        var result: [String: HostTensor] = [:]
        for (k, v) in outputs {
            switch k {
            case "anchors", "cls_preds", "bbox_preds": result["fwd.\(k)"] = v
            default: result[k] = v
            }
        }
        try SafeTensors.write(result, metadata: ["bn": bn.rawValue, "model": session.manifest.model], to: out!)
        print("wrote \(out!): " + result.keys.sorted().map { "\($0) \(result[$0]!.shape)" }.joined(separator: ", "))
    }

    func predict(_ model: ResolvedModel, _ session: ModelSession) throws {
        let predictor = Predictor(model: model, session: session)
        let names = try predictionClassNames(model)
        let dir = out ?? "predictions"
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        } catch {
            throw RuntimeError("--out \(dir): cannot create the folder for the annotated images: \(AtomicFile.describe(error))")
        }
        var failed = 0
        for (path, dest) in zip(images, OutputPaths.predictions(for: images, in: dir)) {
            do {
                let image = try RGBImage.load(path)
                let found = try predictor.detect(image, threshold: threshold)
                try Predictor.annotate(image, found, classNames: names).savePNG(to: dest)
                print("\(path): \(found.count) detection\(found.count == 1 ? "" : "s") with score >= \(threshold) -> \(dest)")
                for d in found {
                    let name = d.classIndex < names.count ? names[d.classIndex] : "class \(d.classIndex)"
                    print(String(format: "  %@ %.3f  box (%.1f, %.1f, %.1f, %.1f) px", name, d.score, d.xmin, d.ymin, d.xmax, d.ymax))
                }
            } catch {
                failed += 1
                FileHandle.standardError.write(Data("error: \(describe(error))\n".utf8))
            }
        }
        if failed > 0 { throw ExitCode.failure }
    }

    /// The class count to build the model for when no training data says it: the
    /// num_classes a checkpoint of `ssdc run --train` records, else the classes.txt of
    /// --data; nil leaves the model's default. (--class-names only names them: a count that
    /// differs from the model's is an error.)
    func classCountHint() throws -> Int? {
        if let weights, let meta = try? SafeTensors.readWithMetadata(weights).metadata, let text = meta["num_classes"] {
            guard let q = Int(text), q >= 1 else { throw RuntimeError("\(weights): its metadata num_classes \"\(text)\" is not a class count") }
            return q
        }
        guard data != nil, let root = try? dataRoot() else { return nil }
        for file in DetectionDataSet.Split.allCases.map({ "\(root)/\($0.directoryName)/classes.txt" }) + ["\(root)/classes.txt"] {
            if let names = try DetectionDataSet.readClassNames(file) { return names.count }
        }
        return nil
    }

    /// The names drawn on --predict's boxes, class 0 first: --class-names, else the
    /// classes.txt of --data, else "banana" for the built-in one-class TinySSD (the
    /// chapter's detector); an empty list draws "class 0", "class 1", ...
    func predictionClassNames(_ model: ResolvedModel) throws -> [String] {
        let n = model.numClasses
        let classes = n == 1 ? "1 class" : "\(n) classes"
        if let classNames {
            let names = classNames.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard !names.contains("") else { throw RuntimeError("--class-names \(classNames): a class name is empty") }
            guard names.count == n else { throw RuntimeError("--class-names gives \(names.count) names but the model has \(classes)") }
            return names
        }
        if data != nil {
            let root = try dataRoot()
            // Beside each label.csv, or beside the RecordIO files.
            for file in DetectionDataSet.Split.allCases.map({ "\(root)/\($0.directoryName)/classes.txt" }) + ["\(root)/classes.txt"] {
                guard let names = try DetectionDataSet.readClassNames(file) else { continue }
                guard names.count == n else { throw RuntimeError("\(file) names \(names.count) classes but the model has \(classes)") }
                return names
            }
        }
        return modelOptions.model == nil && n == 1 ? BuiltinModels.tinySSDClassNames : []
    }
}

/// `--input-size HxW`, checked; nil when not given.
func parseInputSize(_ text: String?) throws -> (height: Int, width: Int)? {
    guard let text else { return nil }
    let p = text.lowercased().split(separator: "x").compactMap { Int($0) }
    guard p.count == 2, p[0] > 0, p[1] > 0 else { throw ValidationError("--input-size must look like 300x300 (height x width), got \(text)") }
    return (p[0], p[1])
}

/// An error in words for the user. ssdc's own errors already name their file; Foundation's
/// (a CocoaError such as Code=516, a DecodingError) are put as "file: reason" instead of
/// their debug form.
func describe(_ error: Error) -> String {
    switch error {
    case is DecodingError: return "invalid JSON: \(AtomicFile.describe(error))"
    case let e as CocoaError:
        let path = e.filePath ?? e.url?.path
        return path.map { "\($0): \(AtomicFile.describe(e))" } ?? AtomicFile.describe(e)
    default: return "\(error)"
    }
}
