/// The one column sweep behind SparseGPT and GPTQ (Frantar & Alistarh 2023; Frantar et al. 2023):
/// each output column `w` of a `k × n` weight (rows along the reduction axis) solves
/// `min (ŵ − w)ᵀ H (ŵ − w)` under a 2:4 mask, a sparsity, a fixed mask and/or a quantization grid,
/// row by row. Removing or rounding row `k` moves the later rows by the optimal (OBS) correction,
/// read from the upper Cholesky factor `U` of `H⁻¹`, lazily in blocks of rows.
public struct OBSSweep: Sendable {
    public enum Mask: Sendable, Equatable {
        case none
        /// Two kept in every group of four rows (per output).
        case twoFour
        /// The given fraction of each block's weights zeroed, per output.
        case sparsity(Double)
        /// Only the rows marked true (row-major `k × n`) may be non-zero.
        case fixed([Bool])
    }

    /// The grid the kept weights land on: per output channel, or per group of rows.
    public struct Grid: Sendable, Equatable {
        public var codeRange: (Int32, Int32)
        public var groupSize: Int?
        public var asymmetric: Bool

        public init(_ spec: QuantizationSpec) {
            codeRange = spec.codeRange
            groupSize = spec.groupSize
            asymmetric = spec.asymmetric
        }

        public static func == (a: Grid, b: Grid) -> Bool {
            a.codeRange == b.codeRange && a.groupSize == b.groupSize && a.asymmetric == b.asymmetric
        }
    }

    public struct Result: Sendable {
        /// The new weight, `k × n`; on the grid when there is one.
        public var weights: [Double]
        /// Scale and zero point of each element (row-major `k × n`), when quantized.
        public var scales: [Float]?
        public var zeroPoints: [Int32]?
        /// `‖X(Ŵ − W)‖² / ‖XW‖²` over the calibration rows.
        public var relativeError: Double

        public init(weights: [Double], scales: [Float]? = nil, zeroPoints: [Int32]? = nil, relativeError: Double) {
            self.weights = weights; self.scales = scales; self.zeroPoints = zeroPoints; self.relativeError = relativeError
        }
    }

    public var mask: Mask = .none
    public var grid: Grid?
    /// Fraction of mean(diag H) added to the diagonal.
    public var damp = 0.01
    public var blockSize = 128

    public init(mask: Mask = .none, grid: Grid? = nil, damp: Double = 0.01, blockSize: Int = 128) {
        self.mask = mask; self.grid = grid; self.damp = damp; self.blockSize = blockSize
    }

    struct Failure: Error, CustomStringConvertible { var description: String }

    /// `weights` (`k × n`, row-major) compressed against the statistics `h` (`k × k`, symmetric).
    /// `errorAgainst`: the weights `relativeError` is measured from (default: `source`), so a
    /// second sweep over refitted weights reports the error from the original ones.
    public func run(weights source: [Double], k: Int, n: Int, h: [Double], errorAgainst reference: [Double]? = nil) throws -> Result {
        precondition(source.count == k * n && h.count == k * k)
        if case .twoFour = mask { precondition(k % 4 == 0, "2:4 needs k divisible by 4") }
        var w = source
        var hd = h
        // Dead inputs (never non-zero) carry no information: their weights go, H gets a unit pivot.
        var dead = [Bool](repeating: false, count: k)
        for i in 0 ..< k where hd[i * k + i] == 0 {
            dead[i] = true
            hd[i * k + i] = 1
            for c in 0 ..< n { w[i * n + c] = 0 }
        }
        let meanDiagonal = (0 ..< k).reduce(0.0) { $0 + hd[$1 * k + $1] } / Double(k)
        for i in 0 ..< k { hd[i * k + i] += damp * meanDiagonal }
        let u: [Double]
        do {
            let inverse = SymmetricSolver.inverse(lowerFactor: try SymmetricSolver.cholesky(hd, n: k), n: k)
            u = try SymmetricSolver.cholesky(inverse, n: k)   // lower L of H⁻¹; U = Lᵀ, read transposed
        } catch let error as SymmetricSolver.NotPositiveDefinite {
            throw Failure(description: "the input statistics are not positive definite at row \(error.pivot), even damped")
        }
        @inline(__always) func upper(_ row: Int, _ col: Int) -> Double { u[col * k + row] }

        var scales = grid.map { _ in [Float](repeating: 0, count: k * n) }
        var zeros = grid.map { _ in [Int32](repeating: 0, count: k * n) }
        var rowScale = [Float](repeating: 0, count: n), rowZero = [Int32](repeating: 0, count: n)
        func setGrid(rows: Range<Int>) {
            guard let grid else { return }
            let (qmin, qmax) = grid.codeRange
            for c in 0 ..< n {
                var low: Float = 0, high: Float = 0
                for r in rows { let x = Float(w[r * n + c]); low = min(low, x); high = max(high, x) }
                if grid.asymmetric {
                    rowScale[c] = (high - low) / Float(qmax - qmin)
                    rowZero[c] = rowScale[c] == 0 ? 0 : Int32(max(Float(qmin), min(Float(qmax), (Float(qmin) - low / rowScale[c]).rounded(.toNearestOrEven))))
                } else {
                    rowScale[c] = max(abs(low), abs(high)) / Float(qmax)
                    rowZero[c] = 0
                }
            }
        }
        if grid != nil, grid!.groupSize == nil { setGrid(rows: 0 ..< k) }   // per channel: from the source

        var keep = [Bool](repeating: true, count: k * n)
        if case .fixed(let given) = mask { keep = given }
        for i in 0 ..< k where dead[i] { for c in 0 ..< n { keep[i * n + c] = false } }

        var errors = [Double](repeating: 0, count: blockSize * n)
        var start = 0
        while start < k {
            let end = min(start + blockSize, k)
            if case .sparsity(let fraction) = mask {
                // Per output, zero the lowest-saliency fraction of this block's rows.
                for c in 0 ..< n {
                    let order = (start ..< end).sorted { a, b in
                        let (sa, sb) = (saliency(w[a * n + c], upper(a, a)), saliency(w[b * n + c], upper(b, b)))
                        return sa != sb ? sa < sb : a < b
                    }
                    for r in order.prefix(Int(fraction * Double(end - start))) { keep[r * n + c] = false }
                }
            }
            for row in start ..< end {
                if case .twoFour = mask, row % 4 == 0 {
                    for c in 0 ..< n {
                        let ranked = (row ..< row + 4).sorted { a, b in
                            let (sa, sb) = (saliency(w[a * n + c], upper(a, a)), saliency(w[b * n + c], upper(b, b)))
                            return sa != sb ? sa > sb : a < b
                        }
                        for r in ranked.dropFirst(2) { keep[r * n + c] = false }
                    }
                }
                if let grid, let g = grid.groupSize, row % g == 0 { setGrid(rows: row ..< min(row + g, k)) }
                let pivot = upper(row, row)
                for c in 0 ..< n {
                    let x = w[row * n + c]
                    var q = 0.0
                    if keep[row * n + c] {
                        if let grid {
                            let code = Quantizer.code(Float(x), scale: rowScale[c], zeroPoint: rowZero[c], qmin: grid.codeRange.0, qmax: grid.codeRange.1)
                            q = Double(rowScale[c] * Float(code - rowZero[c]))
                            scales![row * n + c] = rowScale[c]
                            zeros![row * n + c] = rowZero[c]
                        } else {
                            q = x
                        }
                    } else if grid != nil {
                        scales![row * n + c] = rowScale[c]
                        zeros![row * n + c] = rowZero[c]
                        // A removed weight must decode to exactly 0: its code is the zero point.
                    }
                    w[row * n + c] = q
                    errors[(row - start) * n + c] = (x - q) / pivot
                }
                // Inside the block: the later rows absorb this row's error at once.
                errors.withUnsafeBufferPointer { E in
                    w.withUnsafeMutableBufferPointer { W in
                        let e = E.baseAddress! + (row - start) * n
                        for later in row + 1 ..< end {
                            let f = upper(row, later)
                            if f == 0 { continue }
                            let target = W.baseAddress! + later * n
                            for c in 0 ..< n { target[c] -= f * e[c] }
                        }
                    }
                }
            }
            // Past the block: one lazy update with the whole block's errors.
            errors.withUnsafeBufferPointer { E in
                w.withUnsafeMutableBufferPointer { W in
                    for later in end ..< k {
                        let target = W.baseAddress! + later * n
                        for row in start ..< end {
                            let f = upper(row, later)
                            if f == 0 { continue }
                            let e = E.baseAddress! + (row - start) * n
                            for c in 0 ..< n { target[c] -= f * e[c] }
                        }
                    }
                }
            }
            start = end
        }
        return Result(weights: w, scales: scales, zeroPoints: zeros,
                      relativeError: Self.relativeError(source: reference ?? source, compressed: w, k: k, n: n, h: h))
    }

    /// Each output's kept weights (the non-zeros of `weights`) refitted to the exact least-squares
    /// optimum on that mask: `ŵ_S = H_SS⁻¹ (H w)_S` for the source column `w`, with `H` damped as
    /// in the sweep. The sweep's own update is greedy (a row once fixed never moves); this is the
    /// optimum it approximates, at O(n·|S|³) (Frantar & Alistarh 2023 use the sweep alone).
    public func refit(_ weights: [Double], source: [Double], k: Int, n: Int, h: [Double]) throws -> [Double] {
        var hd = h
        let meanDiagonal = (0 ..< k).reduce(0.0) { $0 + h[$1 * k + $1] } / Double(k)
        for i in 0 ..< k { hd[i * k + i] += damp * meanDiagonal + (h[i * k + i] == 0 ? 1 : 0) }
        var out = weights
        for c in 0 ..< n {
            let kept = (0 ..< k).filter { weights[$0 * n + c] != 0 }
            guard !kept.isEmpty else { continue }
            let m = kept.count
            var a = [Double](repeating: 0, count: m * m), rhs = [Double](repeating: 0, count: m)
            for (p, i) in kept.enumerated() {
                for (q, j) in kept.enumerated() { a[p * m + q] = hd[i * k + j] }
                rhs[p] = (0 ..< k).reduce(0.0) { $0 + hd[i * k + $1] * source[$1 * n + c] }
            }
            let l: [Double]
            do { l = try SymmetricSolver.cholesky(a, n: m) } catch { throw Failure(description: "the refit's statistics are not positive definite") }
            let x = SymmetricSolver.solve(lowerFactor: l, rhs, n: m)
            for (p, i) in kept.enumerated() { out[i * n + c] = x[p] }
        }
        return out
    }

    @inline(__always) private func saliency(_ x: Double, _ pivot: Double) -> Double { x * x / (pivot * pivot) }

    /// `tr(ΔᵀHΔ) / tr(WᵀHW)`, Δ = Ŵ − W: the calibration rows' output error, relative.
    public static func relativeError(source: [Double], compressed: [Double], k: Int, n: Int, h: [Double]) -> Double {
        func energy(_ m: [Double]) -> Double {
            var hm = [Double](repeating: 0, count: k * n)
            hm.withUnsafeMutableBufferPointer { HM in
                m.withUnsafeBufferPointer { M in
                    for i in 0 ..< k {
                        let target = HM.baseAddress! + i * n
                        for j in 0 ..< k {
                            let f = h[i * k + j]
                            if f == 0 { continue }
                            let source = M.baseAddress! + j * n
                            for c in 0 ..< n { target[c] += f * source[c] }
                        }
                    }
                }
            }
            return zip(m, hm).reduce(0) { $0 + $1.0 * $1.1 }
        }
        let total = energy(source)
        return total > 0 ? energy(zip(compressed, source).map { $0 - $1 }) / total : 0
    }
}
