#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SSDCompiler
import SSDIO

/// Settings of a training run (written to RUNDIR/settings.json).
public struct TrainSettings: Codable, Equatable, Sendable {
    public var data: String
    public var epochs: Int = 20
    public var batchSize: Int = 32
    public var learningRate: Float = 0.2
    public var weightDecay: Float = 5e-4
    public var seed: UInt64 = 0
    public var threads: Int
    public var model: String
    public var loss: String
    public var initialWeights: String?

    public init(data: String, threads: Int, model: String, loss: String) {
        self.data = data
        self.threads = threads
        self.model = model
        self.loss = loss
    }
}

/// Metrics of one epoch, as the chapter's Accumulator sums them.
public struct EpochMetrics: Sendable {
    public var epoch: Int
    public var loss: Double
    public var classError: Double
    public var bboxMAE: Double
    public var seconds: Double
    /// Of `seconds`, the time spent preparing batches (decoding, converting) on the Swift side.
    public var dataSeconds: Double = 0
    public var examples: Int
    public var examplesPerSecond: Double { Double(examples) / max(seconds, 1e-9) }
}

/// Sums the four numbers the loss kernel reports per batch.
public struct MetricAccumulator: Sendable {
    public var correct = 0.0, anchors = 0.0, absError = 0.0, entries = 0.0, lossSum = 0.0, examples = 0
    public init() {}
    public mutating func add(metrics m: [Double], perExample: [Float]) {
        correct += m[0]; anchors += m[1]; absError += m[2]; entries += m[3]
        lossSum += perExample.reduce(0.0) { $0 + Double($1) }
        examples += perExample.count
    }
    public var classError: Double { anchors > 0 ? 1 - correct / anchors : 0 }
    public var bboxMAE: Double { entries > 0 ? absError / entries : 0 }
    public var meanLoss: Double { examples > 0 ? lossSum / Double(examples) : 0 }
}

/// The training loop of the chapter: shuffled batches through the compiled train step,
/// metrics per epoch, a checkpoint after every epoch, resumable.
public final class Trainer {
    public let model: ResolvedModel
    public let session: ModelSession
    public let data: DetectionDataSet
    public let settings: TrainSettings
    public let runDirectory: String?

    public init(model: ResolvedModel, session: ModelSession, data: DetectionDataSet, settings: TrainSettings, runDirectory: String?) {
        self.model = model
        self.session = session
        self.data = data
        self.settings = settings
        self.runDirectory = runDirectory
    }

    var checkpointPath: String? { runDirectory.map { "\($0)/checkpoint.safetensors" } }
    var metricsPath: String? { runDirectory.map { "\($0)/metrics.csv" } }

    /// The epoch to start from: 1, or the one after RUNDIR's checkpoint when resuming
    /// (whose weights are loaded here).
    public func resume() throws -> Int {
        guard let path = checkpointPath, FileManager.default.fileExists(atPath: path) else {
            throw RuntimeError("--resume: no checkpoint in \(runDirectory ?? "(no --out)")")
        }
        let (tensors, meta) = try SafeTensors.readWithMetadata(path)
        try session.loadStateDict(tensors, source: path)
        guard let e = meta["epoch"].flatMap({ Int($0) }) else { throw RuntimeError("\(path) has no epoch in its metadata") }
        // Keep the metrics rows up to the checkpoint; later ones belong to a lost epoch.
        if let m = metricsPath, let text = try? String(contentsOfFile: m, encoding: .utf8) {
            let rows = text.split(separator: "\n").filter { r in Int(r.split(separator: ",").first ?? "").map { $0 <= e } ?? true }
            try (rows.joined(separator: "\n") + "\n").write(toFile: m, atomically: true, encoding: .utf8)
        }
        return e + 1
    }

    /// Trains epochs `first...settings.epochs`; `report` is called after every batch
    /// (done, total, examples/s) and every epoch.
    public func train(from first: Int = 1, onBatch: (Int, Int, Double, Double) -> Void = { _, _, _, _ in },
                      onEpoch: (EpochMetrics) -> Void = { _ in }) throws -> [EpochMetrics] {
        session.setHyperParameters(learningRate: settings.learningRate, weightDecay: settings.weightDecay)
        let order = EpochOrder(count: data.count, batchSize: settings.batchSize, shuffle: true, seed: settings.seed)
        let g = model.library.manifest.maxBoxes ?? data.maxBoxes
        if let dir = runDirectory {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let e = JSONEncoder()
            e.outputFormatting = [.prettyPrinted, .sortedKeys]
            try e.encode(settings).write(to: URL(fileURLWithPath: "\(dir)/settings.json"), options: .atomic)
            if first == 1 {
                try "epoch,loss,class_err,bbox_mae,seconds,examples_per_sec,data_seconds\n".write(toFile: metricsPath!, atomically: true, encoding: .utf8)
            }
        }
        var history: [EpochMetrics] = []
        guard first <= settings.epochs else { return history }
        for epoch in first...settings.epochs {
            let start = Date()
            var acc = MetricAccumulator()
            var done = 0
            var dataSeconds = 0.0
            for indices in order.batches(epoch: epoch - 1) {
                let t0 = Date()
                let (x, y) = try data.batch(indices: indices, boxesPerImage: g)
                dataSeconds += Date().timeIntervalSince(t0)
                let n = indices.count
                try session.runLossStep("train_step", x: x, y: y, batch: n, data: data, boxes: g, into: &acc)
                done += n
                let elapsed = Date().timeIntervalSince(start)
                onBatch(done, data.count, Double(done) / max(elapsed, 1e-9), elapsed)
            }
            let m = EpochMetrics(epoch: epoch, loss: acc.meanLoss, classError: acc.classError, bboxMAE: acc.bboxMAE,
                                 seconds: Date().timeIntervalSince(start), dataSeconds: dataSeconds, examples: done)
            guard m.loss.isFinite else {
                throw RuntimeError("epoch \(epoch): the loss is \(m.loss); try a smaller --lr (checkpoint of epoch \(epoch - 1) kept)")
            }
            try saveCheckpoint(epoch: epoch)
            if let path = metricsPath {
                let line = String(format: "%d,%.6f,%.6e,%.6e,%.3f,%.2f,%.3f\n", epoch, m.loss, m.classError, m.bboxMAE, m.seconds,
                                  m.examplesPerSecond, m.dataSeconds)
                let h = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
                h.seekToEndOfFile()
                h.write(Data(line.utf8))
                try h.close()
            }
            history.append(m)
            onEpoch(m)
        }
        return history
    }

    func saveCheckpoint(epoch: Int) throws {
        guard let path = checkpointPath else { return }
        try SafeTensors.write(session.stateDict(), metadata: ["epoch": String(epoch), "model": model.graph.name,
                                                               "format": "pytorch state_dict (TinySSD)"], to: path)
    }
}

/// Evaluation on a split: the eval-mode loss metrics (class err, bbox mae) and, from the
/// detections, mean average precision at IoU 0.5.
public enum Evaluator {
    public struct Result: Sendable {
        public var metrics: MetricAccumulator
        public var meanAP: Double
        public var averagePrecisions: [Int: Double]
    }

    public static func evaluate(_ session: ModelSession, data: DetectionDataSet, batchSize: Int, maxBoxes g: Int) throws -> Result {
        var acc = MetricAccumulator()
        var map = MeanAveragePrecision(iouThreshold: 0.5)
        let order = EpochOrder(count: data.count, batchSize: batchSize, shuffle: false)
        for indices in order.batches(epoch: 0) {
            let (x, y) = try data.batch(indices: indices, boxesPerImage: g)
            let n = indices.count
            try session.runLossStep("eval_step", x: x, y: y, batch: n, data: data, boxes: g, into: &acc)
            // A model whose outputs overflow still "classifies" every anchor; its class
            // error would look like a number, so a non-finite loss fails the evaluation.
            for (what, value) in [("loss", acc.meanLoss), ("bbox mae", acc.bboxMAE)] where !value.isFinite {
                throw RuntimeError("evaluating on \(data.labelFile) gave a non-finite \(what) (\(value)): the model's outputs overflow")
            }
            let det = try session.run("infer", inputs: ["X": HostTensor(floats: x, shape: [n, 3, data.height, data.width])],
                                      outputs: ["detection"])["detection"]!
            let rows = det.floats, a = det.shape[1]
            for i in 0..<n {
                var dets: [(cls: Int, score: Float, box: MeanAveragePrecision.Box)] = []
                for r in 0..<a {
                    let o = (i * a + r) * 6
                    guard rows[o] >= 0 else { continue }
                    dets.append((Int(rows[o]), rows[o + 1], .init(rows[o + 2], rows[o + 3], rows[o + 4], rows[o + 5])))
                }
                var truth: [(cls: Int, box: MeanAveragePrecision.Box)] = []
                for b in 0..<g {
                    let o = (i * g + b) * 5
                    guard y[o] >= 0 else { continue }
                    truth.append((Int(y[o]), .init(y[o + 1], y[o + 2], y[o + 3], y[o + 4])))
                }
                map.add(detections: dets, truth: truth)
            }
        }
        let classes = Set((0..<data.classCount))
        var aps: [Int: Double] = [:]
        for c in classes { if let ap = map.averagePrecision(ofClass: c) { aps[c] = ap } }
        return Result(metrics: acc, meanAP: map.mean, averagePrecisions: aps)
    }
}

extension ModelSession {
    /// Runs a program that labels anchors and computes the loss (train_step or eval_step)
    /// on a batch of `data`, adding its metrics to `acc`.
    func runLossStep(_ program: String, x: [Float], y: [Float], batch n: Int, data: DetectionDataSet, boxes g: Int,
                     into acc: inout MetricAccumulator) throws {
        let out = try run(program, inputs: [
            "X": HostTensor(floats: x, shape: [n, 3, data.height, data.width]),
            "Y": HostTensor(floats: y, shape: [n, g, 5]),
        ], outputs: ["metrics", "loss.per_example"])
        acc.add(metrics: out["metrics"]!.doubles, perExample: out["loss.per_example"]!.floats)
    }
}

extension HostTensor {
    /// Values as doubles (F64 tensors exactly).
    public var doubles: [Double] {
        if dtype == .f64 {
            return bytes.withUnsafeBytes { Array($0.bindMemory(to: Double.self)) }
        }
        return floats.map(Double.init)
    }
}
