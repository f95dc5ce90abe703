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
    /// Bytes the runtime holds for this tensor: its decoded buffers, read in place.
    public var decodedBytes: Int
    /// Multiply-adds per input row (per output position for Conv) of a GEMM weight, as if
    /// dense, and as its stored layout actually needs. Nil for other tensors.
    public var denseMACs: Int?
    public var effectiveMACs: Int?
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
        let sparsity = try tensor.sparsity()
        let isGemm = [.matmulB, .gemmB, .convWeight, .matmulIntegerB].contains(entry.role)
        let count = try TensorGeometry(shape: entry.shape).elementCount
        let stored: Int   // elements the layout keeps (a 2:4 group keeps two, zeros or not)
        switch entry.storage {
        case .dense: stored = count
        case .csr(_, _, _, _, let nnz, _): stored = nnz
        case .sparse24: stored = count / 2
        }
        return TensorSummary(
            name: entry.name, dataType: entry.dataType, shape: entry.shape, role: entry.role,
            reductionAxis: entry.reductionAxis, layout: entry.storage.kind,
            quantization: entry.quantization?.summary, sparsity: sparsity,
            storedBytes: used.reduce(0) { $0 + $1.storedLength },
            decodedBytes: used.reduce(0) { $0 + $1.decodedLength },
            denseMACs: isGemm ? count : nil, effectiveMACs: isGemm ? stored : nil,
            codec: codecs.count == 1 ? codecs.first!.description : (codecs.isEmpty ? "-" : "mixed"))
    }
}
