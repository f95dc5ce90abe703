// swift-tools-version:5.10
// libFuzzer targets, kept out of the main package so that `swift build` there never needs the
// fuzzer runtime. Build and run with `make fuzz` (see the Makefile).
import PackageDescription

let package = Package(
    name: "TesseraFuzzTesting",
    dependencies: [.package(name: "Tessera", path: "..")],
    targets: [
        .target(name: "FuzzSupport", dependencies: [.product(name: "TesseraONNX", package: "Tessera"),
                                                    .product(name: "TesseraRuntime", package: "Tessera")]),
        .executableTarget(name: "FuzzReader", dependencies: ["FuzzSupport"]),
        .executableTarget(name: "FuzzImporter", dependencies: ["FuzzSupport"]),
        .executableTarget(name: "FuzzGraph", dependencies: ["FuzzSupport"]),
    ]
)
