import Tessera

/// What `--prune` asks for.
public enum PruneSpec: Equatable, Sendable, CustomStringConvertible {
    /// Keep the two largest magnitudes in every group of four along the reduction axis.
    case twoFour
    /// Zero the given fraction of each tensor's smallest magnitudes.
    case magnitude(Double)
    /// Zero every weight whose magnitude is below one threshold chosen across all pruned
    /// tensors so that the given fraction of their weights is zero.
    case globalMagnitude(Double)

    /// Parse `2:4`, `magnitude:0.8`, `global-magnitude:0.8`.
    public static func parse(_ text: String) throws -> PruneSpec {
        if text == "2:4" { return .twoFour }
        let parts = text.split(separator: ":", maxSplits: 1)
        guard parts.count == 2, let fraction = Double(parts[1]), fraction >= 0, fraction < 1 else {
            throw ConvertError("--prune must be 2:4, magnitude:S or global-magnitude:S with 0 <= S < 1, got '\(text)'")
        }
        switch parts[0] {
        case "magnitude": return .magnitude(fraction)
        case "global-magnitude": return .globalMagnitude(fraction)
        default: throw ConvertError("--prune must be 2:4, magnitude:S or global-magnitude:S, got '\(text)'")
        }
    }

    public var description: String {
        switch self {
        case .twoFour: return "2:4"
        case .magnitude(let s): return "magnitude:\(s)"
        case .globalMagnitude(let s): return "global-magnitude:\(s)"
        }
    }
}

public enum Pruner {
    /// Why `spec` cannot apply to `tensor`, or nil when it can.
    public static func obstacle(_ spec: PruneSpec, _ tensor: Tensor) -> String? {
        guard tensor.dataType.isFloatingPoint, tensor.quantization == nil else { return "not a float tensor" }
        guard spec == .twoFour else { return nil }
        guard let axis = tensor.reductionAxis else { return "2:4 needs a reduction axis" }
        guard tensor.shape[axis] % 4 == 0 else {
            return "reduction axis \(axis) has length \(tensor.shape[axis]), not a multiple of 4"
        }
        return nil
    }

    /// `tensor` pruned as `spec` says (`globalThreshold` for `.globalMagnitude`). Ties keep the
    /// element that comes first, so pruning is deterministic.
    public static func prune(_ tensor: Tensor, _ spec: PruneSpec, globalThreshold: Float? = nil) throws -> Tensor {
        if let reason = obstacle(spec, tensor) { throw ConvertError("cannot prune '\(tensor.name)': \(reason)") }
        let values = try tensor.densify()
        var keep = [Bool](repeating: true, count: values.count)
        switch spec {
        case .twoFour:
            let view = try TensorGeometry(shape: tensor.shape).sparse24(axis: tensor.reductionAxis!)
            for row in 0 ..< view.rows {
                for group in 0 ..< view.groupsPerRow {
                    let members = (0 ..< 4).map { view.logicalIndex(row: row, k: group * 4 + $0) }
                    // Stable: among equal magnitudes the earlier position ranks first.
                    let ranked = members.enumerated().sorted { a, b in
                        let (ma, mb) = (abs(values[a.element]), abs(values[b.element]))
                        return ma != mb ? ma > mb : a.offset < b.offset
                    }
                    for (_, index) in ranked.dropFirst(2) { keep[index] = false }
                }
            }
        case .magnitude(let fraction):
            let order = values.indices.sorted { a, b in
                let (ma, mb) = (abs(values[a]), abs(values[b]))
                return ma != mb ? ma < mb : a < b
            }
            for index in order.prefix(Int(fraction * Double(values.count))) { keep[index] = false }
        case .globalMagnitude:
            let threshold = globalThreshold ?? 0
            for (i, x) in values.enumerated() where abs(x) < threshold { keep[i] = false }
        }
        return try tensor.keepingOnly { keep[$0] }   // dense; the layout is chosen afterwards
    }

    /// The magnitude below which `fraction` of all `magnitudes` lie.
    public static func globalThreshold(_ magnitudes: [Float], fraction: Double) -> Float {
        guard !magnitudes.isEmpty else { return 0 }
        let sorted = magnitudes.sorted()
        let k = min(sorted.count - 1, Int(fraction * Double(sorted.count)))
        return sorted[k]
    }
}
