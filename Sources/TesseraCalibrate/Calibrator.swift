import Foundation
import Tessera
import TesseraConvert
import TesseraONNX
import TesseraRuntime

/// Data-driven pruning and quantization: runs a calibration set through the source model,
/// gathers each GEMM weight's input statistics (`H = XᵀX`) through the executor, and compresses
/// the weights with the OBS sweep (SparseGPT for masks, GPTQ for grids, both at once for
/// 2:4 + int8/int4). The result replaces the weights the converter would otherwise prune and
/// quantize by magnitude and rounding alone.
///
/// Sequential by default: each input's statistics come from a model whose earlier weights are
/// already compressed, so later layers learn to absorb the earlier layers' errors.
public final class Calibrator {
    /// Fewer samples than this give rank-deficient statistics on typical layers: warned.
    public static let recommendedSamples = 128
    /// Samples per executor run when the model's batch axis is free.
    public static let defaultBatchSize = 16

    public struct Options: Sendable {
        public var damp = 0.01
        public var blockSize = 128
        public var sequential = true
        /// Refit each output's kept weights by exact least squares on the final mask.
        public var refit = false
        public var threads = 1
        public init() {}
    }

    /// One weight the sweep compresses: the node that reads it and the input it multiplies.
    struct Target {
        var initializer: String
        var tensor: Tensor
        var input: String
        var firstUse: Int
        var mask: OBSSweep.Mask
        var quantize: QuantizationSpec?
        var description: String
    }

    public let report: CalibrationReport
    public private(set) var warnings: [String] = []
    /// The compressed weights by tensor name, as the converter stores them.
    public private(set) var weights: [String: Tensor] = [:]

    /// Calibrates every weight `recipe` prunes or quantizes in the model at `modelPath` on the
    /// arrays of `calibrationPath` (an `.npz` named after the graph inputs, batch axis first).
    public init(model modelPath: String, calibration calibrationPath: String, recipe: Recipe, options: Options = Options()) throws {
        var graph = try ONNXGraph(model: modelPath)
        let arrays = try NumpyFiles.readArchive(calibrationPath)
        let mapped = try MappedFile(path: calibrationPath)
        let digest = withExtendedLifetime(mapped) { SHA256.hex(mapped.bytes) }
        let samples = try Self.checkInputs(arrays, graph: graph, path: calibrationPath)
        let targets = try Self.targets(graph, recipe: recipe)
        var batch = Self.defaultBatchSize
        for input in graph.inputs { if case .fixed(let n)? = input.dims?.first, n > 0 { batch = min(batch, n) } }
        let mask = graph.inputs.first { $0.name.lowercased().contains("mask") }?.name
        let batches = Self.batches(arrays, samples: samples, size: batch, mask: mask)

        if samples < Self.recommendedSamples {
            warnings.append("the calibration set has \(samples) samples; \(Self.recommendedSamples) or more give statistics that generalize")
        }
        var layers: [CalibrationReport.Layer] = []
        // Inputs in the order the graph first reads them; each group is one run in sequential mode.
        let inputs = Dictionary(grouping: targets, by: \.input).sorted { $0.value[0].firstUse < $1.value[0].firstUse }
        let rounds: [[String]] = options.sequential ? inputs.map { [$0.key] } : [inputs.map(\.key)]
        var widest = 0
        for round in rounds {
            let executor = try GraphExecutor(graph, threads: options.threads)
            var statistics: [String: InputStatistics] = [:]
            for name in round { statistics[name] = InputStatistics(k: targets.first { $0.input == name }!.reduction) }
            var maskValue: [Float]? = nil
            executor.observer = (Set(round), { name, value in
                guard var stats = statistics[name] else { return }
                guard value.shape.last == stats.k else {
                    throw RuntimeError(.badInput, "input '\(name)' of a calibrated weight has shape \(value.shape), not [..., \(stats.k)]")
                }
                var rows = value.asFloats
                if let keep = maskValue, keep.count * stats.k == rows.count {   // padding rows carry no information
                    rows = Self.keptRows(rows, width: stats.k, keep: keep)
                }
                rows.withUnsafeBufferPointer { stats.add($0) }
                statistics[name] = stats
            })
            for feeds in batches {
                maskValue = mask.flatMap { name in feeds.first { $0.0 == name }?.1.asFloats }
                _ = try executor.run(Dictionary(uniqueKeysWithValues: feeds))
            }
            for name in round {
                let stats = statistics[name]!
                widest = max(widest, stats.k)
                let h = stats.symmetricGram
                for target in targets where target.input == name {
                    let (tensor, error) = try Self.compress(target, h: h, options: options)
                    weights[target.tensor.name] = tensor
                    layers.append(CalibrationReport.Layer(tensor: target.tensor.name, input: name, rows: stats.rows,
                                                          method: target.description + (options.refit && target.mask != .none ? " + LS refit" : ""),
                                                          relativeError: error))
                    // Later rounds see this weight compressed.
                    graph.initializers[target.initializer] = try Self.dequantized(tensor)
                }
            }
        }
        let rows = layers.map(\.rows).min() ?? 0
        if rows < 2 * widest {
            warnings.append("the calibration set gives \(rows) rows per layer, fewer than twice the widest layer's reduction size (\(widest)): its statistics are rank-deficient")
        }
        report = CalibrationReport(file: URL(fileURLWithPath: calibrationPath).lastPathComponent, sha256: digest,
                                   samples: samples, damp: options.damp, blockSize: options.blockSize,
                                   sequential: options.sequential, layers: layers)
    }

    /// Every graph input is given, nothing else, all with the same batch length; returns it.
    static func checkInputs(_ arrays: [(name: String, value: Value)], graph: ONNXGraph, path: String) throws -> Int {
        let names = graph.inputs.map(\.name)
        if let unknown = arrays.first(where: { !names.contains($0.name) }) {
            throw ConvertError("\(path): array '\(unknown.name)' is not a graph input (inputs: \(names.joined(separator: ", ")))")
        }
        if let missing = names.first(where: { name in !arrays.contains { $0.name == name } }) {
            throw ConvertError("\(path): graph input '\(missing)' has no array")
        }
        let lengths = Set(arrays.map { $0.value.shape.first ?? 0 })
        guard lengths.count == 1, let samples = lengths.first, samples > 0, arrays.allSatisfy({ !$0.value.shape.isEmpty }) else {
            throw ConvertError("\(path): every array needs the same, non-zero batch length on its first axis, got \(arrays.map { "\($0.name) \($0.value.shape)" }.joined(separator: ", "))")
        }
        return samples
    }

    /// The weights the recipe prunes or quantizes that a sweep can compress: 2-D float32 MatMul
    /// and Gemm weights (Conv weights keep the uncalibrated path for now).
    static func targets(_ graph: ONNXGraph, recipe: Recipe) throws -> [Target] {
        var targets: [Target] = []
        var seen = Set<String>()
        for (index, node) in graph.nodes.enumerated() where node.domain.isEmpty && (node.opType == "MatMul" || node.opType == "Gemm") {
            guard node.inputs.count > 1, let tensor = graph.initializers[node.inputs[1]], !seen.contains(tensor.name),
                  tensor.dataType == .float, tensor.quantization == nil, tensor.shape.count == 2,
                  let axis = tensor.reductionAxis, axis <= 1 else { continue }
            if case .int(let t)? = node.attributes["transA"], t != 0 { continue }
            let plan = try recipe.plan(for: tensor)
            var mask = OBSSweep.Mask.none
            var what: [String] = []
            if let prune = plan.prune, Pruner.obstacle(prune, tensor) == nil {
                switch prune {
                case .twoFour: mask = .twoFour; what.append("SparseGPT 2:4")
                case .magnitude(let s): mask = .sparsity(s); what.append("SparseGPT sparsity \(s)")
                case .globalMagnitude: continue   // one threshold across tensors: not a per-layer solve
                }
            }
            let quantize = plan.quantize
            // A weight that cannot be quantized (NaN) takes the converter's path, which says why.
            if let spec = quantize, try Quantizer.obstacle(spec, tensor) != nil { continue }
            if let spec = quantize { what.append("GPTQ \(spec)") }
            guard !what.isEmpty else { continue }
            if case .none = mask {
                // An already sparse weight keeps its zeros: quantization must not refill them.
                let values = try tensor.densify()
                if values.contains(0) { mask = .fixed(Self.kOrder(values.map { $0 != 0 }, tensor)); what.append("fixed mask") }
            }
            seen.insert(tensor.name)
            targets.append(Target(initializer: node.inputs[1], tensor: tensor, input: node.inputs[0], firstUse: index,
                                  mask: mask, quantize: quantize, description: what.joined(separator: " + ")))
        }
        return targets
    }

    /// Compresses one weight; returns it as the converter stores it, and its relative error.
    static func compress(_ target: Target, h: [Double], options: Options) throws -> (Tensor, Double) {
        let tensor = target.tensor
        let values = try tensor.densify()
        let (k, n) = (target.reduction, values.count / target.reduction)
        let sweep = OBSSweep(mask: target.mask, grid: target.quantize.map(OBSSweep.Grid.init),
                             damp: options.damp, blockSize: options.blockSize)
        var result: OBSSweep.Result
        do {
            let source = kOrder(values, tensor).map(Double.init)
            if options.refit, target.mask != .none {
                // Mask from the sweep, kept weights refitted exactly, then (if asked) rounded by a
                // second sweep that keeps that mask.
                var pruning = sweep
                pruning.grid = nil
                let refitted = try sweep.refit(try pruning.run(weights: source, k: k, n: n, h: h).weights, source: source, k: k, n: n, h: h)
                if sweep.grid != nil {
                    var rounding = sweep
                    rounding.mask = .fixed(refitted.map { $0 != 0 })
                    result = try rounding.run(weights: refitted, k: k, n: n, h: h)
                } else {
                    result = OBSSweep.Result(weights: refitted, relativeError: 0)
                }
                result.relativeError = OBSSweep.relativeError(source: source, compressed: result.weights, k: k, n: n, h: h)
            } else {
                result = try sweep.run(weights: source, k: k, n: n, h: h)
            }
        } catch {
            throw ConvertError("cannot calibrate '\(tensor.name)': \(error)")
        }
        let compressed = elementOrder(result.weights.map(Float.init), tensor)
        var dense = Tensor(name: tensor.name, dataType: tensor.dataType, shape: tensor.shape, role: tensor.role,
                           reductionAxis: tensor.reductionAxis, storage: .dense(values: TensorBytes(float32: compressed)))
        if let spec = target.quantize, let scales = result.scales, let zeros = result.zeroPoints {
            dense = try Quantizer.quantize(dense, spec, values: compressed, elementScales: elementOrder(scales, tensor),
                                           elementZeroPoints: elementOrder(zeros, tensor))
        }
        return (dense, result.relativeError)
    }

    /// A weight's elements with the reduction axis first (`k × n`), from its own element order.
    static func kOrder<T>(_ values: [T], _ tensor: Tensor) -> [T] {
        tensor.reductionAxis == 0 ? values : transpose(values, rows: tensor.shape[0], columns: tensor.shape[1])
    }

    /// The inverse of `kOrder`.
    static func elementOrder<T>(_ values: [T], _ tensor: Tensor) -> [T] {
        tensor.reductionAxis == 0 ? values : transpose(values, rows: tensor.shape[1], columns: tensor.shape[0])
    }

    static func transpose<T>(_ values: [T], rows: Int, columns: Int) -> [T] {
        (0 ..< rows * columns).map { i in values[(i % rows) * columns + i / rows] }
    }

    /// A compressed weight as the executor should see it in the next round: float32.
    static func dequantized(_ tensor: Tensor) throws -> Tensor {
        Tensor(name: tensor.name, dataType: .float, shape: tensor.shape, role: tensor.role, reductionAxis: tensor.reductionAxis,
               storage: .dense(values: TensorBytes(float32: try tensor.densify())))
    }

    /// The rows of `rows` (each `width` long) whose `keep` entry is non-zero.
    static func keptRows(_ rows: [Float], width: Int, keep: [Float]) -> [Float] {
        var out: [Float] = []
        out.reserveCapacity(rows.count)
        for (r, flag) in keep.enumerated() where flag != 0 { out += rows[(r * width) ..< ((r + 1) * width)] }
        return out
    }

    /// The calibration set in batches of `size` samples. With a padding mask (`[samples, length]`),
    /// samples go in order of their unpadded length and each batch is cut to its longest sample,
    /// on every input shaped like the mask: padding costs no compute and enters no statistics.
    static func batches(_ arrays: [(name: String, value: Value)], samples: Int, size: Int, mask: String?) -> [[(String, Value)]] {
        var order = Array(0 ..< samples)
        var lengths = [Int](repeating: 0, count: samples)
        let maskValue = mask.flatMap { name in arrays.first { $0.name == name }?.value }
        if let m = maskValue, m.shape.count == 2 {
            let flags = m.asFloats, width = m.shape[1]
            for s in 0 ..< samples { lengths[s] = ((0 ..< width).last { flags[s * width + $0] != 0 } ?? -1) + 1 }
            order.sort { lengths[$0] != lengths[$1] ? lengths[$0] < lengths[$1] : $0 < $1 }
        }
        return stride(from: 0, to: samples, by: size).map { start in
            let members = Array(order[start ..< min(start + size, samples)])
            let cut = maskValue.flatMap { $0.shape.count == 2 ? members.map { lengths[$0] }.max() : nil }
            return arrays.map { array in
                let padded = cut != nil && array.value.shape.count >= 2 && Array(array.value.shape.prefix(2)) == maskValue!.shape
                return (array.name, Self.gather(array.value, samples: members, length: padded ? max(cut!, 1) : nil))
            }
        }
    }

    /// The given samples of a batch-first array, cut to `length` along axis 1 when given.
    static func gather(_ value: Value, samples: [Int], length: Int?) -> Value {
        var out = value
        let stride = value.shape.dropFirst().reduce(1, *)
        out.shape[0] = samples.count
        var take: [Range<Int>] = samples.map { ($0 * stride) ..< (($0 + 1) * stride) }
        if let length {
            let inner = value.shape.dropFirst(2).reduce(1, *)
            out.shape[1] = length
            take = take.map { $0.lowerBound ..< ($0.lowerBound + length * inner) }
        }
        func pick<T>(_ v: [T]) -> [T] { take.flatMap { v[$0] } }
        switch value.elements {
        case .float(let v): out.elements = .float(pick(v))
        case .double(let v): out.elements = .double(pick(v))
        case .int(let v): out.elements = .int(pick(v))
        case .bool(let v): out.elements = .bool(pick(v))
        }
        return out
    }
}

extension Calibrator.Target {
    var reduction: Int { tensor.shape[tensor.reductionAxis!] }
}
