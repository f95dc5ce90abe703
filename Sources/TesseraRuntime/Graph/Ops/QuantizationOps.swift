import Foundation
import Tessera

/// Linear quantization in graphs: QuantizeLinear and DequantizeLinear (per tensor, per axis or
/// blocked), DynamicQuantizeLinear, and the integer GEMMs onnxruntime's quantization tool
/// writes. Integer products accumulate exactly in Int64; rounding is half to even, as
/// onnxruntime's is.
enum QuantizationOps {
    static var table: [String: OpKernel] {
        var t: [String: OpKernel] = [:]
        t["QuantizeLinear"] = { c in
            let x = try c.input(0), scale = try c.input(1), zeroPoint = c.optionalInput(2)
            let type = try c.optionalInt("output_dtype").flatMap { $0 == 0 ? nil : try dataType($0) } ?? zeroPoint?.type ?? .uint8
            let map = try scaleMap(c, x.shape, scale.shape)
            let s = scale.asFloats
            if Minifloats.types.contains(type) {   // float8/float4 codes: x / scale + zero point, rounded to the type
                let z = zeroPoint?.asFloats, saturate = c.int("saturate", 1) != 0
                let y = x.asFloats.enumerated().map { i, v in Minifloats.rounded(v / s[map[i]] + (z?[map[i]] ?? 0), to: type, saturate: saturate) }
                return [Value(y, shape: x.shape, type: type)]
            }
            let z = zeroPoint?.asInts
            let bounds = try range(of: type)
            let q = x.asFloats.enumerated().map { i, v -> Int64 in
                let shifted = Double(v / s[map[i]]).rounded(.toNearestOrEven) + Double(z?[map[i]] ?? 0)
                return shifted.isNaN ? 0 : Int64(min(max(shifted, Double(bounds.lowerBound)), Double(bounds.upperBound)))
            }
            return [Value(q, shape: x.shape, type: type)]
        }
        t["DequantizeLinear"] = { c in
            let x = try c.input(0), scale = try c.input(1), zeroPoint = c.optionalInput(2)
            let map = try scaleMap(c, x.shape, scale.shape)
            let s = scale.asFloats
            let type = try c.optionalInt("output_dtype").flatMap { $0 == 0 ? nil : try dataType($0) } ?? scale.type
            let y: [Float]
            if case .float(let v) = x.elements {   // float8/float4 codes
                let z = zeroPoint?.asFloats
                y = v.indices.map { i in (v[i] - (z?[map[i]] ?? 0)) * s[map[i]] }
            } else {
                let z = zeroPoint?.asInts, v = x.asInts
                y = v.indices.map { i in Float(v[i] - (z?[map[i]] ?? 0)) * s[map[i]] }
            }
            return [Value(y, shape: x.shape, type: type)]
        }
        t["DynamicQuantizeLinear"] = { c in
            let x = try c.input(0)
            let v = try c.floats(0)
            let (q, scale, zeroPoint) = quantizeDynamically(v)
            return [Value(q, shape: x.shape, type: .uint8), Value([scale], shape: []), Value([zeroPoint], shape: [], type: .uint8)]
        }
        t["MatMulInteger"] = { c in
            let a = try c.input(0), b = try c.input(1)
            let product = try MatMulShape(a.shape, b.shape)
            let acc = try integerProduct(a, b, product, aZero: c.optionalInput(2), bZero: c.optionalInput(3))
            return [Value(acc, shape: product.shape, type: .int32)]
        }
        t["QLinearMatMul"] = { c in
            let a = try c.input(0), b = try c.input(3), yZero = try c.input(7)
            let product = try MatMulShape(a.shape, b.shape)
            let acc = try integerProduct(a, b, product, aZero: c.optionalInput(2), bZero: c.optionalInput(5))
            let aScale = try c.input(1).asFloats, bScale = try c.input(4).asFloats, yScale = try c.input(6).asFloats
            guard aScale.count == 1, yScale.count == 1, bScale.count == 1 || bScale.count == product.n else {
                throw RuntimeError(.badShape, "QLinearMatMul takes per-tensor scales (B's may be per column)")
            }
            let bounds = try range(of: yZero.type), z = Double(yZero.asInts.first ?? 0)
            let y = acc.enumerated().map { i, v -> Int64 in
                let multiplier = Double(aScale[0]) * Double(bScale.count == 1 ? bScale[0] : bScale[i % product.n]) / Double(yScale[0])
                let q = (Double(v) * multiplier).rounded(.toNearestOrEven) + z
                return Int64(min(max(q, Double(bounds.lowerBound)), Double(bounds.upperBound)))
            }
            return [Value(y, shape: product.shape, type: yZero.type)]
        }
        t["ConvInteger"] = { c in
            let (acc, shape) = try integerConv(c, x: c.input(0), w: c.input(1), xZero: c.optionalInput(2), wZero: c.optionalInput(3))
            return [Value(acc, shape: shape, type: .int32)]
        }
        t["QLinearConv"] = { c in
            let w = try c.input(3), yZero = try c.input(7)
            var (acc, shape) = try integerConv(c, x: c.input(0), w: w, xZero: c.optionalInput(2), wZero: c.optionalInput(5))
            let channels = w.shape[0], pixels = shape.dropFirst(2).reduce(1, *)
            let xScale = try c.input(1).asFloats, wScale = try c.input(4).asFloats, yScale = try c.input(6).asFloats
            guard xScale.count == 1, yScale.count == 1, wScale.count == 1 || wScale.count == channels else {
                throw RuntimeError(.badShape, "QLinearConv takes per-tensor scales (the weight's may be per output channel)")
            }
            if let bias = c.optionalInput(8) {
                let b = bias.asInts
                guard b.count == channels else { throw RuntimeError(.badShape, "B has \(b.count) values for \(channels) output channels") }
                for i in acc.indices { acc[i] += b[i / pixels % channels] }
            }
            let bounds = try range(of: yZero.type), z = Double(yZero.asInts.first ?? 0)
            let y = acc.enumerated().map { i, v -> Int64 in
                let multiplier = Double(xScale[0]) * Double(wScale.count == 1 ? wScale[0] : wScale[i / pixels % channels]) / Double(yScale[0])
                let q = (Double(v) * multiplier).rounded(.toNearestOrEven) + z
                return Int64(min(max(q, Double(bounds.lowerBound)), Double(bounds.upperBound)))
            }
            return [Value(y, shape: shape, type: yZero.type)]
        }
        // onnxruntime's com.microsoft ops, which its quantization tool writes into ordinary models.
        t["com.microsoft:MatMulIntegerToFloat"] = { c in
            let a = try c.input(0), b = try c.input(1)
            let product = try MatMulShape(a.shape, b.shape)
            let acc = try integerProduct(a, b, product, aZero: c.optionalInput(4), bZero: c.optionalInput(5))
            return [try scaled(acc, product, aScale: try c.input(2).asFloats, bScale: try c.input(3).asFloats, bias: c.optionalInput(6))]
        }
        t["com.microsoft:DynamicQuantizeMatMul"] = { c in
            let a = try c.input(0), b = try c.input(1)
            let (codes, scale, zero) = quantizeDynamically(try c.floats(0))
            let product = try MatMulShape(a.shape, b.shape)
            let acc = try integerProduct(Value(codes, shape: a.shape, type: .uint8), b, product,
                                         aZero: Value([zero], shape: [], type: .uint8), bZero: c.optionalInput(3))
            return [try scaled(acc, product, aScale: [scale], bScale: try c.input(2).asFloats, bias: c.optionalInput(4))]
        }
        t["com.microsoft:QGemm"] = { c in
            var a = try c.input(0), b = try c.input(3)
            if c.int("transA", 0) != 0 { a = ShapeOps.transpose(a, [1, 0]) }
            if c.int("transB", 0) != 0 { b = ShapeOps.transpose(b, [1, 0]) }
            guard a.shape.count == 2, b.shape.count == 2 else { throw RuntimeError(.badShape, "QGemm takes 2-D A and B") }
            let product = try MatMulShape(a.shape, b.shape)
            var acc = try integerProduct(a, b, product, aZero: c.optionalInput(2), bZero: c.optionalInput(5))
            if let bias = c.optionalInput(6) {   // int32, in the accumulator's scale
                let (sum, _) = try Broadcast.apply(acc, product.shape, bias.asInts, bias.shape, +)
                guard sum.count == acc.count else { throw RuntimeError(.badShape, "C \(bias.shape) does not broadcast to \(product.shape)") }
                acc = sum
            }
            let alpha = c.float("alpha", 1)
            var y = try scaled(acc, product, aScale: try c.input(1).asFloats.map { $0 * alpha }, bScale: try c.input(4).asFloats, bias: nil)
            if let yScale = c.optionalInput(7)?.asFloats.first {
                let yZero = c.optionalInput(8)
                let type = yZero?.type ?? .uint8, z = Double(yZero?.asInts.first ?? 0), bounds = try range(of: type)
                y = Value(y.asFloats.map { Int64(min(max((Double($0) / Double(yScale)).rounded(.toNearestOrEven) + z, Double(bounds.lowerBound)), Double(bounds.upperBound))) },
                          shape: y.shape, type: type)
            }
            return [y]
        }
        return t
    }

    /// An integer product scaled to float: by A's scale and B's (per tensor or per column),
    /// plus an optional float bias per column.
    static func scaled(_ acc: [Int64], _ p: MatMulShape, aScale: [Float], bScale: [Float], bias: Value?) throws -> Value {
        let b = bias?.asFloats
        guard aScale.count == 1, bScale.count == 1 || bScale.count == p.n, b == nil || b!.count == p.n else {
            throw RuntimeError(.badShape, "scales must be per tensor (B's may be per column) and the bias one value per column")
        }
        let y = acc.enumerated().map { i, v -> Float in
            let column = i % max(p.n, 1)
            return Float(v) * (aScale[0] * (bScale.count == 1 ? bScale[0] : bScale[column])) + (b?[column] ?? 0)
        }
        return Value(y, shape: p.shape)
    }

    /// uint8 codes for `v` with one scale and zero point from its range, which always includes 0
    /// so that 0 is exact; an all-zero range takes scale 1, as onnxruntime does.
    static func quantizeDynamically(_ v: [Float]) -> (codes: [Int64], scale: Float, zeroPoint: Int64) {
        let low = min(0, v.min() ?? 0), high = max(0, v.max() ?? 0)
        let scale = high == low ? 1 : (high - low) / 255
        let zeroPoint = min(max((0 - low / scale).rounded(.toNearestOrEven), 0), 255)
        let codes = v.map { Int64(min(max(($0 / scale).rounded(.toNearestOrEven) + zeroPoint, 0), 255)) }
        return (codes, scale, Int64(zeroPoint))
    }

    /// The codes an integer type holds.
    static func range(of type: DataType) throws -> ClosedRange<Int64> {
        switch type {
        case .int4: return -8 ... 7
        case .uint4: return 0 ... 15
        case .int8: return -128 ... 127
        case .uint8: return 0 ... 255
        case .int16: return -32768 ... 32767
        case .uint16: return 0 ... 65535
        case .int32: return Int64(Int32.min) ... Int64(Int32.max)
        default: throw RuntimeError(.unsupportedType, "quantization to \(type) is not supported")
        }
    }

    /// For each element of `shape`, the index of its scale (and zero point): one scale for the
    /// tensor; a 1-D scale along `axis`; or, with `block_size`, a scale of the same rank with
    /// `axis` divided into blocks.
    static func scaleMap(_ c: NodeContext, _ shape: [Int], _ scaleShape: [Int]) throws -> [Int] {
        let count = try elementCount(shape)
        let scales = scaleShape.reduce(1, *)
        if scales == 1 && scaleShape.count <= 1 { return [Int](repeating: 0, count: count) }
        let axis = try normalizedAxis(c.int("axis", 1), rank: shape.count)
        let block = c.int("block_size", 0)
        let strides = Broadcast.strides(shape)
        if block <= 0 {
            guard scaleShape == [shape[axis]] else {
                throw RuntimeError(.badShape, "a per-axis scale must be [\(shape[axis])] for axis \(axis) of \(shape), got \(scaleShape)")
            }
            return (0 ..< count).map { $0 / strides[axis] % shape[axis] }
        }
        guard scaleShape.count == shape.count, scaleShape.indices.allSatisfy({ $0 == axis ? scaleShape[$0] == (shape[$0] + block - 1) / block : scaleShape[$0] == shape[$0] }) else {
            throw RuntimeError(.badShape, "a blocked scale for \(shape) with block size \(block) on axis \(axis) cannot be \(scaleShape)")
        }
        let scaleStrides = Broadcast.strides(scaleShape)
        return (0 ..< count).map { i in
            shape.indices.reduce(0) { sum, d in
                let coordinate = i / strides[d] % shape[d]
                return sum + (d == axis ? coordinate / block : coordinate) * scaleStrides[d]
            }
        }
    }

    /// `(A - a0) · (B - b0)` in Int64: a0 per tensor or per row of A, b0 per tensor or per
    /// column of B.
    static func integerProduct(_ a: Value, _ b: Value, _ p: MatMulShape, aZero: Value?, bZero: Value?) throws -> [Int64] {
        guard case .int(let x) = a.elements, case .int(let w) = b.elements else {
            throw RuntimeError(.unsupportedType, "integer products take integer tensors, not \(a.type) and \(b.type)")
        }
        let az = aZero?.asInts ?? [0], bz = bZero?.asInts ?? [0]
        guard az.count == 1 || az.count == p.m, bz.count == 1 || bz.count == p.n else {
            throw RuntimeError(.badShape, "zero points must be per tensor, per row of A or per column of B")
        }
        var y = [Int64](repeating: 0, count: try elementCount(p.shape))
        for (batch, (ab, bb)) in zip(p.aBatches, p.bBatches).enumerated() {
            for i in 0 ..< p.m {
                let a0 = az.count == 1 ? az[0] : az[i]
                for kk in 0 ..< p.k {
                    let left = x[(ab * p.m + i) * p.k + kk] - a0
                    guard left != 0 else { continue }
                    let row = (bb * p.k + kk) * p.n, out = (batch * p.m + i) * p.n
                    for j in 0 ..< p.n { y[out + j] += left * (w[row + j] - (bz.count == 1 ? bz[0] : bz[j])) }
                }
            }
        }
        return y
    }

    /// `Σ (x − x0)(w − w0)` over each convolution window, in Int64 (ConvInteger, QLinearConv):
    /// x0 per tensor, w0 per tensor or per output channel; padding holds x0, so adds nothing.
    static func integerConv(_ c: NodeContext, x: Value, w: Value, xZero: Value?, wZero: Value?) throws -> (acc: [Int64], shape: [Int]) {
        guard case .int(let xv) = x.elements, case .int(let wv) = w.elements else {
            throw RuntimeError(.unsupportedType, "integer convolutions take integer tensors, not \(x.type) and \(w.type)")
        }
        let group = c.int("group", 1)
        guard x.shape.count >= 3, w.shape.count == x.shape.count, group >= 1, x.shape[1] == w.shape[1] * group, w.shape[0] % group == 0 else {
            throw RuntimeError(.badShape, "input \(x.shape) and weight \(w.shape) do not fit a convolution of \(group) group(s)")
        }
        let window = try ConvolutionOps.Window(c, input: Array(x.shape.dropFirst(2)), kernel: c.ints("kernel_shape") ?? Array(w.shape.dropFirst(2)))
        let x0 = xZero?.asInts ?? [0], w0 = wZero?.asInts ?? [0]
        let (batch, channelsIn, channelsOut) = (x.shape[0], x.shape[1], w.shape[0])
        guard x0.count == 1, w0.count == 1 || w0.count == channelsOut else {
            throw RuntimeError(.badShape, "zero points must be per tensor (the weight's may be per output channel)")
        }
        let (index, _) = window.sources()
        let taps = window.taps, outputs = window.outputCount, pixels = x.shape.dropFirst(2).reduce(1, *)
        let perGroupIn = channelsIn / group, perGroupOut = channelsOut / group
        let shape = [batch, channelsOut] + window.output
        var acc = [Int64](repeating: 0, count: try elementCount(shape))
        for n in 0 ..< batch {
            for m in 0 ..< channelsOut {
                let g = m / perGroupOut, wz = w0.count == 1 ? w0[0] : w0[m], out = (n * channelsOut + m) * outputs
                for ci in 0 ..< perGroupIn {
                    let plane = (n * channelsIn + g * perGroupIn + ci) * pixels
                    for t in 0 ..< taps {
                        let weight = wv[(m * perGroupIn + ci) * taps + t] - wz
                        guard weight != 0 else { continue }
                        for o in 0 ..< outputs {
                            let source = Int(index[t * outputs + o])
                            if source >= 0 { acc[out + o] += weight * (xv[plane + source] - x0[0]) }
                        }
                    }
                }
            }
        }
        return (acc, shape)
    }
}
