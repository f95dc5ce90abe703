import CTesseraKernels
#if TESSERA_AVX512_VNNI
import _Builtin_intrinsics.intel
#endif

/// Integer execution ("W8A8") of dense and 2:4 weights with int8 codes: each activation row is quantized
/// to uint8 as ONNX's DynamicQuantizeLinear does, every kept weight code multiplies the code of
/// the activation its metadata picks, in int32, and each output is scaled back once. This is the
/// arithmetic of onnxruntime's DynamicQuantizeLinear + MatMulInteger, not the reference one:
/// outputs differ from `apply` by the activations' rounding, at most `scale_x · Σ_k |W[r, k]|`.
extension LinearOperator {
    /// Whether `applyQuantizingActivations` runs this weight: 2:4 with int8 codes, no zero points,
    /// one scale per output row, and a depth whose int32 sums cannot overflow.
    public var runsQuantizedActivations: Bool {
        guard let q = tensor.quantization, q.codeType == .int8, scaleMap.isPerRow, !scaleMap.rowBase.isEmpty,
              scaleMap.zeroPoints.allSatisfy({ $0 == 0 }) else { return false }
        switch tensor.storage {
        case .sparse24: return depth <= Self.maximumQuantizedDepth
        case .dense: return depth <= Self.maximumDenseQuantizedDepth
        default: return false
        }
    }

    /// Each int32 lane sums `depth / 32` terms code_w · (code_x − z) of at most 128 · 255 in
    /// magnitude: 1020 · depth, under 2³¹ up to this depth.
    static let maximumQuantizedDepth = 1 << 20
    /// The dense GEMM core sums a whole row, code_w · code_x of at most 128 · 255 per depth,
    /// in one int32: under 2³¹ up to this depth.
    static let maximumDenseQuantizedDepth = 1 << 16

    /// `apply` with integer arithmetic (see above); one activation row at a time, the threads
    /// sharing a single row's outputs or, batched, taking whole rows each.
    public func applyQuantizingActivations(_ x: [Float], batch: Int, threads: Int = 1, bias: [Float]? = nil) throws -> [Float] {
        guard runsQuantizedActivations else {
            throw RuntimeError(.unsupportedType, "cannot run with quantized activations: that needs a dense or 2:4 weight with symmetric int8 codes, one scale per output and depth at most \(Self.maximumDenseQuantizedDepth) (dense) or \(Self.maximumQuantizedDepth) (2:4)", tensor: name)
        }
        let nonfinite = x.withUnsafeBufferPointer { KernelDispatch.int8Kernels.first_nonfinite($0.baseAddress, $0.count) }
        if nonfinite < x.count {
            throw RuntimeError(.badActivations, "activation \(nonfinite) is \(x[nonfinite]); quantized activations must be finite", tensor: name)
        }
        if let bias, bias.count != rows {
            throw RuntimeError(.badShape, "a bias of \(bias.count) values for \(rows) outputs", tensor: name)
        }
        // Every output is stored (the GEMM's last step, or the GEMV row by row).
        return try checked(x, batch: batch, zeroed: depth == 0) { x, y in
            (bias ?? []).withUnsafeBufferPointer { b in
                applyQuantizingActivations(x, batch: batch, into: y, threads: max(1, threads), bias: bias == nil ? nil : b.baseAddress)
            }
        }
    }

    /// The unchecked form: `runsQuantizedActivations`, finite `x` of `batch * depth` floats, and
    /// room for `batch * rows` in `y`. A `bias` of `rows` values is added to each output row
    /// (`y + bias`, as an Add node after the product computes it) while the row is in cache.
    public func applyQuantizingActivations(_ x: UnsafePointer<Float>, batch: Int, into y: UnsafeMutablePointer<Float>, threads: Int,
                                           bias: UnsafePointer<Float>? = nil) {
        applyQuantizingActivations(x, batch: batch, into: y, threads: threads, bias: bias, sparse24: KernelDispatch.int8Sparse24GEMM)
    }

    /// With the 2:4 GEMM on kept codes (`sparse24`, AVX-512 VBMI), 2:4 weights run it for every
    /// batch. Without it a single activation row runs the 2:4 GEMV, which reads only kept codes,
    /// and batches the GEMM on packed codes with the pruned codes as zeros. Dense weights always
    /// run the GEMM. The same integer sums, so the same outputs every way (tested).
    func applyQuantizingActivations(_ x: UnsafePointer<Float>, batch: Int, into y: UnsafeMutablePointer<Float>, threads: Int,
                                    bias: UnsafePointer<Float>?, sparse24: tessera_int8_sparse24_gemm_fn?) {
        guard batch > 0 else { return }
        guard batch == 1, sparse24 == nil, case .sparse24(let values, _) = tensor.storage else {
            return applyPackedInt8(x, batch: batch, into: y, threads: threads, sparse24: sparse24, bias: bias)
        }
        let (rows, depth) = (rows, depth)
        values.withBaseAddress { v in withSparse24Metadata { metadata in
            scaleMap.scales.withUnsafeBufferPointer { scales in scaleMap.rowBase.withUnsafeBufferPointer { rowBase in
                let kernel = Sparse24Int8GEMV(codes: v.assumingMemoryBound(to: Int8.self), metadata: metadata,
                                              scales: scales.baseAddress!, rowBase: rowBase.baseAddress!, groupsPerRow: depth / 4)
                let codes = UInt8Activations(count: depth)
                defer { codes.deallocate() }
                codes.quantize(x)
                Threads.split(rows, threads: threads, granularity: 4) { range in
                    for r in range { y[r] = bias.map { kernel.row(r, codes) + $0[r] } ?? kernel.row(r, codes) }
                }
            } }
        } }
    }
}

/// One activation row as uint8 codes, `x ≈ scale · (code − zeroPoint)`, by ONNX
/// DynamicQuantizeLinear: the range is [min(0, min x), max(0, max x)] over 255 steps, rounding
/// half to even.
final class UInt8Activations: @unchecked Sendable {
    let count: Int
    let codes: UnsafeMutablePointer<UInt8>
    private(set) var scale: Float = 0
    private(set) var zeroPoint: Int32 = 0

    init(count: Int) {
        self.count = count
        codes = .allocate(capacity: max(1, count))
    }

    func deallocate() { codes.deallocate() }

    /// Quantizes `x[0 ..< count]` (finite).
    func quantize(_ x: UnsafePointer<Float>) {
        var lo = Vec(), hi = Vec(), i = 0
        while i &+ 16 <= count {
            let v = load(x + i)
            lo = pointwiseMin(lo, v)
            hi = pointwiseMax(hi, v)
            i &+= 16
        }
        var low = lo.min(), high = hi.max()
        for j in i ..< count { low = min(low, x[j]); high = max(high, x[j]) }
        scale = (high - low) / 255
        guard scale > 0 else {
            zeroPoint = 0
            codes.initialize(repeating: 0, count: count)
            return
        }
        zeroPoint = Int32(min(max((-low / scale).rounded(.toNearestOrEven), 0), 255))
        let s = Vec(repeating: scale), z = Vec(repeating: Float(zeroPoint))
        i = 0
        while i &+ 16 <= count {
            let q = pointwiseMin(pointwiseMax((load(x + i) / s).rounded(.toNearestOrEven) + z, Vec()), Vec(repeating: 255))
            for l in 0 ..< 16 { codes[i &+ l] = UInt8(q[l]) }
            i &+= 16
        }
        for j in i ..< count {
            codes[j] = UInt8(min(max((x[j] / scale).rounded(.toNearestOrEven) + Float(zeroPoint), 0), 255))
        }
    }
}

/// One output of a 2:4 int8 weight against uint8 activation codes: Σ code_w · (code_x − z_x) in
/// int32, times the two scales.
struct Sparse24Int8GEMV: @unchecked Sendable {
    let codes: UnsafePointer<Int8>
    let metadata: UnsafePointer<UInt8>
    let scales: UnsafePointer<Float>
    let rowBase: UnsafePointer<Int>
    let groupsPerRow: Int
    /// The vector steps' byte constants (see `chunks`).
    private var spreadIndex = SIMD64<UInt8>(), shifts = SIMD64<UInt8>(), groupBase = SIMD64<UInt8>()

    init(codes: UnsafePointer<Int8>, metadata: UnsafePointer<UInt8>, scales: UnsafePointer<Float>, rowBase: UnsafePointer<Int>, groupsPerRow: Int) {
        (self.codes, self.metadata, self.scales, self.rowBase, self.groupsPerRow) = (codes, metadata, scales, rowBase, groupsPerRow)
        for p in 0 ..< 64 {
            spreadIndex[p] = UInt8(2 * (p / 8) + p % 8)        // 64-bit lane q takes bytes 2q ...
            shifts[p] = UInt8(2 * (p % 8))                     // ... kept code p % 8 of them at bit 2·(p % 8)
            groupBase[p] = UInt8(4 * (p / 2))                  // kept code p is in group p / 2
        }
    }

    @inline(__always) func row(_ r: Int, _ x: UInt8Activations) -> Float {
        let firstNibble = r &* groupsPerRow, w = codes + 2 &* firstNibble, qx = x.codes
        var g = 0, sum = 0
#if TESSERA_AVX512_VNNI
        sum = chunks(firstNibble, w, qx, x.zeroPoint, &g)
#endif
        let zeroPoint = Int(x.zeroPoint)
        while g < groupsPerRow {
            let (i0, i1) = keptPositions(metadata, firstNibble &+ g)
            sum &+= Int(w[2 &* g]) &* (Int(qx[4 &* g &+ i0]) &- zeroPoint) &+ Int(w[2 &* g &+ 1]) &* (Int(qx[4 &* g &+ i1]) &- zeroPoint)
            g &+= 1
        }
        return scales[rowBase[r]] * x.scale * Float(sum)
    }

#if TESSERA_AVX512_VNNI
    /// 32 groups (64 kept codes, 16 metadata bytes) per step, from `g` on:
    /// - the metadata bytes are spread two per 64-bit lane (vpermb), and each kept code's 2-bit
    ///   position is cut out of them by a per-byte bit offset (vpmultishiftqb);
    /// - position plus its group's base indexes the step's 128 activation codes (vpermt2b);
    /// - vpdpbusd multiplies the 64 picked codes by the 64 weight codes, four products per int32
    ///   lane, and a second one sums the weight codes (for the zero point).
    /// Returns Σ code_w · (code_x − zeroPoint) over them, having advanced `g` past the whole steps.
    @inline(__always)
    private func chunks(_ firstNibble: Int, _ w: UnsafePointer<Int8>, _ qx: UnsafePointer<UInt8>, _ zeroPoint: Int32, _ g: inout Int) -> Int {
        // A row starting mid-byte reads one more byte and cuts four bits further on.
        let odd = firstNibble & 1 != 0
        let shifts = odd ? self.shifts &+ 4 : self.shifts
        let spread = unsafeBitCast(spreadIndex, to: __m512i.self), control = unsafeBitCast(shifts, to: __m512i.self)
        let bases = unsafeBitCast(groupBase, to: __m512i.self), three = _mm512_set1_epi8(3), ones = _mm512_set1_epi8(1)
        let mask: __mmask32 = odd ? 0x1FFFF : 0xFFFF
        @inline(__always) func step(_ dot: inout __m512i, _ sum: inout __m512i, _ g: Int) {
            let bytes = _mm512_castsi256_si512(_mm256_maskz_loadu_epi8(mask, metadata + (firstNibble &+ g) >> 1))
            let positions = _mm512_and_si512(_mm512_multishift_epi64_epi8(control, _mm512_permutexvar_epi8(spread, bytes)), three)
            let x = UnsafeRawPointer(qx + 4 &* g)
            let picked = _mm512_permutex2var_epi8(x.loadUnaligned(as: __m512i.self), _mm512_or_si512(positions, bases),
                                                  x.loadUnaligned(fromByteOffset: 64, as: __m512i.self))
            let weights = UnsafeRawPointer(w + 2 &* g).loadUnaligned(as: __m512i.self)
            dot = _mm512_dpbusd_epi32(dot, picked, weights)
            sum = _mm512_dpbusd_epi32(sum, ones, weights)
        }
        // Two sets of sums: consecutive steps do not wait on each other.
        var d0 = _mm512_setzero_si512(), d1 = d0, s0 = d0, s1 = d0
        while g &+ 64 <= groupsPerRow {
            step(&d0, &s0, g)
            step(&d1, &s1, g &+ 32)
            g &+= 64
        }
        if g &+ 32 <= groupsPerRow {
            step(&d0, &s0, g)
            g &+= 32
        }
        // One horizontal sum: the zero point's term is subtracted lane by lane first.
        let weightSums = _mm512_add_epi32(s0, s1)
        return Int(_mm512_reduce_add_epi32(_mm512_sub_epi32(_mm512_add_epi32(d0, d1), _mm512_mullo_epi32(weightSums, _mm512_set1_epi32(zeroPoint)))))
    }
#endif
}
