import Tessera

/// A tensor flowing through the executor. Elements live in one of four Swift arrays: float64
/// in `Double`, the other float types in `Float`, integer types in `Int64`, booleans as `Bool`;
/// `type` keeps the ONNX element type so that outputs and `Cast` keep their declared types.
///
/// Ops compute float64 in float64: most through `floating(Double.self)` and a body generic over
/// the precision, or by computing in Double for every type (`Value(computed:)`). The recurrent
/// and attention ops and CausalConvWithState read float64 inputs through the float32 view
/// (`floats`), and their float64 outputs are stored back as float64 (`representable`).
public struct Value: Sendable {
    public enum Elements: Sendable {
        case float([Float])
        case double([Double])
        case int([Int64])
        case bool([Bool])
    }

    public var type: DataType
    public var shape: [Int]
    public var elements: Elements

    public init(_ floats: [Float], shape: [Int], type: DataType = .float) {
        self.type = type; self.shape = shape; elements = .float(floats)
    }

    public init(_ ints: [Int64], shape: [Int], type: DataType = .int64) {
        self.type = type; self.shape = shape; elements = .int(ints)
    }

    public init(_ bools: [Bool], shape: [Int]) {
        type = .bool; self.shape = shape; elements = .bool(bools)
    }

    public init(_ doubles: [Double], shape: [Int]) {
        type = .double; self.shape = shape; elements = .double(doubles)
    }

    /// A float result of an op generic over its precision: float64 when computed in Double,
    /// else `type` (a float32-computed type).
    init<T: BinaryFloatingPoint>(floating v: [T], shape: [Int], type: DataType) {
        if T.self == Double.self { self.init(unsafeBitCast(v, to: [Double].self), shape: shape) } else {
            self.init(T.self == Float.self ? unsafeBitCast(v, to: [Float].self) : v.map { Float($0) }, shape: shape, type: type)
        }
    }

    /// Float results an op computed in Double, stored as `type` holds them: float64 as they
    /// are, other float types through float32.
    init(computed d: [Double], shape: [Int], type: DataType) {
        if type == .double { self.init(d, shape: shape) } else { self.init(d.map(Float.init), shape: shape, type: type) }
    }

    public var count: Int { shape.reduce(1, *) }

    /// The element types the executor computes with (complex, 4- and 8-bit floats are refused).
    public static func isSupported(_ type: DataType) -> Bool {
        switch type {
        case .float, .float16, .bfloat16, .double, .bool, .int8, .uint8, .int16, .uint16, .int32, .uint32, .int64, .uint64,
             .float8e4m3fn, .float8e4m3fnuz, .float8e5m2, .float8e5m2fnuz, .float4e2m1, .int4, .uint4: return true
        default: return false
        }
    }

    /// A stored tensor as a value: quantized and sparse tensors are decoded to dense elements.
    public init(_ tensor: Tensor) throws {
        guard Self.isSupported(tensor.dataType) else {
            throw RuntimeError(.unsupportedType, "is \(tensor.dataType), which the executor does not compute with", tensor: tensor.name)
        }
        let count = try TensorGeometry(shape: tensor.shape).elementCount
        if tensor.dataType == .double {
            guard case .dense(let bytes) = try tensor.encoded(as: .dense).storage else { preconditionFailure("encoded(as: .dense) is dense") }
            let doubles = bytes.withUnsafeBytes { raw in
                (0 ..< count).map { Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self))) }
            }
            self.init(doubles, shape: tensor.shape)
            return
        }
        if tensor.dataType.isFloatingPoint || Minifloats.types.contains(tensor.dataType) {
            self.init(try tensor.densify(), shape: tensor.shape, type: tensor.dataType)
            return
        }
        if tensor.dataType == .int4 || tensor.dataType == .uint4 {
            self.init(try tensor.densify().map { Int64($0) }, shape: tensor.shape, type: tensor.dataType)
            return
        }
        let dense = try tensor.encoded(as: .dense)
        guard case .dense(let bytes) = dense.storage else { preconditionFailure("encoded(as: .dense) is dense") }
        let type = tensor.dataType
        let ints: [Int64] = bytes.withUnsafeBytes { raw in
            func load<T: FixedWidthInteger>(_: T.Type) -> [Int64] {
                (0 ..< count).map { Int64(truncatingIfNeeded: T(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.size, as: T.self))) }
            }
            switch type {
            case .int8: return load(Int8.self)
            case .uint8, .bool: return load(UInt8.self)
            case .int16: return load(Int16.self)
            case .uint16: return load(UInt16.self)
            case .int32: return load(Int32.self)
            case .uint32: return load(UInt32.self)
            default: return load(Int64.self)
            }
        }
        if type == .bool {
            self.init(ints.map { $0 != 0 }, shape: tensor.shape)
        } else {
            self.init(ints, shape: tensor.shape, type: type)
        }
    }

    // MARK: - Element access

    /// Float elements as float32 (float64 rounded: the view of ops without a float64 path).
    var floats: [Float]? {
        switch elements {
        case .float(let v): return v
        case .double(let v): return v.map { Float($0) }
        default: return nil
        }
    }
    var doubles: [Double]? { if case .double(let v) = elements { return v } else { return nil } }

    /// Elements in the precision an op computes in: `Double` reads float64 exactly (and
    /// integers up to 2^53), `Float` is the float32 view. Ops generic over the two are called
    /// with Double for float64 inputs (`NodeContext.isDouble`).
    func floating<T: BinaryFloatingPoint>(_: T.Type) -> [T] {
        // The same array under its own type (`as!` copied element by element).
        if T.self == Double.self { return unsafeBitCast(asDoubles, to: [T].self) }
        if T.self == Float.self { return unsafeBitCast(asFloats, to: [T].self) }
        return asDoubles.map(T.init)
    }
    var ints: [Int64]? { if case .int(let v) = elements { return v } else { return nil } }
    var bools: [Bool]? { if case .bool(let v) = elements { return v } else { return nil } }

    /// Elements as Float whatever the storage (for statistics and comparisons).
    public var asFloats: [Float] {
        switch elements {
        case .float(let v): return v
        case .double(let v): return Self.mapped(v) { Float($0) }
        case .int(let v): return Self.mapped(v) { Float($0) }
        case .bool(let v):
            // From the bytes (a Bool is stored as 0 or 1): converting Bools built a mask
            // register a lane at a time.
            return v.withUnsafeBufferPointer { $0.withMemoryRebound(to: UInt8.self) { Self.mapped($0) { Float($0) } } }
        }
    }

    /// Elements as Int64 (shape arithmetic reads integer tensors this way); floats saturate.
    var asInts: [Int64] {
        switch elements {
        case .float(let v): return Self.mapped(v, Self.saturatingInt)
        case .double(let v): return Self.mapped(v, Self.saturatingInt)
        case .int(let v): return v
        case .bool(let v): return v.map { $0 ? 1 : 0 }
        }
    }

    /// The elements at `indices` (flat source positions), with `shape`: every layout op is this.
    func picking(_ indices: [Int], shape: [Int]) -> Value {
        var out = self
        out.shape = shape
        switch elements {
        case .float(let v): out.elements = .float(indices.map { v[$0] })
        case .double(let v): out.elements = .double(indices.map { v[$0] })
        case .int(let v): out.elements = .int(indices.map { v[$0] })
        case .bool(let v): out.elements = .bool(indices.map { v[$0] })
        }
        return out
    }

    /// The runs of `length` elements from each of `starts`, one after another: `picking` of
    /// every element of those runs (Gather's rows), a copy per run.
    func copyingRuns(from starts: [Int], length: Int, shape: [Int]) -> Value {
        func copy<T>(_ v: [T]) -> [T] {
            [T](unsafeUninitializedCapacity: starts.count * length) { out, initialized in
                v.withUnsafeBufferPointer { source in
                    for (k, start) in starts.enumerated() {
                        (out.baseAddress! + k * length).initialize(from: source.baseAddress! + start, count: length)
                    }
                }
                initialized = starts.count * length
            }
        }
        var out = self
        out.shape = shape
        switch elements {
        case .float(let v): out.elements = .float(copy(v))
        case .double(let v): out.elements = .double(copy(v))
        case .int(let v): out.elements = .int(copy(v))
        case .bool(let v): out.elements = .bool(copy(v))
        }
        return out
    }

    /// The elements of a strided walk over `shape` from `base` (Transpose, Slice): what
    /// `picking(Broadcast.walk(...))` gives, without the index array, a row at a time.
    func walking(_ outputShape: [Int], strides outputStrides: [Int], base: Int) -> Value {
        let count = outputShape.reduce(1, *)
        // The same walk over fewer, longer axes: length-1 axes dropped, and an axis merged into
        // the one before it where that one steps over it exactly.
        var shape: [Int] = [], strides: [Int] = []
        for (n, stride) in zip(outputShape, outputStrides) where n != 1 {
            if let last = shape.last, strides.last! == stride * n {
                shape[shape.count - 1] = last * n
                strides[strides.count - 1] = stride
            } else {
                shape.append(n)
                strides.append(stride)
            }
        }
        func gather<T>(_ v: [T]) -> [T] {
            let n = shape.last ?? 1, step = strides.last ?? 0
            return [T](unsafeUninitializedCapacity: count) { out, initialized in
                v.withUnsafeBufferPointer { source in
                    var i = 0
                    Broadcast.forEachRow(shape, strides: strides, base: base) { offset in
                        if step == 1 {   // a contiguous run (the last axis kept): one copy
                            (out.baseAddress! + i).initialize(from: source.baseAddress! + offset, count: n)
                        } else {
                            for j in 0 ..< n { (out.baseAddress! + i + j).initialize(to: source[offset + j * step]) }
                        }
                        i += n
                    }
                }
                initialized = count
            }
        }
        var out = self
        out.shape = outputShape
        switch elements {
        case .float(let v): out.elements = .float(gather(v))
        case .double(let v): out.elements = .double(gather(v))
        case .int(let v): out.elements = .int(gather(v))
        case .bool(let v): out.elements = .bool(gather(v))
        }
        return out
    }

    /// The elements, flat, with one zero (false) after them: the source of padding for `picking`.
    func appendingZero() -> Value {
        var out = self
        out.shape = [count + 1]
        switch elements {
        case .float(let v): out.elements = .float(v + [0])
        case .double(let v): out.elements = .double(v + [0])
        case .int(let v): out.elements = .int(v + [0])
        case .bool(let v): out.elements = .bool(v + [false])
        }
        return out
    }

    /// The elements where `keep` is true, zero (false) elsewhere.
    func masked(_ keep: [Bool]) -> Value {
        var out = self
        switch elements {
        case .float(let v): out.elements = .float(v.indices.map { keep[$0] ? v[$0] : 0 })
        case .double(let v): out.elements = .double(v.indices.map { keep[$0] ? v[$0] : 0 })
        case .int(let v): out.elements = .int(v.indices.map { keep[$0] ? v[$0] : 0 })
        case .bool(let v): out.elements = .bool(v.indices.map { keep[$0] && v[$0] })
        }
        return out
    }

    /// These elements with `updates`' elements, in order, written at `positions` or combined
    /// with what is there (`reduction`: none, add, mul, max or min; later writes win).
    func scattering(_ updates: Value, at positions: [Int], reduction: String) throws -> Value {
        func combine<T>(_ base: [T], _ new: [T], _ op: (T, T) -> T) -> [T] {
            var out = base
            for (k, p) in positions.enumerated() { out[p] = op(out[p], new[k]) }
            return out
        }
        func apply<T: Comparable>(_ base: [T], _ new: [T], add: (T, T) -> T, mul: (T, T) -> T) throws -> [T] {
            switch reduction {
            case "none": return combine(base, new) { $1 }
            case "add": return combine(base, new, add)
            case "mul": return combine(base, new, mul)
            case "max": return combine(base, new) { Swift.max($0, $1) }
            case "min": return combine(base, new) { Swift.min($0, $1) }
            default: throw RuntimeError(.badGraph, "reduction '\(reduction)' is not none, add, mul, max or min")
            }
        }
        var out = self
        switch (elements, updates.elements) {
        case (.float(let a), .float(let b)): out.elements = .float(try apply(a, b, add: +, mul: *))
        case (.double(let a), .double(let b)): out.elements = .double(try apply(a, b, add: +, mul: *))
        case (.int(let a), .int(let b)): out.elements = .int(try apply(a, b, add: &+, mul: &*).map { Self.wrap($0, to: type) })
        case (.bool(let a), .bool(let b)) where reduction == "none": out.elements = .bool(combine(a, b) { $1 })
        default: throw RuntimeError(.unsupportedType, "cannot scatter \(updates.type) into \(type) with reduction '\(reduction)'")
        }
        return out
    }

    /// The same elements with another shape.
    func reshaped(_ shape: [Int]) -> Value {
        var out = self
        out.shape = shape
        return out
    }

    /// `f` of each element, through the buffers: `Array.map` converted element by element
    /// through its iterator (a Cast of 526K bools to float took 1.25 ms in magika).
    @inline(__always)
    static func mapped<T, R>(_ v: [T], _ f: (T) -> R) -> [R] {
        v.withUnsafeBufferPointer { mapped($0, f) }
    }

    @inline(__always)
    static func mapped<T, R>(_ v: UnsafeBufferPointer<T>, _ f: (T) -> R) -> [R] {
        [R](unsafeUninitializedCapacity: v.count) { out, initialized in
            for i in v.indices { (out.baseAddress! + i).initialize(to: f(v[i])) }
            initialized = v.count
        }
    }

    /// This value converted to `type` (ONNX Cast: float to integer truncates toward zero).
    public func cast(to type: DataType, saturate: Bool = true) throws -> Value {
        guard Self.isSupported(type) else {
            throw RuntimeError(.unsupportedType, "cannot cast to \(type)")
        }
        if type == .bool { return Value(Self.mapped(asDoubles) { $0 != 0 }, shape: shape) }
        if type == .double { return Value(asDoubles, shape: shape) }
        if type.isFloatingPoint { return Value(asFloats, shape: shape, type: type).representable() }
        if Minifloats.types.contains(type) {
            return Value(asFloats.map { Minifloats.rounded($0, to: type, saturate: saturate) }, shape: shape, type: type)
        }
        let ints: [Int64]
        switch elements {
        case .float(let v): ints = Self.mapped(v, Self.saturatingInt)
        case .double(let v): ints = Self.mapped(v, Self.saturatingInt)
        case .int(let v): ints = v
        case .bool(let v): ints = Self.mapped(v) { $0 ? 1 : 0 }
        }
        return Value(Self.mapped(ints) { Self.wrap($0, to: type) }, shape: shape, type: type)
    }

    /// Elements as Double whatever the storage (float64 exactly, integers up to 2^53 exactly).
    var asDoubles: [Double] {
        switch elements {
        case .float(let v): return Self.mapped(v) { Double($0) }
        case .double(let v): return v
        case .int(let v): return Self.mapped(v) { Double($0) }
        case .bool(let v): return Self.mapped(v) { $0 ? 1 : 0 }
        }
    }

    /// Float elements rounded to what this value's type holds: float16 and bfloat16 compute in
    /// float32 and round (to nearest even) after every op, as onnxruntime's kernels do.
    /// A float64 value an op computed through the float32 view is stored back as float64.
    func representable() -> Value {
        if type == .double, case .float(let v) = elements { return Value(v.map(Double.init), shape: shape) }
        guard case .float(let v) = elements, type != .float, type != .double else { return self }
        var out = self
        switch type {
        case .float16: out.elements = .float(v.map { Float(Float16($0)) })
        case .bfloat16: out.elements = .float(v.map(Self.roundedToBFloat16))
        case _ where Minifloats.types.contains(type): out.elements = .float(v.map { Minifloats.rounded($0, to: type, saturate: false) })
        default: break
        }
        return out
    }

    /// The nearest bfloat16, ties to even (NaN stays NaN), as a Float.
    static func roundedToBFloat16(_ x: Float) -> Float {
        guard !x.isNaN else { return x }
        let bits = x.bitPattern
        let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
        return Float(bitPattern: rounded & 0xFFFF_0000)
    }

    /// A float toward zero, clamped to the Int64 range; NaN is 0 (values from files may be anything).
    static func saturatingInt(_ x: Float) -> Int64 { saturatingInt(Double(x)) }
    static func saturatingInt(_ x: Double) -> Int64 { x.isNaN ? 0 : Int64(max(min(x, 9.2e18), -9.2e18)) }

    /// Two's-complement wrap of an integer into a narrower ONNX integer type.
    static func wrap(_ v: Int64, to type: DataType) -> Int64 {
        switch type {
        case .int8: return Int64(Int8(truncatingIfNeeded: v))
        case .uint8: return Int64(UInt8(truncatingIfNeeded: v))
        case .int16: return Int64(Int16(truncatingIfNeeded: v))
        case .uint16: return Int64(UInt16(truncatingIfNeeded: v))
        case .int32: return Int64(Int32(truncatingIfNeeded: v))
        case .uint32: return Int64(UInt32(truncatingIfNeeded: v))
        case .int4: return Int64(Int8(truncatingIfNeeded: v << 4) >> 4)
        case .uint4: return v & 0xF
        default: return v
        }
    }
}

extension Array {
    /// The elements at `indices`, in order.
    func picking(_ indices: [Int]) -> [Element] { indices.map { self[$0] } }
}
