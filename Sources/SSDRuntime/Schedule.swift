import Foundation

/// The learning rate over a run, set before every step: constant (the chapter's), step decay
/// or cosine, each optionally after a linear warm-up.
public struct LRSchedule: Codable, Equatable, Sendable {
    public enum Kind: String, Codable, CaseIterable, Sendable {
        /// The base rate throughout.
        case constant
        /// The base rate times `stepFactor` after every `stepEpochs` epochs.
        case step
        /// From the base rate down to `minLR` along half a cosine, from the end of the warm-up to the last epoch.
        case cosine
    }

    public var kind: Kind = .constant
    /// Epochs (may be fractional) over which the rate rises linearly from base/steps to the schedule's value.
    public var warmupEpochs: Double = 0
    public var stepEpochs: Int = 10
    public var stepFactor: Float = 0.1
    public var minLR: Float = 0

    public init(kind: Kind = .constant) { self.kind = kind }

    /// The rate of step `step` (0-based, counted over the whole run) for a run of `epochs`
    /// epochs of `stepsPerEpoch` steps with base rate `base`.
    public func rate(base: Float, step: Int, stepsPerEpoch: Int, epochs: Int) -> Float {
        let spe = Double(max(stepsPerEpoch, 1))
        let t = Double(step) / spe  // epochs done before this step
        var lr: Double
        switch kind {
        case .constant:
            lr = Double(base)
        case .step:
            lr = Double(base) * pow(Double(stepFactor), (t / Double(max(stepEpochs, 1))).rounded(.down))
        case .cosine:
            let span = max(Double(epochs) - warmupEpochs, 1e-9)
            let p = min(max((t - warmupEpochs) / span, 0), 1)
            lr = Double(minLR) + (Double(base) - Double(minLR)) * 0.5 * (1 + cos(Double.pi * p))
        }
        let warmupSteps = warmupEpochs * spe
        if Double(step) < warmupSteps { lr *= Double(step + 1) / warmupSteps.rounded(.up) }
        return Float(lr)
    }

    /// Problems with the options, in the words of the command line.
    public var problems: [String] {
        var p: [String] = []
        if !(warmupEpochs.isFinite && warmupEpochs >= 0) { p.append("--warmup-epochs must be a number >= 0, got \(warmupEpochs)") }
        if stepEpochs < 1 { p.append("--lr-step-epochs must be at least 1, got \(stepEpochs)") }
        if !(stepFactor.isFinite && stepFactor > 0 && stepFactor <= 1) { p.append("--lr-step-factor must be above 0 and at most 1, got \(stepFactor)") }
        if !(minLR.isFinite && minLR >= 0) { p.append("--min-lr must be a number >= 0, got \(minLR)") }
        return p
    }

    /// How settings.json and `--resume`'s differences word it.
    public var summary: String {
        var s: String
        switch kind {
        case .constant: s = "constant"
        case .step: s = "step (x\(stepFactor) every \(stepEpochs) epochs)"
        case .cosine: s = "cosine (to \(minLR))"
        }
        if warmupEpochs > 0 { s += ", warm-up \(warmupEpochs) epochs" }
        return s
    }
}
