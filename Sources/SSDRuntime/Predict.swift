#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import SSDIO

/// One detected object in an image's own pixel coordinates.
public struct Detection: Equatable, Sendable {
    public var classIndex: Int
    public var score: Float
    public var xmin: Float, ymin: Float, xmax: Float, ymax: Float
}

/// A detection's box (xmin, ymin, xmax, ymax as fractions of the picture) clipped to the
/// picture. The detection program decodes offsets from anchors as the chapter's
/// `multibox_detection` does, which lets a box of an object cut by the edge reach past it;
/// hosts clip after NMS (torchvision's SSD clips before), so `predict` draws and `eval`
/// scores only what is in the picture. Labels are always inside, so clipping can only raise
/// a box's IoU with them.
public func detectionBoxInPicture<C: Collection>(_ box: C) -> [Float] where C.Element == Float {
    box.map { min(max($0, 0), 1) }
}

/// Prediction as the chapter's `predict` + `display`: eval-mode forward, detection, the
/// rows with a class and a score above the threshold (boxes clipped to the picture), drawn
/// on the image.
public struct Predictor {
    public let model: ResolvedModel
    public let session: ModelSession

    public init(model: ResolvedModel, session: ModelSession) {
        self.model = model
        self.session = session
    }

    /// Detections of one image (resized to the model's input if needed) above `threshold`.
    public func detect(_ image: RGBImage, threshold: Float) throws -> [Detection] {
        let (h, w) = model.inputSize
        let input = (image.width == w && image.height == h) ? image : image.resized(width: w, height: h)
        let x = HostTensor(floats: input.toCHWFloats(), shape: [1, 3, h, w])
        let out = try session.run("infer", inputs: ["X": x])
        guard let det = out["detection"] else { throw RuntimeError("the inference program gave no detection output") }
        let rows = det.floats
        var found: [Detection] = []
        for r in stride(from: 0, to: rows.count, by: 6) {
            let cls = Int(rows[r])
            guard cls >= 0, rows[r + 1] >= threshold else { continue }
            let sx = Float(image.width), sy = Float(image.height)
            let b = detectionBoxInPicture(rows[(r + 2)..<(r + 6)])
            found.append(Detection(classIndex: cls, score: rows[r + 1], xmin: b[0] * sx, ymin: b[1] * sy, xmax: b[2] * sx, ymax: b[3] * sy))
        }
        return found
    }

    /// A copy of `image` with each detection's box and "name score" drawn on it.
    public static func annotate(_ image: RGBImage, _ detections: [Detection], classNames: [String]) -> RGBImage {
        var img = image
        let palette: [RGBImage.Color] = [.white, .cyan, .yellow, .magenta, .green, .red]
        let thickness = max(1, min(image.width, image.height) / 200)
        for d in detections {
            let name = d.classIndex < classNames.count ? classNames[d.classIndex] : "class \(d.classIndex)"
            let label = "\(name) \(String(format: "%.2f", d.score))"
            img.drawLabeledBox(x0: Int(d.xmin.rounded()), y0: Int(d.ymin.rounded()), x1: Int(d.xmax.rounded()),
                               y1: Int(d.ymax.rounded()), label: label, color: palette[d.classIndex % palette.count],
                               thickness: thickness)
        }
        return img
    }
}

/// Where output files go, chosen so that no input is ever written over and no two
/// inputs share an output.
public enum OutputPaths {
    /// Whether `a` and `b` name one file: the same file on disk when both exist (so hard
    /// links and symbolic links count), else the same path once the folders' symbolic
    /// links and `..` are resolved.
    public static func sameFile(_ a: String, _ b: String) -> Bool {
        if let ia = identity(a), let ib = identity(b) { return ia == ib }
        return resolved(a) == resolved(b)
    }

    /// Device and inode of an existing file.
    static func identity(_ path: String) -> [UInt64]? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return [UInt64(st.st_dev), UInt64(st.st_ino)]
    }

    /// The absolute path with symbolic links resolved; for a path that does not exist
    /// (yet), its folder's resolved path plus its name.
    public static func resolved(_ path: String) -> String {
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        if let real = realpath(absolute, nil) {
            defer { free(real) }
            return String(cString: real)
        }
        let ns = absolute as NSString
        let parent = ns.deletingLastPathComponent
        guard parent != absolute, !parent.isEmpty else { return absolute }
        return (resolved(parent) as NSString).appendingPathComponent(ns.lastPathComponent)
    }

    /// The annotated copy of each image: `directory/NAME.png` for an image NAME.*, or,
    /// when that would write over an input or another image's copy, `FOLDER_NAME.png`
    /// (FOLDER: the image's folder), else `NAME-2.png`, `NAME-3.png`, ...
    public static func predictions(for images: [String], in directory: String) -> [String] {
        let inputs = images.map { (identity: identity($0), resolved: resolved($0)) }
        var taken = Set<String>()  // resolved outputs, lower-cased: one file on case-insensitive disks
        func isFree(_ path: String) -> Bool {
            let r = resolved(path)
            guard !taken.contains(r.lowercased()) else { return false }
            let id = identity(path)
            return !inputs.contains { ($0.identity != nil && $0.identity == id) || $0.resolved == r }
        }
        return images.enumerated().map { i, image in
            let name = ((image as NSString).lastPathComponent as NSString).deletingPathExtension
            let folder = ((inputs[i].resolved as NSString).deletingLastPathComponent as NSString).lastPathComponent
            func candidate(_ k: Int) -> String {
                let file = k == 0 ? "\(name).png" : k == 1 ? "\(folder)_\(name).png" : "\(name)-\(k).png"
                return (directory as NSString).appendingPathComponent(file)
            }
            var k = 0
            while !isFree(candidate(k)) { k += 1 }
            taken.insert(resolved(candidate(k)).lowercased())
            return candidate(k)
        }
    }
}
