import Foundation
import TesseraConvert

/// The conversion report as a table (stdout) or JSON (--report and the file's metadata).
enum ReportFormatter {
    static func json<T: Encodable>(_ report: T) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return try encoder.encode(report)
    }

    /// The part of the report a .tess file's metadata keeps, as a JSON object.
    static func embeddedObject(_ report: ConversionReport) throws -> Any {
        try JSONSerialization.jsonObject(with: try json(report.embedded))
    }

    static func table(_ report: ConversionReport, source: String, output: String, quiet: Bool) -> String {
        func mb(_ n: Int) -> String { String(format: "%.2f MB", Double(n) / 1e6) }
        var lines: [String] = []
        if !quiet {
            let header = ["name", "shape", "role", "layout", "sparsity", "bytes", "->", "rel.err", "SNR dB", "cosine", "why"]
            let rows = report.tensors.map { t -> [String] in
                let f = t.fidelity
                return [t.name, "[" + t.shape.map(String.init).joined(separator: ",") + "]", t.role,
                        t.layout + (t.quantization.map { " " + $0 } ?? ""),
                        String(format: "%.0f%%->%.0f%%", t.sparsityBefore * 100, t.sparsityAfter * 100),
                        String(t.bytesBefore), String(t.bytesAfter),
                        f.bitExact ? "exact" : String(format: "%.2e", f.relativeError),
                        f.snrDB.map { String(format: "%.1f", $0) } ?? "-",
                        f.bitExact ? "1" : String(format: "%.6f", f.cosine), t.reason]
            }
            lines += TextTable.lines([header] + rows, rightAligned: [4, 5, 6, 7, 8, 9])
        }
        let lossy = report.tensors.filter { !$0.fidelity.bitExact }.count
        lines.append("\(source.terminalSafe) -> \(output.terminalSafe): \(report.tensors.count) tensors, \(lossy == 0 ? "lossless" : "\(lossy) changed"); " +
                     "tensor data \(mb(report.bytesBefore)) -> \(mb(report.bytesAfter)); " +
                     "file \(mb(report.sourceFileBytes)) -> \(mb(report.fileBytes)) " +
                     String(format: "(%.3fx the source)", Double(report.fileBytes) / Double(max(report.sourceFileBytes, 1))))
        if let c = report.calibration {
            if let worst = c.layers.max(by: { $0.relativeError < $1.relativeError }) {
                let mean = c.layers.reduce(0) { $0 + $1.relativeError } / Double(c.layers.count)
                lines.append("calibrated on \(c.file.terminalSafe) (\(c.samples) samples, sha256 \(c.sha256.prefix(12))): \(c.layers.count) weights, " +
                             String(format: "relative output error mean %.4f, worst %.4f", mean, worst.relativeError) + " (\(worst.tensor.terminalSafe))")
            } else {
                lines.append("calibrated on \(c.file.terminalSafe): no weight could be calibrated (float32 MatMul, Gemm or group-1 Conv weights that are pruned or quantized); the others are uncalibrated")
            }
        } else if report.tensors.contains(where: { $0.prune != nil || $0.quantization != nil && !$0.fidelity.bitExact }) {
            lines.append("uncalibrated: magnitude pruning and round-to-nearest; --calibration DATA.npz solves them on representative inputs")
        }
        return lines.joined(separator: "\n")
    }
}

/// "converting 12/167" on a terminal's stderr, nothing when stderr is piped.
final class ProgressLine {
    private let label: String
    private let enabled = isatty(2) != 0
    private var shown = false

    init(label: String) { self.label = label }

    func update(_ done: Int, _ total: Int) {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\(label) \(done)/\(total)".utf8))
        shown = true
    }

    func finish() {
        if shown { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
    }
}
