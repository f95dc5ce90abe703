/// Dense weights, float or quantized: a register-blocked GEMM (float32 weights packed once,
/// others decoded into 8-row panels as they are met), and a GEMV for a single activation row, which
/// reads the stored weights in place.
struct DenseKernel: WeightKernel {
    let problem: Problem
    /// Depth per tile: an 8 x 256 panel and a 256 x 32 activation block stay in L1 (or 8 rows
    /// of 256 activations, while the weights stream past; 128 to 256 ran alike on MiniLM, 512
    /// and the whole depth 10-20% slower).
    static let depthBlock = 256

    /// The product, plus the problem's bias (the transposed GEMM adds it as it writes y).
    func run<R: WeightReader>(_ reader: R) {
        if problem.batch == 1 {
            gemv(reader)
            problem.addBias()
        } else {
            gemm(reader)
        }
    }

    private func gemm<R: WeightReader>(_ w: R) {
        if problem.transposed == nil, let wide = problem.op.widePanels {
            gemmRows(wide)
        } else {
            gemmTransposed(w)
        }
    }

    /// `y = x · W` with neither operand transposed: each tile broadcasts 8 rows of `x`, read in
    /// place, against the weights of 32 outputs (16 for the last when `rows` is an odd number of
    /// 16s) from `widePanels`, and writes 8 rows of `y`. Each output is the same chain of fused
    /// multiply-adds as in `gemmTransposed`, so the bits are the same. A batch that is not a
    /// multiple of 8 runs its last rows from a zero-padded copy. Outputs past the last whole 16
    /// (the panel padded with zero weights) are written 32 wide into `edge`, then copied: without
    /// this, such weights took the transposed form, whose two transposes cost more than the
    /// product on tinyocr-rec's 80 x 6906 classifier (perf).
    private func gemmRows(_ panels: PackedPanels) {
        let op = problem.op, rows = op.rows, depth = op.depth, batch = problem.batch
        let fullBlocks = batch / 8, tail = batch % 8
        let xTail = tail > 0 ? alignedFloats(8 * depth) : nil, yTail = tail > 0 ? alignedFloats(8 * rows) : nil
        let edgeWidth = rows % 32 == 16 ? 0 : rows % 32, edge = edgeWidth > 0 ? alignedFloats(roundUp(batch, 8) * 32) : nil
        defer { xTail?.deallocate(); yTail?.deallocate(); edge?.deallocate() }
        if let xTail {
            xTail.initialize(from: problem.x + fullBlocks * 8 * depth, count: tail * depth)
            (xTail + tail * depth).initialize(repeating: 0, count: (8 - tail) * depth)
        }
        let weights = UnsafePointer(panels.values), x = problem.x, y = problem.y
        Threads.split((rows + 31) / 32, threads: problem.threads) { range in
            // A depth block of a panel stays in L1 while every row of x passes it.
            for k0 in stride(from: 0, to: depth, by: Self.depthBlock) {
                let kn = min(Self.depthBlock, depth - k0)
                for p in range {
                    for block in 0 ..< (batch + 7) / 8 {
                        let xb = block < fullBlocks ? x + block * 8 * depth : UnsafePointer(xTail!)
                        let yb = block < fullBlocks ? y + block * 8 * rows : yTail!
                        let wp = weights + 32 * (p * depth + k0), width = min(32, rows - 32 * p)
                        let (out, ld) = width == 32 || width == 16 ? (yb + 32 * p, rows) : (edge! + block * 8 * 32, 32)
                        if width > 16 {
                            tile8x32(xb + k0, depth, 1, kn, wp, 32, out, ld, accumulating: k0 > 0)
                        } else {
                            tile8x16(xb + k0, depth, 1, kn, wp, 32, out, ld, accumulating: k0 > 0)
                        }
                    }
                }
            }
        }
        if let yTail { (y + fullBlocks * 8 * rows).update(from: yTail, count: tail * rows) }
        if let edge {
            for b in 0 ..< batch { copyFloats(edge + b * 32, y + b * rows + rows - edgeWidth, count: edgeWidth) }
        }
        problem.addBias()
    }

    /// `yᵀ = W · xᵀ`: each tile broadcasts 8 weight rows from a packed or decoded panel against
    /// 32 (or 16) columns of `xᵀ`, for weights not packed wide and for callers' transposed
    /// operands (convolution).
    private func gemmTransposed<R: WeightReader>(_ w: R) {
        let op = problem.op, rows = op.rows, depth = op.depth
        // Float32 weights are packed once (`panels`); others are decoded panel by panel.
        let packed = op.panels
        // The first depth block's tiles start from zero, so yᵀ need not be zeroed first.
        problem.withTransposedOperands(accumulating: false, adding: problem.bias) { t in
            let ld = t.ld
            Threads.split((rows + 7) / 8, threads: problem.threads) { panels in
                let panel = UnsafeMutablePointer<Float>.allocate(capacity: 8 * Self.depthBlock)
                defer { panel.deallocate() }
                for k0 in stride(from: 0, to: depth, by: Self.depthBlock) {
                    let kn = min(Self.depthBlock, depth - k0)
                    for p in panels {
                        let r0 = p * 8
                        let wp: UnsafePointer<Float>
                        if let packed {
                            wp = UnsafePointer(packed.values) + 8 * (p * depth + k0)
                        } else {
                            decodePanel(w, firstRow: r0, k0: k0, count: kn, into: panel)
                            wp = UnsafePointer(panel)
                        }
                        let out = t.yt + r0 * t.yld
                        var b = 0
                        if let rows = t.rows.map({ $0 + k0 }) {
                            while b + 32 <= t.columns {
                                tile8x32(wp, kn, t.xt + b, rows: rows, out + b, t.yld, accumulating: k0 > 0)
                                b += 32
                            }
                            if b < t.columns { tile8x16(wp, kn, t.xt + b, rows: rows, out + b, t.yld, accumulating: k0 > 0) }
                            continue
                        }
                        let xBlock = t.xt + k0 * ld
                        while b + 32 <= t.columns {
                            tile8x32(wp, 1, 8, kn, xBlock + b, ld, out + b, t.yld, accumulating: k0 > 0)
                            b += 32
                        }
                        if b < t.columns { tile8x16(wp, 1, 8, kn, xBlock + b, ld, out + b, t.yld, accumulating: k0 > 0) }
                    }
                }
            }
        }
    }

    /// `panel[k·8 + i]` = weight (firstRow + i, k0 + k); rows past the end are zero. For weights
    /// not packed (`LinearOperator.panels`): float16, bfloat16, double and quantized ones, and
    /// float32 ones reduced along a middle axis.
    private func decodePanel<R: WeightReader>(_ w: R, firstRow r0: Int, k0: Int, count kn: Int,
                                              into panel: UnsafeMutablePointer<Float>) {
        let op = problem.op, inner = op.view.inner
        for i in 0 ..< 8 {
            let r = r0 + i
            guard r < op.rows else {
                for k in 0 ..< kn { panel[k &* 8 &+ i] = 0 }
                continue
            }
            let base = op.denseOffset(row: r)
            op.scaleMap.forEachRun(row: r, from: k0, to: k0 + kn) { start, end, s in
                var j = base &+ start &* inner
                for k in start ..< end {
                    panel[(k &- k0) &* 8 &+ i] = w.weight(j, s)
                    j &+= inner
                }
            }
        }
    }

    private func gemv<R: WeightReader>(_ w: R) {
        let op = problem.op, rows = op.rows, depth = op.depth
        let x = problem.x, y = problem.y
        if op.view.outer == 1 {
            // Outputs adjacent in storage: y[n0 ..< n0+128] += x[k] · W[k, n0 ..< n0+128].
            let int8 = op.scaleMap.isPerRow && !op.scaleMap.rowBase.isEmpty ? w as? DequantizingReader<Int8Codes> : nil
            op.scaleMap.rowBase.withUnsafeBufferPointer { rowBase in
                Threads.split(rows, threads: problem.threads, granularity: 128) { range in
                    if let f = w.float32Values {
                        columnsFloat32(f, range)
                    } else if let int8 {
                        columnsInt8(int8, rowBase.baseAddress!, range)
                    } else {
                        columnsDecoded(w, range)
                    }
                }
            }
        } else {
            // Each output is a dot product along a stored row.
            Threads.split(rows, threads: problem.threads, granularity: 4) { range in
                if let f = w.float32Values, op.view.inner == 1 {
                    for r in range { y[r] = dot(f + r * depth, x, depth) }
                } else {
                    let row = UnsafeMutablePointer<Float>.allocate(capacity: depth)
                    defer { row.deallocate() }
                    for r in range {
                        let base = op.denseOffset(row: r), inner = op.view.inner
                        op.scaleMap.forEachRun(row: r, from: 0, to: depth) { start, end, s in
                            for k in start ..< end { row[k] = w.weight(base &+ k &* inner, s) }
                        }
                        y[r] = dot(row, x, depth)
                    }
                }
            }
        }
    }

    /// `y[range] = Σ_k x[k] · W[k, range]`, one stored row at a time: the weights stream in
    /// order and the outputs stay in L1.
    private func columnsFloat32(_ f: UnsafePointer<Float>, _ range: Range<Int>) {
        columns(problem.x, f + range.lowerBound, rows: problem.op.rows, depth: problem.op.depth, problem.y + range.lowerBound, width: range.count)
    }

    /// `columnsFloat32` for int8 codes with one scale per output: the codes are widened sixteen
    /// at a time and the scale and zero point applied once per output,
    /// `y[n] = s[n] · (Σ_k x[k]·c[k, n] − z[n] · Σ_k x[k])`.
    private func columnsInt8(_ w: DequantizingReader<Int8Codes>, _ rowBase: UnsafePointer<Int>, _ range: Range<Int>) {
        columns(problem.x, w.codes.bytes + range.lowerBound, rows: problem.op.rows, depth: problem.op.depth, problem.y + range.lowerBound, width: range.count)
        var xSum: Float = 0
        for k in 0 ..< problem.op.depth { xSum += problem.x[k] }
        let out = problem.y + range.lowerBound
        for i in 0 ..< range.count {
            let s = rowBase[range.lowerBound &+ i]
            out[i] = w.scales[s] * (out[i] - w.zeroPoints[s] * xSum)
        }
    }

    private func columnsDecoded<R: WeightReader>(_ w: R, _ range: Range<Int>) {
        let op = problem.op, rows = op.rows, depth = op.depth, x = problem.x, y = problem.y
        let map = op.scaleMap
        var weights = [Float](repeating: 0, count: 128), sums = [Float](repeating: 0, count: 128)
        for n0 in stride(from: range.lowerBound, to: range.upperBound, by: 128) {
            let n1 = min(range.upperBound, n0 + 128), width = n1 - n0
            for i in 0 ..< width { sums[i] = 0 }
            for k in 0 ..< depth {
                let base = k &* rows
                if map.rowBase.isEmpty {
                    for i in 0 ..< width { weights[i] = w.weight(base &+ n0 &+ i, 0) }
                } else {
                    let kPart = (k / map.kBlock) &* map.kStride
                    for i in 0 ..< width { weights[i] = w.weight(base &+ n0 &+ i, map.rowBase[n0 &+ i] &+ kPart) }
                }
                let xk = x[k]
                for i in 0 ..< width { sums[i] += xk * weights[i] }
            }
            for i in 0 ..< width { y[n0 + i] = sums[i] }
        }
    }
}
