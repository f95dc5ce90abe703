import Tessera

/// What `--quantize` asks for: `int8` (per output channel), `int8:group=64`, `int4:group=32`,
/// optionally asymmetric (unsigned codes with a zero point).
public struct QuantizationSpec: Equatable, Sendable, CustomStringConvertible {
    public enum Bits: Int, Sendable { case int8 = 8, int4 = 4 }

    public var bits: Bits
    /// Block size along the reduction axis; nil means one scale per output channel.
    public var groupSize: Int?
    public var asymmetric: Bool

    public init(bits: Bits, groupSize: Int? = nil, asymmetric: Bool = false) {
        self.bits = bits
        self.groupSize = groupSize
        self.asymmetric = asymmetric
    }

    /// Parse `int8`, `int4`, `int8:group=N`, `int4:group=N`.
    public static func parse(_ text: String, asymmetric: Bool = false) throws -> QuantizationSpec {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        let bits: Bits
        switch parts[0] {
        case "int8": bits = .int8
        case "int4": bits = .int4
        default: throw ConvertError("--quantize must be int8 or int4, optionally with :group=N, got '\(text)'")
        }
        var spec = QuantizationSpec(bits: bits, asymmetric: asymmetric)
        for option in parts.dropFirst() {
            let kv = option.split(separator: "=", maxSplits: 1)
            guard kv.count == 2, kv[0] == "group" else {
                throw ConvertError("unknown quantization option '\(option)' in '\(text)' (expected group=N)")
            }
            guard let n = Int(kv[1]), (1 ... Limits.maxElementCount).contains(n) else {
                throw ConvertError("group size '\(kv[1])' in '\(text)' must be a whole number in 1...\(Limits.maxElementCount)")
            }
            spec.groupSize = n
        }
        return spec
    }

    /// The code type: signed for symmetric, unsigned (with a zero point) for asymmetric.
    public var codeType: DataType {
        switch (bits, asymmetric) {
        case (.int8, false): return .int8
        case (.int8, true): return .uint8
        case (.int4, false): return .int4
        case (.int4, true): return .uint4
        }
    }

    public var description: String {
        "\(bits == .int8 ? "int8" : "int4")" + (groupSize.map { ":group=\($0)" } ?? "") + (asymmetric ? " asymmetric" : "")
    }
}

/// A conversion option a user got wrong, or a tensor a recipe cannot apply to.
public struct ConvertError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ message: String) { description = message }
}
