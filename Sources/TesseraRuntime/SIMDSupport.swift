import CTesseraKernels
import Dispatch
#if TESSERA_AVX512
import _Builtin_intrinsics.intel
#endif

/// The kernels' vector: 16 floats (one AVX-512 register; two AVX2 or four NEON registers).
typealias Vec = SIMD16<Float>
let vecWidth = 16

@inline(__always) func load(_ p: UnsafePointer<Float>) -> Vec {
    UnsafeRawPointer(p).loadUnaligned(as: Vec.self)
}

@inline(__always) func store(_ v: Vec, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vec.self)
}

@inline(__always) func roundUp(_ n: Int, _ multiple: Int) -> Int { (n + multiple - 1) / multiple * multiple }

/// Copies `count` floats in vectors, then the tail in straight-line steps: for the short runs
/// of a convolution's rows a library call per run cost more than the copy (memmove was 10% of a
/// PP-OCR detector's run, perf). The tail is not a loop, which the compiler would turn back
/// into a library call.
@inline(__always) func copyFloats(_ source: UnsafePointer<Float>, _ target: UnsafeMutablePointer<Float>, count: Int) {
    @inline(__always) func move<V: SIMD>(_: V.Type, _ j: inout Int) where V.Scalar == Float {
        UnsafeMutableRawPointer(target + j).storeBytes(of: UnsafeRawPointer(source + j).loadUnaligned(as: V.self), as: V.self)
        j += V.scalarCount
    }
    var j = 0
    while j + 16 <= count { move(SIMD16<Float>.self, &j) }
    if count - j >= 8 { move(SIMD8<Float>.self, &j) }
    if count - j >= 4 { move(SIMD4<Float>.self, &j) }
    if count - j >= 2 { move(SIMD2<Float>.self, &j) }
    if count - j >= 1 { target[j] = source[j] }
}

/// 16 int8 codes as floats. (The lane loop compiles to one widening load and one conversion;
/// `SIMD16<Int32>(truncatingIfNeeded:)` calls a generic per-lane routine instead.)
@inline(__always) func loadFloats(_ codes: UnsafePointer<Int8>) -> Vec {
    let c = UnsafeRawPointer(codes).loadUnaligned(as: SIMD16<Int8>.self)
    var v = Vec()
    for l in 0 ..< 16 { v[l] = Float(c[l]) }
    return v
}

/// Depth index, within eight groups, of each of their 16 kept values: lane `l` (group `l / 2`)
/// is `4·(l / 2) + position`, the position being bits `2l ..< 2l+2` of `positions` (eight
/// metadata nibbles in stored order, spec §7.3).
@inline(__always) func keptDepths(_ positions: UInt32) -> SIMD16<UInt32> {
    // Local literals become constants; globals would be lazily initialised on every call.
    let shifts = SIMD16<UInt32>(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30)
    let groupBases = SIMD16<UInt32>(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28)
#if TESSERA_AVX512
    // The intrinsic keeps this at broadcast, shift, ternary logic: LLVM splits the generic
    // shift by constant amounts into pieces.
    let shifted = _mm512_srlv_epi32(_mm512_set1_epi32(Int32(bitPattern: positions)), unsafeBitCast(shifts, to: __m512i.self))
    return unsafeBitCast(_mm512_or_epi32(_mm512_and_epi32(shifted, _mm512_set1_epi32(3)), unsafeBitCast(groupBases, to: __m512i.self)),
                         to: SIMD16<UInt32>.self)
#else
    return (SIMD16<UInt32>(repeating: positions) &>> shifts) & 3 | groupBases
#endif
}

/// The activations that 16 kept values of eight groups multiply: `x[keptDepths(positions)]`,
/// `x` pointing at the groups' first depth index (32 floats are read).
@inline(__always) func pickActivations(_ x: UnsafePointer<Float>, _ positions: UInt32) -> Vec {
    let depths = keptDepths(positions)
#if TESSERA_AVX512
    // One two-source permute over the 32 activations (vpermt2ps).
    return _mm512_permutex2var_ps(load(x), unsafeBitCast(depths, to: __m512i.self), load(x + 16))
#else
    var picked = Vec()
    for l in 0 ..< 16 { picked[l] = x[Int(depths[l])] }
    return picked
#endif
}

/// Positions of the two kept values of 2:4 group `n` (counted over the whole tensor): its
/// metadata nibble is `i0 | i1 << 2`.
@inline(__always) func keptPositions(_ metadata: UnsafePointer<UInt8>, _ n: Int) -> (Int, Int) {
    let nibble = Int(metadata[n >> 1] >> UInt8((n & 1) << 2)) & 0xF
    return (nibble & 3, nibble >> 2)
}

/// Eight metadata nibbles from nibble `n` on, as one word (nibble `n` in the low bits).
@inline(__always) func metadataWord(_ metadata: UnsafePointer<UInt8>, nibble n: Int) -> UInt32 {
    let byte = n >> 1
    let word = UnsafeRawPointer(metadata).loadUnaligned(fromByteOffset: byte, as: UInt32.self)
    return n & 1 == 0 ? word : word >> 4 | UInt32(metadata[byte &+ 4]) << 28
}

/// Writes the transpose of the 16 x 16 block at `src` (rows `srcStride` floats apart) to `dst`
/// (rows `dstStride` apart): `dst[j][i] = src[i][j]`, or `src[i][j] + adding[i]`.
@inline(__always)
func transpose16x16(_ src: UnsafePointer<Float>, _ srcStride: Int, _ dst: UnsafeMutablePointer<Float>, _ dstStride: Int,
                    adding: UnsafePointer<Float>? = nil) {
#if TESSERA_AVX512
    // Element (i, j) moves to (j, i): four rounds each swap one bit of i with the same bit of j.
    // In the round for bit h, rows i and i + h (h clear in i) trade the lanes whose index has h
    // set, with one two-source permute each (vpermt2ps). Spelled out so that all 16 rows stay
    // in registers and the indices are constants.
    @inline(__always) func trade(_ a: inout Vec, _ b: inout Vec, _ low: SIMD16<Int32>, _ high: SIMD16<Int32>) {
        let (a0, b0) = (a, b)
        a = _mm512_permutex2var_ps(a0, unsafeBitCast(low, to: __m512i.self), b0)
        b = _mm512_permutex2var_ps(a0, unsafeBitCast(high, to: __m512i.self), b0)
    }
    var r0 = load(src), r1 = load(src + srcStride), r2 = load(src + 2 * srcStride), r3 = load(src + 3 * srcStride)
    var r4 = load(src + 4 * srcStride), r5 = load(src + 5 * srcStride), r6 = load(src + 6 * srcStride), r7 = load(src + 7 * srcStride)
    var r8 = load(src + 8 * srcStride), r9 = load(src + 9 * srcStride), r10 = load(src + 10 * srcStride), r11 = load(src + 11 * srcStride)
    var r12 = load(src + 12 * srcStride), r13 = load(src + 13 * srcStride), r14 = load(src + 14 * srcStride), r15 = load(src + 15 * srcStride)
    var low = SIMD16<Int32>(0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30)
    var high = SIMD16<Int32>(1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31)
    trade(&r0, &r1, low, high); trade(&r2, &r3, low, high); trade(&r4, &r5, low, high); trade(&r6, &r7, low, high)
    trade(&r8, &r9, low, high); trade(&r10, &r11, low, high); trade(&r12, &r13, low, high); trade(&r14, &r15, low, high)
    low = SIMD16<Int32>(0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29)
    high = SIMD16<Int32>(2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31)
    trade(&r0, &r2, low, high); trade(&r1, &r3, low, high); trade(&r4, &r6, low, high); trade(&r5, &r7, low, high)
    trade(&r8, &r10, low, high); trade(&r9, &r11, low, high); trade(&r12, &r14, low, high); trade(&r13, &r15, low, high)
    low = SIMD16<Int32>(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27)
    high = SIMD16<Int32>(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31)
    trade(&r0, &r4, low, high); trade(&r1, &r5, low, high); trade(&r2, &r6, low, high); trade(&r3, &r7, low, high)
    trade(&r8, &r12, low, high); trade(&r9, &r13, low, high); trade(&r10, &r14, low, high); trade(&r11, &r15, low, high)
    low = SIMD16<Int32>(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23)
    high = SIMD16<Int32>(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31)
    trade(&r0, &r8, low, high); trade(&r1, &r9, low, high); trade(&r2, &r10, low, high); trade(&r3, &r11, low, high)
    trade(&r4, &r12, low, high); trade(&r5, &r13, low, high); trade(&r6, &r14, low, high); trade(&r7, &r15, low, high)
    if let adding {
        let a = load(adding)
        r0 += a; r1 += a; r2 += a; r3 += a; r4 += a; r5 += a; r6 += a; r7 += a
        r8 += a; r9 += a; r10 += a; r11 += a; r12 += a; r13 += a; r14 += a; r15 += a
    }
    store(r0, dst); store(r1, dst + dstStride); store(r2, dst + 2 * dstStride); store(r3, dst + 3 * dstStride)
    store(r4, dst + 4 * dstStride); store(r5, dst + 5 * dstStride); store(r6, dst + 6 * dstStride); store(r7, dst + 7 * dstStride)
    store(r8, dst + 8 * dstStride); store(r9, dst + 9 * dstStride); store(r10, dst + 10 * dstStride); store(r11, dst + 11 * dstStride)
    store(r12, dst + 12 * dstStride); store(r13, dst + 13 * dstStride); store(r14, dst + 14 * dstStride); store(r15, dst + 15 * dstStride)
#else
    for i in 0 ..< 16 {
        let a = adding?[i]
        for j in 0 ..< 16 { dst[j &* dstStride &+ i] = a.map { src[i &* srcStride &+ j] + $0 } ?? src[i &* srcStride &+ j] }
    }
#endif
}

enum Threads {
    /// Elements of an elementwise or copying op worth a thread of their own (tens of µs): fewer
    /// run faster on one thread than the pool's hand-off costs.
    static let elementsPerThread = 1 << 16

    /// How many of `threads` are worth using on `work` units, each thread getting `perThread`.
    static func worthwhile(_ threads: Int, work: Int, perThread: Int = elementsPerThread) -> Int {
        max(1, min(threads, work / perThread))
    }

    /// Splits `0..<count` into at most `threads` contiguous ranges whose bounds are multiples of
    /// `granularity` (except the end) and runs `body` on each concurrently.
    /// The ranges are fixed by `count`, `threads` and `granularity` alone, so what each computes
    /// does not depend on which thread runs it (`tessera_parallel_parts`, the spinning pool).
    static func split(_ count: Int, threads: Int, granularity: Int = 1, _ body: (Range<Int>) -> Void) {
        let units = (count + granularity - 1) / granularity
        let parts = max(1, min(threads, units))
        if parts == 1 { body(0 ..< count); return }
        withoutActuallyEscaping(body) { body in
            var job = Job(count: count, units: units, parts: parts, granularity: granularity, body: body)
            withUnsafeMutablePointer(to: &job) { job in
                tessera_parallel_parts(parts, parts, { context, part in
                    let job = context!.assumingMemoryBound(to: Job.self).pointee
                    let lo = job.units * part / job.parts * job.granularity
                    let hi = min(job.count, job.units * (part + 1) / job.parts * job.granularity)
                    job.body(lo ..< hi)
                }, job)
            }
        }
    }

    private struct Job {
        let count: Int, units: Int, parts: Int, granularity: Int
        let body: (Range<Int>) -> Void
    }
}
