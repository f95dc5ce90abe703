/// Shape arithmetic shared by validation, encoding and densify. Every product is overflow-
/// checked here, once, so later code can use wrapping arithmetic in its loops.
public struct TensorGeometry: Sendable, Equatable {
    public let shape: [Int]
    public let elementCount: Int

    public init(shape: [Int]) throws {
        guard shape.count <= Limits.maxRank else {
            throw TessError(.badShape, "rank \(shape.count) exceeds the limit of \(Limits.maxRank)")
        }
        var count = 1
        for (axis, dim) in shape.enumerated() {
            guard dim >= 0 else { throw TessError(.badShape, "dim \(axis) is negative (\(dim))") }
            let (product, overflow) = count.multipliedReportingOverflow(by: dim)
            guard !overflow, product <= Limits.maxElementCount else {
                throw TessError(.badShape, "shape \(shape) has more than \(Limits.maxElementCount) elements")
            }
            count = product
        }
        self.shape = shape
        self.elementCount = count
    }

    /// Product of dims in `range` (never overflows: a sub-product of a checked product,
    /// except when another dim is 0, which is why it saturates).
    func product(_ range: Range<Int>) -> Int {
        var p = 1
        for d in shape[range] {
            let (r, o) = p.multipliedReportingOverflow(by: d)
            p = o ? Int.max : r
        }
        return p
    }

    /// CSR's 2-D view: a scalar is 1x1, a vector is 1xN, otherwise dims[0] x (product of the rest).
    public var csrRows: Int { shape.count < 2 ? 1 : shape[0] }
    public var csrColumns: Int { shape.isEmpty ? 1 : (shape.count == 1 ? shape[0] : product(1 ..< shape.count)) }

    /// 2:4 view for reduction axis `axis`: the tensor with `axis` moved last. Groups of four
    /// consecutive elements of that view never straddle a row because `shape[axis] % 4 == 0`.
    public func sparse24(axis: Int) -> Sparse24Geometry {
        Sparse24Geometry(outer: product(0 ..< axis), reduction: shape[axis],
                         inner: product(axis + 1 ..< shape.count))
    }

    /// Number of scales (and zero points) for a quantization granularity.
    public func scaleCount(_ granularity: QuantizationGranularity) -> Int {
        switch granularity {
        case .perTensor: return 1
        case .perAxis(let axis): return shape[axis]
        case .perGroup(let axis, let block):
            let blocks = (shape[axis] + block - 1) / block
            return product(0 ..< axis) * blocks * product(axis + 1 ..< shape.count)
        }
    }

    /// Shape of the scale tensor (ONNX's shape for per-axis and blocked scales).
    public func scaleShape(_ granularity: QuantizationGranularity) -> [Int] {
        switch granularity {
        case .perTensor: return []
        case .perAxis(let axis): return [shape[axis]]
        case .perGroup(let axis, let block):
            var s = shape
            s[axis] = (shape[axis] + block - 1) / block
            return s
        }
    }
}

/// The 2:4 view of a tensor: `outer x reduction x inner` in logical row-major order, read with
/// the reduction axis fastest. Group `g` covers logical elements along the reduction axis.
public struct Sparse24Geometry: Sendable, Equatable {
    public let outer: Int
    public let reduction: Int
    public let inner: Int

    /// Rows of the view (every index except the reduction axis).
    public var rows: Int { outer &* inner }
    public var groupsPerRow: Int { reduction / 4 }
    public var groupCount: Int { rows &* groupsPerRow }
    public var valueCount: Int { groupCount &* 2 }
    public var metadataBytes: Int { (groupCount + 1) / 2 }

    /// Logical (row-major) flat index of element `k` along the reduction axis in view row `row`.
    @inline(__always)
    public func logicalIndex(row: Int, k: Int) -> Int {
        let o = row / inner, i = row &- o &* inner
        return (o &* reduction &+ k) &* inner &+ i
    }
}
