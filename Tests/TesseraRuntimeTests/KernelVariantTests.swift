import CTesseraKernels
import Foundation
import Testing
@testable import TesseraRuntime

/// Each C variant of the float32 kernels that this CPU runs, against the portable Swift kernels:
/// bit for bit, since both make the same fused multiply-adds in the same order.
@Suite struct KernelVariantTests {
    static var variants: [InstructionSet] { InstructionSet.allCases.filter { $0 != .portable && $0 <= KernelDispatch.supported } }

    static func random(_ count: Int, seed: UInt64) -> [Float] {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        return (0 ..< count).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Float(Int64(bitPattern: state >> 11) % 2001 - 1000) / 997
        }
    }

    @Test func theSelectedVariantIsOneThisCPURuns() {
        #expect(KernelDispatch.selected <= KernelDispatch.supported)
        #expect((KernelDispatch.kernels == nil) == (KernelDispatch.selected == .portable))
    }

    /// `copyFloats` (convolution rows) copies exactly `count` floats for every tail length,
    /// and nothing past them; with a step (rows split into phases), every `step`-th float, in
    /// the portable loop and every C variant.
    @Test func copyFloatsCopiesEveryLengthExactly() {
        let source = Self.random(200, seed: 31)
        typealias Copy = (UnsafePointer<Float>, Int, UnsafeMutablePointer<Float>, Int) -> Void
        let stridedCopies: [(String, Copy)] = [("portable", PortableKernels.stridedCopy)]
            + Self.variants.compactMap { isa in KernelDispatch.table(for: isa).map { k in (isa.rawValue, { k.strided_copy($0, $1, $2, $3) }) } }
        for step in [1, 2, 3] {
            for (name, copy) in step == 1 ? [("copyFloats", { s, _, t, n in copyFloats(s, t, count: n) })] : stridedCopies {
                for count in 0 ... 40 {
                    var target = [Float](repeating: .nan, count: 48)
                    source.withUnsafeBufferPointer { s in target.withUnsafeMutableBufferPointer { copy(s.baseAddress! + 3, step, $0.baseAddress!, count) } }
                    let expected = (0 ..< count).map { source[3 + $0 * step] }
                    #expect(Array(target[..<count]) == expected && target[count...].allSatisfy(\.isNaN), "\(name), step \(step), count \(count)")
                }
            }
        }
    }

    /// The W8A8 GEMM core's VNNI and AMX variants against the portable loop: the same int32 sums
    /// (integer arithmetic is exact), so the same outputs bit for bit, over partial blocks and
    /// tiles, with and without a bias. On two threads a batch of one call's rows or less splits
    /// the outputs (a partial last block among them), a larger one the rows. Depths that are a
    /// multiple of 64 (768, 64, 1024) with 16 rows or more run AMX tiles, with VNNI for the rows
    /// past the last 16; the 1056 x 1024 weight is too large to stay in L2, so AMX takes it pair
    /// of blocks by pair on one thread.
    @Test func int8GEMMVariantsGiveTheSameOutputs() throws {
        let variants = KernelDispatch.int8Variants(for: .avx512).dropFirst()
        guard !variants.isEmpty else { return }
        let cases: [([Int], Int, Int)] = [([70, 33], 0, 11), ([70, 33], 0, 1), ([768, 96], 0, 16), ([768, 96], 0, 5), ([5, 129], 1, 3),
                                          ([128, 70], 1, 37), ([128, 96], 1, 16), ([256, 100], 1, 75), ([256, 64], 1, 32),
                                          ([1056, 1024], 1, 56)]
        for (shape, axis, batch) in cases {
            let tensor = try KernelTests.tensor(shape: shape, axis: axis, values: .int8PerOutput, seed: 9)
            let op = try LinearOperator(tensor)
            let x = Self.random(batch * op.depth, seed: 4), bias = batch % 2 == 1 ? Self.random(op.rows, seed: 6) : nil
            var portable = [Float](repeating: 0, count: batch * op.rows)
            x.withUnsafeBufferPointer { xp in (bias ?? []).withUnsafeBufferPointer { b in
                let b = bias == nil ? nil : b.baseAddress
                portable.withUnsafeMutableBufferPointer { op.applyPackedInt8(xp.baseAddress!, batch: batch, into: $0.baseAddress!, threads: 1, kernels: KernelDispatch.int8Kernels(for: .portable), bias: b) }
                for (v, kernels) in variants.enumerated() {
                    for threads in [1, 2] {
                        var got = [Float](repeating: .nan, count: batch * op.rows)
                        got.withUnsafeMutableBufferPointer { op.applyPackedInt8(xp.baseAddress!, batch: batch, into: $0.baseAddress!, threads: threads, kernels: kernels, bias: b) }
                        let differing = zip(portable, got).filter { $0.bitPattern != $1.bitPattern }.count
                        #expect(differing == 0, "\(shape) batch \(batch) variant \(v + 1) threads \(threads)")
                    }
                }
            } }
        }
    }

    /// The 2:4 W8A8 GEMM on kept codes (pair layout), portable and VBMI, against the dense GEMM on
    /// the codes with pruned zeros: the same int32 sums, so the same outputs bit for bit. Depths
    /// with a lone last group and a partial last window, rows in partial blocks, partial tiles;
    /// with AMX, the 40 rows at depth 128 run the dense GEMM with zeros instead (`dense_rows`).
    @Test func sparse24Int8GEMMMatchesTheDenseGEMM() throws {
        var variants: [tessera_int8_sparse24_gemm_fn] = [tessera_int8_sparse24_gemm_portable]
        if let vbmi = KernelDispatch.int8Sparse24GEMM(for: .avx512) { variants.append(vbmi) }
        for (shape, axis, batch) in [([52, 70], 0, 11), ([200, 33], 0, 16), ([200, 70], 0, 3), ([5, 516], 1, 3), ([768, 96], 0, 9), ([96, 128], 0, 40)] {
            let tensor = try KernelTests.tensor(shape: shape, axis: axis, values: .int8PerOutput, seed: 12)
            let op = try LinearOperator(try tensor.encoded(as: .sparse24))
            let x = Self.random(batch * op.depth, seed: 13)
            var dense = [Float](repeating: 0, count: batch * op.rows)
            x.withUnsafeBufferPointer { xp in
                dense.withUnsafeMutableBufferPointer {
                    op.applyPackedInt8(xp.baseAddress!, batch: batch, into: $0.baseAddress!, threads: 1,
                                       kernels: KernelDispatch.int8Kernels(for: .portable), sparse24: nil)
                }
                for (v, variant) in variants.enumerated() {
                    var got = [Float](repeating: .nan, count: batch * op.rows)
                    got.withUnsafeMutableBufferPointer { op.applyPackedInt8(xp.baseAddress!, batch: batch, into: $0.baseAddress!, threads: 2, sparse24: variant) }
                    #expect(got.map(\.bitPattern) == dense.map(\.bitPattern), "\(shape) batch \(batch) variant \(v)")
                }
            }
        }
    }

    /// Both C quantizers give the codes, scale and zero point of `UInt8Activations`, the
    /// quantizer of the 2:4 integer path: one definition of DynamicQuantizeLinear. Besides random
    /// rows: rows whose values lie on and a few ulps either side of x / scale = a half-integer
    /// (where multiplying by 1/scale instead of dividing could round the other way), over
    /// scales from 2^-120 (divided) to 2^20.
    @Test func activationQuantizersAgree() {
        var isas: [InstructionSet] = [.portable]
        if KernelDispatch.hasVNNI { isas.append(.avx512) }
        var rows = [(1, 1), (17, 2), (768, 3), (100, 4)].map { n, seed in
            let x = Self.random(n, seed: UInt64(seed))
            return seed == 4 ? x.map { abs($0) } : x   // no negative value: zero point 0
        }
        for exponent in stride(from: -120, through: 20, by: 7) {
            let low = -Float(sign: .plus, exponent: exponent, significand: 1.37), high = Float(sign: .plus, exponent: exponent, significand: 1.9)
            let scale = (high - low) / 255
            var x = [low, high]
            for (i, code) in Self.random(300, seed: UInt64(exponent + 200)).enumerated() {
                var v = (Float(Int(code * 255)) + 0.5) * scale   // a half-integer quotient
                for _ in 0 ..< i % 5 { v = i % 2 == 0 ? v.nextUp : v.nextDown }
                x.append(min(max(v, low), high))
            }
            rows.append(x)
        }
        for x in rows {
            let n = x.count
            let reference = UInt8Activations(count: n)
            defer { reference.deallocate() }
            x.withUnsafeBufferPointer { reference.quantize($0.baseAddress!) }
            for isa in isas {
                var codes = [UInt8](repeating: 0, count: n), scale: Float = 0, zeroPoint: Int32 = 0
                KernelDispatch.int8Kernels(for: isa).quantize(x, n, &codes, &scale, &zeroPoint)
                #expect(codes == Array(UnsafeBufferPointer(start: reference.codes, count: n)), "\(isa) n \(n)")
                #expect(scale.bitPattern == reference.scale.bitPattern && zeroPoint == reference.zeroPoint, "\(isa) n \(n)")
            }
        }
    }

    /// Every integer path variant finds the first infinity or NaN where the portable check does:
    /// in the first, a middle and the last 64-float block, in a tail, two of them, none.
    @Test func nonfiniteActivationsAreFoundByEveryVariant() {
        let variants = KernelDispatch.int8Variants(for: KernelDispatch.selected)
        for n in [0, 5, 64, 200, 1000] {
            var cases: [[Float]] = [Self.random(n, seed: 7)]
            for position in Set([0, n / 2, n - 1, n - 3]) where position >= 0 && position < n {
                for bad in [Float.infinity, -.infinity, .nan, -Float.nan] {
                    var x = cases[0]
                    x[position] = bad
                    if position + 2 < n { x[position + 2] = .nan }
                    cases.append(x)
                }
            }
            for x in cases {
                let expected = x.firstIndex { !$0.isFinite } ?? n
                for (v, kernels) in variants.enumerated() {
                    #expect(x.withUnsafeBufferPointer { kernels.first_nonfinite($0.baseAddress, n) } == expected, "n \(n) variant \(v)")
                }
            }
        }
    }

    @Test func tilesMatchThePortableKernels() throws {
        for isa in Self.variants {
            let k = try #require(KernelDispatch.table(for: isa))
            // Packed panels (wr 1, ks 8 or wider) and rows read in place (wr the row length or more, ks 1).
            for (depth, wr, ks) in [(1, 1, 8), (37, 1, 8), (256, 1, 8), (19, 1, 24), (37, 37, 1), (5, 9, 1)] {
                let w = Self.random(ks * depth + 8 * wr, seed: 1), xt = Self.random(depth * 40, seed: 2), start = Self.random(8 * 40, seed: 3)
                for (wide, accumulating) in [(true, true), (false, true), (true, false), (false, false)] {
                    var expected = start, got = start
                    w.withUnsafeBufferPointer { w in
                        xt.withUnsafeBufferPointer { xt in
                            expected.withUnsafeMutableBufferPointer { o in
                                (wide ? PortableKernels.tile8x32 : PortableKernels.tile8x16)(w.baseAddress!, wr, ks, depth, xt.baseAddress!, 40, o.baseAddress!, 40, accumulating)
                            }
                            got.withUnsafeMutableBufferPointer { o in
                                (wide ? k.tile8x32 : k.tile8x16)(w.baseAddress!, wr, ks, depth, xt.baseAddress!, 40, o.baseAddress!, 40, accumulating ? 1 : 0)
                            }
                        }
                    }
                    #expect(got.map(\.bitPattern) == expected.map(\.bitPattern), "\(isa) tile (wide: \(wide), accumulating: \(accumulating)) at depth \(depth), wr \(wr)")
                    // Not accumulating, a tile ignores what its outputs held: the same as from zeros.
                    if !accumulating {
                        var fromZeros = [Float](repeating: 0, count: start.count)
                        w.withUnsafeBufferPointer { w in
                            xt.withUnsafeBufferPointer { xt in
                                fromZeros.withUnsafeMutableBufferPointer { o in
                                    (wide ? PortableKernels.tile8x32 : PortableKernels.tile8x16)(w.baseAddress!, wr, ks, depth, xt.baseAddress!, 40, o.baseAddress!, 40, true)
                                }
                            }
                        }
                        let columns = wide ? 32 : 16
                        let written = (0 ..< 8).flatMap { i in (0 ..< columns).map { i * 40 + $0 } }
                        #expect(written.allSatisfy { got[$0].bitPattern == fromZeros[$0].bitPattern }, "\(isa) tile from zeros (wide: \(wide))")
                    }
                }
            }
        }
    }

    /// The indirect tiles read depth k's activations at x + rows[k]: with rows k·40 they are the
    /// strided tiles; with rows out of order and off a vector boundary every variant still
    /// matches the portable one.
    @Test func indirectTilesMatchThePortableKernels() throws {
        for depth in [1, 37, 256] {
            let w = Self.random(8 * depth, seed: 4), x = Self.random(depth * 40 + 40, seed: 5), start = Self.random(8 * 40, seed: 6)
            let strided = (0 ..< depth).map { $0 * 40 }, scattered = (0 ..< depth).map { (($0 * 7) % depth) * 40 + $0 % 3 }
            for (wide, accumulating) in [(true, true), (false, true), (true, false), (false, false)] {
                func run(_ rows: [Int], _ tile: (UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Int>, UnsafeMutablePointer<Float>) -> Void) -> [UInt32] {
                    var out = start
                    w.withUnsafeBufferPointer { w in
                        x.withUnsafeBufferPointer { x in
                            rows.withUnsafeBufferPointer { rows in
                                out.withUnsafeMutableBufferPointer { tile(w.baseAddress!, x.baseAddress!, rows.baseAddress!, $0.baseAddress!) }
                            }
                        }
                    }
                    return out.map(\.bitPattern)
                }
                let portable = { (rows: [Int]) in
                    run(rows) { w, x, r, o in
                        if wide { PortableKernels.tile8x32(w, depth, x, rows: r, o, 40, accumulating: accumulating) } else {
                            PortableKernels.tile8x16(w, depth, x, rows: r, o, 40, accumulating: accumulating)
                        }
                    }
                }
                let linear = run(strided) { w, x, _, o in
                    if wide { PortableKernels.tile8x32(w, 1, 8, depth, x, 40, o, 40, accumulating: accumulating) } else {
                        PortableKernels.tile8x16(w, 1, 8, depth, x, 40, o, 40, accumulating: accumulating)
                    }
                }
                let asStrided = portable(strided) == linear
                #expect(asStrided, "portable indirect tile (wide: \(wide)) at depth \(depth)")
                for isa in Self.variants {
                    let k = try #require(KernelDispatch.table(for: isa))
                    for rows in [strided, scattered] {
                        let got = run(rows) { w, x, r, o in (wide ? k.tile8x32_indirect : k.tile8x16_indirect)(w, depth, x, r, o, 40, accumulating ? 1 : 0) }
                        let same = got == portable(rows)
                        #expect(same, "\(isa) indirect tile (wide: \(wide), accumulating: \(accumulating)) at depth \(depth)")
                    }
                }
            }
        }
    }

    @Test func dotColumnsAndProductsMatchThePortableKernels() throws {
        for isa in Self.variants {
            let k = try #require(KernelDispatch.table(for: isa))
            for n in [0, 1, 15, 16, 31, 47, 64, 100, 385] {
                let a = Self.random(n, seed: 4), b = Self.random(n, seed: 5)
                let got = k.dot(a, b, n), expected = PortableKernels.dot(a, b, n)
                #expect(got.bitPattern == expected.bitPattern, "\(isa) dot of \(n)")
            }
            for (rows, depth, width) in [(70, 9, 70), (200, 4, 131), (64, 3, 17), (1, 5, 1)] {
                let x = Self.random(depth, seed: 6), values = Self.random(rows * depth, seed: 7)
                var expected = [Float](repeating: .nan, count: width), got = expected
                PortableKernels.columns(x, values, rows: rows, depth: depth, &expected, width: width, load) { $0 }
                k.columns(x, values, rows, depth, &got, width)
                #expect(got.map(\.bitPattern) == expected.map(\.bitPattern), "\(isa) columns \(rows)x\(depth) width \(width)")
                let codes = values.map { Int8(clamping: Int($0 * 120)) }
                PortableKernels.columns(x, codes, rows: rows, depth: depth, &expected, width: width, loadFloats) { Float($0) }
                k.columns_int8(x, codes, rows, depth, &got, width)
                #expect(got.map(\.bitPattern) == expected.map(\.bitPattern), "\(isa) int8 columns \(rows)x\(depth) width \(width)")
            }
            for (m, depth, n) in [(3, 5, 130), (1, 64, 64), (4, 7, 17), (2, 1, 3), (11, 32, 128), (9, 33, 32), (6, 2, 81)] {   // row blocks of 2 and 4, and the rest
                let a = Self.random(m * depth, seed: 8), b = Self.random(depth * n, seed: 9)
                var expected = [Float](repeating: .nan, count: m * n), got = expected
                PortableKernels.denseProduct(a, b, &expected, m: m, k: depth, n: n)
                k.product(a, b, &got, m, depth, n)
                #expect(got.map(\.bitPattern) == expected.map(\.bitPattern), "\(isa) product \(m)x\(depth)x\(n)")
            }
        }
    }

    @Test func sparseTilesAndCSRRowsMatchThePortableKernels() throws {
        let ld = 96, stride = sparsePanelStride
        let xt = Self.random(ld * 200, seed: 10), start = Self.random(8 * ld, seed: 11)
        for isa in Self.variants {
            let k = try #require(KernelDispatch.table(for: isa))
            for count in [1, 7, 128] {
                let v = Self.random(8 * stride, seed: 12)
                let off = (0 ..< 8 * stride).map { Int32(($0 * 37) % 150 * ld) }
                for wide in [true, false] {
                    var expected = start, got = start
                    (wide ? PortableKernels.sparseTile8x32 : PortableKernels.sparseTile8x16)(v, off, count, xt, &expected, ld)
                    (wide ? k.sparse_tile8x32 : k.sparse_tile8x16)(v, off, count, xt, &got, ld)
                    #expect(got.map(\.bitPattern) == expected.map(\.bitPattern), "\(isa) 2:4 tile (wide: \(wide)), \(count) values")
                }
            }
            let depth = (0 ..< 50).map { UInt8(($0 * 53) % 200) }, values = Self.random(50, seed: 13)
            for (width, lo, hi) in [(64, 0, 50), (32, 3, 20), (16, 5, 6), (64, 9, 9)] {
                for adding in [false, true] {
                    var expected = start, got = start
                    switch width {
                    case 64: gatherRow(Sums64.self, lo ..< hi, depth, values, xt, ld, &expected, adding)
                    case 32: gatherRow(Sums32.self, lo ..< hi, depth, values, xt, ld, &expected, adding)
                    default: gatherRow(Sums16.self, lo ..< hi, depth, values, xt, ld, &expected, adding)
                    }
                    k.csr_row(width, lo, hi, depth, values, xt, ld, &got, adding ? 1 : 0)
                    #expect(got.map(\.bitPattern) == expected.map(\.bitPattern), "\(isa) CSR row of width \(width), entries \(lo)..<\(hi)")
                }
            }
        }
    }

    @Test func broadcastArithmeticMatchesScalarArithmetic() throws {
        let ops: [(Int32, (Float, Float) -> Float)] = [(Int32(TESSERA_ADD), (+)), (Int32(TESSERA_SUB), (-)), (Int32(TESSERA_MUL), (*)), (Int32(TESSERA_DIV), (/))]
        for isa in Self.variants {
            let k = try #require(KernelDispatch.table(for: isa))
            for (outer, middle, inner) in [(1, 37, 1), (5, 19, 1), (3, 4, 21), (2, 1, 40)] {
                let full = Self.random(outer * middle * inner, seed: 14), part = Self.random(middle, seed: 15).map { $0 == 0 ? 1 : $0 }
                for (op, f) in ops {
                    for partFirst in [false, true] {
                        var got = [Float](repeating: .nan, count: full.count)
                        k.binary(op, full, part, &got, outer, middle, inner, partFirst ? 1 : 0)
                        let expected = full.indices.map { e in partFirst ? f(part[e / inner % middle], full[e]) : f(full[e], part[e / inner % middle]) }
                        #expect(got.map(\.bitPattern) == expected.map(\.bitPattern), "\(isa) op \(op) (part first: \(partFirst)) over \(outer)x\(middle)x\(inner)")
                    }
                }
            }
        }
    }

    /// Inputs across each function's whole range: every 4999th float32 bit pattern, plus edges.
    static let sweep: [Float] = stride(from: UInt32(0), to: UInt32.max - 4999, by: 4999).map { Float(bitPattern: $0) }
        + [0, -0, 1, -1, 88.72283935546875, 88.8, -103.97207641601562, -104, .infinity, -.infinity, .nan, 0.921875, -0.921875]

    @Test func elementaryFunctionsAreWithinUlpsAndEveryVariantMatches() throws {
        func ulps(_ got: Float, _ exact: Double) -> Double {
            guard exact.isFinite, Float(exact).isFinite else { return got == Float(exact) || (got.isNaN && exact.isNaN) ? 0 : .infinity }
            let ulp = Double(Float(exact).ulp == 0 ? Float.leastNonzeroMagnitude : Float(exact).ulp)
            return abs(Double(got) - exact) / max(ulp, Double(Float.leastNonzeroMagnitude))
        }
        let exactSigmoid: (Double) -> Double = { $0 < 0 ? Foundation.exp($0) / (1 + Foundation.exp($0)) : 1 / (1 + Foundation.exp(-$0)) }
        // Sigmoid adds a division's and a sum's roundings to exp's.
        let functions: [(ElementaryFunction, (Double) -> Double, bound: Double)] = [
            (.exp, { Foundation.exp($0) }, 2), (.erf, { Foundation.erf($0) }, 2), (.sigmoid, exactSigmoid, 3), (.tanh, { Foundation.tanh($0) }, 3)]
        for (f, exact, bound) in functions {
            let portable = Self.sweep.map(f.portable)
            var worst = 0.0
            for (x, y) in zip(Self.sweep, portable) where !x.isNaN {
                worst = max(worst, ulps(y, exact(Double(x))))
            }
            #expect(worst <= bound, "\(f) is off by \(worst) ulp")
            #expect(portable[Self.sweep.firstIndex { $0.isNaN }!].isNaN)
            for isa in Self.variants {
                let k = try #require(KernelDispatch.table(for: isa))
                var got = [Float](repeating: 0, count: Self.sweep.count)
                k.unary(f.code, Self.sweep, &got, Self.sweep.count)
                #expect(got.map(\.bitPattern) == portable.map(\.bitPattern), "\(isa) \(f)")
            }
        }
    }

    /// Softmax, LogSoftmax and LayerNormalization rows: every variant gives the portable bits, for
    /// widths with and without a vector tail, and rows holding NaN, infinities and large values.
    @Test func softmaxAndLayerNormRowsMatchThePortableKernels() throws {
        func bits(_ x: [Float]) -> [UInt32] { x.map { $0.isNaN ? Float.nan.bitPattern : $0.bitPattern } }
        for n in [1, 7, 16, 37, 128, 384] {
            let rows = 5
            var x = Self.random(rows * n, seed: UInt64(n)).map { $0 * 30 }
            x[n] = .nan
            x[2 * n + n / 2] = .infinity
            for k in 3 * n ..< 4 * n { x[k] = -.infinity }
            let gamma = Self.random(n, seed: 7), beta = Self.random(n, seed: 8)
            for log in [false, true] {
                let portable = ReductionOps.softmaxRows(x, rows: rows, n: n, log: log, kernels: nil)
                for isa in Self.variants {
                    let k = try #require(KernelDispatch.table(for: isa))
                    let got = ReductionOps.softmaxRows(x, rows: rows, n: n, log: log, kernels: k)
                    #expect(bits(got) == bits(portable), "\(isa) softmax n \(n) log \(log)")
                }
            }
            let finite = Self.random(rows * n, seed: UInt64(n) + 100).map { $0 * 50 + 3 }
            for b in [beta, nil] {
                let portable = ReductionOps.layerNormRows(finite, n: n, gamma: gamma, beta: b, epsilon: 1e-5, kernels: nil)
                for isa in Self.variants {
                    let k = try #require(KernelDispatch.table(for: isa))
                    let got = ReductionOps.layerNormRows(finite, n: n, gamma: gamma, beta: b, epsilon: 1e-5, kernels: k)
                    #expect(bits(got.y) == bits(portable.y) && bits(got.means) == bits(portable.means) && bits(got.inverses) == bits(portable.inverses),
                            "\(isa) layer norm n \(n) beta \(b != nil)")
                }
            }
        }
    }

    @Test func fusedGeluAndSiLUMatchThePortableKernels() throws {
        let x = Self.sweep.filter { !$0.isNaN && abs($0) < 1e30 } + Self.random(1001, seed: 21).map { $0 * 6 }
        let portable = Fusion.gelu(x, divisor: 1.4142135, addend: 1, factor: 0.5, kernels: nil)
        for isa in Self.variants {
            let k = try #require(KernelDispatch.table(for: isa))
            let got = Fusion.gelu(x, divisor: 1.4142135, addend: 1, factor: 0.5, kernels: k)
            #expect(got.map(\.bitPattern) == portable.map(\.bitPattern), "\(isa) gelu")
            let silu = Fusion.silu(x, kernels: k)
            #expect(silu.map(\.bitPattern) == Fusion.silu(x, kernels: nil).map(\.bitPattern), "\(isa) silu")
        }
        // Long enough to split among threads: the same bits as one thread.
        let long = Self.random(200_003, seed: 22).map { $0 * 6 }
        let (gelu1, gelu2) = (Fusion.gelu(long, divisor: 1.4142135, addend: 1, factor: 0.5), Fusion.gelu(long, divisor: 1.4142135, addend: 1, factor: 0.5, threads: 2))
        #expect(gelu1.map(\.bitPattern) == gelu2.map(\.bitPattern))
        let (silu1, silu2) = (Fusion.silu(long), Fusion.silu(long, threads: 2))
        #expect(silu1.map(\.bitPattern) == silu2.map(\.bitPattern))
    }

    /// The fused Div, Add and Softmax of attention scores against the portable reference, bit for
    /// bit: masks broadcast every way (one row for all, per batch, per row, one value per row,
    /// the scores' own shape), either operand order, rows with a tail, -inf and NaN in the mask.
    @Test func maskedSoftmaxMatchesThePortableKernel() throws {
        for n in [7, 16, 37, 128] {
            let shape = [2, 3, 4, n], count = 24 * n
            let x = Self.random(count, seed: UInt64(n)).map { $0 * 40 }
            for maskShape in [[1, 1, 1, n], [2, 1, 1, n], [2, 3, 4, n], [2, 1, 4, 1], [1, 1, 1, 1]] {
                var mask = Self.random(maskShape.reduce(1, *), seed: 5).map { $0 < -0.6 ? -10_000 : $0 }
                mask[mask.count / 2] = -.infinity
                if mask.count > 3 { mask[1] = .nan }
                for maskFirst in [false, true] {
                    let portable = Fusion.maskedSoftmax(x, shape: shape, divisor: 5.656854, mask: mask, maskShape: maskShape,
                                                        maskFirst: maskFirst, kernels: nil)
                    for isa in Self.variants {
                        let k = try #require(KernelDispatch.table(for: isa))
                        let got = Fusion.maskedSoftmax(x, shape: shape, divisor: 5.656854, mask: mask, maskShape: maskShape, maskFirst: maskFirst, kernels: k)
                        #expect(got.map(\.bitPattern) == portable.map(\.bitPattern), "\(isa) n \(n) mask \(maskShape) first \(maskFirst)")
                    }
                }
            }
        }
    }

    /// The fused Conv epilogue, every activation with and without each earlier step (the bias
    /// plus a product buffer as the start among them; steps of every op, and a lone Add, which
    /// runs a loop of its own), on runs of
    /// every length up to two vectors and more (masked and copied tails), against the portable
    /// reference bit for bit, over the whole float range: NaN, infinities and both zeros included.
    @Test func convEpilogueMatchesThePortableKernel() throws {
        let spread = stride(from: 0, to: Self.sweep.count - 13, by: 41).map { Self.sweep[$0] } + Self.sweep.suffix(13)   // and the edges
        let x = spread + [-0.0] + Self.random(999, seed: 23).map { $0 * 8 }, residual = Self.random(x.count, seed: 24).map { $0 * 3 }
        let product = x.reversed().map { $0 * 0.5 }   // a GEMM's buffer, read instead of x
        let activations: [(Int, Float, Float)] = [(TESSERA_IDENTITY, 0, 0), (TESSERA_RELU, 0, 0), (TESSERA_HARDSWISH, 0, 0), (TESSERA_LEAKYRELU, 0.1, 0),
                                                  (TESSERA_HARDSIGMOID, 0.2, 0.5), (TESSERA_CLIP, 0, 6), (TESSERA_CLIP, -.infinity, 1), (TESSERA_SILU, 0, 0),
                                                  (TESSERA_GELU, 1.4142135, 1)]
        func run(_ e: tessera_epilogue, _ kernels: tessera_kernels?) -> [UInt32] {
            var v = x
            v.withUnsafeMutableBufferPointer { v in
                // Runs of 1 to 40 outputs, then the rest, each reading its part of the residual.
                var start = 0, length = 1
                while start < v.count {
                    let n = length <= 40 ? min(length, v.count - start) : v.count - start
                    var run = e
                    if e.residual != nil { run.residual = e.residual! + start }
                    if e.source != nil { run.source = e.source! + start }
                    Fusion.epilogue(v.baseAddress! + start, count: n, run, kernel: kernels?.epilogue)
                    (start, length) = (start + n, length + 1)
                }
            }
            return v.map(\.bitPattern)
        }
        // Every step op, with the constant second and first; a lone Add.
        let first = Int32(TESSERA_STEP_CONSTANT_FIRST)
        let (add, sub, mul, div) = (Int32(TESSERA_STEP_ADD), Int32(TESSERA_STEP_SUB), Int32(TESSERA_STEP_MUL), Int32(TESSERA_STEP_DIV))
        let stepPrograms: [[Int32]] = [[add, sub | first, mul, div], [add | first, sub, mul | first, div | first], [add]]
        let stepConstants: [Float] = [0.375, -1.5, 3, 0.75]
        try residual.withUnsafeBufferPointer { residual in
          try product.withUnsafeBufferPointer { product in
          try stepPrograms[0].withUnsafeBufferPointer { program0 in
          try stepPrograms[1].withUnsafeBufferPointer { program1 in
          try stepPrograms[2].withUnsafeBufferPointer { program2 in
          try stepConstants.withUnsafeBufferPointer { constants in
            let programs = [program0, program1, program2]
            for isa in Self.variants {
                let k = try #require(KernelDispatch.table(for: isa))
                for (activation, alpha, beta) in activations {
                    for steps in 0 ..< 32 {
                        var e = tessera_epilogue()
                        (e.activation, e.alpha, e.beta, e.gamma) = (Int32(activation), alpha, beta, 0.5)
                        if steps & 1 != 0 { (e.normalize, e.scale, e.shift) = (1, 0.7310585786300049, -1.25) }
                        if steps & 2 != 0 {
                            let program = programs[steps & 16 != 0 ? 2 : steps & 4 == 0 ? 0 : 1]
                            (e.steps, e.ops, e.constants) = (Int32(program.count), program.baseAddress, constants.baseAddress)
                        }
                        if steps & 4 != 0 { (e.residual, e.residual_first) = (residual.baseAddress, Int32(steps & 2 == 0 ? 1 : 0)) }
                        if steps & 8 != 0 { (e.source, e.initial) = (product.baseAddress, -0.625) }
                        let differing = zip(run(e, k), run(e, nil)).filter { $0 != $1 }.count
                        #expect(differing == 0, "\(isa) activation \(activation) steps \(steps)")
                    }
                }
            }
          }
          }
          }
          }
          }
        }
    }
}
