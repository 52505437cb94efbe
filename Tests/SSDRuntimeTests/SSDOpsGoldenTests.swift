import Foundation
@testable import SSDRuntime
import SSDCompiler
import SSDDriver
import SSDIO
import SSDModels
import XCTest

/// The runtime's SSD ops (labelling, detection, the loss variants) against d2l and PyTorch
/// autograd on crafted cases, called through a compiled library that links them.
final class SSDOpsGoldenTests: XCTestCase {
    typealias TargetFn = @convention(c) (Int32, Int32, Int32, UnsafePointer<Float>, UnsafePointer<Float>, Float,
                                         UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>,
                                         UnsafeMutablePointer<Float>) -> Void
    typealias TargetScratchFn = @convention(c) (Int32, Int32) -> Int
    typealias DetectFn = @convention(c) (Int32, Int32, Int32, UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>,
                                         Float, Float, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>) -> Void
    typealias DetectScratchFn = @convention(c) (Int32) -> Int
    struct LossConfigC {
        var focal: Int32 = 0; var gamma: Float = 2; var alpha: Float = 0.25; var smooth: Int32 = 0; var sigma: Float = 1
        var clsWeight: Float = 1; var bboxWeight: Float = 1; var mining: Float = 0
    }
    typealias LossFn = @convention(c) (UnsafeRawPointer, Int32, Int32, Int32, UnsafePointer<Float>, UnsafePointer<Float>,
                                       UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>,
                                       UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>,
                                       UnsafeMutablePointer<Double>, UnsafeMutablePointer<Float>) -> Void
    typealias LossScratchFn = @convention(c) (Int32, Int32, Int32) -> Int

    static let library: ModelLibrary = {
        let m = try! ModelResolver.resolve(nil, size: (128, 128))
        return m.library
    }()

    func testMultiboxTargetMatchesD2L() throws {
        let fx = try Fixtures.load("multibox_cases")
        let target = try Self.library.symbol("ssd_multibox_target", as: TargetFn.self)
        let scratchSize = try Self.library.symbol("ssd_target_scratch_floats", as: TargetScratchFn.self)
        for k in 0..<7 {
            let anchors = fx["case\(k).anchors"]!, labels = fx["case\(k).labels"]!
            let a = anchors.shape[1], g = labels.shape[1]
            var bl = [Float](repeating: 0, count: 4 * a), bm = bl, cl = [Float](repeating: 0, count: a)
            var scratch = [Float](repeating: 0, count: scratchSize(Int32(a), Int32(g)))
            target(1, Int32(a), Int32(g), anchors.floats, labels.floats, 0.5, &bl, &bm, &cl, &scratch)
            XCTAssertEqual(cl, fx["case\(k).cls_labels"]!.floats, "case\(k) cls_labels")
            XCTAssertEqual(bm, fx["case\(k).bbox_masks"]!.floats, "case\(k) bbox_masks")
            let ref = fx["case\(k).bbox_labels"]!.floats
            XCTAssertLessThanOrEqual(zip(bl, ref).map { abs($0 - $1) }.max()!, 1e-5, "case\(k) bbox_labels")
        }
    }

    func testMultiboxDetectionMatchesD2L() throws {
        let fx = try Fixtures.load("multibox_cases")
        let detect = try Self.library.symbol("ssd_multibox_detection", as: DetectFn.self)
        let scratchSize = try Self.library.symbol("ssd_detection_scratch_floats", as: DetectScratchFn.self)
        for k in 0..<4 {
            let probs = fx["det\(k).probs"]!, offsets = fx["det\(k).offsets"]!, anchors = fx["det\(k).anchors"]!
            let a = probs.shape[1], q1 = probs.shape[2]
            var out = [Float](repeating: 0, count: a * 6)
            var scratch = [Float](repeating: 0, count: scratchSize(Int32(a)))
            detect(1, Int32(a), Int32(q1), probs.floats, offsets.floats, anchors.floats, 0.5, 0.009999999, &out, &scratch)
            let ref = fx["det\(k).detection"]!.floats
            // Kept rows come first in NMS order: with no ties, the order itself matches.
            XCTAssertLessThanOrEqual(zip(out, ref).map { abs($0 - $1) }.max()!, 1e-5, "det\(k)")
        }
    }

    func testLossVariantsMatchAutograd() throws {
        let fx = try Fixtures.load("loss_variants")
        let loss = try Self.library.symbol("ssd_multibox_loss", as: LossFn.self)
        let scratchSize = try Self.library.symbol("ssd_loss_scratch_floats", as: LossScratchFn.self)
        let cls = fx["cls_preds"]!
        let (n, a, q1) = (cls.shape[0], cls.shape[1], cls.shape[2])
        var configs: [LossConfigC] = Array(repeating: LossConfigC(), count: 5)
        configs[1].smooth = 1; configs[1].sigma = 1
        configs[2].smooth = 1; configs[2].sigma = 3
        configs[3].focal = 1; configs[3].gamma = 2; configs[3].alpha = 0.25
        configs[4].clsWeight = 2; configs[4].bboxWeight = 0.5
        for (k, var cfg) in configs.enumerated() {
            var per = [Float](repeating: 0, count: n), dcls = [Float](repeating: 0, count: n * a * q1)
            var dbbox = [Float](repeating: 0, count: n * 4 * a), metrics = [Double](repeating: 0, count: 4)
            var scratch = [Float](repeating: 0, count: scratchSize(Int32(n), Int32(a), Int32(q1)))
            withUnsafeBytes(of: &cfg) { c in
                loss(c.baseAddress!, Int32(n), Int32(a), Int32(q1), cls.floats, fx["bbox_preds"]!.floats, fx["cls_labels"]!.floats,
                     fx["bbox_labels"]!.floats, fx["bbox_masks"]!.floats, &per, &dcls, &dbbox, &metrics, &scratch)
            }
            XCTAssertLessThanOrEqual(relativeError(per, fx["v\(k).per_example"]!.floats), 1e-5, "v\(k) per_example")
            XCTAssertLessThanOrEqual(relativeError(dcls, fx["v\(k).dcls"]!.floats), 1e-5, "v\(k) dcls")
            XCTAssertLessThanOrEqual(relativeError(dbbox, fx["v\(k).dbbox"]!.floats), 1e-5, "v\(k) dbbox")
        }
    }
}
