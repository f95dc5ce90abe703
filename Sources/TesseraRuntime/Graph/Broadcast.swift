/// numpy broadcasting: shapes are aligned on their last axis; a dim of 1 stretches.
enum Broadcast {
    static func shape(_ shapes: [[Int]]) throws -> [Int] {
        let rank = shapes.map(\.count).max() ?? 0
        var out = [Int](repeating: 1, count: rank)
        for s in shapes {
            for (k, d) in s.enumerated() {
                let axis = rank - s.count + k
                if out[axis] == 1 {
                    out[axis] = d
                } else if d != 1 && d != out[axis] {
                    throw RuntimeError(.badShape, "shapes \(shapes.map { "\($0)" }.joined(separator: " and ")) do not broadcast")
                }
            }
        }
        return out
    }

    /// Row-major strides of `shape`.
    static func strides(_ shape: [Int]) -> [Int] {
        var strides = [Int](repeating: 1, count: shape.count)
        var step = 1
        for axis in shape.indices.reversed() {
            strides[axis] = step
            step *= shape[axis]
        }
        return strides
    }

    /// For each flat index of `out`, the flat index into an operand of shape `s` broadcast to it.
    static func sourceIndices(of s: [Int], in out: [Int]) -> [Int] {
        let pad = out.count - s.count
        let sourceStrides = strides(s)
        // Stride along each output axis: 0 where the operand stretches.
        let step = out.indices.map { axis in axis < pad || s[axis - pad] == 1 ? 0 : sourceStrides[axis - pad] }
        return walk(out, strides: step, base: 0)
    }

    /// Flat source indices of a strided walk over `shape` (row-major), starting at `base`:
    /// broadcasting (zero strides), Transpose (permuted strides) and Slice (scaled strides).
    static func walk(_ shape: [Int], strides: [Int], base: Int) -> [Int] {
        let count = shape.reduce(1, *)
        var out = [Int](repeating: 0, count: count)
        guard count > 0 else { return out }
        var position = [Int](repeating: 0, count: shape.count)
        var offset = base
        for i in 0 ..< count {
            out[i] = offset
            var axis = shape.count - 1
            while axis >= 0 {
                position[axis] += 1
                offset += strides[axis]
                if position[axis] < shape[axis] { break }
                offset -= strides[axis] * shape[axis]
                position[axis] = 0
                axis -= 1
            }
        }
        return out
    }

    /// `f` on every pair of broadcast elements.
    static func apply<A, B, R>(_ a: [A], _ aShape: [Int], _ b: [B], _ bShape: [Int], _ f: (A, B) -> R) throws -> ([R], [Int]) {
        if aShape == bShape { return (zip(a, b).map(f), aShape) }
        let out = try shape([aShape, bShape])
        if b.count == 1, out == aShape { let y = b[0]; return (a.map { f($0, y) }, out) }
        if a.count == 1, out == bShape { let x = a[0]; return (b.map { f(x, $0) }, out) }
        if out == aShape, bShape.count <= out.count, Array(out.suffix(bShape.count)) == bShape {
            let n = b.count
            return (a.indices.map { f(a[$0], b[$0 % n]) }, out)
        }
        let ai = aShape == out ? Array(a.indices) : sourceIndices(of: aShape, in: out)
        let bi = bShape == out ? Array(b.indices) : sourceIndices(of: bShape, in: out)
        return ((0 ..< ai.count).map { f(a[ai[$0]], b[bi[$0]]) }, out)
    }
}
