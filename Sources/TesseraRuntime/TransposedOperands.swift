/// The batched kernels' operands: `xᵀ` (`[depth][ld]`) so that one vector load reads 16 batch
/// rows at one depth index, and `yᵀ` (`[rows rounded up to 8][ld]`) written the same way.
/// `columns` is the batch rounded up to a whole vector; the padding columns of `xᵀ` are zero.
struct TransposedOperands: @unchecked Sendable {
    let columns: Int
    /// The row stride for `columns` (a whole number of vectors).
    static func leadingDimension(columns: Int) -> Int { columns % 64 == 0 ? columns + vecWidth : columns }

    /// Row stride of both. A multiple of 64 floats would put every row's column `b` in the same
    /// few L1 sets, so the reads of scattered depth rows (2:4, CSR) would evict each other; one
    /// vector of padding spreads them.
    let ld: Int
    let xt: UnsafePointer<Float>
    let yt: UnsafeMutablePointer<Float>
    /// Row stride of `yᵀ` when it differs from `xᵀ`'s (a 1x1 convolution reads its input
    /// planes in place as `xᵀ`); only the dense kernel takes such operands.
    let yld: Int
    /// When given, row `k` of `xᵀ` is at `xt + rows[k]`, not `xt + k·ld`: a stride-1
    /// convolution's columns read in place from its padded input planes. Dense kernel only.
    let rows: UnsafePointer<Int>?

    init(columns: Int, ld: Int, xt: UnsafePointer<Float>, yt: UnsafeMutablePointer<Float>, yld: Int? = nil, rows: UnsafePointer<Int>? = nil) {
        (self.columns, self.ld, self.xt, self.yt, self.yld, self.rows) = (columns, ld, xt, yt, yld ?? ld, rows)
    }
}

extension Problem {
    /// Runs `body` on the transposed operands, then writes `yᵀ` to `y`, plus `bias` when given.
    /// `yᵀ` starts zeroed when `accumulating` (kernels adding to it depth block by depth block);
    /// otherwise `body` must store every element of the first `op.rows` rows and `columns` columns.
    func withTransposedOperands(accumulating: Bool, adding bias: UnsafePointer<Float>? = nil, _ body: (TransposedOperands) -> Void) {
        let depth = op.depth, rows = op.rows
        if let given = transposed {
            precondition(bias == nil, "operands built transposed by the caller take no bias")
            if accumulating { given.yt.initialize(repeating: 0, count: roundUp(rows, 8) * given.yld) }
            body(given)
            return
        }
        let columns = roundUp(batch, vecWidth), ld = TransposedOperands.leadingDimension(columns: columns)
        let xt = alignedFloats(depth * ld), yt = alignedFloats(roundUp(rows, 8) * ld)
        defer { xt.deallocate(); yt.deallocate() }
        transposeMatrix(x, rows: batch, columns: depth, ld: depth, into: xt, ld: ld)
        if batch < columns {
            for k in 0 ..< depth { (xt + k * ld + batch).initialize(repeating: 0, count: columns - batch) }
        }
        if accumulating { yt.initialize(repeating: 0, count: roundUp(rows, 8) * ld) }
        body(TransposedOperands(columns: columns, ld: ld, xt: xt, yt: yt))
        transposeMatrix(yt, rows: rows, columns: batch, ld: ld, into: y, ld: rows, adding: bias)
    }
}

/// Float storage starting on a cache line: a row starting mid-line would split every vector
/// load in two (and made timings bimodal from run to run).
func alignedFloats(_ count: Int) -> UnsafeMutablePointer<Float> {
    UnsafeMutableRawPointer.allocate(byteCount: max(1, count) * 4, alignment: 64).bindMemory(to: Float.self, capacity: count)
}

/// `dst[j·dstLd + i] = src[i·srcLd + j]` for a `rows x columns` matrix, plus `adding[i]` when
/// given (a bias, added as an Add node adds it): whole 16 x 16 blocks in registers, the edges
/// one element at a time.
func transposeMatrix(_ src: UnsafePointer<Float>, rows: Int, columns: Int, ld srcLd: Int,
                     into dst: UnsafeMutablePointer<Float>, ld dstLd: Int, adding: UnsafePointer<Float>? = nil) {
    let fullRows = rows / 16 * 16, fullColumns = columns / 16 * 16
    @inline(__always) func element(_ i: Int, _ j: Int) {
        dst[j &* dstLd &+ i] = adding.map { src[i &* srcLd &+ j] + $0[i] } ?? src[i &* srcLd &+ j]
    }
    for i0 in stride(from: 0, to: fullRows, by: 16) {
        for j0 in stride(from: 0, to: fullColumns, by: 16) {
            transpose16x16(src + i0 * srcLd + j0, srcLd, dst + j0 * dstLd + i0, dstLd, adding: adding.map { $0 + i0 })
        }
        for i in i0 ..< i0 + 16 {
            for j in fullColumns ..< columns { element(i, j) }
        }
    }
    for i in fullRows ..< rows {
        for j in 0 ..< columns { element(i, j) }
    }
}
