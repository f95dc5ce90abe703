/// Logical element types. The numbers are ONNX's `TensorProto.DataType` numbers, so a value
/// means the same thing in both formats; a number is never reused for another type.
public enum DataType: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    /// The type numbered `number` (an ONNX or .tess number read from a file: any integer, so
    /// that a negative or oversized one is simply unknown), or nil.
    public init?<T: BinaryInteger>(number: T) {
        guard let raw = UInt32(exactly: number) else { return nil }
        self.init(rawValue: raw)
    }

    case float = 1
    case uint8 = 2
    case int8 = 3
    case uint16 = 4
    case int16 = 5
    case int32 = 6
    case int64 = 7
    // 8 is ONNX STRING: not a fixed-size type, not storable in a .tess file.
    case bool = 9
    case float16 = 10
    case double = 11
    case uint32 = 12
    case uint64 = 13
    case complex64 = 14
    case complex128 = 15
    case bfloat16 = 16
    case float8e4m3fn = 17
    case float8e4m3fnuz = 18
    case float8e5m2 = 19
    case float8e5m2fnuz = 20
    case uint4 = 21
    case int4 = 22
    case float4e2m1 = 23

    /// Storage width of one element. Sub-byte types pack two elements per byte, first element
    /// in the low nibble (ONNX packing).
    public var bitWidth: Int {
        switch self {
        case .uint4, .int4, .float4e2m1: return 4
        case .uint8, .int8, .bool, .float8e4m3fn, .float8e4m3fnuz, .float8e5m2, .float8e5m2fnuz: return 8
        case .uint16, .int16, .float16, .bfloat16: return 16
        case .float, .int32, .uint32: return 32
        case .int64, .uint64, .double, .complex64: return 64
        case .complex128: return 128
        }
    }

    /// Bytes taken by `count` packed elements of this type.
    public func byteCount(_ count: Int) -> Int { bitWidth == 4 ? (count + 1) / 2 : count * (bitWidth / 8) }

    /// True for the types a quantized tensor may dequantize to.
    public var isFloatingPoint: Bool {
        switch self {
        case .float, .float16, .bfloat16, .double: return true
        default: return false
        }
    }

    /// ONNX's name for the type, lower-cased (`float`, `bfloat16`, `int4`, ...).
    public var name: String {
        switch self {
        case .float: return "float32"
        case .uint8: return "uint8"
        case .int8: return "int8"
        case .uint16: return "uint16"
        case .int16: return "int16"
        case .int32: return "int32"
        case .int64: return "int64"
        case .bool: return "bool"
        case .float16: return "float16"
        case .double: return "float64"
        case .uint32: return "uint32"
        case .uint64: return "uint64"
        case .complex64: return "complex64"
        case .complex128: return "complex128"
        case .bfloat16: return "bfloat16"
        case .float8e4m3fn: return "float8e4m3fn"
        case .float8e4m3fnuz: return "float8e4m3fnuz"
        case .float8e5m2: return "float8e5m2"
        case .float8e5m2fnuz: return "float8e5m2fnuz"
        case .uint4: return "uint4"
        case .int4: return "int4"
        case .float4e2m1: return "float4e2m1"
        }
    }

    public var description: String { name }

    /// Parse a file's dtype field.
    static func decode(_ raw: UInt32, field: String, offset: Int) throws -> DataType {
        guard let type = DataType(rawValue: raw) else {
            let hint = raw == 8 ? " (string tensors cannot be stored in .tess files)" : ""
            throw TessError(.unknownDataType, "\(field) \(raw) is not a known data type\(hint)", offset: offset)
        }
        return type
    }
}

/// Integer types of CSR row pointers and column indices; numbers are ONNX dtype numbers.
public enum IndexType: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case uint8 = 2
    case uint16 = 4
    case uint32 = 12
    case uint64 = 13

    public var byteWidth: Int {
        switch self {
        case .uint8: return 1
        case .uint16: return 2
        case .uint32: return 4
        case .uint64: return 8
        }
    }

    public var maxValue: UInt64 {
        switch self {
        case .uint8: return UInt64(UInt8.max)
        case .uint16: return UInt64(UInt16.max)
        case .uint32: return UInt64(UInt32.max)
        case .uint64: return UInt64.max
        }
    }

    /// The narrowest type that holds every value in `0...maxValue`.
    public static func narrowest(holding maxValue: Int) -> IndexType {
        allCases.first { $0.maxValue >= UInt64(max(maxValue, 0)) }!
    }

    public var description: String { "u\(byteWidth * 8)" }

    /// Read element `i` of a little-endian array of this type.
    @inline(__always)
    public func load(_ bytes: UnsafeRawBufferPointer, _ i: Int) -> UInt64 {
        switch self {
        case .uint8: return UInt64(bytes[i])
        case .uint16: return UInt64(UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: i &* 2, as: UInt16.self)))
        case .uint32: return UInt64(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: i &* 4, as: UInt32.self)))
        case .uint64: return UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: i &* 8, as: UInt64.self))
        }
    }

    /// Append `value` (which must fit) in little-endian order.
    func append(_ value: Int, to out: inout [UInt8]) {
        var v = UInt64(value).littleEndian
        withUnsafeBytes(of: &v) { out.append(contentsOf: $0.prefix(byteWidth)) }
    }
}
