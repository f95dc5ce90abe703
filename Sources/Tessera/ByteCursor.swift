/// The one bounds-checked little-endian reader. Reads throw `truncated`, never trap.
///
/// `base` is the absolute file offset of byte 0 so that errors point into the file.
struct ByteCursor {
    private let bytes: UnsafeRawBufferPointer
    private(set) var position: Int = 0
    let base: Int
    let what: String

    init(_ bytes: UnsafeRawBufferPointer, base: Int = 0, what: String) {
        self.bytes = bytes
        self.base = base
        self.what = what
    }

    var remaining: Int { bytes.count - position }
    var absolutePosition: Int { base + position }
    var isAtEnd: Bool { position == bytes.count }

    private mutating func take(_ count: Int) throws -> UnsafeRawBufferPointer {
        guard count >= 0, count <= remaining else {
            throw TessError(.truncated, "\(what) ends after \(remaining) more bytes but \(count) are needed",
                            offset: absolutePosition)
        }
        let slice = UnsafeRawBufferPointer(rebasing: bytes[position ..< position + count])
        position += count
        return slice
    }

    mutating func readU16() throws -> UInt16 { UInt16(littleEndian: try take(2).loadUnaligned(as: UInt16.self)) }
    mutating func readU32() throws -> UInt32 { UInt32(littleEndian: try take(4).loadUnaligned(as: UInt32.self)) }
    mutating func readU64() throws -> UInt64 { UInt64(littleEndian: try take(8).loadUnaligned(as: UInt64.self)) }
    mutating func readI32() throws -> Int32 { Int32(bitPattern: try readU32()) }

    /// A u64 that must fit in `Int` (it always does for lengths and offsets within limits);
    /// one that does not breaks the field's own rule, `code`.
    mutating func readLength(_ field: String, else code: TessError.Code) throws -> Int {
        let at = absolutePosition
        let value = try readU64()
        guard value <= UInt64(Int.max) else {
            throw TessError(code, "\(field) \(value) does not fit in a signed 64-bit integer", offset: at)
        }
        return Int(value)
    }

    mutating func readBytes(_ count: Int) throws -> UnsafeRawBufferPointer { try take(count) }
}

/// Little-endian appender used by every writer of fixed structures.
struct ByteWriter {
    private(set) var bytes: [UInt8] = []

    init(reservingCapacity capacity: Int = 0) { bytes.reserveCapacity(capacity) }

    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func i32(_ v: Int32) { u32(UInt32(bitPattern: v)) }
    mutating func u64(_ v: Int) { u64(UInt64(v)) }
    mutating func u32(_ v: Int) { u32(UInt32(v)) }
    mutating func append<C: Collection>(contentsOf c: C) where C.Element == UInt8 { bytes.append(contentsOf: c) }
}

/// Round `value` up to a multiple of `alignment` (a power of two).
@inline(__always)
func alignUp(_ value: Int, _ alignment: Int) -> Int { (value + alignment - 1) & ~(alignment - 1) }
