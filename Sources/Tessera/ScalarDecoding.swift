/// Decoding stored elements of every numeric type to `Float` (the densify target).
public enum ScalarDecoding {
    /// The first `count` elements of `bytes`, read as `type`, converted to `Float`.
    public static func floats(_ bytes: TensorBytes, type: DataType, count: Int) throws -> [Float] {
        try bytes.withUnsafeBytes { try floats($0, type: type, count: count) }
    }

    static func floats(_ raw: UnsafeRawBufferPointer, type: DataType, count: Int) throws -> [Float] {
        precondition(raw.count >= type.byteCount(count), "caller checked buffer sizes")
        let p = PackedElements(raw, type)
        func each(_ f: (Int) -> Float) -> [Float] { (0 ..< count).map(f) }
        func u16(_ i: Int) -> UInt16 { UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: i &* 2, as: UInt16.self)) }
        func u32(_ i: Int) -> UInt32 { UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: i &* 4, as: UInt32.self)) }
        func u64(_ i: Int) -> UInt64 { UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: i &* 8, as: UInt64.self)) }
        switch type {
        case .float: return each { Float(bitPattern: u32($0)) }
        case .double: return each { Float(Double(bitPattern: u64($0))) }
        case .float16: return each { Float(Float16(bitPattern: u16($0))) }
        case .bfloat16: return each { Float(bitPattern: UInt32(u16($0)) << 16) }
        case .uint8: return each { Float(raw[$0]) }
        case .int8: return each { Float(Int8(bitPattern: raw[$0])) }
        case .bool: return each { raw[$0] != 0 ? 1 : 0 }
        case .uint16: return each { Float(u16($0)) }
        case .int16: return each { Float(Int16(bitPattern: u16($0))) }
        case .uint32: return each { Float(u32($0)) }
        case .int32: return each { Float(Int32(bitPattern: u32($0))) }
        case .uint64: return each { Float(u64($0)) }
        case .int64: return each { Float(Int64(bitPattern: u64($0))) }
        case .uint4: return each { Float(p.nibble($0)) }
        case .int4: return each { Float(int4(p.nibble($0))) }
        case .float4e2m1: return each { float4e2m1(p.nibble($0)) }
        case .float8e4m3fn: return each { float8e4m3fn(raw[$0]) }
        case .float8e4m3fnuz: return each { float8e4m3fnuz(raw[$0]) }
        case .float8e5m2: return each { Float(Float16(bitPattern: UInt16(raw[$0]) << 8)) }
        case .float8e5m2fnuz: return each { float8e5m2fnuz(raw[$0]) }
        case .complex64, .complex128:
            throw TessError(.unsupportedOperation, "\(type) tensors have no float32 form")
        }
    }

    /// Sign-extend a 4-bit two's-complement code.
    @inline(__always)
    static func int4(_ nibble: UInt8) -> Int8 { Int8(bitPattern: nibble << 4) >> 4 }

    /// The value of a quantization code (`int8`, `uint8`, `int4`, `uint4`) as an integer.
    @inline(__always)
    static func code(_ raw: UInt8, _ type: DataType) -> Int32 {
        switch type {
        case .int8: return Int32(Int8(bitPattern: raw))
        case .int4: return Int32(int4(raw))
        default: return Int32(raw)
        }
    }

    // Minifloats (ONNX / OCP definitions): sign, exponent, mantissa.
    static func float8e4m3fn(_ b: UInt8) -> Float {
        let sign: Float = b & 0x80 != 0 ? -1 : 1
        let e = Int((b >> 3) & 0x0F), m = Float(b & 0x07)
        if e == 15 && b & 0x07 == 7 { return .nan }
        return sign * (e == 0 ? m / 8 * pow2(-6) : (1 + m / 8) * pow2(e - 7))
    }

    static func float8e4m3fnuz(_ b: UInt8) -> Float {
        if b == 0x80 { return .nan }
        let sign: Float = b & 0x80 != 0 ? -1 : 1
        let e = Int((b >> 3) & 0x0F), m = Float(b & 0x07)
        return sign * (e == 0 ? m / 8 * pow2(-7) : (1 + m / 8) * pow2(e - 8))
    }

    static func float8e5m2fnuz(_ b: UInt8) -> Float {
        if b == 0x80 { return .nan }
        let sign: Float = b & 0x80 != 0 ? -1 : 1
        let e = Int((b >> 2) & 0x1F), m = Float(b & 0x03)
        return sign * (e == 0 ? m / 4 * pow2(-15) : (1 + m / 4) * pow2(e - 16))
    }

    static func float4e2m1(_ n: UInt8) -> Float {
        let magnitudes: [Float] = [0, 0.5, 1, 1.5, 2, 3, 4, 6]
        let v = magnitudes[Int(n & 0x07)]
        return n & 0x08 != 0 ? -v : v
    }

    private static func pow2(_ e: Int) -> Float { Float(sign: .plus, exponent: e, significand: 1) }
}
