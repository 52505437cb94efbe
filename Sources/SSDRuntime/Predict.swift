import Foundation
import SSDIO

/// One detected object in an image's own pixel coordinates.
public struct Detection: Equatable, Sendable {
    public var classIndex: Int
    public var score: Float
    public var xmin: Float, ymin: Float, xmax: Float, ymax: Float
}

/// Prediction as the chapter's `predict` + `display`: eval-mode forward, detection, the
/// rows with a class and a score above the threshold, drawn on the image.
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
            found.append(Detection(classIndex: cls, score: rows[r + 1], xmin: rows[r + 2] * sx, ymin: rows[r + 3] * sy,
                                   xmax: rows[r + 4] * sx, ymax: rows[r + 5] * sy))
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
