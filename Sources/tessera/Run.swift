import ArgumentParser
import Foundation
import Tessera
import TesseraONNX
import TesseraRuntime

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a converted model (or an ONNX model) on inputs with Tessera's graph executor.",
        discussion: """
        GEMM weights run through the kernel for their stored layout and quantization. Inputs are \
        .npy arrays or ONNX TensorProto .pb files (SequenceProto or OptionalProto for sequence and \
        optional inputs; an optional input left out holds nothing). Outputs go to an uncompressed \
        .npz, one array per tensor output; a sequence output NAME is written as NAME[0], NAME[1], \
        ..., and an empty optional output writes nothing.
        """)

    @Argument(help: "A .tess file with a graph section, or an .onnx model.")
    var file: String

    @Option(name: .customLong("input"), help: "NAME=PATH for each graph input (PATH alone when the graph has one input).")
    var inputs: [String] = []

    @Option(name: .shortAndLong, help: "Write the outputs to this .npz file.")
    var output: String?

    @Flag(help: "Replace the output file if it exists.")
    var force = false

    @OptionGroup var resources: ResourceOptions

    @Option(help: "float: int8 weights are scaled back and multiply float activations (the reference). int8: each activation row is quantized to uint8 and multiplies int8 weight codes in integers (W8A8, as onnxruntime's dynamic quantization; faster, outputs move by the activations' rounding).")
    var activations = ActivationArithmetic.float

    @Option(help: "Threads for the GEMM kernels.")
    var threads = ProcessInfo.processInfo.activeProcessorCount

    @Option(name: .customLong("repeat"), help: "Run this many times and report the best and median time (a latency measurement).")
    var repeats = 1

    @Flag(help: "Print the time spent in each op type (summed over the nodes and runs), slowest first, then the slowest nodes.")
    var profile = false

    /// How many nodes `--profile` lists by name.
    static let slowestNodes = 10

    func validate() throws {
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        guard repeats >= 1 else { throw ValidationError("--repeat must be at least 1") }
        if let output, !output.hasSuffix(".npz") { throw ValidationError("--output must name a .npz file") }
    }

    func run() throws {
        GraphExecutor.keepFreedMemoryForReuse()
        try reportingErrors {
            resources.apply()
            // The .npz may replace neither the model nor an input file; checked before running.
            // NAME=PATH, or PATH alone.
            let specs = inputs.map { spec -> (spec: String, name: String?, path: String) in
                let parts = spec.split(separator: "=", maxSplits: 1).map(String.init)
                return parts.count == 2 ? (spec, parts[0], parts[1]) : (spec, nil, spec)
            }
            let written = OutputGroup(inputs: [file] + specs.map(\.path))
            let outputFile = try output.map { try written.file($0, replaceExisting: force) }
            let graph = try ONNXGraph.open(file)
            let executor = try GraphExecutor(graph, threads: threads, activations: activations)
            if profile { executor.profile = OpProfile() }
            var values: [String: GraphValue] = [:]
            for (spec, given, path) in specs {
                let name: String
                if let given {
                    name = given
                } else if graph.inputs.count == 1 {
                    name = graph.inputs[0].name
                } else {
                    throw RuntimeError(.badInput, "--input \(spec): write NAME=PATH; the graph has inputs \(graph.inputs.map(\.name).joined(separator: ", "))")
                }
                guard values[name] == nil else { throw RuntimeError(.badInput, "input '\(name)' is given twice") }
                guard let info = graph.inputs.first(where: { $0.name == name }) ?? graph.overridableInputs.first(where: { $0.name == name }) else {
                    let names = (graph.inputs + graph.overridableInputs).map(\.name).joined(separator: ", ")
                    throw RuntimeError(.badInput, "'\(name)' is not an input of the graph (inputs: \(names))")
                }
                values[name] = try InputFiles.read(path, as: info)
            }
            var outputs: [(name: String, value: GraphValue)] = []
            var times: [Double] = []
            for _ in 0 ..< repeats {
                let start = Date()
                outputs = try executor.evaluate(values)
                times.append(Date().timeIntervalSince(start))
            }
            times.sort()
            var rows = [["output", "type", "shape"]]
            var arrays: [(name: String, value: Value)] = []
            for (name, value) in outputs {
                switch value {
                case .tensor(let v): rows.append([name, "\(v.type)", "\(v.shape)"])
                case .sequence(let items, let type):
                    rows.append([name, "sequence of \(items.count) \(type)", items.map { "\($0.shape)" }.joined(separator: " ")])
                case .none: rows.append([name, "optional", "no value"])
                }
                arrays += value.tensors(named: name)
            }
            let timing = repeats == 1 ? String(format: "in %.3f s", times[0])
                : String(format: "%d times: best %.2f ms, median %.2f ms", repeats, times[0] * 1000, times[repeats / 2] * 1000)
            print("\(file.terminalSafe): ran \(graph.nodes.count) nodes \(timing), \(threads) thread(s), \(KernelDispatch.selected.rawValue) kernels\(activations == .int8 ? ", int8 activations" : "")")
            print(TextTable.lines(rows).joined(separator: "\n"))
            if let profile = executor.profile {
                let total = profile.entries.values.reduce(0) { $0 + $1.seconds }
                var lines = [["op", "nodes", "ms per run", "share"]]
                for (op, entry) in profile.entries.sorted(by: { $0.value.seconds > $1.value.seconds }) {
                    lines.append([op, "\(entry.nodes / repeats)", String(format: "%.3f", entry.seconds * 1000 / Double(repeats)),
                                  String(format: "%.1f%%", 100 * entry.seconds / max(total, 1e-12))])
                }
                print(TextTable.lines(lines).joined(separator: "\n"))
                // The slowest nodes by name, to find the one worth a look among many of a type.
                lines = [["slowest nodes (by output)", "op", "ms per run", "share"]]
                for (node, entry) in profile.nodes.sorted(by: { ($0.value.seconds, $1.key) > ($1.value.seconds, $0.key) }).prefix(Self.slowestNodes) {
                    lines.append([node.terminalSafe, entry.op, String(format: "%.3f", entry.seconds * 1000 / Double(repeats)),
                                  String(format: "%.1f%%", 100 * entry.seconds / max(total, 1e-12))])
                }
                print(TextTable.lines(lines).joined(separator: "\n"))
            }
            if let outputFile {
                try NumpyFiles.writeArchive(arrays, to: outputFile)
                try written.commit()
                print("wrote \(outputFile.path.terminalSafe)")
            }
        }
    }
}
