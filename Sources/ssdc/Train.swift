import Foundation
import SSDIO
import SSDRuntime

extension Run {
    func train() throws {
        let root = try dataRoot()
        let data = try DetectionDataSet.load(root: root, split: .train)
        let (h, w) = try modelOptions.parsedSize()
        guard data.height == h, data.width == w else {
            throw RuntimeError("\(root): images are \(data.width)x\(data.height); pass --input-size \(data.height)x\(data.width)")
        }
        // The validation split, when there is one, is evaluated after every epoch.
        let hasValidation = FileManager.default.fileExists(atPath: "\(root)/\(DetectionDataSet.Split.val.directoryName)/label.csv")
        let validation = hasValidation ? try DetectionDataSet.load(root: root, split: .val) : nil
        if let validation, validation.height != h || validation.width != w {
            throw RuntimeError("\(validation.directory): images are \(validation.width)x\(validation.height), the training images \(w)x\(h)")
        }
        let loss = lossOptions.config
        // The class count comes from the model (the built-in one: from the data set's
        // classes.txt, else one class), never from the largest label, so a label typo is an
        // error at its line instead of a silently larger model.
        let m = try ModelResolver.resolve(modelOptions.model, height: h, width: w, numClasses: data.classNames?.count ?? 1,
                                          training: .init(maxBoxes: max(1, data.maxBoxes, validation?.maxBoxes ?? 0), loss: loss), lossFromModel: !lossOptions.isSet)
        try data.validate(classCount: m.numClasses, of: "model \(m.graph.name)")
        m.library.setThreads(threadCount)
        let session = ModelSession(library: m.library)
        let runDir = try runDirectory()
        let usedLoss = m.library.manifest.loss ?? loss.summary
        // Recorded as an absolute path, so that a resume from another folder compares the same data.
        var settings = TrainSettings(data: URL(fileURLWithPath: root).standardizedFileURL.path, threads: threadCount,
                                     model: modelOptions.model ?? "built-in tinyssd", loss: usedLoss)
        settings.epochs = epochs; settings.batchSize = batchSize; settings.learningRate = lr; settings.weightDecay = wd
        settings.seed = seed; settings.initialWeights = weights
        settings.augmentation = trainingOptions.augmentation; settings.lrSchedule = trainingOptions.schedule
        let trainer = Trainer(model: m, session: session, data: data, settings: settings, runDirectory: runDir)
        trainer.validation = validation
        var first = 1
        if resume {
            first = try trainer.resume(allowingChangedSettings: allowChangedSettings)
            guard first <= epochs else {
                print("nothing to do: \(runDir) has finished \(first - 1) epochs and --epochs is \(epochs); the run is kept as it is")
                return
            }
            print(first == 1 ? "resuming \(runDir) at epoch 1 (it stopped before its first checkpoint)" : "resuming \(runDir) at epoch \(first)")
        }
        if first == 1 {
            if let weights {
                try session.loadStateDict(try SafeTensors.read(weights), source: weights)
            } else {
                session.initializeParameters(seed: seed, graph: m.graph)
            }
        }
        defer { fflush(nil) }
        print("training \(m.graph.name) on \(data.count) images of \(root) (\(epochs) epochs, batch \(batchSize), lr \(lr), wd \(wd), \(threadCount) threads, \(usedLoss))")
        print("augmentation: \(settings.augmentation?.summary ?? "none"); lr schedule: \((settings.lrSchedule ?? LRSchedule()).summary)")
        let progress = ProgressLine()
        let start = Date()
        let history = try trainer.train(from: first, onBatch: { done, total, rate, elapsed in
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
        print(String(format: "%.1f examples/sec on cpu (%d threads)", Double(examples) / seconds, threadCount))
        print("checkpoint: \(runDir)/checkpoint.safetensors, metrics: \(runDir)/metrics.csv (\(String(format: "%.1f", Date().timeIntervalSince(start))) s)")
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
