import Foundation
import SSDIO

/// Makes items 0..<count on a thread of its own, up to `depth` ahead of the consumer, and
/// hands them out strictly in order: the next batch is decoded, augmented and packed while
/// the compiled train step runs, and the order of batches never depends on timing. An error
/// making item k is thrown by the `next()` that would have returned item k.
public final class BatchPipeline<Item>: @unchecked Sendable {
    private let count: Int
    private let depth: Int
    private let produce: (Int) throws -> Item
    private let condition = NSCondition()
    private var ready: [Int: Result<Item, Error>] = [:]
    private var consumed = 0
    private var stopped = false
    private var thread: Thread?

    public init(count: Int, depth: Int = 2, produce: @escaping (Int) throws -> Item) {
        precondition(depth >= 1)
        self.count = count
        self.depth = depth
        self.produce = produce
        let t = Thread { [self] in work() }
        t.name = "ssdc batch pipeline"
        thread = t
        t.start()
    }

    deinit { stop() }

    private func work() {
        for k in 0..<count {
            condition.lock()
            while !stopped && k - consumed >= depth { condition.wait() }
            let stop = stopped
            condition.unlock()
            if stop { return }
            let item = Result { try produce(k) }
            condition.lock()
            ready[k] = item
            condition.broadcast()
            condition.unlock()
            if case .failure = item { return }
        }
    }

    /// The next item, waiting for it if it is not made yet.
    public func next() throws -> Item {
        condition.lock()
        defer { condition.unlock() }
        precondition(consumed < count, "BatchPipeline: all \(count) items were taken")
        while ready[consumed] == nil { condition.wait() }
        let item = ready.removeValue(forKey: consumed)!
        consumed += 1
        condition.broadcast()
        return try item.get()
    }

    /// Stops making items (the one being made is finished and dropped).
    public func stop() {
        condition.lock()
        stopped = true
        condition.broadcast()
        condition.unlock()
    }
}

/// The training batches of a run: the data set's own (no augmentation, as the chapter
/// trains) or the SSD augmentation's, seeded by the run's seed, the epoch and each image's index.
public struct TrainBatchSource: Sendable {
    public let data: DetectionDataSet
    public let augmenter: Augmenter?
    public let boxesPerImage: Int
    /// The model's input (height, width); images of another size are resized to it.
    public let size: (height: Int, width: Int)

    public init(data: DetectionDataSet, augmentation: AugmentOptions?, seed: UInt64, boxesPerImage: Int,
                size: (height: Int, width: Int)? = nil) {
        self.data = data
        augmenter = augmentation.map { Augmenter(options: $0, seed: seed) }
        self.boxesPerImage = boxesPerImage
        self.size = size ?? (data.height, data.width)
    }

    /// The batch of `indices` in `epoch` (0-based).
    public func batch(indices: [Int], epoch: Int) throws -> (x: [Float], y: [Float]) {
        guard let augmenter else { return try data.batch(indices: indices, boxesPerImage: boxesPerImage, size: size) }
        return try augmenter.batch(data, indices: indices, epoch: epoch, boxesPerImage: boxesPerImage, size: size)
    }
}
