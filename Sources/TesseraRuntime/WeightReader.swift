import Tessera

/// Reads one stored weight value as `Float`. Kernels are generic over the reader, so each
/// layout has one kernel that the compiler specialises per value type.
protocol WeightReader {
    /// Stored value `j`, dequantized with scale (and zero point) number `s` when quantized.
    func weight(_ j: Int, _ s: Int) -> Float
    /// The stored values themselves when they are plain float32 (no decoding needed).
    var float32Values: UnsafePointer<Float>? { get }
}

extension WeightReader {
    var float32Values: UnsafePointer<Float>? { nil }
}

struct Float32Reader: WeightReader {
    let values: UnsafePointer<Float>
    @inline(__always) func weight(_ j: Int, _ s: Int) -> Float { values[j] }
    var float32Values: UnsafePointer<Float>? { values }
}

struct Float16Reader: WeightReader {
    let values: UnsafePointer<UInt16>
    @inline(__always) func weight(_ j: Int, _ s: Int) -> Float { Float(Float16(bitPattern: values[j])) }
}

struct BFloat16Reader: WeightReader {
    let values: UnsafePointer<UInt16>
    @inline(__always) func weight(_ j: Int, _ s: Int) -> Float { Float(bitPattern: UInt32(values[j]) << 16) }
}

struct Float64Reader: WeightReader {
    let values: UnsafePointer<Double>
    @inline(__always) func weight(_ j: Int, _ s: Int) -> Float { Float(values[j]) }
}

/// Integer codes of one quantized type.
protocol CodeReader {
    func code(_ j: Int) -> Int32
}

struct Int8Codes: CodeReader {
    let bytes: UnsafePointer<Int8>
    @inline(__always) func code(_ j: Int) -> Int32 { Int32(bytes[j]) }
}

struct UInt8Codes: CodeReader {
    let bytes: UnsafePointer<UInt8>
    @inline(__always) func code(_ j: Int) -> Int32 { Int32(bytes[j]) }
}

/// Two codes per byte, low nibble first.
struct Int4Codes: CodeReader {
    let bytes: UnsafePointer<UInt8>
    @inline(__always) func code(_ j: Int) -> Int32 {
        let b = bytes[j >> 1], nibble = j & 1 == 0 ? b << 4 : b & 0xF0
        return Int32(Int8(bitPattern: nibble) >> 4)
    }
}

struct UInt4Codes: CodeReader {
    let bytes: UnsafePointer<UInt8>
    @inline(__always) func code(_ j: Int) -> Int32 {
        let b = bytes[j >> 1]
        return Int32(j & 1 == 0 ? b & 0x0F : b >> 4)
    }
}

/// `scale[s] * (code - zeroPoint[s])`, the same arithmetic as `Tensor.densify()`.
struct DequantizingReader<Codes: CodeReader>: WeightReader {
    let codes: Codes
    let scales: UnsafePointer<Float>
    let zeroPoints: UnsafePointer<Float>
    @inline(__always) func weight(_ j: Int, _ s: Int) -> Float {
        scales[s] * (Float(codes.code(j)) - zeroPoints[s])
    }
}

/// A computation over a weight's values, run once per reader type (see `withReader`).
protocol WeightKernel {
    associatedtype Result
    func run<R: WeightReader>(_ reader: R) -> Result
}
