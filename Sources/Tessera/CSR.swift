/// Compressed sparse rows over `TensorGeometry`'s 2-D view (dims[0] x the rest).
///
/// Row pointers: rows + 1 entries, first 0, never decreasing, last = nnz. Column indices:
/// nnz entries, each < columns, strictly increasing within a row.
public enum CSR {
    static func validate(rows: Int, columns: Int, nonZeroCount nnz: Int,
                         rowPointerType: IndexType, rowPointers rp: UnsafeRawBufferPointer,
                         columnIndexType: IndexType, columnIndices ci: UnsafeRawBufferPointer) throws {
        guard rowPointerType.load(rp, 0) == 0 else {
            throw TessError(.csrRowPointers, "row pointer 0 is \(rowPointerType.load(rp, 0)), must be 0")
        }
        var previous: UInt64 = 0
        for row in 0 ..< rows {
            let end = rowPointerType.load(rp, row &+ 1)
            guard end >= previous, end <= UInt64(nnz) else {
                throw TessError(.csrRowPointers, "row pointer \(row + 1) is \(end) after \(previous) (nnz \(nnz)); row pointers must not decrease or pass nnz")
            }
            previous = end
        }
        guard previous == UInt64(nnz) else {
            throw TessError(.csrRowPointers, "last row pointer is \(previous), must equal nnz \(nnz)")
        }
        // Row pointers are now known to be monotone and within nnz.
        for row in 0 ..< rows {
            let start = Int(rowPointerType.load(rp, row)), end = Int(rowPointerType.load(rp, row &+ 1))
            var lastColumn: UInt64? = nil
            for j in start ..< end {
                let column = columnIndexType.load(ci, j)
                guard column < UInt64(columns) else {
                    throw TessError(.csrColumnIndices, "column index \(j) is \(column), row \(row) has \(columns) columns")
                }
                if let last = lastColumn, column <= last {
                    throw TessError(.csrColumnIndices, "column indices of row \(row) do not strictly increase (\(last) then \(column))")
                }
                lastColumn = column
            }
        }
    }
}

/// NVIDIA 2:4 metadata in its logical form: one nibble `i0 | i1 << 2` (i0 < i1, positions
/// within the group of four) per group, two groups per byte, first group in the low nibble.
public enum Sparse24 {
    /// The nibble for kept positions `i0 < i1`.
    @inline(__always)
    public static func nibble(_ i0: Int, _ i1: Int) -> UInt8 { UInt8(i0 | i1 << 2) }

    /// Kept positions of a nibble, or nil when the nibble is not a valid pair.
    @inline(__always)
    public static func positions(_ nibble: UInt8) -> (Int, Int)? {
        let i0 = Int(nibble & 3), i1 = Int(nibble >> 2 & 3)
        return i0 < i1 ? (i0, i1) : nil
    }

    /// Positions to keep for a group whose non-zero elements are flagged in `mask` (bit p =
    /// position p). Groups with fewer than two non-zeros take the lowest free positions, so
    /// the encoding is canonical. Nil when more than two are non-zero.
    public static func keptPositions(mask: Int) -> (Int, Int)? {
        guard mask.nonzeroBitCount <= 2 else { return nil }
        var chosen = mask
        var p = 0
        while chosen.nonzeroBitCount < 2 {
            if chosen & (1 << p) == 0 { chosen |= 1 << p }
            p += 1
        }
        let i0 = chosen.trailingZeroBitCount
        let i1 = (chosen & ~(1 << i0)).trailingZeroBitCount
        return (i0, i1)
    }

    static func validate(metadata: UnsafeRawBufferPointer, groupCount: Int) throws {
        for g in 0 ..< groupCount {
            let byte = metadata[g >> 1]
            let n = g & 1 == 0 ? byte & 0x0F : byte >> 4
            if positions(n) == nil {
                throw TessError(.sparse24Metadata, "2:4 metadata nibble \(g) is 0x\(String(n, radix: 16)); it must name two positions i0 < i1")
            }
        }
        if groupCount & 1 == 1, metadata[groupCount >> 1] >> 4 != 0 {
            throw TessError(.sparse24Metadata, "the unused high nibble of the last 2:4 metadata byte must be zero")
        }
    }
}
