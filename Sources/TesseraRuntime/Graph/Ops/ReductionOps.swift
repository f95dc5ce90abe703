import CTesseraKernels
import Foundation
import Tessera

/// Reductions, arg-reductions, softmax and the normalizations: everything that combines
/// elements along an axis.
enum ReductionOps {
    static var table: [String: OpKernel] {
        var t: [String: OpKernel] = [:]
        // Sums in Double: a float32 running sum over thousands of terms drifts visibly.
        t["ReduceSum"] = { c in [try reduce(c, axesInputFrom: 13, summing: .sum) { $0.reduce(0, +) }] }
        t["ReduceMean"] = { c in [try reduce(c, axesInputFrom: 18, summing: .mean) { $0.reduce(0, +) / Double(max($0.count, 1)) }] }
        t["ReduceMax"] = { c in [try reduce(c, axesInputFrom: 18) { $0.max() ?? -.infinity }] }
        t["ReduceMin"] = { c in [try reduce(c, axesInputFrom: 18) { $0.min() ?? .infinity }] }
        t["ReduceProd"] = { c in [try reduce(c, axesInputFrom: 18) { $0.reduce(1, *) }] }
        t["ReduceSumSquare"] = { c in [try reduce(c, axesInputFrom: 18) { $0.reduce(0) { $0 + $1 * $1 } }] }
        t["ReduceL2"] = { c in [try reduce(c, axesInputFrom: 18) { $0.reduce(0) { $0 + $1 * $1 }.squareRoot() }] }
        t["ReduceL1"] = { c in [try reduce(c, axesInputFrom: 18) { $0.reduce(0) { $0 + abs($1) } }] }
        t["ReduceLogSum"] = { c in [try reduce(c, axesInputFrom: 18) { Foundation.log($0.reduce(0, +)) }] }
        t["ReduceLogSumExp"] = { c in
            [try reduce(c, axesInputFrom: 18) { run in
                guard let m = run.max(), m.isFinite else { return Foundation.log(run.reduce(0) { $0 + Foundation.exp($1) }) }
                return m + Foundation.log(run.reduce(0) { $0 + Foundation.exp($1 - m) })
            }]
        }
        t["ArgMax"] = { c in [try argReduce(c, largest: true)] }
        t["ArgMin"] = { c in [try argReduce(c, largest: false)] }
        t["Softmax"] = { c in [try softmax(c, log: false)] }
        t["LogSoftmax"] = { c in [try softmax(c, log: true)] }
        // Generic over the precision: float64 inputs compute in Double, the rest in Float.
        t["Hardmax"] = { c in [try c.isDouble(0) ? hardmax(c, Double.self) : hardmax(c, Float.self)] }
        t["LpNormalization"] = { c in [try c.isDouble(0) ? lpNormalization(c, Double.self) : lpNormalization(c, Float.self)] }
        t["LayerNormalization"] = { c in try c.isDouble(0) ? layerNorm(c, Double.self) : layerNorm(c, Float.self) }
        t["RMSNormalization"] = { c in [try c.isDouble(0) ? rmsNorm(c, Double.self) : rmsNorm(c, Float.self)] }
        t["GroupNormalization"] = { c in [try c.isDouble(0) ? groupNorm(c, Double.self) : groupNorm(c, Float.self)] }
        t["MeanVarianceNormalization"] = { c in
            // (x - E[x]) / (sqrt(E[x²] - E[x]²) + 1e-9) over `axes`, as the op's function body computes.
            let x = try c.input(0)
            let rank = x.shape.count
            let axes = Set(try (c.ints("axes") ?? [0, 2, 3]).map { try normalizedAxis($0, rank: rank) })
            let kept = (0 ..< rank).filter { !axes.contains($0) }, reduced = axes.sorted()
            let moved = ShapeOps.transpose(x, kept + reduced)
            let run = reduced.map { x.shape[$0] }.reduce(1, *)
            var v = moved.asDoubles
            for start in stride(from: 0, to: v.count, by: max(run, 1)) {
                let slice = v[start ..< start + run]
                let mean = slice.reduce(0, +) / Double(run)
                let meanSquare = slice.reduce(0) { $0 + $1 * $1 } / Double(run)
                let deviation = max(meanSquare - mean * mean, 0).squareRoot() + 1e-9
                for i in start ..< start + run { v[i] = (v[i] - mean) / deviation }
            }
            var inverse = [Int](repeating: 0, count: rank)
            for (i, axis) in (kept + reduced).enumerated() { inverse[axis] = i }
            return [ShapeOps.transpose(Value(computed: v, shape: moved.shape, type: x.type), inverse)]
        }
        t["BatchNormalization"] = { c in
            guard c.int("training_mode", 0) != 0 else {
                return [try c.isDouble(0) ? channelNorm(c, instance: false, Double.self) : channelNorm(c, instance: false, Float.self)]
            }
            return try c.isDouble(0) ? batchNormTraining(c, Double.self) : batchNormTraining(c, Float.self)
        }
        t["InstanceNormalization"] = { c in [try c.isDouble(0) ? channelNorm(c, instance: true, Double.self) : channelNorm(c, instance: true, Float.self)] }
        t["LRN"] = { c in [try c.isDouble(0) ? lrn(c, Double.self) : lrn(c, Float.self)] }
        return t
    }

    /// Reduces the axes given by the `axes` input (from opset `axesInputFrom`) or attribute.
    /// What `reduce`'s `f` is when it is a sum (divided by the count for a mean): float32 input
    /// over consecutive axes then sums in place, in float64, in order along the reduced axes or,
    /// for one contiguous run per output, in eight interleaved partial sums.
    enum Summing { case sum, mean }

    static func reduce(_ c: NodeContext, axesInputFrom version: Int64, summing: Summing? = nil, _ f: ([Double]) -> Double) throws -> Value {
        let x = try c.input(0)
        let rank = x.shape.count
        let listed = version <= c.opset ? c.optionalInput(1)?.asInts.map { Int($0) } : c.ints("axes")
        if (listed ?? []).isEmpty, c.int("noop_with_empty_axes", 0) != 0 { return x }
        let axes = Set(try (listed ?? []).map { try normalizedAxis($0, rank: rank) })
        let reduced = axes.isEmpty ? Set(0 ..< rank) : axes
        let kept = (0 ..< rank).filter { !reduced.contains($0) }
        let keepDims = c.int("keepdims", 1) != 0
        let shape = keepDims ? x.shape.indices.map { reduced.contains($0) ? 1 : x.shape[$0] } : kept.map { x.shape[$0] }
        if let summing, case .float(let v) = x.elements, let first = reduced.min(), reduced.max()! - first + 1 == reduced.count {
            let outer = x.shape[..<first].reduce(1, *), n = x.shape[first ..< first + reduced.count].reduce(1, *)
            let inner = x.shape[(first + reduced.count)...].reduce(1, *)
            var sums = [Double](repeating: 0, count: outer * inner)
            v.withUnsafeBufferPointer { v in
                sums.withUnsafeMutableBufferPointer { sums in
                    for o in 0 ..< outer {
                        let total = sums.baseAddress! + o * inner, block = v.baseAddress! + o * n * inner
                        if inner == 1 {   // one long run
                            total[0] = laneSum(n) { Double(block[$0]) }
                            continue
                        }
                        for k in 0 ..< n {
                            let row = block + k * inner
                            for i in 0 ..< inner { total[i] += Double(row[i]) }
                        }
                    }
                }
            }
            let count = Double(max(n, 1))
            return Value(sums.map { Float(summing == .mean ? $0 / count : $0) }, shape: shape, type: x.type)
        }
        // Kept axes first, reduced axes last: each output element is one contiguous run.
        let moved = ShapeOps.transpose(x, kept + reduced.sorted())
        let run = reduced.map { x.shape[$0] }.reduce(1, *)
        let values = moved.asDoubles
        let outCount = kept.map { x.shape[$0] }.reduce(1, *)
        let sums = (0 ..< outCount).map { o in f(Array(values[o * run ..< (o + 1) * run])) }
        switch x.elements {
        case .int: return Value(sums.map(Value.saturatingInt), shape: shape, type: x.type)
        case .bool: return Value(sums.map { $0 > 0 }, shape: shape)   // an empty max is -inf: false
        case .double: return Value(sums, shape: shape)
        case .float: return Value(sums.map { Float($0) }, shape: shape, type: x.type)
        }
    }

    /// The index of the largest (or smallest) element along the axis, compared in the input's
    /// own type (integers beyond 2^24 and float64 stay exact).
    static func argReduce(_ c: NodeContext, largest: Bool) throws -> Value {
        let x = try c.input(0)
        let axis = try normalizedAxis(c.int("axis", 0), rank: x.shape.count, scalarAllowed: true)
        let (outer, n, inner) = split(x.shape, axis)
        guard n > 0 else { throw RuntimeError(.badShape, "no arg-max over the empty axis \(axis) of \(x.shape)") }
        let last = c.int("select_last_index", 0) != 0
        var out = [Int64](repeating: 0, count: outer * inner)
        func pick<T: Comparable>(_ v: [T]) {
            for o in 0 ..< outer {
                for i in 0 ..< inner {
                    var best = 0
                    for k in 1 ..< max(n, 1) {
                        let a = v[(o * n + k) * inner + i], b = v[(o * n + best) * inner + i]
                        if (largest ? a > b : a < b) || (last && a == b) { best = k }
                    }
                    out[o * inner + i] = Int64(best)
                }
            }
        }
        switch x.elements {
        case .int(let v): pick(v)
        case .double(let v): pick(v)
        default: pick(x.asFloats)
        }
        var shape = x.shape
        if c.int("keepdims", 1) != 0 { shape[axis] = 1 } else { shape.remove(at: axis) }
        return Value(out, shape: shape)
    }

    /// (elements before `axis`, its length, elements after).
    static func split(_ shape: [Int], _ axis: Int) -> (Int, Int, Int) {
        (shape.prefix(axis).reduce(1, *), shape.isEmpty ? 1 : shape[axis], shape.dropFirst(axis + 1).reduce(1, *))
    }

    static func softmax(_ c: NodeContext, log: Bool) throws -> Value {
        let x = try c.input(0)
        switch x.elements {
        case .float, .double: break
        default: throw RuntimeError(.unsupportedType, "input 0 is \(x.type); this op computes on float tensors")
        }
        return softmax(x, view: try axisView(c, x.shape), log: log)
    }

    static func logSoftmax(_ x: Value, axis: Int) throws -> Value {
        softmax(x, view: split(x.shape, try normalizedAxis(axis, rank: x.shape.count)), log: true)
    }

    /// Softmax (or its log) of `x` over the middle axis of the (outer, n, inner) view; float64
    /// in float64.
    static func softmax(_ x: Value, view: (Int, Int, Int), log: Bool) -> Value {
        if var v = x.doubles {
            softmaxLines(&v, view: view, log: log, exp: { Foundation.exp($0) }, ln: { Foundation.log($0) })
            return Value(v, shape: x.shape)
        }
        if view.2 == 1 { return Value(softmaxRows(x.asFloats, rows: view.0, n: view.1, log: log), shape: x.shape, type: x.type) }
        var v = x.asFloats
        softmaxColumns(&v, view: view, log: log)
        return Value(v, shape: x.shape, type: x.type)
    }

    /// `softmaxLines` over float32 lines whose elements lie `inner` apart (a Softmax on an axis
    /// before the last, as YOLOv8's box head has): 16 adjacent lines at a time, which are 16
    /// adjacent floats at each step along the axis, each lane making its line's operations in
    /// its order (so the same bits), the exponentials through the vectorised exp. The lines
    /// left over go one by one. YOLOv8n's Softmax took 1.8 ms a line at a time.
    static func softmaxColumns(_ values: inout [Float], view: (Int, Int, Int), log: Bool) {
        let (outer, n, inner) = view, blocks = inner / vecWidth
        guard n > 0 else { return }
        var scratch = [Float](repeating: 0, count: n * vecWidth)
        values.withUnsafeMutableBufferPointer { v in
            scratch.withUnsafeMutableBufferPointer { e in
                let e = e.baseAddress!
                for o in 0 ..< outer {
                    for b in 0 ..< blocks {
                        let base = v.baseAddress! + o * n * inner + b * vecWidth
                        var m = Vec(repeating: -.infinity)
                        for k in 0 ..< n {
                            let x = load(base + k * inner)
                            m.replace(with: x, where: x .>= m)   // max(m, x) as Swift's max takes it
                        }
                        for k in 0 ..< n { store(load(base + k * inner) - m, e + k * vecWidth) }
                        ElementaryFunction.exp.apply(e, count: n * vecWidth)
                        var sum = Vec()
                        for k in 0 ..< n { sum += load(e + k * vecWidth) }
                        if log {
                            let logSum = Vec((0 ..< vecWidth).map { Foundation.log(sum[$0]) })
                            for k in 0 ..< n { store(load(base + k * inner) - m - logSum, base + k * inner) }
                        } else {
                            for k in 0 ..< n { store(load(e + k * vecWidth) / sum, base + k * inner) }
                        }
                    }
                }
            }
        }
        guard blocks * vecWidth < inner else { return }
        softmaxLines(&values, view: view, lines: blocks * vecWidth ..< inner, log: log, exp: ElementaryFunction.exp.portable, ln: { Foundation.log($0) })
    }

    /// `softmaxLines` over contiguous float32 rows, the exponentials a row at a time through the
    /// vectorised exp (the same arithmetic, so the same bits). The C kernel writes an array of
    /// its own, so `x`, whose storage the graph still holds, is not copied first.
    static func softmaxRows(_ x: [Float], rows: Int, n: Int, log: Bool, kernels: tessera_kernels? = KernelDispatch.kernels) -> [Float] {
        guard n > 0, !x.isEmpty else { return x }
        if let k = kernels {
            return [Float](unsafeUninitializedCapacity: x.count) { y, initialized in
                x.withUnsafeBufferPointer { k.softmax($0.baseAddress!, y.baseAddress!, rows, n, log ? 1 : 0) }
                initialized = x.count
            }
        }
        var values = x, e = [Float](repeating: 0, count: n)
        values.withUnsafeMutableBufferPointer { v in
            e.withUnsafeMutableBufferPointer { e in
                for o in 0 ..< rows {
                    let row = v.baseAddress! + o * n
                    var m = -Float.infinity
                    for k in 0 ..< n { m = max(m, row[k]) }
                    for k in 0 ..< n { e[k] = row[k] - m }
                    for k in 0 ..< n { e[k] = PortableKernels.exp(e[k]) }
                    // Sixteen partial sums (a sequential sum waits on every add), then the rest.
                    var lanes = Vec(), k = 0
                    while k + vecWidth <= n { lanes += load(e.baseAddress! + k); k += vecWidth }
                    var sum = lanes.sum()
                    while k < n { sum += e[k]; k += 1 }
                    if log {
                        let logSum = Foundation.log(sum)
                        for k in 0 ..< n { row[k] = row[k] - m - logSum }
                    } else {
                        for k in 0 ..< n { row[k] = e[k] / sum }
                    }
                }
            }
        }
        return values
    }

    static func softmaxLines<T: BinaryFloatingPoint>(_ values: inout [T], view: (Int, Int, Int), lines: Range<Int>? = nil, log: Bool,
                                                     exp: (T) -> T, ln: (T) -> T) {
        let (outer, n, inner) = view
        values.withUnsafeMutableBufferPointer { v in
            for o in 0 ..< outer {
                for i in lines ?? 0 ..< inner {
                    let base = o * n * inner + i
                    var m = -T.infinity
                    for k in 0 ..< n { m = max(m, v[base + k * inner]) }
                    var sum: T = 0
                    for k in 0 ..< n {
                        let e = exp(v[base + k * inner] - m)
                        sum += e
                        if !log { v[base + k * inner] = e }
                    }
                    let logSum = ln(sum)
                    for k in 0 ..< n {
                        if log { v[base + k * inner] = v[base + k * inner] - m - logSum } else { v[base + k * inner] /= sum }
                    }
                }
            }
        }
    }

    /// (outer, n, inner) for Softmax, LogSoftmax and Hardmax: before opset 13 the input is
    /// flattened to 2-D at `axis` (default 1); from 13 on, one axis (default -1).
    static func axisView(_ c: NodeContext, _ shape: [Int]) throws -> (Int, Int, Int) {
        if c.opset < 13 {
            let axis = try splitAxis(c.int("axis", 1), rank: shape.count)
            return (shape.prefix(axis).reduce(1, *), shape.dropFirst(axis).reduce(1, *), 1)
        }
        return split(shape, try normalizedAxis(c.int("axis", -1), rank: shape.count, scalarAllowed: true))
    }

    /// 1 at the first largest element along the axis, 0 elsewhere.
    static func hardmax<T: BinaryFloatingPoint>(_ c: NodeContext, _: T.Type) throws -> Value {
        let x = try c.input(0)
        let v = try c.floats(0, as: T.self)
        let (outer, n, inner) = try axisView(c, x.shape)
        var y = [T](repeating: 0, count: v.count)
        for o in 0 ..< outer {
            for i in 0 ..< inner where n > 0 {
                var best = 0
                for k in 1 ..< n where v[(o * n + k) * inner + i] > v[(o * n + best) * inner + i] { best = k }
                y[(o * n + best) * inner + i] = 1
            }
        }
        return Value(floating: y, shape: x.shape, type: x.type)
    }

    /// x / ||x||_p along `axis` (p is 1 or 2); a zero norm gives zeros.
    static func lpNormalization<T: BinaryFloatingPoint>(_ c: NodeContext, _: T.Type) throws -> Value {
        let x = try c.input(0)
        var v = try c.floats(0, as: T.self)
        let p = c.int("p", 2)
        guard p == 1 || p == 2 else { throw RuntimeError(.badGraph, "LpNormalization's p must be 1 or 2, got \(p)") }
        let (outer, n, inner) = split(x.shape, try normalizedAxis(c.int("axis", -1), rank: x.shape.count))
        for o in 0 ..< outer {
            for i in 0 ..< inner {
                let at = (0 ..< n).map { (o * n + $0) * inner + i }
                let norm = p == 1 ? at.reduce(0.0) { $0 + Double(abs(v[$1])) } : at.reduce(0.0) { $0 + Double(v[$1] * v[$1]) }.squareRoot()
                for k in at { v[k] = norm == 0 ? 0 : T(Double(v[k]) / norm) }
            }
        }
        return Value(floating: v, shape: x.shape, type: x.type)
    }

    /// x / sqrt(mean(x^2) + epsilon) * scale, over the axes from `axis` on.
    static func rmsNorm<T: BinaryFloatingPoint>(_ c: NodeContext, _: T.Type) throws -> Value {
        let x = try c.input(0)
        let v = try c.floats(0, as: T.self)
        let axis = try normalizedAxis(c.int("axis", -1), rank: x.shape.count)
        let normShape = Array(x.shape[axis...])
        let n = normShape.reduce(1, *), outer = x.count / max(n, 1)
        let epsilon = Double(c.float("epsilon", 1e-5))
        let scale = try c.input(1)
        let scaleIndex = try Broadcast.sourceIndices(of: scale.shape, in: normShape), gamma = scale.floating(T.self)
        var y = [T](repeating: 0, count: v.count)
        for o in 0 ..< outer {
            let meanSquare = v[o * n ..< (o + 1) * n].reduce(0.0) { $0 + Double($1) * Double($1) } / Double(n)
            let inverse = 1 / (meanSquare + epsilon).squareRoot()
            for k in 0 ..< n { y[o * n + k] = T(Double(v[o * n + k]) * inverse) * gamma[scaleIndex[k]] }
        }
        return Value(floating: y, shape: x.shape, type: x.type)
    }

    /// Statistics per sample and group of channels; scale and bias per channel (per group
    /// before opset 21).
    static func groupNorm<T: BinaryFloatingPoint>(_ c: NodeContext, _: T.Type) throws -> Value {
        let x = try c.input(0)
        let v = try c.floats(0, as: T.self)
        let groups = c.int("num_groups", 0)
        guard x.shape.count >= 2, groups >= 1, x.shape[1] % groups == 0 else {
            throw RuntimeError(.badShape, "GroupNormalization needs [N, C, ...] with C divisible by num_groups (\(x.shape), \(groups))")
        }
        let (batch, channels) = (x.shape[0], x.shape[1]), spatial = x.shape.dropFirst(2).reduce(1, *)
        let perGroup = channels / groups * spatial
        let scale = try c.input(1).floating(T.self), bias = try c.input(2).floating(T.self)
        let perChannel = scale.count == channels
        guard perChannel || scale.count == groups, bias.count == scale.count else {
            throw RuntimeError(.badShape, "scale and bias must have one value per channel (or per group before opset 21)")
        }
        let epsilon = Double(c.float("epsilon", 1e-5))
        var y = [T](repeating: 0, count: v.count)
        for n in 0 ..< batch {
            for g in 0 ..< groups {
                let start = (n * groups + g) * perGroup
                let slice = v[start ..< start + perGroup]
                let mean = slice.reduce(0.0) { $0 + Double($1) } / Double(max(perGroup, 1))
                let variance = slice.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(max(perGroup, 1))
                let inverse = 1 / (variance + epsilon).squareRoot()
                for i in 0 ..< perGroup {
                    let k = perChannel ? g * (channels / groups) + i / max(spatial, 1) : g
                    y[start + i] = T((Double(v[start + i]) - mean) * inverse) * scale[k] + bias[k]
                }
            }
        }
        return Value(floating: y, shape: x.shape, type: x.type)
    }

    static func layerNorm<T: BinaryFloatingPoint>(_ c: NodeContext, _: T.Type) throws -> [Value] {
        let x = try c.input(0)
        let v = try c.floats(0, as: T.self)
        let axis = try normalizedAxis(c.int("axis", -1), rank: x.shape.count, scalarAllowed: true)
        let normShape = Array(x.shape[axis...])
        let n = normShape.reduce(1, *)
        let epsilon = Double(c.float("epsilon", 1e-5))
        let scale = try c.input(1), bias = c.optionalInput(2)
        // Scale and bias spread over the normalised shape (broadcast where they are smaller).
        let gamma = try scale.floating(T.self).picking(Broadcast.sourceIndices(of: scale.shape, in: normShape))
        let beta = try bias.map { try $0.floating(T.self).picking(Broadcast.sourceIndices(of: $0.shape, in: normShape)) }
        let (y, means, inverse) = layerNormRows(v, n: n, gamma: gamma, beta: beta, epsilon: epsilon)
        let statShape = x.shape.indices.map { $0 < axis ? x.shape[$0] : 1 }
        // The statistics are float32 under stash_type 1 (the default), else in x's type.
        let statType: DataType = c.int("stash_type", 1) == 1 ? .float : x.type
        return [Value(floating: y, shape: x.shape, type: x.type), Value(computed: means.map { Double($0) }, shape: statShape, type: statType),
                Value(computed: inverse.map { Double($0) }, shape: statShape, type: statType)]
    }

    /// LayerNormalization of the rows of `v` (n wide): the C kernels' `layernorm` for float32,
    /// `layerNormRow` otherwise (the same bits).
    static func layerNormRows<T: BinaryFloatingPoint>(_ v: [T], n: Int, gamma: [T], beta: [T]?, epsilon: Double,
                                                      kernels: tessera_kernels? = KernelDispatch.kernels) -> (y: [T], means: [T], inverses: [T]) {
        let outer = v.count / max(n, 1)
        var y = [T](repeating: 0, count: v.count)
        var means = [T](repeating: 0, count: outer), inverse = [T](repeating: 0, count: outer)
        if T.self == Float.self, let k = kernels, n > 0 {
            let f = { (p: UnsafeRawBufferPointer) in p.baseAddress?.assumingMemoryBound(to: Float.self) }
            let m = { (p: UnsafeMutableRawBufferPointer) in p.baseAddress!.assumingMemoryBound(to: Float.self) }
            v.withUnsafeBytes { v in y.withUnsafeMutableBytes { y in gamma.withUnsafeBytes { gamma in (beta ?? []).withUnsafeBytes { b in
                means.withUnsafeMutableBytes { means in inverse.withUnsafeMutableBytes { inverse in
                    k.layernorm(f(v), m(y), outer, n, f(gamma), beta == nil ? nil : f(b), epsilon, m(means), m(inverse))
                } }
            } } } }
        } else {
            v.withUnsafeBufferPointer { v in
                y.withUnsafeMutableBufferPointer { y in
                    for o in 0 ..< outer {
                        (means[o], inverse[o]) = layerNormRow(v.baseAddress! + o * n, into: y.baseAddress! + o * n, n: n,
                                                              gamma: gamma, beta: beta, epsilon: epsilon)
                    }
                }
            }
        }
        return (y, means, inverse)
    }

    /// Σ term(k) for k < n in float64: eight interleaved partial sums over whole groups of eight
    /// (one running sum would wait on every add), added in lane order, then the rest in order.
    @inline(__always)
    static func laneSum(_ n: Int, _ term: (Int) -> Double) -> Double {
        var lanes = SIMD8<Double>(), k = 0
        while k + 8 <= n {
            for j in 0 ..< 8 { lanes[j] += term(k + j) }
            k += 8
        }
        var sum = 0.0
        for j in 0 ..< 8 { sum += lanes[j] }
        while k < n { sum += term(k); k += 1 }
        return sum
    }

    /// One row of LayerNormalization, statistics in float64 summed over 8 lanes (the C kernels'
    /// `layernorm` computes the same bits); returns the row's mean and inverse deviation.
    static func layerNormRow<T: BinaryFloatingPoint>(_ row: UnsafePointer<T>, into out: UnsafeMutablePointer<T>, n: Int,
                                                     gamma: [T], beta: [T]?, epsilon: Double) -> (T, T) {
        let mean = laneSum(n) { Double(row[$0]) } / Double(n)
        let squares = laneSum(n) { (Double(row[$0]) - mean) * (Double(row[$0]) - mean) }
        let inv = 1 / (squares / Double(n) + epsilon).squareRoot()
        for k in 0 ..< n { out[k] = T((Double(row[k]) - mean) * inv) * gamma[k] }
        if let beta { for k in 0 ..< n { out[k] += beta[k] } }
        return (T(mean), T(inv))
    }

    /// BatchNormalization (inference: stored mean and variance) or InstanceNormalization
    /// (statistics of each sample's channel), over `[N, C, ...]`.
    static func channelNorm<T: BinaryFloatingPoint>(_ c: NodeContext, instance: Bool, _: T.Type) throws -> Value {
        let x = try c.input(0)
        var v = try c.floats(0, as: T.self)
        guard x.shape.count >= 2 else { throw RuntimeError(.badShape, "input \(x.shape) has no channel axis") }
        let batch = x.shape[0], channels = x.shape[1], spatial = x.shape.dropFirst(2).reduce(1, *)
        let epsilon = Double(c.float("epsilon", 1e-5))
        let scale = try c.input(1).asDoubles, bias = try c.input(2).asDoubles
        let mean = instance ? [] : try c.input(3).asDoubles, variance = instance ? [] : try c.input(4).asDoubles
        for p in [scale, bias] + (instance ? [] : [mean, variance]) where p.count != channels {
            throw RuntimeError(.badShape, "a per-channel parameter has \(p.count) values for \(channels) channels")
        }
        v.withUnsafeMutableBufferPointer { v in
            guard let base = v.baseAddress else { return }
            normalizeChannels(base, batch: batch, channels: channels, spatial: spatial, scale: scale, bias: bias, epsilon: epsilon) { plane, ch in
                guard instance else { return (mean[ch], variance[ch]) }
                var sum = 0.0, squares = 0.0
                for i in 0 ..< spatial { sum += Double(plane[i]) }
                let mu = sum / Double(max(spatial, 1))
                for i in 0 ..< spatial { squares += (Double(plane[i]) - mu) * (Double(plane[i]) - mu) }
                return (mu, squares / Double(max(spatial, 1)))
            }
        }
        return Value(floating: v, shape: x.shape, type: x.type)
    }

    /// Each channel plane of `[batch, channels, spatial]` in place as `x · k + shift` in float64
    /// (one multiply-add, a vector loop), with `k = scale / sqrt(variance + epsilon)` and
    /// `shift = bias − mean · k` from the plane's `statistics` (mean, variance).
    static func normalizeChannels<T: BinaryFloatingPoint>(_ v: UnsafeMutablePointer<T>, batch: Int, channels: Int, spatial: Int,
                                                          scale: [Double], bias: [Double], epsilon: Double,
                                                          statistics: (UnsafeMutablePointer<T>, Int) -> (Double, Double)) {
        for n in 0 ..< batch {
            for ch in 0 ..< channels {
                let plane = v + (n * channels + ch) * spatial
                let (mean, variance) = statistics(plane, ch)
                normalize(plane, count: spatial, scale: scale[ch], bias: bias[ch], mean: mean, variance: variance, epsilon: epsilon)
            }
        }
    }

    /// One channel plane in place: `T(Double(x) · scale + shift)`.
    @inline(__always)
    static func normalize<T: BinaryFloatingPoint>(_ plane: UnsafeMutablePointer<T>, count: Int, scale: Double, bias: Double,
                                                  mean: Double, variance: Double, epsilon: Double) {
        let (k, shift) = normalization(scale: scale, bias: bias, mean: mean, variance: variance, epsilon: epsilon)
        for i in 0 ..< count { plane[i] = T(Double(plane[i]) * k + shift) }
    }

    /// BatchNormalization's arithmetic for one channel as a scale and a shift (the Conv fusion
    /// applies them too).
    static func normalization(scale: Double, bias: Double, mean: Double, variance: Double, epsilon: Double) -> (scale: Double, shift: Double) {
        let k = scale / (variance + epsilon).squareRoot()
        return (k, bias - mean * k)
    }

    /// BatchNormalization with training_mode: normalised by this batch's statistics, which
    /// also update the running mean and variance (weight `momentum` on the old ones).
    static func batchNormTraining<T: BinaryFloatingPoint>(_ c: NodeContext, _: T.Type) throws -> [Value] {
        let x = try c.input(0)
        guard x.shape.count >= 2 else { throw RuntimeError(.badShape, "input \(x.shape) has no channel axis") }
        let v = try c.floats(0, as: T.self)
        let (batch, channels) = (x.shape[0], x.shape[1]), spatial = x.shape.dropFirst(2).reduce(1, *)
        let scale = try c.input(1).asDoubles, bias = try c.input(2).asDoubles
        let runningMean = try c.input(3).floating(T.self), runningVariance = try c.input(4).floating(T.self)
        guard [scale.count, bias.count, runningMean.count, runningVariance.count].allSatisfy({ $0 == channels }) else {
            throw RuntimeError(.badShape, "a per-channel parameter does not have \(channels) values")
        }
        let epsilon = Double(c.float("epsilon", 1e-5)), momentum = T(c.float("momentum", 0.9))
        var y = v, means = [T](repeating: 0, count: channels), variances = means
        let count = Double(max(batch * spatial, 1))
        for ch in 0 ..< channels {
            var indices: [Int] = []
            for n in 0 ..< batch {
                let start: Int = (n * channels + ch) * spatial
                indices += Array(start ..< start + spatial)
            }
            var sum = 0.0, squares = 0.0
            for i in indices { sum += Double(v[i]) }
            let mean = sum / count
            for i in indices { let d = Double(v[i]) - mean; squares += d * d }
            let variance = squares / count
            let k = scale[ch] / (variance + epsilon).squareRoot()
            for i in indices { y[i] = T((Double(v[i]) - mean) * k + bias[ch]) }
            means[ch] = runningMean[ch] * momentum + T(mean) * (1 - momentum)
            variances[ch] = runningVariance[ch] * momentum + T(variance) * (1 - momentum)
        }
        return [Value(floating: y, shape: x.shape, type: x.type), Value(floating: means, shape: [channels], type: x.type),
                Value(floating: variances, shape: [channels], type: x.type)]
    }

    static func lrn<T: BinaryFloatingPoint>(_ c: NodeContext, _: T.Type) throws -> Value {
        let x = try c.input(0)
        let v = try c.floats(0, as: T.self)
        let size = c.int("size", 1)
        guard x.shape.count >= 2, size >= 1 else { throw RuntimeError(.badShape, "LRN needs [N, C, ...] and size >= 1, got \(x.shape) and \(size)") }
        let alpha = Double(c.float("alpha", 1e-4)), beta = Double(c.float("beta", 0.75)), bias = Double(c.float("bias", 1))
        let channels = x.shape[1], spatial = x.shape.dropFirst(2).reduce(1, *)
        let below = (size - 1) / 2, above = size - 1 - below
        var y = v
        for n in 0 ..< x.shape[0] {
            for ch in 0 ..< channels {
                for s in 0 ..< spatial {
                    var sum: T = 0
                    for j in max(0, ch - below) ... min(channels - 1, ch + above) {
                        let e = v[(n * channels + j) * spatial + s]
                        sum += e * e
                    }
                    let i = (n * channels + ch) * spatial + s
                    y[i] = v[i] / T(Foundation.pow(bias + alpha / Double(size) * Double(sum), beta))
                }
            }
        }
        return Value(floating: y, shape: x.shape, type: x.type)
    }
}
