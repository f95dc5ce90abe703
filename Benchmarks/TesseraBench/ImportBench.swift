import ArgumentParser
import Foundation
import Tessera

/// `tessera convert` (lossless) against `onnx.load` in Python on the same model, in one run:
/// wall time (best of N) and peak resident memory of each process (GNU time's %M).
struct ImportBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "onnx",
        abstract: "ONNX conversion throughput and peak RSS next to zstd, onnx.load and quantize_dynamic.")

    @Option(help: "The ONNX model (the MiniLM encoder from PyPI in `make bench`).") var model: String
    @Option(help: "Python with onnx installed.") var python = ".venv/bin/python"
    @Option(help: "Repetitions (the best time is reported).") var repeats = 5
    @Option(help: "Recipe for the lossy conversion row.") var recipe = "recipes/minilm-2to4-int8.json"

    func run() throws {
        let bench = FormatBench()
        let folder = NSTemporaryDirectory() + "tessera-bench-onnx-\(getpid())"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let size = (try FileManager.default.attributesOfItem(atPath: model)[.size] as? NSNumber)?.intValue ?? 0
        let tessera = bench.siblingExecutable("tessera")
        print("ONNX import benchmark: \(URL(fileURLWithPath: model).lastPathComponent), \(bench.mb(size)) MB (best of \(repeats))")

        func measure(_ label: String, _ command: [String]) throws {
            var best = (seconds: Double.infinity, rss: 0)
            for _ in 0 ..< repeats {
                let r = try timed(command)
                if r.seconds < best.seconds { best = r }
            }
            bench.row(label, String(format: "%.3f s", best.seconds),
                      String(format: "%6.0f MB/s of source   peak RSS %4.0f MB = %.2fx the model",
                             Double(size) / best.seconds / 1e6, Double(best.rss) / 1e6, Double(best.rss) / Double(size)))
        }
        try measure("tessera convert (lossless, zstd-3)", [tessera, "convert", model, "-o", folder + "/m.tess", "--force", "--quiet"])
        try measure("tessera convert (lossless, none)", [tessera, "convert", model, "-o", folder + "/m0.tess", "--compress", "none", "--force", "--quiet"])
        try measure("tessera convert (2:4+int8 recipe, zstd-3)", [tessera, "convert", model, "-o", folder + "/m24.tess", "--recipe", recipe, "--force", "--quiet"])
        try measure("zstd -3 -T1 (same ONNX file)", ["/usr/bin/zstd", "-3", "-T1", "-q", "-f", model, "-o", folder + "/m.zst"])
        try measure("tessera export (back to ONNX)", [tessera, "export", folder + "/m.tess", "-o", folder + "/m.onnx", "--force"])
        try measure("python: import onnx (baseline)", [python, "-c", "import onnx"])
        try measure("python: import onnx; onnx.load", [python, "-c", "import onnx, sys; onnx.load(sys.argv[1])", model])
        try measure("python: import quantize_dynamic (baseline)", [python, "-c", "from onnxruntime.quantization import quantize_dynamic"])
        try measure("python: quantize_dynamic QInt8", [python, "-c",
            "import sys; from onnxruntime.quantization import quantize_dynamic, QuantType; quantize_dynamic(sys.argv[1], sys.argv[2], weight_type=QuantType.QInt8)",
            model, folder + "/dynamic.onnx"])
        func bytes(_ path: String) -> Int { (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)??.intValue ?? 0 }
        bench.row("file sizes (MB)", "", "source \(bench.mb(size)), lossless .tess \(bench.mb(bytes(folder + "/m.tess"))), " +
                  "2:4+int8 .tess \(bench.mb(bytes(folder + "/m24.tess"))), zstd -3 \(bench.mb(bytes(folder + "/m.zst"))), " +
                  "quantize_dynamic \(bench.mb(bytes(folder + "/dynamic.onnx")))")
    }

    /// Wall time and peak RSS (bytes) of one run of `command`, via GNU time.
    func timed(_ command: [String]) throws -> (seconds: Double, rss: Int) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/time")
        process.arguments = ["-f", "%e %M"] + command
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let output = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0,
              let last = output.split(separator: "\n").last?.split(separator: " "), last.count == 2,
              let seconds = Double(last[0]), let kilobytes = Int(last[1]) else {
            throw ValidationError("\(command.joined(separator: " ")) failed: \(output)")
        }
        return (seconds, kilobytes * 1024)
    }
}
