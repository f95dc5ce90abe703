import CTesseraKernels
import Foundation
import Tessera

/// An int8 weight's codes packed for the W8A8 GEMM (`tessera_int8_kernels`): 16 rows at a time,
/// four depths per 64-byte step, rows padded to a multiple of 32 and depth to a multiple of 4
/// with zero codes (a 2:4 weight's pruned codes are zeros too); each row's code sum (for the
/// activations' zero point) and scale. Built once, on the first integer product, so a weight
/// never run that way costs nothing.
///
/// A 2:4 weight run by `tessera_int8_sparse24_gemm_vbmi` is packed by pairs of groups instead
/// (`sparse24Pairs`): its kept codes only, each with its activation's place in a 64-depth
/// window (`positions`), the depth padded to a multiple of 64.
final class PackedInt8Weight: @unchecked Sendable {
    let blocks: Int
    let paddedDepth: Int
    let codes: UnsafeMutablePointer<Int8>
    /// The pair layout's activation positions; nil in the dense layout.
    let positions: UnsafeMutablePointer<UInt8>?
    /// Pairs of 2:4 groups per row in the pair layout.
    let pairs: Int
    let rowSums: [Int32]
    let rowScales: [Float]

    private init(blocks: Int, paddedDepth: Int, codes: UnsafeMutablePointer<Int8>, positions: UnsafeMutablePointer<UInt8>?,
                 pairs: Int, rowSums: [Int32], op: LinearOperator) {
        (self.blocks, self.paddedDepth, self.codes, self.positions, self.pairs, self.rowSums) = (blocks, paddedDepth, codes, positions, pairs, rowSums)
        rowScales = (0 ..< op.rows).map { op.scaleMap.scales[op.scaleMap.rowBase[$0]] }
    }

    /// `row(r, out)` writes row r's `depth` codes to `out`.
    convenience init(_ op: LinearOperator, row: (Int, UnsafeMutablePointer<Int8>) -> Void) {
        let (rows, depth) = (op.rows, op.depth)
        let blocks = (rows + 31) / 32 * 2
        let paddedDepth = (depth + 3) / 4 * 4
        let count = blocks * 16 * paddedDepth
        let codes = UnsafeMutablePointer<Int8>.allocate(capacity: max(1, count))
        codes.initialize(repeating: 0, count: max(1, count))
        let line = UnsafeMutablePointer<Int8>.allocate(capacity: max(1, depth))
        defer { line.deallocate() }
        var sums = [Int32](repeating: 0, count: rows)
        let steps = paddedDepth / 4
        for r in 0 ..< rows {
            let (block, j) = (r / 16, r % 16)
            row(r, line)
            var sum: Int32 = 0
            for k in 0 ..< depth {
                codes[(block * steps + k / 4) * 64 + 4 * j + k % 4] = line[k]
                sum += Int32(line[k])
            }
            sums[r] = sum
        }
        self.init(blocks: blocks, paddedDepth: paddedDepth, codes: codes, positions: nil, pairs: 0, rowSums: sums, op: op)
    }

    deinit {
        codes.deallocate()
        positions?.deallocate()
    }

    /// A 2:4 weight in the pair layout of `tessera_int8_sparse24_gemm_fn`: entry
    /// `(block·pairs + p)·64 + 4j + t` is row `16·block + j`'s t-th kept code of pair p, and its
    /// depth within the window of pair p. A lone last group pairs with zero codes.
    static func sparse24Pairs(_ op: LinearOperator, codes source: UnsafePointer<Int8>, metadata: UnsafePointer<UInt8>) -> PackedInt8Weight {
        let (rows, groups) = (op.rows, op.depth / 4)
        let blocks = (rows + 31) / 32 * 2, pairs = (groups + 1) / 2
        let count = blocks * pairs * 64
        let codes = UnsafeMutablePointer<Int8>.allocate(capacity: max(1, count))
        let positions = UnsafeMutablePointer<UInt8>.allocate(capacity: max(1, count))
        codes.initialize(repeating: 0, count: max(1, count))
        positions.initialize(repeating: 0, count: max(1, count))
        var sums = [Int32](repeating: 0, count: rows)
        for r in 0 ..< rows {
            let (block, j) = (r / 16, r % 16)
            for g in 0 ..< groups {
                let (i0, i1) = keptPositions(metadata, r * groups + g)
                let (p, half) = (g / 2, g % 2)
                let e = (block * pairs + p) * 64 + 4 * j + 2 * half, base = 8 * (p % 8) + 4 * half
                (codes[e], codes[e + 1]) = (source[2 * (r * groups + g)], source[2 * (r * groups + g) + 1])
                (positions[e], positions[e + 1]) = (UInt8(base + i0), UInt8(base + i1))
                sums[r] += Int32(codes[e]) + Int32(codes[e + 1])
            }
        }
        return PackedInt8Weight(blocks: blocks, paddedDepth: (op.depth + 63) / 64 * 64, codes: codes, positions: positions,
                                pairs: pairs, rowSums: sums, op: op)
    }

    /// A dense weight's codes, read through the operator's view.
    static func dense(_ op: LinearOperator, codes: UnsafePointer<Int8>) -> PackedInt8Weight {
        PackedInt8Weight(op) { r, out in
            for k in 0 ..< op.depth { out[k] = codes[op.view.logicalIndex(row: r, k: k)] }
        }
    }

    /// A 2:4 weight's codes, each kept pair at its metadata's positions and zeros elsewhere.
    static func sparse24(_ op: LinearOperator, codes: UnsafePointer<Int8>, metadata: UnsafePointer<UInt8>) -> PackedInt8Weight {
        let groups = op.depth / 4
        return PackedInt8Weight(op) { r, out in
            out.initialize(repeating: 0, count: op.depth)
            let first = r * groups
            for g in 0 ..< groups {
                let (i0, i1) = keptPositions(metadata, first + g)
                out[4 * g + i0] = codes[2 * (first + g)]
                out[4 * g + i1] = codes[2 * (first + g) + 1]
            }
        }
    }
}

extension KernelDispatch {
    /// The W8A8 GEMM's kernels: AMX tiles or else VNNI where the CPU has them and the selected
    /// variant is AVX-512, else the portable C loops. All give the same bits.
    static let int8Kernels = int8Kernels(for: selected)

    static func int8Kernels(for isa: InstructionSet) -> tessera_int8_kernels { int8Variants(for: isa).last! }

    /// Every W8A8 kernel table `isa` may run on this CPU, narrowest first (tests run them all).
    static func int8Variants(for isa: InstructionSet) -> [tessera_int8_kernels] {
        var variants = [tessera_int8_kernels_portable]
#if arch(x86_64)
        if isa == .avx512, hasVNNI { variants.append(tessera_int8_kernels_vnni) }
        if isa == .avx512, hasAMX { variants.append(tessera_int8_kernels_amx) }
#endif
        return variants
    }

    /// The 2:4 W8A8 GEMM on kept codes (`tessera_int8_sparse24_gemm_fn`) where the CPU has
    /// AVX-512 VNNI and VBMI and the selected variant is AVX-512; elsewhere 2:4 batches run the
    /// dense GEMM on their codes with the pruned ones as zeros (the same sums).
    static let int8Sparse24GEMM = int8Sparse24GEMM(for: selected)

    static func int8Sparse24GEMM(for isa: InstructionSet) -> tessera_int8_sparse24_gemm_fn? {
#if arch(x86_64)
        if isa == .avx512, hasVNNI, hasVBMI { return tessera_int8_sparse24_gemm_vbmi }
#endif
        return nil
    }

    /// Whether this CPU has AVX-512 VNNI (vpdpbusd).
    public static let hasVNNI = cpuFeatures & Int32(TESSERA_CPU_AVX512_VNNI) != 0

    /// Whether this CPU has AMX int8 tiles and the OS lets this process use them.
    public static let hasAMX = cpuFeatures & Int32(TESSERA_CPU_AMX_INT8) != 0

    /// Whether this CPU has AVX-512 VBMI (vpermb).
    public static let hasVBMI = cpuFeatures & Int32(TESSERA_CPU_AVX512_VBMI) != 0
}

extension LinearOperator {
    /// An int8 weight's W8A8 product as a GEMM on its packed codes (see
    /// `applyQuantizingActivations`): activation rows quantized to uint8 as DynamicQuantizeLinear
    /// does, the integer GEMM on `kernels.rows_per_call` rows at a time, each block of sums
    /// finished where it is computed (`tessera_int8_output`): per output
    /// `scale_w · scale_x · (Σ code_w·code_x − z_x · Σ code_w)`.
    ///
    /// A 2:4 weight runs `sparse24` on its pair layout when given, else (or where the kernels'
    /// `dense_rows` says the dense GEMM is faster) the dense GEMM on its codes with zeros.
    func applyPackedInt8(_ x: UnsafePointer<Float>, batch: Int, into y: UnsafeMutablePointer<Float>, threads: Int,
                         kernels: tessera_int8_kernels = KernelDispatch.int8Kernels,
                         sparse24: tessera_int8_sparse24_gemm_fn? = KernelDispatch.int8Sparse24GEMM, bias: UnsafePointer<Float>? = nil) {
        let packed: PackedInt8Weight
        switch tensor.storage {
        case .dense(let values):
            packed = values.withBaseAddress { v in packedInt8.get { .dense(self, codes: v.assumingMemoryBound(to: Int8.self)) } }
        case .sparse24(let values, _):
            // The pair layout (and so `sparse24` below) only where it is the faster GEMM.
            let keptCodes = sparse24 != nil && !(kernels.dense_rows > 0 && batch >= kernels.dense_rows && depth % 64 == 0)
            packed = values.withBaseAddress { v in withSparse24Metadata { metadata in
                let codes = v.assumingMemoryBound(to: Int8.self)
                return keptCodes ? packedInt8Pairs.get { .sparse24Pairs(self, codes: codes, metadata: metadata) }
                    : packedInt8.get { .sparse24(self, codes: codes, metadata: metadata) }
            } }
        default:
            preconditionFailure("not a dense or 2:4 tensor")
        }
        let (rows, depth, kp, tile) = (rows, depth, packed.paddedDepth, kernels.rows_per_call)
        if threads > 1, batch <= tile, packed.blocks >= 4 {
            return applyPackedInt8(x, batch: batch, into: y, threads: threads, kernels: kernels, sparse24: sparse24, bias: bias, splittingOutputs: packed)
        }
        packed.rowSums.withUnsafeBufferPointer { rowSums in packed.rowScales.withUnsafeBufferPointer { rowScales in
            Threads.split(batch, threads: threads, granularity: tile) { range in
                // A few rows at a time: the codes stay small and in cache.
                let xq = UnsafeMutablePointer<UInt8>.allocate(capacity: tile * kp)
                let scales = UnsafeMutablePointer<Float>.allocate(capacity: tile), zeroPoints = UnsafeMutablePointer<Int32>.allocate(capacity: tile)
                defer { xq.deallocate(); scales.deallocate(); zeroPoints.deallocate() }
                xq.initialize(repeating: 0, count: tile * kp)
                for start in stride(from: range.lowerBound, to: range.upperBound, by: tile) {
                    let n = min(tile, range.upperBound - start)
                    for i in 0 ..< n { kernels.quantize(x + (start + i) * depth, depth, xq + i * kp, scales + i, zeroPoints + i) }
                    var output = tessera_int8_output(row_sums: rowSums.baseAddress!, row_scales: rowScales.baseAddress!, bias: bias,
                                                     zero_points: zeroPoints, scales: scales, out: y + start * rows, ldy: rows, outputs: rows)
                    if let positions = packed.positions {
                        sparse24!(xq, n, kp, positions, packed.codes, packed.pairs, packed.blocks, &output)
                    } else {
                        kernels.gemm(xq, n, kp, packed.codes, packed.blocks, &output)
                    }
                }
            }
        } }
    }

    /// A batch of at most one tile on several threads: the rows are quantized once, and the
    /// threads take pairs of 16-output weight blocks each (splitting rows would leave all but one
    /// idle). The same kernels on the same codes, so the same outputs.
    private func applyPackedInt8(_ x: UnsafePointer<Float>, batch: Int, into y: UnsafeMutablePointer<Float>, threads: Int,
                                 kernels: tessera_int8_kernels, sparse24: tessera_int8_sparse24_gemm_fn?, bias: UnsafePointer<Float>?,
                                 splittingOutputs packed: PackedInt8Weight) {
        let (rows, depth, kp) = (rows, depth, packed.paddedDepth)
        let xq = UnsafeMutablePointer<UInt8>.allocate(capacity: batch * kp)
        defer { xq.deallocate() }
        xq.initialize(repeating: 0, count: batch * kp)
        var scales = [Float](repeating: 0, count: batch), zeroPoints = [Int32](repeating: 0, count: batch)
        for i in 0 ..< batch { kernels.quantize(x + i * depth, depth, xq + i * kp, &scales[i], &zeroPoints[i]) }
        packed.rowSums.withUnsafeBufferPointer { rowSums in packed.rowScales.withUnsafeBufferPointer { rowScales in
            scales.withUnsafeBufferPointer { scales in zeroPoints.withUnsafeBufferPointer { zeroPoints in
                Threads.split(packed.blocks, threads: threads, granularity: 2) { range in
                    let first = range.lowerBound * 16, count = min(rows, range.upperBound * 16) - first
                    guard count > 0 else { return }
                    var output = tessera_int8_output(row_sums: rowSums.baseAddress! + first, row_scales: rowScales.baseAddress! + first,
                                                     bias: bias.map { $0 + first }, zero_points: zeroPoints.baseAddress!,
                                                     scales: scales.baseAddress!, out: y + first, ldy: rows, outputs: count)
                    if let positions = packed.positions {
                        let offset = range.lowerBound * packed.pairs * 64
                        sparse24!(xq, batch, kp, positions + offset, packed.codes + offset, packed.pairs, range.count, &output)
                    } else {
                        kernels.gemm(xq, batch, kp, packed.codes + range.lowerBound * kp * 16, range.count, &output)
                    }
                }
            } }
        } }
    }
}
