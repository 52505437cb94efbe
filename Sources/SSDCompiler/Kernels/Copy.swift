import SSDGraph

/// Permute/reshape/concat fused into one copy per piece into the destination.
public struct Copy: KernelFamily {
    public var y: Int
    public var pieces: [CopyPiece]
    public var yElements: Int

    public var reads: [Int] { pieces.map(\.source) }
    public var writes: [Int] { [y] }

    public func body(_ ctx: KernelContext) -> [String] {
        var out = ["float *restrict y = \(ctx.pointer(y));"]
        for (i, piece) in pieces.enumerated() { out += copyPiece(ctx, piece, index: i, yElements: yElements) }
        return out
    }
}

/// The transpose of `Copy`: each piece of `x` is read back and written, un-permuted, into
/// its own destination buffer (the gradient of a fused permute/reshape/concat).
public struct Scatter: KernelFamily {
    public var x: Int
    public var pieces: [CopyPiece]
    public var destinations: [Int]
    public var xElements: Int

    public var kernelName: String? { "concat_permute_backward" }
    public var reads: [Int] { [x] }
    public var writes: [Int] { destinations }

    public func body(_ ctx: KernelContext) -> [String] {
        var out = ["const float *restrict x = \(ctx.pointer(x));"]
        for (i, piece) in pieces.enumerated() {
            out += copyPiece(ctx, piece, index: i, yElements: xElements, scatterInto: destinations[i])
        }
        return out
    }
}

/// One piece of a fused permute/reshape/concat: loops over the permuted view in row-major
/// order, reading the source through permuted strides and writing runs of `inner`
/// elements into the destination rows (or, scattering, the reverse).
func copyPiece(_ ctx: KernelContext, _ piece: CopyPiece, index: Int, yElements: Int, scatterInto dest: Int? = nil) -> [String] {
    let dims = piece.sourceDims
    var strides = Array(repeating: 1, count: dims.count)
    for i in stride(from: dims.count - 2, through: 0, by: -1) { strides[i] = strides[i + 1] * dims[i + 1] }
    let pdims = piece.perm.map { dims[$0] }
    let pstrides = piece.perm.map { strides[$0] }
    let total = dims.reduce(1, *)
    let src = ctx.buffers[piece.source]
    var out: [String] = []
    if let dest {
        out.append("/* piece \(index): rows of \(piece.inner) at +\(piece.dstOffset) of \(piece.dstRow) -> \(ctx.buffers[dest].name) \(dims) un-permuted \(piece.perm) */")
    } else {
        out.append("/* piece \(index): \(src.name) \(dims) permuted \(piece.perm) -> rows of \(piece.inner) at +\(piece.dstOffset) of \(piece.dstRow) */")
    }
    out.append("#pragma omp parallel for schedule(static)")
    out.append("for (int64_t n = 0; n < N; n++) {")
    if let dest {
        out.append("    float *restrict g = \(ctx.pointer(dest)) + n * \(total);")
        out.append("    const float *restrict xn = x + n * \(yElements);")
    } else {
        out.append("    const float *restrict x = \(ctx.pointer(piece.source))\(src.type.batched ? " + n * \(total)" : "");")
        out.append("    float *restrict yn = y + n * \(yElements);")
    }
    let simple = piece.inner == total
    out.append("    int64_t lin = 0;")
    var indent = "    "
    for (d, size) in pdims.enumerated() {
        out.append("\(indent)for (int64_t i\(d) = 0; i\(d) < \(size); i\(d)++) {")
        indent += "    "
    }
    let srcIndex = pdims.indices.map { "i\($0) * \(pstrides[$0])" }.joined(separator: " + ")
    let packed = simple ? "\(piece.dstOffset) + lin" : "(lin / \(piece.inner)) * \(piece.dstRow) + \(piece.dstOffset) + lin % \(piece.inner)"
    let unpacked = srcIndex.isEmpty ? "0" : srcIndex
    out.append(dest != nil ? "\(indent)g[\(unpacked)] = xn[\(packed)];" : "\(indent)yn[\(packed)] = x[\(unpacked)];")
    out.append("\(indent)lin++;")
    for _ in pdims {
        indent.removeLast(4)
        out.append("\(indent)}")
    }
    out.append("}")
    return out
}
