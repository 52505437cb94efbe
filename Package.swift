// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "ssdc",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "ssdc", targets: ["ssdc"]),
        // Model files given to `ssdc compile` are built against this library.
        .library(name: "SSDGraph", type: .dynamic, targets: ["SSDGraph"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // libpng / libjpeg behind a small C shim (decode, encode, error capture).
        .target(
            name: "CImageIO",
            linkerSettings: [.linkedLibrary("png"), .linkedLibrary("jpeg")]
        ),
        // Files the tool reads and writes: safetensors, images, data sets.
        .target(name: "SSDIO", dependencies: ["CImageIO"]),
        // The typed graph IR and the DSL that builds it.
        .target(name: "SSDGraph"),
        // Built-in models written in the DSL (TinySSD).
        .target(name: "SSDModels", dependencies: ["SSDGraph"]),
        // The contract between compiler and runtime: the manifest, ABI version and symbol
        // names, plus the file helpers both sides use (atomic writes, the ELF check, the cache).
        .target(name: "SSDABI"),
        // Passes, lowering to kernels, memory planning, C emission, clang driver, cache.
        .target(name: "SSDCompiler", dependencies: ["SSDABI", "SSDGraph"]),
        // Loading a compiled library and running it: forward, detection, training.
        .target(name: "SSDRuntime", dependencies: ["SSDABI", "SSDGraph", "SSDIO"]),
        // What needs both: compiling a model on demand for a run, `ssdc export` bundles.
        .target(name: "SSDDriver", dependencies: ["SSDCompiler", "SSDRuntime", "SSDModels"]),
        .executableTarget(
            name: "ssdc",
            dependencies: [
                "SSDDriver",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "SSDIOTests", dependencies: ["SSDIO"]),
        .testTarget(name: "SSDGraphTests", dependencies: ["SSDGraph", "SSDModels"]),
        .testTarget(name: "SSDCompilerTests", dependencies: ["SSDABI", "SSDCompiler", "SSDModels", "SSDRuntime"], exclude: ["Golden"]),
        .testTarget(name: "SSDRuntimeTests", dependencies: ["SSDABI", "SSDRuntime", "SSDDriver", "SSDCompiler"]),
    ]
)
