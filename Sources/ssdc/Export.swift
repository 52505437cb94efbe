import ArgumentParser
import Foundation
import SSDABI
import SSDCompiler
import SSDDriver
import SSDIO
import SSDRuntime

extension BuildTarget: ExpressibleByArgument {}
extension Pass: ExpressibleByArgument {}

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a C bundle of a model and its weights that builds with a C compiler and make alone.",
        discussion: "The folder holds model.c, model.h, the runtime's sources, the weights, bundle.h (a small C API), detect.c (an example program), a Makefile and a README. `make` builds libmodel.a, libmodel.so and detect.")

    @Argument(help: "A directory written by `ssdc compile`, or a model .swift file. Default: the built-in TinySSD.")
    var model: String?

    @Option(help: "Weights: a safetensors file with PyTorch's state_dict names.")
    var weights: String

    @Option(name: .shortAndLong, help: "The bundle's folder (created if needed).")
    var output: String

    @Option(help: "The CPU the Makefile builds for: native (-march=native), x86-64-v3, or generic (no -march: portable C, any CPU).")
    var target: BuildTarget = .native

    @Flag(help: "Compile the weights into the library (weights.c, a const array) instead of reading weights.bin at run time.")
    var embedWeights = false

    @Option(help: "Input size HxW to compile the model for (default: the model's own, else 256x256; a directory from `ssdc compile` keeps its own).")
    var inputSize: String?

    func run() throws {
        let size = try parseInputSize(inputSize)
        do {
            let m = try ModelResolver.resolve(model, size: size)
            let session = ModelSession(library: m.library)
            try session.loadStateDict(try SafeTensors.read(weights), source: weights)
            try BundleExporter.export(m, session: session, to: output, target: target, embedWeights: embedWeights)
            let (h, w) = m.inputSize
            print("exported \(m.graph.name) (\(h)x\(w), target \(target.rawValue), weights \(embedWeights ? "compiled in" : "in weights.bin")) -> \(output)")
            let weightsOption = embedWeights ? "" : " --weights \(output)/weights.bin"
            print("  build: make -C \(output)    run: \(output)/detect\(weightsOption) IMAGE.png (see \(output)/README.md)")
        } catch {
            FileHandle.standardError.write(Data("error: \(describe(error))\n".utf8))
            throw ExitCode.failure
        }
    }
}
