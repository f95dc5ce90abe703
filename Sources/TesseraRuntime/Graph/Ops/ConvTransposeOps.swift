import Tessera

/// ConvTranspose over `[N, C, spatial...]`: each input pixel scatters its channels, through the
/// weight `[C, M/group, k...]`, into the output window it maps to (the adjoint of Conv).
enum ConvTransposeOps {
    static var table: [String: OpKernel] {
        // Generic over the precision: float64 in Double, the rest in Float.
        ["ConvTranspose": { c in [try c.isDouble(0) ? convTranspose(c, Double.self) : convTranspose(c, Float.self)] }]
    }

    /// Output extents and leading pads, from `output_shape` (or auto_pad) or from `pads`.
    struct Geometry {
        var output: [Int] = [], padBegin: [Int] = []
        let strides: [Int], dilations: [Int], kernel: [Int]

        init(_ c: NodeContext, input: [Int], kernel: [Int]) throws {
            let r = input.count
            self.kernel = kernel
            strides = c.ints("strides") ?? [Int](repeating: 1, count: r)
            dilations = c.ints("dilations") ?? [Int](repeating: 1, count: r)
            let outputPadding = c.ints("output_padding") ?? [Int](repeating: 0, count: r)
            let autoPad = c.string("auto_pad", "NOTSET")
            var requested = c.ints("output_shape")
            if let shape = requested, shape.count == r + 2 { requested = Array(shape.dropFirst(2)) }
            let small = { (v: [Int], low: Int) -> Bool in v.allSatisfy { $0 >= low && $0 < 1 << 20 } }
            guard strides.count == r, dilations.count == r, outputPadding.count == r, requested?.count ?? r == r,
                  small(strides, 1), small(dilations, 1), small(kernel, 1), small(outputPadding, 0), input.allSatisfy({ $0 < 1 << 32 }) else {
                throw RuntimeError(.badShape, "strides, dilations, output_padding, output_shape or kernel do not fit \(r) spatial dims")
            }
            let full: [Int] = (0 ..< r).map { d in
                let span: Int = (kernel[d] - 1) * dilations[d] + 1
                return strides[d] * (input[d] - 1) + outputPadding[d] + span
            }
            if autoPad == "SAME_UPPER" || autoPad == "SAME_LOWER" {
                output = requested ?? (0 ..< r).map { input[$0] * strides[$0] }
                padBegin = (0 ..< r).map { d in
                    let total = full[d] - output[d]
                    return autoPad == "SAME_UPPER" ? total / 2 : total - total / 2
                }
            } else {
                // Explicit pads (default 0); an explicit output_shape then sets the extent, as
                // the ONNX reference and its node tests do.
                let pads = c.ints("pads") ?? [Int](repeating: 0, count: 2 * r)
                guard pads.count == 2 * r, pads.allSatisfy({ $0 >= 0 && $0 < 1 << 32 }) else { throw RuntimeError(.badShape, "pads \(pads) do not fit \(r) spatial dims") }
                padBegin = Array(pads.prefix(r))
                output = requested ?? (0 ..< r).map { d -> Int in full[d] - pads[d] - pads[d + r] }
            }
            guard output.allSatisfy({ $0 >= 0 }) else { throw RuntimeError(.badShape, "output shape \(output) is negative") }
        }
    }

    static func convTranspose<T: BinaryFloatingPoint>(_ c: NodeContext, _: T.Type) throws -> Value {
        let x = try c.input(0), w = try c.input(1)
        let input = try c.floats(0, as: T.self), weights = try c.floats(1, as: T.self)
        let r = x.shape.count - 2
        guard r >= 1, w.shape.count == r + 2 else { throw RuntimeError(.badShape, "ConvTranspose of \(x.shape) with weight \(w.shape)") }
        let (batch, channels) = (x.shape[0], x.shape[1]), groups = c.int("group", 1)
        guard groups >= 1, channels % groups == 0, w.shape[0] == channels else {
            throw RuntimeError(.badShape, "weight \(w.shape) does not fit \(channels) input channels in \(groups) groups")
        }
        let groupIn = channels / groups, groupOut = w.shape[1], outChannels = groupOut * groups
        let kernel = Array(w.shape.dropFirst(2))
        let g = try Geometry(c, input: Array(x.shape.dropFirst(2)), kernel: kernel)
        let pixels = x.shape.dropFirst(2).reduce(1, *), outPixels = try elementCount(g.output), taps = kernel.reduce(1, *)
        // For each (tap, input pixel): the output pixel it lands on, or -1 outside. Made once per
        // input shape (with the transposed float32 weights, when they are constant).
        _ = try elementCount([pixels, taps])
        let makeTarget = { () -> [Int] in
            let inStrides = Broadcast.strides(Array(x.shape.dropFirst(2))), tapStrides = Broadcast.strides(kernel)
            let outStrides = Broadcast.strides(g.output)
            var target = [Int](repeating: -1, count: pixels * taps)
            for p in 0 ..< pixels {
                for t in 0 ..< taps {
                    var flat = 0, inside = true
                    for d in 0 ..< r {
                        let o = (p / inStrides[d] % x.shape[d + 2]) * g.strides[d] - g.padBegin[d] + (t / tapStrides[d] % kernel[d]) * g.dilations[d]
                        if o < 0 || o >= g.output[d] { inside = false; break }
                        flat += o * outStrides[d]
                    }
                    if inside { target[t * pixels + p] = flat }
                }
            }
            return target
        }
        let transpose = { () -> [Float]? in
            T.self == Float.self ? transposedWeights(unsafeBitCast(weights, to: [Float].self), groups: groups, groupIn: groupIn, columns: groupOut * taps) : nil
        }
        let (target, wt) = c.isConstant(1) ? c.cache.value(for: x.shape + w.shape + g.output + g.padBegin) { (makeTarget(), transpose()) }
            : (makeTarget(), transpose())
        if let bias = c.optionalInput(2), bias.count != outChannels {
            throw RuntimeError(.badShape, "bias has \(bias.count) values for \(outChannels) output channels")
        }
        let count = try elementCount([batch, outChannels] + g.output)
        if let wt {
            // Float32: per group, every (output channel, tap) row for every input pixel as one
            // GEMM (Wᵀ · X), then each product added where its pixel and tap land. (The output
            // made here, not a generic one cast to [Float]: mutating that cast copied it.)
            var y = ConvolutionOps.biased(c, Float.self, channels: outChannels, pixels: outPixels, count: count)
            scatterProducts(unsafeBitCast(input, to: [Float].self), wt, target, into: &y, batch: batch, groups: groups, groupIn: groupIn,
                            groupOut: groupOut, taps: taps, pixels: pixels, outPixels: outPixels)
            return Value(y, shape: [batch, outChannels] + g.output, type: x.type)
        }
        var y = ConvolutionOps.biased(c, T.self, channels: outChannels, pixels: outPixels, count: count)
        for n in 0 ..< batch {
            for group in 0 ..< groups {
                for ci in 0 ..< groupIn {
                    let channel = group * groupIn + ci
                    let plane = (n * channels + channel) * pixels
                    for m in 0 ..< groupOut {
                        let out = (n * outChannels + group * groupOut + m) * outPixels
                        let kernelBase = (channel * groupOut + m) * taps
                        for p in 0 ..< pixels {
                            let v = input[plane + p]
                            if v == 0 { continue }
                            for t in 0 ..< taps {
                                let o = target[t * pixels + p]
                                if o >= 0 { y[out + o] += v * weights[kernelBase + t] }
                            }
                        }
                    }
                }
            }
        }
        return Value(floating: y, shape: [batch, outChannels] + g.output, type: x.type)
    }

    /// Per group, the weight's `[groupIn, columns]` block transposed to `[columns, groupIn]`.
    static func transposedWeights(_ w: [Float], groups: Int, groupIn: Int, columns: Int) -> [Float] {
        var out = [Float](repeating: 0, count: w.count)
        guard !w.isEmpty else { return out }
        w.withUnsafeBufferPointer { w in
            out.withUnsafeMutableBufferPointer { out in
                for g in 0 ..< groups {
                    let base = g * groupIn * columns
                    transposeMatrix(w.baseAddress! + base, rows: groupIn, columns: columns, ld: columns, into: out.baseAddress! + base, ld: groupIn)
                }
            }
        }
        return out
    }

    /// `y[n, m, target] += (Wᵀ·X)[m·taps + t, p]` for every pixel p and tap t that lands inside.
    static func scatterProducts(_ input: [Float], _ wt: [Float], _ target: [Int], into y: inout [Float], batch: Int, groups: Int,
                                groupIn: Int, groupOut: Int, taps: Int, pixels: Int, outPixels: Int) {
        let rows = groupOut * taps
        var products = [Float](unsafeUninitializedCapacity: rows * pixels) { $1 = rows * pixels }   // every one written by denseProduct
        input.withUnsafeBufferPointer { x in
            wt.withUnsafeBufferPointer { w in target.withUnsafeBufferPointer { target in
                products.withUnsafeMutableBufferPointer { products in
                    y.withUnsafeMutableBufferPointer { y in
                        for n in 0 ..< batch {
                            for g in 0 ..< groups {
                                denseProduct(w.baseAddress! + g * rows * groupIn, x.baseAddress! + (n * groups + g) * groupIn * pixels,
                                             products.baseAddress!, m: rows, k: groupIn, n: pixels)
                                for m in 0 ..< groupOut {
                                    let out = y.baseAddress! + (n * groups * groupOut + g * groupOut + m) * outPixels
                                    for t in 0 ..< taps {
                                        // The tap's row of products and where each lands, both in pixel order.
                                        let row = products.baseAddress! + (m * taps + t) * pixels, lands = target.baseAddress! + t * pixels
                                        for p in 0 ..< pixels where lands[p] >= 0 { out[lands[p]] += row[p] }
                                    }
                                }
                            }
                        }
                    }
                }
            } }
        }
    }
}
