#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SSDABI
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
    /// The data augmentation (`--augment ssd` and its options); nil: none, as the chapter trains.
    public var augmentation: AugmentOptions?
    /// The learning-rate schedule; nil: constant, as the chapter trains.
    public var lrSchedule: LRSchedule?
    /// Under mpirun: whether BatchNorm used the statistics of the whole global batch
    /// (--sync-bn); nil in one process. The rank count is not a setting: a run may resume
    /// on any number of ranks.
    public var syncBatchNorm: Bool?
    /// --ema: the decay of the average of the weights kept beside them, which validation
    /// uses and checkpoint-ema.safetensors holds; nil: none (the chapter's).
    public var ema: Float?
    /// Settings changed on resuming (--allow-changed-settings), oldest first; nil for a
    /// run that kept its settings.
    public var changes: [SettingsChange]?

    public init(data: String, threads: Int, model: String, loss: String) {
        self.data = data
        self.threads = threads
        self.model = model
        self.loss = loss
    }
}

/// A change of a run's settings, made when resuming it.
public struct SettingsChange: Codable, Equatable, Sendable {
    /// The first epoch trained with the changed settings.
    public var fromEpoch: Int
    /// One line per option, as `TrainSettings.differences(from:)` words them.
    public var differences: [String]
}

/// Metrics of one epoch, as the chapter's Accumulator sums them.
public struct EpochMetrics: Sendable {
    public var epoch: Int
    public var loss: Double
    public var classError: Double
    public var bboxMAE: Double
    public var seconds: Double
    /// Of `seconds`, the time the train steps waited for their batches: the decoding,
    /// augmenting and packing that the pipeline did not hide behind the previous step.
    public var dataSeconds: Double = 0
    public var examples: Int
    /// The learning rate of the epoch's last step.
    public var learningRate: Double?
    /// mAP@0.5 and mAP@[0.5:0.95] on the validation split after the epoch (nil without one).
    public var validationMAP50: Double?
    public var validationMAP: Double?
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
///
/// A run folder belongs to one run: a new run starts only in an empty folder, a resumed one
/// only with the settings it recorded (unless changes are allowed, and then recorded), and
/// the folder is locked while training. Training stops at the first non-finite loss or
/// parameter, so every checkpoint written holds finite weights.
public final class Trainer {
    public let model: ResolvedModel
    public let session: ModelSession
    public let data: DetectionDataSet
    public let settings: TrainSettings
    public let runDirectory: String?
    /// The validation split, evaluated after every epoch (mAP@0.5 and mAP@[0.5:0.95]) when set.
    public var validation: DetectionDataSet?

    /// The ranks of a data-parallel run (nil: one process). Only rank 0 should be given a
    /// run folder: it alone writes settings, metrics and checkpoints.
    public var parallel: DataParallel?

    /// The locked run folder, from `resume` or `train` until `train` ends.
    private var run: RunDirectory?
    /// Set by `resume`: the metrics kept and the settings to record at the first epoch's end.
    private var resumed: (metrics: MetricsLog, settings: TrainSettings?)?
    /// Set by `resume` in a run with --ema: the average's checkpoint and its update count.
    private var resumedAverage: (tensors: [String: HostTensor], source: String, updates: Int)?
    /// The average of the weights (--ema) while training.
    private var average: ParameterAverage?

    public init(model: ResolvedModel, session: ModelSession, data: DetectionDataSet, settings: TrainSettings, runDirectory: String?) {
        self.model = model
        self.session = session
        self.data = data
        self.settings = settings
        self.runDirectory = runDirectory
    }

    var checkpointPath: String? { runDirectory.map { "\($0)/checkpoint.safetensors" } }
    /// With --ema: the averaged weights, written beside the checkpoint after every epoch.
    public var averagePath: String? { runDirectory.map { "\($0)/checkpoint-ema.safetensors" } }

    private func openRun() throws -> RunDirectory? {
        guard let dir = runDirectory else { return nil }
        if let run { return run }
        run = try RunDirectory(path: dir)
        return run
    }

    /// Unlocks the run folder (also done when `train` ends).
    public func close() {
        run?.release()
        run = nil
    }

    /// The epoch to start from when resuming RUNDIR: the one after its checkpoint (whose
    /// weights are loaded here), or 1 when the run stopped before its first checkpoint (the
    /// caller then initialises the weights as for a new run). A result beyond
    /// `settings.epochs` means the run has nothing left to do; nothing is loaded or changed.
    /// Settings that differ from the run's are an error unless `allowingChangedSettings`,
    /// and then are recorded in settings.json when the next epoch ends.
    public func resume(allowingChangedSettings: Bool = false) throws -> Int {
        guard let run = try openRun() else { throw RuntimeError("--resume needs the run folder (--out)") }
        let recorded = try run.readSettings()
        let hasCheckpoint = FileManager.default.fileExists(atPath: run.checkpointPath)
        guard recorded != nil || hasCheckpoint else {
            throw RuntimeError("--resume: \(run.path) holds no run (no settings.json, no checkpoint.safetensors); start it without --resume")
        }
        let differences = recorded.map { settings.differences(from: $0) }
            ?? ["\(run.settingsPath) is missing, so the settings cannot be compared"]
        if !differences.isEmpty && !allowingChangedSettings {
            throw RuntimeError("--resume: \(run.path) was trained with other settings:\n  " + differences.joined(separator: "\n  ")
                               + "\npass the run's values, or --allow-changed-settings to continue with these (the change is recorded in settings.json)")
        }
        let epoch = hasCheckpoint ? try checkpointEpoch(run, limit: recorded?.epochs) : 0
        guard epoch < settings.epochs else { return epoch + 1 }
        if hasCheckpoint {
            try session.loadStateDict(try SafeTensors.read(run.checkpointPath), source: run.checkpointPath)
            if settings.ema != nil { try readAverage(epoch: epoch, runHadOne: recorded?.ema != nil) }
        }
        // Keep the metrics rows up to the checkpoint; later ones belong to a lost epoch.
        let text = FileManager.default.fileExists(atPath: run.metricsPath) ? try readText(run.metricsPath) : ""
        var record = settings
        record.changes = recorded?.changes
        if !differences.isEmpty { record.changes = (record.changes ?? []) + [SettingsChange(fromEpoch: epoch + 1, differences: differences)] }
        resumed = (MetricsLog(text: text, upToEpoch: epoch), record == recorded ? nil : record)
        return epoch + 1
    }

    /// The average of a resumed --ema run: checkpoint-ema.safetensors of the same epoch as
    /// the checkpoint, with its update count. A run that kept no average (--ema added on
    /// resuming) starts one from the checkpoint's weights.
    private func readAverage(epoch: Int, runHadOne: Bool) throws {
        guard let path = averagePath else { return }
        guard FileManager.default.fileExists(atPath: path) else {
            if runHadOne { throw RuntimeError("--resume: \(path) is missing; the run keeps an average of its weights (--ema) there") }
            return
        }
        let (tensors, meta) = try SafeTensors.readWithMetadata(path)
        guard meta["epoch"] == String(epoch) else {
            throw RuntimeError("--resume: \(path) is of epoch \(meta["epoch"] ?? "none"), the checkpoint of epoch \(epoch)")
        }
        guard let text = meta["ema_updates"], let updates = Int(text), updates >= 0 else {
            throw RuntimeError("--resume: \(path) has no update count (ema_updates) in its metadata")
        }
        resumedAverage = (tensors, path, updates)
    }

    /// The epoch in the checkpoint's metadata: an integer from 1 to the run's epochs
    /// (`limit`, from settings.json) or, without settings, to a bound no run reaches.
    private func checkpointEpoch(_ run: RunDirectory, limit: Int?) throws -> Int {
        let meta = try SafeTensors.readWithMetadata(run.checkpointPath).metadata
        let bound = limit ?? 1_000_000_000
        guard let text = meta["epoch"] else { throw RuntimeError("\(run.checkpointPath) has no epoch in its metadata") }
        guard let e = Int(text), e >= 1, e <= bound else {
            throw RuntimeError("\(run.checkpointPath): its metadata epoch \"\(text)\" is not an epoch of the run (an integer from 1 to \(bound))")
        }
        return e
    }

    private func readText(_ path: String) throws -> String {
        do {
            return try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw RuntimeError("cannot read \(path): \(error.localizedDescription)")
        }
    }

    /// Trains epochs `first...settings.epochs`; `onBatch` is called after every batch
    /// (done, total, examples/s, seconds) and `onEpoch` after every epoch. Without a prior
    /// `resume`, a run folder must be empty; the folder is locked until training ends.
    /// `onStart` runs once the run folder is set up, before the first batch.
    public func train(from first: Int = 1, onStart: () throws -> Void = {}, onBatch: (Int, Int, Double, Double) -> Void = { _, _, _, _ in },
                      onEpoch: (EpochMetrics) -> Void = { _ in }) throws -> [EpochMetrics] {
        defer { close() }
        guard first <= settings.epochs else { return [] }
        let order = EpochOrder(count: data.count, batchSize: settings.batchSize, shuffle: true, seed: settings.seed)
        // Label rows per image: a run-time dimension of the step, so the data decides it.
        let g = max(1, data.maxBoxes)
        var metrics = MetricsLog()
        var pendingSettings: TrainSettings?
        if let run = try openRun() {
            if let resumed {
                metrics = resumed.metrics
                pendingSettings = resumed.settings
            } else {
                try run.requireEmpty()
                try run.writeSettings(settings)
                try metrics.write(to: run.metricsPath)
            }
        }
        try settings.checkEncodable()
        try onStart()
        let source = TrainBatchSource(data: data, augmentation: settings.augmentation, seed: settings.seed, boxesPerImage: g,
                                      size: model.inputSize)
        let schedule = settings.lrSchedule ?? LRSchedule()
        // The next batches are made while the current one trains (across epoch ends too);
        // their order is the epochs' own.
        // Across K ranks, a last batch of fewer than K examples is left out (a rank cannot take
        // a step on no examples); each rank makes only its part of every batch.
        let ranks = parallel?.size ?? 1
        let parallel = self.parallel
        func epochBatches(_ epoch: Int) -> [[Int]] { order.batches(epoch: epoch - 1).filter { $0.count >= ranks } }
        let perEpoch = epochBatches(first).count
        let pipeline = BatchPipeline(count: (settings.epochs - first + 1) * perEpoch) { k in
            let epoch = first + k / perEpoch
            let indices = epochBatches(epoch)[k % perEpoch]
            return try source.batch(indices: Array(parallel?.part(of: indices) ?? indices[...]), epoch: epoch - 1)
        }
        defer { pipeline.stop() }
        if let decay = settings.ema {
            // Every rank keeps the average, as rank 0 holds it.
            let updates = parallel.map { $0.fromRoot(resumedAverage?.updates ?? 0) } ?? (resumedAverage?.updates ?? 0)
            var a = ParameterAverage(of: session, decay: decay, updates: updates)
            if let r = resumedAverage { try a.load(r.tensors, source: r.source, into: session) }
            if let parallel { a.withAverage(in: session) { parallel.broadcastParameters(session) } }
            average = a
        }
        defer { average = nil; resumedAverage = nil }
        var history: [EpochMetrics] = []
        for epoch in first...settings.epochs {
            let start = Date()
            var acc = MetricAccumulator()
            var done = 0
            var dataSeconds = 0.0
            var rate = settings.learningRate
            let batches = epochBatches(epoch)
            for (b, indices) in batches.enumerated() {
                let t0 = Date()
                let (x, y) = try pipeline.next()
                dataSeconds += Date().timeIntervalSince(t0)
                rate = schedule.rate(base: settings.learningRate, step: (epoch - 1) * batches.count + b,
                                     stepsPerEpoch: batches.count, epochs: settings.epochs)
                session.setHyperParameters(learningRate: rate, weightDecay: settings.weightDecay)
                let mine = parallel?.part(of: indices).count ?? indices.count
                try parallel?.setShare(session.library, local: mine, global: indices.count)
                var step = MetricAccumulator()
                try session.runLossStep("train_step", x: x, y: y, batch: mine, size: model.inputSize, boxes: g, into: &step)
                if let parallel {
                    step = parallel.sum(step)
                    parallel.averageRunningStatistics(session)
                }
                acc.add(step)
                try checkFinite(epoch: epoch, batch: b + 1, of: batches.count, lossSum: acc.lossSum)
                average?.update(from: session)
                done += indices.count
                let elapsed = Date().timeIntervalSince(start)
                onBatch(done, data.count, Double(done) / max(elapsed, 1e-9), elapsed)
            }
            try parallel?.requireSameParameters(session, epoch: epoch)
            var m = EpochMetrics(epoch: epoch, loss: acc.meanLoss, classError: acc.classError, bboxMAE: acc.bboxMAE,
                                 seconds: Date().timeIntervalSince(start), dataSeconds: dataSeconds, examples: done)
            m.learningRate = Double(rate)
            if let validation {
                // (with --ema, of the averaged weights)
                let evaluate = {
                    try Evaluator.evaluate(self.session, data: validation, batchSize: self.settings.batchSize,
                                           maxBoxes: max(1, validation.maxBoxes), size: self.model.inputSize, parallel: parallel)
                }
                let r = try average != nil ? average!.withAverage(in: session, evaluate) : evaluate()
                m.validationMAP50 = r.meanAP
                m.validationMAP = r.meanAPCOCO
            }
            if let run {
                // Metrics before the checkpoint: a crash in between leaves a row that the
                // next resume drops and recomputes, never an epoch without its row.
                if let s = pendingSettings { try run.writeSettings(s); pendingSettings = nil }
                metrics.append(m)
                try metrics.write(to: run.metricsPath)
                try TrainingCurves.draw(metrics.points).savePNG(to: run.curvesPath)
                try saveCheckpoint(epoch: epoch)
            }
            history.append(m)
            onEpoch(m)
        }
        return history
    }

    /// Stops training when a batch's loss or any parameter after its step is NaN or
    /// infinite: the run has diverged, and a checkpoint of it would be useless.
    private func checkFinite(epoch: Int, batch: Int, of batches: Int, lossSum: Double) throws {
        let problem: String
        if !lossSum.isFinite {
            problem = "the loss is \(lossSum)"
        } else if let name = session.firstNonFiniteParameter() {
            problem = "parameter \(name) is not finite after the step"
        } else {
            return
        }
        let kept = runDirectory.map { epoch > 1 ? "; the checkpoint of epoch \(epoch - 1) in \($0) is kept" : "; no checkpoint was written" } ?? ""
        throw RuntimeError("epoch \(epoch), batch \(batch) of \(batches): \(problem); training stopped, try a smaller --lr\(kept)")
    }

    func saveCheckpoint(epoch: Int) throws {
        guard let path = checkpointPath else { return }
        let meta = ["epoch": String(epoch), "model": model.graph.name, "num_classes": String(model.numClasses),
                    "format": "pytorch state_dict"]
        try SafeTensors.write(session.stateDict(), metadata: meta, to: path)
        // The average after the checkpoint: a crash in between leaves an average of the
        // epoch before, which resuming reports rather than uses.
        if average != nil, let averagePath {
            let tensors = average!.withAverage(in: session) { session.stateDict() }
            try SafeTensors.write(tensors, metadata: meta.merging(["ema_decay": "\(average!.decay)",
                                                                   "ema_updates": String(average!.updates)]) { $1 },
                                  to: averagePath)
        }
    }
}

/// Evaluation on a split: the eval-mode loss metrics (class err, bbox mae) and, from the
/// detections, mean average precision at IoU 0.5 and COCO's mAP@[0.5:0.95]; with a
/// `transform`, on the split's images (and labels) transformed by it. Detected boxes are
/// clipped to the picture (`detectionBoxInPicture`). Objects the transform
/// cuts off at their centre are ignored, as VOC ignores its "difficult" ones (the result also
/// gives the figures with them as background).
public enum Evaluator {
    public struct Result: Sendable {
        public var metrics: MetricAccumulator
        /// mAP@0.5.
        public var meanAP: Double
        /// mAP@[0.5:0.95].
        public var meanAPCOCO: Double
        public var averagePrecisions: [Int: Double]
        /// Objects the transform cut off at their centre (ignored by the figures above).
        public var cutObjects = 0
        /// With cut objects: mAP@0.5 and mAP@[0.5:0.95] with them counted as background
        /// instead (a detection of one is a false positive), as crops label them for training.
        public var cutAsBackground: (meanAP: Double, meanAPCOCO: Double)?
    }

    /// `size`: the model's input (height, width); nil: the data set's. Images of another
    /// size are resized to it.
    public static func evaluate(_ session: ModelSession, data: DetectionDataSet, batchSize: Int, maxBoxes g: Int,
                                transform: ImageTransform? = nil, size: (height: Int, width: Int)? = nil,
                                parallel: DataParallel? = nil) throws -> Result {
        let (h, w) = size ?? (data.height, data.width)
        var acc = MetricAccumulator()
        // Per image: kept detection rows (class, score, box) and ground-truth rows (class, box).
        var detections = [[Float]](repeating: [], count: data.count), truths = [[Float]](repeating: [], count: data.count)
        let order = EpochOrder(count: data.count, batchSize: batchSize, shuffle: false)
        for batch in order.batches(epoch: 0) {
            // Under mpirun each rank evaluates its part of every batch.
            let indices = parallel.map { Array($0.part(of: batch)) } ?? batch
            guard !indices.isEmpty else { continue }
            let (x, y) = try transform.map { try $0.batch(data, indices: indices, boxesPerImage: g, size: (h, w)) }
                ?? data.batch(indices: indices, boxesPerImage: g, size: (h, w))
            let n = indices.count
            try session.runLossStep("eval_step", x: x, y: y, batch: n, size: (h, w), boxes: g, into: &acc)
            let det = try session.run("infer", inputs: ["X": HostTensor(floats: x, shape: [n, 3, h, w])],
                                      outputs: ["detection"])["detection"]!
            let rows = det.floats, a = det.shape[1]
            for (i, image) in indices.enumerated() {
                for r in 0..<a where rows[(i * a + r) * 6] >= 0 { detections[image] += rows[((i * a + r) * 6)..<((i * a + r) * 6 + 6)] }
                for b in 0..<g where y[(i * g + b) * 5] >= 0 { truths[image] += y[((i * g + b) * 5)..<((i * g + b) * 5 + 5)] }
            }
        }
        if let parallel {
            acc = parallel.sum(acc)
            detections = parallel.gather(detections)
            truths = parallel.gather(truths)
        }
        // A model whose outputs overflow still "classifies" every anchor; its class error
        // would look like a number, so a non-finite loss fails the evaluation.
        for (what, value) in [("loss", acc.meanLoss), ("bbox mae", acc.bboxMAE)] where !value.isFinite {
            throw RuntimeError("evaluating on \(data.labelFile) gave a non-finite \(what) (\(value)): the model's outputs overflow")
        }
        // `strict` (cut objects as background) only where a transform may cut some.
        var map = COCOMeanAveragePrecision(), strict = transform.map { _ in COCOMeanAveragePrecision() }
        var cutObjects = 0
        for image in 0..<data.count {
            let d = detections[image], t = truths[image]
            let dets: [(cls: Int, score: Float, box: MeanAveragePrecision.Box)] = stride(from: 0, to: d.count, by: 6).map {
                let b = detectionBoxInPicture(d[($0 + 2)..<($0 + 6)])
                return (Int(d[$0]), d[$0 + 1], .init(b[0], b[1], b[2], b[3]))
            }
            let truth: [(cls: Int, box: MeanAveragePrecision.Box)] = stride(from: 0, to: t.count, by: 5).map {
                (Int(t[$0]), .init(t[$0 + 1], t[$0 + 2], t[$0 + 3], t[$0 + 4]))
            }
            let cut: [(cls: Int, box: MeanAveragePrecision.Box)] = (transform?.cutBoxes(data, index: image) ?? []).map {
                ($0.label, .init($0.xmin, $0.ymin, $0.xmax, $0.ymax))
            }
            cutObjects += cut.count
            map.add(detections: dets, truth: truth, ignoring: cut)
            strict?.add(detections: dets, truth: truth)
        }
        let classes = Set((0..<data.classCount))
        var aps: [Int: Double] = [:]
        for c in classes { if let ap = map.byThreshold[0].averagePrecision(ofClass: c) { aps[c] = ap } }
        return Result(metrics: acc, meanAP: map.mean50, meanAPCOCO: map.mean, averagePrecisions: aps, cutObjects: cutObjects,
                      cutAsBackground: cutObjects > 0 ? strict.map { ($0.mean50, $0.mean) } : nil)
    }
}

extension ModelSession {
    /// Runs a program that labels anchors and computes the loss (train_step or eval_step)
    /// on a batch of `data`, adding its metrics to `acc`.
    func runLossStep(_ program: String, x: [Float], y: [Float], batch n: Int, size: (height: Int, width: Int), boxes g: Int,
                     into acc: inout MetricAccumulator) throws {
        let out = try run(program, inputs: [
            "X": HostTensor(floats: x, shape: [n, 3, size.height, size.width]),
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
