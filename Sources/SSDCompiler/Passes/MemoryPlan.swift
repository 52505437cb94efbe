/// Places the activation buffers of a program in the fixed and batched regions so that
/// buffers whose lifetimes overlap never share bytes, and others may.
///
/// Lifetime of a buffer: from the first kernel that writes it (or the start, for inputs)
/// to the last kernel that reads it (or the end, for outputs). Placement is greedy
/// first-fit in decreasing size, each offset 64-byte aligned; the batched region is
/// planned per example, so every offset scales with N and a plan made once holds for any
/// batch size. `verify` re-checks the finished plan independently.
public enum MemoryPlan {
    public static let alignment = 64

    public struct Lifetime: Equatable, Sendable {
        public var first: Int
        public var last: Int
        func overlaps(_ o: Lifetime) -> Bool { first <= o.last && o.first <= last }
    }

    public static func lifetimes(_ p: Program) -> [Int: Lifetime] {
        var life: [Int: Lifetime] = [:]
        func touch(_ b: Int, _ k: Int) {
            if var l = life[b] { l.first = min(l.first, k); l.last = max(l.last, k); life[b] = l }
            else { life[b] = Lifetime(first: k, last: k) }
        }
        for k in p.kernels {
            let (r, w) = p.uses(k)
            for b in r + w { touch(b, k.index) }
        }
        let end = p.kernels.count
        for (_, b) in p.inputs { touch(b, -1) }
        for o in p.outputs { touch(o.buffer, end) }
        // What a kernel keeps from one call to the next (BN folded into a conv's weights,
        // CEmitter's weight cache) has bytes of its own for the whole program.
        for k in p.kernels {
            for b in k.body.base.persistent { touch(b, -1); touch(b, end) }
        }
        return life
    }

    public static func plan(_ program: Program) throws -> Program {
        var p = program
        let life = lifetimes(p)
        for region in [Region.fixed, .batched] {
            var placed: [(id: Int, offset: Int, bytes: Int)] = []
            let ids = p.buffers.filter { $0.region == region && life[$0.id] != nil }
                .sorted { ($0.bytes, -$0.id) > ($1.bytes, -$1.id) }.map(\.id)
            var top = 0
            for id in ids {
                let bytes = align(p.buffers[id].bytes)
                let busy = placed.filter { life[$0.id]!.overlaps(life[id]!) }.sorted { $0.offset < $1.offset }
                var offset = 0
                for q in busy {
                    if offset + bytes <= q.offset { break }
                    offset = max(offset, q.offset + align(q.bytes))
                }
                p.buffers[id].offset = offset
                placed.append((id, offset, bytes))
                top = max(top, offset + bytes)
            }
            if region == .fixed { p.fixedBytes = top } else { p.batchedBytesPerExample = top }
        }
        try verify(p)
        return p
    }

    static func align(_ n: Int) -> Int { (n + alignment - 1) / alignment * alignment }

    public struct PlanError: Error, CustomStringConvertible {
        public var description: String
    }

    /// No two buffers of a region that are live at the same time share a byte, and every
    /// buffer fits its region.
    public static func verify(_ p: Program) throws {
        let life = lifetimes(p)
        for region in [Region.fixed, .batched] {
            let size = region == .fixed ? p.fixedBytes : p.batchedBytesPerExample
            let bs = p.buffers.filter { $0.region == region && life[$0.id] != nil }
            for (i, a) in bs.enumerated() {
                guard a.offset % alignment == 0, a.offset + a.bytes <= size else {
                    throw PlanError(description: "buffer \(a.name) at \(a.offset)+\(a.bytes) is misaligned or outside its \(size)-byte region")
                }
                for b in bs[(i + 1)...] where life[a.id]!.overlaps(life[b.id]!) {
                    if a.offset < b.offset + b.bytes && b.offset < a.offset + a.bytes {
                        throw PlanError(description: "buffers \(a.name) and \(b.name) are live together and overlap in the \(region) region")
                    }
                }
            }
        }
    }
}
