import CTesseraKernels

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
        _ = try elementCount(out)
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

    /// For each flat index of `out`, the flat index into an operand of shape `s` broadcast to it;
    /// refused unless `s` broadcasts to `out`.
    static func sourceIndices(of s: [Int], in out: [Int]) throws -> [Int] {
        let pad = out.count - s.count
        guard pad >= 0, s.indices.allSatisfy({ s[$0] == 1 || s[$0] == out[$0 + pad] }) else {
            throw RuntimeError(.badShape, "shape \(s) does not broadcast to \(out)")
        }
        let sourceStrides = strides(s)
        // Stride along each output axis: 0 where the operand stretches.
        let step = out.indices.map { axis in axis < pad || s[axis - pad] == 1 ? 0 : sourceStrides[axis - pad] }
        return walk(out, strides: step, base: 0)
    }

    /// Flat source indices of a strided walk over `shape` (row-major), starting at `base`
    /// (broadcasting: zero strides; `Value.walking` gathers such a walk without the indices).
    static func walk(_ shape: [Int], strides: [Int], base: Int) -> [Int] {
        var out: [Int] = []
        out.reserveCapacity(shape.reduce(1, *))
        let n = shape.last ?? 1, step = strides.last ?? 0
        forEachRow(shape, strides: strides, base: base) { offset in
            for j in 0 ..< n { out.append(offset + j * step) }
        }
        return out
    }

    /// `body(offset)` for each row of the last axis of `shape`, in row-major order: `offset`
    /// is `base` plus the row's coordinates times `strides`. A scalar is one row.
    @inline(__always)
    static func forEachRow(_ shape: [Int], strides: [Int], base: Int, _ body: (Int) -> Void) {
        guard !shape.contains(0) else { return }
        let outer = shape.count - 1
        var position = [Int](repeating: 0, count: max(outer, 0)), offset = base
        for _ in 0 ..< shape.dropLast().reduce(1, *) {
            body(offset)
            var axis = outer - 1
            while axis >= 0 {
                position[axis] += 1
                offset += strides[axis]
                if position[axis] < shape[axis] { break }
                offset -= strides[axis] * shape[axis]
                position[axis] = 0
                axis -= 1
            }
        }
    }

    /// `f` on every pair of broadcast elements.
    @inline(__always)
    static func apply<A, B, R>(_ a: [A], _ aShape: [Int], _ b: [B], _ bShape: [Int], _ f: (A, B) -> R) throws -> ([R], [Int]) {
        if aShape == bShape {
            let count = a.count
            return ([R](unsafeUninitializedCapacity: count) { result, initialized in
                a.withUnsafeBufferPointer { a in
                    b.withUnsafeBufferPointer { b in
                        for i in 0 ..< count { (result.baseAddress! + i).initialize(to: f(a[i], b[i])) }
                    }
                }
                initialized = count
            }, aShape)
        }
        let out = try shape([aShape, bShape])
        if out == aShape, let blocks = Blocks(bShape, in: out) { return (blocks.combine(a, b, f), out) }
        if out == bShape, let blocks = Blocks(aShape, in: out) { return (blocks.combine(b, a) { f($1, $0) }, out) }
        // Both stretch: walk the output, each operand's offset moving by its own strides
        // (zero where it stretches), a row of the last axis at a time.
        func steps(_ s: [Int]) -> [Int] {
            let pad = out.count - s.count, strides = strides(s)
            return out.indices.map { $0 < pad || s[$0 - pad] == 1 ? 0 : strides[$0 - pad] }
        }
        let aStep = steps(aShape), bStep = steps(bShape), rank = out.count, count = out.reduce(1, *)
        guard count > 0, let n = out.last else { return ([], out) }
        let result = [R](unsafeUninitializedCapacity: count) { result, initialized in
            a.withUnsafeBufferPointer { a in
                b.withUnsafeBufferPointer { b in
                    var position = [Int](repeating: 0, count: rank), ao = 0, bo = 0, i = 0
                    let aLast = aStep[rank - 1], bLast = bStep[rank - 1]
                    for _ in 0 ..< count / n {
                        // Along the last axis one operand is usually a single value and the other a
                        // run: loops the compiler vectorises, not checked index arithmetic (magika's
                        // one-hot Equal, [2048, 1] against [1, 257], took 0.6 ms so).
                        let target = result.baseAddress! + i, x = a.baseAddress! + ao, y = b.baseAddress! + bo
                        if aLast == 0 && bLast == 1 {
                            let v = x.pointee
                            for j in 0 ..< n { (target + j).initialize(to: f(v, y[j])) }
                        } else if aLast == 1 && bLast == 0 {
                            let v = y.pointee
                            for j in 0 ..< n { (target + j).initialize(to: f(x[j], v)) }
                        } else {
                            for j in 0 ..< n { (target + j).initialize(to: f(x[j &* aLast], y[j &* bLast])) }
                        }
                        i += n
                        var axis = rank - 2
                        while axis >= 0 {
                            position[axis] += 1
                            ao += aStep[axis]; bo += bStep[axis]
                            if position[axis] < out[axis] { break }
                            ao -= aStep[axis] * out[axis]; bo -= bStep[axis] * out[axis]
                            position[axis] = 0
                            axis -= 1
                        }
                    }
                }
            }
            initialized = count
        }
        return (result, out)
    }

    /// Float32 `a OP b` (OP a `TESSERA_ADD`… constant) through the dispatched C kernel, when
    /// one operand has the output's shape and the other varies along one run of its axes (every
    /// case but the rarest); nil otherwise, or with the portable kernels (the generic path gives
    /// the same bits: these operations are exactly rounded).
    static func arithmetic(_ a: [Float], _ aShape: [Int], _ b: [Float], _ bShape: [Int], _ op: Int32, threads: Int = 1) throws -> ([Float], [Int])? {
        guard let kernels = KernelDispatch.kernels else { return nil }
        let out = aShape == bShape ? aShape : try shape([aShape, bShape])
        let full: [Float], part: [Float], blocks: Blocks, partFirst: Bool
        if aShape == bShape {
            (full, part, blocks, partFirst) = (a, b, Blocks(outer: 1, middle: a.count, inner: 1), false)
        } else if out == aShape, let layout = Blocks(bShape, in: out) {
            (full, part, blocks, partFirst) = (a, b, layout, false)
        } else if out == bShape, let layout = Blocks(aShape, in: out) {
            (full, part, blocks, partFirst) = (b, a, layout, true)
        } else if out == aShape || out == bShape {
            return split(full: out == aShape ? a : b, part: out == aShape ? b : a, out == aShape ? bShape : aShape, in: out, op,
                         partFirst: out != aShape, kernels).map { ($0, out) }
        } else {
            return nil
        }
        let count = full.count
        guard count > 0 else { return ([], out) }
        let y = [Float](unsafeUninitializedCapacity: count) { y, initialized in
            full.withUnsafeBufferPointer { full in
                part.withUnsafeBufferPointer { part in
                    blocks.run(threads: threads) { fullOffset, partOffset, outer, middle in
                        kernels.binary(op, full.baseAddress! + fullOffset, part.baseAddress! + partOffset, y.baseAddress! + fullOffset,
                                       outer, middle, blocks.inner, partFirst ? 1 : 0)
                    }
                }
            }
            initialized = count
        }
        return (y, out)
    }

    /// An operand that varies along two or more separate runs of axes (an attention mask
    /// `[N, 1, 1, S]` over scores `[N, H, S, S]`): the C kernel once for each index of the
    /// leading axes, after which the rest varies along one run; nil when no split does.
    private static func split(full: [Float], part: [Float], _ partShape: [Int], in out: [Int], _ op: Int32, partFirst: Bool,
                              _ kernels: tessera_kernels) -> [Float]? {
        let shape = [Int](repeating: 1, count: out.count - partShape.count) + partShape
        guard let axis = (1 ..< max(out.count, 1)).first(where: { Blocks(Array(shape[$0...]), in: Array(out[$0...])) != nil }),
              let blocks = Blocks(Array(shape[axis...]), in: Array(out[axis...])) else { return nil }
        let leading = Array(out[..<axis]), partStrides = strides(shape)
        let step = leading.indices.map { shape[$0] == 1 ? 0 : partStrides[$0] }
        let inner = out[axis...].reduce(1, *)
        var offsets: [Int] = []
        forEachRow(leading + [1], strides: step + [0], base: 0) { offsets.append($0) }
        return [Float](unsafeUninitializedCapacity: full.count) { y, initialized in
            full.withUnsafeBufferPointer { full in
                part.withUnsafeBufferPointer { part in
                    for (i, offset) in offsets.enumerated() {
                        kernels.binary(op, full.baseAddress! + i * inner, part.baseAddress! + offset, y.baseAddress! + i * inner,
                                       blocks.outer, blocks.middle, blocks.inner, partFirst ? 1 : 0)
                    }
                }
            }
            initialized = full.count
        }
    }

    /// An operand that varies along one run of adjacent output axes only (a scalar, a row of
    /// the last axes, one value per row, a mask over the last axis): output element
    /// `(o·middle + m)·inner + j` pairs with its element `m`. Saves the general path's index
    /// arrays, which cost more than the arithmetic.
    private struct Blocks {
        let outer: Int, middle: Int, inner: Int

        init(outer: Int, middle: Int, inner: Int) { (self.outer, self.middle, self.inner) = (outer, middle, inner) }

        init?(_ s: [Int], in out: [Int]) {
            let pad = out.count - s.count
            let varying = s.indices.filter { s[$0] != 1 }.map { $0 + pad }
            guard let first = varying.first, let last = varying.last else {
                (outer, middle, inner) = (1, 1, out.reduce(1, *))
                return
            }
            guard (first ... last).allSatisfy({ s[$0 - pad] == out[$0] }) else { return nil }
            outer = out[..<first].reduce(1, *)
            middle = out[first ... last].reduce(1, *)
            inner = out[(last + 1)...].reduce(1, *)
        }

        /// `body(fullOffset, partOffset, outer, middle)` over parts of the blocks, among threads
        /// when there are enough elements: whole outer blocks, or runs of the middle axis when
        /// there is one outer block. Each element computes as it would alone.
        func run(threads: Int, _ body: (Int, Int, Int, Int) -> Void) {
            let wanted = Threads.worthwhile(threads, work: outer * middle * inner)
            if wanted > 1, outer >= wanted {
                Threads.split(outer, threads: wanted) { body($0.lowerBound * middle * inner, 0, $0.count, middle) }
            } else if wanted > 1, outer == 1, middle >= wanted {
                Threads.split(middle, threads: wanted, granularity: 16) { body($0.lowerBound * inner, $0.lowerBound, 1, $0.count) }
            } else {
                body(0, 0, outer, middle)
            }
        }

        @inline(__always)
        func combine<A, B, R>(_ full: [A], _ part: [B], _ f: (A, B) -> R) -> [R] {
            let count = outer * middle * inner
            return [R](unsafeUninitializedCapacity: count) { result, initialized in
                full.withUnsafeBufferPointer { full in
                    part.withUnsafeBufferPointer { part in
                        let out = result.baseAddress!, full = full.baseAddress!, part = part.baseAddress!
                        var i = 0
                        for _ in 0 ..< outer {
                            if inner == 1 {   // one value per element of the last axes (a per-channel bias in NHWC): a vector loop
                                for m in 0 ..< middle { (out + i + m).initialize(to: f(full[i + m], part[m])) }
                                i += middle
                                continue
                            }
                            for m in 0 ..< middle {
                                let p = part[m]
                                for j in 0 ..< inner { (out + i + j).initialize(to: f(full[i + j], p)) }
                                i += inner
                            }
                        }
                    }
                }
                initialized = count
            }
        }
    }
}
