import ArgumentParser
import Foundation
import Tessera
import TesseraCalibrate
import TesseraConvert
import TesseraONNX

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert an ONNX model to a .tess file: prune, quantize, choose layouts, compress.",
        discussion: """
        By default the conversion is lossless and each tensor takes its smallest exact layout \
        (a model already pruned 2:4 or to high sparsity is detected and stored as sparse24 or CSR). \
        --prune and --quantize apply to GEMM weights (MatMul, Gemm, Conv) with at least \
        --minimum-elements elements, and --quantize also to embedding tables (Gather data, one scale \
        per row) unless --no-quantize-embeddings; a --recipe file overrides that per tensor.
        """)

    @Argument(help: "An ONNX model (.onnx); external data is read from its folder.")
    var model: String

    @OptionGroup var out: OutputOptions

    @Option(help: "Buffer compression: zstd[:LEVEL] (distribution form) or none (zero-copy form).")
    var compress = "zstd:3"

    @Option(help: "Prune GEMM weights: 2:4 (along the reduction axis), magnitude:S or global-magnitude:S (S = fraction zeroed).")
    var prune: String?

    @Option(help: "Quantize GEMM weights: int8 (per output channel), int8:group=N or int4:group=N (groups along the reduction axis).")
    var quantize: String?

    @Flag(help: "Asymmetric quantization: unsigned codes with zero points.")
    var asymmetric = false

    @Option(help: "Layout of every tensor: auto (smallest exact), dense, csr or sparse24.")
    var layout: String?

    @Option(help: "Leave tensors with fewer elements than this unchanged (default \(Recipe.defaultMinimumElements)).")
    var minimumElements: Int?

    @Flag(help: "With --quantize, leave embedding tables (Gather data) in float; by default they are quantized per row.")
    var noQuantizeEmbeddings = false

    @Option(help: "Calibration set: an .npz (np.savez) of representative model inputs, arrays named after the graph inputs, batch axis first. With it, --prune and --quantize solve each MatMul/Gemm/Conv weight on data (SparseGPT, GPTQ).")
    var calibration: String?

    @Flag(help: "With --calibration and pruning: refit each output's kept weights by exact least squares on the final mask (slower: O(outputs x kept^3)).")
    var calibrationRefit = false

    @Flag(help: "With --calibration: shift each calibrated weight's constant bias by its mean output change on the calibration set.")
    var biasCorrection = false

    @Option(help: "Threads for the calibration runs.")
    var threads = 1

    @Option(help: "A JSON recipe: defaults and per-tensor rules matched by glob (see README). Flags override its defaults.")
    var recipe: String?

    @Option(help: "Also write the conversion report as JSON to this file.")
    var report: String?

    @Flag(help: "Print only the totals, not the per-tensor table.")
    var quiet = false

    @OptionGroup var resources: ResourceOptions

    func validate() throws {
        _ = try codec()
        if asymmetric && quantize == nil && recipe == nil { throw ValidationError("--asymmetric needs --quantize") }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        if (calibrationRefit || biasCorrection) && calibration == nil && recipe == nil {
            throw ValidationError("--calibration-refit and --bias-correction need --calibration")
        }
        if recipe == nil {   // flags alone: a mistake in them is a usage error; a recipe file's are checked in run()
            do { _ = try resolvedRecipe() } catch let error as ConvertError { throw ValidationError(error.description) }
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

    /// The recipe file (if any) with the flags applied over its defaults.
    func resolvedRecipe() throws -> Recipe {
        var r = try recipe.map(Recipe.load) ?? Recipe()
        if let prune { r.prune = prune }
        if let quantize { r.quantize = quantize }
        if asymmetric { r.asymmetric = true }
        if let layout { r.layout = layout }
        if let minimumElements { r.minimumElements = minimumElements }
        if noQuantizeEmbeddings { r.quantizeEmbeddings = false }
        if let calibration { r.calibration = calibration }
        try r.validate()
        return r
    }

    func run() throws {
        try reportingErrors {
            resources.apply()
            let (codec, level) = try codec()
            // The .tess file and the report appear together or not at all; neither may replace
            // the model, its external data or the recipe.
            let resolved = try resolvedRecipe()
            let outputs = OutputGroup(inputs: [model] + (recipe.map { [$0] } ?? []) + (resolved.calibration.map { [$0] } ?? []))
            let reportFile = try report.map { try outputs.file($0, replaceExisting: out.force) }
            var calibrated: [String: Tensor] = [:]
            var calibrationReport: CalibrationReport?
            if let path = resolved.calibration {
                var options = Calibrator.Options()
                options.threads = threads
                options.refit = calibrationRefit
                options.biasCorrection = biasCorrection
                let calibrator = try Calibrator(model: model, calibration: path, recipe: resolved, options: options)
                for warning in calibrator.warnings { FileHandle.standardError.write(Data("tessera: warning: \(warning)\n".utf8)) }
                calibrated = calibrator.weights
                calibrationReport = calibrator.report
            }
            let converter = try Converter(recipe: resolved, calibrated: calibrated, calibration: calibrationReport)
            if converter.needsFirstPass { try ONNXImporter.scan(model: model, visit: converter.observe) }
            let progress = ProgressLine(label: "converting")
            let summary = try ONNXImporter.convert(
                model: model, to: out.output, options: WriteOptions(codec: codec, zstdLevel: level, replaceExisting: out.force),
                outputs: outputs,
                transform: converter.convert,
                metadata: { ["conversion": try ReportFormatter.embeddedObject(converter.report)] },
                progress: progress.update)
            progress.finish()
            converter.finish(sourceFileBytes: summary.sourceFileBytes, fileBytes: summary.fileBytes)
            try reportFile?.write(Array(try ReportFormatter.json(converter.report)))
            try outputs.commit()
            print(ReportFormatter.table(converter.report, source: model, output: out.output, quiet: quiet))
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

    @OptionGroup var resources: ResourceOptions

    func run() throws {
        try reportingErrors {
            resources.apply()
            let options = ExportOptions(replaceExisting: out.force, externalDataThreshold: externalDataThreshold,
                                        keepQuantized: keepQuantized)
            let summary = try ONNXExporter.export(try TessFile.open(input), to: out.output, options: options)
            var line = "\(input) -> \(out.output): \(summary.tensors) tensors, \(summary.modelBytes) bytes"
            if let external = summary.externalData { line += " + \(external.bytes) bytes of external data in \(external.path)" }
            print(line.terminalSafe)
        }
    }
}
