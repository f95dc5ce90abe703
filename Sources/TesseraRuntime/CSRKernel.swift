import Tessera

/// CSR weights. The CSR view is `dims[0] x rest` (spec §7.2), so a stored entry (row, column)
/// is view element (r, k) in one of three ways: for a 2-D weight reduced along axis 1 the
/// stored rows are the outputs; reduced along axis 0 they are depth indices; anything else goes
/// through the logical index. Batched, every output gathers its entries from the operator's
/// `CSRGatherIndex`; one activation row is computed in stored order, gathering per output when
/// stored rows are outputs and scattering into outputs otherwise.
struct CSRKernel: WeightKernel {
    let problem: Problem

    func run<R: WeightReader>(_ reader: R) {
        if problem.batch > 1, let index = problem.op.csrGatherIndex {
            gather(index)
        } else {
            problem.op.visitCSR(Visit(kernel: self, reader: reader))
        }
    }

    private struct Visit<R: WeightReader>: CSRVisitor {
        let kernel: CSRKernel
        let reader: R
        func visit<C: FixedWidthInteger & UnsignedInteger>(_ csr: Entries<C>) { kernel.gemv(reader, csr) }
    }

    /// One activation row.
    private func gemv<R: WeightReader, C: FixedWidthInteger & UnsignedInteger>(_ w: R, _ csr: Entries<C>) {
        // Raw pointers throughout: an array read from both threads would have its reference
        // count bumped atomically on every access.
        problem.op.scaleMap.rowBase.withUnsafeBufferPointer { rowBase in
            gemv(Weights(reader: w, map: problem.op.scaleMap, rowBase: rowBase.baseAddress), csr)
        }
    }

    private func gemv<R: WeightReader, C: FixedWidthInteger & UnsignedInteger>(_ weights: Weights<R>, _ csr: Entries<C>) {
        let op = problem.op, rowPointers = csr.rowPointers, columnIndices = csr.columnIndices, x = problem.x, y = problem.y
        if csr.storedRows == .outputs {
            Threads.split(op.rows, threads: problem.threads, granularity: 16) { range in
                for r in range {
                    var sum: Float = 0
                    for j in rowPointers[r] ..< rowPointers[r + 1] {
                        let k = Int(columnIndices[j])
                        sum += weights.value(j, r, k) * x[k]
                    }
                    y[r] = sum
                }
            }
            return
        }
        // Each stored entry scatters into its output, each thread over a share of the stored
        // rows into its own sums (reads the entries in stored order).
        let parts = max(1, min(problem.threads, csr.storedRowCount))
        var partial = [Float](repeating: 0, count: parts * op.rows)
        partial.withUnsafeMutableBufferPointer { sums in
            let sums = sums.baseAddress!
            Threads.split(parts, threads: parts) { range in
                for part in range {
                    let out = sums + part * op.rows
                    let rows = csr.storedRowCount, lo = rows * part / parts, hi = rows * (part + 1) / parts
                    csr.forEach(storedRows: lo ..< hi) { j, r, k in out[r] += weights.value(j, r, k) * x[k] }
                }
            }
            for r in 0 ..< op.rows {
                var s: Float = 0
                for part in 0 ..< parts { s += sums[part * op.rows + r] }
                y[r] = s
            }
        }
    }

    /// The batched product. Each output row accumulates 64 batch columns at a time in registers,
    /// so each entry's weight is read once per 64 columns, and it does so one depth block at a
    /// time, so the activations it gathers (`depthBlock` rows of `xᵀ`, 64 columns each) stay in
    /// L1: gathered from L2, the loads ran at L2's bandwidth.
    private func gather(_ index: CSRGatherIndex) {
        let rows = problem.op.rows
        index.blockStart.withUnsafeBufferPointer { s in index.depth.withUnsafeBufferPointer { d in
            index.values.withUnsafeBufferPointer { v in
                let blockStart = s.baseAddress!, depth = d.baseAddress!, values = v.baseAddress!
                problem.withTransposedOperands(accumulating: false) { t in
                    Threads.split(rows, threads: problem.threads) { range in
                        var b = 0
                        // 64 columns, then 32 and 16 at the end: accumulators of 4, 2 and 1 vectors.
                        while b < t.columns {
                            let width = min(64, t.columns - b)
                            for block in 0 ..< index.blocks {
                                let first = blockStart + block * rows, ld = t.ld, add = block > 0
                                let xt = t.xt + (block * CSRGatherIndex.depthBlock * ld + b)
                                for r in range {
                                    let bounds = first[r] ..< first[r &+ 1], out = t.yt + (r &* ld &+ b)
                                    if width == 48 {
                                        csrRow(32, bounds, depth, values, xt, ld, out, add)
                                        csrRow(16, bounds, depth, values, xt + 32, ld, out + 32, add)
                                    } else {
                                        csrRow(width, bounds, depth, values, xt, ld, out, add)
                                    }
                                }
                            }
                            b += width
                        }
                    }
                }
            }
        } }
    }
}

/// One CSR output row's sums over 64, 32 or 16 batch columns (`gatherRow`), in the variant
/// `KernelDispatch` chose.
@inline(__always)
private func csrRow(_ width: Int, _ bounds: Range<Int>, _ depth: UnsafePointer<UInt8>, _ values: UnsafePointer<Float>,
                    _ xt: UnsafePointer<Float>, _ ld: Int, _ out: UnsafeMutablePointer<Float>, _ adding: Bool) {
    if let k = KernelDispatch.kernels {
        k.csr_row(width, bounds.lowerBound, bounds.upperBound, depth, values, xt, ld, out, adding ? 1 : 0)
        return
    }
    switch width {
    case 64: gatherRow(Sums64.self, bounds, depth, values, xt, ld, out, adding)
    case 32: gatherRow(Sums32.self, bounds, depth, values, xt, ld, out, adding)
    default: gatherRow(Sums16.self, bounds, depth, values, xt, ld, out, adding)
    }
}

/// `out = (adding ? out : 0) + Σ values[i] · xt[depth[i]·ld ..< +S.width]` over the entries
/// `bounds`: the sums of one output row and `S.width` batch columns, in registers. Two entries
/// at a time into two sets of sums, since one set would wait on the FMA latency.
@inline(__always)
func gatherRow<S: ColumnSums>(_: S.Type, _ bounds: Range<Int>, _ depth: UnsafePointer<UInt8>, _ values: UnsafePointer<Float>,
                                      _ xt: UnsafePointer<Float>, _ ld: Int, _ out: UnsafeMutablePointer<Float>, _ adding: Bool) {
    var a = adding ? S(out) : S(), c = S()
    var i = bounds.lowerBound
    while i &+ 2 <= bounds.upperBound {
        a.add(xt + Int(depth[i]) &* ld, times: values[i])
        c.add(xt + Int(depth[i &+ 1]) &* ld, times: values[i &+ 1])
        i &+= 2
    }
    if i < bounds.upperBound { a.add(xt + Int(depth[i]) &* ld, times: values[i]) }
    a.store(adding: c, to: out)
}

/// Sums over `width` adjacent floats, held in registers.
protocol ColumnSums {
    init()
    init(_ p: UnsafePointer<Float>)
    mutating func add(_ p: UnsafePointer<Float>, times w: Float)
    /// Stores `self + other` to `p`.
    func store(adding other: Self, to p: UnsafeMutablePointer<Float>)
}

struct Sums64: ColumnSums {
    var s0 = Vec(), s1 = Vec(), s2 = Vec(), s3 = Vec()
    init() {}
    @inline(__always) init(_ p: UnsafePointer<Float>) { (s0, s1, s2, s3) = (load(p), load(p + 16), load(p + 32), load(p + 48)) }
    @inline(__always) mutating func add(_ p: UnsafePointer<Float>, times w: Float) {
        let v = Vec(repeating: w)
        s0.addProduct(load(p), v); s1.addProduct(load(p + 16), v); s2.addProduct(load(p + 32), v); s3.addProduct(load(p + 48), v)
    }
    @inline(__always) func store(adding o: Self, to p: UnsafeMutablePointer<Float>) {
        TesseraRuntime.store(s0 + o.s0, p); TesseraRuntime.store(s1 + o.s1, p + 16)
        TesseraRuntime.store(s2 + o.s2, p + 32); TesseraRuntime.store(s3 + o.s3, p + 48)
    }
}

struct Sums32: ColumnSums {
    var s0 = Vec(), s1 = Vec()
    init() {}
    @inline(__always) init(_ p: UnsafePointer<Float>) { (s0, s1) = (load(p), load(p + 16)) }
    @inline(__always) mutating func add(_ p: UnsafePointer<Float>, times w: Float) {
        let v = Vec(repeating: w)
        s0.addProduct(load(p), v); s1.addProduct(load(p + 16), v)
    }
    @inline(__always) func store(adding o: Self, to p: UnsafeMutablePointer<Float>) {
        TesseraRuntime.store(s0 + o.s0, p); TesseraRuntime.store(s1 + o.s1, p + 16)
    }
}

struct Sums16: ColumnSums {
    var s0 = Vec()
    init() {}
    @inline(__always) init(_ p: UnsafePointer<Float>) { s0 = load(p) }
    @inline(__always) mutating func add(_ p: UnsafePointer<Float>, times w: Float) { s0.addProduct(load(p), Vec(repeating: w)) }
    @inline(__always) func store(adding o: Self, to p: UnsafeMutablePointer<Float>) { TesseraRuntime.store(s0 + o.s0, p) }
}

/// Stored value `j` at view element (r, k), dequantized with its scale.
private struct Weights<R: WeightReader> {
    let reader: R
    let map: ScaleMap
    let rowBase: UnsafePointer<Int>?   // nil when unquantized

    @inline(__always) func value(_ j: Int, _ r: Int, _ k: Int) -> Float {
        guard let rowBase else { return reader.weight(j, 0) }
        return reader.weight(j, map.index(rowBase: rowBase[r], k: k))
    }
}

/// A CSR weight's entries regrouped for the batched kernel: by depth block, then by output row,
/// each with its depth within the block and its decoded value (5 bytes per stored entry, plus
/// one bound per output row and depth block). Built once per operator from the stored entries.
struct CSRGatherIndex: Sendable {
    /// Depth indices per block: 128 rows of `xᵀ`, 64 columns wide, fill L1 (32 KiB). Measured
    /// at 768 x 768 x 128, 90% sparse: 64 → 0.287 ms, 128 → 0.252, 256 → 0.247, unblocked 0.299;
    /// smaller blocks stay in L1 but end a row's loop more often.
    static let depthBlock = 128
    let blocks: Int
    /// Output row `r`'s entries in depth block `b` are `blockStart[b·rows + r] ..< blockStart[b·rows + r + 1]`.
    let blockStart: [Int]
    /// Depth within the block.
    let depth: [UInt8]
    let values: [Float]

    /// Nil unless the weight is stored CSR.
    init?(_ op: LinearOperator) {
        guard case .csr = op.tensor.storage else { return nil }
        self = op.withReader(Regroup(op: op))
    }

    private init(blocks: Int, blockStart: [Int], depth: [UInt8], values: [Float]) {
        self.blocks = blocks
        self.blockStart = blockStart
        self.depth = depth
        self.values = values
    }

    private struct Regroup: WeightKernel {
        let op: LinearOperator
        func run<R: WeightReader>(_ reader: R) -> CSRGatherIndex {
            op.scaleMap.rowBase.withUnsafeBufferPointer { rowBase in
                op.visitCSR(Visit(op: op, weights: Weights(reader: reader, map: op.scaleMap, rowBase: rowBase.baseAddress)))
            }
        }
    }

    private struct Visit<R: WeightReader>: CSRVisitor {
        let op: LinearOperator
        let weights: Weights<R>
        func visit<C: FixedWidthInteger & UnsignedInteger>(_ csr: Entries<C>) -> CSRGatherIndex {
            // Count each (block, output)'s entries, then place them in stored order, which is
            // by depth within each output for both orientations.
            let rows = op.rows, blocks = (op.depth + depthBlock - 1) / depthBlock
            var blockStart = [Int](repeating: 0, count: blocks * rows + 1)
            csr.forEach(storedRows: 0 ..< csr.storedRowCount) { _, r, k in blockStart[k / depthBlock * rows + r + 1] += 1 }
            for i in 0 ..< blocks * rows { blockStart[i + 1] += blockStart[i] }
            var depth = [UInt8](repeating: 0, count: blockStart[blocks * rows])
            var values = [Float](repeating: 0, count: blockStart[blocks * rows])
            var next = blockStart
            csr.forEach(storedRows: 0 ..< csr.storedRowCount) { j, r, k in
                let slot = k / depthBlock * rows + r
                depth[next[slot]] = UInt8(k % depthBlock)
                values[next[slot]] = weights.value(j, r, k)
                next[slot] += 1
            }
            return CSRGatherIndex(blocks: blocks, blockStart: blockStart, depth: depth, values: values)
        }
    }
}

/// A computation over a CSR weight's entries, run once per column index width.
protocol CSRVisitor {
    associatedtype Result
    func visit<C: FixedWidthInteger & UnsignedInteger>(_ csr: Entries<C>) -> Result
}

extension LinearOperator {
    func visitCSR<V: CSRVisitor>(_ visitor: V) -> V.Result {
        guard case .csr(let rowPointerType, let rowPointerBytes, let columnType, let columnBytes, _, _) = tensor.storage else {
            preconditionFailure("not a CSR tensor")
        }
        let geometry = try! TensorGeometry(shape: tensor.shape)   // validated by init
        let storedRows: CSRStoredRows = tensor.reductionAxis == 0 ? .depths
            : tensor.shape.count == 2 ? .outputs : .flat
        let rowPointers = rowPointerBytes.withUnsafeBytes { raw in
            (0 ... geometry.csrRows).map { Int(rowPointerType.load(raw, $0)) }
        }
        return columnBytes.withBaseAddress { base in
            func visit<C: FixedWidthInteger & UnsignedInteger>(_ type: C.Type) -> V.Result {
                visitor.visit(Entries(rowPointers: rowPointers, columnIndices: base.assumingMemoryBound(to: C.self), columns: geometry.csrColumns,
                                      view: view, storedRows: storedRows))
            }
            switch columnType {
            case .uint8: return visit(UInt8.self)
            case .uint16: return visit(UInt16.self)
            case .uint32: return visit(UInt32.self)
            case .uint64: return visit(UInt64.self)
            }
        }
    }
}

/// What a CSR weight's stored row is: an output (a 2-D weight reduced along axis 1), a depth
/// index (reduced along axis 0, the column then being the output), or neither (the entry's flat
/// index is decoded).
enum CSRStoredRows { case outputs, depths, flat }

/// Walks stored CSR entries as view coordinates.
struct Entries<C: FixedWidthInteger & UnsignedInteger> {
    let rowPointers: [Int]
    let columnIndices: UnsafePointer<C>
    let columns: Int
    let view: Sparse24Geometry
    let storedRows: CSRStoredRows

    var storedRowCount: Int { rowPointers.count - 1 }

    /// `body(j, r, k)` for every stored entry `j` of stored rows `rows`.
    @inline(__always)
    func forEach(storedRows rows: Range<Int>, _ body: (Int, Int, Int) -> Void) {
        if storedRows == .depths {
            for k in rows {
                for j in rowPointers[k] ..< rowPointers[k + 1] { body(j, Int(columnIndices[j]), k) }
            }
            return
        }
        let slab = view.reduction &* view.inner
        for row in rows {
            for j in rowPointers[row] ..< rowPointers[row + 1] {
                let flat = row &* columns &+ Int(columnIndices[j])
                let o = flat / slab, rest = flat &- o &* slab
                let k = rest / view.inner, i = rest &- k &* view.inner
                body(j, o &* view.inner &+ i, k)
            }
        }
    }
}
