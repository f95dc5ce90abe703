import Crypto
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
        /// Shift each constant bias after a calibrated weight by the mean output change,
        /// `b += (W − Ŵ)ᵀ·E[x]`, so that the outputs keep their mean on the calibration set.
        public var biasCorrection = false
        public var threads = 1
        public init() {}
    }

    /// One weight the sweep compresses: the node that reads it and the input it multiplies.
    struct Target {
        var initializer: String
        var tensor: Tensor
        var input: String
        /// For a Conv weight: how its input becomes rows (im2col patches); nil for MatMul/Gemm.
        var patches: Patches?
        /// The graph initializer holding the bias added to this weight's output (one per output).
        var bias: String?
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
        let digest = withExtendedLifetime(mapped) { SHA256.hash(data: mapped.bytes).map { String(format: "%02x", $0) }.joined() }
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
        let inputs = Dictionary(grouping: targets, by: \.statisticsKey).sorted { $0.value[0].firstUse < $1.value[0].firstUse }
        let rounds: [[String]] = options.sequential ? inputs.map { [$0.key] } : [inputs.map(\.key)]
        var widest = 0
        for round in rounds {
            let executor = try GraphExecutor(graph, threads: options.threads)
            var statistics: [String: InputStatistics] = [:]
            let members = round.map { key in targets.first { $0.statisticsKey == key }! }
            for target in members { statistics[target.statisticsKey] = InputStatistics(k: target.reduction) }
            var maskValue: [Float]? = nil
            executor.observer = (Set(members.map(\.input)), { name, value in
                for target in members where target.input == name {
                    var stats = statistics[target.statisticsKey]!
                    var rows: [Float]
                    if let patches = target.patches {
                        rows = try patches.rows(value, input: name)
                    } else {
                        guard value.shape.last == stats.k else {
                            throw RuntimeError(.badInput, "input '\(name)' of a calibrated weight has shape \(value.shape), not [..., \(stats.k)]")
                        }
                        rows = value.asFloats
                        if let keep = maskValue, keep.count * stats.k == rows.count {   // padding rows carry no information
                            rows = Self.keptRows(rows, width: stats.k, keep: keep)
                        }
                    }
                    rows.withUnsafeBufferPointer { stats.add($0) }
                    statistics[target.statisticsKey] = stats
                }
            })
            for feeds in batches {
                maskValue = mask.flatMap { name in feeds.first { $0.0 == name }?.1.asFloats }
                _ = try executor.run(Dictionary(uniqueKeysWithValues: feeds))
            }
            for name in round {
                let stats = statistics[name]!
                widest = max(widest, stats.k)
                let h = stats.symmetricGram
                for target in targets where target.statisticsKey == name {
                    let corrected = options.biasCorrection ? target.bias : nil
                    let (tensor, error, shift) = try Self.compress(target, h: h, mean: corrected == nil ? nil : stats.mean, options: options)
                    weights[target.tensor.name] = tensor
                    if let name = corrected, let bias = graph.initializers[name], let shift {
                        let values = try bias.densify()
                        let shifted = Tensor(name: bias.name, dataType: .float, shape: bias.shape, role: bias.role, reductionAxis: bias.reductionAxis,
                                             storage: .dense(values: TensorBytes(float32: zip(values, shift).map { Float(Double($0) + $1) })))
                        weights[bias.name] = shifted
                        graph.initializers[name] = shifted
                    }
                    var method = target.description + (options.refit && target.mask != .none ? " + LS refit" : "")
                    if corrected != nil { method += " + bias correction" }
                    layers.append(CalibrationReport.Layer(tensor: target.tensor.name, input: target.input, rows: stats.rows,
                                                          method: method, relativeError: error))
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
    /// and Gemm weights, and 2-D Conv weights of group 1 with explicit pads.
    static func targets(_ graph: ONNXGraph, recipe: Recipe) throws -> [Target] {
        var targets: [Target] = []
        var seen = Set<String>(), biases = Set<String>()
        var consumers: [String: [Int]] = [:]
        for (index, node) in graph.nodes.enumerated() { for input in node.inputs where !input.isEmpty { consumers[input, default: []].append(index) } }
        /// A float32 bias initializer of `outputs` elements (shape [n] or [1, n]) not yet claimed.
        func bias(_ name: String, outputs: Int) -> String? {
            guard let t = graph.initializers[name], t.dataType == .float, t.quantization == nil, !biases.contains(name),
                  t.shape.reduce(1, *) == outputs, t.shape.last == outputs else { return nil }
            return name
        }
        for (index, node) in graph.nodes.enumerated() where node.domain.isEmpty && ["MatMul", "Gemm", "Conv"].contains(node.opType) {
            guard node.inputs.count > 1, let tensor = graph.initializers[node.inputs[1]], !seen.contains(tensor.name),
                  tensor.dataType == .float, tensor.quantization == nil, let axis = tensor.reductionAxis, axis <= 1 else { continue }
            var patches: Patches?
            if node.opType == "Conv" {
                guard let p = Patches(node, weight: tensor) else { continue }   // grouped or padded its own way
                patches = p
            } else {
                guard tensor.shape.count == 2 else { continue }
                if case .int(let t)? = node.attributes["transA"], t != 0 { continue }
            }
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
            // Quantization groups run along Cin for each kernel position: whole groups only.
            if let g = quantize?.groupSize, patches != nil, tensor.shape[1] % g != 0 { continue }
            guard !what.isEmpty else { continue }
            if case .none = mask {
                // An already sparse weight keeps its zeros: quantization must not refill them.
                let values = try tensor.densify()
                if values.contains(0) { mask = .fixed(Self.kOrder(values.map { $0 != 0 }, tensor)); what.append("fixed mask") }
            }
            seen.insert(tensor.name)
            // The bias: Gemm's and Conv's C/B input, or a MatMul's only consumer being an Add of one.
            let outputs = tensor.shape[patches != nil ? 0 : 1 - axis]
            var biasName: String?
            if node.opType != "MatMul" {
                biasName = node.inputs.count > 2 ? bias(node.inputs[2], outputs: outputs) : nil
            } else if let uses = consumers[node.outputs[0]], uses.count == 1, graph.nodes[uses[0]].opType == "Add",
                      let other = graph.nodes[uses[0]].inputs.first(where: { $0 != node.outputs[0] }) {
                biasName = bias(other, outputs: outputs)
            }
            if let biasName { biases.insert(biasName) }
            targets.append(Target(initializer: node.inputs[1], tensor: tensor, input: node.inputs[0], patches: patches, bias: biasName, firstUse: index,
                                  mask: mask, quantize: quantize, description: what.joined(separator: " + ")))
        }
        return targets
    }

    /// Compresses one weight; returns it as the converter stores it, and its relative error.
    /// Also returns, given the input's mean, each output's mean change `(W − Ŵ)ᵀ·E[x]`.
    static func compress(_ target: Target, h: [Double], mean: [Double]?, options: Options) throws -> (Tensor, Double, [Double]?) {
        let tensor = target.tensor
        let values = try tensor.densify()
        let (k, n) = (target.reduction, values.count / target.reduction)
        let sweep = OBSSweep(mask: target.mask, grid: target.quantize.map(OBSSweep.Grid.init),
                             damp: options.damp, blockSize: options.blockSize)
        var result: OBSSweep.Result
        let source = kOrder(values, tensor).map(Double.init)
        do {
            if options.refit, target.mask != .none {
                // Mask from the sweep, kept weights refitted exactly, then (if asked) rounded by a
                // second sweep that keeps that mask.
                var pruning = sweep
                pruning.grid = nil
                let refitted = try sweep.refit(try pruning.run(weights: source, k: k, n: n, h: h).weights, source: source, k: k, n: n, h: h)
                if sweep.grid != nil {
                    var rounding = sweep
                    rounding.mask = .fixed(refitted.map { $0 != 0 })
                    result = try rounding.run(weights: refitted, k: k, n: n, h: h, errorAgainst: source)
                } else {
                    result = OBSSweep.Result(weights: refitted, relativeError: OBSSweep.relativeError(source: source, compressed: refitted, k: k, n: n, h: h))
                }
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
        let shift = mean.map { m in
            (0 ..< n).map { c in (0 ..< k).reduce(0.0) { $0 + (source[$1 * n + c] - result.weights[$1 * n + c]) * m[$1] } }
        }
        return (dense, result.relativeError, shift)
    }

    /// For each element of a weight (its own row-major order), its place in the sweep's `k × n`
    /// matrix: rows along the reduction axis, ordered as the format groups them (a Conv's
    /// `(kh, kw, Cin)` with Cin fastest, so that 2:4 groups are four consecutive rows).
    static func sweepPositions(_ tensor: Tensor) -> [Int] {
        let shape = tensor.shape
        if shape.count == 2 {
            let (rows, columns) = (shape[0], shape[1])
            return (0 ..< rows * columns).map { i in
                tensor.reductionAxis == 0 ? i : (i % columns) * rows + i / columns
            }
        }
        // Conv [Cout, Cin, k...]: element (co, ci, p) sits at row p·Cin + ci, column co.
        let (cout, cin) = (shape[0], shape[1]), window = shape.dropFirst(2).reduce(1, *)
        return (0 ..< cout * cin * window).map { i in
            let (co, ci, p) = (i / (cin * window), i / window % cin, i % window)
            return (p * cin + ci) * cout + co
        }
    }

    /// A weight's elements in the sweep's `k × n` order.
    static func kOrder<T>(_ values: [T], _ tensor: Tensor) -> [T] {
        var out = values
        for (i, position) in sweepPositions(tensor).enumerated() { out[position] = values[i] }
        return out
    }

    /// The inverse of `kOrder`.
    static func elementOrder<T>(_ values: [T], _ tensor: Tensor) -> [T] {
        sweepPositions(tensor).map { values[$0] }
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
    /// Batches are cut as they are read, so one batch at a time exists beside the set.
    static func batches(_ arrays: [(name: String, value: Value)], samples: Int, size: Int, mask: String?)
        -> LazyMapSequence<StrideTo<Int>, [(String, Value)]> {
        var order = Array(0 ..< samples)
        var lengths = [Int](repeating: 0, count: samples)
        let maskValue = mask.flatMap { name in arrays.first { $0.name == name }?.value }
        if let m = maskValue, m.shape.count == 2 {
            let flags = m.asFloats, width = m.shape[1]
            for s in 0 ..< samples { lengths[s] = ((0 ..< width).last { flags[s * width + $0] != 0 } ?? -1) + 1 }
            order.sort { lengths[$0] != lengths[$1] ? lengths[$0] < lengths[$1] : $0 < $1 }
        }
        return stride(from: 0, to: samples, by: size).lazy.map { start in
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
    /// The length of a sweep column: the reduction axis, times the kernel window for a Conv.
    var reduction: Int { tensor.shape.count == 2 ? tensor.shape[tensor.reductionAxis!] : tensor.shape.dropFirst().reduce(1, *) }
    /// Weights reading the same rows share statistics: the same input, patched the same way.
    var statisticsKey: String { patches.map { "\(input) \($0)" } ?? input }
}

/// How a 2-D Conv (group 1) turns its input `[N, Cin, H, W]` into rows of `Cin·kh·kw` patch
/// values, ordered `(ky, kx, ci)` with ci fastest; one row per output position. Out-of-image
/// taps (padding) are zeros, as the convolution sees them.
struct Patches: CustomStringConvertible, Sendable {
    var channels: Int, kernel: (Int, Int), strides: (Int, Int), dilations: (Int, Int), pads: (Int, Int, Int, Int)

    init?(_ node: ONNXGraph.Node, weight: Tensor) {
        guard weight.shape.count == 4 else { return nil }
        func ints(_ name: String) -> [Int]? {
            if case .ints(let v)? = node.attributes[name] { return v.map { Int($0) } } else { return nil }
        }
        if case .int(let g)? = node.attributes["group"], g != 1 { return nil }
        if case .string(let pad)? = node.attributes["auto_pad"], pad != "NOTSET" { return nil }
        channels = weight.shape[1]
        kernel = (weight.shape[2], weight.shape[3])
        let s = ints("strides") ?? [1, 1], d = ints("dilations") ?? [1, 1], p = ints("pads") ?? [0, 0, 0, 0]
        guard s.count == 2, d.count == 2, p.count == 4 else { return nil }
        strides = (s[0], s[1]); dilations = (d[0], d[1]); pads = (p[0], p[1], p[2], p[3])
    }

    var description: String { "patches \(kernel) stride \(strides) dilation \(dilations) pads \(pads)" }

    func rows(_ value: Value, input: String) throws -> [Float] {
        guard value.shape.count == 4, value.shape[1] == channels else {
            throw RuntimeError(.badInput, "input '\(input)' of a calibrated Conv has shape \(value.shape), not [N, \(channels), H, W]")
        }
        let (n, h, w) = (value.shape[0], value.shape[2], value.shape[3])
        let oh = (h + pads.0 + pads.2 - dilations.0 * (kernel.0 - 1) - 1) / strides.0 + 1
        let ow = (w + pads.1 + pads.3 - dilations.1 * (kernel.1 - 1) - 1) / strides.1 + 1
        guard oh > 0, ow > 0 else { return [] }
        let x = value.asFloats, width = channels * kernel.0 * kernel.1
        var out = [Float](repeating: 0, count: n * oh * ow * width)
        var row = 0
        for b in 0 ..< n {
            for oy in 0 ..< oh {
                for ox in 0 ..< ow {
                    for ky in 0 ..< kernel.0 {
                        let iy = oy * strides.0 - pads.0 + ky * dilations.0
                        guard iy >= 0, iy < h else { continue }
                        for kx in 0 ..< kernel.1 {
                            let ix = ox * strides.1 - pads.1 + kx * dilations.1
                            guard ix >= 0, ix < w else { continue }
                            let base = row * width + (ky * kernel.1 + kx) * channels
                            for c in 0 ..< channels { out[base + c] = x[((b * channels + c) * h + iy) * w + ix] }
                        }
                    }
                    row += 1
                }
            }
        }
        return out
    }
}
