import SSDABI
import SSDIO

/// `--ema`: an exponential moving average of a session's parameters and BatchNorm running
/// statistics, updated after every train step.
///
/// After update t (counting from 0) the average is `d * average + (1 - d) * current`, with
/// `d = min(decay, (1 + t) / (10 + t))`: the early updates follow the weights closely,
/// and the average settles to the full decay once t passes about 10 / (1 - decay). BN's
/// batch counters (num_batches_tracked) are copied, not averaged. The average depends only
/// on the weights after each step and on t, so a resumed run that restores both continues
/// it exactly.
public struct ParameterAverage {
    public let decay: Float
    /// Updates made so far.
    public private(set) var updates: Int
    /// The averaged values, in the layout of the session's parameter memory.
    private(set) var values: [Float]

    /// An average starting from the session's current parameters.
    public init(of session: ModelSession, decay: Float, updates: Int = 0) {
        self.decay = decay
        self.updates = updates
        values = session.withParameters { Array($0) }
    }

    /// The weight of the old average in update t.
    static func factor(decay: Float, update t: Int) -> Float {
        min(decay, Float(1 + t) / Float(10 + t))
    }

    /// Folds the session's current parameters into the average.
    public mutating func update(from session: ModelSession) {
        let d = Self.factor(decay: decay, update: updates)
        let e = 1 - d
        let current = session.params.floats
        values.withUnsafeMutableBufferPointer { avg in
            for p in session.manifest.parameters {
                let base = p.offset
                if p.dtype == "I64" {
                    for i in base..<(base + p.count) { avg[i] = current[i] }
                } else {
                    for i in base..<(base + p.count) { avg[i] = d * avg[i] + e * current[i] }
                }
            }
        }
        updates += 1
    }

    /// Exchanges the average with the session's parameters (the library then refolds what it
    /// derived from them); a second call exchanges them back.
    public mutating func swap(with session: ModelSession) {
        let current = session.params.floats
        values.withUnsafeMutableBufferPointer { avg in
            for i in 0..<avg.count { (avg[i], current[i]) = (current[i], avg[i]) }
        }
        session.library.parametersChanged()
    }

    /// Runs `body` with the average in the session's place.
    public mutating func withAverage<R>(in session: ModelSession, _ body: () throws -> R) rethrows -> R {
        swap(with: session)
        defer { swap(with: session) }
        return try body()
    }

    /// Replaces the average with a state dict's values (a checkpoint of it); the names and
    /// shapes are checked as when loading weights.
    public mutating func load(_ tensors: [String: HostTensor], source: String, into session: ModelSession) throws {
        try withAverage(in: session) { try session.loadStateDict(tensors, source: source) }
    }
}
