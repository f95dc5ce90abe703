import Tessera

/// Ops that rearrange elements without computing on them: depth/space shuffles, centre
/// crop-or-pad and sequence reversal. Each builds the flat source index of every output element
/// and hands it to `Value.picking`.
enum LayoutOps {
    static var table: [String: OpKernel] {
        var t: [String: OpKernel] = [:]
        t["DepthToSpace"] = { c in
            let x = try c.input(0), block = c.int("blocksize", 0)
            guard x.shape.count == 4, block >= 1, x.shape[1] % (block * block) == 0 else {
                throw RuntimeError(.badShape, "DepthToSpace needs [N, C, H, W] with C divisible by blocksize² (\(x.shape), \(block))")
            }
            let (n, c4, h, w) = (x.shape[0], x.shape[1] / (block * block), x.shape[2], x.shape[3])
            let dcr = c.string("mode", "DCR") == "DCR"
            let split = dcr ? [n, block, block, c4, h, w] : [n, c4, block, block, h, w]
            let moved = ShapeOps.transpose(x.reshaped(split), dcr ? [0, 3, 4, 1, 5, 2] : [0, 1, 4, 2, 5, 3])
            return [moved.reshaped([n, c4, h * block, w * block])]
        }
        t["SpaceToDepth"] = { c in
            let x = try c.input(0), block = c.int("blocksize", 0)
            guard x.shape.count == 4, block >= 1, x.shape[2] % block == 0, x.shape[3] % block == 0 else {
                throw RuntimeError(.badShape, "SpaceToDepth needs [N, C, H, W] with H and W divisible by blocksize (\(x.shape), \(block))")
            }
            let (n, ch, h, w) = (x.shape[0], x.shape[1], x.shape[2] / block, x.shape[3] / block)
            let perm = c.string("mode", "DCR") == "CRD" ? [0, 1, 3, 5, 2, 4] : [0, 3, 5, 1, 2, 4]
            let moved = ShapeOps.transpose(x.reshaped([n, ch, h, block, w, block]), perm)
            return [moved.reshaped([n, ch * block * block, h, w])]
        }
        t["CenterCropPad"] = { c in
            let x = try c.input(0)
            let rank = x.shape.count
            let sizes = try c.input(1).asInts.map(Int.init)
            let axes = try (c.ints("axes") ?? Array(0 ..< rank)).map { try normalizedAxis($0, rank: rank) }
            guard sizes.count == axes.count, sizes.allSatisfy({ $0 >= 0 }) else { throw RuntimeError(.badShape, "CenterCropPad's shape \(sizes) does not fit axes \(axes)") }
            var shape = x.shape, offset = [Int](repeating: 0, count: rank)   // output position = input position + offset
            for (axis, size) in zip(axes, sizes) {
                offset[axis] = size >= x.shape[axis] ? (size - x.shape[axis]) / 2 : -((x.shape[axis] - size) / 2)
                shape[axis] = size
            }
            return [try shifted(x, to: shape, offset: offset)]
        }
        t["ReverseSequence"] = { c in
            let x = try c.input(0), lengths = try c.input(1).asInts.map(Int.init)
            let batchAxis = c.int("batch_axis", 1), timeAxis = c.int("time_axis", 0)
            guard x.shape.count >= 2, Set([batchAxis, timeAxis]) == Set([0, 1]), lengths.count == x.shape[batchAxis],
                  lengths.allSatisfy({ $0 >= 0 && $0 <= x.shape[timeAxis] }) else {
                throw RuntimeError(.badShape, "ReverseSequence of \(x.shape) with lengths \(lengths) and axes \(batchAxis), \(timeAxis)")
            }
            let strides = Broadcast.strides(x.shape)
            let picks = (0 ..< x.count).map { i -> Int in
                let b = i / strides[batchAxis] % x.shape[batchAxis], t = i / strides[timeAxis] % x.shape[timeAxis]
                return t < lengths[b] ? i + (lengths[b] - 1 - 2 * t) * strides[timeAxis] : i
            }
            return [x.picking(picks, shape: x.shape)]
        }
        return t
    }

    /// `x` placed in a zero tensor of `shape` with its element at p going to p + offset; what
    /// falls outside is dropped.
    static func shifted(_ x: Value, to shape: [Int], offset: [Int]) throws -> Value {
        let count = try elementCount(shape)
        let inStrides = Broadcast.strides(x.shape), outStrides = Broadcast.strides(shape)
        var picks = [Int](repeating: -1, count: count)
        for o in 0 ..< count {
            var source = 0
            for d in shape.indices {
                let p = o / outStrides[d] % shape[d] - offset[d]
                if p < 0 || p >= x.shape[d] { source = -1; break }
                source += p * inStrides[d]
            }
            picks[o] = source
        }
        // Positions with no source read the zero appended after the last element.
        return x.reshaped([x.count]).appendingZero().picking(picks.map { $0 < 0 ? x.count : $0 }, shape: shape)
    }
}
