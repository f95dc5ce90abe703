/// What `inspect` shows about one tensor, computed from the file.
public struct TensorSummary: Sendable {
    public var name: String
    public var dataType: DataType
    public var shape: [Int]
    public var role: WeightRole
    public var reductionAxis: Int?
    public var layout: LayoutKind
    /// e.g. "int8 per-axis(0) f32", nil when not quantized.
    public var quantization: String?
    /// Fraction of exactly-zero elements.
    public var sparsity: Double
    public var storedBytes: Int
    public var decodedBytes: Int
    /// "none", "zstd" or "mixed".
    public var codec: String
}

extension Quantization {
    /// A short human description: code type, granularity, scale type, zero points.
    public var summary: String {
        let granularity: String
        switch self.granularity {
        case .perTensor: granularity = "per-tensor"
        case .perAxis(let axis): granularity = "per-axis(\(axis))"
        case .perGroup(let axis, let block): granularity = "group(\(axis),\(block))"
        }
        let scale = scaleType == .float ? "f32" : "f16"
        return "\(codeType) \(granularity) \(scale)" + (zeroPoints == nil ? "" : " +zp")
    }
}

extension TessFile {
    /// Summary of tensor `i`. Sparsity needs the values, so this loads (and checks) the tensor.
    public func summary(of i: Int) throws -> TensorSummary {
        let entry = tensors[i]
        let tensor = try self.tensor(i)
        let used = entry.buffers.map { buffers[$0.buffer] }
        let codecs = Set(used.map(\.codec))
        return TensorSummary(
            name: entry.name, dataType: entry.dataType, shape: entry.shape, role: entry.role,
            reductionAxis: entry.reductionAxis, layout: entry.storage.kind,
            quantization: entry.quantization?.summary, sparsity: try tensor.sparsity(),
            storedBytes: used.reduce(0) { $0 + $1.storedLength },
            decodedBytes: used.reduce(0) { $0 + $1.decodedLength },
            codec: codecs.count == 1 ? codecs.first!.description : (codecs.isEmpty ? "-" : "mixed"))
    }
}
