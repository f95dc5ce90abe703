import Testing
import Tessera
import TesseraRuntime

/// Every layout x value type x orientation against a naive float64 GEMM over `densify()`.
@Suite struct KernelTests {
    /// Shapes with their reduction axis: MatMul B [K, N], Gemm B with transB [N, K], single
    /// outputs, Conv weights (one with a single output channel: only one CSR row, yet its
    /// stored rows are not depths) and a rank-3 weight. No depth is a multiple of 16; depth 76 (19 2:4
    /// groups) runs the unrolled vector loops, and odd group counts start rows mid-byte; even
    /// group counts (72, 40, 136) take the 2:4 GEMV's four-rows-at-a-time loop, with rows left
    /// over and groups past the last eight; depth 260 spans three of the CSR gather's depth blocks.
    static let weights: [(shape: [Int], axis: Int)] = [
        ([36, 21], 0), ([9, 20], 1), ([44, 1], 0), ([1, 28], 1), ([6, 8, 3, 3], 1), ([1, 8, 3, 3], 1), ([2, 12, 5], 1), ([4, 52], 1),
        ([76, 5], 0), ([3, 76], 1), ([260, 9], 0), ([7, 40], 1), ([136, 11], 0), ([40, 48], 0), ([32, 300], 1),
    ]

    enum Values: String, CaseIterable, CustomTestStringConvertible {
        case float32, float16, int8PerTensor, int8PerOutput, int8AsymmetricPerOutput, int8PerDepth, uint8GroupsOf3, int4GroupsOf8,
             uint4GroupsAcrossOutputs
        var testDescription: String { rawValue }
    }

    @Test(arguments: Values.allCases, LayoutKind.allCases)
    func kernelsMatchTheNaiveProduct(values: Values, layout: LayoutKind) throws {
        for (index, weight) in Self.weights.enumerated() {
            let tensor = try Self.tensor(shape: weight.shape, axis: weight.axis, values: values, seed: UInt64(index + 1))
            let stored = try tensor.encoded(as: layout)
            let op = try LinearOperator(stored)
            let dense = try tensor.densify()
            for batch in [1, 2, 17, 40, 64] {   // 64: a padded activation stride
                let x = Self.random(count: batch * op.depth, seed: UInt64(batch * 31 + index))
                let expected = Self.naive(dense, shape: weight.shape, axis: weight.axis, x: x, batch: batch)
                for threads in [1, 2] {
                    let y = try op.apply(x, batch: batch, threads: threads)
                    try #require(y.count == expected.count)
                    for i in y.indices where abs(Double(y[i]) - expected[i].value) > 1e-5 * expected[i].magnitude + 1e-6 {
                        Issue.record("\(weight.shape) axis \(weight.axis), batch \(batch), \(threads) threads: output \(i) is \(y[i]), expected \(expected[i].value)")
                        return
                    }
                }
            }
        }
    }

    /// The batched float32 GEMM computes each output as one chain of fused multiply-adds in
    /// depth order, from zero, then adds the bias: the bits are checked. Output counts past a
    /// whole 16 (21, 70) take the tiles' edge buffer; 48 ends on a 16-wide tile.
    @Test func denseProductIsTheDepthOrderedChain() throws {
        for (k, n) in [(5, 16), (300, 48), (37, 64), (260, 21), (40, 70)] {
            for axis in [0, 1] {
                let w = Self.random(count: k * n, seed: UInt64(k + n)), bias = Self.random(count: n, seed: 5)
                let shape = axis == 0 ? [k, n] : [n, k]
                let op = try LinearOperator(Tensor(name: "w", dataType: .float, shape: shape, reductionAxis: axis,
                                                   storage: .dense(values: TensorBytes(float32: w))))
                for batch in [2, 9, 16, 37] {
                    let x = Self.random(count: batch * k, seed: UInt64(batch))
                    for threads in [1, 2] {
                        let y = try op.apply(x, batch: batch, threads: threads, bias: bias)
                        for b in 0 ..< batch {
                            for r in 0 ..< n {
                                var sum: Float = 0
                                for d in 0 ..< k { sum = sum.addingProduct(x[b * k + d], w[axis == 0 ? d * n + r : r * k + d]) }
                                sum += bias[r]
                                guard y[b * n + r].bitPattern == sum.bitPattern else {
                                    Issue.record("\(shape) axis \(axis), batch \(batch), \(threads) threads: y[\(b), \(r)] is \(y[b * n + r]), the chain gives \(sum)")
                                    return
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    @Test(arguments: [Values.float32, .int8AsymmetricPerOutput])
    func denseDepthsNotAMultipleOfFour(values: Values) throws {
        // The dense GEMV over [K, N] takes four depths at a time; 2:4 weights (all the shapes
        // above) have depths divisible by four, so the depths left over are tested here.
        for (k, n) in [(7, 70), (37, 33), (2, 16)] {
            let real = Self.random(count: k * n, seed: UInt64(k))
            let all = [Bool](repeating: true, count: k * n)
            let tensor = values == .float32
                ? Tensor(name: "w", dataType: .float, shape: [k, n], reductionAxis: 0, storage: .dense(values: TensorBytes(float32: real)))
                : try Self.quantized(real, all, [k, n], 0, .int8, .perAxis(axis: 1), asymmetric: true)
            let w = try tensor.densify()
            let op = try LinearOperator(tensor)
            let x = Self.random(count: k, seed: 3)
            let y = try op.apply(x, batch: 1)
            for j in 0 ..< n {
                let terms = (0 ..< k).map { Double(x[$0]) * Double(w[$0 * n + j]) }
                let expected = terms.reduce(0, +), magnitude = terms.reduce(0) { $0 + abs($1) }
                #expect(abs(Double(y[j]) - expected) <= 1e-5 * magnitude + 1e-6, "[\(k), \(n)] output \(j): \(y[j]), expected \(expected)")
            }
        }
    }

    @Test func emptyRowsAndNearlyEmptyGroupsAreHandled() throws {
        // A [K, N] weight whose first stored rows are all zero and whose 2:4 groups hold 0 or 1 values.
        let k = 16, n = 40
        var values = [Float](repeating: 0, count: k * n)
        for i in 0 ..< k * n where i % 7 == 3 && i >= 2 * n { values[i] = Float(i % 5) - 2.5 }
        let tensor = Tensor(name: "w", dataType: .float, shape: [k, n], role: .matmulB, reductionAxis: 0,
                            storage: .dense(values: TensorBytes(float32: values)))
        for layout in LayoutKind.allCases {
            let op = try LinearOperator(try tensor.encoded(as: layout))
            for batch in [1, 5] {
                let x = Self.random(count: batch * k, seed: 9)
                let expected = Self.naive(values, shape: [k, n], axis: 0, x: x, batch: batch)
                let y = try op.apply(x, batch: batch)
                #expect(zip(y, expected).allSatisfy { abs(Double($0) - $1.value) <= 1e-5 * $1.magnitude + 1e-6 }, "\(layout), batch \(batch)")
            }
        }
    }

    @Test func weightsWithoutAReductionAxisAreRefused() throws {
        let tensor = Tensor(name: "bias", dataType: .float, shape: [4], storage: .dense(values: TensorBytes(float32: [1, 2, 3, 4])))
        #expect(throws: RuntimeError.self) { try LinearOperator(tensor) }
        let ints = Tensor(name: "ids", dataType: .int64, shape: [2, 2], role: .matmulB, reductionAxis: 0,
                          storage: .dense(values: TensorBytes(littleEndian: [Int64](repeating: 1, count: 4))))
        #expect(throws: RuntimeError.self) { try LinearOperator(ints) }
    }

    @Test func activationCountIsChecked() throws {
        let op = try LinearOperator(try Self.tensor(shape: [8, 3], axis: 0, values: .float32, seed: 1))
        #expect(throws: RuntimeError.self) { try op.apply([1, 2, 3], batch: 1) }
    }

    // MARK: - Helpers

    static func random(count: Int, seed: UInt64) -> [Float] {
        var state = seed &* 0x9E3779B97F4A7C15 | 1
        return (0 ..< count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(state >> 40) / Float(1 << 24) * 2 - 1
        }
    }

    /// y[b, r] over the 2:4 view of a dense tensor, in float64, with Σ|x·w| for the tolerance.
    static func naive(_ w: [Float], shape: [Int], axis: Int, x: [Float], batch: Int) -> [(value: Double, magnitude: Double)] {
        let view = try! TensorGeometry(shape: shape).sparse24(axis: axis)
        var out: [(Double, Double)] = []
        for b in 0 ..< batch {
            for r in 0 ..< view.rows {
                var s = 0.0, m = 0.0
                for k in 0 ..< view.reduction {
                    let p = Double(x[b * view.reduction + k]) * Double(w[view.logicalIndex(row: r, k: k)])
                    s += p
                    m += abs(p)
                }
                out.append((s, m))
            }
        }
        return out
    }

    /// A weight in which about half the elements are absent, in a pattern that fits 2:4 along
    /// `axis` (some groups keep 0 or 1), and whole view rows are absent.
    static func tensor(shape: [Int], axis: Int, values: Values, seed: UInt64) throws -> Tensor {
        let geometry = try TensorGeometry(shape: shape)
        let view = geometry.sparse24(axis: axis)
        var kept = [Bool](repeating: false, count: geometry.elementCount)
        let noise = random(count: geometry.elementCount, seed: seed)
        for r in 0 ..< view.rows where r % 5 != 2 {
            for k in 0 ..< view.reduction {
                let position = k % 4, group = k / 4
                let keep = (group + r) % 3 == 0 ? position == 1 : (position == (r + group) % 4 || position == (r + group + 2) % 4)
                kept[view.logicalIndex(row: r, k: k)] = keep && (group + r) % 7 != 4
            }
        }
        let real = (0 ..< geometry.elementCount).map { kept[$0] ? noise[$0] * 3 : 0 }
        func make(_ type: DataType, _ bytes: TensorBytes, _ q: Quantization<TensorBytes>? = nil) -> Tensor {
            Tensor(name: "w", dataType: type, shape: shape, role: .unknown, reductionAxis: axis,
                   storage: .dense(values: bytes), quantization: q)
        }
        let outputAxis = axis == 0 ? shape.count - 1 : 0
        switch values {
        case .float32: return make(.float, TensorBytes(float32: real))
        case .float16: return make(.float16, TensorBytes(littleEndian: real.map { Float16($0).bitPattern }))
        case .int8PerTensor: return try quantized(real, kept, shape, axis, .int8, .perTensor, asymmetric: false)
        case .int8PerOutput: return try quantized(real, kept, shape, axis, .int8, .perAxis(axis: outputAxis), asymmetric: false)
        case .int8AsymmetricPerOutput: return try quantized(real, kept, shape, axis, .int8, .perAxis(axis: outputAxis), asymmetric: true)
        case .int8PerDepth: return try quantized(real, kept, shape, axis, .int8, .perAxis(axis: axis), asymmetric: false)
        case .uint8GroupsOf3: return try quantized(real, kept, shape, axis, .uint8, .perGroup(axis: axis, blockSize: 3), asymmetric: true)
        case .int4GroupsOf8: return try quantized(real, kept, shape, axis, .int4, .perGroup(axis: axis, blockSize: 8), asymmetric: false)
        case .uint4GroupsAcrossOutputs:
            return try quantized(real, kept, shape, axis, .uint4, .perGroup(axis: outputAxis, blockSize: 2), asymmetric: true)
        }
    }

    /// Codes for `real` with one scale per element group; absent elements get the zero point.
    static func quantized(_ real: [Float], _ kept: [Bool], _ shape: [Int], _ axis: Int, _ codeType: DataType,
                          _ granularity: QuantizationGranularity, asymmetric: Bool) throws -> Tensor {
        let geometry = try TensorGeometry(shape: shape)
        let count = geometry.scaleCount(granularity)
        let indexer = ScaleIndexer(granularity, geometry: geometry)
        let (low, high): (Int32, Int32) = switch codeType {
        case .int8: (-128, 127)
        case .uint8: (0, 255)
        case .int4: (-8, 7)
        default: (0, 15)
        }
        let zeroPoints: [Int32] = (0 ..< count).map { asymmetric ? (low + high) / 2 + Int32($0 % 3) - 1 : 0 }
        let scales: [Float] = (0 ..< count).map { 0.01 + Float($0 % 5) * 0.007 }
        var codes = [Int32](repeating: 0, count: real.count)
        for i in real.indices {
            let s = indexer.index(i)
            codes[i] = kept[i] ? min(high, max(low, zeroPoints[s] + Int32((real[i] / scales[s]).rounded()))) : zeroPoints[s]
            if kept[i] && codes[i] == zeroPoints[s] { codes[i] = zeroPoints[s] + 1 }   // kept means non-zero
        }
        func pack(_ values: [Int32]) -> TensorBytes {
            if codeType.bitWidth == 8 { return TensorBytes(values.map { UInt8(truncatingIfNeeded: $0) }) }
            var bytes = [UInt8](repeating: 0, count: (values.count + 1) / 2)
            for (i, v) in values.enumerated() { bytes[i / 2] |= (UInt8(truncatingIfNeeded: v) & 0x0F) << ((i % 2) * 4) }
            return TensorBytes(bytes)
        }
        let q = Quantization(codeType: codeType, granularity: granularity, scales: TensorBytes(float32: scales),
                             zeroPoints: asymmetric ? pack(zeroPoints) : nil)
        return Tensor(name: "w", dataType: .float, shape: shape, reductionAxis: axis, storage: .dense(values: pack(codes)), quantization: q)
    }
}
