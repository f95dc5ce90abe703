import Tessera

/// CSR weights. The CSR view is `dims[0] x rest` (spec §7.2), so a stored entry (row, column)
/// is view element (r, k) in one of three ways: for a 2-D weight reduced along axis 1 the
/// stored rows are the outputs (each output gathers its activations); reduced along axis 0
/// they are depth indices (each entry scatters into an output); anything else goes through
/// the logical index.
struct CSRKernel: WeightKernel {
    let problem: Problem

    func run<R: WeightReader>(_ reader: R) {
        guard case .csr(let rowPointerType, let rowPointerBytes, let columnType, let columnBytes, _, _) = problem.op.tensor.storage else {
            preconditionFailure("not a CSR tensor")
        }
        let geometry = try! TensorGeometry(shape: problem.op.tensor.shape)   // validated by LinearOperator
        let rowPointers = rowPointerBytes.withUnsafeBytes { raw in
            (0 ... geometry.csrRows).map { Int(rowPointerType.load(raw, $0)) }
        }
        columnBytes.withUnsafeBytes { raw in
            let base = raw.baseAddress ?? UnsafeRawPointer(bitPattern: 64)!
            switch columnType {
            case .uint8: run(reader, rowPointers, base.assumingMemoryBound(to: UInt8.self), columns: geometry.csrColumns)
            case .uint16: run(reader, rowPointers, base.assumingMemoryBound(to: UInt16.self), columns: geometry.csrColumns)
            case .uint32: run(reader, rowPointers, base.assumingMemoryBound(to: UInt32.self), columns: geometry.csrColumns)
            case .uint64: run(reader, rowPointers, base.assumingMemoryBound(to: UInt64.self), columns: geometry.csrColumns)
            }
        }
    }

    private enum Orientation { case outputRows, depthRows, general }

    private var orientation: Orientation {
        let t = problem.op.tensor
        if t.shape.count == 2 && t.reductionAxis == 1 { return .outputRows }
        if t.reductionAxis == 0 { return .depthRows }
        return .general
    }

    private func run<R: WeightReader, C: FixedWidthInteger & UnsignedInteger>(
        _ w: R, _ rowPointers: [Int], _ columnIndices: UnsafePointer<C>, columns: Int
    ) {
        let csr = Entries(rowPointers: rowPointers, columnIndices: columnIndices, columns: columns, view: problem.op.view)
        let op = problem.op, map = op.scaleMap
        @inline(__always) func weight(_ j: Int, _ r: Int, _ k: Int) -> Float {
            map.rowBase.isEmpty ? w.weight(j, 0) : w.weight(j, map.kStride == 0 ? map.rowBase[r] : map.index(row: r, k: k))
        }
        if problem.batch == 1 {
            let x = problem.x, y = problem.y
            if orientation == .outputRows {
                Threads.split(op.rows, threads: problem.threads, granularity: 16) { range in
                    for r in range {
                        var sum: Float = 0
                        for j in rowPointers[r] ..< rowPointers[r + 1] {
                            let k = Int(columnIndices[j])
                            sum += weight(j, r, k) * x[k]
                        }
                        y[r] = sum
                    }
                }
            } else {
                // Each thread scatters a share of the stored rows into its own sums.
                let parts = max(1, min(problem.threads, rowPointers.count - 1))
                var partial = [Float](repeating: 0, count: parts * op.rows)
                partial.withUnsafeMutableBufferPointer { sums in
                    let sums = sums.baseAddress!
                    Threads.split(parts, threads: parts) { range in
                        for part in range {
                            let out = sums + part * op.rows
                            let rows = csr.storedRows, lo = rows * part / parts, hi = rows * (part + 1) / parts
                            csr.forEach(storedRows: lo ..< hi) { j, r, k in out[r] += weight(j, r, k) * x[k] }
                        }
                    }
                    for r in 0 ..< op.rows {
                        var s: Float = 0
                        for part in 0 ..< parts { s += sums[part * op.rows + r] }
                        y[r] = s
                    }
                }
            }
            return
        }

        let xt = TransposedActivations(problem.x, batch: problem.batch, depth: op.depth)
        let yt = TransposedOutputs(rows: op.rows, batch: problem.batch)
        defer { yt.deallocate() }
        let ld = xt.ld
        xt.storage.withUnsafeBufferPointer { xtBuffer in
            let xt = xtBuffer.baseAddress!, out = yt.pointer
            if orientation == .outputRows {
                // Each output row accumulates 32 batch columns in registers.
                Threads.split(op.rows, threads: problem.threads) { range in
                    for r in range {
                        let lo = rowPointers[r], hi = rowPointers[r + 1]
                        var b = 0
                        while b < ld {
                            let wide = b + 32 <= ld
                            var a0 = Vec(), a1 = Vec()
                            for j in lo ..< hi {
                                let k = Int(columnIndices[j])
                                let v = Vec(repeating: weight(j, r, k)), p = xt + (k &* ld &+ b)
                                a0.addProduct(load(p), v)
                                if wide { a1.addProduct(load(p + 16), v) }
                            }
                            store(a0, out + r * ld + b)
                            if wide { store(a1, out + r * ld + b + 16) }
                            b += wide ? 32 : 16
                        }
                    }
                }
            } else {
                // Each stored entry scatters into its output row; threads own batch columns,
                // and 32 columns at a time keep the touched outputs in cache.
                Threads.split(ld, threads: problem.threads, granularity: vecWidth) { columnsRange in
                    var b = columnsRange.lowerBound
                    while b < columnsRange.upperBound {
                        let wide = b + 32 <= columnsRange.upperBound
                        csr.forEach(storedRows: 0 ..< csr.storedRows) { j, r, k in
                            let v = Vec(repeating: weight(j, r, k))
                            let source = xt + (k &* ld &+ b), target = out + (r &* ld &+ b)
                            store(load(target).addingProduct(load(source), v), target)
                            if wide { store(load(target + 16).addingProduct(load(source + 16), v), target + 16) }
                        }
                        b += wide ? 32 : 16
                    }
                }
            }
        }
        yt.copy(to: problem.y, rows: op.rows, batch: problem.batch)
    }
}

/// Walks stored CSR entries as view coordinates.
private struct Entries<C: FixedWidthInteger & UnsignedInteger> {
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
