import CTesseraKernels

/// 2:4 weights: every group of four along the reduction axis stores two values and a nibble
/// with their positions (`i0 | i1 << 2`, spec §7.3). Both kernels do only the stored half of
/// the multiplications, reading values and metadata as stored.
struct Sparse24Kernel: WeightKernel {
    let problem: Problem
    /// Groups per panel (256 depth): a decoded panel holds `sparsePanelStride` = 2 · 64 kept
    /// values per row.
    static let groupBlock = 64

    func run<R: WeightReader>(_ reader: R) {
        if problem.batch == 1 { gemv(reader) } else { gemm(reader) }
    }

    // MARK: Batched

    private func gemm<R: WeightReader>(_ w: R) {
        let op = problem.op, rows = op.rows, groups = op.depth / 4
        problem.op.withSparse24Metadata { metadata in
            problem.withTransposedOperands(accumulating: true) { t in
                let ld = t.ld
                Threads.split((rows + 7) / 8, threads: problem.threads) { panels in
                    assert(sparsePanelStride == 2 * Self.groupBlock)
                    let capacity = 8 * sparsePanelStride
                    let values = UnsafeMutablePointer<Float>.allocate(capacity: capacity)
                    let offsets = UnsafeMutablePointer<Int32>.allocate(capacity: capacity)
                    defer { values.deallocate(); offsets.deallocate() }
                    for g0 in stride(from: 0, to: groups, by: Self.groupBlock) {
                        let gn = min(Self.groupBlock, groups - g0)
                        let xBlock = t.xt + 4 * g0 * ld
                        for p in panels {
                            let r0 = p * 8
                            decodePanel(w, metadata, firstRow: r0, g0: g0, count: gn, ld: ld, values: values, offsets: offsets)
                            let out = t.yt + r0 * ld
                            var b = 0
                            while b + 32 <= t.columns {
                                sparseTile8x32(values, offsets, 2 * gn, xBlock + b, out + b, ld)
                                b += 32
                            }
                            if b < t.columns { sparseTile8x16(values, offsets, 2 * gn, xBlock + b, out + b, ld) }
                        }
                    }
                }
            }
        }
    }

    /// Groups `g0 ..< g0+count` of rows `r0 ..< r0+8` as a panel: row i's kept value j at
    /// `values[i·sparsePanelStride + j]`, and at the same place in `offsets` the offset, in the
    /// activation block, of the activations it multiplies. Rows past the end are zero.
    private func decodePanel<R: WeightReader>(_ w: R, _ metadata: UnsafePointer<UInt8>, firstRow r0: Int, g0: Int, count gn: Int,
                                              ld: Int, values: UnsafeMutablePointer<Float>, offsets: UnsafeMutablePointer<Int32>) {
        let op = problem.op, map = op.scaleMap, groupsPerRow = op.depth / 4
        let int8 = map.isPerRow ? w as? DequantizingReader<Int8Codes> : nil
        let rowStride = SIMD16<UInt32>(repeating: UInt32(ld))
        for i in 0 ..< 8 {
            let r = r0 + i, v = values + i * sparsePanelStride, o = offsets + i * sparsePanelStride
            guard r < op.rows else {
                v.initialize(repeating: 0, count: 2 * gn)
                o.initialize(repeating: 0, count: 2 * gn)
                continue
            }
            let firstNibble = r &* groupsPerRow &+ g0, firstValue = 2 &* firstNibble
            // Offsets: eight groups at a time from their metadata word.
            var g = 0
            while g &+ 8 <= gn {
                let depths = keptDepths(metadataWord(metadata, nibble: firstNibble &+ g)) &+ UInt32(4 &* g)
                UnsafeMutableRawPointer(o + 2 &* g).storeBytes(of: depths &* rowStride, as: SIMD16<UInt32>.self)
                g &+= 8
            }
            while g < gn {
                let (i0, i1) = keptPositions(metadata, firstNibble &+ g)
                o[2 &* g] = Int32((4 &* g &+ i0) &* ld)
                o[2 &* g &+ 1] = Int32((4 &* g &+ i1) &* ld)
                g &+= 1
            }
            // Values: float32 as stored; int8 with one scale per row sixteen at a time.
            if let f = w.float32Values {
                v.update(from: f + firstValue, count: 2 * gn)
            } else if let int8, !map.rowBase.isEmpty {
                let s = map.rowBase[r], scale = int8.scales[s], zeroPoint = int8.zeroPoints[s]
                var j = 0
                while j &+ 16 <= 2 &* gn {
                    store((loadFloats(int8.codes.bytes + firstValue + j) - zeroPoint) * scale, v + j)
                    j &+= 16
                }
                while j < 2 &* gn {
                    v[j] = scale * (Float(int8.codes.code(firstValue &+ j)) - zeroPoint)
                    j &+= 1
                }
            } else {
                for g in 0 ..< gn {
                    let (i0, i1) = keptPositions(metadata, firstNibble &+ g)
                    v[2 &* g] = value(w, map, row: r, group: g0 &+ g, slot: 0, position: i0)
                    v[2 &* g &+ 1] = value(w, map, row: r, group: g0 &+ g, slot: 1, position: i1)
                }
            }
        }
    }

    /// Kept value `slot` of `group` in view row `row`, whose depth index is `4·group + position`.
    @inline(__always)
    private func value<R: WeightReader>(_ w: R, _ map: ScaleMap, row: Int, group: Int, slot: Int, position: Int) -> Float {
        let j = (row &* (problem.op.depth / 4) &+ group) &* 2 &+ slot
        if map.rowBase.isEmpty { return w.weight(j, 0) }
        return w.weight(j, map.index(row: row, k: 4 &* group &+ position))
    }

    // MARK: Single activation row

    private func gemv<R: WeightReader>(_ w: R) {
        let op = problem.op, map = op.scaleMap, groupsPerRow = op.depth / 4, x = problem.x, y = problem.y
        let int8 = w as? DequantizingReader<Int8Codes>
        let vectorised = (w.float32Values != nil || int8 != nil) && map.isPerRow
        // With an even group count every row starts on a metadata byte, so four rows can step
        // through the same groups together.
        let fourRows = vectorised && groupsPerRow % 2 == 0
        problem.op.withSparse24Metadata { metadata in
            Threads.split(op.rows, threads: problem.threads, granularity: 4) { range in
                @inline(__always) func group(_ r: Int, _ g: Int) -> Float {
                    let (i0, i1) = keptPositions(metadata, r &* groupsPerRow &+ g)
                    return value(w, map, row: r, group: g, slot: 0, position: i0) * x[4 &* g &+ i0]
                        + value(w, map, row: r, group: g, slot: 1, position: i1) * x[4 &* g &+ i1]
                }
                /// Groups `g...` of row `r` (and every group of other value types), one at a time.
                @inline(__always) func remaining(_ r: Int, from g: Int) -> Float {
                    var sum: Float = 0
                    for g in g ..< groupsPerRow { sum += group(r, g) }
                    return sum
                }
                var r = range.lowerBound
                if fourRows {
                    while r &+ 4 <= range.upperBound {
                        var g = 0
                        let next = r &+ 8 <= range.upperBound ? r &+ 4 : r
                        let sums = vectorRows(w, int8, metadata, first: r, count: 4, prefetching: next, from: &g)
                        for i in 0 ..< 4 { y[r &+ i] = sums[i] + remaining(r &+ i, from: g) }
                        r &+= 4
                    }
                }
                for r in r ..< range.upperBound {
                    var g = 0
                    var sum: Float = 0
                    if vectorised {
                        // A row starting mid-byte takes its first group alone.
                        if (r &* groupsPerRow) & 1 != 0, groupsPerRow > 0 { sum = group(r, 0); g = 1 }
                        sum += vectorRows(w, int8, metadata, first: r, count: 1, prefetching: r, from: &g)[0]
                    }
                    y[r] = sum + remaining(r, from: g)
                }
            }
        }
    }

    /// Eight groups per step for float32 values and int8 codes with one scale per row, for rows
    /// `r ..< r+count` (`count` is 1 or 4) whose group `g` starts a metadata byte: per row, 16
    /// kept values against the 16 activations their metadata picks. The rows share each step's
    /// activations (with four rows the loop is a quarter faster: loading them, not the arithmetic,
    /// bounds a single row). Four rows also prefetch rows `next ..< next+4`. Returns the rows'
    /// sums, scales applied, and advances `g`.
    @inline(__always)
    private func vectorRows<R: WeightReader>(_ w: R, _ int8: DequantizingReader<Int8Codes>?, _ metadata: UnsafePointer<UInt8>,
                                             first r: Int, count: Int, prefetching next: Int, from g: inout Int) -> SIMD4<Float> {
        let groupsPerRow = problem.op.depth / 4, x = problem.x, map = problem.op.scaleMap
        let words = UnsafeRawPointer(metadata)
        let values = w.float32Values.map(UnsafeRawPointer.init) ?? UnsafeRawPointer(int8!.codes.bytes)
        let valueBytes = w.float32Values == nil ? 1 : 4
        /// The cache lines (64 bytes) of the next rows' values and metadata that group `g` starts.
        /// Without this the hardware prefetchers fall behind the four rows' eight streams, and a
        /// weight read from memory rather than L3 took 1.7x as long.
        @inline(__always) func prefetchNextRows(_ g: Int) {
            if (2 &* valueBytes &* g) & 63 == 0 {
                for i in 0 ..< 4 { tessera_prefetch(values + ((next &+ i) &* groupsPerRow &+ g) &* 2 &* valueBytes) }
            }
            if g & 127 == 0 {
                for i in 0 ..< 4 { tessera_prefetch(words + ((next &+ i) &* groupsPerRow &+ g) >> 1) }
            }
        }
        var scale = SIMD4<Float>(repeating: 1), zeroPoint = SIMD4<Float>()
        if let int8, !map.rowBase.isEmpty {
            for i in 0 ..< count {
                let s = map.rowBase[r &+ i]
                (scale[i], zeroPoint[i]) = (int8.scales[s], int8.zeroPoints[s])
            }
        }
        // Σ (c − z)·x = Σ c·x − z·Σ x: the zero point costs one extra sum, and nothing when 0
        // (each case gets its own loop).
        @inline(__always) func sums(sumPicked: Bool) -> SIMD4<Float> {
            var acc0 = Vec(), acc1 = Vec(), acc2 = Vec(), acc3 = Vec()
            var picked0 = Vec(), picked1 = Vec(), picked2 = Vec(), picked3 = Vec()
            @inline(__always) func step(_ acc: inout Vec, _ pickedSum: inout Vec, row i: Int, _ g: Int) {
                let nibble = (r &+ i) &* groupsPerRow &+ g
                let picked = pickActivations(x + 4 &* g, words.loadUnaligned(fromByteOffset: nibble >> 1, as: UInt32.self))
                let v = values + 2 &* nibble &* valueBytes
                if valueBytes == 4 {
                    acc.addProduct(load(v.assumingMemoryBound(to: Float.self)), picked)
                } else {
                    acc.addProduct(loadFloats(v.assumingMemoryBound(to: Int8.self)), picked)
                    if sumPicked { pickedSum += picked }
                }
            }
            if count == 1 {
                // Two sums, so that consecutive steps do not wait on each other.
                while g &+ 16 <= groupsPerRow {
                    step(&acc0, &picked0, row: 0, g)
                    step(&acc1, &picked1, row: 0, g &+ 8)
                    g &+= 16
                }
                if g &+ 8 <= groupsPerRow {
                    step(&acc0, &picked0, row: 0, g)
                    g &+= 8
                }
                return SIMD4((acc0 + acc1).sum() - zeroPoint[0] * (picked0 + picked1).sum(), 0, 0, 0)
            }
            while g &+ 8 <= groupsPerRow {
                prefetchNextRows(g)
                step(&acc0, &picked0, row: 0, g)
                step(&acc1, &picked1, row: 1, g)
                step(&acc2, &picked2, row: 2, g)
                step(&acc3, &picked3, row: 3, g)
                g &+= 8
            }
            return SIMD4(acc0.sum(), acc1.sum(), acc2.sum(), acc3.sum())
                - zeroPoint * SIMD4(picked0.sum(), picked1.sum(), picked2.sum(), picked3.sum())
        }
        return (zeroPoint == SIMD4() ? sums(sumPicked: false) : sums(sumPicked: true)) * scale
    }
}

/// Row stride of a decoded 2:4 panel: two kept values for each of `groupBlock` groups. A
/// constant (shared with the C kernels), so the tiles address each row's entries with a fixed
/// displacement.
let sparsePanelStride = Int(TESSERA_SPARSE_PANEL_STRIDE)

/// 8 rows x 32 batch columns of `yᵀ` from a decoded 2:4 panel: each kept value multiplies the
/// activation vectors at its offset (only stored values are multiplied).
@inline(__always)
func sparseTile8x32(_ v: UnsafePointer<Float>, _ off: UnsafePointer<Int32>, _ count: Int,
                    _ xt: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ ldo: Int) {
    if let k = KernelDispatch.kernels { k.sparse_tile8x32(v, off, count, xt, out, ldo) } else { PortableKernels.sparseTile8x32(v, off, count, xt, out, ldo) }
}

@inline(__always)
func sparseTile8x16(_ v: UnsafePointer<Float>, _ off: UnsafePointer<Int32>, _ count: Int,
                    _ xt: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ ldo: Int) {
    if let k = KernelDispatch.kernels { k.sparse_tile8x16(v, off, count, xt, out, ldo) } else { PortableKernels.sparseTile8x16(v, off, count, xt, out, ldo) }
}

extension PortableKernels {
    @inline(never)
    static func sparseTile8x32(_ v: UnsafePointer<Float>, _ off: UnsafePointer<Int32>, _ count: Int,
                        _ xt: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ ldo: Int) {
        let o0 = out, o1 = out + ldo, o2 = o1 + ldo, o3 = o2 + ldo, o4 = o3 + ldo, o5 = o4 + ldo, o6 = o5 + ldo, o7 = o6 + ldo
        var c00 = load(o0), c01 = load(o0 + 16), c10 = load(o1), c11 = load(o1 + 16)
        var c20 = load(o2), c21 = load(o2 + 16), c30 = load(o3), c31 = load(o3 + 16)
        var c40 = load(o4), c41 = load(o4 + 16), c50 = load(o5), c51 = load(o5 + 16)
        var c60 = load(o6), c61 = load(o6 + 16), c70 = load(o7), c71 = load(o7 + 16)
        let s = sparsePanelStride
        for j in 0 ..< count {
            var p = xt + Int(off[j]), b = Vec(repeating: v[j]); c00.addProduct(load(p), b); c01.addProduct(load(p + 16), b)
            p = xt + Int(off[j &+ s]); b = Vec(repeating: v[j &+ s]); c10.addProduct(load(p), b); c11.addProduct(load(p + 16), b)
            p = xt + Int(off[j &+ 2 &* s]); b = Vec(repeating: v[j &+ 2 &* s]); c20.addProduct(load(p), b); c21.addProduct(load(p + 16), b)
            p = xt + Int(off[j &+ 3 &* s]); b = Vec(repeating: v[j &+ 3 &* s]); c30.addProduct(load(p), b); c31.addProduct(load(p + 16), b)
            p = xt + Int(off[j &+ 4 &* s]); b = Vec(repeating: v[j &+ 4 &* s]); c40.addProduct(load(p), b); c41.addProduct(load(p + 16), b)
            p = xt + Int(off[j &+ 5 &* s]); b = Vec(repeating: v[j &+ 5 &* s]); c50.addProduct(load(p), b); c51.addProduct(load(p + 16), b)
            p = xt + Int(off[j &+ 6 &* s]); b = Vec(repeating: v[j &+ 6 &* s]); c60.addProduct(load(p), b); c61.addProduct(load(p + 16), b)
            p = xt + Int(off[j &+ 7 &* s]); b = Vec(repeating: v[j &+ 7 &* s]); c70.addProduct(load(p), b); c71.addProduct(load(p + 16), b)
        }
        store(c00, o0); store(c01, o0 + 16); store(c10, o1); store(c11, o1 + 16)
        store(c20, o2); store(c21, o2 + 16); store(c30, o3); store(c31, o3 + 16)
        store(c40, o4); store(c41, o4 + 16); store(c50, o5); store(c51, o5 + 16)
        store(c60, o6); store(c61, o6 + 16); store(c70, o7); store(c71, o7 + 16)
    }

    @inline(never)
    static func sparseTile8x16(_ v: UnsafePointer<Float>, _ off: UnsafePointer<Int32>, _ count: Int,
                        _ xt: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ ldo: Int) {
        let o0 = out, o1 = out + ldo, o2 = o1 + ldo, o3 = o2 + ldo, o4 = o3 + ldo, o5 = o4 + ldo, o6 = o5 + ldo, o7 = o6 + ldo
        var c0 = load(o0), c1 = load(o1), c2 = load(o2), c3 = load(o3)
        var c4 = load(o4), c5 = load(o5), c6 = load(o6), c7 = load(o7)
        let s = sparsePanelStride
        for j in 0 ..< count {
            c0.addProduct(load(xt + Int(off[j])), Vec(repeating: v[j]))
            c1.addProduct(load(xt + Int(off[j &+ s])), Vec(repeating: v[j &+ s]))
            c2.addProduct(load(xt + Int(off[j &+ 2 &* s])), Vec(repeating: v[j &+ 2 &* s]))
            c3.addProduct(load(xt + Int(off[j &+ 3 &* s])), Vec(repeating: v[j &+ 3 &* s]))
            c4.addProduct(load(xt + Int(off[j &+ 4 &* s])), Vec(repeating: v[j &+ 4 &* s]))
            c5.addProduct(load(xt + Int(off[j &+ 5 &* s])), Vec(repeating: v[j &+ 5 &* s]))
            c6.addProduct(load(xt + Int(off[j &+ 6 &* s])), Vec(repeating: v[j &+ 6 &* s]))
            c7.addProduct(load(xt + Int(off[j &+ 7 &* s])), Vec(repeating: v[j &+ 7 &* s]))
        }
        store(c0, o0); store(c1, o1); store(c2, o2); store(c3, o3)
        store(c4, o4); store(c5, o5); store(c6, o6); store(c7, o7)
    }
}
