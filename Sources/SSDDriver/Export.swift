import Foundation
import SSDABI
import SSDCompiler
import SSDRuntime

/// Writes a folder that builds the model with a C compiler and make alone (no Swift, no
/// ssdc): model.c and model.h as `ssdc compile` emits them, the runtime's sources, the
/// weights, a small C API (bundle.h), the example program detect.c, a Makefile and a README.
public enum BundleExporter {
    /// Exports `model` with the weights loaded in `session` into `directory` (created if
    /// needed) and returns the paths written. With `embedWeights` the weights become a
    /// const array in weights.c, else the file weights.bin the program reads at run time.
    @discardableResult
    public static func export(_ model: ResolvedModel, session: ModelSession, to directory: String,
                              target: BuildTarget, embedWeights: Bool) throws -> [String] {
        let infer = try inferProgram(session.manifest)
        guard !OutputPaths.sameFile(directory, model.directory) else {
            throw RuntimeError("-o \(directory) is the model's own folder; choose another folder for the bundle")
        }
        let templates = try Toolchain.runtimeDirectory()
        let exportDir = templates + "/export"
        for dir in [directory, directory + "/runtime", directory + "/noomp"] { try AtomicFile.makeDirectory(dir) }
        var written: [String] = []
        func copy(_ source: String, _ name: String) throws {
            try AtomicFile.copy(source, to: "\(directory)/\(name)")
            written.append("\(directory)/\(name)")
        }
        func write(_ data: Data, _ name: String) throws {
            try AtomicFile.write(data, to: "\(directory)/\(name)")
            written.append("\(directory)/\(name)")
        }

        for f in ["model.c", "model.h"] { try copy("\(model.directory)/\(f)", f) }
        for f in try AtomicFile.directoryListing(templates).sorted() where f.hasSuffix(".c") || f.hasSuffix(".h") {
            try copy("\(templates)/\(f)", "runtime/\(f)")
        }
        for f in ["bundle.c", "bundle.h", "detect.c", "README.md"] { try copy("\(exportDir)/\(f)", f) }
        try copy("\(exportDir)/noomp/omp.h", "noomp/omp.h")

        let makefile = try String(decoding: AtomicFile.read("\(exportDir)/Makefile.in"), as: UTF8.self)
            .replacingOccurrences(of: "@MARCH@", with: target.marchFlag)
            .replacingOccurrences(of: "@WEIGHTS_OBJ@", with: embedWeights ? "weights.o " : "")
        try write(Data(makefile.utf8), "Makefile")
        try write(Data(config(model, rows: infer.rows, embedded: embedWeights).utf8), "bundle_config.h")

        // One weights file only: a stale one from an earlier export would be loaded or linked.
        let (name, stale) = embedWeights ? ("weights.c", "weights.bin") : ("weights.bin", "weights.c")
        try? FileManager.default.removeItem(atPath: "\(directory)/\(stale)")
        try write(session.withParameters { embedWeights ? weightsSource($0) : weightsFile($0) }, name)
        return written
    }

    /// The `infer` program, checked to take X and give detection rows in the batched
    /// region, which is what bundle.c reads; returns the rows per image.
    static func inferProgram(_ m: Manifest) throws -> (program: Manifest.ProgramInfo, rows: Int) {
        guard let p = m.programs.first(where: { $0.name == "infer" }) else {
            throw RuntimeError("model \(m.model) has no infer program to export")
        }
        guard p.inputs.count == 1, p.inputs[0].name == "X", p.inputs[0].region == "batched" else {
            throw RuntimeError("model \(m.model): its infer program must take the one input X to be exported, it takes \(p.inputs.map(\.name))")
        }
        guard let d = p.outputs.first(where: { $0.name == "detection" }), d.region == "batched",
              d.shape.count == 3, d.shape[2] == 6 else {
            throw RuntimeError("model \(m.model): its infer program gives no detection rows (N,A,6) to export")
        }
        return (p, d.shape[1])
    }

    /// bundle_config.h: what bundle.c and detect.c need to know beyond model.h.
    static func config(_ model: ResolvedModel, rows: Int, embedded: Bool) -> String {
        let (h, w) = model.inputSize
        return """
        /* bundle_config.h — written by `ssdc export` for model "\(model.graph.name)". */
        #ifndef SSDC_BUNDLE_CONFIG_H
        #define SSDC_BUNDLE_CONFIG_H
        #define SSDC_BUNDLE_HEIGHT \(h) /* input pictures: 3 x HEIGHT x WIDTH */
        #define SSDC_BUNDLE_WIDTH \(w)
        #define SSDC_BUNDLE_CLASSES \(model.numClasses)
        #define SSDC_BUNDLE_ROWS \(rows) /* detection rows per image */
        #define SSDC_BUNDLE_EMBEDDED_WEIGHTS \(embedded ? 1 : 0) /* 1: weights.c, else weights.bin */
        #endif

        """
    }

    /// weights.bin: the parameters and BN state as raw little-endian float32, in the order
    /// and at the offsets of model.h's parameter region.
    static func weightsFile(_ params: UnsafeBufferPointer<Float>) -> Data {
        if UInt32(1).littleEndian == 1 { return Data(buffer: params) }
        return Data(params.flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } })
    }

    /// weights.c: the same values as a const array of their bit patterns, so they are
    /// exact whatever the compiler's float parsing and the machine's byte order.
    static func weightsSource(_ params: UnsafeBufferPointer<Float>) -> Data {
        var out = [UInt8]()
        out.reserveCapacity(params.count * 12 + 200)
        out += Array("""
            /* weights.c — written by `ssdc export --embed-weights`: the parameters' float32 bit patterns. */
            #include <stdint.h>
            #include "model.h"

            const uint32_t ssdc_bundle_weight_bits[SSDC_PARAMS_FLOATS] = {

            """.utf8)
        let hex = Array("0123456789abcdef".utf8)
        for (i, v) in params.enumerated() {
            let bits = v.bitPattern
            out.append(UInt8(ascii: "0"))
            out.append(UInt8(ascii: "x"))
            for shift in stride(from: 28, through: 0, by: -4) { out.append(hex[Int((bits >> UInt32(shift)) & 0xf)]) }
            out.append(UInt8(ascii: ","))
            out.append(UInt8(ascii: i % 8 == 7 ? "\n" : " "))
        }
        out += Array("\n};\n".utf8)
        return Data(out)
    }
}
