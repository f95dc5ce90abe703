import Tessera

/// MatMul and Gemm. A weight stored in the file arrives as the node's `LinearOperator` and runs
/// through the kernel for its layout; products of two computed tensors (attention) use `denseProduct`.
enum LinearOps {
    static var table: [String: OpKernel] {
        ["MatMul": { [try matMul($0)] }, "Gemm": { [try gemm($0)] }]
    }

    static func matMul(_ c: NodeContext) throws -> Value {
        let a = try c.input(0)
        if a.type == .double { return try doubleMatMul(a, try c.input(1)) }
        let x = try c.floats(0)
        guard a.shape.count >= 1 else { throw RuntimeError(.badShape, "MatMul of a scalar") }
        if let op = try c.weight ?? foldedWeight(c) {
            let k = a.shape.last!
            guard k == op.depth else { throw RuntimeError(.badShape, "A \(a.shape) does not fit B's \(op.depth) rows") }
            _ = try elementCount(a.shape.dropLast() + [op.rows])
            let y = try c.applyWeight(op, x, batch: x.count / max(k, 1))
            return Value(y, shape: a.shape.dropLast() + [op.rows], type: a.type)
        }
        let b = try c.input(1)
        let w = try c.floats(1)
        let product = try MatMulShape(a.shape, b.shape)
        // denseProduct stores every output of each batch: no zeroing first.
        let count = try elementCount(product.shape)
        guard count > 0 else { return Value([Float](), shape: product.shape, type: a.type) }
        let y = [Float](unsafeUninitializedCapacity: count) { yp, initialized in
            x.withUnsafeBufferPointer { xp in
                w.withUnsafeBufferPointer { wp in
                    let (m, k, n) = (product.m, product.k, product.n)
                    for (i, (ab, bb)) in zip(product.aBatches, product.bBatches).enumerated() {
                        denseProduct(xp.baseAddress! + ab * m * k, wp.baseAddress! + bb * k * n, yp.baseAddress! + i * m * n, m: m, k: k, n: n)
                    }
                }
            }
            initialized = count
        }
        return Value(y, shape: product.shape, type: a.type)
    }

    /// MatMul's B when it is computed from constants alone (an int8 weight dequantized in the
    /// graph by Cast and Mul): the same on every run, so made once into an operator like a stored
    /// weight's. Through `denseProduct` on every run, tinyocr-rec's 80x6906 classifier was 14% of
    /// the model.
    static func foldedWeight(_ c: NodeContext) throws -> LinearOperator? {
        guard c.isConstant(1), let b = c.optionalInput(1), b.type == .float, b.shape.count == 2, let w = b.floats else { return nil }
        return try c.cache.value(for: b.shape) { try LinearOperator.dense(w, shape: b.shape, reductionAxis: 0, name: c.node.inputs[1]) }
    }

    static func gemm(_ c: NodeContext) throws -> Value {
        let a = try c.input(0)
        guard a.shape.count == 2 else { throw RuntimeError(.badShape, "Gemm's A must be 2-D, got \(a.shape)") }
        if a.type == .double { return try doubleGemm(c) }
        var x = try c.floats(0)
        var (m, k) = (a.shape[0], a.shape[1])
        if c.int("transA", 0) != 0 {
            x = ShapeOps.transpose(a, [1, 0]).floats!
            (m, k) = (k, m)
        }
        let alpha = c.float("alpha", 1), beta = c.float("beta", 1)
        var y: [Float], n: Int
        if let op = c.weight {
            guard op.depth == k else { throw RuntimeError(.badShape, "A's \(k) columns do not fit B \(op.tensor.shape)") }
            n = op.rows
            _ = try elementCount([m, n])
            y = try c.applyWeight(op, x, batch: m)
        } else {
            var b = try c.input(1)
            guard b.shape.count == 2 else { throw RuntimeError(.badShape, "Gemm's B must be 2-D, got \(b.shape)") }
            if c.int("transB", 0) != 0 { b = ShapeOps.transpose(b, [1, 0]) }
            guard b.shape[0] == k, let w = b.floats else { throw RuntimeError(.badShape, "B \(b.shape) does not fit A's \(k) columns") }
            n = b.shape[1]
            y = [Float](repeating: 0, count: try elementCount([m, n]))
            x.withUnsafeBufferPointer { xp in
                w.withUnsafeBufferPointer { wp in
                    y.withUnsafeMutableBufferPointer { denseProduct(xp.baseAddress!, wp.baseAddress!, $0.baseAddress!, m: m, k: k, n: n) }
                }
            }
        }
        if alpha != 1 { y = y.map { $0 * alpha } }
        if let bias = c.optionalInput(2), beta != 0 {
            let (sum, _) = try Broadcast.apply(y, [m, n], bias.asFloats, bias.shape) { $0 + beta * $1 }
            guard sum.count == y.count else { throw RuntimeError(.badShape, "C \(bias.shape) does not broadcast to [\(m), \(n)]") }
            y = sum
        }
        return Value(y, shape: [m, n], type: a.type)
    }

    /// MatMul in float64 (no stored-weight kernel holds float64: see `GraphExecutor.storedWeight`).
    static func doubleMatMul(_ a: Value, _ b: Value) throws -> Value {
        let product = try MatMulShape(a.shape, b.shape)
        let x = a.asDoubles, w = b.asDoubles
        var y = [Double](repeating: 0, count: try elementCount(product.shape))
        let (m, k, n) = (product.m, product.k, product.n)
        for (batch, (ab, bb)) in zip(product.aBatches, product.bBatches).enumerated() {
            for i in 0 ..< m {
                for p in 0 ..< k {
                    let scale = x[(ab * m + i) * k + p], row = (bb * k + p) * n, out = (batch * m + i) * n
                    for j in 0 ..< n { y[out + j] += scale * w[row + j] }
                }
            }
        }
        return Value(y, shape: product.shape)
    }

    /// Gemm in float64: alpha · A' · B' + beta · C.
    static func doubleGemm(_ c: NodeContext) throws -> Value {
        var a = try c.input(0), b = try c.input(1)
        if c.int("transA", 0) != 0 { a = ShapeOps.transpose(a, [1, 0]) }
        if c.int("transB", 0) != 0 { b = ShapeOps.transpose(b, [1, 0]) }
        guard b.shape.count == 2, b.shape[0] == a.shape[1] else { throw RuntimeError(.badShape, "B \(b.shape) does not fit A \(a.shape)") }
        let alpha = Double(c.float("alpha", 1)), beta = Double(c.float("beta", 1))
        var y = try doubleMatMul(a, b).asDoubles.map { $0 * alpha }
        if let bias = c.optionalInput(2), beta != 0 {
            let (sum, _) = try Broadcast.apply(y, [a.shape[0], b.shape[1]], bias.asDoubles, bias.shape) { $0 + beta * $1 }
            guard sum.count == y.count else { throw RuntimeError(.badShape, "C \(bias.shape) does not broadcast to [\(a.shape[0]), \(b.shape[1])]") }
            y = sum
        }
        return Value(y, shape: [a.shape[0], b.shape[1]])
    }
}

extension NodeContext {
    /// Whether `op` runs W8A8 in this run's activation arithmetic.
    func quantizesActivations(_ op: LinearOperator) -> Bool { activations == .int8 && op.runsQuantizedActivations }

    /// The stored weight times `batch` rows of `x`, in the run's activation arithmetic, plus a
    /// `bias` (one per output, fused from an Add) when given.
    func applyWeight(_ op: LinearOperator, _ x: [Float], batch: Int, bias: [Float]? = nil) throws -> [Float] {
        let threads = op.worthwhileThreads(threads, batch: batch)
        if quantizesActivations(op) {
            return try op.applyQuantizingActivations(x, batch: batch, threads: threads, bias: bias)
        }
        return try op.apply(x, batch: batch, threads: threads, bias: bias)
    }
}

extension LinearOperator {
    /// An operator over float weights computed while running (not stored in the file).
    static func dense(_ values: [Float], shape: [Int], reductionAxis: Int, name: String) throws -> LinearOperator {
        try LinearOperator(Tensor(name: name, dataType: .float, shape: shape, reductionAxis: reductionAxis,
                                  storage: .dense(values: TensorBytes(float32: values))))
    }
}

/// numpy's matmul shapes: `[..., m, k] x [..., k, n]` with broadcast batch dims; a 1-D operand
/// gains a dim that the result then drops.
struct MatMulShape {
    let m: Int, k: Int, n: Int
    /// For each output batch, the batch of A and of B it reads.
    let aBatches: [Int], bBatches: [Int]
    let shape: [Int]

    init(_ a: [Int], _ b: [Int]) throws {
        guard !a.isEmpty, !b.isEmpty else { throw RuntimeError(.badShape, "MatMul of a scalar") }
        let aShape = a.count == 1 ? [1] + a : a, bShape = b.count == 1 ? b + [1] : b
        (m, k) = (aShape[aShape.count - 2], aShape.last!)
        n = bShape.last!
        guard k == bShape[bShape.count - 2] else { throw RuntimeError(.badShape, "MatMul of \(a) and \(b): inner dims differ") }
        let batchShape = try Broadcast.shape([Array(aShape.dropLast(2)), Array(bShape.dropLast(2))])
        aBatches = try Broadcast.sourceIndices(of: Array(aShape.dropLast(2)), in: batchShape)
        bBatches = try Broadcast.sourceIndices(of: Array(bShape.dropLast(2)), in: batchShape)
        var shape = batchShape + [m, n]
        if a.count == 1 { shape.remove(at: shape.count - 2) }
        if b.count == 1 { shape.removeLast() }
        self.shape = shape
    }
}
