import SSDGraph

/// One family of kernels: everything the compiler needs to know about it in one type —
/// the buffers it reads and writes (for liveness and the memory plan), the scratch it
/// asks for, its FLOPs (for profiles) and its C text. A new kernel is one new file with
/// one such type; lowering and autodiff create it, and nothing else switches on it.
///
/// Buffers are ids in the program's buffer table; `body` gets a function that turns an
/// id into the C expression of its base pointer. Inside the body, `N` is the batch size
/// (int64_t) and `S` the scratch region (float *), as in every kernel function.
public protocol KernelFamily: Hashable, Sendable, CustomStringConvertible {
    /// The C function name's suffix; nil names the kernel after the graph nodes it computes.
    var kernelName: String? { get }
    var reads: [Int] { get }
    var writes: [Int] { get }
    /// FLOPs for a batch of `n` (multiply-add = 2); 0 for memory-bound kernels.
    func flops(batch n: Int) -> Double
    /// C statements that set `size_t t` to the scratch floats needed for batch N; nil for none.
    var scratchQuery: String? { get }
    /// The statements of the kernel's C function.
    func body(_ ptr: (Int) -> String) -> [String]
}

extension KernelFamily {
    public var kernelName: String? { nil }
    public func flops(batch n: Int) -> Double { 0 }
    public var scratchQuery: String? { nil }
    public var description: String { "\(Self.self)" }
}

/// A kernel family value of any type, so `KernelBody` can hold it and stay Hashable.
public struct AnyKernelFamily: Hashable, @unchecked Sendable {
    public let base: any KernelFamily

    public init(_ base: any KernelFamily) { self.base = base }

    public static func == (a: AnyKernelFamily, b: AnyKernelFamily) -> Bool { AnyHashable(a.base) == AnyHashable(b.base) }
    public func hash(into h: inout Hasher) { AnyHashable(base).hash(into: &h) }
}

/// C helpers shared by the families' bodies.
enum CText {
    static func float(_ x: Float) -> String { CEmitter.float(x) }
    static func optional(_ id: Int?, _ ptr: (Int) -> String) -> String { id.map(ptr) ?? "NULL" }
}
