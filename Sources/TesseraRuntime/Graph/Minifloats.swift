import Tessera

/// The 8- and 4-bit float types (float8 e4m3fn, e4m3fnuz, e5m2, e5m2fnuz; float4 e2m1): the
/// executor computes them in Float and rounds results to the type's values, to nearest with
/// ties to the even code, as ml_dtypes and onnxruntime do.
enum Minifloats {
    static let types: Set<DataType> = [.float8e4m3fn, .float8e4m3fnuz, .float8e5m2, .float8e5m2fnuz, .float4e2m1]

    /// The non-negative finite values of a type, ascending, with their codes.
    struct Table: Sendable {
        let values: [Float]
        let codes: [Int]
        let hasInfinity: Bool
        let hasNegativeZero: Bool
        let hasNaN: Bool
    }

    static let tables: [DataType: Table] = {
        var tables: [DataType: Table] = [:]
        for type in types {
            let codeCount = type == .float4e2m1 ? 8 : 128
            let bytes: [UInt8] = type == .float4e2m1 ? (0 ..< 8).map { UInt8($0 % 8) } : (0 ..< 128).map(UInt8.init)
            // float4 codes are nibbles, two to a byte: decode code k from byte k's low nibble.
            let decoded: [Float] = type == .float4e2m1
                ? bytes.map { (try? ScalarDecoding.floats(TensorBytes([$0]), type: type, count: 1))?[0] ?? .nan }
                : (try? ScalarDecoding.floats(TensorBytes(bytes), type: type, count: codeCount)) ?? []
            let finite = decoded.enumerated().filter { $0.element.isFinite }
            tables[type] = Table(values: finite.map(\.element), codes: finite.map(\.offset),
                                 hasInfinity: type == .float8e5m2, hasNegativeZero: ![.float8e4m3fnuz, .float8e5m2fnuz].contains(type),
                                 hasNaN: type != .float4e2m1)
        }
        return tables
    }()

    /// `x` as the nearest value of `type`. Beyond the largest finite value: that value when
    /// saturating (or for float4, which has nothing else), else infinity where the type has it,
    /// else NaN.
    static func rounded(_ x: Float, to type: DataType, saturate: Bool) -> Float {
        guard let table = tables[type], let largest = table.values.last else { return x }
        if x.isNaN { return table.hasNaN ? .nan : 0 }
        let magnitude = abs(x)
        let sign: Float = x.sign == .minus ? -1 : 1
        let overflow: Float = saturate || !table.hasNaN ? largest : (table.hasInfinity ? .infinity : .nan)
        let gap = largest - table.values[table.values.count - 2]
        if magnitude.isInfinite || magnitude >= largest + gap / 2 {
            return sign * overflow
        }
        if magnitude > largest { return sign * largest }   // within half a step of the largest value
        // The first value >= magnitude, and the one below it.
        var low = 0, high = table.values.count - 1
        while low < high {
            let mid = (low + high) / 2
            if table.values[mid] < magnitude { low = mid + 1 } else { high = mid }
        }
        var pick = low
        if low > 0 {
            let below = table.values[low - 1], above = table.values[low]
            let down = magnitude - below, up = above - magnitude
            if down < up || (down == up && table.codes[low - 1] % 2 == 0) { pick = low - 1 }
        }
        let value = table.values[pick]
        return value == 0 && !table.hasNegativeZero ? 0 : sign * value
    }
}
