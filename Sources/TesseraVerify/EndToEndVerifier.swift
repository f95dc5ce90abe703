import Foundation
import Tessera
import TesseraConvert
import TesseraONNX
import TesseraRuntime

/// `verify` level 4: the source model and the converted file both run through the graph
/// executor on the same sample inputs, and their outputs are compared.
public enum EndToEndVerifier {
    public struct Options: Sendable {
        /// An output fails when the lowest per-sample cosine similarity is below this...
        public var minCosine: Double?
        /// ... or its largest absolute difference above this...
        public var maxAbsError: Double?
        /// ... or the fraction of samples whose top-1 class agrees is below this.
        public var minTop1: Double?
        /// Outputs to treat as class scores besides those the graph shows to be (see
        /// `classScoreOutputs`).
        public var classOutputs: Set<String>
        public var threads: Int
        /// How the converted model's int8 weights meet their activations (the source's run is
        /// always the float reference).
        public var activations: ActivationArithmetic

        public init(minCosine: Double? = nil, maxAbsError: Double? = nil, minTop1: Double? = nil,
                    classOutputs: Set<String> = [], threads: Int = 1, activations: ActivationArithmetic = .float) {
            self.minCosine = minCosine
            self.maxAbsError = maxAbsError
            self.minTop1 = minTop1
            self.classOutputs = classOutputs
            self.threads = threads
            self.activations = activations
        }
    }

    /// The outputs whose arg-max is a class: those made by Softmax, LogSoftmax or Sigmoid
    /// (through ops that keep values, such as Identity, Reshape or Cast), or read by ArgMax or
    /// TopK. Other float outputs (an embedding, a regression, logits the graph does not mark) have
    /// no top-1 unless named; integer outputs are labels, compared for equality.
    public static func classScoreOutputs(_ graph: ONNXGraph) -> Set<String> {
        let producer = Dictionary(graph.nodes.flatMap { node in node.outputs.map { ($0, node) } }) { first, _ in first }
        let readByArgMax = Set(graph.nodes.filter { ["ArgMax", "TopK"].contains($0.opType) }.compactMap(\.inputs.first))
        let passThrough: Set<String> = ["Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast"]
        return Set(graph.outputs.map(\.name).filter { name in
            var current = name
            for _ in 0 ..< graph.nodes.count + 1 {
                if readByArgMax.contains(current) { return true }
                guard let node = producer[current] else { return false }
                if ["Softmax", "LogSoftmax", "Sigmoid"].contains(node.opType) { return true }
                guard passThrough.contains(node.opType), let input = node.inputs.first else { return false }
                current = input
            }
            return false
        })
    }

    /// One set of graph inputs and where it came from.
    public struct Sample: Sendable {
        public var origin: String
        public var inputs: [String: GraphValue]
    }

    /// The inputs to run: files given by name, else the source's `test_data_set_*` folders
    /// (`input_K.pb` feeds the K-th graph input), else inputs generated from the signature.
    public static func samples(for graph: ONNXGraph, source: String, given: [String: String], dims: [String: Int],
                               seed: UInt64, threads: Int = 1) throws -> [Sample] {
        if !given.isEmpty {
            // Read as the graph declares each input (a sequence from a SequenceProto); a name the
            // graph lacks is read as a tensor, for the run to refuse by name.
            let declared = Dictionary(graph.inputs.map { ($0.name, $0) }) { first, _ in first }
            return [Sample(origin: "given files", inputs: try given.reduce(into: [:]) { inputs, item in
                inputs[item.key] = try InputFiles.read(item.value, as: declared[item.key] ?? ONNXGraph.ValueInfo(name: item.key))
            })]
        }
        let folder = URL(fileURLWithPath: source).deletingLastPathComponent()
        let sets = ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? [])
            .filter { $0.hasPrefix("test_data_set_") }.sorted()
        let fromSets = try sets.compactMap { set -> Sample? in
            var inputs: [String: GraphValue] = [:]
            for (k, info) in graph.inputs.enumerated() {
                let path = folder.appendingPathComponent(set).appendingPathComponent("input_\(k).pb").path
                guard FileManager.default.fileExists(atPath: path) else { return nil }
                inputs[info.name] = try InputFiles.read(path, as: info)
            }
            return Sample(origin: set, inputs: inputs)
        }
        if !fromSets.isEmpty { return fromSets }
        let generated = try generatedThatRun(graph, dims: dims, seed: seed, threads: threads)
        return [Sample(origin: "generated (seed \(seed))", inputs: generated.mapValues(GraphValue.tensor))]
    }

    /// Generated inputs the graph accepts. Dynamic dims other than the batch start at 8 and
    /// grow (x4, up to 512) while the graph refuses them for their shape: a CNN's pooling or a
    /// detector's strides need more than 8 pixels, audio more than 8 samples.
    static func generatedThatRun(_ graph: ONNXGraph, dims: [String: Int], seed: UInt64, threads: Int) throws -> [String: Value] {
        let dynamic = graph.inputs.contains { info in
            info.dims?.enumerated().contains { axis, d in
                switch d {
                case .fixed(let n): return n <= 0 && axis > 0
                case .symbolic(let name): return dims[name] == nil && axis > 0
                case .unknown: return axis > 0
                }
            } ?? false
        }
        // Fixed shapes have nothing to choose: a shape error there is the graph's, reported by the run.
        guard dynamic, let executor = try? GraphExecutor(graph, threads: threads) else { return try generated(graph, dims: dims, seed: seed) }
        var size = 8
        while true {
            let inputs = try generated(graph, dims: dims, seed: seed, dynamicSize: size)
            do {
                _ = try executor.run(inputs)
                return inputs
            } catch let error as RuntimeError where error.code == .badShape && size < 512 {
                size *= 4
            } catch let error as RuntimeError where error.code == .badShape {
                let shapes = inputs.keys.sorted().map { "\($0) \(inputs[$0]!.shape)" }.joined(separator: ", ")
                throw RuntimeError(.badInput, "generated inputs (\(shapes)) do not fit the graph: \(error.description); give inputs with --input NAME=PATH or dynamic dims with --dim NAME=N")
            }
        }
    }

    /// Inputs from the declared types and dims. Unnamed or symbolic dims take `dims[name]`, else
    /// 2 on the first axis and `dynamicSize` elsewhere (dims written -1 or 0 are dynamic too). Floats are uniform in [-1, 1); integers that index a
    /// Gather over an initializer are uniform over its axis (token ids), other integers are 1
    /// (masks); booleans are true.
    static func generated(_ graph: ONNXGraph, dims: [String: Int], seed: UInt64, dynamicSize: Int = 8) throws -> [String: Value] {
        var inputs: [String: Value] = [:]
        // A named dim has one size in every input: the batch size where it leads some input.
        var dims = dims
        for info in graph.inputs {
            for (axis, d) in (info.dims ?? []).enumerated() {
                if case .symbolic(let name) = d, !name.isEmpty, axis == 0, dims[name] == nil { dims[name] = 2 }
            }
        }
        for (k, info) in graph.inputs.enumerated() {
            guard let declared = info.dims, let type = DataType(number: info.elementType) else {
                throw RuntimeError(.badInput, "input '\(info.name)' declares no type or shape; give it with --input \(info.name)=PATH")
            }
            let shape = declared.enumerated().map { axis, d -> Int in
                switch d {
                case .fixed(let n) where n > 0: return n
                case .fixed: return axis == 0 ? 2 : dynamicSize   // -1 or 0: some exporters' mark of a dynamic dim
                case .symbolic(let name): return (name.isEmpty ? nil : dims[name]) ?? (axis == 0 ? 2 : dynamicSize)
                case .unknown: return axis == 0 ? 2 : dynamicSize
                }
            }
            let count = try TensorGeometry(shape: shape).elementCount
            try MemoryBudget.check(count, width: 8, "generated input '\(info.name)' of shape \(shape)")
            let uniform = SourceVerifier.activations(count: count, seed: seed &+ UInt64(k))
            if type == .bool {
                inputs[info.name] = Value([Bool](repeating: true, count: count), shape: shape)
            } else if type.isFloatingPoint {
                inputs[info.name] = type == .float ? Value(uniform, shape: shape) : try Value(uniform, shape: shape).cast(to: type)
            } else if let range = gatherRange(of: info.name, in: graph) {
                inputs[info.name] = Value(uniform.map { Int64(Float(range) * ($0 + 1) / 2) % Int64(range) }, shape: shape, type: type)
            } else {
                inputs[info.name] = Value([Int64](repeating: 1, count: count), shape: shape, type: type)
            }
        }
        return inputs
    }

    /// The length of the axis that `name` indexes when it is the indices of a Gather over an initializer.
    private static func gatherRange(of name: String, in graph: ONNXGraph) -> Int? {
        for node in graph.nodes where node.opType == "Gather" && node.inputs.count > 1 && node.inputs[1] == name {
            guard let data = graph.initializers[node.inputs[0]] else { continue }
            var axis = 0
            if case .int(let a)? = node.attributes["axis"] { axis = Int(a) < 0 ? Int(a) + data.shape.count : Int(a) }
            if axis >= 0, axis < data.shape.count, data.shape[axis] > 0 { return data.shape[axis] }
        }
        return nil
    }

    public static func compare(source: ONNXGraph, converted: ONNXGraph, samples: [Sample], options: Options) throws -> EndToEndReport {
        let sourceRun = try GraphExecutor(source, threads: options.threads)
        let convertedRun = try GraphExecutor(converted, threads: options.threads, activations: options.activations)
        var outputs: [String: (expected: [Value], actual: [Value])] = [:]
        var order: [String] = []
        for sample in samples {
            // Sequence outputs compare item by item, as NAME[0], NAME[1], ….
            let flat = { (outputs: [(name: String, value: GraphValue)]) in outputs.flatMap { $0.value.tensors(named: $0.name) } }
            let expected = flat(try sourceRun.evaluate(sample.inputs)), actual = flat(try convertedRun.evaluate(sample.inputs))
            guard expected.map(\.name) == actual.map(\.name) else {
                throw RuntimeError(.badGraph, "the converted model's outputs (\(actual.map(\.name).joined(separator: ", "))) differ from the source's (\(expected.map(\.name).joined(separator: ", ")))")
            }
            for ((name, e), (_, a)) in zip(expected, actual) {
                if outputs[name] == nil { order.append(name) }
                outputs[name, default: ([], [])].expected.append(e)
                outputs[name, default: ([], [])].actual.append(a)
            }
        }
        let classScores = classScoreOutputs(source).union(options.classOutputs)
        let reports = order.map { name in
            output(name, expected: outputs[name]!.expected, actual: outputs[name]!.actual, classScores: classScores.contains(name),
                   options: options)
        }
        return EndToEndReport(samples: samples.map(\.origin), activations: options.activations.rawValue, outputs: reports)
    }

    static func output(_ name: String, expected: [Value], actual: [Value], classScores: Bool, options: Options) -> OutputReport {
        var report = OutputReport(name: name, shape: expected.first?.shape ?? [], maxAbsError: 0, minCosine: nil, top1Agreement: nil,
                                  classScores: classScores, problems: [])
        var agree = 0, compared = 0, cosines: [Double] = []
        for (e, a) in zip(expected, actual) {
            guard e.shape == a.shape else {
                report.problems.append("shape \(a.shape) in the converted model, \(e.shape) in the source")
                return report
            }
            let x = e.asFloats, y = a.asFloats
            for i in x.indices { report.maxAbsError = max(report.maxAbsError, Double(abs(x[i] - y[i]))) }
            if x.contains(where: { $0.isNaN }) != y.contains(where: { $0.isNaN }) { report.maxAbsError = .nan }
            // Rows: the first axis is the batch. Integer outputs are labels: top-1 is equality.
            let rows = e.shape.first ?? 1, width = rows > 0 ? x.count / rows : 0
            guard width > 0 else { continue }
            for r in 0 ..< rows {
                let xs = x[r * width ..< (r + 1) * width], ys = y[r * width ..< (r + 1) * width]
                if case .float = e.elements {
                    cosines.append(Fidelity(source: Array(xs), converted: Array(ys)).cosine)
                    if classScores && width > 1 && e.shape.count == 2 {
                        compared += 1
                        if argmax(xs) == argmax(ys) { agree += 1 }
                    }
                } else {
                    compared += 1
                    if xs.elementsEqual(ys) { agree += 1 }
                }
            }
        }
        report.minCosine = cosines.min()
        report.top1Agreement = compared > 0 ? Double(agree) / Double(compared) : nil
        if let limit = options.minCosine, let c = report.minCosine, !(c >= limit) {
            report.problems.append(String(format: "cosine %.6f is below --min-output-cosine %.6f", c, limit))
        }
        if let limit = options.maxAbsError, !(report.maxAbsError <= limit) {
            report.problems.append(String(format: "max abs error %.3g exceeds --max-output-error %.3g", report.maxAbsError, limit))
        }
        if let limit = options.minTop1, let t = report.top1Agreement, !(t >= limit) {
            report.problems.append(String(format: "top-1 agreement %.4f is below --min-top1 %.4f", t, limit))
        }
        return report
    }

    private static func argmax(_ v: ArraySlice<Float>) -> Int {
        var best = v.startIndex
        for i in v.indices where v[i] > v[best] { best = i }
        return best - v.startIndex
    }
}

public struct OutputReport: Codable, Sendable {
    public var name: String
    public var shape: [Int]
    public var maxAbsError: Double
    /// Lowest cosine similarity over the samples' rows (float outputs).
    public var minCosine: Double?
    /// Fraction of rows whose arg-max (float [batch, classes] class scores) or value (integer
    /// outputs, e.g. labels) agree; nil for other outputs.
    public var top1Agreement: Double?
    /// Whether the output was taken as class scores (`EndToEndVerifier.classScoreOutputs`).
    public var classScores: Bool
    public var problems: [String]

    enum CodingKeys: String, CodingKey {
        case name, shape, problems
        case maxAbsError = "max_abs_error", minCosine = "min_cosine", top1Agreement = "top1_agreement"
        case classScores = "class_scores"
    }
}

public struct EndToEndReport: Codable, Sendable {
    public var samples: [String]
    /// The converted model's activation arithmetic (`ActivationArithmetic`'s raw value).
    public var activations: String
    public var outputs: [OutputReport]
    public var problemCount: Int { outputs.reduce(0) { $0 + $1.problems.count } }
}
