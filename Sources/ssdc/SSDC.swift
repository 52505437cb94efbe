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
        subcommands: [Compile.self, Run.self]
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

    func run() throws {
        let p = inputSize.lowercased().split(separator: "x").compactMap { Int($0) }
        guard p.count == 2 else { throw ValidationError("--input-size must look like 256x256") }
        do {
            let graph = try ModelSource.graph(fromFile: file, height: p[0], width: p[1])
            let dir = output ?? "build/\(graph.name)"
            let r = try Driver.compile(graph, into: dir)
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
    case forward, predict
    static func help(for value: RunMode) -> ArgumentHelp? {
        switch value {
        case .forward: return "Run the forward pass on --input (safetensors with X) and write --out."
        case .predict: return "Detect objects in the given images and write annotated copies."
        }
    }
}

enum BNMode: String, ExpressibleByArgument { case train, eval }

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run a compiled model: forward pass or prediction.")

    @Flag var mode: RunMode
    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Weights: a safetensors file with PyTorch's state_dict names.")
    var weights: String?
    @Option(help: "--forward: safetensors file holding X (N,3,H,W) float32.")
    var input: String?
    @Option(help: "--forward: output safetensors file; --predict: directory for annotated images (default: predictions).")
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
        if weights == nil { throw ValidationError("--weights W.safetensors is required (a checkpoint with PyTorch's state_dict names)") }
        switch mode {
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
        let (model, session) = try modelOptions.load()
        try session.loadStateDict(try SafeTensors.read(weights!), source: weights!)
        switch mode {
        case .forward: try forward(session)
        case .predict: try predict(model, session)
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
