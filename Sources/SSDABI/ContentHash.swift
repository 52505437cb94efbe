import Foundation

/// A 128-bit content hash (two FNV-1a 64-bit lanes with different seeds) for cache keys.
/// Not cryptographic: it only has to tell different builds apart. In SSDABI because the
/// runtime uses it too, to check that the ranks of a data-parallel run hold the same
/// parameters.
public struct ContentHash {
    var a: UInt64 = 0xcbf29ce484222325
    var b: UInt64 = 0x84222325cbf29ce4
    public init() {}

    public mutating func add(_ data: Data) {
        data.withUnsafeBytes { raw in
            for byte in raw {
                a = (a ^ UInt64(byte)) &* 0x100000001b3
                b = (b ^ UInt64(byte)) &* 0x100000001b3 ^ (b >> 29)
            }
        }
        // Separate fields so ("ab","c") and ("a","bc") differ.
        a = (a ^ 0xff) &* 0x100000001b3
        b = (b ^ 0xfe) &* 0x100000001b3
    }

    public mutating func add(_ s: String) { add(Data(s.utf8)) }

    public var hex: String { String(format: "%016llx%016llx", a, b) }
}
