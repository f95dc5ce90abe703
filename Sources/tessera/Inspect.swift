import ArgumentParser
import Foundation
import Tessera

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the tensors of a .tess file.")

    @Argument(help: "A .tess file.")
    var file: String

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    @OptionGroup var resources: ResourceOptions

    func run() throws {
        try reportingErrors {
            resources.apply()
            let tess = try TessFile.open(file)
            let rows = try tess.tensors.indices.map { try tess.summary(of: $0) }
            if json {
                print(try Self.json(tess, rows))
            } else {
                print(Self.table(tess, rows))
            }
        }
    }

    static func table(_ tess: TessFile, _ rows: [TensorSummary]) -> String {
        let header = ["name", "dtype", "shape", "role", "layout", "quantization", "sparsity", "stored", "runtime", "codec", "MACs/row"]
        func macs(_ r: TensorSummary) -> String {
            guard let dense = r.denseMACs, let effective = r.effectiveMACs else { return "-" }
            return dense == effective ? String(dense) : "\(dense)->\(effective)"
        }
        var cells = rows.map { r in
            [r.name, r.dataType.name, "[" + r.shape.map(String.init).joined(separator: ",") + "]",
             r.role == .unknown ? "-" : r.role.description + (r.reductionAxis.map { " k=\($0)" } ?? ""),
             r.layout.description, r.quantization ?? "-", String(format: "%.1f%%", r.sparsity * 100),
             String(r.storedBytes), String(r.decodedBytes), r.codec, macs(r)]
        }
        let stored = rows.reduce(0) { $0 + $1.storedBytes }, decoded = rows.reduce(0) { $0 + $1.decodedBytes }
        let dense = rows.compactMap(\.denseMACs).reduce(0, +), effective = rows.compactMap(\.effectiveMACs).reduce(0, +)
        cells.append(["total (\(rows.count) tensors)", "", "", "", "", "", "", String(stored), String(decoded), "",
                      dense == effective ? String(dense) : "\(dense)->\(effective)"])
        let h = tess.header
        var out = ["\(tess.path): Tessera v\(h.majorVersion).\(h.minorVersion), \(tess.fileSize) bytes, alignment \(h.alignment)",
                   "(stored: bytes in the file; runtime: bytes held in memory to run it; MACs/row: dense -> effective multiply-adds per input row, k = reduction axis)",
]
        out += TextTable.lines([header] + cells, rightAligned: [6, 7, 8, 10])
        if let meta = tess.metadataJSON { out.append("metadata: \(meta.count) bytes of JSON") }
        out += calibrationLines(tess)
        if let graph = tess.graph { out.append("graph: \(graph.count) bytes") }
        return out.joined(separator: "\n")
    }

    /// The calibration the conversion ran, from the report in the file's metadata: the set and
    /// each calibrated weight's relative output error on it.
    static func calibrationLines(_ tess: TessFile) -> [String] {
        guard let meta = tess.metadataJSON,
              let document = (try? JSONSerialization.jsonObject(with: Data(meta))) as? [String: Any],
              let conversion = document["conversion"] as? [String: Any],
              let calibration = conversion["calibration"] as? [String: Any],
              let layers = calibration["layers"] as? [[String: Any]] else { return [] }
        let sequential = calibration["sequential"] as? Bool == true ? "sequential" : "one pass"
        var out = ["calibrated on \(calibration["file"] ?? "?") (\(calibration["samples"] ?? "?") samples, sha256 \(calibration["sha256"] ?? "?")), " +
                   "damp \(calibration["damp"] ?? "?"), block \(calibration["block_size"] ?? "?"), \(sequential):"]
        let rows = layers.map { layer -> [String] in
            ["\(layer["tensor"] ?? "")", "\(layer["method"] ?? "")", "\(layer["rows"] ?? "")",
             (layer["relative_output_error"] as? Double).map { String(format: "%.5f", $0) } ?? "?"]
        }
        out += TextTable.lines([["tensor", "method", "rows", "output error"]] + rows, rightAligned: [2, 3]).map { "  " + $0 }
        return out.map(\.terminalSafe)
    }

    static func json(_ tess: TessFile, _ rows: [TensorSummary]) throws -> String {
        let tensors: [[String: Any]] = rows.map { r in
            var o: [String: Any] = [
                "name": r.name, "dtype": r.dataType.name, "shape": r.shape, "layout": r.layout.description,
                "role": r.role.description, "sparsity": r.sparsity, "stored_bytes": r.storedBytes,
                "decoded_bytes": r.decodedBytes, "codec": r.codec,
            ]
            if let axis = r.reductionAxis { o["reduction_axis"] = axis }
            if let q = r.quantization { o["quantization"] = q }
            if let dense = r.denseMACs, let effective = r.effectiveMACs {
                o["dense_macs_per_row"] = dense
                o["effective_macs_per_row"] = effective
            }
            return o
        }
        var doc: [String: Any] = [
            "file": tess.path, "version": "\(tess.header.majorVersion).\(tess.header.minorVersion)",
            "file_bytes": tess.fileSize, "alignment": tess.header.alignment, "tensors": tensors,
            "stored_bytes": rows.reduce(0) { $0 + $1.storedBytes },
            "decoded_bytes": rows.reduce(0) { $0 + $1.decodedBytes },
            "dense_macs_per_row": rows.compactMap(\.denseMACs).reduce(0, +),
            "effective_macs_per_row": rows.compactMap(\.effectiveMACs).reduce(0, +),
        ]
        if let meta = tess.metadataJSON, let object = try? JSONSerialization.jsonObject(with: Data(meta)) {
            doc["metadata"] = object
        }
        let data = try JSONSerialization.data(withJSONObject: doc, options: [.prettyPrinted, .sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }
}
