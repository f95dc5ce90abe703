import Tessera

/// Ops that move, pick or create elements without arithmetic, and the int64 shape arithmetic
/// exporters emit around them (Shape → Gather → Concat → Reshape).
enum ShapeOps {
    static var table: [String: OpKernel] {
        var t: [String: OpKernel] = [:]
        t["Shape"] = { c in
            let x = try c.input(0)
            let rank = x.shape.count
            func clamp(_ v: Int) -> Int { min(max(v < 0 ? v + rank : v, 0), rank) }
            let start = clamp(c.int("start", 0)), end = clamp(c.int("end", rank))
            let dims = start < end ? x.shape[start ..< end].map(Int64.init) : []
            return [Value(dims, shape: [dims.count])]
        }
        t["Size"] = { c in [Value([Int64(try c.input(0).count)], shape: [])] }
        t["Cast"] = { c in
            guard let type = DataType(number: c.int("to", 0)) else { throw RuntimeError(.unsupportedType, "Cast to type \(c.int("to", 0))") }
            return [try c.input(0).cast(to: type, saturate: c.int("saturate", 1) != 0)]
        }
        t["CastLike"] = { c in [try c.input(0).cast(to: c.input(1).type, saturate: c.int("saturate", 1) != 0)] }
        t["BitCast"] = { c in
            // The same bytes read as another type of the same, a smaller or a larger width.
            let x = try c.input(0), to = try dataType(c.int("to", 0))
            let from = x.type.bitWidth, width = to.bitWidth
            guard from % 8 == 0, width % 8 == 0, Value.isSupported(to) else { throw RuntimeError(.unsupportedType, "BitCast from \(x.type) to \(to)") }
            var shape = x.shape
            if width < from { shape.append(from / width) }
            if width > from {
                guard shape.last == width / from else { throw RuntimeError(.badShape, "BitCast to \(to) needs a last dim of \(width / from), got \(x.shape)") }
                shape.removeLast()
            }
            let bytes = NumpyFiles.elementBytes(x)
            return [try Value(Tensor(name: c.node.outputs.first ?? "", dataType: to, shape: shape, storage: .dense(values: TensorBytes(bytes))))]
        }
        t["Constant"] = { c in [try constant(c)] }
        t["ConstantOfShape"] = { c in
            let shape = try dims(c.input(0))
            var fill = Value([Float(0)], shape: [1])
            if case .tensor(let tensor)? = c.attribute("value") { fill = try Value(tensor) }
            guard fill.count == 1 else { throw RuntimeError(.badShape, "ConstantOfShape's value must hold one element, it holds \(fill.count)") }
            return [fill.picking([Int](repeating: 0, count: try elementCount(shape)), shape: shape)]
        }
        t["Reshape"] = { c in
            let x = try c.input(0)
            let requested = c.opset < 5 ? (c.ints("shape") ?? []) : try dims(c.input(1), allowNegative: true)
            return [x.reshaped(try reshape(x.shape, to: requested, allowZero: c.int("allowzero", 0) != 0))]
        }
        t["Flatten"] = { c in
            let x = try c.input(0)
            let axis = try splitAxis(c.int("axis", 1), rank: x.shape.count)
            let outer = x.shape.prefix(axis).reduce(1, *)
            return [x.reshaped([outer, x.shape.dropFirst(axis).reduce(1, *)])]
        }
        t["Squeeze"] = { c in
            let x = try c.input(0)
            let axes = try (c.intList(input: 1, attribute: "axes") ?? x.shape.indices.filter { x.shape[$0] == 1 })
                .map { try normalizedAxis($0, rank: x.shape.count) }
            for a in axes where x.shape[a] != 1 { throw RuntimeError(.badShape, "cannot squeeze axis \(a) of shape \(x.shape)") }
            return [x.reshaped(x.shape.indices.filter { !axes.contains($0) }.map { x.shape[$0] })]
        }
        t["Unsqueeze"] = { c in
            let x = try c.input(0)
            guard let raw = c.intList(input: 1, attribute: "axes") else { throw RuntimeError(.badGraph, "Unsqueeze needs axes") }
            let rank = x.shape.count + raw.count
            let axes = Set(try raw.map { try normalizedAxis($0, rank: rank) })
            var source = x.shape.makeIterator()
            return [x.reshaped((0 ..< rank).map { axes.contains($0) ? 1 : source.next() ?? 1 })]
        }
        t["Transpose"] = { c in
            let x = try c.input(0)
            let perm = c.ints("perm") ?? Array(x.shape.indices.reversed())
            guard perm.sorted() == Array(x.shape.indices) else { throw RuntimeError(.badShape, "perm \(perm) does not fit rank \(x.shape.count)") }
            return [transpose(x, perm, threads: c.threads)]
        }
        t["Concat"] = { c in
            let parts = try c.givenInputs()
            guard let first = parts.first else { throw RuntimeError(.badGraph, "Concat needs inputs") }
            return [try concatenate(parts, axis: try normalizedAxis(c.int("axis", 0), rank: first.shape.count))]
        }
        t["Split"] = { c in
            let x = try c.input(0)
            let axis = try normalizedAxis(c.int("axis", 0), rank: x.shape.count)
            let n = c.node.outputs.count
            var sizes = c.intList(input: 1, attribute: "split") ?? []
            if sizes.isEmpty {
                let chunk = (x.shape[axis] + n - 1) / n
                sizes = (0 ..< n).map { max(0, min(chunk, x.shape[axis] - $0 * chunk)) }
            }
            guard sizes.count == n, sizes.reduce(0, +) == x.shape[axis] else {
                throw RuntimeError(.badShape, "split sizes \(sizes) do not cover axis \(axis) of \(x.shape) in \(n) outputs")
            }
            var start = 0
            return sizes.map { size in
                defer { start += size }
                return slice(x, starts: [start], ends: [start + size], axes: [axis], steps: [1])
            }
        }
        t["Slice"] = { c in
            let x = try c.input(0)
            let starts: [Int], ends: [Int]
            if c.opset < 10 {
                starts = c.ints("starts") ?? []
                ends = c.ints("ends") ?? []
            } else {
                starts = try c.input(1).asInts.map(clampedInt)
                ends = try c.input(2).asInts.map(clampedInt)
            }
            let axes = try (c.intList(input: 3, attribute: "axes") ?? Array(starts.indices)).map { try normalizedAxis($0, rank: x.shape.count) }
            let steps = c.optionalInput(4)?.asInts.map(clampedInt) ?? [Int](repeating: 1, count: starts.count)
            guard starts.count == ends.count, axes.count == starts.count, steps.count == starts.count, !steps.contains(0) else {
                throw RuntimeError(.badShape, "Slice starts, ends, axes and steps disagree")
            }
            return [slice(x, starts: starts, ends: ends, axes: axes, steps: steps)]
        }
        t["Gather"] = { c in
            let data = try c.input(0), indices = try c.input(1)
            let axis = try normalizedAxis(c.int("axis", 0), rank: data.shape.count)
            let n = data.shape[axis]
            let outer = data.shape.prefix(axis).reduce(1, *), inner = data.shape.dropFirst(axis + 1).reduce(1, *)
            let picks = try indices.asInts.map { i -> Int in
                let k = Int(i < 0 ? i + Int64(n) : i)
                guard k >= 0, k < n else { throw RuntimeError(.badShape, "Gather index \(i) is out of range for axis \(axis) of size \(n)") }
                return k
            }
            let shape = Array(data.shape.prefix(axis)) + indices.shape + Array(data.shape.dropFirst(axis + 1))
            _ = try elementCount(shape)
            let starts = (0 ..< outer).flatMap { o in picks.map { (o * n + $0) * inner } }
            return [data.copyingRuns(from: starts, length: inner, shape: shape)]
        }
        t["ai.onnx.ml:ArrayFeatureExtractor"] = { c in
            let data = try c.input(0), indices = try c.input(1).asInts.map { Int($0) }
            let n = data.shape.last ?? 1
            for i in indices where i < 0 || i >= n { throw RuntimeError(.badShape, "feature index \(i) is out of range for \(n) features") }
            let outer = data.count / max(n, 1)
            let flat = (0 ..< outer).flatMap { o in indices.map { o * n + $0 } }
            let shape = data.shape.count <= 1 ? [1, indices.count] : Array(data.shape.dropLast()) + [indices.count]
            return [data.picking(flat, shape: shape)]
        }
        t["Expand"] = { c in
            let x = try c.input(0)
            let shape = try Broadcast.shape([x.shape, try dims(c.input(1))])
            _ = try elementCount(shape)
            // A walk with stride 0 along the stretched axes: no index per element.
            let inStrides = Broadcast.strides(x.shape), offset = shape.count - x.shape.count
            let strides = shape.indices.map { i in i < offset || x.shape[i - offset] == 1 ? 0 : inStrides[i - offset] }
            return [x.walking(shape, strides: strides, base: 0)]
        }
        t["Tile"] = { c in
            let x = try c.input(0), repeats = try dims(c.input(1))
            guard repeats.count == x.shape.count else { throw RuntimeError(.badShape, "Tile repeats \(repeats) do not fit rank \(x.shape.count)") }
            let shape = try zip(x.shape, repeats).map { d, r in
                let (n, overflow) = d.multipliedReportingOverflow(by: r)
                guard !overflow else { throw RuntimeError(.tooLarge, "Tile of \(x.shape) by \(repeats) overflows") }
                return n
            }
            let count = try elementCount(shape)
            let outStrides = Broadcast.strides(shape), inStrides = Broadcast.strides(x.shape)
            let flat = (0 ..< count).map { i in
                x.shape.indices.reduce(0) { sum, a in sum + (i / outStrides[a] % shape[a]) % x.shape[a] * inStrides[a] }
            }
            return [x.picking(flat, shape: shape)]
        }
        t["Range"] = { c in
            let start = try c.input(0), limit = try c.input(1), delta = try c.input(2)
            if case .int = start.elements {
                let s = start.asInts[0], l = limit.asInts[0], d = delta.asInts[0]
                guard d != 0 else { throw RuntimeError(.badShape, "Range delta is 0") }
                let n = try rangeCount(Double(l) - Double(s), Double(d))
                return [Value((0 ..< n).map { s &+ Int64($0) &* d }, shape: [n], type: start.type)]
            }
            if start.type == .double {
                let s = start.asDoubles[0], l = limit.asDoubles[0], d = delta.asDoubles[0]
                guard d != 0 else { throw RuntimeError(.badShape, "Range delta is 0") }
                let n = try rangeCount(l - s, d)
                return [Value((0 ..< n).map { s + Double($0) * d }, shape: [n])]
            }
            let s = start.asFloats[0], l = limit.asFloats[0], d = delta.asFloats[0]
            guard d != 0 else { throw RuntimeError(.badShape, "Range delta is 0") }
            let n = try rangeCount(Double(l) - Double(s), Double(d))
            return [Value((0 ..< n).map { s + Float($0) * d }, shape: [n], type: start.type)]
        }
        t["Pad"] = { c in [try pad(c)] }
        return t
    }

    /// `parts` joined along `axis`; every other dim must agree.
    static func concatenate(_ parts: [Value], axis: Int) throws -> Value {
        guard let first = parts.first else { throw RuntimeError(.badGraph, "nothing to concatenate") }
        for p in parts where p.shape.count != first.shape.count || p.shape.indices.contains(where: { $0 != axis && p.shape[$0] != first.shape[$0] }) {
            throw RuntimeError(.badShape, "cannot concatenate \(p.shape) with \(first.shape) on axis \(axis)")
        }
        let outer = first.shape.prefix(axis).reduce(1, *)
        var shape = first.shape
        shape[axis] = parts.map { $0.shape[axis] }.reduce(0, +)
        // Each part contributes one block per outer index.
        let blocks = parts.map { $0.shape.dropFirst(axis).reduce(1, *) }
        func interleave<T>(_ arrays: [[T]]) -> [T] {
            var out: [T] = []
            out.reserveCapacity(shape.reduce(1, *))
            for o in 0 ..< outer {
                for (p, a) in arrays.enumerated() { out.append(contentsOf: a[o * blocks[p] ..< (o + 1) * blocks[p]]) }
            }
            return out
        }
        switch first.elements {
        case .float: return Value(interleave(parts.map(\.asFloats)), shape: shape, type: first.type)
        case .double: return Value(interleave(parts.map(\.asDoubles)), shape: shape)
        case .int: return Value(interleave(parts.map(\.asInts)), shape: shape, type: first.type)
        case .bool: return Value(interleave(parts.map { $0.asFloats.map { $0 != 0 } }), shape: shape)
        }
    }

    /// Values of one shape stacked along a new `axis`.
    static func stack(_ parts: [Value], axis: Int) throws -> Value {
        guard let first = parts.first else { throw RuntimeError(.badGraph, "nothing to stack") }
        let axis = try normalizedAxis(axis, rank: first.shape.count + 1)
        return try concatenate(parts.map { $0.reshaped(Array($0.shape.prefix(axis)) + [1] + Array($0.shape.dropFirst(axis))) }, axis: axis)
    }

    /// Range's element count, max(ceil(span / delta), 0), refused before it is allocated.
    static func rangeCount(_ span: Double, _ delta: Double) throws -> Int {
        let n = (span / delta).rounded(.up)
        guard n.isFinite, n < 0x1p62 else { throw RuntimeError(.tooLarge, "Range of \(span) in steps of \(delta) has too many elements") }
        let count = max(0, Int(n))
        _ = try elementCount([count])
        return count
    }

    /// A shape tensor's entries; negative ones are refused unless `allowNegative` (Reshape's -1).
    static func dims(_ v: Value, allowNegative: Bool = false) throws -> [Int] {
        let d = v.asInts.map { Int($0) }
        if !allowNegative, let bad = d.first(where: { $0 < 0 }) { throw RuntimeError(.badShape, "dimension \(bad) is negative") }
        return d
    }

    static func clampedInt(_ v: Int64) -> Int { Int(max(min(v, Int64(Int32.max)), Int64(Int32.min))) }

    static func constant(_ c: NodeContext) throws -> Value {
        switch (c.attribute("value"), c.attribute("value_float"), c.attribute("value_floats"), c.attribute("value_int"), c.attribute("value_ints")) {
        case (.tensor(let t)?, _, _, _, _): return try Value(t)
        case (_, .float(let f)?, _, _, _): return Value([f], shape: [])
        case (_, _, .floats(let f)?, _, _): return Value(f, shape: [f.count])
        case (_, _, _, .int(let i)?, _): return Value([i], shape: [])
        case (_, _, _, _, .ints(let i)?): return Value(i, shape: [i.count])
        default: throw RuntimeError(.badGraph, "Constant has no value the executor reads (value, value_float(s), value_int(s))")
        }
    }

    static func reshape(_ shape: [Int], to requested: [Int], allowZero: Bool) throws -> [Int] {
        let count = shape.reduce(1, *)
        var out = requested.enumerated().map { k, d in d == 0 && !allowZero && k < shape.count ? shape[k] : d }
        // Products of requested dims saturate: anything past the element count cannot match it.
        func product(_ dims: [Int]) -> Int {
            dims.reduce(1) { p, d in let (r, o) = p.multipliedReportingOverflow(by: d); return o ? Int.max : r }
        }
        if let unknown = out.firstIndex(of: -1) {
            let known = product(out.enumerated().filter { $0.offset != unknown }.map(\.element))
            guard known > 0, count % known == 0 else { throw RuntimeError(.badShape, "cannot reshape \(shape) to \(requested)") }
            out[unknown] = count / known
        }
        guard out.allSatisfy({ $0 >= 0 }), product(out) == count else {
            throw RuntimeError(.badShape, "cannot reshape \(shape) (\(count) elements) to \(requested)")
        }
        return out
    }

    static func transpose(_ x: Value, _ perm: [Int], threads: Int = 1) -> Value {
        let shape = perm.map { x.shape[$0] }
        // Two adjacent runs of trailing axes swapped (NCHW <-> NHWC, attention's heads), once
        // length-1 axes are set aside: float32 moves as a batch of 2-D transposes in 16 x 16
        // blocks, not element by element.
        let kept = x.shape.indices.filter { x.shape[$0] != 1 }
        let squeezed = perm.filter { x.shape[$0] != 1 }.map { kept.firstIndex(of: $0)! }, inner = kept.map { x.shape[$0] }
        if case .float(let v) = x.elements, let p = squeezed.indices.first(where: { squeezed[$0] != $0 }), let q = squeezed[p...].first,
           squeezed == Array(0 ..< p) + Array(q ..< squeezed.count) + Array(p ..< q), !v.isEmpty {
            let batch = inner[..<p].reduce(1, *), rows = inner[p ..< q].reduce(1, *), columns = inner[q...].reduce(1, *)
            var out = x
            out.shape = shape
            out.elements = .float([Float](unsafeUninitializedCapacity: v.count) { y, initialized in
                v.withUnsafeBufferPointer { v in
                    // Among threads when there are enough elements: whole matrices, or bands
                    // of 16 rows of a single one. Each element moves as it would alone.
                    let wanted = Threads.worthwhile(threads, work: v.count)
                    if wanted > 1, batch == 1 {
                        Threads.split(rows, threads: wanted, granularity: 16) { band in
                            transposeMatrix(v.baseAddress! + band.lowerBound * columns, rows: band.count, columns: columns, ld: columns,
                                            into: y.baseAddress! + band.lowerBound, ld: rows)
                        }
                        return
                    }
                    Threads.split(batch, threads: wanted) { range in
                        for b in range {
                            transposeMatrix(v.baseAddress! + b * rows * columns, rows: rows, columns: columns, ld: columns,
                                            into: y.baseAddress! + b * rows * columns, ld: rows)
                        }
                    }
                }
                initialized = v.count
            })
            return out
        }
        let inStrides = Broadcast.strides(x.shape)
        let strides = perm.map { inStrides[$0] }
        return x.walking(shape, strides: strides, base: 0)
    }

    /// numpy-style slicing: starts and ends clamped per axis, negative steps walk backwards.
    static func slice(_ x: Value, starts: [Int], ends: [Int], axes: [Int], steps: [Int]) -> Value {
        var shape = x.shape
        let inStrides = Broadcast.strides(x.shape)
        var strides = inStrides
        var base = 0
        for (k, axis) in axes.enumerated() {
            let n = x.shape[axis], step = steps[k]
            func clamp(_ v: Int, _ low: Int, _ high: Int) -> Int { min(max(v < 0 ? v + n : v, low), high) }
            let start = step > 0 ? clamp(starts[k], 0, n) : clamp(starts[k], -1, n - 1)
            let end = step > 0 ? clamp(ends[k], 0, n) : clamp(ends[k], -1, n - 1)
            let length = step > 0 ? max(0, (end - start + step - 1) / step) : max(0, (start - end - step - 1) / -step)
            shape[axis] = length
            strides[axis] = inStrides[axis] * step
            if length > 0 { base += start * inStrides[axis] }
        }
        return x.walking(shape, strides: strides, base: base)
    }

    static func pad(_ c: NodeContext) throws -> Value {
        let x = try c.input(0)
        let rank = x.shape.count
        var pads = (c.opset < 11 ? c.ints("pads") ?? c.ints("paddings") : try c.input(1).asInts.map { Int($0) }) ?? []
        if c.opset >= 18, let axesValue = c.optionalInput(3) {
            var full = [Int](repeating: 0, count: 2 * rank)
            let axes = try axesValue.asInts.map { try normalizedAxis(Int($0), rank: rank) }
            for (k, a) in axes.enumerated() { full[a] = pads[k]; full[a + rank] = pads[k + axes.count] }
            pads = full
        }
        guard pads.count == 2 * rank else { throw RuntimeError(.badShape, "pads \(pads) do not fit rank \(rank)") }
        let mode = c.string("mode", "constant")
        guard x.count > 0 || mode == "constant" else { throw RuntimeError(.badShape, "cannot pad the empty \(x.shape) in mode '\(mode)'") }
        let fill: Float = c.opset < 11 ? c.float("value", 0) : (c.optionalInput(2)?.asFloats.first ?? 0)
        let shape = try (0 ..< rank).map { try checkedSum(checkedSum(x.shape[$0], pads[$0]), pads[$0 + rank]) }
        guard shape.allSatisfy({ $0 >= 0 }) else { throw RuntimeError(.badShape, "pads \(pads) remove more than shape \(x.shape) holds") }
        _ = try elementCount(shape)
        guard ["constant", "edge", "reflect", "wrap"].contains(mode) else { throw RuntimeError(.unsupportedAttribute, "Pad mode '\(mode)'") }
        guard rank > 0 else { return x }
        // Per axis, the source offset of each output coordinate (-1: the constant fill).
        let inStrides = Broadcast.strides(x.shape)
        let maps: [[Int]] = (0 ..< rank).map { a in
            let n = x.shape[a]
            return (0 ..< shape[a]).map { o in
                var p = o - pads[a]
                if p < 0 || p >= n {
                    switch mode {
                    case "edge": p = min(max(p, 0), n - 1)
                    case "reflect" where n > 1:
                        let period = 2 * (n - 1)
                        p = ((p % period) + period) % period
                        if p >= n { p = period - p }
                    case "reflect": p = 0
                    case "wrap": p = ((p % n) + n) % n
                    default: return -1
                    }
                }
                return p * inStrides[a]
            }
        }
        // Row by row: each output row's source row (or none: all fill), and along the last axis
        // the run of input columns copied as they are, the padding columns mapped one by one.
        let last = maps[rank - 1], width = shape[rank - 1]
        let runStart = min(max(pads[rank - 1], 0), width), runEnd = max(runStart, min(width, pads[rank - 1] + x.shape[rank - 1]))
        func padded<T>(_ v: [T], fill: T) -> [T] {
            let count = shape.reduce(1, *)
            return [T](unsafeUninitializedCapacity: count) { out, initialized in
                v.withUnsafeBufferPointer { v in
                    var position = [Int](repeating: 0, count: rank - 1), i = 0
                    for _ in 0 ..< (width == 0 ? 0 : count / width) {
                        var row = 0
                        for a in 0 ..< rank - 1 where row >= 0 { row = maps[a][position[a]] < 0 ? -1 : row + maps[a][position[a]] }
                        if row < 0 {
                            (out.baseAddress! + i).initialize(repeating: fill, count: width)
                        } else {
                            for j in 0 ..< runStart { (out.baseAddress! + i + j).initialize(to: last[j] < 0 ? fill : v[row + last[j]]) }
                            if runEnd > runStart {
                                (out.baseAddress! + i + runStart).initialize(from: v.baseAddress! + row + last[runStart], count: runEnd - runStart)
                            }
                            for j in runEnd ..< width { (out.baseAddress! + i + j).initialize(to: last[j] < 0 ? fill : v[row + last[j]]) }
                        }
                        i += width
                        var axis = rank - 2
                        while axis >= 0 {
                            position[axis] += 1
                            if position[axis] < shape[axis] { break }
                            position[axis] = 0
                            axis -= 1
                        }
                    }
                }
                initialized = count
            }
        }
        switch x.elements {
        case .float(let v): return Value(padded(v, fill: fill), shape: shape, type: x.type)
        case .double(let v):
            let fill = c.opset < 11 ? Double(fill) : (c.optionalInput(2)?.asDoubles.first ?? 0)
            return Value(padded(v, fill: fill), shape: shape)
        case .int(let v):
            let fill = c.opset < 11 ? Value.saturatingInt(fill) : (c.optionalInput(2)?.asInts.first ?? 0)
            return Value(padded(v, fill: fill), shape: shape, type: x.type)
        case .bool(let v): return Value(padded(v, fill: fill != 0), shape: shape)
        }
    }
}
