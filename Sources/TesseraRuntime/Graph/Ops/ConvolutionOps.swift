import CTesseraKernels
import Foundation
import Tessera

/// Conv and the pools over `[N, C, spatial...]` with any number of spatial dims.
///
/// Conv multiplies its float32 weights (decoded once, whatever the file stores) through
/// `LinearOperator`s on im2col columns, or with the depthwise kernel.
enum ConvolutionOps {
    static var table: [String: OpKernel] {
        var t: [String: OpKernel] = [:]
        t["Conv"] = { [try conv($0)] }
        // Pooling is generic over the precision: float64 in Double, the rest in Float.
        t["MaxPool"] = { c in
            if let pooled = try maxPool2D(c) { return pooled }
            return try c.isDouble(0) ? pool(c, .max, Double.self) : pool(c, .max, Float.self)
        }
        t["AveragePool"] = { c in try c.isDouble(0) ? pool(c, .average, Double.self) : pool(c, .average, Float.self) }
        t["LpPool"] = { c in
            let p = Double(c.int("p", 2))
            return try c.isDouble(0) ? pool(c, .lp(p), Double.self) : pool(c, .lp(p), Float.self)
        }
        t["GlobalAveragePool"] = { c in [try c.isDouble(0) ? globalPool(c, average: true, Double.self) : globalPool(c, average: true, Float.self)] }
        t["GlobalMaxPool"] = { c in [try c.isDouble(0) ? globalPool(c, average: false, Double.self) : globalPool(c, average: false, Float.self)] }
        t["CausalConvWithState"] = { c in try causalConvWithState(c) }
        return t
    }

    /// CausalConvWithState (opset 27): a depthwise 1-D convolution over `[B, C, L]` that sees
    /// only the current and earlier positions, the `k − 1` before the first taken from
    /// `past_state` (zeros without it); optionally followed by SiLU. Its second output is the
    /// last `k − 1` positions, the state for the next call.
    static func causalConvWithState(_ c: NodeContext) throws -> [Value] {
        let input = try c.input(0), x = try c.floats(0), w = try c.floats(1)
        let activation = c.string("activation", "none")
        guard ["none", "silu", "swish"].contains(activation) else { throw RuntimeError(.unsupportedOp, "activation '\(activation)' is not none, silu or swish") }
        let weight = try c.input(1)
        guard input.shape.count == 3, weight.shape.count == 3, weight.shape[0] == input.shape[1], weight.shape[1] == 1, weight.shape[2] >= 1 else {
            throw RuntimeError(.badShape, "input must be [B, C, L] and weight [C, 1, k]; they are \(input.shape) and \(weight.shape)")
        }
        let (b, channels, length, k) = (input.shape[0], input.shape[1], input.shape[2], weight.shape[2])
        let bias = try c.optionalInput(2).map { bias -> [Float] in
            guard bias.shape == [channels] else { throw RuntimeError(.badShape, "bias is \(bias.shape); it must be [\(channels)]") }
            return bias.asFloats
        }
        let past = try c.optionalInput(3).map { past -> [Float] in
            guard past.shape == [b, channels, k - 1] else { throw RuntimeError(.badShape, "past_state is \(past.shape); it must be [\(b), \(channels), \(k - 1)]") }
            return past.asFloats
        }
        let padded = length + k - 1
        var out = [Float](repeating: 0, count: try elementCount(input.shape))
        var present = [Float](repeating: 0, count: try elementCount([b, channels, k - 1]))
        var row = [Float](repeating: 0, count: padded)
        for n in 0 ..< b * channels {
            let channel = n % channels
            for j in 0 ..< k - 1 { row[j] = past?[n * (k - 1) + j] ?? 0 }
            for l in 0 ..< length { row[k - 1 + l] = x[n * length + l] }
            for l in 0 ..< length {
                var sum = bias?[channel] ?? 0
                for j in 0 ..< k { sum += w[channel * k + j] * row[l + j] }
                out[n * length + l] = activation == "none" ? sum : sum / (1 + exp(-sum))
            }
            for j in 0 ..< k - 1 { present[n * (k - 1) + j] = row[padded - (k - 1) + j] }
        }
        return [Value(out, shape: input.shape, type: input.type), Value(present, shape: [b, channels, k - 1], type: input.type)]
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
            guard kernel.allSatisfy({ $0 >= 1 }), pads.allSatisfy({ $0 >= 0 }) else {
                throw RuntimeError(.badShape, "kernel \(kernel) and pads \(pads) must be positive and non-negative")
            }
            for d in 0 ..< r {
                let (extent, overflow) = (kernel[d] - 1).multipliedReportingOverflow(by: dilations[d])
                guard !overflow, extent < Int.max / 4, input[d] < Int.max / 4, pads[d] < Int.max / 4, pads[d + r] < Int.max / 4 else {
                    throw RuntimeError(.tooLarge, "kernel \(kernel), dilations \(dilations) and pads \(pads) overflow")
                }
                let span = extent + 1
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
            _ = try elementCount(kernel + output)   // the tap-by-pixel index table
        }

        var taps: Int { kernel.reduce(1, *) }
        var outputCount: Int { output.reduce(1, *) }

        /// The same window over two dims with its rows along the long one: a 1-D window as one
        /// row, and a 2-D window over a single column (how jax2tf exports a 1-D convolution,
        /// magika's) turned into one. Pixels and taps keep their order. Nil above two dims.
        var planar: Window? {
            var w = self
            switch input.count {
            case 1:
                (w.input, w.kernel, w.strides, w.dilations) = ([1] + input, [1] + kernel, [1] + strides, [1] + dilations)
                (w.padBegin, w.padEnd, w.output) = ([0] + padBegin, [0] + padEnd, [1] + output)
            case 2 where input[1] == 1 && kernel[1] == 1 && output[1] == 1 && padBegin[1] == 0:
                (w.input, w.kernel, w.strides, w.dilations) = (input.reversed(), kernel.reversed(), strides.reversed(), dilations.reversed())
                (w.padBegin, w.padEnd, w.output) = (padBegin.reversed(), padEnd.reversed(), output.reversed())
            case 2: break
            default: return nil
            }
            return w
        }

        /// For tap t and output pixel o: the input pixel read (flat), or -1 in the padding;
        /// `[taps][outputs]`. `insidePads` (with `countPadding`) marks taps inside the declared pads, for AveragePool's count_include_pad.
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

    /// What a fused Conv applies to its float32 outputs as they are finished, while they are
    /// still in cache: `(plane, offset, values, count)` for outputs `offset ..< offset + count`
    /// of output plane `plane` (image · channels + channel). Called once per output, from the
    /// thread that wrote it.
    /// With `source` (a product buffer and the channel's bias), `values` are not written yet:
    /// each starts as `bias + source[i]`.
    typealias Finisher = (_ plane: Int, _ offset: Int, _ values: UnsafeMutablePointer<Float>, _ count: Int,
                          _ source: (UnsafePointer<Float>, Float)?) -> Void

    /// Conv; `finish`, for float32 inputs, runs on every output once it holds bias + product.
    static func conv(_ c: NodeContext, finish: Finisher? = nil) throws -> Value {
        let x = try c.input(0)
        guard x.shape.count >= 3 else { throw RuntimeError(.badShape, "Conv input \(x.shape) needs [N, C, spatial...]") }
        let weightShape = try c.input(1).shape
        guard weightShape.count == x.shape.count else { throw RuntimeError(.badShape, "weight \(weightShape) does not fit input \(x.shape)") }
        // The window tables and the weight's per-group operators are made once per input shape.
        let plan = c.isConstant(1) ? try c.cache.value(for: x.shape + weightShape) { try ConvPlan(c, input: x.shape, weight: weightShape) }
            : try ConvPlan(c, input: x.shape, weight: weightShape)
        let s = plan.shape
        let shape = [s.batch, s.outChannels] + plan.window.output
        if let bias = c.optionalInput(2), bias.count != s.outChannels {
            throw RuntimeError(.badShape, "bias has \(bias.count) values for \(s.outChannels) output channels")
        }
        // Float64 (whose weights are never stored kernels) convolves directly in Double.
        if x.type == .double {
            var y = biased(c, Double.self, channels: s.outChannels, pixels: s.outPixels, count: try elementCount(shape))
            direct(try c.floats(0, as: Double.self), try c.floats(1, as: Double.self), s, plan.sources.index, into: &y)
            return Value(y, shape: shape)
        }
        let input = try c.floats(0)
        let bias = c.optionalInput(2)?.floating(Float.self) ?? [Float](repeating: 0, count: s.outChannels)
        if s.groupIn == 1 {
            let w = try c.floats(1)
            if let k = KernelDispatch.kernels, plan.window.input.count == 2 {
                let y = [Float](unsafeUninitializedCapacity: try elementCount(shape)) { y, initialized in
                    if let base = y.baseAddress { depthwise2D(k, input, w, bias: bias, s, plan.window, into: base, threads: c.threads, finish: finish) }
                    initialized = y.count
                }
                return Value(y, shape: shape, type: x.type)
            }
            var y = biased(c, Float.self, channels: s.outChannels, pixels: s.outPixels, count: try elementCount(shape))
            direct(input, w, s, plan.sources.index, into: &y)
            if let finish {
                y.withUnsafeMutableBufferPointer { y in
                    for plane in 0 ..< s.batch * s.outChannels { finish(plane, 0, y.baseAddress! + plane * s.outPixels, s.outPixels, nil) }
                }
            }
            return Value(y, shape: shape, type: x.type)
        }
        let operators = try plan.operators ?? ConvPlan.operators(try c.floats(1), s, name: c.node.outputs.first ?? "")
        let y = [Float](unsafeUninitializedCapacity: try elementCount(shape)) { y, initialized in
            if let base = y.baseAddress { im2col(input, operators, s, plan.sources, plan.window, bias: bias, into: base, threads: c.threads, finish: finish) }
            initialized = y.count
        }
        return Value(y, shape: shape, type: x.type)
    }

    /// An output of `count` values, planes of `pixels` (image · channels + channel), each
    /// filled with its channel's bias (the node's input 2, already checked to hold `channels`),
    /// zeros without one. Conv and ConvTranspose.
    static func biased<T: BinaryFloatingPoint>(_ c: NodeContext, _: T.Type, channels: Int, pixels: Int, count: Int) -> [T] {
        guard let bias = c.optionalInput(2)?.floating(T.self), count > 0 else { return [T](repeating: 0, count: count) }
        return [T](unsafeUninitializedCapacity: count) { y, initialized in
            for plane in 0 ..< count / pixels { (y.baseAddress! + plane * pixels).initialize(repeating: bias[plane % channels], count: pixels) }
            initialized = count
        }
    }

    /// What a Conv node needs besides its input: the window, its tap-by-pixel source table and,
    /// for a constant dense weight, one operator per group.
    struct ConvPlan {
        let window: Window
        let sources: TapTable
        let shape: Geometry
        let operators: [LinearOperator]?

        init(_ c: NodeContext, input: [Int], weight: [Int]) throws {
            let (batch, channels) = (input[0], input[1])
            let outChannels = weight[0], groups = c.int("group", 1)
            guard groups >= 1, channels % groups == 0, outChannels % groups == 0, weight[1] == channels / groups else {
                throw RuntimeError(.badShape, "weight \(weight) does not fit \(channels) input channels in \(groups) groups")
            }
            window = try Window(c, input: Array(input.dropFirst(2)), kernel: c.ints("kernel_shape") ?? Array(weight.dropFirst(2)))
            guard window.kernel == Array(weight.dropFirst(2)) else { throw RuntimeError(.badShape, "kernel_shape disagrees with weight \(weight)") }
            sources = TapTable(window)
            shape = Geometry(batch: batch, channels: channels, outChannels: outChannels, groups: groups,
                             pixels: input.dropFirst(2).reduce(1, *), taps: window.taps, outPixels: window.outputCount)
            operators = shape.groupIn > 1 && c.isConstant(1) && !c.isDouble(1) ? try Self.operators(try c.floats(1), shape, name: c.node.outputs.first ?? "") : nil
        }

        /// A dense float weight [Cout, Cin/g, k...] is, per group, a contiguous [Cout/g, Cin/g · taps] matrix.
        static func operators(_ w: [Float], _ s: Geometry, name: String) throws -> [LinearOperator] {
            let depth = s.groupIn * s.taps, size = s.groupOut * depth
            return try (0 ..< s.groups).map { (g: Int) -> LinearOperator in
                let block = Array(w[g * size ..< (g + 1) * size])
                return try LinearOperator.dense(block, shape: [s.groupOut, depth], reductionAxis: 1, name: name)
            }
        }
    }

    /// A window's tap table (`Window.sources`), made on first use: the convolutions that read
    /// their columns in place or from padded planes never need it (making it for every Conv was
    /// a fifth of a PP-OCR detector's first run, perf). A node's plan is used by one thread at a
    /// time, so `index` is read before its work is split among threads.
    final class TapTable: @unchecked Sendable {
        private let window: Window
        private var table: [Int32]?
        init(_ window: Window) { self.window = window }
        var index: [Int32] {
            if let table { return table }
            let made = window.sources().index
            table = made
            return made
        }
    }

    struct Geometry {
        let batch, channels, outChannels, groups, pixels, taps, outPixels: Int
        var groupIn: Int { channels / groups }
        var groupOut: Int { outChannels / groups }
    }

    /// Dense weights: each group's receptive fields as im2col columns (`Cin/g · taps` rows of
    /// output pixels, zeros in the padding) in the transposed layout the GEMM kernel reads, so
    /// its `[Cout/g][pixels]` result is already the output's layout. The columns are read in
    /// place where they are runs of the input (1x1) or of its padded phase planes, else gathered.
    /// Writes every output once, as `bias + product` (the sum a bias-filled output accumulating
    /// the product makes, without filling it first), then `finish`es it.
    static func im2col(_ input: [Float], _ operators: [LinearOperator], _ s: Geometry, _ tapTable: TapTable, _ window: Window,
                       bias: [Float], into y: UnsafeMutablePointer<Float>, threads: Int, finish: Finisher? = nil) {
        let depth = s.groupIn * s.taps, pixels = s.outPixels
        // A 1x1 convolution with stride 1 and no padding reads each input pixel as it is: the
        // input planes are already the columns (`[channels][pixels]`), so whole vectors of
        // pixels need no gathering.
        // (Told by the window: comparing the tap table with the pixels' order on every run was
        // 1.6% of a PP-OCR detector's run, perf.)
        let pointwise = s.taps == 1 && pixels == s.pixels && window.strides.allSatisfy { $0 == 1 } && window.padBegin.allSatisfy { $0 == 0 }
        // Output pixels a block at a time, so that the block's columns (`depth` x `block` floats,
        // about 512 KB) stay in L2 while every output channel's weights pass over them. The whole
        // image's columns at once streamed from memory once per 8 output channels.
        let block = min(roundUp(pixels, vecWidth), max(64, Self.columnBlockFloats / max(depth, 1) / 32 * 32))
        // A window of one or two dims (`planar`) reads each output row's column as a run of a
        // zero-padded copy of the input planes split into phases by the strides
        // (`PaddedPlanes`), not element by element through the tap table; worth it where
        // output rows are long enough.
        let planar = window.planar
        let rows = planar.flatMap { $0.output[1] >= 8 && !pointwise ? PaddedPlanes($0, channels: s.groupIn) : nil }
        let columnOffsets = rows?.columnOffsets(taps: s.taps) ?? []
        let sources = rows == nil ? tapTable.index : []   // gathered columns only
        // Computed on the phase planes' width (`rows.stride` per output row, the last few of
        // each row discarded), every column is one run of them: the GEMM reads them in place
        // and nothing is copied, where that width adds at most a quarter to the products.
        // Blocks are then whole output rows. The copies were a fifth of nudenet's run (perf).
        let (oh, ow, paddedWidth) = (planar?.output[0] ?? 1, planar?.output[1] ?? 1, rows?.stride ?? 0)
        let inPlace = rows != nil && paddedWidth * 4 <= ow * 5
        let blockRows = inPlace ? max(1, block / paddedWidth) : 0
        let blocks = inPlace ? (oh + blockRows - 1) / blockRows : (pixels + block - 1) / block
        let ld = TransposedOperands.leadingDimension(columns: inPlace ? roundUp(blockRows * paddedWidth, vecWidth) : block)
        defer { rows?.deallocate() }
        input.withUnsafeBufferPointer { input in
            sources.withUnsafeBufferPointer { sources in
                bias.withUnsafeBufferPointer { bias in
                    /// Block `b` of image `n`, group `g`, with column and product buffers `xt`
                    /// and `yt`: output pixels `p0 ..< p0 + count`.
                    func run(_ n: Int, _ g: Int, _ b: Int, _ xt: UnsafeMutablePointer<Float>?, _ yt: UnsafeMutablePointer<Float>, threads: Int) {
                        let p0 = inPlace ? b * blockRows * ow : b * block
                        let count = inPlace ? min(blockRows, oh - b * blockRows) * ow : min(block, pixels - p0), columns = roundUp(count, vecWidth)
                        let planes = input.baseAddress! + (n * s.channels + g * s.groupIn) * s.pixels
                        if inPlace, let rows {
                            let outputRows = count / ow, wide = outputRows * paddedWidth
                            columnOffsets.withUnsafeBufferPointer { offsets in
                                let operands = TransposedOperands(columns: roundUp(wide, vecWidth), ld: ld, xt: rows.values + b * blockRows * paddedWidth,
                                                                  yt: yt, rows: offsets.baseAddress!)
                                operators[g].applyTransposed(operands, batch: wide, threads: operators[g].worthwhileThreads(threads, batch: wide))
                            }
                            // Each channel's rows close up from the padded width to the output's,
                            // first to last: a row moves left, over nothing still to be read.
                            for co in 0 ..< s.groupOut {
                                let result = yt + co * ld
                                for r in 1 ..< max(1, outputRows) { copyFloats(result + r * paddedWidth, result + r * ow, count: ow) }
                            }
                        } else if pointwise && count >= vecWidth, let xt {
                            let whole = count / vecWidth * vecWidth
                            operators[g].applyTransposed(TransposedOperands(columns: whole, ld: pixels, xt: planes + p0, yt: yt, yld: ld), batch: whole,
                                                         threads: operators[g].worthwhileThreads(threads, batch: whole))
                            if whole < count {
                                // The last pixels, short of a vector, from a zero-padded copy: read in
                                // place, the last channel's would run past the input's end. (A 14x14
                                // image's 196 pixels copied every column: MobileNets' late stages.)
                                for ci in 0 ..< s.groupIn {
                                    copyFloats(planes + ci * s.pixels + p0 + whole, xt + ci * vecWidth, count: count - whole)
                                    (xt + ci * vecWidth + count - whole).initialize(repeating: 0, count: columns - count)
                                }
                                operators[g].applyTransposed(TransposedOperands(columns: vecWidth, ld: vecWidth, xt: xt, yt: yt + whole, yld: ld),
                                                             batch: vecWidth, threads: 1)
                            }
                        } else if let xt {
                            // One block's GEMM splits among threads; its columns split by channel first.
                            let copiers = Threads.worthwhile(threads, work: depth * count)
                            Threads.split(s.groupIn, threads: copiers) { $0.forEach { ci in
                                for t in 0 ..< s.taps {
                                    let row = xt + (ci * s.taps + t) * ld
                                    if let rows {
                                        rows.copy(from: columnOffsets[ci * s.taps + t], pixels: p0 ..< p0 + count, into: row)
                                    } else {
                                        let plane = planes + ci * s.pixels, tap = sources.baseAddress! + t * pixels + p0
                                        for o in 0 ..< count {
                                            let source = Int(tap[o])
                                            row[o] = source >= 0 ? plane[source] : 0
                                        }
                                    }
                                    (row + count).initialize(repeating: 0, count: columns - count)
                                }
                            } }
                            if count > 1 {
                                operators[g].applyTransposed(TransposedOperands(columns: columns, ld: ld, xt: xt, yt: yt), batch: count,
                                                             threads: operators[g].worthwhileThreads(threads, batch: count))
                            } else {   // one output pixel: a GEMV on the one column, its products down yt's first column
                                let column = (0 ..< depth).map { xt[$0 * ld] }
                                let product = [Float](unsafeUninitializedCapacity: s.groupOut) { product, initialized in
                                    operators[g].apply(column, batch: 1, into: product.baseAddress!, threads: 1)
                                    initialized = s.groupOut
                                }
                                for co in 0 ..< s.groupOut { yt[co * ld] = product[co] }
                            }
                        }
                        // Unwrapped once, not per channel: each unwrapping retained the closure and
                        // released it after the call, an atomic that waited for the epilogue's
                        // stores (swift_release was 5% of orinet's run, perf).
                        if let finish {   // bias + product on the way, in one pass
                            for co in 0 ..< s.groupOut {
                                let channel = g * s.groupOut + co
                                finish(n * s.outChannels + channel, p0, y + (n * s.outChannels + channel) * pixels + p0, count,
                                       (UnsafePointer(yt + co * ld), bias[channel]))
                            }
                        } else {
                            for co in 0 ..< s.groupOut {
                                let channel = g * s.groupOut + co, initial = bias[channel]
                                let out = y + (n * s.outChannels + channel) * pixels + p0, result = yt + co * ld
                                for o in 0 ..< count { out[o] = initial + result[o] }
                            }
                        }
                    }
                    for n in 0 ..< s.batch {
                        for g in 0 ..< s.groups {
                            rows?.fill(from: input.baseAddress! + (n * s.channels + g * s.groupIn) * s.pixels, threads: threads)
                            // Several blocks: each thread takes whole blocks with buffers of its
                            // own (splitting every block's GEMM cost a dispatch per block). One
                            // block: its GEMM may split.
                            Threads.split(blocks, threads: blocks > 1 ? threads : 1) { range in
                                let xt = inPlace ? nil : alignedFloats(depth * ld), yt = alignedFloats(roundUp(s.groupOut, 8) * ld)
                                defer { xt?.deallocate(); yt.deallocate() }
                                for b in range { run(n, g, b, xt, yt, threads: blocks > 1 ? 1 : threads) }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The input planes of one group with the window's padding around them as zeros, split by
    /// the window's strides into phase planes (`sy·sx` per channel: padded pixel (r, c) is at
    /// row r / sy, column c / sx of phase (r % sy, c % sx)), so that with the outputs laid out
    /// `stride` apart, each channel and tap reads one run of one phase plane
    /// (`columnOffsets`): the GEMM reads the columns in place. `fill` writes the input's place
    /// and the zeros beside it in the phases read; nothing else is read for a kept output.
    /// Only numbers and a pointer, so that it is copied without reference counting. The owner
    /// calls `deallocate`.
    struct PaddedPlanes {
        let channels: Int
        /// Rows and row stride of each phase plane (of the whole padded plane for stride 1).
        let height: Int, stride: Int
        let values: UnsafeMutablePointer<Float>
        private let paddedHeight: Int, paddedWidth: Int, planeSize: Int
        private let inputHeight: Int, inputWidth: Int, top: Int, left: Int
        private let outputWidth: Int, kernelHeight: Int, kernelWidth: Int, strideY: Int, strideX: Int, dilationY: Int, dilationX: Int

        init(_ window: Window, channels: Int) {
            self.channels = channels
            (strideY, strideX, dilationY, dilationX) = (window.strides[0], window.strides[1], window.dilations[0], window.dilations[1])
            // The rows and columns the windows read.
            paddedHeight = (window.output[0] - 1) * strideY + (window.kernel[0] - 1) * dilationY + 1
            paddedWidth = (window.output[1] - 1) * strideX + (window.kernel[1] - 1) * dilationX + 1
            (height, stride) = ((paddedHeight + strideY - 1) / strideY, (paddedWidth + strideX - 1) / strideX)
            planeSize = strideY * strideX * height * stride
            // A row and a vector past the last plane: the last vectors of in-place columns
            // may read there, for outputs that are discarded. `fill` writes the zeros any kept
            // output reads (zeroing all of it on every call was a tenth of a stride-2 Conv, perf).
            values = alignedFloats(channels * planeSize + stride + vecWidth)
            (inputHeight, inputWidth, top, left) = (window.input[0], window.input[1], window.padBegin[0], window.padBegin[1])
            (outputWidth, kernelHeight, kernelWidth) = (window.output[1], window.kernel[0], window.kernel[1])
        }

        func deallocate() { values.deallocate() }

        /// Copies `channels` input planes (adjacent, from `planes`) into place, with zeros
        /// around them: each input row into its phase rows, of the phases some tap reads (a 1x1
        /// stride-2 window reads one), and zeros in the rest of those phases' rows.
        func fill(from planes: UnsafePointer<Float>, threads: Int = 1) {
            let (h, w, sy, sx) = (inputHeight, inputWidth, strideY, strideX)
            let first = max(0, -left), last = min(w, paddedWidth - left)
            let rowPhases = Set((0 ..< kernelHeight).map { $0 * dilationY % sy }).sorted()
            // Per column phase read: where it starts in a row of phases, its first input column,
            // how many, and their first column in a phase row (none: a row of zeros).
            let columnPhases = Set((0 ..< kernelWidth).map { $0 * dilationX % sx }).sorted().map { phase -> (Int, Int, Int, Int) in
                let start = first + ((phase - (first + left) % sx) % sx + sx) % sx
                return start < last ? (phase * height * stride, start, (last - 1 - start) / sx + 1, (start + left) / sx) : (phase * height * stride, 0, 0, 0)
            }
            let parts = Threads.worthwhile(threads, work: channels * rowPhases.count * columnPhases.count * height * stride)
            Threads.split(channels, threads: parts) { $0.forEach { c in
                for py in rowPhases {
                    for row in 0 ..< height {
                        let r = row * sy + py, i = r - top, inside = r < paddedHeight && i >= 0 && i < h
                        let target = values + c * planeSize + py * sx * height * stride + row * stride
                        for (phase, start, count, column) in columnPhases {
                            let phaseRow = target + phase
                            guard inside && count > 0 else { phaseRow.initialize(repeating: 0, count: stride); continue }
                            phaseRow.initialize(repeating: 0, count: column)
                            copyFloats(planes + (c * h + i) * w + start, step: sx, phaseRow + column, count: count)
                            (phaseRow + column + count).initialize(repeating: 0, count: stride - column - count)
                        }
                    }
                }
            } }
        }

        /// Where column (channel, tap) starts in `values`, for each channel and tap in order,
        /// with the outputs laid out `stride` apart: output pixel q of that layout reads
        /// `values[offset + q]`.
        func columnOffsets(taps: Int) -> [Int] {
            (0 ..< channels * taps).map { d in
                let (c, t) = (d / taps, d % taps), (y, x) = ((t / kernelWidth) * dilationY, (t % kernelWidth) * dilationX)
                return c * planeSize + ((y % strideY) * strideX + x % strideX) * height * stride + (y / strideY) * stride + x / strideX
            }
        }

        /// The column at `offset` (one of `columnOffsets`) for the output pixels `pixels`
        /// (row-major), into `out`: a run of its phase plane per output row.
        func copy(from offset: Int, pixels: Range<Int>, into out: UnsafeMutablePointer<Float>) {
            var p = pixels.lowerBound, (oy, ox) = p.quotientAndRemainder(dividingBy: outputWidth)
            while p < pixels.upperBound {
                let run = min(outputWidth - ox, pixels.upperBound - p)
                copyFloats(values + offset + oy * stride + ox, out + (p - pixels.lowerBound), count: run)
                (p, oy, ox) = (p + run, oy + 1, 0)
            }
        }
    }

    /// Floats of im2col columns per block (512 KB).
    static let columnBlockFloats = 1 << 17

    /// One input channel per group (depthwise, with any channel multiplier): each output plane
    /// adds, tap by tap, the weight times the input pixel that tap reads.
    /// A 2-D depthwise convolution plane by plane through the C kernel, which computes what
    /// `direct` computes (the same products and sums, in the same order) with vector loops
    /// over each output row instead of the tap table.
    static func depthwise2D(_ k: tessera_kernels, _ input: [Float], _ w: [Float], bias: [Float], _ s: Geometry, _ window: Window,
                            into y: UnsafeMutablePointer<Float>, threads: Int = 1, finish: Finisher? = nil) {
        let (h, width) = (window.input[0], window.input[1]), (oh, ow) = (window.output[0], window.output[1])
        guard oh > 0, ow > 0 else { return }
        let scratch = tessera_depthwise_scratch(oh, ow, window.kernel[0], window.kernel[1], window.strides[0], window.strides[1],
                                                window.dilations[0], window.dilations[1])
        // Planes are independent: threads take whole planes, when each gets enough multiply-adds
        // to repay a dispatch (about 10 µs).
        let planes = s.batch * s.outChannels
        let parts = Threads.worthwhile(threads, work: planes * s.outPixels * s.taps, perThread: Self.depthwiseWorkPerThread)
        input.withUnsafeBufferPointer { input in
            w.withUnsafeBufferPointer { w in
                Threads.split(planes, threads: parts) { range in
                    let padded = alignedFloats(scratch)   // zeros where no plane is copied, for every plane
                    padded.initialize(repeating: 0, count: scratch)
                    defer { padded.deallocate() }
                    let finish = finish   // retained once, not around every call (see im2col)
                    for plane in range {
                        let (n, channel) = plane.quotientAndRemainder(dividingBy: s.outChannels)
                        k.depthwise(input.baseAddress! + (n * s.channels + channel / s.groupOut) * s.pixels, h, width,
                                    w.baseAddress! + channel * s.taps, window.kernel[0], window.kernel[1],
                                    window.strides[0], window.strides[1], window.dilations[0], window.dilations[1],
                                    window.padBegin[0], window.padBegin[1], bias[channel], y + plane * s.outPixels, oh, ow, padded)
                        finish?(plane, 0, y + plane * s.outPixels, s.outPixels, nil)
                    }
                }
            }
        }
    }

    /// Multiply-adds of depthwise convolution worth a thread of their own.
    static let depthwiseWorkPerThread = 1 << 18

    /// Direct convolution over the tap table, tap by tap across an output plane (padding read
    /// as zeros): depthwise convolutions (one input channel per group), and every float64 Conv.
    static func direct<T: BinaryFloatingPoint>(_ input: [T], _ w: [T], _ s: Geometry, _ sources: [Int32], into y: inout [T]) {
        let pixels = s.outPixels
        input.withUnsafeBufferPointer { input in
            sources.withUnsafeBufferPointer { sources in
                y.withUnsafeMutableBufferPointer { y in
                    for n in 0 ..< s.batch {
                        for channel in 0 ..< s.outChannels {
                            let out = y.baseAddress! + (n * s.outChannels + channel) * pixels
                            for ci in 0 ..< s.groupIn {
                                let plane = input.baseAddress! + (n * s.channels + channel / s.groupOut * s.groupIn + ci) * s.pixels
                                for t in 0 ..< s.taps {
                                    let weight = w[(channel * s.groupIn + ci) * s.taps + t], tap = sources.baseAddress! + t * pixels
                                    for o in 0 ..< pixels {
                                        let source = Int(tap[o])
                                        out[o] += weight * (source >= 0 ? plane[source] : 0)   // zeros in the padding, as the C kernel reads them
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    enum Pooling { case max, average, lp(Double) }

    /// MaxPool (with its optional indices output: flat positions in the input, row-major),
    /// AveragePool and LpPool ((Σ|x|^p)^(1/p), padding counting as zero).
    static func pool<T: BinaryFloatingPoint>(_ c: NodeContext, _ kind: Pooling, _: T.Type) throws -> [Value] {
        let x = try c.input(0)
        var isMax = false
        if case .max = kind { isMax = true }
        let v = isMax ? x.floating(T.self) : try c.floats(0, as: T.self)   // MaxPool also takes 8-bit integers
        guard x.shape.count >= 3, let kernel = c.ints("kernel_shape") else { throw RuntimeError(.badShape, "pool needs [N, C, spatial...] and kernel_shape") }
        let window = try Window(c, input: Array(x.shape.dropFirst(2)), kernel: kernel, ceilMode: c.int("ceil_mode", 0) != 0)
        var includePad = false
        if case .average = kind { includePad = c.int("count_include_pad", 0) != 0 }
        // Indices count within each plane in row-major order, or column-major with storage_order 1.
        let spatial = Array(x.shape.dropFirst(2))
        var columnStrides = [Int](repeating: 1, count: spatial.count)
        for d in spatial.indices.dropFirst() { columnStrides[d] = columnStrides[d - 1] * spatial[d - 1] }
        let rowStrides = Broadcast.strides(spatial), columnMajor = c.int("storage_order", 0) != 0
        let (sources, inside) = c.cache.value(for: x.shape) { window.sources(countPadding: includePad) }
        let planes = x.shape[0] * x.shape[1], pixels = x.shape.dropFirst(2).reduce(1, *), outPixels = window.outputCount
        var y = [T](repeating: 0, count: try elementCount([planes] + window.output))
        var indices = [Int64](repeating: 0, count: y.count)
        // Tap by tap over all of a plane's output pixels: the inner loops run over pixels.
        var acc = [T](repeating: 0, count: outPixels), count = [Int](repeating: 0, count: outPixels)
        var bestAt = [Int](repeating: -1, count: outPixels)
        for plane in 0 ..< planes {
            let base = plane * pixels
            for o in 0 ..< outPixels { acc[o] = isMax ? -.infinity : 0; count[o] = 0; bestAt[o] = -1 }
            for t in 0 ..< window.taps {
                let tap = t * outPixels
                switch kind {
                case .max:
                    for o in 0 ..< outPixels {
                        let s = Int(sources[tap + o])
                        guard s >= 0 else { continue }
                        let value = v[base + s]
                        if value > acc[o] || bestAt[o] < 0 { acc[o] = value; bestAt[o] = base + s }
                    }
                case .average, .lp:
                    var power: Double?
                    if case .lp(let p) = kind { power = p }
                    for o in 0 ..< outPixels {
                        let s = Int(sources[tap + o])
                        if s >= 0 {
                            let value = v[base + s]
                            acc[o] += power.map { T(Foundation.pow(Double(abs(value)), $0)) } ?? value
                            count[o] += 1
                        } else if includePad && inside[tap + o] {
                            count[o] += 1
                        }
                    }
                }
            }
            for o in 0 ..< outPixels {
                switch kind {
                case .max:
                    y[plane * outPixels + o] = acc[o]
                    var at = max(bestAt[o], 0) - base
                    if columnMajor { at = spatial.indices.reduce(0) { $0 + at / rowStrides[$1] % spatial[$1] * columnStrides[$1] } }
                    indices[plane * outPixels + o] = Int64(base + at)
                case .average: y[plane * outPixels + o] = acc[o] / T(max(count[o], 1))
                case .lp(let p): y[plane * outPixels + o] = T(Foundation.pow(Double(acc[o]), 1 / p))
                }
            }
        }
        let shape = Array(x.shape.prefix(2)) + window.output
        let pooled = try Value(floating: y, shape: shape, type: .float).cast(to: x.type)
        return [pooled, Value(indices, shape: shape)]
    }

    /// A float32 2-D MaxPool that does not ask for indices, plane by plane through the C kernel
    /// (`pool`'s comparisons in `pool`'s order); nil for anything else.
    static func maxPool2D(_ c: NodeContext) throws -> [Value]? {
        let x = try c.input(0)
        guard let k = KernelDispatch.kernels, x.type == .float, case .float(let v) = x.elements, x.shape.count == 4,
              !v.isEmpty,
              c.node.outputs.count < 2 || c.node.outputs[1].isEmpty, let kernel = c.ints("kernel_shape"), kernel.count == 2 else { return nil }
        let window = try Window(c, input: Array(x.shape.dropFirst(2)), kernel: kernel, ceilMode: c.int("ceil_mode", 0) != 0)
        let planes = x.shape[0] * x.shape[1], (h, w) = (x.shape[2], x.shape[3]), (oh, ow) = (window.output[0], window.output[1])
        guard oh > 0, ow > 0 else { return nil }
        // Planes among threads when there are enough input elements. The kernel writes every
        // output (zeroing them first was a seventh of a 2x2 MaxPool, perf).
        let parts = Threads.worthwhile(c.threads, work: v.count), count = try elementCount([planes, oh, ow])
        let y = [Float](unsafeUninitializedCapacity: count) { y, initialized in
            v.withUnsafeBufferPointer { v in
                Threads.split(planes, threads: parts) { range in
                    var seen = [Float](repeating: 0, count: ow)
                    for plane in range {
                        k.maxpool(v.baseAddress! + plane * h * w, h, w, kernel[0], kernel[1], window.strides[0], window.strides[1],
                                  window.dilations[0], window.dilations[1], window.padBegin[0], window.padBegin[1],
                                  y.baseAddress! + plane * oh * ow, oh, ow, &seen)
                    }
                }
            }
            initialized = count
        }
        return [Value(y, shape: Array(x.shape.prefix(2)) + window.output)]
    }

    static func globalPool<T: BinaryFloatingPoint>(_ c: NodeContext, average: Bool, _: T.Type) throws -> Value {
        let x = try c.input(0)
        let v = try c.floats(0, as: T.self)
        guard x.shape.count >= 2 else { throw RuntimeError(.badShape, "pool needs [N, C, ...]") }
        let pixels = x.shape.dropFirst(2).reduce(1, *)
        let y = v.withUnsafeBufferPointer { v in
            (0 ..< x.shape[0] * x.shape[1]).map { plane -> T in
                let run = UnsafeBufferPointer(rebasing: v[plane * pixels ..< (plane + 1) * pixels])
                guard average else { return run.max() ?? -.infinity }
                return T(ReductionOps.laneSum(pixels) { Double(run[$0]) } / Double(max(pixels, 1)))   // in float64
            }
        }
        return Value(floating: y, shape: Array(x.shape.prefix(2)) + [Int](repeating: 1, count: x.shape.count - 2), type: x.type)
    }
}
