/// What a weight is used for in the graph; it fixes the reduction axis of its GEMM.
/// Numbers are stored in the file and never reused.
public enum WeightRole: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case unknown = 0
    case matmulB = 1            // MatMul input B [K, N]: reduction axis 0
    case gemmB = 2              // Gemm input B: axis 1 with transB=1, else 0
    case convWeight = 3         // Conv W [Cout, Cin/g, kh, kw]: reduction axis 1 (input channels)
    case matmulIntegerB = 4     // MatMulInteger input B [K, N]: reduction axis 0
    case dequantizeInput = 5    // DequantizeLinear x (an already-quantized weight)
    case gatherData = 6         // Gather data (embedding tables)

    public var description: String {
        switch self {
        case .unknown: return "-"
        case .matmulB: return "matmul.B"
        case .gemmB: return "gemm.B"
        case .convWeight: return "conv.W"
        case .matmulIntegerB: return "matmulinteger.B"
        case .dequantizeInput: return "dequantize.x"
        case .gatherData: return "gather.data"
        }
    }
}

/// How a tensor's elements are laid out in its buffers.
public enum LayoutKind: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case dense = 0
    case csr = 1
    case sparse24 = 2

    public var description: String {
        switch self {
        case .dense: return "dense"
        case .csr: return "csr"
        case .sparse24: return "sparse24"
        }
    }
}

/// A tensor's storage. `Buffer` is `TensorBytes` for tensors in memory and `Int` (a buffer
/// number) for entries of a file's tensor table; one type describes both.
public enum Storage<Buffer> {
    /// Every element, row-major.
    case dense(values: Buffer)
    /// Compressed sparse rows over the 2-D view described in `CSRGeometry`.
    case csr(rowPointerType: IndexType, rowPointers: Buffer,
             columnIndexType: IndexType, columnIndices: Buffer,
             nonZeroCount: Int, values: Buffer)
    /// Two kept values per group of four along the reduction axis, plus one metadata nibble
    /// per group (see `Sparse24`).
    case sparse24(values: Buffer, metadata: Buffer)

    public var kind: LayoutKind {
        switch self {
        case .dense: return .dense
        case .csr: return .csr
        case .sparse24: return .sparse24
        }
    }
}

/// Which elements share a scale.
public enum QuantizationGranularity: Equatable, Sendable {
    case perTensor
    /// One scale per index of `axis`.
    case perAxis(axis: Int)
    /// One scale per `blockSize` consecutive indices of `axis` (the last block may be short).
    case perGroup(axis: Int, blockSize: Int)
}

/// `real = scale * (code - zeroPoint)`; elements a sparse layout does not store are exactly 0.
public struct Quantization<Buffer> {
    public typealias Granularity = QuantizationGranularity

    /// Code type: `.int8`, `.uint8`, `.int4` or `.uint4`.
    public var codeType: DataType
    /// Scale type: `.float` or `.float16`.
    public var scaleType: DataType
    public var granularity: Granularity
    public var scales: Buffer
    /// Zero points, in `codeType`, shaped like the scales; nil means all zero.
    public var zeroPoints: Buffer?

    public init(codeType: DataType, scaleType: DataType = .float, granularity: Granularity,
                scales: Buffer, zeroPoints: Buffer? = nil) {
        self.codeType = codeType
        self.scaleType = scaleType
        self.granularity = granularity
        self.scales = scales
        self.zeroPoints = zeroPoints
    }

    public static var codeTypes: [DataType] { [.int8, .uint8, .int4, .uint4] }
    public static var scaleTypes: [DataType] { [.float, .float16] }
}

/// One tensor: its description and its buffers.
public struct TensorRecord<Buffer> {
    public var name: String
    /// The logical element type (what `densify` reproduces; a float type when quantized).
    public var dataType: DataType
    /// Dims, row-major, ONNX/numpy order. Empty for a scalar.
    public var shape: [Int]
    public var role: WeightRole
    /// The axis a GEMM reduces over, when the tensor is a GEMM weight.
    public var reductionAxis: Int?
    public var storage: Storage<Buffer>
    public var quantization: Quantization<Buffer>?

    public init(name: String, dataType: DataType, shape: [Int], role: WeightRole = .unknown,
                reductionAxis: Int? = nil, storage: Storage<Buffer>, quantization: Quantization<Buffer>? = nil) {
        self.name = name
        self.dataType = dataType
        self.shape = shape
        self.role = role
        self.reductionAxis = reductionAxis
        self.storage = storage
        self.quantization = quantization
    }

    /// Type of the stored value elements: the codes when quantized, else the logical type.
    public var valueType: DataType { quantization?.codeType ?? dataType }
}

/// A tensor held in memory (or viewed in a mapped file).
public typealias Tensor = TensorRecord<TensorBytes>
/// A tensor-table entry of an open file: buffers are buffer numbers.
public typealias TensorEntry = TensorRecord<Int>

/// What each buffer of a tensor holds; used in messages and in the buffer walk order.
public enum BufferRole: String, Sendable {
    case values, rowPointers = "row pointers", columnIndices = "column indices",
         metadata = "2:4 metadata", scales, zeroPoints = "zero points"
}

extension TensorRecord {
    /// The tensor's buffers in canonical order: layout buffers, then scales, then zero points.
    /// Writers store them in this order; readers use it for `mapBuffers`.
    public var buffers: [(role: BufferRole, buffer: Buffer)] {
        var out: [(BufferRole, Buffer)] = []
        switch storage {
        case .dense(let values):
            out.append((.values, values))
        case .csr(_, let rowPointers, _, let columnIndices, _, let values):
            out += [(.rowPointers, rowPointers), (.columnIndices, columnIndices), (.values, values)]
        case .sparse24(let values, let metadata):
            out += [(.values, values), (.metadata, metadata)]
        }
        if let q = quantization {
            out.append((.scales, q.scales))
            if let zp = q.zeroPoints { out.append((.zeroPoints, zp)) }
        }
        return out
    }

    /// The same tensor with every buffer replaced by `transform(role, buffer)`.
    public func mapBuffers<B>(_ transform: (BufferRole, Buffer) throws -> B) rethrows -> TensorRecord<B> {
        let storage: Storage<B>
        switch self.storage {
        case .dense(let values):
            storage = .dense(values: try transform(.values, values))
        case .csr(let rpt, let rp, let cit, let ci, let nnz, let values):
            let rowPointers = try transform(.rowPointers, rp)
            let columnIndices = try transform(.columnIndices, ci)
            storage = .csr(rowPointerType: rpt, rowPointers: rowPointers, columnIndexType: cit,
                           columnIndices: columnIndices, nonZeroCount: nnz, values: try transform(.values, values))
        case .sparse24(let values, let metadata):
            let v = try transform(.values, values)
            storage = .sparse24(values: v, metadata: try transform(.metadata, metadata))
        }
        var quantization: Quantization<B>?
        if let q = self.quantization {
            let scales = try transform(.scales, q.scales)
            quantization = Quantization(codeType: q.codeType, scaleType: q.scaleType, granularity: q.granularity,
                                        scales: scales, zeroPoints: try q.zeroPoints.map { try transform(.zeroPoints, $0) })
        }
        return TensorRecord<B>(name: name, dataType: dataType, shape: shape, role: role,
                               reductionAxis: reductionAxis, storage: storage, quantization: quantization)
    }
}

extension Storage: Equatable where Buffer: Equatable {}
extension Storage: Sendable where Buffer: Sendable {}
extension Quantization: Equatable where Buffer: Equatable {}
extension Quantization: Sendable where Buffer: Sendable {}
extension TensorRecord: Equatable where Buffer: Equatable {}
extension TensorRecord: Sendable where Buffer: Sendable {}
