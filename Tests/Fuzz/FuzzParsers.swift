// libFuzzer targets for ssdc's Swift parsers, built by scripts/fuzz.sh with
// `swiftc -sanitize=fuzzer,address` together with Sources/SSDIO's files (this directory is
// not an SPM target, so `swift build` never sees it). One target per build:
//   -D FUZZ_SAFETENSORS  SafeTensors.decode on the input; what it accepts must survive
//                        an encode/decode round trip unchanged
//   -D FUZZ_LABELS       DetectionDataSet.load on a data set whose label.csv is the input
//                        (images/a.png exists, so accepted rows reach the box checks)
// A thrown error is the parsers' answer to bad input; a trap or a sanitizer report is a bug.
import Foundation

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    #if FUZZ_SAFETENSORS
    fuzzSafeTensors(bytes)
    #elseif FUZZ_LABELS
    LabelFuzz.shared.run(bytes)
    #endif
    return 0
}

func fuzzSafeTensors(_ bytes: [UInt8]) {
    guard let (tensors, metadata) = try? SafeTensors.decode(bytes) else { return }
    guard let encoded = try? SafeTensors.encode(tensors, metadata: metadata),
          let again = try? SafeTensors.decode(encoded)
    else { fatalError("an accepted file does not survive encode/decode") }
    if again.tensors != tensors || again.metadata != metadata {
        fatalError("encode/decode changed the tensors or metadata")
    }
}

/// A data-set folder in the temporary directory whose label.csv each input replaces.
final class LabelFuzz {
    nonisolated(unsafe) static let shared = LabelFuzz()
    let root: String
    let labelFile: URL

    init() {
        root = NSTemporaryDirectory() + "ssdc-fuzz-labels-\(getpid())"
        labelFile = URL(fileURLWithPath: root + "/bananas_train/label.csv")
        do {
            try RGBImage(width: 8, height: 8, fill: .green).savePNG(to: root + "/bananas_train/images/a.png")
        } catch {
            fatalError("fuzz harness: cannot set up \(root): \(error)")
        }
    }

    func run(_ bytes: [UInt8]) {
        do {
            try Data(bytes).write(to: labelFile)
        } catch {
            fatalError("fuzz harness: cannot write \(labelFile.path): \(error)")
        }
        guard let set = try? DetectionDataSet.load(root: root, split: .train, cacheImages: false) else { return }
        let y = set.labels(indices: Array(0 ..< set.count))
        if y.contains(where: { !$0.isFinite }) { fatalError("non-finite label row") }
    }
}
