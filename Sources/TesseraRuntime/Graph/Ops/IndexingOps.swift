import Tessera

/// Ops that pick, place or order elements by index: gathers, scatters, one-hot, masks, sorting
/// and running sums. Each computes flat source (or destination) positions, then moves elements
/// of any type with `Value.picking` or `Value.scattering`.
enum IndexingOps {
    static var table: [String: OpKernel] {
        var t: [String: OpKernel] = [:]
        t["GatherElements"] = { c in
            let data = try c.input(0), indices = try c.input(1)
            let axis = try normalizedAxis(c.int("axis", 0), rank: data.shape.count)
            let positions = try elementPositions(data.shape, indices, axis: axis)
            return [data.picking(positions, shape: indices.shape)]
        }
        t["ScatterElements"] = { c in
            let data = try c.input(0), indices = try c.input(1), updates = try c.input(2)
            guard indices.shape == updates.shape else { throw RuntimeError(.badShape, "indices \(indices.shape) and updates \(updates.shape) differ in shape") }
            let axis = try normalizedAxis(c.int("axis", 0), rank: data.shape.count)
            return [try data.scattering(updates, at: elementPositions(data.shape, indices, axis: axis), reduction: c.string("reduction", "none"))]
        }
        t["Scatter"] = t["ScatterElements"]   // deprecated in opset 11 under this name
        t["GatherND"] = { c in
            let data = try c.input(0), indices = try c.input(1)
            let (positions, shape) = try ndPositions(data.shape, indices, batchDims: c.int("batch_dims", 0))
            return [data.picking(positions, shape: shape)]
        }
        t["ScatterND"] = { c in
            let data = try c.input(0), indices = try c.input(1), updates = try c.input(2)
            let (positions, shape) = try ndPositions(data.shape, indices, batchDims: 0)
            guard shape == updates.shape else { throw RuntimeError(.badShape, "ScatterND's updates are \(updates.shape), the indices select \(shape)") }
            return [try data.scattering(updates, at: positions, reduction: c.string("reduction", "none"))]
        }
        t["TensorScatter"] = { c in [try tensorScatter(c)] }
        t["OneHot"] = { c in
            let indices = try c.input(0), values = try c.input(2)
            guard let depth = try c.input(1).asFloats.first.map(Int.init), depth > 0, values.count == 2 else {
                throw RuntimeError(.badGraph, "OneHot needs a positive depth and two values (off, on)")
            }
            let rank = indices.shape.count + 1
            let axis = try normalizedAxis(c.int("axis", -1), rank: rank)
            var shape = indices.shape
            shape.insert(depth, at: axis)
            let inner = indices.shape.dropFirst(axis).reduce(1, *)
            var picks = [Int](repeating: 0, count: try elementCount(shape))
            for (i, raw) in indices.asInts.enumerated() {
                let k = raw < 0 ? Int(raw) + depth : Int(raw)
                guard k >= 0, k < depth else { continue }   // out of range: all "off"
                picks[(i / inner * depth + k) * inner + i % inner] = 1
            }
            return [values.picking(picks, shape: shape)]
        }
        t["Trilu"] = { c in
            let x = try c.input(0)
            guard x.shape.count >= 2 else { throw RuntimeError(.badShape, "Trilu needs rank 2 or more, got \(x.shape)") }
            let k = Int(clamping: c.optionalInput(1)?.asInts.first ?? 0), upper = c.int("upper", 1) != 0
            let rows = x.shape[x.shape.count - 2], columns = x.shape[x.shape.count - 1]
            let keep = (0 ..< x.count).map { i -> Bool in
                let row = i / columns % max(rows, 1), column = i % columns
                return upper ? column - row >= k : column - row <= k
            }
            return [x.masked(keep)]
        }
        t["EyeLike"] = { c in
            let x = try c.input(0)
            guard x.shape.count == 2 else { throw RuntimeError(.badShape, "EyeLike needs a 2-D input, got \(x.shape)") }
            let type = try c.optionalInt("dtype").map { try dataType($0) } ?? x.type
            let k = c.int("k", 0), columns = x.shape[1]
            let eye = (0 ..< x.count).map { i -> Int64 in i % columns - i / columns == k ? 1 : 0 }
            return [try Value(eye, shape: x.shape).cast(to: type)]
        }
        t["Compress"] = { c in
            var x = try c.input(0)
            let condition = try c.input(1).asInts.map { $0 != 0 }
            guard case .int(let a)? = c.attribute("axis") else {
                x = x.reshaped([x.count])
                let kept = x.count > 0 ? (0 ..< min(condition.count, x.count)).filter { condition[$0] } : []
                return [x.picking(kept, shape: [kept.count])]
            }
            let axis = try normalizedAxis(Int(a), rank: x.shape.count)
            let (outer, n, inner) = ReductionOps.split(x.shape, axis)
            let selected = (0 ..< min(n, condition.count)).filter { condition[$0] }
            var shape = x.shape
            shape[axis] = selected.count
            var picks: [Int] = []
            picks.reserveCapacity(try elementCount(shape))
            for o in 0 ..< outer { for k in selected { for i in 0 ..< inner { picks.append((o * n + k) * inner + i) } } }
            return [x.picking(picks, shape: shape)]
        }
        t["NonZero"] = { c in
            let x = try c.input(0)
            let v = x.asDoubles   // exact: a nonzero of any type stays nonzero
            let nonZero = v.indices.filter { v[$0] != 0 }
            let strides = Broadcast.strides(x.shape)
            var coordinates: [Int64] = []
            for axis in x.shape.indices { coordinates += nonZero.map { Int64($0 / strides[axis] % x.shape[axis]) } }
            return [Value(coordinates, shape: [x.shape.count, nonZero.count])]
        }
        t["TopK"] = { c in try topK(c) }
        t["Unique"] = { c in try unique(c) }
        t["CumSum"] = { c in [try cumulative(c, identity: 0, +, &+)] }
        t["CumProd"] = { c in [try cumulative(c, identity: 1, *, &*)] }
        return t
    }

    /// Flat positions in `shape` for GatherElements/ScatterElements: each index replaces its own
    /// coordinate along `axis`.
    static func elementPositions(_ shape: [Int], _ indices: Value, axis: Int) throws -> [Int] {
        guard indices.shape.count == shape.count else {
            throw RuntimeError(.badShape, "indices \(indices.shape) and data \(shape) differ in rank")
        }
        let strides = Broadcast.strides(shape), indexStrides = Broadcast.strides(indices.shape)
        let n = shape[axis]
        return try indices.asInts.enumerated().map { i, raw in
            let k = raw < 0 ? Int(raw) + n : Int(raw)
            guard k >= 0, k < n else { throw RuntimeError(.badShape, "index \(raw) is out of range for axis \(axis) of size \(n)") }
            var position = 0
            for d in shape.indices {
                let coordinate = d == axis ? k : i / indexStrides[d] % indices.shape[d]
                guard coordinate < shape[d] else { throw RuntimeError(.badShape, "indices \(indices.shape) exceed data \(shape) on axis \(d)") }
                position += coordinate * strides[d]
            }
            return position
        }
    }

    /// GatherND/ScatterND: the flat positions the index tuples select (each tuple selects a
    /// whole slice), and the shape of what they select.
    static func ndPositions(_ shape: [Int], _ indices: Value, batchDims: Int) throws -> ([Int], [Int]) {
        guard let depth = indices.shape.last, batchDims >= 0, batchDims < indices.shape.count,
              batchDims + depth <= shape.count, Array(shape.prefix(batchDims)) == Array(indices.shape.prefix(batchDims)) else {
            throw RuntimeError(.badShape, "indices \(indices.shape) with batch_dims \(batchDims) do not fit data \(shape)")
        }
        let batch = shape.prefix(batchDims).reduce(1, *)
        let sliceShape = Array(shape.dropFirst(batchDims + depth)), slice = sliceShape.reduce(1, *)
        let perBatch = shape.dropFirst(batchDims).reduce(1, *)
        let tuples = indices.shape.dropLast().reduce(1, *), tuplesPerBatch = tuples / max(batch, 1)
        let strides = Broadcast.strides(Array(shape.dropFirst(batchDims)))
        let raw = indices.asInts
        let outShape = Array(indices.shape.dropLast()) + sliceShape
        var positions: [Int] = []
        positions.reserveCapacity(try elementCount(outShape))
        for t in 0 ..< tuples {
            var base = (t / max(tuplesPerBatch, 1)) * perBatch
            for d in 0 ..< depth {
                let n = shape[batchDims + d], v = raw[t * depth + d]
                let k = v < 0 ? Int(v) + n : Int(v)
                guard k >= 0, k < n else { throw RuntimeError(.badShape, "index \(v) is out of range for axis \(batchDims + d) of size \(n)") }
                base += k * strides[d]
            }
            for i in 0 ..< slice { positions.append(base + i) }
        }
        return (positions, outShape)
    }

    /// The distinct elements (or slices along `axis`), sorted or in order of first appearance,
    /// with the first index of each, every element's position among them, and their counts.
    static func unique(_ c: NodeContext) throws -> [Value] {
        var x = try c.input(0)
        let axis: Int
        if case .int(let a)? = c.attribute("axis") { axis = try normalizedAxis(Int(a), rank: x.shape.count) } else { x = x.reshaped([x.count]); axis = 0 }
        let (outer, n, inner) = ReductionOps.split(x.shape, axis)
        // Compared as Double: exact for float64, float32 and integers up to 2^53.
        let values = x.asDoubles
        // Slice k along the axis, as a key to compare (elementwise, lexicographically).
        let slices = (0 ..< n).map { k in (0 ..< outer).flatMap { o in (0 ..< inner).map { i in values[(o * n + k) * inner + i] } } }
        var firsts: [Int] = [], groupOf = [Int](repeating: 0, count: n)
        var seen: [[Double]: Int] = [:]
        for k in 0 ..< n {
            if let g = seen[slices[k]] { groupOf[k] = g; continue }
            seen[slices[k]] = firsts.count
            groupOf[k] = firsts.count
            firsts.append(k)
        }
        var order = Array(firsts.indices)
        if c.int("sorted", 1) != 0 {
            order.sort { a, b in slices[firsts[a]].lexicographicallyPrecedes(slices[firsts[b]]) }
        }
        var rank = [Int](repeating: 0, count: firsts.count)
        for (r, g) in order.enumerated() { rank[g] = r }
        let picks = order.map { firsts[$0] }
        var shape = x.shape
        shape[axis] = picks.count
        var positions: [Int] = []
        for o in 0 ..< outer { for k in picks { for i in 0 ..< inner { positions.append((o * n + k) * inner + i) } } }
        let counts = order.map { g in Int64(groupOf.filter { $0 == g }.count) }
        return [x.picking(positions, shape: shape), Value(picks.map(Int64.init), shape: [picks.count]),
                Value(groupOf.map { Int64(rank[$0]) }, shape: [n]), Value(counts, shape: [counts.count])]
    }

    static func topK(_ c: NodeContext) throws -> [Value] {
        let x = try c.input(0)
        let axis = try normalizedAxis(c.int("axis", -1), rank: x.shape.count)
        let (outer, n, inner) = ReductionOps.split(x.shape, axis)
        guard let k = try c.input(1).asInts.first.map(Int.init), k >= 0, k <= n else {
            throw RuntimeError(.badShape, "TopK's k must be in 0...\(n)")
        }
        let v = x.asDoubles, largest = c.int("largest", 1) != 0   // exact for float64 and float32
        var shape = x.shape
        shape[axis] = k
        var picks: [Int] = [], indices: [Int64] = []
        picks.reserveCapacity(try elementCount(shape))
        indices.reserveCapacity(picks.capacity)
        var order = [Int](repeating: 0, count: k * outer * inner)
        for o in 0 ..< outer {
            for i in 0 ..< inner {
                let at = { (j: Int) in (o * n + j) * inner + i }
                // Ties keep the lower index first, as the spec asks; NaN sorts as the largest.
                let sorted = (0 ..< n).sorted { a, b in
                    let p = v[at(a)], q = v[at(b)]
                    if p == q || (p.isNaN && q.isNaN) { return a < b }
                    let greater = p.isNaN || (!q.isNaN && p > q)
                    return largest ? greater : !greater
                }
                for (r, j) in sorted.prefix(k).enumerated() { order[(o * k + r) * inner + i] = j }
            }
        }
        for (position, j) in order.enumerated() {
            let o = position / (k * inner), i = position % inner
            picks.append((o * n + j) * inner + i)
            indices.append(Int64(j))
        }
        return [x.picking(picks, shape: shape), Value(indices, shape: shape)]
    }

    static func cumulative(_ c: NodeContext, identity: Int, _ f: (Double, Double) -> Double, _ g: (Int64, Int64) -> Int64) throws -> Value {
        let x = try c.input(0)
        guard let rawAxis = try c.input(1).asInts.first else { throw RuntimeError(.badGraph, "the axis input is empty") }
        let axis = try normalizedAxis(Int(rawAxis), rank: x.shape.count)
        let exclusive = c.int("exclusive", 0) != 0, reverse = c.int("reverse", 0) != 0
        let (outer, n, inner) = ReductionOps.split(x.shape, axis)
        func run<T>(_ v: [T], _ identity: T, _ op: (T, T) -> T) -> [T] {
            var out = v
            for o in 0 ..< outer {
                for i in 0 ..< inner {
                    var acc = identity
                    for step in 0 ..< n {
                        let p = (o * n + (reverse ? n - 1 - step : step)) * inner + i
                        if exclusive { out[p] = acc; acc = op(acc, v[p]) } else { acc = op(acc, v[p]); out[p] = acc }
                    }
                }
            }
            return out
        }
        switch x.elements {
        case .int(let v): return Value(run(v, Int64(identity), g).map { Value.wrap($0, to: x.type) }, shape: x.shape, type: x.type)
        case .double(let v): return Value(run(v, Double(identity), f), shape: x.shape)
        default: return Value(run(x.asFloats, Float(identity)) { Float(f(Double($0), Double($1))) }, shape: x.shape, type: x.type)
        }
    }

    /// TensorScatter (a KV-cache write): `update` is written into `past_cache` along `axis`
    /// from each batch row's write index (zero without `write_indices`), wrapping in "circular" mode.
    static func tensorScatter(_ c: NodeContext) throws -> Value {
        let past = try c.input(0), update = try c.input(1)
        let rank = past.shape.count
        let axis = try normalizedAxis(c.int("axis", -2), rank: rank)
        let mode = c.string("mode", "linear")
        guard mode == "linear" || mode == "circular" else { throw RuntimeError(.unsupportedAttribute, "TensorScatter mode '\(mode)'") }
        guard axis > 0, update.shape.count == rank, (0 ..< rank).allSatisfy({ $0 == axis || update.shape[$0] == past.shape[$0] }),
              update.shape[axis] <= past.shape[axis] else {
            throw RuntimeError(.badShape, "update \(update.shape) does not fit cache \(past.shape) along axis \(axis)")
        }
        let writes = c.optionalInput(2)?.asInts ?? [Int64](repeating: 0, count: past.shape[0])
        guard writes.count == past.shape[0] else { throw RuntimeError(.badShape, "write_indices has \(writes.count) entries for batch \(past.shape[0])") }
        let length = past.shape[axis], updateStrides = Broadcast.strides(update.shape), cacheStrides = Broadcast.strides(past.shape)
        let positions = try (0 ..< update.count).map { i -> Int in
            var position = 0
            for a in 0 ..< rank {
                var k = i / updateStrides[a] % update.shape[a]
                if a == axis {
                    k += Int(clamping: writes[i / updateStrides[0]])
                    if mode == "circular" { k %= length }
                    guard k >= 0, k < length else { throw RuntimeError(.badShape, "write index \(k) is outside the cache's \(length) positions") }
                }
                position += k * cacheStrides[a]
            }
            return position
        }
        return try past.scattering(update, at: positions, reduction: "none")
    }
}
