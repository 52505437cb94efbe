import SSDGraph

/// One family of kernels: everything the compiler needs to know about it in one type —
/// the buffers it reads and writes (for liveness and the memory plan), the scratch it
/// asks for, its FLOPs (for profiles) and its C text. A new kernel is one new file with
/// one such type; lowering and autodiff create it, and nothing else switches on it.
///
/// Buffers are ids in the program's buffer table; `body` gets a context that turns an id
/// into the C expression of its base pointer. Inside the body, `N` is the batch size
/// (int64_t), `P`, `F`, `B` the regions and `S` the scratch (float *), as in every kernel
/// function, and `G`, `Y` the label rows in a step's kernel that reads them.
public protocol KernelFamily: Hashable, Sendable, CustomStringConvertible {
    /// The C function name's suffix; nil names the kernel after the graph nodes it computes.
    var kernelName: String? { get }
    var reads: [Int] { get }
    var writes: [Int] { get }
    /// FLOPs for a batch of `n` (multiply-add = 2); 0 for memory-bound kernels.
    func flops(batch n: Int) -> Double
    /// C statements that set `size_t t` to the scratch floats needed for batch N; nil for none.
    var scratchQuery: String? { get }
    /// Buffers whose contents must survive from one call of the program to the next (values
    /// derived from the parameters alone): the memory plan gives them bytes of their own.
    var persistent: [Int] { get }
    /// The statements of the kernel's C function.
    func body(_ ctx: KernelContext) -> [String]
}

/// What a kernel's C text may refer to: buffers' pointers and the program's buffer table.
public struct KernelContext {
    /// The C expression of a buffer's base pointer.
    public let pointer: (Int) -> String
    public let buffers: [Buffer]
    public let layout: ParameterLayout
}

extension KernelFamily {
    public var kernelName: String? { nil }
    public func flops(batch n: Int) -> Double { 0 }
    public var scratchQuery: String? { nil }
    public var persistent: [Int] { [] }
    public var description: String { "\(Self.self)" }
}

/// A kernel family value of any type, so a `Kernel` can hold it and stay Hashable.
public struct KernelBody: Hashable, @unchecked Sendable {
    public let base: any KernelFamily

    public init(_ base: any KernelFamily) { self.base = base }

    public var reads: [Int] { base.reads }
    public var writes: [Int] { base.writes }
    public func flops(batch n: Int) -> Double { base.flops(batch: n) }

    public static func == (a: KernelBody, b: KernelBody) -> Bool { AnyHashable(a.base) == AnyHashable(b.base) }
    public func hash(into h: inout Hasher) { AnyHashable(base).hash(into: &h) }
}

/// C helpers shared by the families' bodies.
enum CText {
    static func float(_ x: Float) -> String { CEmitter.float(x) }
    static func optional(_ id: Int?, _ ptr: (Int) -> String) -> String { id.map(ptr) ?? "NULL" }
}
