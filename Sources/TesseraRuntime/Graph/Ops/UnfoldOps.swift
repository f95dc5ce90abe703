import Tessera

/// The inverses of sliding windows: Col2Im (im2col's columns summed back into an image) and
/// MaxUnpool (pooled maxima put back where MaxPool's indices say they came from).
enum UnfoldOps {
    static var table: [String: OpKernel] {
        var t: [String: OpKernel] = [:]
        // Generic over the precision: float64 in Double, the rest in Float.
        t["Col2Im"] = { c in [try c.isDouble(0) ? col2im(c, Double.self) : col2im(c, Float.self)] }
        t["MaxUnpool"] = { c in [try c.isDouble(0) ? maxUnpool(c, Double.self) : maxUnpool(c, Float.self)] }
        return t
    }

    /// Col2Im: input `[N, C·∏block, L]`, L the number of block positions over `image_shape` with
    /// `pads`, `strides` and `dilations`; each column's values are added at its block's pixels.
    static func col2im<T: BinaryFloatingPoint>(_ c: NodeContext, _: T.Type) throws -> Value {
        let x = try c.input(0), image = try c.input(1).asInts.map(Int.init), block = try c.input(2).asInts.map(Int.init)
        let dims = image.count
        let pads = c.ints("pads") ?? [Int](repeating: 0, count: 2 * dims)
        let strides = c.ints("strides") ?? [Int](repeating: 1, count: dims)
        let dilations = c.ints("dilations") ?? [Int](repeating: 1, count: dims)
        guard dims >= 1, block.count == dims, pads.count == 2 * dims, strides.count == dims, dilations.count == dims,
              image.allSatisfy({ $0 > 0 }), block.allSatisfy({ $0 > 0 }), strides.allSatisfy({ $0 > 0 }), dilations.allSatisfy({ $0 > 0 }) else {
            throw RuntimeError(.badShape, "Col2Im's image_shape, block_shape, pads, strides and dilations do not fit one another")
        }
        let positions = try (0 ..< dims).map { d -> Int in
            let span = image[d] + pads[d] + pads[d + dims] - dilations[d] * (block[d] - 1) - 1
            guard span >= 0 else { throw RuntimeError(.badShape, "block \(block) does not fit image \(image)") }
            return span / strides[d] + 1
        }
        let blockSize = block.reduce(1, *), blockCount = positions.reduce(1, *)
        guard x.shape.count == 3, x.shape[1] % blockSize == 0, x.shape[2] == blockCount else {
            throw RuntimeError(.badShape, "Col2Im's input \(x.shape) is not [N, C·\(blockSize), \(blockCount)]")
        }
        let (n, channels) = (x.shape[0], x.shape[1] / blockSize)
        let pixels = image.reduce(1, *)
        let v = x.floating(T.self)
        var out = [T](repeating: 0, count: try elementCount([n, channels] + image))
        let blockStrides = Broadcast.strides(block), positionStrides = Broadcast.strides(positions), imageStrides = Broadcast.strides(image)
        for plane in 0 ..< n * channels {
            for b in 0 ..< blockSize {
                for l in 0 ..< blockCount {
                    var pixel = 0, inside = true
                    for d in 0 ..< dims {
                        let p = l / positionStrides[d] % positions[d] * strides[d] - pads[d] + b / blockStrides[d] % block[d] * dilations[d]
                        guard p >= 0, p < image[d] else { inside = false; break }
                        pixel += p * imageStrides[d]
                    }
                    if inside { out[plane * pixels + pixel] += v[(plane * blockSize + b) * blockCount + l] }
                }
            }
        }
        return Value(floating: out, shape: [n, channels] + image, type: x.type)
    }

    /// MaxUnpool: zeros of the shape MaxPool came from (or `output_shape`), with each value of
    /// X at its flat index in I.
    static func maxUnpool<T: BinaryFloatingPoint>(_ c: NodeContext, _: T.Type) throws -> Value {
        let x = try c.input(0), indices = try c.input(1).asInts
        guard let kernel = c.ints("kernel_shape"), x.shape.count == kernel.count + 2, indices.count == x.count else {
            throw RuntimeError(.badShape, "MaxUnpool needs kernel_shape for the spatial dims of \(x.shape) and one index per value")
        }
        let dims = kernel.count
        let strides = c.ints("strides") ?? [Int](repeating: 1, count: dims)
        let pads = c.ints("pads") ?? [Int](repeating: 0, count: 2 * dims)
        guard strides.count == dims, pads.count == 2 * dims else { throw RuntimeError(.badShape, "strides or pads do not fit \(dims) spatial dims") }
        let inferred = Array(x.shape.prefix(2)) + (0 ..< dims).map { (x.shape[$0 + 2] - 1) * strides[$0] - pads[$0] - pads[$0 + dims] + kernel[$0] }
        let shape = c.optionalInput(2)?.asInts.map(Int.init) ?? inferred
        guard shape.count == inferred.count, zip(shape, inferred).allSatisfy({ $0 >= $1 }) else {
            throw RuntimeError(.badShape, "output_shape \(shape) is smaller than the unpooled \(inferred)")
        }
        // Indices address the inferred shape; a larger output_shape holds it in its leading corner.
        let count = try elementCount(inferred), v = x.floating(T.self)
        var unpooled = [T](repeating: 0, count: count)
        for (k, i) in indices.enumerated() {
            guard i >= 0, i < count else { throw RuntimeError(.badShape, "index \(i) is outside the unpooled \(inferred)") }
            unpooled[Int(i)] = v[k]
        }
        let inferredStrides = Broadcast.strides(inferred), outStrides = Broadcast.strides(shape)
        var out = [T](repeating: 0, count: try elementCount(shape))
        for i in 0 ..< count {
            var position = 0
            for d in 0 ..< shape.count { position += i / inferredStrides[d] % inferred[d] * outStrides[d] }
            out[position] = unpooled[i]
        }
        return Value(floating: out, shape: shape, type: x.type)
    }
}
