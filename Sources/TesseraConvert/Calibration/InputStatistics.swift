/// What calibration learns about one GEMM input: `H = XᵀX` over every row the layer saw (float64,
/// `k × k`), the row count and the per-column sum (for the mean). Weights reading the same input
/// (Q, K and V) share one.
public struct InputStatistics: Sendable {
    public let k: Int
    public private(set) var gram: [Double]
    public private(set) var rows = 0
    public private(set) var columnSums: [Double]

    public init(k: Int) {
        self.k = k
        gram = [Double](repeating: 0, count: k * k)
        columnSums = [Double](repeating: 0, count: k)
    }

    /// Rows per block: H's rows stay in cache across a block's rows.
    static let blockRows = 32

    /// Adds the rows of `x` (row-major, `count / k` rows of `k`).
    public mutating func add(_ x: UnsafeBufferPointer<Float>) {
        precondition(x.count % k == 0, "rows of \(k) columns")
        let n = k, rowCount = x.count / n
        var block = [Double](repeating: 0, count: Self.blockRows * n)
        gram.withUnsafeMutableBufferPointer { H in
            block.withUnsafeMutableBufferPointer { B in
                var start = 0
                while start < rowCount {
                    let r = min(Self.blockRows, rowCount - start)
                    for t in 0 ..< r * n { B[t] = Double(x[start * n + t]) }
                    for t in 0 ..< r * n { columnSums[t % n] += B[t] }
                    // Upper triangle: H[i, i...] += Σ_rows x_i · x[i...].
                    for i in 0 ..< n {
                        let target = H.baseAddress! + i * n
                        for row in 0 ..< r {
                            let xs = B.baseAddress! + row * n
                            let f = xs[i]
                            if f == 0 { continue }
                            for j in i ..< n { target[j] += f * xs[j] }
                        }
                    }
                    start += r
                }
            }
        }
        rows += rowCount
    }

    /// H with both triangles filled.
    public var symmetricGram: [Double] {
        var h = gram
        for i in 0 ..< k { for j in 0 ..< i { h[i * k + j] = h[j * k + i] } }
        return h
    }

    public var mean: [Double] { columnSums.map { rows > 0 ? $0 / Double(rows) : 0 } }
}
