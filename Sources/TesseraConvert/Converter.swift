import Tessera

/// One tensor's line of the conversion report.
public struct TensorReport: Codable, Equatable, Sendable {
    public var name: String
    public var dtype: String
    public var shape: [Int]
    public var role: String
    public var layout: String
    public var reason: String
    public var prune: String?
    public var quantization: String?
    public var sparsityBefore: Double
    public var sparsityAfter: Double
    public var bytesBefore: Int
    public var bytesAfter: Int
    public var fidelity: Fidelity
    /// Whether the source already satisfied 2:4 along its reduction axis (nil: not a candidate).
    public var source24: Bool?
    /// Smallest, median and largest per-output-channel max |x| of the source (GEMM weights).
    public var channelAbsMax: [Float]?

    enum CodingKeys: String, CodingKey {
        case name, dtype, shape, role, layout, reason, prune, quantization, fidelity
        case source24 = "source_satisfies_2_4", channelAbsMax = "channel_absmax_min_median_max"
        case sparsityBefore = "sparsity_before", sparsityAfter = "sparsity_after"
        case bytesBefore = "bytes_before", bytesAfter = "bytes_after"
    }
}

/// The whole report: per tensor and totals.
public struct ConversionReport: Codable, Equatable, Sendable {
    public var recipe: Recipe
    public var tensors: [TensorReport] = []
    public var sourceFileBytes = 0
    /// Bytes of the written .tess file (known after it is written).
    public var fileBytes = 0
    /// The calibration set and each calibrated layer's error; nil when nothing was calibrated.
    public var calibration: CalibrationReport?

    enum CodingKeys: String, CodingKey {
        case recipe, tensors, calibration
        case sourceFileBytes = "source_file_bytes", fileBytes = "file_bytes"
    }

    public var bytesBefore: Int { tensors.reduce(0) { $0 + $1.bytesBefore } }
    public var bytesAfter: Int { tensors.reduce(0) { $0 + $1.bytesAfter } }

    /// What a .tess file keeps of the report in its metadata (`--report` writes all of it).
    public var embedded: EmbeddedReport {
        let kept = tensors.filter { $0.role != WeightRole.unknown.description || !$0.fidelity.bitExact }
        let listed = Array(kept.prefix(EmbeddedReport.maxTensors))
        return EmbeddedReport(recipe: recipe, tensors: listed, tensorCount: tensors.count,
                              changed: tensors.filter { !$0.fidelity.bitExact }.count,
                              bytesBefore: bytesBefore, bytesAfter: bytesAfter, omitted: kept.count - listed.count,
                              calibration: calibration)
    }
}

/// The report as a file's metadata keeps it: the recipe, the totals, and the lines of the
/// weights and of every tensor the conversion changed. Other tensors' lines say nothing that
/// `inspect` cannot read from the file, and a model of many small tensors would otherwise carry
/// a report larger than the model (and the metadata limit).
public struct EmbeddedReport: Codable, Equatable, Sendable {
    /// Lines kept at most; past it, `omitted` counts the rest.
    public static let maxTensors = 10_000

    public var recipe: Recipe
    public var tensors: [TensorReport]
    public var tensorCount: Int
    public var changed: Int
    public var bytesBefore: Int
    public var bytesAfter: Int
    public var omitted: Int
    public var calibration: CalibrationReport?

    enum CodingKeys: String, CodingKey {
        case recipe, tensors, changed, omitted, calibration
        case tensorCount = "tensor_count", bytesBefore = "bytes_before", bytesAfter = "bytes_after"
    }
}

/// Applies a recipe to tensors one at a time: prune, then quantize, then choose the layout,
/// recording what it did and how far the result is from the source.
public final class Converter {
    public let recipe: Recipe
    public private(set) var report: ConversionReport
    private var globalMagnitudes: [Float] = []
    private var globalThreshold: Float?
    /// Weights a calibrated sweep already pruned and quantized, by tensor name.
    private let calibrated: [String: Tensor]

    /// `calibrated` weights replace magnitude pruning and rounding for the tensors they name.
    public init(recipe: Recipe, calibrated: [String: Tensor] = [:], calibration: CalibrationReport? = nil) throws {
        try recipe.validate()
        self.recipe = recipe
        self.calibrated = calibrated
        report = ConversionReport(recipe: recipe)
        report.calibration = calibration
    }

    /// True when some tensor may use global magnitude pruning, which needs `observe` to see
    /// every tensor before `convert` sees any.
    public var needsFirstPass: Bool {
        ([recipe.prune] + recipe.rules.map(\.prune)).contains { $0?.hasPrefix("global-magnitude") == true }
    }

    /// First pass: collect the magnitudes that the global threshold is chosen from.
    public func observe(_ tensor: Tensor) throws {
        let plan = try recipe.plan(for: tensor)
        guard case .globalMagnitude = plan.prune, Pruner.obstacle(plan.prune!, tensor) == nil else { return }
        globalMagnitudes += try tensor.densify().map(abs)
    }

    public func convert(_ tensor: Tensor) throws -> Tensor {
        let plan = try recipe.plan(for: tensor)
        var current = tensor
        var notes: [String] = plan.note.map { [$0] } ?? []
        var pruned: String?
        var quantized = false
        if let replacement = calibrated[tensor.name] {
            current = replacement
            pruned = plan.prune.flatMap { Pruner.obstacle($0, tensor) == nil ? $0.description : nil }
            quantized = replacement.quantization != nil
            notes.append("calibrated")
        } else {
            (pruned, quantized) = try pruneAndQuantize(&current, plan, notes: &notes)
            if report.calibration != nil, pruned != nil || quantized { notes.append("uncalibrated") }
        }
        // Computed once and shared by the layout choice, the analysis and the fidelity check.
        let changed = pruned != nil || quantized || calibrated[tensor.name] != nil   // a corrected bias changed too
        let sparsityBefore = try tensor.sparsity()
        let (chosen, reason) = try LayoutChoice.choose(current, plan.layout, sparsity: changed ? nil : sparsityBefore)
        let isFloat = tensor.dataType.isFloatingPoint && tensor.quantization == nil
        let sourceValues = isFloat && (changed || Quantizer.outputAxis(of: tensor) != nil) ? try tensor.densify() : nil
        // A layout change alone is exact by construction (tested in the format module); only
        // pruned or quantized tensors are compared element by element.
        let fidelity = changed ? Fidelity(source: try sourceValues ?? tensor.densify(), converted: try chosen.densify()) : .exact
        let (source24, channelAbsMax) = try Self.analyze(tensor, sparsity: sparsityBefore, values: sourceValues)
        report.tensors.append(TensorReport(
            name: tensor.name, dtype: tensor.dataType.name, shape: tensor.shape, role: tensor.role.description,
            layout: chosen.storage.kind.description, reason: ([reason] + notes).joined(separator: "; "),
            prune: pruned, quantization: chosen.quantization?.summary,
            sparsityBefore: sparsityBefore, sparsityAfter: changed ? try chosen.sparsity() : sparsityBefore,
            bytesBefore: LayoutChoice.bytes(try tensor.encoded(as: .dense)), bytesAfter: LayoutChoice.bytes(chosen),
            fidelity: fidelity, source24: source24, channelAbsMax: channelAbsMax))
        return chosen
    }

    /// Magnitude pruning and round-to-nearest quantization, as `plan` asks; returns what was done.
    private func pruneAndQuantize(_ current: inout Tensor, _ plan: TensorPlan, notes: inout [String]) throws -> (String?, Bool) {
        var pruned: String?
        var quantized = false
        if let spec = plan.prune {
            if let obstacle = Pruner.obstacle(spec, current) {
                guard plan.source != .exactRule else { throw ConvertError("cannot prune tensor '\(current.name)' as its rule asks: \(obstacle)") }
                notes.append("not pruned: \(obstacle)")
            } else {
                if case .globalMagnitude(let fraction) = spec, globalThreshold == nil {
                    globalThreshold = Pruner.globalThreshold(globalMagnitudes, fraction: fraction)
                    globalMagnitudes = []
                }
                current = try Pruner.prune(current, spec, globalThreshold: globalThreshold)
                pruned = spec.description
            }
        }
        if let spec = plan.quantize {
            if plan.source == .wildcardRule, let obstacle = try Quantizer.obstacle(spec, current) {
                notes.append("not quantized: \(obstacle)")   // a wildcard rule applies where it can
            } else {
                current = try Quantizer.quantize(current, spec)
                quantized = true
            }
        }
        return (pruned, quantized)
    }

    /// 2:4 along the reduction axis (checked only where it is possible: half the elements zero)
    /// and the spread of per-channel ranges, which decides whether per-tensor scales would do.
    static func analyze(_ tensor: Tensor, sparsity: Double, values: [Float]?) throws -> (Bool?, [Float]?) {
        guard tensor.dataType.isFloatingPoint, tensor.quantization == nil else { return (nil, nil) }
        var satisfies: Bool?
        if let axis = tensor.reductionAxis, tensor.shape[axis] % 4 == 0 {
            satisfies = sparsity >= 0.5 && (try? tensor.encoded(as: .sparse24)) != nil
        }
        guard let axis = Quantizer.outputAxis(of: tensor) else { return (satisfies, nil) }
        let geometry = try TensorGeometry(shape: tensor.shape)
        let channels = ScaleIndexer(.perAxis(axis: axis), geometry: geometry)
        var absMax = [Float](repeating: 0, count: tensor.shape[axis])
        for (i, x) in try (values ?? tensor.densify()).enumerated() where x.isFinite {
            absMax[channels.index(i)] = max(absMax[channels.index(i)], abs(x))
        }
        let sorted = absMax.sorted()
        return (satisfies, sorted.isEmpty ? nil : [sorted.first!, sorted[sorted.count / 2], sorted.last!])
    }

    public func finish(sourceFileBytes: Int, fileBytes: Int) {
        report.sourceFileBytes = sourceFileBytes
        report.fileBytes = fileBytes
    }
}
