import Foundation

/// Where ssdc caches what it builds (model libraries, runtime objects, model programs,
/// generated data sets): `SSDC_CACHE_DIR`, else ~/.cache/ssdc. The compiler writes it; the
/// runtime names it when a library taken from it is damaged.
public enum CacheDirectory {
    public static var path: String {
        let env = ProcessInfo.processInfo.environment
        if let d = env["SSDC_CACHE_DIR"] { return d }
        let home = env["HOME"] ?? NSTemporaryDirectory()
        return home + "/.cache/ssdc"
    }
}
