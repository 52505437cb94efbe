/// d2l's `multibox_prior` (SPEC section 2), in float32 with the same order of operations as
/// the PyTorch code, so the compiler can fold anchors to constants that match PyTorch.
public enum MultiboxPrior {
    /// Anchors of an h x w feature map: (h*w*(sizes+ratios-1)) x 4 corners, row-major pixels,
    /// per pixel (s1,r1), ..., (sn,r1), (s1,r2), ..., (s1,rm).
    public static func anchors(height h: Int, width w: Int, sizes: [Float], ratios: [Float]) -> [Float] {
        let stepH = Float(1.0 / Double(h)), stepW = Float(1.0 / Double(w))
        var ws: [Float] = [], hs: [Float] = []
        let r0 = ratios[0].squareRoot()
        for s in sizes {
            ws.append(s * r0 * Float(h) / Float(w))
            hs.append(s / r0)
        }
        for r in ratios.dropFirst() {
            ws.append(sizes[0] * r.squareRoot() * Float(h) / Float(w))
            hs.append(sizes[0] / r.squareRoot())
        }
        var out: [Float] = []
        out.reserveCapacity(h * w * ws.count * 4)
        for y in 0..<h {
            let cy = (Float(y) + 0.5) * stepH
            for x in 0..<w {
                let cx = (Float(x) + 0.5) * stepW
                for k in 0..<ws.count {
                    let hw = ws[k] / 2, hh = hs[k] / 2
                    out += [cx + -hw, cy + -hh, cx + hw, cy + hh]
                }
            }
        }
        return out
    }
}
