import SSDGraph

/// The models ssdc has built in. model.swift is a link to Examples/tinyssd/model.swift,
/// so the built-in model is exactly the example a user reads and compiles.
public enum BuiltinModels {
    /// TinySSD with one class (bananas), as trained in the chapter.
    public static var tinySSD: Model { model }

    /// What the one-class built-in TinySSD detects, as `--predict` labels it.
    public static let tinySSDClassNames = ["banana"]

    /// TinySSD for `numClasses` object classes.
    public static func tinySSD(numClasses: Int) -> Model {
        numClasses == 1 ? model : SSDModels.tinySSD(numClasses: numClasses)
    }
}
