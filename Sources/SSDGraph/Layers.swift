/// A layer: a value describing a module (like a PyTorch nn.Module before it has weights).
/// Applying it to a tensor creates its parameters, named by the module path the builder is
/// in, and its ops. Each layer remembers the line that constructed it, so a shape error in
/// a conv points at the `Conv2d(...)` line of the model file.
public protocol Layer {
    func callAsFunction(_ x: Tensor) -> Tensor
}

/// nn.Conv2d with a square kernel and a bias, initialised as PyTorch does (or Xavier).
public struct Conv2d: Layer {
    public var inChannels: Int
    public var outChannels: Int
    public var kernelSize: Int
    public var stride: Int
    public var padding: Int
    public var bias: Bool
    public var xavier: Bool
    public var location: SourceLocation

    public init(_ inChannels: Int, _ outChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0,
                bias: Bool = true, xavier: Bool = false, file: StaticString = #filePath, line: UInt = #line) {
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.kernelSize = kernelSize
        self.stride = stride
        self.padding = padding
        self.bias = bias
        self.xavier = xavier
        self.location = SourceLocation(file, line)
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        let b = x.builder
        let fanIn = inChannels * kernelSize * kernelSize
        let wInit: Initializer = xavier
            ? .xavier(fanIn: fanIn, fanOut: outChannels * kernelSize * kernelSize)
            : .uniformFanIn(fanIn: fanIn)
        let w = b.parameter("weight", [outChannels, inChannels, kernelSize, kernelSize],
                            initializer: wInit, trainable: true, location: location)
        let bias = self.bias
            ? b.parameter("bias", [outChannels], initializer: xavier ? .constant(0) : .uniformFanIn(fanIn: fanIn),
                          trainable: true, location: location)
            : nil
        return b.apply(.conv2d(stride: stride, padding: padding), [x, w] + (bias.map { [$0] } ?? []), location: location)
    }
}

/// nn.BatchNorm2d: weight 1, bias 0, running_mean 0, running_var 1, num_batches_tracked 0.
public struct BatchNorm2d: Layer {
    public var numFeatures: Int
    public var eps: Float
    public var momentum: Float
    public var location: SourceLocation

    public init(_ numFeatures: Int, eps: Float = 1e-5, momentum: Float = 0.1,
                file: StaticString = #filePath, line: UInt = #line) {
        self.numFeatures = numFeatures
        self.eps = eps
        self.momentum = momentum
        self.location = SourceLocation(file, line)
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        let b = x.builder
        let c = numFeatures
        let params = [
            b.parameter("weight", [c], initializer: .constant(1), trainable: true, location: location),
            b.parameter("bias", [c], initializer: .constant(0), trainable: true, location: location),
            b.parameter("running_mean", [c], initializer: .constant(0), trainable: false, location: location),
            b.parameter("running_var", [c], initializer: .constant(1), trainable: false, location: location),
            b.parameter("num_batches_tracked", [], dtype: .i64, initializer: .constant(0), trainable: false, location: location),
        ]
        return b.apply(.batchNorm(eps: eps, momentum: momentum), [x] + params, location: location)
    }
}

public struct ReLU: Layer {
    public var location: SourceLocation
    public init(file: StaticString = #filePath, line: UInt = #line) { location = SourceLocation(file, line) }
    public func callAsFunction(_ x: Tensor) -> Tensor { x.builder.apply(.relu, [x], location: location) }
}

/// nn.MaxPool2d(2): kernel 2, stride 2.
public struct MaxPool2d: Layer {
    public var location: SourceLocation
    public init(_ kernelSize: Int, file: StaticString = #filePath, line: UInt = #line) {
        precondition(kernelSize == 2, "MaxPool2d supports kernel 2 (stride 2), as TinySSD uses")
        location = SourceLocation(file, line)
    }
    public func callAsFunction(_ x: Tensor) -> Tensor { x.builder.apply(.maxPool2d, [x], location: location) }
}

/// nn.AdaptiveMaxPool2d((1, 1)): global max pool.
public struct AdaptiveMaxPool2d: Layer {
    public var location: SourceLocation
    public init(_ outputSize: (Int, Int), file: StaticString = #filePath, line: UInt = #line) {
        precondition(outputSize == (1, 1), "AdaptiveMaxPool2d supports output size (1, 1)")
        location = SourceLocation(file, line)
    }
    public func callAsFunction(_ x: Tensor) -> Tensor { x.builder.apply(.globalMaxPool, [x], location: location) }
}

/// nn.Sequential: children applied in order, each under its index in the module path,
/// so parameters get PyTorch's names (`blk_0.0.3.weight`).
public struct Sequential: Layer {
    public var layers: [any Layer]

    public init(@LayerBuilder _ body: () -> [any Layer]) {
        layers = body()
    }

    public init(_ layers: [any Layer]) {
        self.layers = layers
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        var y = x
        for (i, layer) in layers.enumerated() {
            y = x.builder.scoped(String(i)) { layer(y) }
        }
        return y
    }
}

/// A layer applied under a name in the module path: `Named("blk_0", baseNet())` is
/// `self.blk_0 = base_net()` in PyTorch.
public struct Named: Layer {
    public var name: String
    public var layer: any Layer

    public init(_ name: String, _ layer: any Layer) {
        self.name = name
        self.layer = layer
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        x.builder.scoped(name) { layer(x) }
    }
}

/// Lets `Sequential { ... }` list layers with `for` and `if` inside, like building the
/// list passed to nn.Sequential(*blk). A `for` loop's layers become consecutive children.
@resultBuilder
public enum LayerBuilder {
    public static func buildExpression(_ layer: any Layer) -> [any Layer] { [layer] }
    public static func buildExpression(_ layers: [any Layer]) -> [any Layer] { layers }
    public static func buildBlock(_ parts: [any Layer]...) -> [any Layer] { parts.flatMap { $0 } }
    public static func buildArray(_ parts: [[any Layer]]) -> [any Layer] { parts.flatMap { $0 } }
    public static func buildOptional(_ part: [any Layer]?) -> [any Layer] { part ?? [] }
    public static func buildEither(first: [any Layer]) -> [any Layer] { first }
    public static func buildEither(second: [any Layer]) -> [any Layer] { second }
}
