/// Coordinate-list (COO) views, as ONNX's `SparseTensorProto` stores sparse tensors.
extension TensorRecord where Buffer == TensorBytes {
    /// A dense unquantized tensor whose elements at `linearIndices` (row-major; strictly
    /// increasing unless `anyOrder`, and never repeated) are `values` and whose other elements
    /// are zero.
    public static func fromCOO(name: String, dataType: DataType, shape: [Int], linearIndices: [Int],
                               values: TensorBytes, anyOrder: Bool = false) throws -> Tensor {
        let geometry = try TensorGeometry(shape: shape)
        guard values.count == dataType.byteCount(linearIndices.count) else {
            throw TessError(.bufferSize, "\(linearIndices.count) COO values need \(dataType.byteCount(linearIndices.count)) bytes, got \(values.count)", tensor: name)
        }
        var previous = -1
        for index in anyOrder ? linearIndices.sorted() : linearIndices {
            guard index > previous, index < geometry.elementCount else {
                throw TessError(.invalidArgument, "COO index \(index) is out of range, repeated or not increasing (after \(previous), \(geometry.elementCount) elements)", tensor: name)
            }
            previous = index
        }
        var out = try PackedBuilder(dataType, count: geometry.elementCount)
        values.withUnsafeBytes { raw in
            let stored = PackedElements(raw, dataType)
            for (j, index) in linearIndices.enumerated() { out.set(index, from: stored, j) }
        }
        return Tensor(name: name, dataType: dataType, shape: shape, storage: .dense(values: TensorBytes(out.bytes)))
    }

    /// The elements at `linearIndices` (row-major, any order), as stored bytes of the tensor's
    /// type: how an ONNX sparse initializer's values are rebuilt at its own indices, explicit
    /// zeros included. Unquantized tensors only.
    public func values(atLinearIndices linearIndices: [Int]) throws -> TensorBytes {
        guard quantization == nil else {
            throw TessError(.unsupportedOperation, "a quantized tensor has no plain values to pick", tensor: name)
        }
        let count = try TensorGeometry(shape: shape).elementCount
        guard case .dense(let dense) = try encoded(as: .dense).storage else { preconditionFailure("encoded(as: .dense) is dense") }
        return try dense.withUnsafeBytes { raw in
            let elements = PackedElements(raw, dataType)
            var values = PackedBuilder(dataType, reservingCapacity: linearIndices.count)
            for i in linearIndices {
                guard i >= 0, i < count else { throw TessError(.invalidArgument, "index \(i) is outside \(count) elements", tensor: name) }
                values.append(elements, i)
            }
            return TensorBytes(values.bytes)
        }
    }

    /// The row-major indices and values of every element that is not absent (unquantized
    /// tensors only: a quantized tensor's COO form would need its codes and scales).
    public func coo() throws -> (linearIndices: [Int], values: TensorBytes) {
        guard quantization == nil else {
            throw TessError(.unsupportedOperation, "a quantized tensor has no plain COO form", tensor: name)
        }
        guard case .dense(let dense) = try encoded(as: .dense).storage else { preconditionFailure("encoded(as: .dense) is dense") }
        let count = try TensorGeometry(shape: shape).elementCount
        return dense.withUnsafeBytes { raw in
            let elements = PackedElements(raw, dataType)
            var indices: [Int] = []
            var values = PackedBuilder(dataType)
            for i in 0 ..< count where !elements.isAllZero(i) {
                indices.append(i)
                values.append(elements, i)
            }
            return (indices, TensorBytes(values.bytes))
        }
    }
}

extension TensorRecord where Buffer == TensorBytes {
    /// The same tensor, densely stored, with every element for which `keep` is false made
    /// absent (all bits zero, or the zero point when quantized). Kept elements are untouched.
    public func keepingOnly(_ keep: (Int) -> Bool) throws -> Tensor {
        let count = try TensorGeometry(shape: shape).elementCount
        var result = try encoded(as: .dense)
        guard case .dense(let dense) = result.storage else { preconditionFailure("dense") }
        let zeroPoints: TensorBytes? = quantization?.zeroPoints
        var out = try PackedBuilder(valueType, count: count)
        let geometry = try TensorGeometry(shape: shape)
        let indexer = quantization.map { ScaleIndexer($0.granularity, geometry: geometry) }
        dense.withUnsafeBytes { raw in
            let values = PackedElements(raw, valueType)
            for i in 0 ..< count {
                if keep(i) {
                    out.set(i, from: values, i)
                } else if let zeroPoints, let indexer {
                    zeroPoints.withUnsafeBytes { out.set(i, from: PackedElements($0, valueType), indexer.index(i)) }
                }
            }
        }
        result.storage = .dense(values: TensorBytes(out.bytes))
        return result
    }
}
