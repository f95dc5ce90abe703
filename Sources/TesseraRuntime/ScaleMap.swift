import Tessera

/// Where the scale of view element (row r, depth k) lives: `rowBase[r] + (k / kBlock) * kStride`.
/// Every granularity the format allows is affine in the row and in the block of k, so kernels
/// never divide per element.
struct ScaleMap: Sendable {
    let rowBase: [Int]
    let kStride: Int
    let kBlock: Int
    let scales: [Float]
    /// Zero points as floats (exact: codes are at most 8 bits).
    let zeroPoints: [Float]

    /// Scales of an unquantized weight: never read.
    static let unquantized = ScaleMap(rowBase: [], kStride: 0, kBlock: 1, scales: [1], zeroPoints: [0])

    init(rowBase: [Int], kStride: Int, kBlock: Int, scales: [Float], zeroPoints: [Float]) {
        self.rowBase = rowBase
        self.kStride = kStride
        self.kBlock = kBlock
        self.scales = scales
        self.zeroPoints = zeroPoints
    }

    init(_ q: Quantization<TensorBytes>, geometry: TensorGeometry, view: Sparse24Geometry, axis: Int) throws {
        let count = geometry.scaleCount(q.granularity)
        scales = try ScalarDecoding.floats(q.scales, type: q.scaleType, count: count)
        if let zp = q.zeroPoints {
            zeroPoints = try ScalarDecoding.floats(zp, type: q.codeType, count: count)
        } else {
            zeroPoints = [Float](repeating: 0, count: count)
        }
        let indexer = ScaleIndexer(q.granularity, geometry: geometry)
        rowBase = (0 ..< view.rows).map { indexer.index(view.logicalIndex(row: $0, k: 0)) }
        if case .perGroup(let a, let block) = q.granularity, a == axis { kBlock = block } else { kBlock = 1 }
        kStride = view.reduction > kBlock && view.rows > 0
            ? indexer.index(view.logicalIndex(row: 0, k: kBlock)) - rowBase[0] : 0
    }

    /// True when every element of a row shares one scale.
    var isPerRow: Bool { kStride == 0 }

    @inline(__always) func index(row: Int, k: Int) -> Int { index(rowBase: rowBase[row], k: k) }

    /// `index(row:k:)` given the row's `rowBase` entry (for callers holding it through a pointer).
    @inline(__always) func index(rowBase base: Int, k: Int) -> Int { kStride == 0 ? base : base &+ (k / kBlock) &* kStride }
}

extension ScaleMap {
    /// Calls `body(start, end, scaleIndex)` for the runs of `k0 ..< k1` in view row `r` that
    /// share one scale (one run when the scale is per row; scale index 0 when unquantized).
    @inline(__always)
    func forEachRun(row r: Int, from k0: Int, to k1: Int, _ body: (Int, Int, Int) -> Void) {
        if rowBase.isEmpty { body(k0, k1, 0); return }
        if kStride == 0 { body(k0, k1, rowBase[r]); return }
        var k = k0
        while k < k1 {
            let block = k / kBlock, end = min(k1, (block + 1) * kBlock)
            body(k, end, rowBase[r] &+ block &* kStride)
            k = end
        }
    }
}
