/// Rules that need only a tensor's description (checked when a file is opened and before a
/// tensor is written), and rules that need its bytes (checked before a tensor is handed out).
extension TensorRecord {
    /// Checks every descriptive rule and returns the exact byte count each buffer must decode
    /// to, in the order of `buffers`.
    public func expectedByteCounts() throws -> [Int] {
        do {
            return try checkedByteCounts()
        } catch let error as TessError {
            throw error.inTensor(name)
        }
    }

    private func checkedByteCounts() throws -> [Int] {
        try Self.checkName(name)
        let geometry = try TensorGeometry(shape: shape)
        let rank = shape.count
        if let axis = reductionAxis, !(0 ..< rank).contains(axis) {
            throw TessError(.badReductionAxis, "reduction axis \(axis) is outside rank \(rank)")
        }
        var counts: [Int] = []
        let valueType = self.valueType
        switch storage {
        case .dense:
            counts.append(valueType.byteCount(geometry.elementCount))
        case .csr(let rowPointerType, _, let columnIndexType, _, let nnz, _):
            let rows = geometry.csrRows, columns = geometry.csrColumns
            guard nnz >= 0, nnz <= geometry.elementCount else {
                throw TessError(.bufferSize, "CSR stores \(nnz) non-zeros in \(geometry.elementCount) elements")
            }
            guard UInt64(nnz) <= rowPointerType.maxValue else {
                throw TessError(.csrRowPointers, "row pointer type \(rowPointerType) cannot hold nnz \(nnz)")
            }
            guard columns == 0 || UInt64(columns - 1) <= columnIndexType.maxValue else {
                throw TessError(.csrColumnIndices, "column index type \(columnIndexType) cannot hold column \(columns - 1)")
            }
            counts += [(rows + 1) * rowPointerType.byteWidth, nnz * columnIndexType.byteWidth, valueType.byteCount(nnz)]
        case .sparse24:
            guard let axis = reductionAxis else {
                throw TessError(.badReductionAxis, "a sparse24 tensor must record its reduction axis")
            }
            guard shape[axis] % 4 == 0 else {
                throw TessError(.badShape, "sparse24 needs the reduction axis (\(axis)) length to be a multiple of 4, got \(shape[axis])")
            }
            let view = geometry.sparse24(axis: axis)
            counts += [valueType.byteCount(view.valueCount), view.metadataBytes]
        }
        if let q = quantization {
            guard dataType.isFloatingPoint else {
                throw TessError(.badQuantization, "quantized tensors must have a floating-point logical type, not \(dataType)")
            }
            guard Quantization<Buffer>.codeTypes.contains(q.codeType) else {
                throw TessError(.badQuantization, "code type \(q.codeType) is not one of int8, uint8, int4, uint4")
            }
            guard Quantization<Buffer>.scaleTypes.contains(q.scaleType) else {
                throw TessError(.badQuantization, "scale type \(q.scaleType) is not float32 or float16")
            }
            switch q.granularity {
            case .perTensor: break
            case .perAxis(let axis):
                guard (0 ..< rank).contains(axis) else {
                    throw TessError(.badQuantization, "quantization axis \(axis) is outside rank \(rank)")
                }
            case .perGroup(let axis, let block):
                guard (0 ..< rank).contains(axis) else {
                    throw TessError(.badQuantization, "quantization axis \(axis) is outside rank \(rank)")
                }
                guard block >= 1, block <= Limits.maxElementCount else {
                    throw TessError(.badQuantization, "group size \(block) is outside 1...\(Limits.maxElementCount)")
                }
            }
            let scaleCount = geometry.scaleCount(q.granularity)
            counts.append(q.scaleType.byteCount(scaleCount))
            if q.zeroPoints != nil { counts.append(q.codeType.byteCount(scaleCount)) }
        }
        return counts
    }

    static func checkName(_ name: String) throws {
        let length = name.utf8.count
        guard length >= 1, length <= Limits.maxNameBytes else {
            throw TessError(.badName, "tensor names must be 1 to \(Limits.maxNameBytes) UTF-8 bytes, got \(length)")
        }
    }
}

extension TensorRecord where Buffer == TensorBytes {
    /// Checks the descriptive rules and the buffer sizes, then the content rules: CSR row
    /// pointers start at 0, never decrease and end at nnz; column indices are in range and
    /// strictly increase within a row; 2:4 nibbles name two distinct positions in order;
    /// scales are finite and not negative.
    public func validate() throws {
        let expected = try expectedByteCounts()
        for ((role, bytes), count) in zip(buffers, expected) where bytes.count != count {
            throw TessError(.bufferSize, "\(role.rawValue) hold \(bytes.count) bytes, the tensor needs \(count)", tensor: name)
        }
        do {
            try validateContents()
        } catch let error as TessError {
            throw error.inTensor(name)
        }
    }

    private func validateContents() throws {
        let geometry = try TensorGeometry(shape: shape)
        switch storage {
        case .dense(let values):
            try Self.checkUnusedNibble(values, type: valueType, count: geometry.elementCount, role: .values)
        case .csr(let rowPointerType, let rowPointers, let columnIndexType, let columnIndices, let nnz, let values):
            try Self.checkUnusedNibble(values, type: valueType, count: nnz, role: .values)
            try rowPointers.withUnsafeBytes { rp in
                try columnIndices.withUnsafeBytes { ci in
                    try CSR.validate(rows: geometry.csrRows, columns: geometry.csrColumns, nonZeroCount: nnz,
                                     rowPointerType: rowPointerType, rowPointers: rp,
                                     columnIndexType: columnIndexType, columnIndices: ci)
                }
            }
        case .sparse24(let values, let metadata):
            let view = geometry.sparse24(axis: reductionAxis!)
            try Self.checkUnusedNibble(values, type: valueType, count: view.valueCount, role: .values)
            try metadata.withUnsafeBytes { try Sparse24.validate(metadata: $0, groupCount: view.groupCount) }
        }
        if let q = quantization {
            if let zeroPoints = q.zeroPoints {
                try Self.checkUnusedNibble(zeroPoints, type: q.codeType, count: geometry.scaleCount(q.granularity), role: .zeroPoints)
            }
            let scales = try ScalarDecoding.floats(q.scales, type: q.scaleType, count: geometry.scaleCount(q.granularity))
            if let bad = scales.firstIndex(where: { !$0.isFinite || $0 < 0 }) {
                throw TessError(.badScale, "scale \(bad) is \(scales[bad]); scales must be finite and not negative")
            }
        }
    }

    /// An odd-length 4-bit array leaves the high nibble of its last byte unused: it must be 0.
    private static func checkUnusedNibble(_ bytes: TensorBytes, type: DataType, count: Int, role: BufferRole) throws {
        guard type.bitWidth == 4, count % 2 == 1 else { return }
        let last = bytes.withUnsafeBytes { $0[count / 2] }
        guard last >> 4 == 0 else {
            throw TessError(.bufferLayout, "the unused high nibble after the last of \(count) 4-bit \(role.rawValue) must be zero")
        }
    }
}
