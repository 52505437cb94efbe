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
            let total = p.buffers.filter { $0.region == .batched }.map(\.bytes).reduce(0, +)
            // Sharing must save most of the memory of a chain of activations. A train step
            // keeps the forward activations its backward reads, so it saves less.
            let bound = p.name == "train_step" || p.name == "eval_step" ? total * 6 / 10 : total / 3
            XCTAssertLessThan(p.batchedBytesPerExample, bound, "\(p.name): planned \(p.batchedBytesPerExample) of \(total) bytes")
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
        // The heads' permute + flatten + concat of each output is one copy kernel.
        let copies = p.kernels.filter { $0.kind == .injective }
        XCTAssertEqual(copies.count, 2)
        // 5 scales x 2 heads x (permute + reshape) + concat in each kernel.
        XCTAssertEqual(copies.map(\.nodes.count), [11, 11])
    }
}
