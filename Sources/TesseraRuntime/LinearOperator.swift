import Foundation
import Tessera

/// A GEMM weight as the kernels see it: `rows` outputs, each a dot product of `depth` weights
/// along the stored reduction axis with one activation row.
///
/// The view is the one 2:4 uses (spec §7.3): the tensor with its reduction axis moved last, so
/// `rows` is the product of every other dim. For MatMul's B `[K, N]` that is `y = x · B`; for
/// Gemm's B with transB, `y = x · Bᵀ`; for a Conv weight it is the per-tap 1x1 contraction over
/// input channels. Kernels read the stored layout and values directly; nothing is densified.
public struct LinearOperator: @unchecked Sendable {
    public let tensor: Tensor
    /// Outputs per activation row.
    public let rows: Int
    /// Reduction length: activations per row.
    public let depth: Int
    let view: Sparse24Geometry
    let scaleMap: ScaleMap
    /// A CSR weight's entries regrouped for the batched kernel.
    private(set) var csrGatherIndex: CSRGatherIndex?
    /// A float32 weight packed into the batched kernel's 8-row panels on its first batched use
    /// (see `panels`).
    private let packedPanels = PackedCache<PackedPanels>()
    /// The same, 32 rows wide (see `widePanels`).
    private let packedWidePanels = PackedCache<PackedPanels>()
    /// An int8 weight's codes packed for the W8A8 GEMM core, made on its first use: the dense
    /// layout, and a 2:4 weight's pair layout for the kernel on kept codes.
    let packedInt8 = PackedCache<PackedInt8Weight>()
    let packedInt8Pairs = PackedCache<PackedInt8Weight>()

    public var name: String { tensor.name }
    public var layout: LayoutKind { tensor.storage.kind }

    /// Wraps a validated tensor (as `TessFile.tensor(_:)` returns). Throws when it is not a
    /// GEMM weight the kernels can run: no reduction axis, or a non-float logical type.
    public init(_ tensor: Tensor) throws {
        guard let axis = tensor.reductionAxis, axis < tensor.shape.count else {
            throw RuntimeError(.notAWeight, "has no reduction axis (role \(tensor.role)), so it is not a GEMM weight", tensor: tensor.name)
        }
        guard tensor.dataType.isFloatingPoint else {
            throw RuntimeError(.unsupportedType, "is \(tensor.dataType); the kernels multiply float weights", tensor: tensor.name)
        }
        if tensor.quantization == nil, ![.float, .float16, .bfloat16, .double].contains(tensor.dataType) {
            throw RuntimeError(.unsupportedType, "stores \(tensor.dataType) values; the kernels read float32, float16, bfloat16 and double", tensor: tensor.name)
        }
        let geometry = try TensorGeometry(shape: tensor.shape)
        self.tensor = tensor
        view = geometry.sparse24(axis: axis)
        rows = view.rows
        depth = view.reduction
        if let q = tensor.quantization {
            scaleMap = try ScaleMap(q, geometry: geometry, view: view, axis: axis)
        } else {
            scaleMap = .unquantized
        }
        csrGatherIndex = CSRGatherIndex(self)
    }

    /// A dense float32 weight's rows packed into the batched kernel's 8-row panels, made on the
    /// first batched use and kept (a copy of the weight): panel p holds weight (8p + i, k) at
    /// `8·(p·depth + k) + i`, so a tile reads its weights contiguously. Read in place, a [K, N]
    /// weight's 8 rows at each depth lie a row of N floats apart, a page apart for MiniLM's
    /// 1536 outputs: MiniLM 1x128 ran 19.0 ms so, 16.7 ms packed (best of 50, one thread).
    /// Nil for other weights: quantized, sparse, or rows neither along nor across the layout.
    var panels: PackedPanels? { packed(width: 8, into: packedPanels) }

    /// The same weight packed 32 rows (outputs) wide, for the dense kernel's tiles of `y` that
    /// broadcast the activations: panel p holds weight (32p + j, k) at `32·(p·depth + k) + j`.
    var widePanels: PackedPanels? { packed(width: 32, into: packedWidePanels) }

    private func packed(width: Int, into cache: PackedCache<PackedPanels>) -> PackedPanels? {
        guard case .dense(let bytes) = tensor.storage, tensor.dataType == .float, tensor.quantization == nil,
              view.inner == 1 || view.outer == 1 else { return nil }
        return cache.get {
            let panels = PackedPanels(count: roundUp(rows, width) * depth)
            bytes.withUnsafeBytes { raw in
                let w = raw.bindMemory(to: Float.self)
                if view.inner == 1 {
                    for r in 0 ..< rows {
                        let row = denseOffset(row: r), (p, i) = (r / width, r % width)
                        for k in 0 ..< depth { panels.values[width * (p * depth + k) + i] = w[row + k] }
                    }
                } else {   // [K, N]: a panel's rows at one depth are adjacent floats
                    for k in 0 ..< depth {
                        for r in 0 ..< rows { panels.values[width * ((r / width) * depth + k) + r % width] = w[k * rows + r] }
                    }
                }
            }
            return panels
        }
    }

    /// `y[b, r] = Σ_k x[b, k] · W[r, k]` for `batch` rows of `x` (`[batch, depth]`, row-major),
    /// plus `bias[r]` when given (as an Add node after the product adds it); returns
    /// `[batch, rows]`, row-major.
    public func apply(_ x: [Float], batch: Int, threads: Int = 1, bias: [Float]? = nil) throws -> [Float] {
        if let bias, bias.count != rows {
            throw RuntimeError(.badShape, "a bias of \(bias.count) values for \(rows) outputs", tensor: name)
        }
        // The batched dense GEMM writes every output as it transposes yᵀ; the others may add to y.
        let writesEveryOutput: Bool
        if case .dense = tensor.storage { writesEveryOutput = batch > 1 && depth > 0 } else { writesEveryOutput = false }
        return try checked(x, batch: batch, zeroed: !writesEveryOutput) { x, y in
            (bias ?? []).withUnsafeBufferPointer { b in
                apply(x, batch: batch, into: y, threads: max(1, threads), bias: bias == nil ? nil : b.baseAddress)
            }
        }
    }

    /// Checks the activation count, then runs an unchecked form on `x` and a `[batch, rows]`
    /// output: zeroed, or (`zeroed` false, for a form that stores every element) uninitialized,
    /// which saves a pass over the output.
    func checked(_ x: [Float], batch: Int, zeroed: Bool = true, _ body: (UnsafePointer<Float>, UnsafeMutablePointer<Float>) -> Void) throws -> [Float] {
        guard batch >= 0, x.count == batch * depth else {
            throw RuntimeError(.badActivations, "activations hold \(x.count) floats; \(batch) rows of depth \(depth) need \(batch * depth)", tensor: name)
        }
        let count = batch * rows
        guard batch > 0, rows > 0 else { return [Float](repeating: 0, count: count) }
        return x.withUnsafeBufferPointer { x in
            guard zeroed else {
                return [Float](unsafeUninitializedCapacity: count) { y, initialized in
                    body(x.baseAddress!, y.baseAddress!)
                    initialized = count
                }
            }
            var y = [Float](repeating: 0, count: count)
            y.withUnsafeMutableBufferPointer { body(x.baseAddress!, $0.baseAddress!) }
            return y
        }
    }

    /// The unchecked form: `x` holds `batch * depth` floats and `y` room for `batch * rows`.
    /// `yᵀ = W · xᵀ` on operands the caller built transposed, for a dense weight and a batch of
    /// at least 2: `xᵀ` is `[depth][ld]` with zeros in its padding columns, `yᵀ` is
    /// `[rows rounded up to 8][ld]` (see `TransposedOperands`). Convolution builds its im2col
    /// columns this way, so neither operand is transposed twice.
    func applyTransposed(_ operands: TransposedOperands, batch: Int, threads: Int) {
        guard case .dense = tensor.storage, batch > 1, depth > 0 else { preconditionFailure("applyTransposed takes dense weights and a batch of 2 or more") }
        var problem = Problem(op: self, x: operands.xt, batch: batch, y: operands.yt, threads: max(1, threads))
        problem.transposed = operands
        withReader(DenseKernel(problem: problem))
    }

    /// The unchecked form: `x` holds `batch * depth` floats, `y` room for `batch * rows` and
    /// `bias`, when given, `rows` values.
    public func apply(_ x: UnsafePointer<Float>, batch: Int, into y: UnsafeMutablePointer<Float>, threads: Int,
                      bias: UnsafePointer<Float>? = nil) {
        let problem = Problem(op: self, x: x, batch: batch, y: y, threads: threads, bias: bias)
        switch tensor.storage {
        case _ where depth == 0: y.initialize(repeating: 0, count: batch * rows)
        case .dense: return withReader(DenseKernel(problem: problem))   // adds the bias as it writes y
        case .csr: withReader(CSRKernel(problem: problem))
        case .sparse24: withReader(Sparse24Kernel(problem: problem))
        }
        problem.addBias()
    }

    /// The threads worth using on `batch` rows: each must get at least half a million
    /// multiply-adds, since handing work to another core costs about as much as that many
    /// (small convolutions and GEMMs ran slower on two threads than on one). The executor's
    /// ops ask for this; `apply` itself uses the threads it is given.
    func worthwhileThreads(_ threads: Int, batch: Int) -> Int {
        Threads.worthwhile(threads, work: batch * rows * depth, perThread: 1 << 19)
    }

    /// Runs `kernel` with the reader for this weight's value type.
    @discardableResult
    func withReader<K: WeightKernel>(_ kernel: K) -> K.Result {
        let values: TensorBytes
        switch tensor.storage {
        case .dense(let v): values = v
        case .csr(_, _, _, _, _, let v): values = v
        case .sparse24(let v, _): values = v
        }
        return values.withBaseAddress { base in
            guard let q = tensor.quantization else {
                switch tensor.dataType {
                case .float16: return kernel.run(Float16Reader(values: base.assumingMemoryBound(to: UInt16.self)))
                case .bfloat16: return kernel.run(BFloat16Reader(values: base.assumingMemoryBound(to: UInt16.self)))
                case .double: return kernel.run(Float64Reader(values: base.assumingMemoryBound(to: Double.self)))
                default: return kernel.run(Float32Reader(values: base.assumingMemoryBound(to: Float.self)))
                }
            }
            return scaleMap.scales.withUnsafeBufferPointer { s in
                scaleMap.zeroPoints.withUnsafeBufferPointer { z in
                    let scales = s.baseAddress!, zeroPoints = z.baseAddress!
                    switch q.codeType {
                    case .int8: return kernel.run(DequantizingReader(codes: Int8Codes(bytes: base.assumingMemoryBound(to: Int8.self)), scales: scales, zeroPoints: zeroPoints))
                    case .uint8: return kernel.run(DequantizingReader(codes: UInt8Codes(bytes: base.assumingMemoryBound(to: UInt8.self)), scales: scales, zeroPoints: zeroPoints))
                    case .int4: return kernel.run(DequantizingReader(codes: Int4Codes(bytes: base.assumingMemoryBound(to: UInt8.self)), scales: scales, zeroPoints: zeroPoints))
                    default: return kernel.run(DequantizingReader(codes: UInt4Codes(bytes: base.assumingMemoryBound(to: UInt8.self)), scales: scales, zeroPoints: zeroPoints))
                    }
                }
            }
        }
    }

    /// Flat index, in the stored dense tensor, of view element (row, 0); k steps by `view.inner`.
    @inline(__always) func denseOffset(row r: Int) -> Int {
        let o = r / view.inner, i = r &- o &* view.inner
        return o &* view.reduction &* view.inner &+ i
    }
}

extension LinearOperator {
    /// A 2:4 weight's metadata bytes.
    func withSparse24Metadata<T>(_ body: (UnsafePointer<UInt8>) -> T) -> T {
        guard case .sparse24(_, let metadata) = tensor.storage else { preconditionFailure("not a 2:4 tensor") }
        return metadata.withBaseAddress { body($0.assumingMemoryBound(to: UInt8.self)) }
    }
}

extension TensorBytes {
    /// The first byte's address; for an empty buffer, which is never read, a placeholder.
    func withBaseAddress<T>(_ body: (UnsafeRawPointer) -> T) -> T {
        withUnsafeBytes { body($0.baseAddress ?? UnsafeRawPointer(bitPattern: 64)!) }
    }
}

/// One call's operands, shared by the kernels.
struct Problem: @unchecked Sendable {
    let op: LinearOperator
    let x: UnsafePointer<Float>
    let batch: Int
    let y: UnsafeMutablePointer<Float>
    let threads: Int
    /// Added to each row of `y` (`rows` values), or nil.
    var bias: UnsafePointer<Float>? = nil
    /// Operands the caller built transposed (`applyTransposed`); `x` and `y` are then unused.
    var transposed: TransposedOperands? = nil

    /// `y[b, r] += bias[r]`, for kernels that write `y` without it.
    func addBias() {
        guard let bias else { return }
        let rows = op.rows
        for b in 0 ..< batch {
            let row = y + b * rows
            for r in 0 ..< rows { row[r] += bias[r] }
        }
    }
}

/// Packed weight panels, owned here so that kernels may hold their address.
final class PackedPanels: @unchecked Sendable {
    let values: UnsafeMutablePointer<Float>

    init(count: Int) {
        values = alignedFloats(count)
        values.initialize(repeating: 0, count: count)
    }

    deinit { values.deallocate() }
}

/// The packed form, made on first use and shared by copies of the operator.
final class PackedCache<Packed>: @unchecked Sendable {
    private let lock = NSLock()
    private var packed: Packed?

    func get(_ make: () -> Packed) -> Packed {
        lock.lock(); defer { lock.unlock() }
        if let packed { return packed }
        let made = make()
        packed = made
        return made
    }
}
