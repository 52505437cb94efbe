/// Mean average precision at an IoU threshold, as the SSD paper evaluates (PASCAL VOC):
/// per class, detections of every image sorted by score are matched greedily to unmatched
/// ground-truth boxes with IoU >= threshold; AP is the area under the precision-recall
/// curve with precision made monotone (VOC 2010+ "all points" interpolation); mAP is the
/// mean over classes that have ground truth. Ignored boxes (VOC's "difficult" objects) are
/// neither found nor missed: a detection whose best match is one counts as neither a true
/// nor a false positive.
public struct MeanAveragePrecision {
    public struct Box: Equatable, Sendable {
        public var xmin, ymin, xmax, ymax: Float
        public init(_ xmin: Float, _ ymin: Float, _ xmax: Float, _ ymax: Float) {
            self.xmin = xmin; self.ymin = ymin; self.xmax = xmax; self.ymax = ymax
        }
        var area: Float { max(0, xmax - xmin) * max(0, ymax - ymin) }
        func iou(_ o: Box) -> Float {
            let w = max(0, min(xmax, o.xmax) - max(xmin, o.xmin)), h = max(0, min(ymax, o.ymax) - max(ymin, o.ymin))
            let inter = w * h
            let union = area + o.area - inter
            return union > 0 ? inter / union : 0
        }
    }

    public let iouThreshold: Float
    /// class -> (image, score, box)
    private var detections: [Int: [(image: Int, score: Float, box: Box)]] = [:]
    /// class -> image -> boxes
    private var truths: [Int: [Int: [Box]]] = [:]
    /// class -> image -> ignored boxes
    private var ignored: [Int: [Int: [Box]]] = [:]
    private var images = 0

    public init(iouThreshold: Float = 0.5) { self.iouThreshold = iouThreshold }

    /// Adds one image: its detections (class, score, box), ground truth (class, box) and
    /// objects to ignore (class, box).
    public mutating func add(detections dets: [(cls: Int, score: Float, box: Box)], truth: [(cls: Int, box: Box)],
                             ignoring skip: [(cls: Int, box: Box)] = []) {
        let image = images
        images += 1
        for d in dets { detections[d.cls, default: []].append((image, d.score, d.box)) }
        for t in truth { truths[t.cls, default: [:]][image, default: []].append(t.box) }
        for t in skip { ignored[t.cls, default: [:]][image, default: []].append(t.box) }
    }

    /// Average precision of one class (nil if it has no ground truth).
    public func averagePrecision(ofClass c: Int) -> Double? {
        guard let gt = truths[c] else { return nil }
        let positives = gt.values.map(\.count).reduce(0, +)
        guard positives > 0 else { return nil }
        // Stable order: by score, then image, so ties do not depend on insertion order.
        let dets = (detections[c] ?? []).enumerated().sorted {
            ($0.element.score, -$0.element.image, -$0.offset) > ($1.element.score, -$1.element.image, -$1.offset)
        }.map(\.element)
        var used: [Int: [Bool]] = gt.mapValues { Array(repeating: false, count: $0.count) }
        var tp = 0.0, fp = 0.0
        var precision: [Double] = [], recall: [Double] = []
        for d in dets {
            var best = -1
            var bestIoU: Float = -1
            for (j, b) in (gt[d.image] ?? []).enumerated() {
                let iou = d.box.iou(b)
                if iou > bestIoU { bestIoU = iou; best = j }
            }
            if let skip = ignored[c]?[d.image], let most = skip.map({ d.box.iou($0) }).max(),
               most >= iouThreshold, most > bestIoU {
                continue
            }
            if best >= 0, bestIoU >= iouThreshold, used[d.image]![best] == false {
                used[d.image]![best] = true
                tp += 1
            } else {
                fp += 1
            }
            precision.append(tp / (tp + fp))
            recall.append(tp / Double(positives))
        }
        // Monotone precision envelope, then the area under the step curve.
        var ap = 0.0
        var envelope = 0.0
        var prevRecall = 0.0
        var env = precision
        for i in stride(from: env.count - 1, through: 0, by: -1) {
            envelope = max(envelope, env[i])
            env[i] = envelope
        }
        for i in env.indices {
            ap += (recall[i] - prevRecall) * env[i]
            prevRecall = recall[i]
        }
        return ap
    }

    /// mAP over the classes with ground truth.
    public var mean: Double {
        let aps = truths.keys.sorted().compactMap { averagePrecision(ofClass: $0) }
        return aps.isEmpty ? 0 : aps.reduce(0, +) / Double(aps.count)
    }
}

/// mAP at IoU 0.5 and COCO's mAP@[0.5:0.95] (the mean of the mAPs at IoU 0.5, 0.55, ...,
/// 0.95), from the same detections: it rewards boxes that fit tightly, not only ones that overlap.
public struct COCOMeanAveragePrecision {
    public static let thresholds: [Float] = (0..<10).map { Float(50 + 5 * $0) / 100 }
    public private(set) var byThreshold: [MeanAveragePrecision]

    public init() { byThreshold = Self.thresholds.map { MeanAveragePrecision(iouThreshold: $0) } }

    public mutating func add(detections dets: [(cls: Int, score: Float, box: MeanAveragePrecision.Box)],
                             truth: [(cls: Int, box: MeanAveragePrecision.Box)],
                             ignoring skip: [(cls: Int, box: MeanAveragePrecision.Box)] = []) {
        for i in byThreshold.indices { byThreshold[i].add(detections: dets, truth: truth, ignoring: skip) }
    }

    /// mAP@0.5.
    public var mean50: Double { byThreshold[0].mean }
    /// mAP@[0.5:0.95].
    public var mean: Double { byThreshold.map(\.mean).reduce(0, +) / Double(byThreshold.count) }
}
