import ArgumentParser
import Foundation
import Tessera
import TesseraConvert
import TesseraONNX

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Convert an ONNX model to a .tess file.")

    @Argument(help: "An ONNX model (.onnx); external data is read from its folder.")
    var model: String

    @OptionGroup var out: OutputOptions

    @Option(help: "Buffer compression: zstd[:LEVEL] (distribution form) or none (zero-copy form).")
    var compress = "zstd:3"

    @Option(help: "Quantize GEMM weights: int8 (per output channel), int8:group=N or int4:group=N (groups along the reduction axis).")
    var quantize: String?

    @Flag(help: "Asymmetric quantization: unsigned codes with zero points.")
    var asymmetric = false

    @Option(help: "Leave tensors with fewer elements than this unchanged.")
    var minimumElements = ConversionPolicy.defaultMinimumElements

    func validate() throws {
        _ = try codec()
        _ = try policy()
    }

    func policy() throws -> ConversionPolicy {
        if asymmetric && quantize == nil { throw ValidationError("--asymmetric needs --quantize") }
        guard minimumElements >= 0 else { throw ValidationError("--minimum-elements must not be negative") }
        do {
            return ConversionPolicy(quantization: try quantize.map { try QuantizationSpec.parse($0, asymmetric: asymmetric) },
                                    minimumElements: minimumElements)
        } catch let error as ConvertError {
            throw ValidationError(error.description)
        }
    }

    /// Parse `--compress`.
    func codec() throws -> (Codec, Int) {
        if compress == "none" { return (.none, 0) }
        let parts = compress.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.first == "zstd", parts.count <= 2 else {
            throw ValidationError("--compress must be none, zstd or zstd:LEVEL, got '\(compress)'")
        }
        guard parts.count == 2 else { return (.zstd, 3) }
        guard let level = Int(parts[1]), Limits.zstdLevels.contains(level) else {
            throw ValidationError("zstd level must be in \(Limits.zstdLevels.lowerBound)...\(Limits.zstdLevels.upperBound), got '\(parts[1])'")
        }
        return (.zstd, level)
    }

    func run() throws {
        try reportingErrors {
            let (codec, level) = try codec()
            let options = WriteOptions(codec: codec, zstdLevel: level, replaceExisting: out.force)
            let policy = try policy()
            let summary = try ONNXImporter.convert(model: model, to: out.output, options: options,
                                                   conversion: policy.metadata, transform: policy.transform)
            let written = try TessFile.open(out.output).fileSize
            let data = summary.tensors.reduce(0) { $0 + $1.sourceBytes }
            let quantized = summary.tensors.filter { $0.quantization != nil }.count
            print("\(model) -> \(out.output): \(summary.tensors.count) tensors (\(data) bytes of data), " +
                  "\(summary.sourceFileBytes) -> \(written) bytes (\(String(format: "%.3f", Double(written) / Double(max(summary.sourceFileBytes, 1))))x), " +
                  (policy.isLossless ? "lossless" : "\(quantized) tensors quantized \(policy.quantization!)"))
        }
    }
}

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Rebuild the ONNX model of a converted .tess file.")

    @Argument(help: "A .tess file converted from ONNX.")
    var input: String

    @OptionGroup var out: OutputOptions

    @Option(help: "Move tensor data to OUT.data when the model's tensors exceed this many bytes (protobuf cannot exceed 2 GiB).")
    var externalDataThreshold = ExportOptions().externalDataThreshold

    @Flag(help: "Write quantized weights as integer initializers plus DequantizeLinear nodes instead of dequantizing them.")
    var keepQuantized = false

    func run() throws {
        try reportingErrors {
            let options = ExportOptions(replaceExisting: out.force, externalDataThreshold: externalDataThreshold,
                                        keepQuantized: keepQuantized)
            let summary = try ONNXExporter.export(try TessFile.open(input), to: out.output, options: options)
            var line = "\(input) -> \(out.output): \(summary.tensors) tensors, \(summary.modelBytes) bytes"
            if let external = summary.externalData { line += " + \(external.bytes) bytes of external data in \(external.path)" }
            print(line)
        }
    }
}
