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

/// Eight metadata nibbles from nibble `n` on, as one word (nibble `n` in the low bits).
@inline(__always) func metadataWord(_ metadata: UnsafePointer<UInt8>, nibble n: Int) -> UInt32 {
    let byte = n >> 1
    let word = UnsafeRawPointer(metadata).loadUnaligned(fromByteOffset: byte, as: UInt32.self)
    return n & 1 == 0 ? word : word >> 4 | UInt32(metadata[byte &+ 4]) << 28
}

/// Sum of the lanes (the compiler does not reorder float additions itself).
@inline(__always) func horizontalSum(_ v: Vec) -> Float { v.sum() }

enum Threads {
    /// Splits `0..<count` into at most `threads` contiguous ranges whose bounds are multiples of
    /// `granularity` (except the end) and runs `body` on each concurrently.
    static func split(_ count: Int, threads: Int, granularity: Int = 1, _ body: (Range<Int>) -> Void) {
        let units = (count + granularity - 1) / granularity
        let parts = max(1, min(threads, units))
        if parts == 1 { body(0 ..< count); return }
        withoutActuallyEscaping(body) { body in
            nonisolated(unsafe) let body = body
            DispatchQueue.concurrentPerform(iterations: parts) { part in
                let lo = units * part / parts * granularity
                let hi = min(count, units * (part + 1) / parts * granularity)
                body(lo ..< hi)
            }
        }
    }
}

/// Row stride of the transposed operands for `columns` batch columns. A stride that is a multiple
/// of 64 floats would put every row's column `b` in the same few L1 sets, so the kernels' reads
/// of scattered depth rows (2:4, CSR) would evict each other; one vector of padding spreads them.
func transposedStride(columns: Int) -> Int { columns % 64 == 0 ? columns + vecWidth : columns }

/// Activations for the batched kernels: `xᵀ` (`[depth][ld]`; `columns` = batch rounded up to a
/// whole vector, zero padded) so that a vector load reads 16 batch rows of one depth index.
/// Cache-line aligned: a row starting mid-line would split every vector load in two.
struct TransposedActivations {
    let columns: Int
    let ld: Int
    private let pointer: UnsafeMutablePointer<Float>

    init(_ x: UnsafePointer<Float>, batch: Int, depth: Int) {
        columns = roundUp(batch, vecWidth)
        ld = transposedStride(columns: columns)
        pointer = alignedFloats(depth * ld)
        let ld = ld, xt = pointer
        // Blocks of 16 depth indices keep the writes within a few cache lines.
        for k0 in stride(from: 0, to: depth, by: 16) {
            let k1 = min(depth, k0 + 16)
            for b in 0 ..< batch {
                let row = x + b * depth
                for k in k0 ..< k1 { xt[k &* ld &+ b] = row[k] }
            }
        }
    }

    func withPointer<T>(_ body: (UnsafePointer<Float>) -> T) -> T { body(pointer) }

    func deallocate() { pointer.deallocate() }
}

/// `count` zeroed floats starting on a cache line.
func alignedFloats(_ count: Int) -> UnsafeMutablePointer<Float> {
    let floats = UnsafeMutableRawPointer.allocate(byteCount: max(1, count) * 4, alignment: 64).bindMemory(to: Float.self, capacity: count)
    floats.initialize(repeating: 0, count: count)
    return floats
}

/// Outputs of the batched kernels, `yᵀ` (`[rows rounded up to 8][ld]`, with the activations'
/// stride), copied to `y[b, r]`.
struct TransposedOutputs: @unchecked Sendable {
    let ld: Int
    let rows: Int
    let pointer: UnsafeMutablePointer<Float>

    init(rows: Int, batch: Int) {
        ld = transposedStride(columns: roundUp(batch, vecWidth))
        self.rows = roundUp(rows, 8)
        pointer = alignedFloats(self.rows * ld)
    }

    func copy(to y: UnsafeMutablePointer<Float>, rows: Int, batch: Int) {
        for r0 in stride(from: 0, to: rows, by: 16) {
            let r1 = min(rows, r0 + 16)
            for b in 0 ..< batch {
                let out = y + b * rows
                for r in r0 ..< r1 { out[r] = pointer[r &* ld &+ b] }
            }
        }
    }

    func deallocate() { pointer.deallocate() }
}
