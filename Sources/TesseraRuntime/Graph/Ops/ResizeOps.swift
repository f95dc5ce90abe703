import Foundation
import Tessera

/// Resize and Upsample. Interpolation is separable: each resized axis in turn, every output
/// position a weighted sum of a few input positions along it (`Taps`), computed in Double as
/// the ONNX reference does.
enum ResizeOps {
    static var table: [String: OpKernel] {
        var t: [String: OpKernel] = [:]
        t["Resize"] = { c in [try resize(c)] }
        t["GridSample"] = { c in [try gridSample(c)] }
        t["AffineGrid"] = { c in [try affineGrid(c)] }
        t["Upsample"] = { c in
            // Upsample (deprecated at 10) is Resize with scales, asymmetric coordinates and
            // nearest rounding down.
            let x = try c.input(0)
            let scales = c.opset < 9 ? (c.floatList("scales") ?? []).map(Double.init) : try c.input(1).asFloats.map(Double.init)
            let options = try Options(c, legacy: true)
            return [try interpolate(x, scales: scales, sizes: nil, roi: nil, options: options)]
        }
        return t
    }

    /// X `[N, C, d...]` sampled at the normalised points of grid `[N, o..., r]` (x first):
    /// nearest, (bi/tri)linear or cubic, with zeros, border or reflection padding, as the ONNX
    /// reference computes it.
    static func gridSample(_ c: NodeContext) throws -> Value {
        let x = try c.input(0), grid = try c.input(1)
        let r = x.shape.count - 2
        guard r >= 1, grid.shape.count == r + 2, grid.shape[0] == x.shape[0], grid.shape.last == r else {
            throw RuntimeError(.badShape, "GridSample of \(x.shape) at grid \(grid.shape)")
        }
        var mode = c.string("mode", c.opset >= 20 ? "linear" : "bilinear")
        mode = ["bilinear": "linear", "bicubic": "cubic"][mode] ?? mode
        let padding = c.string("padding_mode", "zeros"), align = c.int("align_corners", 0) != 0
        guard ["nearest", "linear", "cubic"].contains(mode), ["zeros", "border", "reflection"].contains(padding) else {
            throw RuntimeError(.badGraph, "GridSample mode '\(mode)' or padding '\(padding)' is not known")
        }
        let (batch, channels) = (x.shape[0], x.shape[1]), dims = Array(x.shape.dropFirst(2))
        let points = grid.shape.dropFirst().dropLast().reduce(1, *), pixels = dims.reduce(1, *)
        let strides = Broadcast.strides(dims)
        let low = dims.map { _ in align ? 0.0 : -0.5 }, high = dims.map { align ? Double($0 - 1) : Double($0) - 0.5 }
        func reflect(_ v: Double, _ lo: Double, _ hi: Double) -> Double {
            let span = hi - lo
            guard span > 0 else { return lo }
            if v < lo { let d = lo - v, n = Int(d / span), rest = d - Double(n) * span; return n % 2 == 0 ? lo + rest : hi - rest }
            if v > hi { let d = v - hi, n = Int(d / span), rest = d - Double(n) * span; return n % 2 == 0 ? hi - rest : lo + rest }
            return v
        }
        /// The flat input index of integer coordinates, or nil for zeros padding outside.
        func index(_ coordinates: [Int]) -> Int? {
            var flat = 0
            for (d, i) in coordinates.enumerated() {
                var k = i
                if k < 0 || k >= dims[d] {
                    switch padding {
                    case "zeros": return nil
                    case "border": k = min(max(k, 0), dims[d] - 1)
                    default: k = Int(reflect(Double(k), low[d], high[d]))
                    }
                }
                flat += k * strides[d]
            }
            return flat
        }
        func cubic(_ t: Double) -> [Double] {
            let a = -0.75, s = abs(t)
            return [((a * (s + 1) - 5 * a) * (s + 1) + 8 * a) * (s + 1) - 4 * a, ((a + 2) * s - (a + 3)) * s * s + 1,
                    ((a + 2) * (1 - s) - (a + 3)) * (1 - s) * (1 - s) + 1, ((a * (2 - s) - 5 * a) * (2 - s) + 8 * a) * (2 - s) - 4 * a]
        }
        let v = x.asDoubles, g = grid.asDoubles
        var y = [Double](repeating: 0, count: try elementCount([batch, channels, points]))
        for n in 0 ..< batch {
            for p in 0 ..< points {
                // Grid coordinates are (x, y, z...): the reverse of the dims' order.
                var position = (0 ..< r).map { d -> Double in
                    let normal = Double(g[(n * points + p) * r + (r - 1 - d)])
                    return align ? (normal + 1) / 2 * Double(dims[d] - 1) : ((normal + 1) * Double(dims[d]) - 1) / 2
                }
                if mode == "nearest" { position = position.map { $0.rounded(.toNearestOrEven) } }
                for d in 0 ..< r where position[d] < low[d] || position[d] > high[d] {
                    if padding == "border" { position[d] = min(max(position[d], 0), Double(dims[d] - 1)) }
                    if padding == "reflection" { position[d] = reflect(position[d], low[d], high[d]) }
                }
                // Taps per dim: (offset from the floor, weight).
                let taps: [[(Int, Double)]] = position.map { q in
                    let base = q.rounded(.down), t = q - base
                    switch mode {
                    case "nearest": return [(Int(q.rounded(.towardZero)) - Int(base), 1)]
                    case "linear": return [(0, 1 - t), (1, t)]
                    default: return zip(-1 ... 2, cubic(t)).map { ($0, $1) }
                    }
                }
                let bases = position.map { Int($0.rounded(.down)) }
                for ch in 0 ..< channels {
                    let plane = (n * channels + ch) * pixels
                    var sum = 0.0
                    var counter = [Int](repeating: 0, count: r)
                    for _ in 0 ..< taps.map(\.count).reduce(1, *) {
                        var weight = 1.0
                        var coordinates = [Int](repeating: 0, count: r)
                        for d in 0 ..< r {
                            let (offset, w) = taps[d][counter[d]]
                            weight *= w
                            coordinates[d] = bases[d] + offset
                        }
                        if let at = index(coordinates) { sum += weight * v[plane + at] }
                        var d = r - 1
                        while d >= 0 { counter[d] += 1; if counter[d] < taps[d].count { break }; counter[d] = 0; d -= 1 }
                    }
                    y[(n * channels + ch) * points + p] = sum
                }
            }
        }
        return Value(computed: y, shape: [batch, channels] + Array(grid.shape.dropFirst().dropLast()), type: x.type)
    }

    /// The sampling grid of affine maps `theta` `[N, 2, 3]` (or `[N, 3, 4]`) over an output of
    /// `size` `[N, C, H, W]` (or with D): `[N, (D,) H, W, 2 or 3]`, coordinates x first.
    static func affineGrid(_ c: NodeContext) throws -> Value {
        let theta = try c.input(0), size = try c.input(1).asInts.map(Int.init)
        let r = size.count - 2
        guard r == 2 || r == 3, theta.shape == [size[0], r, r + 1] else { throw RuntimeError(.badShape, "AffineGrid of theta \(theta.shape) for size \(size)") }
        let dims = Array(size.dropFirst(2)), align = c.int("align_corners", 0) != 0
        let points = try elementCount(dims), strides = Broadcast.strides(dims), t = theta.asDoubles
        func base(_ i: Int, _ s: Int) -> Double { align ? (s == 1 ? 0 : -1 + 2 * Double(i) / Double(s - 1)) : -1 + (2 * Double(i) + 1) / Double(s) }
        var y = [Double](repeating: 0, count: try elementCount([size[0], points, r]))
        for n in 0 ..< size[0] {
            for p in 0 ..< points {
                // (x, y[, z], 1): x runs along the last dim.
                let homogeneous = (0 ..< r).map { k -> Double in
                    let d = r - 1 - k
                    return base(p / strides[d] % dims[d], dims[d])
                } + [1]
                for row in 0 ..< r {
                    y[(n * points + p) * r + row] = (0 ... r).reduce(0.0) { $0 + t[(n * r + row) * (r + 1) + $1] * homogeneous[$1] }
                }
            }
        }
        return Value(computed: y, shape: [size[0]] + dims + [r], type: theta.type)
    }

    struct Options {
        var mode: String
        var transform: String
        var nearest: String
        var cubicA: Double
        var excludeOutside: Bool
        var extrapolation: Double
        var antialias: Bool
        var aspectPolicy: String

        init(_ c: NodeContext, legacy: Bool) throws {
            mode = c.string("mode", "nearest")
            // Opset 10's Resize and Upsample: asymmetric coordinates, nearest rounds down.
            transform = legacy ? "asymmetric" : c.string("coordinate_transformation_mode", "half_pixel")
            nearest = legacy ? "floor" : c.string("nearest_mode", "round_prefer_floor")
            cubicA = Double(c.float("cubic_coeff_a", -0.75))
            excludeOutside = c.int("exclude_outside", 0) != 0
            extrapolation = Double(c.float("extrapolation_value", 0))
            antialias = c.int("antialias", 0) != 0
            aspectPolicy = c.string("keep_aspect_ratio_policy", "stretch")
            if mode == "bilinear" || mode == "trilinear" { mode = "linear" }   // Upsample's old names
            guard ["nearest", "linear", "cubic"].contains(mode) else { throw RuntimeError(.badGraph, "mode '\(mode)' is not nearest, linear or cubic") }
            guard ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"].contains(nearest) else {
                throw RuntimeError(.badGraph, "nearest_mode '\(nearest)' is not known")
            }
            guard ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
                   "tf_half_pixel_for_nn", "tf_crop_and_resize"].contains(transform) else {
                throw RuntimeError(.badGraph, "coordinate_transformation_mode '\(transform)' is not known")
            }
            guard ["stretch", "not_larger", "not_smaller"].contains(aspectPolicy) else {
                throw RuntimeError(.badGraph, "keep_aspect_ratio_policy '\(aspectPolicy)' is not known")
            }
        }
    }

    static func resize(_ c: NodeContext) throws -> Value {
        let x = try c.input(0)
        if c.opset < 11 {
            return try interpolate(x, scales: try c.input(1).asFloats.map(Double.init), sizes: nil, roi: nil, options: try Options(c, legacy: true))
        }
        let roi = c.optionalInput(1).map(\.asDoubles).flatMap { $0.isEmpty ? nil : $0 }
        let scales = c.optionalInput(2).map(\.asDoubles).flatMap { $0.isEmpty ? nil : $0 }
        let sizes = c.optionalInput(3).map { $0.asInts.map(Int.init) }.flatMap { $0.isEmpty ? nil : $0 }
        guard (scales == nil) != (sizes == nil) else { throw RuntimeError(.badGraph, "Resize needs exactly one of scales and sizes") }
        let rank = x.shape.count
        let axes = try (c.ints("axes") ?? Array(0 ..< rank)).map { try normalizedAxis($0, rank: rank) }
        guard Set(axes).count == axes.count, (scales?.count ?? sizes?.count) == axes.count, roi == nil || roi!.count == 2 * axes.count else {
            throw RuntimeError(.badShape, "Resize's scales, sizes or roi do not match its \(axes.count) axes")
        }
        // Spread per-axis lists over every axis of X.
        var fullScales = scales.map { _ in [Double](repeating: 1, count: rank) }
        var fullSizes = sizes.map { _ in x.shape }
        var fullRoi = roi.map { _ in [Double](repeating: 0, count: rank) + [Double](repeating: 1, count: rank) }
        for (i, axis) in axes.enumerated() {
            fullScales?[axis] = scales![i]
            fullSizes?[axis] = sizes![i]
            if let roi { fullRoi![axis] = roi[i]; fullRoi![rank + axis] = roi[axes.count + i] }
        }
        return try interpolate(x, scales: fullScales, sizes: fullSizes, roi: fullRoi, options: try Options(c, legacy: false), axes: axes)
    }

    /// Resize `x` to `sizes`, or by `scales` (output dims rounded down), over every axis.
    static func interpolate(_ x: Value, scales: [Double]?, sizes: [Int]?, roi: [Double]?, options: Options, axes: [Int]? = nil) throws -> Value {
        let rank = x.shape.count
        let axes = axes ?? Array(0 ..< rank)
        var factors: [Double], output: [Int]
        if let sizes {
            guard sizes.count == rank, sizes.allSatisfy({ $0 >= 0 }) else { throw RuntimeError(.badShape, "sizes \(sizes) do not fit \(x.shape)") }
            factors = zip(sizes, x.shape).map { Double($0) / Double($1) }
            output = sizes
            if options.aspectPolicy != "stretch" {
                let chosen = axes.map { factors[$0] }
                let scale = (options.aspectPolicy == "not_larger" ? chosen.min() : chosen.max()) ?? 1
                factors = (0 ..< rank).map { axes.contains($0) ? scale : 1 }
                output = (0 ..< rank).map { axes.contains($0) ? Int(scale * Double(x.shape[$0]) + 0.5) : x.shape[$0] }
            }
        } else {
            guard let scales, scales.count == rank, scales.allSatisfy({ $0 > 0 && $0.isFinite }) else {
                throw RuntimeError(.badShape, "scales \(scales ?? []) do not fit \(x.shape)")
            }
            factors = scales
            output = try zip(scales, x.shape).map { s, d in
                let size = (s * Double(d)).rounded(.down)
                guard size < 1e15 else { throw RuntimeError(.tooLarge, "scale \(s) makes axis \(d) too large") }
                return Int(size)
            }
        }
        let count = try elementCount(output)
        if options.mode == "nearest", let gathered = try nearest(x, output: output, factors: factors, roi: roi, options: options, axes: axes, count: count) {
            return gathered
        }
        var values = x.asDoubles, shape = x.shape
        for axis in axes {
            let identity = abs(factors[axis] - 1) < 1e-9 && output[axis] == shape[axis]
                && (roi == nil || (roi![axis] == 0 && roi![rank + axis] == 1))
            if identity { continue }
            let taps = try Taps(input: shape[axis], output: output[axis], scale: factors[axis],
                                roi: roi.map { ($0[axis], $0[rank + axis]) }, options: options)
            values = taps.apply(values, shape: shape, axis: axis)
            shape[axis] = output[axis]
        }
        if case .int = x.elements {
            let bounds = (try? QuantizationOps.range(of: x.type)) ?? Int64.min ... Int64.max
            return Value(values.map { Int64(min(max($0.rounded(.towardZero), Double(bounds.lowerBound)), Double(bounds.upperBound))) },
                         shape: shape, type: x.type)
        }
        return Value(computed: values, shape: shape, type: x.type)
    }

    /// Nearest-neighbour resizing as a gather (each output copies one input element, exactly,
    /// whatever the type), from the same per-axis taps; nil where some output is not a copy
    /// (tf_crop_and_resize's extrapolation outside the crop).
    static func nearest(_ x: Value, output: [Int], factors: [Double], roi: [Double]?, options: Options, axes: [Int], count: Int) throws -> Value? {
        let rank = x.shape.count
        guard rank > 0 else { return nil }
        var maps = x.shape.map { Array(0 ..< $0) }
        for axis in axes {
            let taps = try Taps(input: x.shape[axis], output: output[axis], scale: factors[axis],
                                roi: roi.map { ($0[axis], $0[rank + axis]) }, options: options)
            // Nearest's taps weigh one input 1 and the other 0.
            var map: [Int] = []
            for (positions, weights) in zip(taps.indices, taps.weights) {
                guard weights.allSatisfy({ $0 == 0 || $0 == 1 }), weights.filter({ $0 == 1 }).count == 1 else { return nil }
                map.append(positions[weights.firstIndex(of: 1)!])
            }
            guard !taps.outside.contains(true) else { return nil }
            maps[axis] = map
        }
        guard count > 0 else { return x.picking([], shape: output) }
        let strides = Broadcast.strides(x.shape)
        // Offsets of the rows (every axis but the last), then each row's elements.
        var rows = [0]
        for axis in 0 ..< rank - 1 { rows = rows.flatMap { base in maps[axis].map { base + $0 * strides[axis] } } }
        let last = maps[rank - 1].map { $0 * strides[rank - 1] }
        // Row by row; a row that repeats the one before (upsampling) is copied from it whole.
        // (Through pointers: indexing the arrays was most of an upsampling's time, perf.)
        func gather<T>(_ v: [T]) -> [T] {
            let width = last.count
            return [T](unsafeUninitializedCapacity: count) { out, initialized in
                v.withUnsafeBufferPointer { v in
                    last.withUnsafeBufferPointer { last in
                        for (r, base) in rows.enumerated() {
                            let row = out.baseAddress! + r * width
                            if r > 0, rows[r - 1] == base {
                                row.initialize(from: row - width, count: width)
                            } else {
                                let source = v.baseAddress! + base
                                for j in 0 ..< width { (row + j).initialize(to: source[last[j]]) }
                            }
                        }
                    }
                }
                initialized = count
            }
        }
        var y = x
        y.shape = output
        switch x.elements {
        case .float(let v): y.elements = .float(gather(v))
        case .double(let v): y.elements = .double(gather(v))
        case .int(let v): y.elements = .int(gather(v))
        case .bool(let v): y.elements = .bool(gather(v))
        }
        return y
    }

    /// For each output position along one axis: the input positions it reads (clamped to the
    /// axis, as edge padding does), their weights, and whether it lies outside the crop.
    struct Taps {
        let width: Int
        var indices: [[Int]] = []
        var weights: [[Double]] = []
        var outside: [Bool] = []
        let extrapolation: Double

        init(input: Int, output: Int, scale: Double, roi: (Double, Double)?, options: Options) throws {
            width = input
            extrapolation = options.extrapolation
            guard input > 0 || output == 0 else { throw RuntimeError(.badShape, "cannot resize an empty axis to \(output)") }
            let outputWidth = scale * Double(input)
            for y in 0 ..< output {
                let position = Double(y)
                var source: Double
                switch options.transform {
                case "align_corners": source = outputWidth == 1 ? 0 : position * Double(input - 1) / (outputWidth - 1)
                case "asymmetric": source = position / scale
                case "tf_half_pixel_for_nn": source = (position + 0.5) / scale
                case "pytorch_half_pixel": source = outputWidth == 1 ? -0.5 : (position + 0.5) / scale - 0.5
                case "half_pixel_symmetric":
                    let offset = Double(input) / 2 * (1 - Double(output) / outputWidth)
                    source = offset + (position + 0.5) / scale - 0.5
                case "tf_crop_and_resize":
                    guard let (start, end) = roi else { throw RuntimeError(.badGraph, "tf_crop_and_resize needs a roi") }
                    source = (outputWidth == 1 ? (end - start) * Double(input - 1) / 2 : position * (end - start) * Double(input - 1) / (outputWidth - 1))
                        + start * Double(input - 1)
                default: source = (position + 0.5) / scale - 0.5   // half_pixel
                }
                let base = source.rounded(.down)
                let ratio = source == base ? 1 : source - base
                var coefficients = Self.coefficients(ratio, scale: scale, options)
                let n = coefficients.count
                let fraction = source - base
                let offset = n % 2 == 0 ? (fraction == 0 ? -(n / 2) : -(n / 2) + 1) : (fraction <= 0.5 ? -((n - 1) / 2) : -((n - 1) / 2) + 1)
                let start = Int(base) + offset
                let positions = (0 ..< n).map { start + $0 }
                if options.excludeOutside {
                    for (t, p) in positions.enumerated() where p < 0 || p >= input { coefficients[t] = 0 }
                    let sum = coefficients.reduce(0, +)
                    coefficients = coefficients.map { $0 / (sum == 0 ? 1 : sum) }
                }
                indices.append(positions.map { min(max($0, 0), input - 1) })
                weights.append(coefficients)
                outside.append(options.transform == "tf_crop_and_resize" && (source < 0 || source > Double(input - 1)))
            }
        }

        static func coefficients(_ ratio: Double, scale: Double, _ options: Options) -> [Double] {
            switch options.mode {
            case "nearest":
                if ratio == 1 { return [0, 1] }
                switch options.nearest {
                case "round_prefer_ceil": return ratio < 0.5 ? [1, 0] : [0, 1]
                case "floor": return [1, 0]
                case "ceil": return [0, 1]
                default: return ratio <= 0.5 ? [1, 0] : [0, 1]
                }
            case "linear":
                guard options.antialias else { return [1 - ratio, ratio] }
                let s = min(scale, 1), start = Int((-1 / s).rounded(.down)) + 1
                let raw = (start ..< start + 2 - 2 * start).map { max(0, min(1, 1 - abs((Double($0) - ratio) * s))) }
                let sum = raw.reduce(0, +)
                return raw.map { $0 / sum }
            default:
                let a = options.cubicA
                guard options.antialias else {
                    let r = ratio, q = 1 - ratio
                    return [((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a,
                            ((a + 2) * r - (a + 3)) * r * r + 1,
                            ((a + 2) * q - (a + 3)) * q * q + 1,
                            ((a * (q + 1) - 5 * a) * (q + 1) + 8 * a) * (q + 1) - 4 * a]
                }
                let s = min(scale, 1), start = Int((-2 / s).rounded(.down)) + 1
                let raw = (start ..< 2 - start).map { i -> Double in
                    let x = abs(s * (Double(i) - ratio))
                    if x <= 1 { return (a + 2) * x * x * x - (a + 3) * x * x + 1 }
                    if x < 2 { return a * x * x * x - 5 * a * x * x + 8 * a * x - 4 * a }
                    return 0
                }
                let sum = raw.reduce(0, +)
                return raw.map { $0 / sum }
            }
        }

        /// `values` (of `shape`) resized along `axis`.
        func apply(_ values: [Double], shape: [Int], axis: Int) -> [Double] {
            let (outer, _, inner) = ReductionOps.split(shape, axis)
            let output = indices.count
            var out = [Double](repeating: 0, count: outer * output * inner)
            for o in 0 ..< outer {
                for y in 0 ..< output {
                    let target = (o * output + y) * inner
                    if outside[y] {
                        for i in 0 ..< inner { out[target + i] = extrapolation }
                        continue
                    }
                    for (p, w) in zip(indices[y], weights[y]) {
                        let source = (o * width + p) * inner
                        for i in 0 ..< inner { out[target + i] += w * values[source + i] }
                    }
                }
            }
            return out
        }
    }
}
