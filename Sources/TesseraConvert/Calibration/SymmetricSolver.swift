/// Dense float64 linear algebra for the calibration sweep: Cholesky factors, solves and the
/// inverse of a symmetric positive definite matrix, row-major `n × n`. Loops are axpy-shaped (contiguous
/// inner loops the compiler vectorizes); K = 1536 factors in well under a second.
enum SymmetricSolver {
    struct NotPositiveDefinite: Error { var pivot: Int }

    /// The lower Cholesky factor L of `a` (`a = L·Lᵀ`), upper triangle zero.
    static func cholesky(_ a: [Double], n: Int) throws -> [Double] {
        var l = [Double](repeating: 0, count: n * n)
        try l.withUnsafeMutableBufferPointer { L in
            try a.withUnsafeBufferPointer { A in
                for j in 0 ..< n {
                    var d = A[j * n + j]
                    for p in 0 ..< j { d -= L[j * n + p] * L[j * n + p] }
                    guard d > 0, d.isFinite else { throw NotPositiveDefinite(pivot: j) }
                    let root = d.squareRoot()
                    L[j * n + j] = root
                    for i in j + 1 ..< n {
                        var s = A[i * n + j]
                        for p in 0 ..< j { s -= L[i * n + p] * L[j * n + p] }
                        L[i * n + j] = s / root
                    }
                }
            }
        }
        return l
    }

    /// `x` with `a·x = b`, from the lower Cholesky factor of `a`: `L·y = b`, then `Lᵀ·x = y`.
    static func solve(lowerFactor l: [Double], _ b: [Double], n: Int) -> [Double] {
        var y = b
        for p in 0 ..< n { for q in 0 ..< p { y[p] -= l[p * n + q] * y[q] }; y[p] /= l[p * n + p] }
        for p in (0 ..< n).reversed() { for q in p + 1 ..< n { y[p] -= l[q * n + p] * y[q] }; y[p] /= l[p * n + p] }
        return y
    }

    /// `a⁻¹` from the lower Cholesky factor of `a`: `a⁻¹ = L⁻ᵀ·L⁻¹`.
    static func inverse(lowerFactor l: [Double], n: Int) -> [Double] {
        var m = [Double](repeating: 0, count: n * n)   // L⁻¹, lower triangular
        var inv = [Double](repeating: 0, count: n * n)
        m.withUnsafeMutableBufferPointer { M in
            l.withUnsafeBufferPointer { L in
                for i in 0 ..< n {
                    // row i of L⁻¹ = (eᵢ − Σ_{p<i} L[i,p]·row p of L⁻¹) / L[i,i]
                    let row = M.baseAddress! + i * n
                    for p in 0 ..< i {
                        let f = L[i * n + p]
                        if f == 0 { continue }
                        let source = M.baseAddress! + p * n
                        for j in 0 ... p { row[j] -= f * source[j] }
                    }
                    row[i] += 1
                    let d = 1 / L[i * n + i]
                    for j in 0 ... i { row[j] *= d }
                }
            }
            inv.withUnsafeMutableBufferPointer { V in
                // a⁻¹ = Mᵀ·M: Σ_k over rows k of M, rank-1 update of the leading (k+1)² block.
                for k in 0 ..< n {
                    let row = M.baseAddress! + k * n
                    for i in 0 ... k {
                        let f = row[i]
                        if f == 0 { continue }
                        let target = V.baseAddress! + i * n
                        for j in 0 ... k { target[j] += f * row[j] }
                    }
                }
            }
        }
        return inv
    }
}
