import SSDCompiler
import SSDGraph
import SSDModels
import XCTest

final class MemoryPlanTests: XCTestCase {
    func tinySSDPrograms() throws -> [Program] {
        let g = try BuiltinModels.tinySSD.graph(height: 256, width: 256)
        return try CompiledModel(graph: g, toolchain: GoldenCTests.toolchain).programs
    }

    func testPlanShareMemoryByLiveness() throws {
        for p in try tinySSDPrograms() {
            try MemoryPlan.verify(p)
            let batched = p.buffers.filter { $0.region == .batched }
            let total = batched.map(\.bytes).reduce(0, +)
            // No plan can use less than the largest set of buffers live at one kernel.
            let life = MemoryPlan.lifetimes(p)
            var lowerBound = 0
            for k in -1...p.kernels.count {
                let live = batched.filter { life[$0.id].map { $0.first <= k && k <= $0.last } ?? false }
                lowerBound = max(lowerBound, live.map(\.bytes).reduce(0, +))
            }
            XCTAssertLessThan(p.batchedBytesPerExample, total, "\(p.name): no sharing at all")
            XCTAssertLessThanOrEqual(Double(p.batchedBytesPerExample), 1.25 * Double(lowerBound),
                                     "\(p.name): planned \(p.batchedBytesPerExample) bytes, live-set bound \(lowerBound), total \(total)")
        }
    }

    func testVerifyRejectsOverlappingLiveBuffers() throws {
        var p = try tinySSDPrograms()[0]
        // Move the first conv's output onto its input: both are live in kernel 0.
        let k0 = p.kernels[0]
        let (reads, writes) = p.uses(k0)
        let input = reads.first { p.buffers[$0].region == .batched }!
        p.buffers[writes[0]].offset = p.buffers[input].offset
        XCTAssertThrowsError(try MemoryPlan.verify(p)) { e in
            XCTAssertTrue("\(e)".contains("overlap"), "\(e)")
        }
    }

    func testFusionFollowsKinds() throws {
        let p = try tinySSDPrograms()[0]
        let g = try BuiltinModels.tinySSD.graph(height: 256, width: 256)
        // Every ReLU of TinySSD follows a BN with no other consumer: all fused as epilogues.
        XCTAssertFalse(p.kernels.contains { $0.nodes.count == 1 && g[$0.nodes[0]].op == .relu })
        XCTAssertTrue(p.kernels.contains { $0.name.hasSuffix("batch_norm_relu") })
        // The heads write straight into the concatenated predictions: no copy kernel at all.
        // The cls and bbox heads of each of the 5 scales are one conv, which carries both
        // heads' permute, flatten and concat.
        XCTAssertEqual(p.kernels.filter { $0.kind == .injective }.count, 0)
        let heads = p.kernels.filter { $0.name.hasSuffix("conv2d_pair_permute_reshape_concat") }
        XCTAssertEqual(heads.map { k in k.nodes.filter { g[$0].op.mnemonic == "conv2d" }.map { g[$0].name } },
                       (0..<5).map { ["cls_\($0)", "bbox_\($0)"] })
        XCTAssertTrue(heads.allSatisfy { k in
            k.nodes.map { g[$0].op.mnemonic } == ["conv2d", "permute", "reshape", "concat", "conv2d", "permute", "reshape", "concat"]
        })
        // In the train step their backward is one kernel per scale too.
        let step = try XCTUnwrap(try tinySSDPrograms().first { $0.name == "train_step" })
        let backs = step.kernels.filter { $0.name.hasSuffix("conv2d_pair_backward") }
        XCTAssertEqual(backs.map { $0.nodes.map { g[$0].name } }.sorted { $0[0] < $1[0] },
                       (0..<5).map { ["cls_\($0)", "bbox_\($0)"] })
    }
}
