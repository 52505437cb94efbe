/// A layer: a value describing a module (like a PyTorch nn.Module before it has weights).
/// Applying it to a tensor creates its parameters, named by the module path the builder is
/// in, and its ops. Each layer remembers the line that constructed it, so a shape error in
/// a conv points at the `Conv2d(...)` line of the model file.
public protocol Layer {
    func callAsFunction(_ x: Tensor) -> Tensor
}

/// nn.Conv2d with a square kernel, initialised as PyTorch does (or Xavier). `groups`
/// splits the channels (groups == in == out channels is a depthwise conv); `dilation`
/// spreads the kernel's taps.
public struct Conv2d: Layer {
    public var inChannels: Int
    public var outChannels: Int
    public var kernelSize: Int
    public var stride: Int
    public var padding: Int
    public var dilation: Int
    public var groups: Int
    public var bias: Bool
    public var xavier: Bool
    public var location: SourceLocation

    public init(_ inChannels: Int, _ outChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0,
                dilation: Int = 1, groups: Int = 1, bias: Bool = true, xavier: Bool = false,
                file: StaticString = #filePath, line: UInt = #line) {
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.kernelSize = kernelSize
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
        self.bias = bias
        self.xavier = xavier
        self.location = SourceLocation(file, line)
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        let b = x.builder
        guard groups >= 1, inChannels % groups == 0 else {
            b.fail("Conv2d(\(inChannels), \(outChannels)) with groups \(groups): the input channels must divide into the groups", at: location)
            return Tensor(builder: b, id: nil)
        }
        let perGroup = inChannels / groups
        let fanIn = perGroup * kernelSize * kernelSize
        let wInit: Initializer = xavier
            ? .xavier(fanIn: fanIn, fanOut: outChannels / max(groups, 1) * kernelSize * kernelSize)
            : .uniformFanIn(fanIn: fanIn)
        let w = b.parameter("weight", [outChannels, perGroup, kernelSize, kernelSize],
                            initializer: wInit, trainable: true, location: location)
        let bias = self.bias
            ? b.parameter("bias", [outChannels], initializer: xavier ? .constant(0) : .uniformFanIn(fanIn: fanIn),
                          trainable: true, location: location)
            : nil
        let op: Op = dilation == 1 && groups == 1
            ? .conv2d(stride: stride, padding: padding)
            : .convolution(ConvAttributes(stride: [stride, stride], padding: [padding, padding],
                                          dilation: [dilation, dilation], groups: groups))
        return b.apply(op, [x, w] + (bias.map { [$0] } ?? []), location: location)
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

/// nn.MaxPool2d(kernel, stride = kernel, padding, ceil_mode). MaxPool2d(2) is TinySSD's
/// 2x2 pool, which the compiler fuses with the BN and ReLU before it.
public struct MaxPool2d: Layer {
    public var attributes: PoolAttributes
    public var location: SourceLocation
    public init(_ kernelSize: Int, stride: Int? = nil, padding: Int = 0, ceilMode: Bool = false,
                file: StaticString = #filePath, line: UInt = #line) {
        let s = stride ?? kernelSize
        attributes = PoolAttributes(kind: .max, kernel: [kernelSize, kernelSize], stride: [s, s],
                                    padding: [padding, padding], ceilMode: ceilMode)
        location = SourceLocation(file, line)
    }
    public func callAsFunction(_ x: Tensor) -> Tensor {
        let a = attributes
        let plain = a.kernel == [2, 2] && a.stride == [2, 2] && a.padding == [0, 0] && !a.ceilMode
        return x.builder.apply(plain ? .maxPool2d : .pool2d(a), [x], location: location)
    }
}

/// nn.AvgPool2d(kernel, stride = kernel, padding, ceil_mode, count_include_pad).
public struct AvgPool2d: Layer {
    public var attributes: PoolAttributes
    public var location: SourceLocation
    public init(_ kernelSize: Int, stride: Int? = nil, padding: Int = 0, ceilMode: Bool = false,
                countIncludePad: Bool = true, file: StaticString = #filePath, line: UInt = #line) {
        let s = stride ?? kernelSize
        attributes = PoolAttributes(kind: .average, kernel: [kernelSize, kernelSize], stride: [s, s],
                                    padding: [padding, padding], ceilMode: ceilMode, countIncludePad: countIncludePad)
        location = SourceLocation(file, line)
    }
    public func callAsFunction(_ x: Tensor) -> Tensor { x.builder.apply(.pool2d(attributes), [x], location: location) }
}

/// nn.AdaptiveAvgPool2d((1, 1)): global average pool.
public struct AdaptiveAvgPool2d: Layer {
    public var location: SourceLocation
    public init(_ outputSize: (Int, Int), file: StaticString = #filePath, line: UInt = #line) {
        precondition(outputSize == (1, 1), "AdaptiveAvgPool2d supports output size (1, 1)")
        location = SourceLocation(file, line)
    }
    public func callAsFunction(_ x: Tensor) -> Tensor { x.builder.apply(.globalAvgPool, [x], location: location) }
}

/// An elementwise activation layer (ReLU6, Sigmoid, Hardswish, Hardsigmoid).
public struct ActivationLayer: Layer {
    public var activation: Activation
    public var location: SourceLocation
    public init(_ activation: Activation, file: StaticString = #filePath, line: UInt = #line) {
        self.activation = activation
        location = SourceLocation(file, line)
    }
    public func callAsFunction(_ x: Tensor) -> Tensor { x.builder.apply(.activation(activation), [x], location: location) }
}

/// nn.ReLU6.
public func ReLU6(file: StaticString = #filePath, line: UInt = #line) -> ActivationLayer { ActivationLayer(.relu6, file: file, line: line) }
/// nn.Sigmoid.
public func Sigmoid(file: StaticString = #filePath, line: UInt = #line) -> ActivationLayer { ActivationLayer(.sigmoid, file: file, line: line) }
/// nn.Hardswish.
public func HardSwish(file: StaticString = #filePath, line: UInt = #line) -> ActivationLayer { ActivationLayer(.hardSwish, file: file, line: line) }
/// nn.Hardsigmoid.
public func HardSigmoid(file: StaticString = #filePath, line: UInt = #line) -> ActivationLayer { ActivationLayer(.hardSigmoid, file: file, line: line) }

/// nn.Upsample(scale_factor=s, mode="nearest") with an integer factor.
public struct Upsample: Layer {
    public var scaleFactor: Int
    public var location: SourceLocation
    public init(scaleFactor: Int, file: StaticString = #filePath, line: UInt = #line) {
        self.scaleFactor = scaleFactor
        location = SourceLocation(file, line)
    }
    public func callAsFunction(_ x: Tensor) -> Tensor {
        x.builder.apply(.upsampleNearest(scaleH: scaleFactor, scaleW: scaleFactor), [x], location: location)
    }
}

/// SSD300's L2Norm on conv4_3: each pixel's channel vector scaled to unit L2 norm, then
/// by a learned per-channel `weight` that starts at `scale` (20 in the SSD paper).
public struct L2Norm: Layer {
    public var channels: Int
    public var scale: Float
    public var eps: Float
    public var location: SourceLocation
    public init(_ channels: Int, scale: Float = 20, eps: Float = 1e-10, file: StaticString = #filePath, line: UInt = #line) {
        self.channels = channels
        self.scale = scale
        self.eps = eps
        location = SourceLocation(file, line)
    }
    public func callAsFunction(_ x: Tensor) -> Tensor {
        let b = x.builder
        let w = b.parameter("weight", [channels], initializer: .constant(scale), trainable: true, location: location)
        return b.apply(.l2Norm(eps: eps), [x, w], location: location)
    }
}

/// Per-example standardisation: each example's values (all channels and pixels) shifted to
/// mean 0 and scaled to variance 1, (x - mean) / sqrt(var + eps). As a network's first layer
/// it makes the model see an image and the same image darker or brighter (every value scaled,
/// or shifted) as one input. PyTorch: `F.layer_norm(x, x.shape[1:], eps=eps)`.
public struct Standardize: Layer {
    public var eps: Float
    public var location: SourceLocation
    public init(eps: Float = 1e-5, file: StaticString = #filePath, line: UInt = #line) {
        self.eps = eps
        location = SourceLocation(file, line)
    }
    public func callAsFunction(_ x: Tensor) -> Tensor {
        x.builder.apply(.standardize(eps: eps), [x], location: location)
    }
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
