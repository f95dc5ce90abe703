import Tessera

/// CSR weights. The CSR view is `dims[0] x rest` (spec §7.2), so a stored entry (row, column)
/// is view element (r, k) in one of three ways: for a 2-D weight reduced along axis 1 the
/// stored rows are the outputs; reduced along axis 0 they are depth indices; anything else goes
/// through the logical index. Batched, every output gathers its entries (through the operator's
/// `CSROutputRows` unless stored rows are outputs); one activation row is computed in stored
/// order, gathering per output or scattering into outputs.
struct CSRKernel: WeightKernel {
    let problem: Problem

    func run<R: WeightReader>(_ reader: R) {
        problem.op.visitCSR(Visit(kernel: self, reader: reader))
    }

    private struct Visit<R: WeightReader>: CSRVisitor {
        let kernel: CSRKernel
        let reader: R
        func visit<C: FixedWidthInteger & UnsignedInteger>(_ csr: Entries<C>) { kernel.run(reader, csr) }
    }

    private func run<R: WeightReader, C: FixedWidthInteger & UnsignedInteger>(_ w: R, _ csr: Entries<C>) {
        // Raw pointers throughout: an array read from both threads would have its reference
        // count bumped atomically on every access.
        problem.op.scaleMap.rowBase.withUnsafeBufferPointer { rowBase in
            run(Weights(reader: w, map: problem.op.scaleMap, rowBase: rowBase.baseAddress), csr)
        }
    }

    private func run<R: WeightReader, C: FixedWidthInteger & UnsignedInteger>(_ weights: Weights<R>, _ csr: Entries<C>) {
        let op = problem.op, rowPointers = csr.rowPointers, columnIndices = csr.columnIndices
        if problem.batch > 1 {
            if let index = op.csrOutputRows {
                index.rowStart.withUnsafeBufferPointer { s in index.depth.withUnsafeBufferPointer { d in
                    index.values.withUnsafeBufferPointer { v in
                        gather(Regrouped(rowStart: s.baseAddress!, depth: d.baseAddress!), Float32Reader(values: v.baseAddress!))
                    }
                } }
            } else {
                rowPointers.withUnsafeBufferPointer { p in
                    gather(StoredRows(rowPointers: p.baseAddress!, columnIndices: columnIndices), weights)
                }
            }
            return
        }
        let x = problem.x, y = problem.y
        if op.csrOutputRows == nil {
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
        // One activation row: each stored entry scatters into its output, each thread over a
        // share of the stored rows into its own sums (reads the entries in stored order).
        let parts = max(1, min(problem.threads, rowPointers.count - 1))
        var partial = [Float](repeating: 0, count: parts * op.rows)
        partial.withUnsafeMutableBufferPointer { sums in
            let sums = sums.baseAddress!
            Threads.split(parts, threads: parts) { range in
                for part in range {
                    let out = sums + part * op.rows
                    let rows = csr.storedRows, lo = rows * part / parts, hi = rows * (part + 1) / parts
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

    /// The batched product, each output row accumulating 64 batch columns at a time in
    /// registers, so each entry's weight is read once per 64 columns.
    private func gather<E: OutputRowEntries, V: EntryValues>(_ entries: E, _ weights: V) {
        let op = problem.op
        let xt = TransposedActivations(problem.x, batch: problem.batch, depth: op.depth)
        defer { xt.deallocate() }
        let yt = TransposedOutputs(rows: op.rows, batch: problem.batch)
        defer { yt.deallocate() }
        let ld = xt.ld, columns = xt.columns
        xt.withPointer { xt in
            Threads.split(op.rows, threads: problem.threads) { range in
                for r in range {
                    let bounds = entries.bounds(r), out = yt.pointer + r * ld
                    var b = 0
                    while b + 64 <= columns {
                        var a0 = Vec(), a1 = Vec(), a2 = Vec(), a3 = Vec()
                        for i in bounds {
                            let (j, k) = entries.entry(i)
                            let v = Vec(repeating: weights.value(j, r, k)), p = xt + (k &* ld &+ b)
                            a0.addProduct(load(p), v); a1.addProduct(load(p + 16), v)
                            a2.addProduct(load(p + 32), v); a3.addProduct(load(p + 48), v)
                        }
                        store(a0, out + b); store(a1, out + b + 16); store(a2, out + b + 32); store(a3, out + b + 48)
                        b += 64
                    }
                    while b < columns {
                        var a0 = Vec()
                        for i in bounds {
                            let (j, k) = entries.entry(i)
                            a0.addProduct(load(xt + (k &* ld &+ b)), Vec(repeating: weights.value(j, r, k)))
                        }
                        store(a0, out + b)
                        b += 16
                    }
                }
            }
        }
        yt.copy(to: problem.y, rows: op.rows, batch: problem.batch)
    }
}

/// The value of entry `j` at view element (r, k).
private protocol EntryValues {
    func value(_ j: Int, _ r: Int, _ k: Int) -> Float
}

/// Regrouped entries' values, decoded in their order.
extension Float32Reader: EntryValues {
    @inline(__always) func value(_ j: Int, _ r: Int, _ k: Int) -> Float { values[j] }
}

/// Stored value `j` at view element (r, k), dequantized with its scale.
private struct Weights<R: WeightReader>: EntryValues {
    let reader: R
    let map: ScaleMap
    let rowBase: UnsafePointer<Int>?   // nil when unquantized

    @inline(__always) func value(_ j: Int, _ r: Int, _ k: Int) -> Float {
        guard let rowBase else { return reader.weight(j, 0) }
        return reader.weight(j, map.kStride == 0 ? rowBase[r] : rowBase[r] &+ (k / map.kBlock) &* map.kStride)
    }
}

/// Where output row `r`'s entries are, and each one's stored index `j` and depth `k`.
private protocol OutputRowEntries {
    func bounds(_ r: Int) -> Range<Int>
    func entry(_ i: Int) -> (j: Int, k: Int)
}

/// Stored rows that are the outputs: entry `i` is stored entry `i`, its column the depth.
private struct StoredRows<C: FixedWidthInteger & UnsignedInteger>: OutputRowEntries {
    let rowPointers: UnsafePointer<Int>
    let columnIndices: UnsafePointer<C>
    @inline(__always) func bounds(_ r: Int) -> Range<Int> { rowPointers[r] ..< rowPointers[r &+ 1] }
    @inline(__always) func entry(_ i: Int) -> (j: Int, k: Int) { (i, Int(columnIndices[i])) }
}

/// Entries regrouped by output (`CSROutputRows`): entry `i` is the `i`-th decoded value.
private struct Regrouped: OutputRowEntries {
    let rowStart: UnsafePointer<Int>
    let depth: UnsafePointer<UInt32>
    @inline(__always) func bounds(_ r: Int) -> Range<Int> { rowStart[r] ..< rowStart[r &+ 1] }
    @inline(__always) func entry(_ i: Int) -> (j: Int, k: Int) { (i, Int(depth[i])) }
}

/// A CSR weight's entries regrouped by output row, for weights whose stored rows are not the
/// outputs (a MatMul B stored `[K, N]` has depth rows): the batched kernel then accumulates each
/// output in registers instead of scattering into memory. Built once per operator from the
/// stored entries: each entry's depth and its decoded value, 8 bytes per stored entry.
struct CSROutputRows: Sendable {
    /// Output row `r`'s entries are `rowStart[r] ..< rowStart[r+1]`.
    let rowStart: [Int]
    let depth: [UInt32]
    let values: [Float]

    /// Nil when the stored rows already are the outputs.
    init?(_ op: LinearOperator) throws {
        let t = op.tensor
        guard case .csr = t.storage, !(t.shape.count == 2 && t.reductionAxis == 1) else { return nil }
        guard op.depth <= Int(UInt32.max) else {
            throw RuntimeError(.unsupportedType, "has depth \(op.depth); the CSR kernels index depths up to \(UInt32.max)", tensor: t.name)
        }
        self = op.withReader(Regroup(op: op))
    }

    private init(rowStart: [Int], depth: [UInt32], values: [Float]) {
        self.rowStart = rowStart
        self.depth = depth
        self.values = values
    }

    private struct Regroup: WeightKernel {
        let op: LinearOperator
        func run<R: WeightReader>(_ reader: R) -> CSROutputRows {
            op.scaleMap.rowBase.withUnsafeBufferPointer { rowBase in
                op.visitCSR(Visit(op: op, weights: Weights(reader: reader, map: op.scaleMap, rowBase: rowBase.baseAddress)))
            }
        }
    }

    private struct Visit<R: WeightReader>: CSRVisitor {
        let op: LinearOperator
        let weights: Weights<R>
        func visit<C: FixedWidthInteger & UnsignedInteger>(_ csr: Entries<C>) -> CSROutputRows {
            // Count each output's entries, then place them in stored order.
            var rowStart = [Int](repeating: 0, count: op.rows + 1)
            csr.forEach(storedRows: 0 ..< csr.storedRows) { _, r, _ in rowStart[r + 1] += 1 }
            for r in 0 ..< op.rows { rowStart[r + 1] += rowStart[r] }
            var depth = [UInt32](repeating: 0, count: rowStart[op.rows])
            var values = [Float](repeating: 0, count: rowStart[op.rows])
            var next = rowStart
            csr.forEach(storedRows: 0 ..< csr.storedRows) { j, r, k in
                depth[next[r]] = UInt32(k)
                values[next[r]] = weights.value(j, r, k)
                next[r] += 1
            }
            return CSROutputRows(rowStart: rowStart, depth: depth, values: values)
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
        let rowPointers = rowPointerBytes.withUnsafeBytes { raw in
            (0 ... geometry.csrRows).map { Int(rowPointerType.load(raw, $0)) }
        }
        return columnBytes.withUnsafeBytes { raw in
            let base = raw.baseAddress ?? UnsafeRawPointer(bitPattern: 64)!
            func visit<C: FixedWidthInteger & UnsignedInteger>(_ type: C.Type) -> V.Result {
                visitor.visit(Entries(rowPointers: rowPointers, columnIndices: base.assumingMemoryBound(to: C.self), columns: geometry.csrColumns, view: view))
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

/// Walks stored CSR entries as view coordinates.
struct Entries<C: FixedWidthInteger & UnsignedInteger> {
    let rowPointers: [Int]
    let columnIndices: UnsafePointer<C>
    let columns: Int
    let view: Sparse24Geometry

    var storedRows: Int { rowPointers.count - 1 }

    /// `body(j, r, k)` for every stored entry `j` of stored rows `rows`.
    @inline(__always)
    func forEach(storedRows rows: Range<Int>, _ body: (Int, Int, Int) -> Void) {
        if view.outer == 1 {
            // Reduced along axis 0: the stored row is the depth index, the column the output.
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
