import SSDGraph

/// Max or average pooling with any window, stride, padding and ceil mode (PyTorch's
/// semantics; `PoolAttributes.outputSize` and the runtime share one formula).
public struct PoolForward: KernelFamily {
    public var x: Int, y: Int
    public var c: Int, h: Int, w: Int
    public var attributes: PoolAttributes

    public var reads: [Int] { [x] }
    public var writes: [Int] { [y] }

    public func body(_ ctx: KernelContext) -> [String] {
        let P = ctx.pointer
        let a = attributes
        return [PoolForward.geometry(a, c: c, h: h, w: w),
                a.kind == .max ? "ssd_maxpool_forward(&g, \(P(x)), \(P(y)));"
                               : "ssd_avgpool_forward(&g, \(a.countIncludePad ? 1 : 0), \(P(x)), \(P(y)));"]
    }

    /// The runtime's ssd_pool_t `g`.
    static func geometry(_ a: PoolAttributes, c: Int, h: Int, w: Int) -> String {
        "const ssd_pool_t g = ssd_pool_geometry((int)N, \(c), \(h), \(w), \(a.kernel[0]), \(a.kernel[1]), "
            + "\(a.stride[0]), \(a.stride[1]), \(a.padding[0]), \(a.padding[1]), \(a.ceilMode ? 1 : 0));"
    }
}

/// dx of a pooling: max routes dy to the first maximum of each window (found again in x),
/// average spreads it over the window by the divisor the forward used.
public struct PoolBackward: KernelFamily {
    public var x: Int, dy: Int, dx: Int
    public var c: Int, h: Int, w: Int
    public var attributes: PoolAttributes

    public var kernelName: String? { attributes.kind == .max ? "max_pool2d_backward" : "avg_pool2d_backward" }
    public var reads: [Int] { attributes.kind == .max ? [x, dy] : [dy] }
    public var writes: [Int] { [dx] }

    public func body(_ ctx: KernelContext) -> [String] {
        let P = ctx.pointer
        let a = attributes
        return [PoolForward.geometry(a, c: c, h: h, w: w),
                a.kind == .max ? "ssd_maxpool_backward(&g, \(P(x)), \(P(dy)), \(P(dx)));"
                               : "ssd_avgpool_backward(&g, \(a.countIncludePad ? 1 : 0), \(P(dy)), \(P(dx)));"]
    }
}

/// AdaptiveAvgPool2d((1,1)) and its gradient (dy / HW over each plane).
public struct GlobalAvgPool: KernelFamily {
    public var x: Int, y: Int
    public var c: Int, hw: Int
    /// Backward: x is dy (N,C,1,1) and y is dx (N,C,H,W).
    public var backward: Bool

    public var kernelName: String? { backward ? "global_avg_pool_backward" : nil }
    public var reads: [Int] { [x] }
    public var writes: [Int] { [y] }

    public func body(_ ctx: KernelContext) -> [String] {
        let P = ctx.pointer
        return [backward ? "ssd_global_avgpool_backward((int)N, \(c), \(hw), \(P(x)), \(P(y)));"
                  : "ssd_global_avgpool_forward((int)N, \(c), \(hw), \(P(x)), \(P(y)));"]
    }
}

/// TinySSD's 2x2 max pool (stride 2) and its gradient.
public struct MaxPool2x2: KernelFamily {
    public var x: Int, y: Int, c: Int, h: Int, w: Int
    /// Backward: dy -> dx (y is then dx), reading x for the argmax.
    public var dy: Int?

    public var kernelName: String? { dy == nil ? nil : "max_pool2d_backward" }
    public var reads: [Int] { [x] + (dy.map { [$0] } ?? []) }
    public var writes: [Int] { [y] }

    public func body(_ ctx: KernelContext) -> [String] {
        let P = ctx.pointer
        if let dy { return ["ssd_maxpool2_backward((int)N, \(c), \(h), \(w), \(P(x)), \(P(dy)), \(P(y)));"] }
        return ["ssd_maxpool2_forward((int)N, \(c), \(h), \(w), \(P(x)), \(P(y)));"]
    }
}

/// AdaptiveMaxPool2d((1,1)) and its gradient.
public struct GlobalMaxPool: KernelFamily {
    public var x: Int, y: Int, c: Int, hw: Int
    /// Backward: dy -> dx (y is then dx), reading x for the argmax.
    public var dy: Int?

    public var kernelName: String? { dy == nil ? nil : "global_max_pool_backward" }
    public var reads: [Int] { [x] + (dy.map { [$0] } ?? []) }
    public var writes: [Int] { [y] }

    public func body(_ ctx: KernelContext) -> [String] {
        let P = ctx.pointer
        if let dy { return ["ssd_global_maxpool_backward((int)N, \(c), \(hw), \(P(x)), \(P(dy)), \(P(y)));"] }
        return ["ssd_global_maxpool_forward((int)N, \(c), \(hw), \(P(x)), \(P(y)));"]
    }
}
