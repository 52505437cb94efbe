import ArgumentParser
import Foundation
import SSDCompiler
import SSDGraph
import SSDIO
import SSDRuntime

@main
struct SSDC: ParsableCommand {

    static let configuration = CommandConfiguration(
        commandName: "ssdc",
        abstract: "A static-graph compiler for single-shot multibox detectors: Swift DSL -> OpenMP C -> shared library.",
        version: CompiledModel.version,
        subcommands: [Compile.self, Run.self, Bench.self]
    )
}

/// Options every command that loads a model shares.
struct ModelOptions: ParsableArguments {
    @Option(help: "A directory written by `ssdc compile`, or a model .swift file. Default: the built-in TinySSD.")
    var model: String?

    @Option(help: "Input size HxW to compile the model for.")
    var inputSize: String = "256x256"

    @Option(help: "OpenMP threads (default: SSDC_NUM_THREADS, else all cores).")
    var threads: Int?

    func parsedSize() throws -> (Int, Int) {
        let p = inputSize.lowercased().split(separator: "x").compactMap { Int($0) }
        guard p.count == 2, p[0] > 0, p[1] > 0 else { throw ValidationError("--input-size must look like 256x256, got \(inputSize)") }
        return (p[0], p[1])
    }

    func load() throws -> (ResolvedModel, ModelSession) {
        let (h, w) = try parsedSize()
        let m = try ModelResolver.resolve(model, height: h, width: w)
        if let t = threads ?? ProcessInfo.processInfo.environment["SSDC_NUM_THREADS"].flatMap({ Int($0) }) {
            m.library.setThreads(t)
        }
        return (m, ModelSession(library: m.library))
    }
}

struct Compile: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compile a model written in the DSL: graph.txt, model.c, model.h, manifest.json, kernels.txt and libmodel.so.")

    @Argument(help: "The model file (Swift, using the SSDGraph DSL), e.g. Examples/tinyssd/model.swift.")
    var file: String

    @Option(name: .shortAndLong, help: "Output directory (default: build/<model name>).")
    var output: String?

    @Option(help: "Input size HxW.")
    var inputSize: String = "256x256"

    @Option(help: "Ground-truth boxes per image the train and eval steps take (rows of Y).")
    var maxBoxes: Int = 1

    @Option(help: "Seconds the model program may run to build its graph (default: SSDC_MODEL_TIMEOUT, else 120).")
    var modelTimeout: Double?

    func run() throws {
        let p = inputSize.lowercased().split(separator: "x").compactMap { Int($0) }
        guard p.count == 2 else { throw ValidationError("--input-size must look like 256x256") }
        guard maxBoxes >= 1 else { throw ValidationError("--max-boxes must be at least 1") }
        if let t = modelTimeout, !(t.isFinite && t > 0) { throw ValidationError("--model-timeout must be a number of seconds greater than 0, got \(t)") }
        do {
            let graph = try ModelSource.graph(fromFile: file, height: p[0], width: p[1], timeout: modelTimeout)
            let dir = output ?? "build/\(graph.name)"
            let r = try Driver.compile(graph, into: dir, training: .init(maxBoxes: maxBoxes))
            let kernels = r.model.programs.map { "\($0.name): \($0.kernels.count) kernels" }.joined(separator: ", ")
            print("compiled \(graph.name) (\(graph.nodes.count) nodes, \(r.model.layout.slots.count) parameter tensors) -> \(dir)")
            print("  \(kernels); library \(r.cached ? "from cache" : "built") in \(String(format: "%.2f", r.seconds)) s")
            for f in ["graph.txt", "model.c", "model.h", "manifest.json", "kernels.txt", "libmodel.so"] { print("  \(dir)/\(f)") }
        } catch {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
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
        case .eval: return "Evaluate --weights on the validation split of --data: class err, bbox mae, loss."
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

enum BNMode: String, ExpressibleByArgument { case train, eval }

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run a compiled model: forward pass or prediction.")

    @Flag var mode: RunMode
    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var lossOptions: LossOptions

    @Option(help: "--train/--eval: a banana-detection-style data set (bananas_train/, bananas_val/). Default: the built-in generated set.")
    var data: String?
    @Option(help: "--train: epochs.") var epochs: Int = 20
    @Option(help: "--train/--eval: batch size.") var batchSize: Int = 32
    @Option(help: "--train/--step: learning rate.") var lr: Float = 0.2
    @Option(help: "--train/--step: weight decay.") var wd: Float = 5e-4
    @Option(help: "--train: seed of the initial weights and the shuffling.") var seed: UInt64 = 0
    @Flag(help: "--train: continue from the last checkpoint in --out.") var resume = false

    @Option(help: "Weights: a safetensors file with PyTorch's state_dict names.")
    var weights: String?
    @Option(help: "--forward: safetensors file holding X (N,3,H,W) float32.")
    var input: String?
    @Option(help: "--forward/--step: output safetensors file; --predict: directory for annotated images (default: predictions); --train: run directory (default: runs/latest).")
    var out: String?
    @Option(help: "--forward: BatchNorm mode, train (batch statistics) or eval (running statistics, adds probs and detection).")
    var bn: BNMode = .eval
    @Option(help: "--predict: smallest score shown.")
    var threshold: Float = 0.9
    @Option(help: "--predict: class names, comma-separated (default: banana for one class).")
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
        switch mode {
        case .train, .eval: break
        case .step:
            if input == nil || out == nil { throw ValidationError("--step needs --input BATCH.safetensors (X, Y) and --out OUT.safetensors") }
        case .forward:
            if input == nil || out == nil { throw ValidationError("--forward needs --input IN.safetensors and --out OUT.safetensors") }
            if !images.isEmpty { throw ValidationError("--forward takes no image arguments; put X in --input") }
        case .predict:
            if images.isEmpty { throw ValidationError("--predict needs at least one image") }
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
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
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
        let (model, session) = try modelOptions.load()
        try session.loadStateDict(try SafeTensors.read(weights!), source: weights!)
        switch mode {
        case .forward: try forward(session)
        case .predict: try predict(model, session)
        default: break
        }
    }

    var threadCount: Int {
        modelOptions.threads ?? ProcessInfo.processInfo.environment["SSDC_NUM_THREADS"].flatMap { Int($0) }
            ?? ProcessInfo.processInfo.activeProcessorCount
    }

    /// The data set: --data, or the built-in generated one (made on first use).
    func dataRoot() throws -> String {
        if let data { return data }
        let root = Toolchain.cacheDirectory() + "/data/synthetic-bananas"
        if !FileManager.default.fileExists(atPath: root + "/bananas_train/label.csv") {
            print("generating the built-in data set in \(root) ...")
        }
        return try SyntheticBananas.ensure(at: root)
    }

    func train() throws {
        let root = try dataRoot()
        let data = try DetectionDataSet.load(root: root, split: .train)
        let (h, w) = try modelOptions.parsedSize()
        guard data.height == h, data.width == w else {
            throw RuntimeError("\(root): images are \(data.width)x\(data.height); pass --input-size \(data.height)x\(data.width)")
        }
        let loss = lossOptions.config
        let m = try ModelResolver.resolve(modelOptions.model, height: h, width: w, numClasses: max(1, data.classCount),
                                          training: .init(maxBoxes: max(1, data.maxBoxes), loss: loss), lossFromModel: !lossOptions.isSet)
        m.library.setThreads(threadCount)
        let session = ModelSession(library: m.library)
        let runDir = out ?? "runs/latest"
        let usedLoss = m.library.manifest.loss ?? loss.summary
        var settings = TrainSettings(data: root, threads: threadCount, model: modelOptions.model ?? "built-in tinyssd", loss: usedLoss)
        settings.epochs = epochs; settings.batchSize = batchSize; settings.learningRate = lr; settings.weightDecay = wd
        settings.seed = seed; settings.initialWeights = weights
        let trainer = Trainer(model: m, session: session, data: data, settings: settings, runDirectory: runDir)
        var first = 1
        if resume {
            first = try trainer.resume()
            print("resuming \(runDir) at epoch \(first)")
        } else if let weights {
            try session.loadStateDict(try SafeTensors.read(weights), source: weights)
        } else {
            session.initializeParameters(seed: seed, graph: m.graph)
        }
        defer { fflush(nil) }
        print("training \(m.graph.name) on \(data.count) images of \(root) (\(epochs) epochs, batch \(batchSize), lr \(lr), wd \(wd), \(threadCount) threads, \(usedLoss))")
        let progress = ProgressLine()
        let start = Date()
        let history = try trainer.train(from: first, onBatch: { done, total, rate, elapsed in
            progress.update(done: done, total: total, rate: rate, elapsed: elapsed)
        }, onEpoch: { e in
            progress.clear()
            print(String(format: "epoch %d, class err %.2e, bbox mae %.2e, time %.1f sec, loss %.4f",
                         e.epoch, e.classError, e.bboxMAE, e.seconds, e.loss))
            fflush(nil)  // a log file shows each epoch as it ends
        })
        guard let last = history.last else { print("nothing to do: \(runDir) has finished \(epochs) epochs"); return }
        let examples = history.map(\.examples).reduce(0, +)
        let seconds = history.map(\.seconds).reduce(0, +)
        print(String(format: "class err %.2e, bbox mae %.2e", last.classError, last.bboxMAE))
        print(String(format: "%.1f examples/sec on cpu (%d threads)", Double(examples) / seconds, threadCount))
        print("checkpoint: \(runDir)/checkpoint.safetensors, metrics: \(runDir)/metrics.csv (\(String(format: "%.1f", Date().timeIntervalSince(start))) s)")
    }

    func step() throws {
        let batch = try SafeTensors.read(input!)
        guard let x = batch["X"], let y = batch["Y"] else { throw RuntimeError("\(input!) needs tensors X (N,3,H,W) and Y (N,G,5)") }
        guard x.shape.count == 4, y.shape.count == 3, y.shape[2] == 5, y.shape[0] == x.shape[0] else {
            throw RuntimeError("\(input!): X must be (N,3,H,W) and Y (N,G,5) with the same N; got \(x.shape) and \(y.shape)")
        }
        let m = try ModelResolver.resolve(modelOptions.model, height: x.shape[2], width: x.shape[3],
                                          training: .init(maxBoxes: y.shape[1], loss: lossOptions.config), lossFromModel: !lossOptions.isSet)
        if let t = modelOptions.threads { m.library.setThreads(t) }
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
        let m = try ModelResolver.resolve(modelOptions.model, height: data.height, width: data.width,
                                          training: .init(maxBoxes: max(1, data.maxBoxes), loss: lossOptions.config), lossFromModel: !lossOptions.isSet)
        if let t = modelOptions.threads { m.library.setThreads(t) }
        let session = ModelSession(library: m.library)
        try session.loadStateDict(try SafeTensors.read(weights!), source: weights!)
        let r = try Evaluator.evaluate(session, data: data, batchSize: batchSize, maxBoxes: m.library.manifest.maxBoxes ?? data.maxBoxes)
        print(String(format: "%@ (%d images): class err %.2e, bbox mae %.2e, loss %.4f, mAP@0.5 %.4f", root + "/bananas_val", data.count,
                     r.metrics.classError, r.metrics.bboxMAE, r.metrics.meanLoss, r.meanAP))
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
        let names = classNames.map { $0.split(separator: ",").map(String.init) } ?? (model.numClasses == 1 ? ["banana"] : [])
        let dir = out ?? "predictions"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var failed = 0
        for path in images {
            do {
                let image = try RGBImage.load(path)
                let found = try predictor.detect(image, threshold: threshold)
                let base = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
                let dest = "\(dir)/\(base).png"
                try Predictor.annotate(image, found, classNames: names).savePNG(to: dest)
                print("\(path): \(found.count) detection\(found.count == 1 ? "" : "s") with score >= \(threshold) -> \(dest)")
                for d in found {
                    let name = d.classIndex < names.count ? names[d.classIndex] : "class \(d.classIndex)"
                    print(String(format: "  %@ %.3f  box (%.1f, %.1f, %.1f, %.1f) px", name, d.score, d.xmin, d.ymin, d.xmax, d.ymax))
                }
            } catch {
                failed += 1
                FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            }
        }
        if failed > 0 { throw ExitCode.failure }
    }
}
