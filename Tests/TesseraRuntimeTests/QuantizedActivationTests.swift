import CTesseraKernels
import Testing
import Tessera
@testable import TesseraRuntime

/// `applyQuantizingActivations` (dense and 2:4 int8 weights x uint8 activations, integer sums) against an
/// oracle that quantizes the activations by ONNX DynamicQuantizeLinear's definition and
/// multiplies in float64, and against the float product within the documented bound.
@Suite struct QuantizedActivationTests {
    /// Groups per row: 19 (scalar only; odd rows start mid-byte), 37 and 65 (one and two
    /// 32-group vector steps plus a remainder), 129 with rows starting mid-byte, and 512.
    static let weights: [(shape: [Int], axis: Int)] = [([76, 5], 0), ([3, 148], 1), ([260, 9], 0), ([5, 516], 1), ([2048, 3], 0)]

    /// Dense weights also at 33 and 70 outputs (a partial 32-row block) and 11 rows of batch (a
    /// full and a partial 8-row tile).
    @Test(arguments: [LayoutKind.sparse24, .dense])
    func integerSumsMatchTheQuantizedOracle(layout: LayoutKind) throws {
        let extra: [(shape: [Int], axis: Int)] = layout == .dense ? [([33, 70], 0), ([70, 33], 1)] : []
        for (index, weight) in (Self.weights + extra).enumerated() {
            let tensor = try KernelTests.tensor(shape: weight.shape, axis: weight.axis, values: .int8PerOutput, seed: UInt64(index + 3))
            let op = try LinearOperator(try tensor.encoded(as: layout))
            try #require(op.runsQuantizedActivations)
            let dense = try tensor.densify()
            for batch in layout == .dense ? [1, 3, 11] : [1, 3] {
                var x = KernelTests.random(count: batch * op.depth, seed: UInt64(batch * 7 + index))
                if batch == 3 { x.replaceSubrange(op.depth ..< 2 * op.depth, with: repeatElement(0, count: op.depth)) }   // an all-zero row
                for threads in [1, 2] {
                    let y = try op.applyQuantizingActivations(x, batch: batch, threads: threads)
                    let exact = KernelTests.naive(dense, shape: weight.shape, axis: weight.axis, x: x, batch: batch)
                    for b in 0 ..< batch {
                        let row = Array(x[b * op.depth ..< (b + 1) * op.depth])
                        let (dequantized, scale) = Self.dynamicQuantizeLinear(row)
                        let expected = KernelTests.naive(dense, shape: weight.shape, axis: weight.axis, x: dequantized, batch: 1)
                        let weightSums = KernelTests.naive(dense.map { abs($0) }, shape: weight.shape, axis: weight.axis,
                                                           x: [Float](repeating: 1, count: op.depth), batch: 1)
                        for r in 0 ..< op.rows {
                            let got = Double(y[b * op.rows + r])
                            #expect(abs(got - expected[r].value) <= 1e-5 * expected[r].magnitude + 1e-6,
                                    "\(weight.shape), batch row \(b), output \(r): \(got) vs quantized \(expected[r].value)")
                            #expect(abs(got - exact[b * op.rows + r].value) <= Double(scale) * weightSums[r].value + 1e-6,
                                    "\(weight.shape), batch row \(b), output \(r): \(got) vs float \(exact[b * op.rows + r].value)")
                        }
                    }
                }
            }
        }
    }

    /// A 2:4 batch runs as a GEMM on packed codes, a single row through the 2:4 GEMV: each batch
    /// row comes out bit for bit as it does alone.
    @Test func sparseBatchRowsEqualSingleRows() throws {
        for (index, weight) in Self.weights.enumerated() {
            let tensor = try KernelTests.tensor(shape: weight.shape, axis: weight.axis, values: .int8PerOutput, seed: UInt64(index + 11))
            let op = try LinearOperator(try tensor.encoded(as: .sparse24))
            let batch = 9
            let x = KernelTests.random(count: batch * op.depth, seed: UInt64(index + 5))
            let together = try op.applyQuantizingActivations(x, batch: batch, threads: 2)
            for b in 0 ..< batch {
                let alone = try op.applyQuantizingActivations(Array(x[b * op.depth ..< (b + 1) * op.depth]), batch: 1)
                #expect(alone.map(\.bitPattern) == together[b * op.rows ..< (b + 1) * op.rows].map(\.bitPattern), "\(weight.shape) row \(b)")
            }
        }
    }

    /// A single row of a 2:4 weight: the 2:4 GEMV (machines without VBMI), the portable and the
    /// VBMI kept-code GEMM (one thread, and two splitting the outputs) give the same bits.
    @Test func sparseSingleRowIsTheSameOnEveryPath() throws {
        var paths: [(tessera_int8_sparse24_gemm_fn?, Int)] = [(tessera_int8_sparse24_gemm_portable, 1), (tessera_int8_sparse24_gemm_portable, 2)]
        if let vbmi = KernelDispatch.int8Sparse24GEMM(for: .avx512) { paths += [(vbmi, 1), (vbmi, 2)] }
        for (index, weight) in (Self.weights + [([200, 70], 0)]).enumerated() {
            let tensor = try KernelTests.tensor(shape: weight.shape, axis: weight.axis, values: .int8PerOutput, seed: UInt64(index + 17))
            let op = try LinearOperator(try tensor.encoded(as: .sparse24))
            let x = KernelTests.random(count: op.depth, seed: UInt64(index + 2))
            func run(_ sparse24: tessera_int8_sparse24_gemm_fn?, threads: Int) -> [UInt32] {
                var y = [Float](repeating: .nan, count: op.rows)
                x.withUnsafeBufferPointer { xp in
                    y.withUnsafeMutableBufferPointer {
                        op.applyQuantizingActivations(xp.baseAddress!, batch: 1, into: $0.baseAddress!, threads: threads, bias: nil, sparse24: sparse24)
                    }
                }
                return y.map(\.bitPattern)
            }
            let gemv = run(nil, threads: 1)
            for (k, (path, threads)) in paths.enumerated() { #expect(run(path, threads: threads) == gemv, "\(weight.shape) path \(k)") }
        }
    }

    @Test func otherWeightsAndBadActivationsAreRefused() throws {
        let shape = [8, 6], x = KernelTests.random(count: 8, seed: 5)
        for (values, layout) in [(KernelTests.Values.float32, LayoutKind.sparse24), (.int8PerOutput, .csr), (KernelTests.Values.float32, .dense),
                                 (.int8AsymmetricPerOutput, .sparse24), (.int8PerDepth, .sparse24), (.int8AsymmetricPerOutput, .dense),
                                 (.int8PerDepth, .dense)] {
            let op = try LinearOperator(try KernelTests.tensor(shape: shape, axis: 0, values: values, seed: 2).encoded(as: layout))
            #expect(!op.runsQuantizedActivations, "\(values) \(layout)")
            #expect(throws: RuntimeError.self, "\(values) \(layout)") { try op.applyQuantizingActivations(x, batch: 1) }
        }
        let op = try LinearOperator(try KernelTests.tensor(shape: shape, axis: 0, values: .int8PerOutput, seed: 2).encoded(as: .sparse24))
        for bad in [[Float](repeating: 1, count: 7), x.enumerated().map { $0.offset == 3 ? .nan : $0.element },
                    x.enumerated().map { $0.offset == 0 ? .infinity : $0.element }] {
            #expect { try op.applyQuantizingActivations(bad, batch: 1) } throws: { ($0 as? RuntimeError)?.code == .badActivations }
        }
    }

    /// ONNX DynamicQuantizeLinear (uint8) and back: `scale · (q − zeroPoint)` for each element.
    static func dynamicQuantizeLinear(_ x: [Float]) -> ([Float], Float) {
        let low = min(0, x.min()!), high = max(0, x.max()!)
        let scale = (high - low) / 255
        guard scale > 0 else { return ([Float](repeating: 0, count: x.count), 0) }
        let zeroPoint = min(max((-low / scale).rounded(.toNearestOrEven), 0), 255)
        return (x.map { scale * (min(max(($0 / scale).rounded(.toNearestOrEven) + zeroPoint, 0), 255) - zeroPoint) }, scale)
    }
}
