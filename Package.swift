// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Tessera",
    products: [
        .library(name: "Tessera", targets: ["Tessera"]),
        .executable(name: "tessera", targets: ["tessera"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // Thin system-library shims: headers and link flags only, no Swift.
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CXXHash", pkgConfig: "libxxhash", providers: [.apt(["libxxhash-dev"])]),

        // The format: model types, reader, writer, codecs, checksums, limits, errors.
        .target(name: "Tessera", dependencies: ["CZstd", "CXXHash"]),

        // The command-line tool: thin commands over the modules above.
        .executableTarget(
            name: "tessera",
            dependencies: ["Tessera", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),

        // Benchmark harness (run by `make bench`, never by `swift test`).
        .executableTarget(
            name: "tessera-bench",
            dependencies: ["Tessera", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Benchmarks/TesseraBench"
        ),

        .testTarget(name: "TesseraTests", dependencies: ["Tessera"]),
        // Runs the built `tessera` binary, as a user would.
        .testTarget(name: "TesseraCLITests", dependencies: ["Tessera", "tessera"]),
    ]
)
