import Foundation
import SSDCompiler
import SSDDriver
import SSDIO
import SSDRuntime

extension Run {
    /// Trains in one process, or under mpirun as one rank of a data-parallel run (every rank
    /// reads the data set at --data; rank 0 alone writes the run folder and the log).
    func train() throws {
        let parallel = try DataParallel.joinIfLaunched(syncBatchNorm: syncBn, shim: Toolchain.mpiShim)
        try train(parallel)
        parallel?.finish()
    }

    private func train(_ parallel: DataParallel?) throws {
        let isRoot = parallel?.isRoot ?? true
        let print: (String) -> Void = { if isRoot { Swift.print($0) } }
        let root = try dataRoot()
        let data = try DetectionDataSet.load(root: root, split: .train)
        // The validation split, when there is one, is evaluated after every epoch.
        let validation = DetectionDataSet.hasSplit(root: root, .val) ? try DetectionDataSet.load(root: root, split: .val) : nil
        if let validation, validation.height != data.height || validation.width != data.width {
            throw RuntimeError("\(validation.location): images are \(validation.width)x\(validation.height), the training images \(data.width)x\(data.height)")
        }
        let loss = lossOptions.config
        // The class count comes from the model, built for the data set's classes.txt (else
        // its own default: one class for the built-in TinySSD), never from the largest
        // label, so a label typo is an error at its line instead of a silently larger model.
        let m = try ModelResolver.resolve(modelOptions.model, size: try modelOptions.parsedSize() ?? (data.height, data.width),
                                          numClasses: data.classNames?.count,
                                          training: .init(loss: loss), lossFromModel: !lossOptions.isSet)
        try data.validate(classCount: m.numClasses, of: "model \(m.graph.name)")
        m.library.setThreads(threadCount)
        try parallel?.attach(m.library)
        let session = ModelSession(library: m.library)
        let runDir = isRoot ? try runDirectory() : ""
        let usedLoss = m.library.manifest.loss ?? loss.summary
        // Recorded as an absolute path, so that a resume from another folder compares the same data.
        var settings = TrainSettings(data: URL(fileURLWithPath: root).standardizedFileURL.path, threads: threadCount,
                                     model: modelOptions.model ?? "built-in tinyssd", loss: usedLoss)
        settings.epochs = epochs; settings.batchSize = batchSize; settings.learningRate = lr; settings.weightDecay = wd
        settings.seed = seed; settings.initialWeights = weights
        settings.augmentation = trainingOptions.augmentation; settings.lrSchedule = trainingOptions.schedule
        settings.ema = trainingOptions.ema
        if parallel != nil { settings.syncBatchNorm = syncBn }
        let trainer = Trainer(model: m, session: session, data: data, settings: settings, runDirectory: isRoot ? runDir : nil)
        trainer.parallel = parallel
        trainer.validation = validation
        var first = 1
        if resume && isRoot {
            first = try trainer.resume(allowingChangedSettings: allowChangedSettings)
            if first <= epochs {
                print(first == 1 ? "resuming \(runDir) at epoch 1 (it stopped before its first checkpoint)" : "resuming \(runDir) at epoch \(first)")
            }
        }
        // Rank 0 read the run folder; every rank starts from its epoch (and, below, its weights).
        if let parallel { first = parallel.fromRoot(first) }
        guard first <= epochs else {
            print("nothing to do: \(runDir) has finished \(first - 1) epochs and --epochs is \(epochs); the run is kept as it is")
            return
        }
        if first == 1 && isRoot {
            if let weights {
                try session.loadStateDict(try SafeTensors.read(weights), source: weights)
            } else {
                session.initializeParameters(seed: seed, graph: m.graph)
            }
        }
        parallel?.broadcastParameters(session)
        defer { fflush(nil) }
        let ranks = parallel.map { ", \($0.size) ranks\(syncBn ? " with sync-bn" : "")" } ?? ""
        print("training \(m.graph.name) on \(data.count) images of \(root) (\(epochs) epochs, batch \(batchSize), lr \(lr), wd \(wd), \(threadCount) threads\(ranks), \(usedLoss))")
        print("augmentation: \(settings.augmentation?.summary ?? "none"); lr schedule: \((settings.lrSchedule ?? LRSchedule()).summary)"
              + (settings.ema.map { "; weights averaged (decay \($0)), validated and saved as such" } ?? ""))
        let progress = ProgressLine(enabled: isRoot)
        let start = Date()
        let history = try trainer.train(from: first, onStart: {
            guard isRoot && trainingOptions.saveAugmented > 0 else { return }
            try saveAugmented(data: data, settings: settings, size: m.inputSize, count: trainingOptions.saveAugmented, to: runDir + "/augmented")
        }, onBatch: { done, total, rate, elapsed in
            progress.update(done: done, total: total, rate: rate, elapsed: elapsed)
        }, onEpoch: { e in
            progress.clear()
            let validation = e.validationMAP50.map { String(format: ", val mAP@0.5 %.4f, mAP@[0.5:0.95] %.4f", $0, e.validationMAP ?? 0) } ?? ""
            print(String(format: "epoch %d, class err %.2e, bbox mae %.2e, time %.1f sec, loss %.4f",
                         e.epoch, e.classError, e.bboxMAE, e.seconds, e.loss) + validation)
            fflush(nil)  // a log file shows each epoch as it ends
        })
        guard let last = history.last else { return }
        let examples = history.map(\.examples).reduce(0, +)
        let seconds = history.map(\.seconds).reduce(0, +)
        print(String(format: "class err %.2e, bbox mae %.2e", last.classError, last.bboxMAE))
        print(String(format: "%.1f examples/sec on cpu (%d threads%@)", Double(examples) / seconds, threadCount, ranks))
        if let parallel { print("all \(parallel.size) ranks hold the same parameters (checked after every epoch)") }
        let averaged = settings.ema == nil ? "" : ", averaged weights: \(runDir)/checkpoint-ema.safetensors"
        print("checkpoint: \(runDir)/checkpoint.safetensors\(averaged), metrics: \(runDir)/metrics.csv (\(String(format: "%.1f", Date().timeIntervalSince(start))) s)")
    }

    /// Writes the first `count` images of the data set as epoch 1 gives them to the model
    /// (augmented with the run's seed, resized to its input), labels drawn, as PNGs in `folder`.
    func saveAugmented(data: DetectionDataSet, settings: TrainSettings, size: (height: Int, width: Int),
                       count: Int, to folder: String) throws {
        let g = max(1, data.maxBoxes), n = min(count, data.count)
        let source = TrainBatchSource(data: data, augmentation: settings.augmentation, seed: settings.seed, boxesPerImage: g, size: size)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let plane = 3 * size.height * size.width, w = Float(size.width), h = Float(size.height)
        func name(_ label: Int) -> String { data.classNames.flatMap { label < $0.count ? $0[label] : nil } ?? "\(label)" }
        for start in stride(from: 0, to: n, by: 32) {
            let indices = Array(start..<min(start + 32, n))
            let (x, y) = try source.batch(indices: indices, epoch: 0)
            for (k, i) in indices.enumerated() {
                var image = x.withUnsafeBufferPointer { RGBImage(chwFloats: $0.baseAddress! + k * plane, width: size.width, height: size.height) }
                for o in stride(from: k * g * 5, to: (k + 1) * g * 5, by: 5) where y[o] >= 0 {
                    image.drawLabeledBox(x0: Int((y[o + 1] * w).rounded()), y0: Int((y[o + 2] * h).rounded()),
                                         x1: Int((y[o + 3] * w).rounded()) - 1, y1: Int((y[o + 4] * h).rounded()) - 1,
                                         label: name(Int(y[o])), color: .cyan, thickness: 1)
                }
                try image.savePNG(to: folder + String(format: "/%05d.png", i))
            }
        }
        Swift.print("wrote \(n) augmented training images to \(folder)")
    }

    /// The run folder: --out; else, for a new run, a new folder runs/DATE-TIME that
    /// runs/latest then points to (so running the main job twice keeps both runs), and for
    /// --resume, runs/latest.
    func runDirectory() throws -> String {
        if let out { return out }
        let latest = "runs/latest"
        if resume { return latest }
        try FileManager.default.createDirectory(atPath: "runs", withIntermediateDirectories: true)
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.dateFormat = "yyyyMMdd-HHmmss"
        let stamp = f.string(from: Date())
        var name = stamp
        var n = 1
        while mkdir("runs/\(name)", 0o755) != 0 {  // claims the name, even against another ssdc
            guard errno == EEXIST else {
                throw RuntimeError("cannot create the run folder runs/\(name): \(String(cString: strerror(errno)))")
            }
            n += 1
            name = "\(stamp)-\(n)"
        }
        // runs/latest -> DATE-TIME, replaced atomically; a real folder of that name (from an
        // older ssdc) is left alone.
        var isDirectory: ObjCBool = false
        let isLink = (try? FileManager.default.destinationOfSymbolicLink(atPath: latest)) != nil
        if isLink || !FileManager.default.fileExists(atPath: latest, isDirectory: &isDirectory) {
            let tmp = "runs/.latest.tmp-\(getpid())"
            unlink(tmp)
            if symlink(name, tmp) != 0 || rename(tmp, latest) != 0 { unlink(tmp) }
        }
        print("run folder: runs/\(name) (runs/latest)")
        return "runs/\(name)"
    }
}
