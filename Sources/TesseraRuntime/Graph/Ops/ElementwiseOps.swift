import CTesseraKernels
import Foundation
import Tessera

/// Unary and broadcasting binary ops, element by element.
enum ElementwiseOps {
    static var table: [String: OpKernel] {
        var t: [String: OpKernel] = [:]
        // Each function twice, float32 for the float types and float64 for double (the same
        // text), written in the entry itself so that it compiles into the loop.
        t["Relu"] = { c in [try floatMap(c, relu, relu)] }
        t["Sigmoid"] = { c in [try elementary(c, .sigmoid, sigmoid)] }
        t["Tanh"] = { c in [try elementary(c, .tanh) { Foundation.tanh($0) }] }
        t["Erf"] = { c in [try elementary(c, .erf) { Foundation.erf($0) }] }
        t["Sqrt"] = { c in [try floatMap(c, { $0.squareRoot() }, { $0.squareRoot() })] }
        t["Exp"] = { c in [try elementary(c, .exp) { Foundation.exp($0) }] }
        t["Log"] = { c in [try floatMap(c, { Foundation.log($0) }, { Foundation.log($0) })] }
        t["Reciprocal"] = { c in [try floatMap(c, { 1 / $0 }, { 1 / $0 })] }
        t["Floor"] = { c in [try floatMap(c, { $0.rounded(.down) }, { $0.rounded(.down) })] }
        t["Ceil"] = { c in [try floatMap(c, { $0.rounded(.up) }, { $0.rounded(.up) })] }
        t["Softplus"] = { c in [try floatMap(c, { Foundation.log1p(Foundation.exp(-abs($0))) + max($0, 0) }, { Foundation.log1p(Foundation.exp(-abs($0))) + max($0, 0) })] }
        t["Softsign"] = { c in [try floatMap(c, { $0 / (1 + abs($0)) }, { $0 / (1 + abs($0)) })] }
        t["Sin"] = { c in [try floatMap(c, { Foundation.sin($0) }, { Foundation.sin($0) })] }
        t["Cos"] = { c in [try floatMap(c, { Foundation.cos($0) }, { Foundation.cos($0) })] }
        t["Tan"] = { c in [try floatMap(c, { Foundation.tan($0) }, { Foundation.tan($0) })] }
        t["Asin"] = { c in [try floatMap(c, { Foundation.asin($0) }, { Foundation.asin($0) })] }
        t["Acos"] = { c in [try floatMap(c, { Foundation.acos($0) }, { Foundation.acos($0) })] }
        t["Atan"] = { c in [try floatMap(c, { Foundation.atan($0) }, { Foundation.atan($0) })] }
        t["Sinh"] = { c in [try floatMap(c, { Foundation.sinh($0) }, { Foundation.sinh($0) })] }
        t["Cosh"] = { c in [try floatMap(c, { Foundation.cosh($0) }, { Foundation.cosh($0) })] }
        t["Asinh"] = { c in [try floatMap(c, { Foundation.asinh($0) }, { Foundation.asinh($0) })] }
        t["Acosh"] = { c in [try floatMap(c, { Foundation.acosh($0) }, { Foundation.acosh($0) })] }
        t["Atanh"] = { c in [try floatMap(c, { Foundation.atanh($0) }, { Foundation.atanh($0) })] }
        t["Round"] = { c in [try floatMap(c, { $0.rounded(.toNearestOrEven) }, { $0.rounded(.toNearestOrEven) })] }
        t["HardSwish"] = { c in [try floatMap(c, hardSwish, hardSwish)] }
        t["Mish"] = { c in [try floatMap(c, { $0 * Foundation.tanh(Foundation.log1p(Foundation.exp(-abs($0))) + max($0, 0)) }, { $0 * Foundation.tanh(Foundation.log1p(Foundation.exp(-abs($0))) + max($0, 0)) })] }
        // Attributes are float32; float64 inputs compute with them widened.
        t["Swish"] = { c in
            let a = c.float("alpha", 1), x = try c.input(0)
            if let v = x.doubles { return [Value(v.map { $0 * sigmoid(Double(a) * $0) }, shape: x.shape)] }
            let v = try c.floats(0)
            return [Value(zip(v, ElementaryFunction.sigmoid(v.map { a * $0 })).map(*), shape: x.shape, type: x.type)]
        }
        t["SwiGLU"] = { c in
            let gate = try c.input(0), linear = try c.input(1), alpha = c.float("alpha", 1)
            guard gate.shape == linear.shape else { throw RuntimeError(.badShape, "SwiGLU's A \(gate.shape) and B \(linear.shape) differ (it does not broadcast)") }
            if gate.type == .double {
                let d = Double(alpha)
                return [Value(zip(try c.floats(0, as: Double.self), try c.floats(1, as: Double.self)).map { $0 * sigmoid(d * $0) * $1 }, shape: gate.shape)]
            }
            let a = try c.floats(0), b = try c.floats(1)
            return [Value(zip(a, b).map { $0 * sigmoid(alpha * $0) * $1 }, shape: gate.shape, type: gate.type)]
        }
        t["Celu"] = { c in
            let a = c.float("alpha", 1), d = Double(a)
            return [try floatMap(c, { max(0, $0) + min(0, a * (Foundation.exp($0 / a) - 1)) }, { max(0, $0) + min(0, d * (Foundation.exp($0 / d) - 1)) })]
        }
        t["ThresholdedRelu"] = { c in
            let a = c.float("alpha", 1), d = Double(a)
            return [try floatMap(c, { $0 > a ? $0 : 0 }, { $0 > d ? $0 : 0 })]
        }
        // Read in float64 (exact for float32 too): a float64 beyond float32's range is not infinite.
        t["IsNaN"] = { c in let x = try c.input(0); return [Value(try c.floats(0, as: Double.self).map(\.isNaN), shape: x.shape)] }
        t["IsInf"] = { c in
            let x = try c.input(0), negative = c.int("detect_negative", 1) != 0, positive = c.int("detect_positive", 1) != 0
            return [Value(try c.floats(0, as: Double.self).map { $0.isInfinite && ($0 < 0 ? negative : positive) }, shape: x.shape)]
        }
        t["Elu"] = { c in
            let a = c.float("alpha", 1), d = Double(a)
            return [try floatMap(c, { $0 >= 0 ? $0 : a * (Foundation.exp($0) - 1) }, { $0 >= 0 ? $0 : d * (Foundation.exp($0) - 1) })]
        }
        t["Selu"] = { c in
            let a = c.float("alpha", 1.67326319217681884765625), g = c.float("gamma", 1.05070102214813232421875)
            let ad = Double(a), gd = Double(g)
            return [try floatMap(c, { $0 > 0 ? g * $0 : g * a * (Foundation.exp($0) - 1) }, { $0 > 0 ? gd * $0 : gd * ad * (Foundation.exp($0) - 1) })]
        }
        t["LeakyRelu"] = { c in
            let a = c.float("alpha", 0.01), d = Double(a)
            return [try floatMap(c, { leakyRelu($0, a) }, { leakyRelu($0, d) })]
        }
        t["HardSigmoid"] = { c in
            let a = c.float("alpha", 0.2), b = c.float("beta", 0.5), ad = Double(a), bd = Double(b)
            return [try floatMap(c, { hardSigmoid($0, a, b) }, { hardSigmoid($0, ad, bd) })]
        }
        t["Shrink"] = { c in
            let bias = c.float("bias", 0), lambd = c.float("lambd", 0.5), bd = Double(bias), ld = Double(lambd)
            return [try floatMap(c, { $0 < -lambd ? $0 + bias : ($0 > lambd ? $0 - bias : 0) }, { $0 < -ld ? $0 + bd : ($0 > ld ? $0 - bd : 0) })]
        }
        t["Gelu"] = { c in
            guard c.string("approximate", "none") == "tanh" else {
                let x = try c.input(0)
                if let v = x.doubles { return [Value(v.map { 0.5 * $0 * (1 + Foundation.erf($0 / Double(2).squareRoot())) }, shape: x.shape)] }
                let v = try c.floats(0)
                return [Value(zip(v, ElementaryFunction.erf(v.map { $0 / Float(2).squareRoot() })).map { 0.5 * $0 * (1 + $1) }, shape: x.shape, type: x.type)]
            }
            let k = (2 / Double.pi).squareRoot(), kf = Float(k)
            return [try floatMap(c, { 0.5 * $0 * (1 + Foundation.tanh(kf * ($0 + 0.044715 * $0 * $0 * $0))) }, { 0.5 * $0 * (1 + Foundation.tanh(k * ($0 + 0.044715 * $0 * $0 * $0))) })]
        }
        t["Clip"] = { c in
            let x = try c.input(0)
            // Bounds in the input's precision: Double for floats, Int64 for integers.
            let low = c.opset < 11 ? Double(c.float("min", -.greatestFiniteMagnitude)) : c.optionalInput(1)?.asDoubles.first
            let high = c.opset < 11 ? Double(c.float("max", .greatestFiniteMagnitude)) : c.optionalInput(2)?.asDoubles.first
            switch x.elements {
            case .int(let v):
                let lo = (c.opset < 11 ? low.map(Value.saturatingInt) : c.optionalInput(1)?.asInts.first) ?? .min
                let hi = (c.opset < 11 ? high.map(Value.saturatingInt) : c.optionalInput(2)?.asInts.first) ?? .max
                return [Value(v.map { min(max($0, lo), hi) }, shape: x.shape, type: x.type)]
            default:
                let lo = Float(low ?? -.infinity), hi = Float(high ?? .infinity)
                return [try floatMap(c, { clip($0, lo, hi) }, { clip($0, low ?? -.infinity, high ?? .infinity) })]
            }
        }
        t["Neg"] = { c in try signed(c, { -$0 }, { 0 &- $0 }) }   // integers wrap, as two's complement does
        t["Abs"] = { c in try signed(c, { abs($0) }, { $0 < 0 ? 0 &- $0 : $0 }) }
        t["Sign"] = { c in try signed(c, { $0 > 0 ? 1 : ($0 < 0 ? -1 : 0) }, { $0.signum() }) }
        t["Not"] = { c in
            let x = try c.input(0)
            guard let b = x.bools else { throw RuntimeError(.unsupportedType, "Not needs a bool tensor") }
            return [Value(b.map { !$0 }, shape: x.shape)]
        }
        t["Dropout"] = { c in   // inference: the identity, and an all-true mask when asked for
            let x = try c.input(0)
            return c.node.outputs.count > 1 ? [x, Value([Bool](repeating: true, count: x.count), shape: x.shape)] : [x]
        }

        t["Add"] = { c in [try arithmetic(c, .add, &+)] }
        t["Sub"] = { c in [try arithmetic(c, .subtract, &-)] }
        t["Mul"] = { c in [try arithmetic(c, .multiply, &*)] }
        t["Div"] = { c in
            [try arithmetic(c, .divide, { a, b in
                guard b != 0 else { return 0 }
                return a.dividedReportingOverflow(by: b).partialValue
            })]
        }
        t["Pow"] = { c in
            let base = try c.input(0), exponent = try c.input(1)
            if case .int(let b) = base.elements {
                let (y, shape) = try Broadcast.apply(b, base.shape, exponent.asDoubles, exponent.shape) { Value.saturatingInt(Foundation.pow(Double($0), $1)) }
                return [Value(y, shape: shape, type: base.type)]
            }
            if base.type == .double {
                return [try floating(base, exponent, FloatFunction { x, e in e == 2 ? x * x : Foundation.pow(x, e) })]
            }
            let (y, shape) = try Broadcast.apply(base.asFloats, base.shape, exponent.asFloats, exponent.shape) { x, e in
                e == 2 ? x * x : (e == 0.5 ? x.squareRoot() : Foundation.pow(x, e))
            }
            return [Value(y, shape: shape, type: base.type)]
        }
        t["PRelu"] = { c in
            let x = try c.input(0)
            var slope = try c.input(1)
            // Before opset 7 a 1-D slope holds one value per channel (axis 1).
            if c.opset < 7, slope.shape.count == 1, x.shape.count > 2, slope.count == x.shape[1] {
                slope = slope.reshaped([slope.count] + [Int](repeating: 1, count: x.shape.count - 2))
            }
            return [try floating(x, slope, FloatFunction { $0 < 0 ? $0 * $1 : $0 })]
        }
        t["Mod"] = { c in
            let fmod = c.int("fmod", 0) != 0
            // fmod = 1 keeps the dividend's sign (C fmod); fmod = 0 the divisor's (Python's %).
            return [try combine(try c.input(0), try c.input(1), FloatFunction { x, y in
                let r = Foundation.fmod(x, y)
                guard !fmod, y != 0 else { return r }
                return r != 0 && (r < 0) != (y < 0) ? r + y : (r == 0 ? Double(signOf: y, magnitudeOf: 0) : r)
            }, { x, y in
                guard y != 0 else { return 0 }
                let r = x.remainderReportingOverflow(dividingBy: y).partialValue
                return !fmod && r != 0 && (r < 0) != (y < 0) ? r + y : r
            })]
        }
        t["BitShift"] = { c in
            let direction = c.string("direction", "")
            guard direction == "LEFT" || direction == "RIGHT" else { throw RuntimeError(.badGraph, "BitShift's direction must be LEFT or RIGHT") }
            let type = try c.input(0).type, width = Int64(type.bitWidth), signed = [.int8, .int16, .int32, .int64].contains(type)
            return [try integerOnly(c, "BitShift") { x, s in
                if direction == "LEFT" { return s >= 0 && s < width ? x << s : 0 }
                guard s >= 0, s < width else { return signed && x < 0 ? -1 : 0 }
                return signed ? x >> s : Int64(bitPattern: UInt64(bitPattern: x) >> UInt64(s))
            }]
        }
        t["BitwiseAnd"] = { c in [try integerOnly(c, "BitwiseAnd", &)] }
        t["BitwiseOr"] = { c in [try integerOnly(c, "BitwiseOr", |)] }
        t["BitwiseXor"] = { c in [try integerOnly(c, "BitwiseXor", ^)] }
        t["BitwiseNot"] = { c in
            let x = try c.input(0)
            guard let v = x.ints else { throw RuntimeError(.unsupportedType, "BitwiseNot needs an integer tensor, not \(x.type)") }
            return [Value(v.map { Value.wrap(~$0, to: x.type) }, shape: x.shape, type: x.type)]
        }
        t["Max"] = { c in [try variadic(c, .maximum, { max($0, $1) })] }
        t["Min"] = { c in [try variadic(c, .minimum, { min($0, $1) })] }
        t["Sum"] = { c in [try variadic(c, .add, &+)] }
        t["Mean"] = { c in
            let sum = try variadic(c, .add, &+)
            return [try floating(sum, Value([Float(try c.givenInputs().count)], shape: []), .divide)]
        }

        t["Equal"] = { c in [try comparison(c, ==, ==)] }
        t["Less"] = { c in [try comparison(c, <, <)] }
        t["Greater"] = { c in [try comparison(c, >, >)] }
        t["LessOrEqual"] = { c in [try comparison(c, <=, <=)] }
        t["GreaterOrEqual"] = { c in [try comparison(c, >=, >=)] }
        t["And"] = { c in [try logical(c) { $0 && $1 }] }
        t["Or"] = { c in [try logical(c) { $0 || $1 }] }
        t["Xor"] = { c in [try logical(c) { $0 != $1 }] }
        t["Where"] = { c in
            let condition = try c.input(0), x = try c.input(1), y = try c.input(2)
            guard let mask = condition.bools else { throw RuntimeError(.unsupportedType, "Where's condition must be bool") }
            let shape = try Broadcast.shape([condition.shape, x.shape, y.shape])
            let m = try Broadcast.sourceIndices(of: condition.shape, in: shape)
            let xi = try Broadcast.sourceIndices(of: x.shape, in: shape), yi = try Broadcast.sourceIndices(of: y.shape, in: shape)
            switch (x.elements, y.elements) {
            case (.float(let a), .float(let b)):
                return [Value(m.indices.map { mask[m[$0]] ? a[xi[$0]] : b[yi[$0]] }, shape: shape, type: x.type)]
            case (.double(let a), .double(let b)):
                return [Value(m.indices.map { mask[m[$0]] ? a[xi[$0]] : b[yi[$0]] }, shape: shape)]
            case (.int(let a), .int(let b)):
                return [Value(m.indices.map { mask[m[$0]] ? a[xi[$0]] : b[yi[$0]] }, shape: shape, type: x.type)]
            case (.bool(let a), .bool(let b)):
                return [Value(m.indices.map { mask[m[$0]] ? a[xi[$0]] : b[yi[$0]] }, shape: shape)]
            default:
                throw RuntimeError(.unsupportedType, "Where's branches are \(x.type) and \(y.type)")
            }
        }
        return t
    }

    // The activations a Conv's fused epilogue applies too (`Fusion.Activation`): one text for both.
    @inline(__always) static func relu<T: FloatingPoint>(_ x: T) -> T { max(x, 0) }
    /// As ONNX defines it, `x · HardSigmoid(x)` with alpha 1/6 and beta 0.5: a multiply by 1/6
    /// (as onnxruntime does), not a division by 6, which costs ten times as much in SIMD.
    @inline(__always) static func hardSwish<T: BinaryFloatingPoint>(_ x: T) -> T { x * hardSigmoid(x, 1 / 6, 0.5) }
    @inline(__always) static func leakyRelu<T: FloatingPoint>(_ x: T, _ alpha: T) -> T { x >= 0 ? x : alpha * x }
    @inline(__always) static func hardSigmoid<T: FloatingPoint>(_ x: T, _ alpha: T, _ beta: T) -> T { max(0, min(1, alpha * x + beta)) }
    @inline(__always) static func clip<T: FloatingPoint>(_ x: T, _ low: T, _ high: T) -> T { min(max(x, low), high) }

    static func sigmoid(_ x: Float) -> Float { x >= 0 ? 1 / (1 + Foundation.exp(-x)) : Foundation.exp(x) / (1 + Foundation.exp(x)) }
    static func sigmoid(_ x: Double) -> Double { x >= 0 ? 1 / (1 + Foundation.exp(-x)) : Foundation.exp(x) / (1 + Foundation.exp(x)) }

    /// `f` over input 0, which must be a float tensor; the output keeps its type. A float64
    /// tensor goes through `d`, the same function on Double.
    @inline(__always)
    static func floatMap(_ c: NodeContext, _ f: (Float) -> Float, _ d: (Double) -> Double) throws -> Value {
        let x = try c.input(0)
        if let v = x.doubles { return Value(v.map(d), shape: x.shape) }
        let v = try c.floats(0)
        let y = [Float](unsafeUninitializedCapacity: v.count) { out, initialized in
            v.withUnsafeBufferPointer { v in
                for i in 0 ..< v.count { (out.baseAddress! + i).initialize(to: f(v[i])) }
            }
            initialized = v.count
        }
        return Value(y, shape: x.shape, type: x.type)
    }

    /// An elementary function over input 0: float32 through Tessera's vectorised version (the
    /// same bits in every kernel variant), float64 through Foundation's `d`.
    static func elementary(_ c: NodeContext, _ f: ElementaryFunction, _ d: (Double) -> Double) throws -> Value {
        let x = try c.input(0)
        if let v = x.doubles { return Value(v.map(d), shape: x.shape) }
        return Value(f(try c.floats(0)), shape: x.shape, type: x.type)
    }

    /// An op exact in either precision (Neg, Abs, Sign): written once on Double.
    static func signed(_ c: NodeContext, _ f: @escaping (Double) -> Double, _ g: (Int64) -> Int64) throws -> [Value] {
        let x = try c.input(0)
        if case .int(let v) = x.elements { return [Value(v.map(g), shape: x.shape, type: x.type)] }
        return [try floatMap(c, { Float(f(Double($0))) }, f)]
    }

    /// A binary function of floats: the arithmetic operators, known here so that their loops
    /// compile to vector code, or any other written once on Double (float32 rounds its result,
    /// which for fmod, comparisons and the other exactly rounded operations is the float32
    /// operation's own result).
    enum FloatFunction: Sendable {
        case add, subtract, multiply, divide, maximum, minimum
        case other(@Sendable (Double, Double) -> Double)

        init(_ f: @escaping @Sendable (Double, Double) -> Double) { self = .other(f) }
    }

    /// `f` over two broadcast float tensors, in float64 when either is float64 (the output is
    /// then float64), else in float32 with the output in `a`'s type.
    static func floating(_ a: Value, _ b: Value, _ f: FloatFunction, threads: Int = 1) throws -> Value {
        if case .float(let x) = a.elements, case .float(let y) = b.elements {
            let op: Int32? = switch f {
            case .add: Int32(TESSERA_ADD)
            case .subtract: Int32(TESSERA_SUB)
            case .multiply: Int32(TESSERA_MUL)
            case .divide: Int32(TESSERA_DIV)
            default: nil
            }
            if let op, let (z, shape) = try Broadcast.arithmetic(x, a.shape, y, b.shape, op, threads: threads) { return Value(z, shape: shape, type: a.type) }
        }
        switch f {
        case .add: return try floating(a, b, +, +)
        case .subtract: return try floating(a, b, -, -)
        case .multiply: return try floating(a, b, *, *)
        case .divide: return try floating(a, b, /, /)
        case .maximum: return try floating(a, b, { max($0, $1) }, { max($0, $1) })
        case .minimum: return try floating(a, b, { min($0, $1) }, { min($0, $1) })
        case .other(let d): return try floating(a, b, { Float(d(Double($0), Double($1))) }, d)
        }
    }

    @inline(__always)
    static func floating(_ a: Value, _ b: Value, _ single: (Float, Float) -> Float, _ double: (Double, Double) -> Double) throws -> Value {
        if a.type == .double || b.type == .double {
            let (z, shape) = try Broadcast.apply(a.asDoubles, a.shape, b.asDoubles, b.shape, double)
            return Value(z, shape: shape)
        }
        let (z, shape) = try Broadcast.apply(a.asFloats, a.shape, b.asFloats, b.shape, single)
        return Value(z, shape: shape, type: a.type)
    }

    /// A broadcasting binary op on two tensors of one type (integers wrap to their type).
    static func arithmetic(_ c: NodeContext, _ f: FloatFunction, _ g: (Int64, Int64) -> Int64) throws -> Value {
        let a = try c.input(0)
        var b = try c.input(1)
        // Before opset 7, `broadcast` with `axis` aligned B with A starting at that axis.
        let axis = c.int("axis", -1)
        if c.opset < 7, c.int("broadcast", 0) != 0, axis >= 0 {
            let trailing = a.shape.count - axis - b.shape.count
            if trailing > 0 { b = b.reshaped(b.shape + [Int](repeating: 1, count: trailing)) }
        }
        return try combine(a, b, f, g, threads: c.threads)
    }

    static func combine(_ a: Value, _ b: Value, _ f: FloatFunction, _ g: (Int64, Int64) -> Int64, threads: Int = 1) throws -> Value {
        switch (a.elements, b.elements) {
        case (.float, .float), (.double, .double):
            return try floating(a, b, f, threads: threads)
        case (.int(let x), .int(let y)):
            let (z, shape) = try Broadcast.apply(x, a.shape, y, b.shape, g)
            return Value(z.map { Value.wrap($0, to: a.type) }, shape: shape, type: a.type)
        default:
            throw RuntimeError(.unsupportedType, "operands are \(a.type) and \(b.type); they must have one numeric type")
        }
    }

    /// A broadcasting binary op defined on integers only (bit operations).
    static func integerOnly(_ c: NodeContext, _ name: String, _ g: @escaping (Int64, Int64) -> Int64) throws -> Value {
        let a = try c.input(0), b = try c.input(1)
        guard case .int = a.elements, case .int = b.elements else {
            throw RuntimeError(.unsupportedType, "\(name) needs integer tensors, not \(a.type) and \(b.type)")
        }
        return try combine(a, b, FloatFunction { _, _ in 0 }, g)
    }

    static func variadic(_ c: NodeContext, _ f: FloatFunction, _ g: (Int64, Int64) -> Int64) throws -> Value {
        let operands = try c.givenInputs()
        guard var result = operands.first else { throw RuntimeError(.badGraph, "needs at least one input") }
        for next in operands.dropFirst() { result = try combine(result, next, f, g) }
        return result
    }

    /// Inlined into each op's entry, so that the loops call `f` and `g` directly (through a
    /// function value, Equal on magika's 526K one-hot elements took 2.2 ms).
    @inline(__always)
    static func comparison(_ c: NodeContext, _ f: (Double, Double) -> Bool, _ g: (Int64, Int64) -> Bool) throws -> Value {
        let a = try c.input(0), b = try c.input(1)
        switch (a.elements, b.elements) {
        case (.int(let x), .int(let y)):
            let (z, shape) = try Broadcast.apply(x, a.shape, y, b.shape, g)
            return Value(z, shape: shape)
        case (.bool(let x), .bool(let y)):
            let (z, shape) = try Broadcast.apply(x, a.shape, y, b.shape) { g($0 ? 1 : 0, $1 ? 1 : 0) }
            return Value(z, shape: shape)
        default:
            // Float32 operands compare as they are (widening to float64 is exact, so no copy is needed).
            let (z, shape) = a.type == .double || b.type == .double
                ? try Broadcast.apply(a.asDoubles, a.shape, b.asDoubles, b.shape, f)
                : try Broadcast.apply(a.asFloats, a.shape, b.asFloats, b.shape) { f(Double($0), Double($1)) }
            return Value(z, shape: shape)
        }
    }

    @inline(__always)
    static func logical(_ c: NodeContext, _ f: (Bool, Bool) -> Bool) throws -> Value {
        let a = try c.input(0), b = try c.input(1)
        guard let x = a.bools, let y = b.bools else { throw RuntimeError(.unsupportedType, "needs bool tensors") }
        let (z, shape) = try Broadcast.apply(x, a.shape, y, b.shape, f)
        return Value(z, shape: shape)
    }
}
