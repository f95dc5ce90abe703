import CXXHash

/// Buffer and index checksums: XXH3-64 with seed 0 (libxxhash, xxHash 0.8 stable output).
public enum Checksum {
    public static func xxh3(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        XXH3_64bits(bytes.baseAddress, bytes.count)
    }

    public static func xxh3(_ bytes: [UInt8]) -> UInt64 {
        bytes.withUnsafeBytes { xxh3($0) }
    }

    /// Hex form used in messages and JSON output.
    public static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}

/// Incremental XXH3-64, for hashing data that arrives in pieces (e.g. a whole file).
public final class StreamingChecksum {
    private let state: OpaquePointer

    public init() {
        state = XXH3_createState()!
        XXH3_64bits_reset(state)
    }

    deinit { XXH3_freeState(state) }

    public func update(_ bytes: UnsafeRawBufferPointer) {
        XXH3_64bits_update(state, bytes.baseAddress, bytes.count)
    }

    public var value: UInt64 { XXH3_64bits_digest(state) }
}
