import ArgumentParser
import Foundation
import Tessera

@main
struct TesseraBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tessera-bench",
        abstract: "Tessera's benchmark harness: Tessera and its peers side by side, in one run.",
        subcommands: [Synthesize.self, FormatBench.self, ImportBench.self, KernelBench.self]
    )
}

struct Synthesize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a generated model that uses every layout and quantization.")

    @Argument var output: String
    @Option(help: "Dense float32 megabytes added to the small model (multiples of 4).") var extraMegabytes = 0
    @Option var seed: UInt64 = 1
    @Option(help: "Buffer codec: none or zstd.") var codec = "none"
    @Flag var force = false

    func run() throws {
        var model = SyntheticModel(seed: seed)
        let tensors = try model.tensors(extraLayers: extraMegabytes / 4)
        let options = WriteOptions(codec: codec == "zstd" ? .zstd : .none, replaceExisting: force)
        try TessWriter.write(tensors, sections: [try Section.metadata(["producer": "tessera-bench synthesize", "seed": Int(seed)])],
                             to: output, options: options)
    }
}

struct FormatBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "format",
        abstract: "Open+list time against file size, checksum throughput, pack against zstd -3 -T1.")

    @Option(help: "Size of the large file in MB.") var megabytes = 200
    @Option(help: "Scratch folder (default: a new folder under /tmp).") var work: String?
    @Option(help: "Repetitions of each timed step (the best is reported).") var repeats = 5

    func run() throws {
        let folder = work ?? NSTemporaryDirectory() + "tessera-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { if work == nil { try? FileManager.default.removeItem(atPath: folder) } }

        let small = folder + "/small.tess", large = folder + "/large.tess"
        // Same tensors, ten times the bytes: 1024x1024 float32 layers against 324x324 ones.
        var model = SyntheticModel(seed: 7)
        let layers = megabytes / 4
        try TessWriter.write(try model.tensors(extraLayers: layers, layerSide: 324), to: small, options: WriteOptions(replaceExisting: true))
        try TessWriter.write(try model.tensors(extraLayers: layers), to: large, options: WriteOptions(replaceExisting: true))
        let smallSize = try TessFile.open(small).fileSize, largeSize = try TessFile.open(large).fileSize
        print("Tessera format benchmark (one thread; best of \(repeats); \(ProcessInfo.processInfo.activeProcessorCount) cores)")
        print("files: \(mb(smallSize)) MB and \(mb(largeSize)) MB uncompressed, \(layers + 8) tensors each, synthetic normal weights\n")

        // 1. Open and list: maps the file and validates the index; must not grow with file size.
        func openAndList(_ path: String) throws -> Double {
            try best(repeats * 20) {
                let file = try TessFile.open(path)
                precondition(file.tensors.map(\.name).count == file.tensors.count)
            }
        }
        let openSmall = try openAndList(small), openLarge = try openAndList(large)
        row("open + list tensors, \(mb(smallSize)) MB file", String(format: "%.1f µs", openSmall * 1e6))
        row("open + list tensors, \(mb(largeSize)) MB file", String(format: "%.1f µs", openLarge * 1e6),
            String(format: "%.2fx the small file's time for %.1fx the bytes", openLarge / openSmall, Double(largeSize) / Double(smallSize)))

        // 2. Checksums: XXH3-64 over bytes already in memory, then a full integrity check.
        let bytes = readFile(large)
        let hash = try best(repeats) { _ = Checksum.xxh3(bytes) }
        row("XXH3-64 checksum throughput", gbps(bytes.count, hash), "target >= 5 GB/s")
        let file = try TessFile.open(large)
        let verify = try best(repeats) { try file.verifyIntegrity() }
        row("verify integrity (all checksums + rules)", gbps(largeSize, verify))

        // 3. pack --level 3 (the CLI, end to end) next to zstd -3 -T1 on the same bytes.
        let tessera = siblingExecutable("tessera")
        let packed = folder + "/packed.tess"
        let pack = try best(repeats) { try run(tessera, ["pack", large, "-o", packed, "--level", "3", "--force"]) }
        let zst = folder + "/large.zst"
        let zstd = try best(repeats) { try run("/usr/bin/zstd", ["-3", "-T1", "-q", "-f", large, "-o", zst]) }
        let packedSize = try TessFile.open(packed).fileSize
        let zstSize = Int((try FileManager.default.attributesOfItem(atPath: zst)[.size] as? NSNumber)?.intValue ?? 0)
        row("tessera pack --level 3", gbps(largeSize, pack, unit: "MB/s"), String(format: "ratio %.3fx", Double(largeSize) / Double(packedSize)))
        row("zstd -3 -T1 (same file)", gbps(largeSize, zstd, unit: "MB/s"), String(format: "ratio %.3fx", Double(largeSize) / Double(zstSize)))
        row("pack throughput / zstd throughput", String(format: "%.2fx", zstd / pack), "target >= 0.8x")
        let unpacked = folder + "/unpacked.tess"
        let unpack = try best(repeats) { try run(tessera, ["unpack", packed, "-o", unpacked, "--force"]) }
        row("tessera unpack", gbps(largeSize, unpack, unit: "MB/s"), readFile(unpacked) == bytes ? "restores the original bytes" : "MISMATCH")
    }

    // MARK: helpers

    func best(_ n: Int, _ body: () throws -> Void) throws -> Double {
        var fastest = Double.infinity
        for _ in 0 ..< max(n, 1) {
            let start = DispatchTime.now().uptimeNanoseconds
            try body()
            fastest = min(fastest, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        return fastest
    }

    func run(_ executable: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw ValidationError("\(executable) \(arguments.joined(separator: " ")) exited with \(process.terminationStatus)")
        }
    }

    func siblingExecutable(_ name: String) -> String {
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: me).deletingLastPathComponent().appendingPathComponent(name).path
    }

    func readFile(_ path: String) -> [UInt8] { Array(FileManager.default.contents(atPath: path) ?? Data()) }
    func mb(_ bytes: Int) -> String { String(format: "%.1f", Double(bytes) / 1e6) }

    func gbps(_ bytes: Int, _ seconds: Double, unit: String = "GB/s") -> String {
        let scale = unit == "GB/s" ? 1e9 : 1e6
        return String(format: "%.2f \(unit)", Double(bytes) / seconds / scale)
    }

    func row(_ what: String, _ value: String, _ note: String = "") {
        print(what.padding(toLength: 46, withPad: " ", startingAt: 0) + value.padding(toLength: 14, withPad: " ", startingAt: 0) + note)
    }
}
