import Testing
@testable import TesseraConvert

/// The OBS sweep against a direct float64 oracle of the same greedy procedure: after row k is
/// fixed (removed, rounded or kept), the rows after it take their exact least-squares values
/// given every fixed row, `ŵ_{>k} = w_{>k} − H_{>k,>k}⁻¹ H_{>k,≤k} (ŵ_{≤k} − w_{≤k})`, solved
/// by Gaussian elimination (no Cholesky factors, no lazy blocks).
@Suite struct OBSSweepTests {
    struct Random {
        var state: UInt64
        mutating func next() -> Double {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Double(state >> 11) / Double(1 << 53) - 0.5
        }
    }

    /// Correlated calibration rows (so that compensation matters), their H, and a weight.
    static func problem(k: Int, n: Int, rows: Int = 200, seed: UInt64 = 7) -> (h: [Double], w: [Double]) {
        var random = Random(state: seed)
        let mixing = (0 ..< k * k).map { _ in random.next() }
        var stats = InputStatistics(k: k)
        var x: [Float] = []
        for _ in 0 ..< rows {
            let z = (0 ..< k).map { _ in random.next() }
            x += (0 ..< k).map { i in Float((0 ..< k).reduce(0.0) { $0 + mixing[i * k + $1] * z[$1] } + 0.3 * z[i]) }
        }
        x.withUnsafeBufferPointer { stats.add($0) }
        return (stats.symmetricGram, (0 ..< k * n).map { _ in random.next() })
    }

    static func solve(_ a: [[Double]], _ b: [Double]) -> [Double] {
        var a = a, b = b
        let n = b.count
        for col in 0 ..< n {
            let pivot = (col ..< n).max { abs(a[$0][col]) < abs(a[$1][col]) }!
            a.swapAt(col, pivot); b.swapAt(col, pivot)
            for row in col + 1 ..< n {
                let f = a[row][col] / a[col][col]
                for j in col ..< n { a[row][j] -= f * a[col][j] }
                b[row] -= f * b[col]
            }
        }
        var x = [Double](repeating: 0, count: n)
        for row in (0 ..< n).reversed() {
            x[row] = (b[row] - (row + 1 ..< n).reduce(0.0) { $0 + a[row][$1] * x[$1] }) / a[row][row]
        }
        return x
    }

    /// The oracle, one output column at a time; `fix(k, current)` is row k's fixed value.
    static func oracle(w: [Double], k: Int, n: Int, h: [Double], damp: Double, fix: (Int, Int, Double) -> Double) -> [Double] {
        var hd = h
        let mean = (0 ..< k).reduce(0.0) { $0 + h[$1 * k + $1] } / Double(k)
        for i in 0 ..< k { hd[i * k + i] += damp * mean }
        var out = w
        for c in 0 ..< n {
            var current = (0 ..< k).map { w[$0 * n + c] }
            for row in 0 ..< k {
                current[row] = fix(row, c, current[row])
                let later = Array(row + 1 ..< k)
                guard !later.isEmpty else { break }
                let a = later.map { i in later.map { j in hd[i * k + j] } }
                let rhs = later.map { i in (0 ... row).reduce(0.0) { $0 + hd[i * k + $1] * (current[$1] - w[$1 * n + c]) } }
                let shift = solve(a, rhs)
                for (t, i) in later.enumerated() { current[i] = w[i * n + c] - shift[t] }
            }
            for row in 0 ..< k { out[row * n + c] = current[row] }
        }
        return out
    }

    @Test func twoFourMatchesTheOracleOnItsMask() throws {
        let (k, n) = (16, 3)
        let (h, w) = Self.problem(k: k, n: n)
        let result = try OBSSweep(mask: .twoFour, blockSize: 8).run(weights: w, k: k, n: n, h: h)
        for c in 0 ..< n {
            for g in 0 ..< k / 4 { #expect((0 ..< 4).filter { result.weights[(g * 4 + $0) * n + c] == 0 }.count == 2) }
        }
        let expected = Self.oracle(w: w, k: k, n: n, h: h, damp: 0.01) { row, c, x in result.weights[row * n + c] == 0 ? 0 : x }
        for (a, b) in zip(result.weights, expected) { #expect(abs(a - b) < 1e-9) }
    }

    @Test func quantizationMatchesTheOracle() throws {
        let (k, n) = (12, 4)
        let (h, w) = Self.problem(k: k, n: n, seed: 3)
        let spec = QuantizationSpec(bits: .int4)
        let result = try OBSSweep(grid: .init(spec), blockSize: 5).run(weights: w, k: k, n: n, h: h)
        // Per channel, symmetric: the scale comes from the source column's largest magnitude.
        let scales = (0 ..< n).map { c in Float((0 ..< k).map { abs(w[$0 * n + c]) }.max()!) / 7 }
        let expected = Self.oracle(w: w, k: k, n: n, h: h, damp: 0.01) { _, c, x in
            Double(scales[c] * Float(Quantizer.code(Float(x), scale: scales[c], zeroPoint: 0, qmin: -8, qmax: 7)))
        }
        for (a, b) in zip(result.weights, expected) { #expect(abs(a - b) < 1e-6) }
        #expect(result.scales! == (0 ..< k * n).map { scales[$0 % n] })
    }

    @Test func beatsMagnitudePruningOnItsOwnObjective() throws {
        let (k, n) = (32, 8)
        let (h, w) = Self.problem(k: k, n: n, seed: 11)
        let sweep = try OBSSweep(mask: .twoFour).run(weights: w, k: k, n: n, h: h)
        var magnitude = w
        for c in 0 ..< n {
            for g in 0 ..< k / 4 {
                let rows = (0 ..< 4).map { g * 4 + $0 }.sorted { abs(w[$0 * n + c]) > abs(w[$1 * n + c]) }
                for r in rows.dropFirst(2) { magnitude[r * n + c] = 0 }
            }
        }
        let magnitudeError = OBSSweep.relativeError(source: w, compressed: magnitude, k: k, n: n, h: h)
        #expect(sweep.relativeError < 0.5 * magnitudeError)
    }

    @Test func deadInputsAreRemovedAndFixedMasksKept() throws {
        let (k, n) = (8, 2)
        let (source, w) = Self.problem(k: k, n: n, seed: 5)
        var h = source
        for j in 0 ..< k { h[2 * k + j] = 0; h[j * k + 2] = 0 }   // input 2 is always zero
        var keep = [Bool](repeating: true, count: k * n)
        keep[5 * n + 1] = false
        let result = try OBSSweep(mask: .fixed(keep), grid: .init(QuantizationSpec(bits: .int8))).run(weights: w, k: k, n: n, h: h)
        #expect(result.weights[2 * n] == 0 && result.weights[2 * n + 1] == 0)
        #expect(result.weights[5 * n + 1] == 0)
    }

    @Test func refitIsTheLeastSquaresOptimumOnTheMask() throws {
        let (k, n) = (12, 2)
        let (h, w) = Self.problem(k: k, n: n, seed: 9)
        let sweep = OBSSweep(mask: .twoFour)
        let pruned = try sweep.run(weights: w, k: k, n: n, h: h).weights
        let refitted = try sweep.refit(pruned, source: w, k: k, n: n, h: h)
        var hd = h
        let mean = (0 ..< k).reduce(0.0) { $0 + h[$1 * k + $1] } / Double(k)
        for i in 0 ..< k { hd[i * k + i] += 0.01 * mean }
        for c in 0 ..< n {
            let kept = (0 ..< k).filter { pruned[$0 * n + c] != 0 }
            let a = kept.map { i in kept.map { j in hd[i * k + j] } }
            let b = kept.map { i in (0 ..< k).reduce(0.0) { $0 + hd[i * k + $1] * w[$1 * n + c] } }
            let expected = Self.solve(a, b)
            for (t, i) in kept.enumerated() { #expect(abs(refitted[i * n + c] - expected[t]) < 1e-9) }
            for i in 0 ..< k where !kept.contains(i) { #expect(refitted[i * n + c] == 0) }
        }
        #expect(OBSSweep.relativeError(source: w, compressed: refitted, k: k, n: n, h: h)
                <= OBSSweep.relativeError(source: w, compressed: pruned, k: k, n: n, h: h))
    }

    @Test func choleskyInverse() throws {
        let k = 20
        let (h, _) = Self.problem(k: k, n: 1)
        let inverse = SymmetricSolver.inverse(lowerFactor: try SymmetricSolver.cholesky(h, n: k), n: k)
        for i in 0 ..< k {
            for j in 0 ..< k {
                let product = (0 ..< k).reduce(0.0) { $0 + h[i * k + $1] * inverse[$1 * k + j] }
                #expect(abs(product - (i == j ? 1 : 0)) < 1e-8)
            }
        }
    }
}
