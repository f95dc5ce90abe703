import ArgumentParser
import Foundation
import Tessera
import TesseraONNX
import TesseraRuntime
import TesseraDistribution
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
        Level 4 (--source): the source model and the file run through the graph executor on the same \
        inputs (--input files, else the model's test_data_set_* folders, else generated from the input \
        signature with --seed); per output: max abs error, lowest cosine, and top-1 agreement for class \
        scores (outputs made by Softmax, LogSoftmax or Sigmoid, read by ArgMax or TopK, or named with \
        --class-output) and integer labels.
        --max-rel-error and --min-cosine (levels 2-3), --min-output-cosine, --max-output-error and \
        --min-top1 (level 4) turn the numbers into the exit status.
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

    @Option(help: "Seed of the activations for the kernel checks and of generated model inputs.")
    var seed: UInt64 = 0

    @Option(name: .customLong("input"), help: "NAME=PATH (.npy or .pb): a model input for level 4 (repeatable).")
    var inputs: [String] = []

    @Option(name: .customLong("dim"), help: "NAME=N: the size of a symbolic input dim for generated inputs (repeatable).")
    var dims: [String] = []

    @Option(help: "Fail when an output's lowest per-sample cosine similarity is below this.")
    var minOutputCosine: Double?

    @Option(help: "Fail when an output's largest absolute difference is above this.")
    var maxOutputError: Double?

    @Option(help: "Fail when the fraction of samples whose top-1 class agrees is below this.")
    var minTop1: Double?

    @Option(name: .customLong("class-output"), help: "NAME: an output that holds class scores, besides those made by Softmax, LogSoftmax or Sigmoid or read by ArgMax (repeatable).")
    var classOutputs: [String] = []

    @Option(help: "Level 4 runs the file with these activations, the source always with float. float: int8 weights are scaled back and multiply float activations (the reference). int8: each activation row is quantized to uint8 and multiplies int8 weight codes in integers (W8A8, as onnxruntime's dynamic quantization; faster, outputs move by the activations' rounding).")
    var activations = ActivationArithmetic.float

    @Flag(help: "Skip level 4 (running both models).")
    var noRun = false

    @Flag(help: "Check the file against its signed release statement (FILE.sig, written by pull --trust) offline.")
    var signature = false

    @Option(help: "The signature envelope, if not FILE.sig.")
    var signatureFile: String?

    @Option(name: .customLong("trust"), help: "KEY.pub: a key the signature must be by (repeatable; required with --signature).")
    var trust: [String] = []

    @Option(help: "Activation rows per kernel check.")
    var batch = 8

    @Option(help: "Threads for the kernel checks.")
    var threads = ProcessInfo.processInfo.activeProcessorCount

    @OptionGroup var resources: ResourceOptions

    func validate() throws {
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1") }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        if (maxRelError != nil || minCosine != nil || hasRunThresholds || !inputs.isEmpty || !dims.isEmpty || !classOutputs.isEmpty) && source == nil {
            throw ValidationError("--max-rel-error, --min-cosine, --min-output-cosine, --max-output-error, --min-top1, --input, --dim and --class-output need --source")
        }
        if signature, trust.isEmpty { throw ValidationError("--signature needs --trust KEY.pub: a signature proves nothing without a key to trust") }
        if (signatureFile != nil || !trust.isEmpty), !signature { throw ValidationError("--signature-file and --trust go with --signature") }
        _ = try pairs(inputs, "--input")
        for (name, value) in try pairs(dims, "--dim") where Int(value).map({ $0 < 0 }) ?? true {
            throw ValidationError("--dim \(name)=\(value): the size must be a non-negative integer")
        }
    }

    func run() throws {
        GraphExecutor.keepFreedMemoryForReuse()
        try reportingErrors {
            resources.apply()
            let start = Date()
            let tess = try TessFile.open(file)
            let checked = try tess.verifyIntegrity()
            let graphReferences = try GraphSection.validate(tess)
            let integritySeconds = Date().timeIntervalSince(start)
            let graph = graphReferences.map { ", graph section parsed (\($0) tensor references)" } ?? ""
            var integrity = "\(file): integrity OK: \(tess.tensors.count) tensors, \(tess.buffers.count) buffers, \(checked) decoded bytes checked\(graph) in \(String(format: "%.3f", integritySeconds)) s"
            if signature { integrity += "\n" + (try checkSignature(tess)) }
            guard let source else {
                if json {
                    print(try jsonText(["file": file, "integrity": ["ok": true, "tensors": tess.tensors.count, "decoded_bytes": checked]]))
                } else {
                    print(integrity.terminalSafe)
                }
                return
            }
            var tensors: [String: Tensor] = [:]
            try ONNXImporter.scan(model: source) { tensors[$0.name] = $0 }
            let options = SourceVerifier.Options(maxRelativeError: maxRelError, minCosine: minCosine, seed: seed, batch: batch, threads: threads)
            let report = try SourceVerifier.compare(tess, source: tensors, options: options)
            let (endToEnd, skipped) = try runBoth(tess, source: source)
            let problems = report.problemCount + (endToEnd?.problemCount ?? 0) + (skipped != nil && hasRunThresholds ? 1 : 0)
            if json {
                let encoder = JSONEncoder()
                encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
                let sourceJSON = try JSONSerialization.jsonObject(with: encoder.encode(report))
                var document: [String: Any] = ["file": file, "source": source, "passed": problems == 0,
                                               "integrity": ["ok": true, "tensors": tess.tensors.count, "decoded_bytes": checked],
                                               "comparison": sourceJSON]
                if let endToEnd { document["end_to_end"] = try JSONSerialization.jsonObject(with: encoder.encode(endToEnd)) }
                if let skipped { document["end_to_end_skipped"] = skipped }
                print(try jsonText(document))
            } else {
                print(integrity.terminalSafe)
                print(Self.table(report, source: source))
                if let endToEnd { print(Self.table(endToEnd)) }
                if let skipped { print("level 4 skipped: \(skipped.terminalSafe)") }
                print(problems == 0 ? "verdict: OK" : "verdict: FAILED (\(problems) problems)")
            }
            if problems > 0 {
                fail("\(file): \(problems) problem(s) against \(source)")
            }
        }
    }

    /// The file against its signed statement: signature by a trusted key, every tensor and section digest.
    private func checkSignature(_ tess: TessFile) throws -> String {
        do {
            let path = signatureFile ?? file + ".sig"
            guard let data = FileManager.default.contents(atPath: path) else {
                throw DistributionError(.usage, "\(path): cannot read the signature (pull --trust writes FILE.sig)")
            }
            let envelope: Envelope
            do { envelope = try JSONDecoder().decode(Envelope.self, from: data) } catch {
                throw DistributionError(.untrusted, "\(path): not a DSSE signature envelope")
            }
            let statement = try Signing.verify(envelope, trusted: try trust.map(Signing.loadPublicKey))
            let present = try Release.check(tess, against: statement, allowMissing: true)
            let release = statement.predicate
            return "signature OK: release \(release.sequence) of \(release.repository), signed by a trusted key; \(present) of \(release.tensors.count) signed tensors present, all match"
        } catch let error as DistributionError {
            fail(error.description)
        }
    }

    private func jsonText(_ object: [String: Any]) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys]), as: UTF8.self)
    }

    static func table(_ report: SourceReport, source: String) -> String {
        func number(_ v: Double?, _ format: String) -> String { v.map { String(format: format, $0) } ?? "-" }
        var lines = ["against \(source.terminalSafe): \(report.tensors.count) tensors compared, \(report.kernelChecks) GEMM weights run through their kernels"]
        let header = ["tensor", "layout", "quant", "exact", "max abs err", "rel err", "SNR dB", "cosine", "kernel rel err", "kernel cosine"]
        var rows = [header]
        for t in report.tensors {
            let f = t.fidelity
            rows.append([t.name, t.layout, t.quantization ?? "-", f.map { $0.bitExact ? "yes" : "no" } ?? "-",
                         number(f?.maxAbsError, "%.3g"), number(f?.relativeError, "%.3g"), number(f?.snrDB, "%.1f"),
                         number(f?.cosine, "%.6f"), number(t.kernel?.relativeError, "%.3g"), number(t.kernel?.cosine, "%.6f")])
        }
        lines += TextTable.lines(rows)
        for name in report.missing { lines.append("FAIL: source tensor '\(name.terminalSafe)' is not in the file") }
        for name in report.unexpected { lines.append("FAIL: tensor '\(name.terminalSafe)' is not in the source") }
        for t in report.tensors { for p in t.problems { lines.append("FAIL: tensor '\(t.name.terminalSafe)': \(p.terminalSafe)") } }
        return lines.joined(separator: "\n")
    }

    private var hasRunThresholds: Bool { minOutputCosine != nil || maxOutputError != nil || minTop1 != nil }

    /// NAME=VALUE options as pairs.
    private func pairs(_ options: [String], _ flag: String) throws -> [(String, String)] {
        try options.map { option in
            let parts = option.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty else { throw ValidationError("\(flag) \(option): write NAME=VALUE") }
            return (parts[0], parts[1])
        }
    }

    /// Level 4, or why it could not run (a graph needing ops the executor lacks).
    private func runBoth(_ tess: TessFile, source: String) throws -> (EndToEndReport?, String?) {
        guard !noRun else { return (nil, "--no-run") }
        let sourceGraph = try ONNXGraph(model: source)
        let missing = GraphExecutor.missingOps(sourceGraph)
        guard missing.isEmpty else {
            return (nil, "the executor lacks \(missing.map(\.op).joined(separator: ", "))")
        }
        let converted = try ONNXGraph(file: tess)
        let sizes = Dictionary(try pairs(dims, "--dim").map { ($0.0, Int($0.1)!) }) { $1 }
        let samples = try EndToEndVerifier.samples(for: sourceGraph, source: source, given: Dictionary(try pairs(inputs, "--input")) { $1 },
                                                   dims: sizes, seed: seed, threads: threads)
        for name in classOutputs where !sourceGraph.outputs.contains(where: { $0.name == name }) {
            throw RuntimeError(.badInput, "--class-output \(name): not an output of the graph (outputs: \(sourceGraph.outputs.map(\.name).joined(separator: ", ")))")
        }
        let options = EndToEndVerifier.Options(minCosine: minOutputCosine, maxAbsError: maxOutputError, minTop1: minTop1,
                                               classOutputs: Set(classOutputs), threads: threads, activations: activations)
        let report = try EndToEndVerifier.compare(source: sourceGraph, converted: converted, samples: samples, options: options)
        if minTop1 != nil, report.outputs.allSatisfy({ $0.top1Agreement == nil }) {
            throw RuntimeError(.badInput, "--min-top1: no output holds class scores or labels (outputs: \(report.outputs.map(\.name).joined(separator: ", "))); name one with --class-output")
        }
        return (report, nil)
    }

    static func table(_ report: EndToEndReport) -> String {
        let arithmetic = report.activations == ActivationArithmetic.float.rawValue ? "" : " (the file with \(report.activations) activations)"
        var lines = ["level 4: source and file run\(arithmetic) on \(report.samples.count) sample(s): \(report.samples.joined(separator: ", ").terminalSafe)"]
        var rows = [["output", "shape", "max abs err", "min cosine", "top-1 agree"]]
        for o in report.outputs {
            rows.append([o.name, "\(o.shape)", String(format: "%.3g", o.maxAbsError), o.minCosine.map { String(format: "%.6f", $0) } ?? "-",
                         o.top1Agreement.map { String(format: "%.4f", $0) } ?? "-"])
        }
        lines += TextTable.lines(rows)
        for o in report.outputs { for p in o.problems { lines.append("FAIL: output '\(o.name.terminalSafe)': \(p.terminalSafe)") } }
        return lines.joined(separator: "\n")
    }
}
