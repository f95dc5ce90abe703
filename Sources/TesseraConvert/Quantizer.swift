import Tessera

/// Post-training weight quantization, as ONNX `QuantizeLinear` defines it:
/// `code = saturate(round_half_even(x / scale) + zero_point)`, `real = scale * (code - zero_point)`.
public enum Quantizer {
    /// The axis holding a GEMM weight's output channels, from its role and reduction axis (an
    /// embedding table's rows, which are looked up one at a time).
    public static func outputAxis(of tensor: Tensor) -> Int? {
        let rank = tensor.shape.count
        switch tensor.role {
        case .matmulB, .matmulIntegerB: return rank >= 2 ? rank - 1 : nil
        case .gemmB: return tensor.reductionAxis.map { 1 - $0 }
        case .convWeight: return rank >= 3 ? 0 : nil
        case .gatherData: return rank >= 2 ? 0 : nil
        default: return nil
        }
    }

    /// The axis groups run along: the reduction axis, or an embedding row's last axis.
    public static func groupAxis(of tensor: Tensor) -> Int? {
        tensor.reductionAxis ?? (tensor.role == .gatherData && tensor.shape.count >= 2 ? tensor.shape.count - 1 : nil)
    }

    /// Why `spec` cannot apply to `tensor`, or nil: a tensor that is not float, group
    /// quantization without a reduction axis, or values no code can represent (NaN, infinities,
    /// which quantizing would silently turn into the zero point).
    public static func obstacle(_ spec: QuantizationSpec, _ tensor: Tensor) throws -> String? {
        guard tensor.quantization == nil else { return nil }   // already quantized: kept as is
        return try typeObstacle(spec, tensor) ?? valueObstacle(try tensor.densify())
    }

    private static func typeObstacle(_ spec: QuantizationSpec, _ tensor: Tensor) -> String? {
        guard tensor.dataType.isFloatingPoint else { return "it is \(tensor.dataType); only float tensors can be quantized" }
        if spec.groupSize != nil, groupAxis(of: tensor) == nil { return "it has no reduction axis for group quantization" }
        return nil
    }

    private static func valueObstacle(_ values: [Float]) -> String? {
        let nonFinite = values.reduce(0) { $0 + ($1.isFinite ? 0 : 1) }
        return nonFinite > 0 ? "it holds \(nonFinite) NaN or infinite value(s), which quantized codes cannot represent" : nil
    }

    /// `tensor` (a float tensor in any layout) quantized as `spec` says, in the same layout.
    /// Per-channel scales run along the output axis; groups run along the reduction axis.
    public static func quantize(_ tensor: Tensor, _ spec: QuantizationSpec) throws -> Tensor {
        guard tensor.quantization == nil else { return tensor }
        func refuse(_ reason: String) -> ConvertError {
            ConvertError("cannot quantize tensor '\(tensor.name)': \(reason); keep it exact with a recipe rule {\"match\": \"\(tensor.name)\", \"skip\": true}")
        }
        if let reason = typeObstacle(spec, tensor) { throw refuse(reason) }
        let granularity = self.granularity(of: tensor, spec)
        let values = try tensor.densify()
        if let reason = valueObstacle(values) { throw refuse(reason) }
        let geometry = try TensorGeometry(shape: tensor.shape)
        let groups = ScaleIndexer(granularity, geometry: geometry)
        let scaleCount = geometry.scaleCount(granularity)

        // Range of each scale group.
        var low = [Float](repeating: 0, count: scaleCount), high = [Float](repeating: 0, count: scaleCount)
        for (i, x) in values.enumerated() where x.isFinite {
            let s = groups.index(i)
            low[s] = min(low[s], x)
            high[s] = max(high[s], x)
        }
        let (qmin, qmax) = spec.codeRange
        var scales = [Float](repeating: 0, count: scaleCount)
        var zeroPoints = [Int32](repeating: 0, count: scaleCount)
        for s in 0 ..< scaleCount {
            if spec.asymmetric {
                // The range always includes 0 so that 0 is exact (a zero point code).
                scales[s] = (high[s] - low[s]) / Float(qmax - qmin)
                zeroPoints[s] = scales[s] == 0 ? 0 : Int32(max(Float(qmin), min(Float(qmax), (Float(qmin) - low[s] / scales[s]).rounded(.toNearestOrEven))))
            } else {
                scales[s] = max(abs(low[s]), abs(high[s])) / Float(qmax)
            }
        }
        return try encode(tensor, spec, granularity, values: values, scales: scales, zeroPoints: zeroPoints)
    }

    /// Per-channel scales along the output axis, groups along the reduction axis.
    public static func granularity(of tensor: Tensor, _ spec: QuantizationSpec) -> QuantizationGranularity {
        if let block = spec.groupSize, let axis = groupAxis(of: tensor) { return .perGroup(axis: axis, blockSize: block) }
        if let axis = outputAxis(of: tensor) { return .perAxis(axis: axis) }
        return .perTensor
    }

    /// `values` (in `tensor`'s element order, already on the grid) quantized with the scale and
    /// zero point each element was given (a calibrated sweep chooses them), in `tensor`'s layout.
    public static func quantize(_ tensor: Tensor, _ spec: QuantizationSpec, values: [Float],
                                elementScales: [Float], elementZeroPoints: [Int32]) throws -> Tensor {
        let granularity = self.granularity(of: tensor, spec)
        let geometry = try TensorGeometry(shape: tensor.shape)
        let groups = ScaleIndexer(granularity, geometry: geometry)
        var scales = [Float](repeating: 0, count: geometry.scaleCount(granularity))
        var zeroPoints = [Int32](repeating: 0, count: scales.count)
        for i in values.indices {
            scales[groups.index(i)] = elementScales[i]
            zeroPoints[groups.index(i)] = elementZeroPoints[i]
        }
        return try encode(tensor, spec, granularity, values: values, scales: scales, zeroPoints: zeroPoints)
    }

    private static func encode(_ tensor: Tensor, _ spec: QuantizationSpec, _ granularity: QuantizationGranularity,
                               values: [Float], scales: [Float], zeroPoints: [Int32]) throws -> Tensor {
        let groups = ScaleIndexer(granularity, geometry: try TensorGeometry(shape: tensor.shape))
        let (qmin, qmax) = spec.codeRange
        var codes = [Int32](repeating: 0, count: values.count)
        for (i, x) in values.enumerated() {
            let s = groups.index(i)
            codes[i] = code(x, scale: scales[s], zeroPoint: zeroPoints[s], qmin: qmin, qmax: qmax)
        }
        let quantized = Tensor(
            name: tensor.name, dataType: tensor.dataType, shape: tensor.shape, role: tensor.role,
            reductionAxis: tensor.reductionAxis,
            storage: .dense(values: pack(codes, spec.codeType)),
            quantization: Quantization(codeType: spec.codeType, scaleType: .float, granularity: granularity,
                                       scales: TensorBytes(float32: scales),
                                       zeroPoints: spec.asymmetric ? pack(zeroPoints, spec.codeType) : nil))
        return try quantized.encoded(as: tensor.storage.kind)
    }

    /// One element's code: round half to even, then saturate. A zero scale (an all-zero
    /// group) gives the zero point.
    @inline(__always)
    public static func code(_ x: Float, scale: Float, zeroPoint: Int32, qmin: Int32, qmax: Int32) -> Int32 {
        guard scale > 0, x.isFinite else { return zeroPoint }
        let q = (x / scale).rounded(.toNearestOrEven) + Float(zeroPoint)
        return Int32(max(Float(qmin), min(Float(qmax), q)))
    }

    /// Codes packed as the format stores them (4-bit: two per byte, low nibble first).
    static func pack(_ codes: [Int32], _ type: DataType) -> TensorBytes {
        if type.bitWidth == 8 { return TensorBytes(codes.map { UInt8(truncatingIfNeeded: $0) }) }
        var out = [UInt8](repeating: 0, count: (codes.count + 1) / 2)
        for (i, c) in codes.enumerated() {
            let nibble = UInt8(truncatingIfNeeded: c) & 0x0F
            out[i / 2] |= i % 2 == 0 ? nibble : nibble << 4
        }
        return TensorBytes(out)
    }
}

extension QuantizationSpec {
    /// Smallest and largest code.
    public var codeRange: (Int32, Int32) {
        switch codeType {
        case .int8: return (-128, 127)
        case .uint8: return (0, 255)
        case .int4: return (-8, 7)
        default: return (0, 15)
        }
    }
}
