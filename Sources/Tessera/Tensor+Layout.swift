/// Moving a tensor between layouts without changing a single element, and back to float32.
///
/// An element is "absent" (not stored by CSR or 2:4) when it is exactly zero: all bits zero
/// for plain values (so -0.0 is kept), or code == zero point for quantized values (so that
/// `scale * (code - zeroPoint)` is +0.0 either way). Re-encoding is therefore lossless.
extension TensorRecord where Buffer == TensorBytes {
    /// The same tensor stored in `layout`. Dense to sparse keeps every non-absent element;
    /// throws when 2:4 is asked of a tensor with more than two non-zeros in some group, or of
    /// one without a reduction axis whose length is a multiple of 4.
    public func encoded(as layout: LayoutKind) throws -> Tensor {
        do {
            if layout == storage.kind { return self }
            let dense = try self.denseStorage()
            var result = self
            switch layout {
            case .dense: result.storage = .dense(values: dense)
            case .csr: result.storage = try encodeCSR(dense)
            case .sparse24: result.storage = try encodeSparse24(dense)
            }
            try result.validate()
            return result
        } catch let error as TessError {
            throw error.inTensor(name)
        }
    }

    /// Fraction of elements that are absent (see above), in 0...1.
    public func sparsity() throws -> Double {
        let geometry = try TensorGeometry(shape: shape)
        guard geometry.elementCount > 0 else { return 0 }
        switch storage {
        case .dense(let values):
            let absent = try values.withUnsafeBytes { raw -> Int in
                let isAbsent = try absenceTest(PackedElements(raw, valueType), geometry)
                var n = 0
                for i in 0 ..< geometry.elementCount where isAbsent(i) { n += 1 }
                return n
            }
            return Double(absent) / Double(geometry.elementCount)
        case .csr(_, _, _, _, let nnz, _):
            return Double(geometry.elementCount - nnz) / Double(geometry.elementCount)
        case .sparse24:
            return try encoded(as: .dense).sparsity()
        }
    }

    /// Every element as float32, row-major. Ground truth for tests and `verify`.
    public func densify() throws -> [Float] {
        do {
            let geometry = try TensorGeometry(shape: shape)
            try MemoryBudget.check(geometry.elementCount, width: 4, "\(geometry.elementCount) float32 elements")
            let values = try denseStorage()
            guard let q = quantization else {
                return try ScalarDecoding.floats(values, type: dataType, count: geometry.elementCount)
            }
            let scaleCount = geometry.scaleCount(q.granularity)
            let scales = try ScalarDecoding.floats(q.scales, type: q.scaleType, count: scaleCount)
            let zeroPoints = try zeroPointCodes(q, count: scaleCount)
            let indexer = ScaleIndexer(q.granularity, geometry: geometry)
            return values.withUnsafeBytes { raw in
                let codes = PackedElements(raw, q.codeType)
                return (0 ..< geometry.elementCount).map { i in
                    let s = indexer.index(i)
                    return scales[s] * Float(ScalarDecoding.code(codes.small(i), q.codeType) - zeroPoints[s])
                }
            }
        } catch let error as TessError {
            throw error.inTensor(name)
        }
    }

    // MARK: - Internals

    /// Zero-point codes as integers (all zero when absent).
    private func zeroPointCodes(_ q: Quantization<TensorBytes>, count: Int) throws -> [Int32] {
        guard let zp = q.zeroPoints else { return [Int32](repeating: 0, count: count) }
        return zp.withUnsafeBytes { raw in
            let p = PackedElements(raw, q.codeType)
            return (0 ..< count).map { ScalarDecoding.code(p.small($0), q.codeType) }
        }
    }

    /// A predicate telling whether logical element `i` of dense values is absent.
    private func absenceTest(_ values: PackedElements, _ geometry: TensorGeometry) throws -> (Int) -> Bool {
        guard let q = quantization, let zp = q.zeroPoints else { return values.isAllZero }
        let indexer = ScaleIndexer(q.granularity, geometry: geometry)
        let count = geometry.scaleCount(q.granularity)
        let zeroPoints: [UInt8] = zp.withUnsafeBytes { raw in
            let packed = PackedElements(raw, q.codeType)
            return (0 ..< count).map { packed.small($0) }
        }
        return { i in values.small(i) == zeroPoints[indexer.index(i)] }
    }

    /// The values buffer of the dense form: absent elements are zero bits, or the zero point.
    private func denseStorage() throws -> TensorBytes {
        let geometry = try TensorGeometry(shape: shape)
        let type = valueType
        switch storage {
        case .dense(let values):
            return values
        case .csr(let rowPointerType, let rowPointers, let columnIndexType, let columnIndices, _, let values):
            var out = try absentFilled(geometry)
            let columns = geometry.csrColumns
            values.withUnsafeBytes { v in
                rowPointers.withUnsafeBytes { rp in
                    columnIndices.withUnsafeBytes { ci in
                        let stored = PackedElements(v, type)
                        for row in 0 ..< geometry.csrRows {
                            let start = Int(rowPointerType.load(rp, row)), end = Int(rowPointerType.load(rp, row + 1))
                            for j in start ..< end {
                                out.set(row * columns + Int(columnIndexType.load(ci, j)), from: stored, j)
                            }
                        }
                    }
                }
            }
            return TensorBytes(out.bytes)
        case .sparse24(let values, let metadata):
            var out = try absentFilled(geometry)
            let view = geometry.sparse24(axis: reductionAxis!)
            values.withUnsafeBytes { v in
                metadata.withUnsafeBytes { meta in
                    let stored = PackedElements(v, type)
                    let nibbles = PackedElements(meta, .uint4)
                    var g = 0
                    for row in 0 ..< view.rows {
                        for group in 0 ..< view.groupsPerRow {
                            let (i0, i1) = Sparse24.positions(nibbles.nibble(g))!   // validated
                            out.set(view.logicalIndex(row: row, k: group * 4 + i0), from: stored, 2 * g)
                            out.set(view.logicalIndex(row: row, k: group * 4 + i1), from: stored, 2 * g + 1)
                            g += 1
                        }
                    }
                }
            }
            return TensorBytes(out.bytes)
        }
    }

    /// A dense values buffer in which every element is absent.
    private func absentFilled(_ geometry: TensorGeometry) throws -> PackedBuilder {
        guard let q = quantization, let zp = q.zeroPoints else {
            return try PackedBuilder(valueType, count: geometry.elementCount)
        }
        var out = try PackedBuilder(valueType, count: geometry.elementCount)
        let indexer = ScaleIndexer(q.granularity, geometry: geometry)
        zp.withUnsafeBytes { raw in
            let zeroPoints = PackedElements(raw, q.codeType)
            for i in 0 ..< geometry.elementCount { out.set(i, from: zeroPoints, indexer.index(i)) }
        }
        return out
    }

    private func encodeCSR(_ dense: TensorBytes) throws -> Storage<TensorBytes> {
        let geometry = try TensorGeometry(shape: shape)
        let rows = geometry.csrRows, columns = geometry.csrColumns
        return try dense.withUnsafeBytes { raw in
            let elements = PackedElements(raw, valueType)
            let isAbsent = try absenceTest(elements, geometry)
            var kept: [Int] = []
            var rowEnds: [Int] = [0]
            var values = PackedBuilder(valueType)
            for row in 0 ..< rows {
                for column in 0 ..< columns where !isAbsent(row * columns + column) {
                    kept.append(column)
                    values.append(elements, row * columns + column)
                }
                rowEnds.append(kept.count)
            }
            let rowPointerType = IndexType.narrowest(holding: kept.count)
            let columnIndexType = IndexType.narrowest(holding: columns - 1)
            var rowPointers: [UInt8] = [], columnIndices: [UInt8] = []
            rowPointers.reserveCapacity(rowEnds.count * rowPointerType.byteWidth)
            columnIndices.reserveCapacity(kept.count * columnIndexType.byteWidth)
            for end in rowEnds { rowPointerType.append(end, to: &rowPointers) }
            for column in kept { columnIndexType.append(column, to: &columnIndices) }
            return .csr(rowPointerType: rowPointerType, rowPointers: TensorBytes(rowPointers),
                        columnIndexType: columnIndexType, columnIndices: TensorBytes(columnIndices),
                        nonZeroCount: kept.count, values: TensorBytes(values.bytes))
        }
    }

    private func encodeSparse24(_ dense: TensorBytes) throws -> Storage<TensorBytes> {
        guard let axis = reductionAxis else {
            throw TessError(.badReductionAxis, "2:4 needs a reduction axis and this tensor records none")
        }
        guard shape[axis] % 4 == 0 else {
            throw TessError(.badShape, "2:4 needs the reduction axis (\(axis)) length to be a multiple of 4, got \(shape[axis])")
        }
        let geometry = try TensorGeometry(shape: shape)
        let view = geometry.sparse24(axis: axis)
        return try dense.withUnsafeBytes { raw in
            let elements = PackedElements(raw, valueType)
            let isAbsent = try absenceTest(elements, geometry)
            var values = PackedBuilder(valueType, reservingCapacity: view.valueCount)
            var metadata = PackedBuilder(.uint4, reservingCapacity: view.groupCount)
            for row in 0 ..< view.rows {
                for group in 0 ..< view.groupsPerRow {
                    var mask = 0
                    for p in 0 ..< 4 where !isAbsent(view.logicalIndex(row: row, k: group * 4 + p)) { mask |= 1 << p }
                    guard let (i0, i1) = Sparse24.keptPositions(mask: mask) else {
                        throw TessError(.sparse24Metadata, "group \(group) of row \(row) along axis \(axis) has \(mask.nonzeroBitCount) non-zeros; 2:4 allows at most 2")
                    }
                    values.append(elements, view.logicalIndex(row: row, k: group * 4 + i0))
                    values.append(elements, view.logicalIndex(row: row, k: group * 4 + i1))
                    metadata.appendNibble(Sparse24.nibble(i0, i1))
                }
            }
            return .sparse24(values: TensorBytes(values.bytes), metadata: TensorBytes(metadata.bytes))
        }
    }
}
