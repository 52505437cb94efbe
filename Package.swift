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
        // Passes, lowering to kernels, memory planning, C emission, clang driver, cache.
        .target(name: "SSDCompiler", dependencies: ["SSDGraph"]),
        // Loading a compiled library and running it: forward, detection, training.
        .target(name: "SSDRuntime", dependencies: ["SSDCompiler", "SSDModels", "SSDIO"]),
        .executableTarget(
            name: "ssdc",
            dependencies: [
                "SSDRuntime",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "SSDIOTests", dependencies: ["SSDIO"]),
        .testTarget(name: "SSDGraphTests", dependencies: ["SSDGraph", "SSDModels"]),
        .testTarget(name: "SSDCompilerTests", dependencies: ["SSDCompiler", "SSDModels", "SSDRuntime"], exclude: ["Golden"]),
        .testTarget(name: "SSDRuntimeTests", dependencies: ["SSDRuntime"]),
    ]
)
