import ArgumentParser
import Foundation
import Tessera
import TesseraONNX
import TesseraVerify

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a .tess file: integrity, and with --source its tensors and kernels against the ONNX model.",
        discussion: """
        Level 1 (always): every checksum and structural rule.
        Level 2 (--source): each tensor against the source: bit-exact where lossless, else max abs error, \
        relative Frobenius error, SNR and cosine.
        Level 3 (--source): each GEMM weight runs through the kernel for its stored layout on seeded \
        activations and is compared with a dense float GEMM on the source weights.
        --max-rel-error and --min-cosine turn the numbers into the exit status.
        """)

    @Argument(help: "A .tess file.")
    var file: String

    @Option(help: "The ONNX model the file was converted from (enables levels 2 and 3).")
    var source: String?

    @Flag(help: "Print the report as JSON.")
    var json = false

    @Option(help: "Fail when a tensor or kernel output that is not bit-exact has a larger relative error.")
    var maxRelError: Double?

    @Option(help: "Fail when a tensor or kernel output that is not bit-exact has a lower cosine similarity.")
    var minCosine: Double?

    @Option(help: "Seed of the activations for the kernel checks.")
    var seed: UInt64 = 0

    @Option(help: "Activation rows per kernel check.")
    var batch = 8

    @Option(help: "Threads for the kernel checks.")
    var threads = ProcessInfo.processInfo.activeProcessorCount

    func validate() throws {
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1") }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        if (maxRelError != nil || minCosine != nil) && source == nil {
            throw ValidationError("--max-rel-error and --min-cosine need --source")
        }
    }

    func run() throws {
        try reportingErrors {
            let start = Date()
            let tess = try TessFile.open(file)
            let checked = try tess.verifyIntegrity()
            let integritySeconds = Date().timeIntervalSince(start)
            let integrity = "\(file): integrity OK: \(tess.tensors.count) tensors, \(tess.buffers.count) buffers, \(checked) decoded bytes checked in \(String(format: "%.3f", integritySeconds)) s"
            guard let source else {
                if json {
                    print(try jsonText(["file": file, "integrity": ["ok": true, "tensors": tess.tensors.count, "decoded_bytes": checked]]))
                } else {
                    print(integrity)
                }
                return
            }
            var tensors: [String: Tensor] = [:]
            try ONNXImporter.scan(model: source) { tensors[$0.name] = $0 }
            let options = SourceVerifier.Options(maxRelativeError: maxRelError, minCosine: minCosine, seed: seed, batch: batch, threads: threads)
            let report = try SourceVerifier.compare(tess, source: tensors, options: options)
            if json {
                let encoder = JSONEncoder()
                encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
                let sourceJSON = try JSONSerialization.jsonObject(with: encoder.encode(report))
                print(try jsonText(["file": file, "source": source, "passed": report.problemCount == 0,
                                    "integrity": ["ok": true, "tensors": tess.tensors.count, "decoded_bytes": checked],
                                    "comparison": sourceJSON]))
            } else {
                print(integrity)
                print(Self.table(report, source: source))
            }
            if report.problemCount > 0 {
                FileHandle.standardError.write(Data("tessera: error: \(file): \(report.problemCount) problem(s) against \(source)\n".utf8))
                Foundation.exit(1)
            }
        }
    }

    private func jsonText(_ object: [String: Any]) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys]), as: UTF8.self)
    }

    static func table(_ report: SourceReport, source: String) -> String {
        func number(_ v: Double?, _ format: String) -> String { v.map { String(format: format, $0) } ?? "-" }
        var lines = ["against \(source): \(report.tensors.count) tensors compared, \(report.kernelChecks) GEMM weights run through their kernels"]
        let header = ["tensor", "layout", "quant", "exact", "max abs err", "rel err", "SNR dB", "cosine", "kernel rel err", "kernel cosine"]
        var rows = [header]
        for t in report.tensors {
            let f = t.fidelity
            rows.append([t.name, t.layout, t.quantization ?? "-", f.map { $0.bitExact ? "yes" : "no" } ?? "-",
                         number(f?.maxAbsError, "%.3g"), number(f?.relativeError, "%.3g"), number(f?.snrDB, "%.1f"),
                         number(f?.cosine, "%.6f"), number(t.kernel?.relativeError, "%.3g"), number(t.kernel?.cosine, "%.6f")])
        }
        lines += TextTable.lines(rows)
        for name in report.missing { lines.append("FAIL: source tensor '\(name)' is not in the file") }
        for name in report.unexpected { lines.append("FAIL: tensor '\(name)' is not in the source") }
        for t in report.tensors { for p in t.problems { lines.append("FAIL: tensor '\(t.name)': \(p)") } }
        lines.append(report.problemCount == 0 ? "verdict: OK" : "verdict: FAILED (\(report.problemCount) problems)")
        return lines.joined(separator: "\n")
    }
}
