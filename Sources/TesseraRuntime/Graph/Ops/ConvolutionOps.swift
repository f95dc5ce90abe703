import Tessera

/// Conv and the pools over `[N, C, spatial...]` with any number of spatial dims.
///
/// Conv is kn2row: the weight's operator view (spec §7.3, reduction over input channels) turns
/// each input pixel's channels into every (output channel, tap) product at once; each output
/// pixel then sums, over the taps, the product computed at the input pixel that tap reads.
/// So a stored sparse or quantized weight runs through its own kernel, never densified.
enum ConvolutionOps {
    static var table: [String: OpKernel] {
        var t: [String: OpKernel] = [:]
        t["Conv"] = { [try conv($0)] }
        t["MaxPool"] = { [try pool($0, average: false)] }
        t["AveragePool"] = { [try pool($0, average: true)] }
        t["GlobalAveragePool"] = { [try globalPool($0, average: true)] }
        t["GlobalMaxPool"] = { [try globalPool($0, average: false)] }
        return t
    }

    /// Output extent and padding of a sliding window, per spatial dim.
    struct Window {
        var input: [Int], kernel: [Int], strides: [Int], dilations: [Int]
        var padBegin: [Int], padEnd: [Int], output: [Int]

        init(_ c: NodeContext, input: [Int], kernel: [Int], ceilMode: Bool = false) throws {
            let r = input.count
            self.input = input
            self.kernel = kernel
            strides = c.ints("strides") ?? [Int](repeating: 1, count: r)
            dilations = c.ints("dilations") ?? [Int](repeating: 1, count: r)
            let pads = c.ints("pads") ?? [Int](repeating: 0, count: 2 * r)
            guard kernel.count == r, strides.count == r, dilations.count == r, pads.count == 2 * r,
                  strides.allSatisfy({ $0 > 0 }), dilations.allSatisfy({ $0 > 0 }) else {
                throw RuntimeError(.badShape, "kernel, strides, dilations or pads do not fit \(r) spatial dims")
            }
            padBegin = Array(pads.prefix(r))
            padEnd = Array(pads.suffix(r))
            output = []
            let autoPad = c.string("auto_pad", "NOTSET")
            for d in 0 ..< r {
                let span = (kernel[d] - 1) * dilations[d] + 1
                switch autoPad {
                case "SAME_UPPER", "SAME_LOWER":
                    let out = (input[d] + strides[d] - 1) / strides[d]
                    let total = max(0, (out - 1) * strides[d] + span - input[d])
                    padBegin[d] = autoPad == "SAME_UPPER" ? total / 2 : total - total / 2
                    padEnd[d] = total - padBegin[d]
                case "VALID":
                    padBegin[d] = 0; padEnd[d] = 0
                default: break
                }
                let room = input[d] + padBegin[d] + padEnd[d] - span
                guard room >= 0 else { throw RuntimeError(.badShape, "window \(span) is larger than padded input \(input[d] + padBegin[d] + padEnd[d])") }
                var out = (ceilMode ? (room + strides[d] - 1) / strides[d] : room / strides[d]) + 1
                // A window may not start in the end padding (ceil_mode).
                if ceilMode, (out - 1) * strides[d] >= input[d] + padBegin[d] { out -= 1 }
                output.append(out)
            }
        }

        var taps: Int { kernel.reduce(1, *) }
        var outputCount: Int { output.reduce(1, *) }

        /// For tap t and output pixel o: the input pixel read (flat), or -1 in the padding;
        /// `[taps][outputs]`. `inPadding` marks taps inside the declared pads (AveragePool).
        func sources(countPadding: Bool = false) -> (index: [Int32], insidePads: [Bool]) {
            let r = input.count
            var index = [Int32](repeating: -1, count: taps * outputCount)
            var inside = countPadding ? [Bool](repeating: false, count: taps * outputCount) : []
            let inStrides = Broadcast.strides(input)
            let tapStrides = Broadcast.strides(kernel), outStrides = Broadcast.strides(output)
            for t in 0 ..< taps {
                for o in 0 ..< outputCount {
                    var flat = 0, valid = true, padded = true
                    for d in 0 ..< r {
                        let p = (o / outStrides[d] % output[d]) * strides[d] - padBegin[d] + (t / tapStrides[d] % kernel[d]) * dilations[d]
                        if p < 0 || p >= input[d] { valid = false }
                        if p < -padBegin[d] || p >= input[d] + padEnd[d] { padded = false }
                        flat += p * inStrides[d]
                    }
                    if valid { index[t * outputCount + o] = Int32(flat) }
                    if countPadding { inside[t * outputCount + o] = padded }
                }
            }
            return (index, inside)
        }
    }

    static func conv(_ c: NodeContext) throws -> Value {
        let x = try c.input(0)
        let input = try c.floats(0)
        guard x.shape.count >= 3 else { throw RuntimeError(.badShape, "Conv input \(x.shape) needs [N, C, spatial...]") }
        let weightShape = try c.weight?.tensor.shape ?? c.input(1).shape
        guard weightShape.count == x.shape.count else { throw RuntimeError(.badShape, "weight \(weightShape) does not fit input \(x.shape)") }
        let (batch, channels) = (x.shape[0], x.shape[1])
        let outChannels = weightShape[0], groups = c.int("group", 1)
        guard groups >= 1, channels % groups == 0, outChannels % groups == 0, weightShape[1] == channels / groups else {
            throw RuntimeError(.badShape, "weight \(weightShape) does not fit \(channels) input channels in \(groups) groups")
        }
        let window = try Window(c, input: Array(x.shape.dropFirst(2)), kernel: c.ints("kernel_shape") ?? Array(weightShape.dropFirst(2)))
        guard window.kernel == Array(weightShape.dropFirst(2)) else { throw RuntimeError(.badShape, "kernel_shape disagrees with weight \(weightShape)") }
        let groupIn = channels / groups, groupOut = outChannels / groups
        let taps = window.taps, pixels = x.shape.dropFirst(2).reduce(1, *), outPixels = window.outputCount

        // One operator for all groups (the stored weight), or one per group (a dense weight,
        // whose groups are contiguous slices of output channels).
        let operators: [LinearOperator]
        if let op = c.weight {
            operators = [op]
        } else {
            let w = try c.floats(1)
            let per = groupOut * groupIn * taps
            operators = try (0 ..< groups).map { g in
                try LinearOperator.dense(Array(w[g * per ..< (g + 1) * per]), shape: [groupOut] + Array(weightShape.dropFirst()),
                                         reductionAxis: 1, name: c.node.outputs.first ?? "")
            }
        }
        let bias = c.optionalInput(2)?.asFloats
        let (sources, _) = window.sources()
        var y = [Float](repeating: 0, count: batch * outChannels * outPixels)
        var pixelsChannels = [Float](repeating: 0, count: pixels * groupIn)
        for n in 0 ..< batch {
            for g in 0 ..< groups {
                // Channel-last activations of this image and group: [pixels, groupIn].
                for ci in 0 ..< groupIn {
                    let plane = ((n * channels) + g * groupIn + ci) * pixels
                    for p in 0 ..< pixels { pixelsChannels[p * groupIn + ci] = input[plane + p] }
                }
                let op = operators.count == 1 ? operators[0] : operators[g]
                let products = try op.apply(pixelsChannels, batch: pixels, threads: c.threads)   // [pixels, op.rows]
                let firstChannel = operators.count == 1 ? g * groupOut : 0
                products.withUnsafeBufferPointer { prod in
                    for co in 0 ..< groupOut {
                        let outChannel = g * groupOut + co
                        let base = (n * outChannels + outChannel) * outPixels
                        let row0 = (firstChannel + co) * taps
                        let b = bias?[outChannel] ?? 0
                        for o in 0 ..< outPixels { y[base + o] = b }
                        for t in 0 ..< taps {
                            let column = row0 + t
                            for o in 0 ..< outPixels {
                                let s = Int(sources[t * outPixels + o])
                                if s >= 0 { y[base + o] += prod[s * op.rows + column] }
                            }
                        }
                    }
                }
            }
        }
        return Value(y, shape: [batch, outChannels] + window.output, type: x.type)
    }

    static func pool(_ c: NodeContext, average: Bool) throws -> Value {
        let x = try c.input(0)
        let v = try c.floats(0)
        guard x.shape.count >= 3, let kernel = c.ints("kernel_shape") else { throw RuntimeError(.badShape, "pool needs [N, C, spatial...] and kernel_shape") }
        let window = try Window(c, input: Array(x.shape.dropFirst(2)), kernel: kernel, ceilMode: c.int("ceil_mode", 0) != 0)
        let includePad = average && c.int("count_include_pad", 0) != 0
        let (sources, inside) = window.sources(countPadding: includePad)
        let planes = x.shape[0] * x.shape[1], pixels = x.shape.dropFirst(2).reduce(1, *), outPixels = window.outputCount
        var y = [Float](repeating: 0, count: planes * outPixels)
        for plane in 0 ..< planes {
            let base = plane * pixels
            for o in 0 ..< outPixels {
                var acc: Float = average ? 0 : -.infinity
                var count = 0
                for t in 0 ..< window.taps {
                    let s = Int(sources[t * outPixels + o])
                    if s >= 0 {
                        acc = average ? acc + v[base + s] : max(acc, v[base + s])
                        count += 1
                    } else if includePad && inside[t * outPixels + o] {
                        count += 1
                    }
                }
                y[plane * outPixels + o] = average ? acc / Float(max(count, 1)) : acc
            }
        }
        return Value(y, shape: Array(x.shape.prefix(2)) + window.output, type: x.type)
    }

    static func globalPool(_ c: NodeContext, average: Bool) throws -> Value {
        let x = try c.input(0)
        let v = try c.floats(0)
        guard x.shape.count >= 2 else { throw RuntimeError(.badShape, "pool needs [N, C, ...]") }
        let pixels = x.shape.dropFirst(2).reduce(1, *)
        let y = (0 ..< x.shape[0] * x.shape[1]).map { plane in
            let run = v[plane * pixels ..< (plane + 1) * pixels]
            return average ? run.reduce(0, +) / Float(max(pixels, 1)) : (run.max() ?? -.infinity)
        }
        return Value(y, shape: Array(x.shape.prefix(2)) + [Int](repeating: 1, count: x.shape.count - 2), type: x.type)
    }
}
