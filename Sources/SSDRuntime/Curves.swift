import Foundation
import SSDIO

/// One epoch's numbers as curves.png plots them (nil: not measured).
public struct CurvePoint: Sendable, Equatable {
    public var epoch: Int
    public var loss, classError, bboxMAE: Double?
    public var validationMAP50, validationMAP: Double?

    public init(epoch: Int, loss: Double?, classError: Double?, bboxMAE: Double?, validationMAP50: Double? = nil, validationMAP: Double? = nil) {
        self.epoch = epoch
        self.loss = loss
        self.classError = classError
        self.bboxMAE = bboxMAE
        self.validationMAP50 = validationMAP50
        self.validationMAP = validationMAP
    }
}

/// curves.png of a run, as d2l's Animator shows training: against the epoch, the training
/// loss, class error and bbox MAE on a log scale (they span decades) on the left, and the
/// validation mAP@0.5 and mAP@[0.5:0.95] from 0 to 1 on the right, each panel with its axes
/// labelled and a legend.
public enum TrainingCurves {
    public static let width = 960, height = 420

    struct Series {
        var name: String
        var color: RGBImage.Color
        var values: [(epoch: Int, value: Double)]
    }

    public static func draw(_ points: [CurvePoint]) -> RGBImage {
        var image = RGBImage(width: width, height: height, fill: .white)
        func series(_ name: String, _ color: RGBImage.Color, _ key: KeyPath<CurvePoint, Double?>) -> Series {
            Series(name: name, color: color, values: points.compactMap { p in p[keyPath: key].map { (p.epoch, $0) } })
        }
        let lastEpoch = max(points.map(\.epoch).max() ?? 1, 2)
        let train = [series("loss", .init(31, 119, 180), \.loss), series("class err", .init(255, 127, 14), \.classError),
                     series("bbox mae", .init(44, 160, 44), \.bboxMAE)]
        let val = [series("val map 0.5", .init(214, 39, 40), \.validationMAP50),
                   series("val map 0.5:0.95", .init(148, 103, 189), \.validationMAP)]
        panel(&image, x: 70, title: "training (log scale)", series: train, epochs: lastEpoch, log: true)
        panel(&image, x: 560, title: "validation map", series: val, epochs: lastEpoch, log: false)
        return image
    }

    /// One plot: a 360 x 300 area at (x, 50) with its axes, ticks, title, legend and lines.
    static func panel(_ image: inout RGBImage, x left: Int, title: String, series: [Series], epochs: Int, log: Bool) {
        let top = 50, w = 360, h = 300, bottom = top + h, right = left + w
        let ink = RGBImage.Color.black, grid = RGBImage.Color(225, 225, 225)
        image.drawText(title.uppercased(), x: left, y: top - 30, color: ink, scale: 2, background: nil)
        // The y range: decades around the values (log), or 0...1.
        let all = series.flatMap { $0.values.map(\.value) }.filter { $0 > 0 && $0.isFinite }
        var lo = 0.0, hi = 1.0
        if log {
            lo = (all.min().map { log10($0) } ?? -3).rounded(.down)
            hi = max((all.max().map { log10($0) } ?? 0).rounded(.up), lo + 1)
        }
        func py(_ v: Double) -> Int {
            let t = log ? (log10(max(v, 1e-30)) - lo) / (hi - lo) : (v - lo) / (hi - lo)
            return bottom - Int((min(max(t, 0), 1) * Double(h)).rounded())
        }
        func px(_ epoch: Int) -> Int { left + Int((Double(epoch - 1) / Double(epochs - 1) * Double(w)).rounded()) }
        // Horizontal grid lines with y labels.
        let yTicks: [Double] = log ? stride(from: lo, through: hi, by: 1).map { pow(10, $0) } : [0, 0.2, 0.4, 0.6, 0.8, 1]
        for v in yTicks {
            let y = py(v)
            image.fillRectangle(x0: left, y0: y, x1: right, y1: y, color: grid)
            let label = log ? "1E\(Int(log10(v).rounded()))" : String(format: "%.1f", v)
            let size = RGBImage.textSize(label, scale: 2)
            image.drawText(label, x: left - size.width - 4, y: y - size.height / 2, color: ink, scale: 2, background: nil)
        }
        // Epoch ticks: about six, at whole epochs.
        let step = max(1, Int((Double(epochs - 1) / 6).rounded(.up)))
        for e in Swift.stride(from: 1, through: epochs, by: step) {
            let x = px(e)
            image.fillRectangle(x0: x, y0: bottom, x1: x, y1: bottom + 5, color: ink)
            let size = RGBImage.textSize("\(e)", scale: 2)
            image.drawText("\(e)", x: x - size.width / 2, y: bottom + 8, color: ink, scale: 2, background: nil)
        }
        let axis = RGBImage.textSize("EPOCH", scale: 2)
        image.drawText("EPOCH", x: left + (w - axis.width) / 2, y: bottom + 30, color: ink, scale: 2, background: nil)
        image.drawRectangle(x0: left, y0: top, x1: right, y1: bottom, color: ink)
        var drawn: [(Int, Int)] = [] // points of the lines, sampled, for the legend's place
        for s in series {
            let points = s.values.map { (px($0.epoch), py($0.value)) }
            for (a, b) in zip(points, points.dropFirst()) {
                line(&image, a, b, s.color)
                for k in 0..<8 { drawn.append((a.0 + (b.0 - a.0) * k / 8, a.1 + (b.1 - a.1) * k / 8)) }
            }
            drawn += points
            for p in points { image.fillRectangle(x0: p.0 - 2, y0: p.1 - 2, x1: p.0 + 2, y1: p.1 + 2, color: s.color) }
        }
        // The legend inside the plot, in the corner that hides the fewest points of the lines
        // (top right when several do equally well).
        let longest = series.map { RGBImage.textSize($0.name.uppercased(), scale: 1).width }.max() ?? 0
        let boxW = longest + 40, boxH = 14 * series.count + 4
        let corners = [(right - 4 - boxW, top + 4), (left + 4, top + 4),
                       (right - 4 - boxW, bottom - 4 - boxH), (left + 4, bottom - 4 - boxH)]
        let hidden = corners.map { c in
            drawn.filter { $0.0 >= c.0 - 3 && $0.0 <= c.0 + boxW + 3 && $0.1 >= c.1 - 3 && $0.1 <= c.1 + boxH + 3 }.count
        }
        let corner = corners[hidden.firstIndex(of: hidden.min()!)!]
        let lx = corner.0 + 6, ly = corner.1 + 4
        image.fillRectangle(x0: lx - 6, y0: ly - 4, x1: lx - 6 + boxW, y1: ly + 14 * series.count, color: .white)
        image.drawRectangle(x0: lx - 6, y0: ly - 4, x1: lx - 6 + boxW, y1: ly + 14 * series.count, color: grid)
        for (i, s) in series.enumerated() {
            let y = ly + 14 * i + 4
            image.fillRectangle(x0: lx, y0: y, x1: lx + 20, y1: y + 2, color: s.color)
            image.drawText(s.name.uppercased(), x: lx + 26, y: y - 3, color: ink, scale: 1, background: nil)
        }
    }

    /// A line two pixels thick from a to b (Bresenham).
    static func line(_ image: inout RGBImage, _ a: (Int, Int), _ b: (Int, Int), _ color: RGBImage.Color) {
        var (x, y) = a
        let dx = abs(b.0 - x), dy = -abs(b.1 - y), sx = x < b.0 ? 1 : -1, sy = y < b.1 ? 1 : -1
        var err = dx + dy
        while true {
            image.fillRectangle(x0: x, y0: y, x1: x + 1, y1: y + 1, color: color)
            if x == b.0 && y == b.1 { return }
            let e2 = 2 * err
            if e2 >= dy { err += dy; x += sx }
            if e2 <= dx { err += dx; y += sy }
        }
    }
}
