import Foundation
import Tessera

/// numpy's `.npy` (one array) and `.npz` (a zip of `.npy` files, stored uncompressed), the
/// formats `tessera run` reads inputs from and writes outputs to.
public enum NumpyFiles {
    /// Largest `.npy` header accepted (numpy writes 64-byte-aligned headers of a few hundred bytes).
    static let maxHeaderBytes = 65_536

    static let descriptors: [(String, DataType)] = [
        ("f4", .float), ("f8", .double), ("f2", .float16), ("i8", .int64), ("i4", .int32), ("i2", .int16),
        ("i1", .int8), ("u1", .uint8), ("u2", .uint16), ("u4", .uint32), ("u8", .uint64), ("b1", .bool),
    ]

    /// Reads a C-order little-endian `.npy` array.
    public static func read(_ path: String) throws -> Value {
        let file = try map(path)
        return try array(in: file, 0 ..< file.bytes.count, origin: path)
    }

    /// Reads every array of an `.npz` archive, by member name without `.npy`, in archive order.
    /// numpy's `savez` stores its members; `savez_compressed` deflates them, which is refused.
    public static func readArchive(_ path: String) throws -> [(name: String, value: Value)] {
        let file = try map(path)
        let bytes = file.bytes
        func fail(_ why: String) -> RuntimeError { RuntimeError(.badInput, "\(path): not a readable .npz archive: \(why)") }
        func u16(_ at: Int) throws -> Int {
            guard at >= 0, at + 2 <= bytes.count else { throw fail("a record at byte \(at) runs past the end") }
            return Int(bytes[at]) | Int(bytes[at + 1]) << 8
        }
        func u32(_ at: Int) throws -> Int { try u16(at) | (try u16(at + 2)) << 16 }
        func u64(_ at: Int) throws -> Int {
            let high = try u32(at + 4)
            guard high < 1 << 30 else { throw fail("a 64-bit size at byte \(at) is out of range") }
            return try u32(at) | high << 32
        }
        // The end-of-central-directory record: in the last 64 KiB + 22 bytes (its comment).
        guard bytes.count >= 22 else { throw fail("too short for a zip archive") }
        guard let end = stride(from: bytes.count - 22, through: max(0, bytes.count - 22 - 65_535), by: -1)
            .first(where: { (try? u32($0)) == 0x0605_4B50 }) else { throw fail("no zip end-of-directory record") }
        var count = try u16(end + 10), offset = try u32(end + 16)
        if end >= 20, try u32(end - 20) == 0x0706_4B50 {   // zip64 locator → zip64 end record
            let record = try u64(end - 12)
            guard try u32(record) == 0x0606_4B50 else { throw fail("bad zip64 end-of-directory record") }
            count = try u64(record + 32); offset = try u64(record + 48)
        }
        var arrays: [(name: String, value: Value)] = []
        var at = offset
        for _ in 0 ..< count {
            guard try u32(at) == 0x0201_4B50 else { throw fail("bad central directory entry at byte \(at)") }
            let method = try u16(at + 10)
            var size = try u32(at + 24), stored = try u32(at + 20), local = try u32(at + 42)
            let nameLength = try u16(at + 28), extraLength = try u16(at + 30), commentLength = try u16(at + 32)
            guard at + 46 + nameLength <= bytes.count else { throw fail("a member name runs past the end") }
            let member = String(decoding: bytes[(at + 46) ..< (at + 46 + nameLength)], as: UTF8.self)
            // zip64 extra field: the 64-bit values of the fields set to 0xFFFFFFFF, in order.
            var extra = at + 46 + nameLength
            let extraEnd = extra + extraLength
            while extra + 4 <= extraEnd {
                let id = try u16(extra), length = try u16(extra + 2)
                if id == 1 {
                    var field = extra + 4
                    if size == 0xFFFF_FFFF { size = try u64(field); field += 8 }
                    if stored == 0xFFFF_FFFF { stored = try u64(field); field += 8 }
                    if local == 0xFFFF_FFFF { local = try u64(field) }
                }
                extra += 4 + length
            }
            guard method == 0 else {
                throw fail("member '\(member)' is compressed (np.savez_compressed); write the archive with np.savez")
            }
            guard try u32(local) == 0x0403_4B50 else { throw fail("bad local header for '\(member)'") }
            let start = local + 30 + (try u16(local + 26)) + (try u16(local + 28))
            guard size == stored, start <= bytes.count, size <= bytes.count - start else { throw fail("member '\(member)' runs past the end") }
            let name = member.hasSuffix(".npy") ? String(member.dropLast(4)) : member
            guard !arrays.contains(where: { $0.name == name }) else { throw fail("member '\(member)' appears twice") }
            arrays.append((name, try array(in: file, start ..< start + size, origin: "\(path) member '\(member)'")))
            at += 46 + nameLength + extraLength + commentLength
        }
        return arrays
    }

    private static func map(_ path: String) throws -> MappedFile {
        do {
            return try MappedFile(path: path)   // regular files only, opened without blocking
        } catch let error as TessError {
            throw RuntimeError(.badInput, "\(path): \(error.message)")
        }
    }

    /// The `.npy` array in `range` of `file` (a whole file, or a member of an archive).
    private static func array(in file: MappedFile, _ range: Range<Int>, origin path: String) throws -> Value {
        let bytes = UnsafeRawBufferPointer(rebasing: file.bytes[range])
        func fail(_ why: String) -> RuntimeError { RuntimeError(.badInput, "\(path): not a readable .npy array: \(why)") }
        guard bytes.count >= 10, Array(bytes[0 ..< 6]) == [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59] else { throw fail("bad magic") }
        let version = bytes[6]
        let lengthBytes = version == 1 ? 2 : 4
        guard [1, 2, 3].contains(version), bytes.count >= 8 + lengthBytes else { throw fail("unknown version \(version)") }
        let headerLength = (0 ..< lengthBytes).reduce(0) { $0 | Int(bytes[8 + $1]) << (8 * $1) }
        let dataStart = 8 + lengthBytes + headerLength
        guard headerLength <= maxHeaderBytes, dataStart <= bytes.count else { throw fail("header of \(headerLength) bytes runs past the file") }
        let header = String(decoding: bytes[(8 + lengthBytes) ..< dataStart], as: UTF8.self)
        guard let descr = field("descr", in: header), let shapeText = field("shape", in: header) else { throw fail("header lacks descr or shape") }
        guard field("fortran_order", in: header) == "False" else { throw fail("Fortran-order arrays are not supported; save with np.ascontiguousarray") }
        let code = descr.trimmingCharacters(in: CharacterSet(charactersIn: "'\""))
        guard let type = descriptors.first(where: { code == "<" + $0.0 || code == "|" + $0.0 })?.1 else {
            throw fail("dtype \(code) is not supported (little-endian float16/32/64, ints, uints and bool are)")
        }
        let dims = shapeText.trimmingCharacters(in: CharacterSet(charactersIn: "()")).split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        let shape = try dims.map { d -> Int in
            guard let n = Int(d), n >= 0 else { throw fail("shape \(shapeText)") }
            return n
        }
        let geometry: TensorGeometry
        do { geometry = try TensorGeometry(shape: shape) } catch { throw fail("shape \(shapeText): \(error)") }
        let byteCount = type.byteCount(geometry.elementCount)
        guard bytes.count - dataStart == byteCount else {
            throw fail("shape \(shape) of \(type) needs \(byteCount) data bytes, the file holds \(bytes.count - dataStart)")
        }
        let tensor = Tensor(name: path, dataType: type, shape: shape,
                            storage: .dense(values: TensorBytes(mapped: file, offset: range.lowerBound + dataStart, count: byteCount)))
        return try Value(tensor)
    }

    /// The text of `'key': value` in a `.npy` header dict (tuples kept whole).
    private static func field(_ key: String, in header: String) -> String? {
        guard let range = header.range(of: "'\(key)':") else { return nil }
        var rest = header[range.upperBound...].drop { $0 == " " }
        if rest.first == "(" {
            guard let close = rest.firstIndex(of: ")") else { return nil }
            return String(rest[...close])
        }
        if let end = rest.firstIndex(where: { $0 == "," || $0 == "}" }) { rest = rest[..<end] }
        return rest.trimmingCharacters(in: .whitespaces)
    }

    /// The `.npy` encoding of `value`, in its declared element type.
    public static func encode(_ value: Value) -> [UInt8] {
        let (code, type) = descriptors.first { $0.1 == value.type } ?? ("f4", .float)
        let shape = value.shape.count == 1 ? "(\(value.shape[0]),)" : "(\(value.shape.map(String.init).joined(separator: ", ")))"
        var header = "{'descr': '\(code.hasSuffix("1") ? "|" : "<")\(code)', 'fortran_order': False, 'shape': \(shape), }"
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var out: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0]
        out += [UInt8(header.utf8.count & 0xFF), UInt8(header.utf8.count >> 8)]
        out += Array(header.utf8)
        return out + elementBytes(value, as: type)
    }

    /// The elements of `value` as little-endian bytes of `type` (its own type by default).
    static func elementBytes(_ value: Value, as type: DataType? = nil) -> [UInt8] {
        var out: [UInt8] = []
        func append<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        switch type ?? value.type {
        case .float: for v in value.asFloats { append(v.bitPattern) }
        case .double: for v in value.asDoubles { append(v.bitPattern) }
        case .float16: for v in value.asFloats { append(Float16(v).bitPattern) }
        case .bool: for v in value.asFloats { out.append(v != 0 ? 1 : 0) }
        case .int8: for v in value.asInts { append(Int8(truncatingIfNeeded: v)) }
        case .uint8: for v in value.asInts { append(UInt8(truncatingIfNeeded: v)) }
        case .int16: for v in value.asInts { append(Int16(truncatingIfNeeded: v)) }
        case .uint16: for v in value.asInts { append(UInt16(truncatingIfNeeded: v)) }
        case .int32: for v in value.asInts { append(Int32(truncatingIfNeeded: v)) }
        case .uint32: for v in value.asInts { append(UInt32(truncatingIfNeeded: v)) }
        case .uint64: for v in value.asInts { append(UInt64(bitPattern: v)) }
        case .bfloat16: for v in value.asFloats { append(UInt16(truncatingIfNeeded: v.bitPattern >> 16)) }
        default: for v in value.asInts { append(v) }
        }
        return out
    }

    /// Writes `arrays` as an uncompressed `.npz` (`NAME.npy` members) into `file`, which its
    /// owner commits.
    public static func writeArchive(_ arrays: [(name: String, value: Value)], to file: AtomicFile) throws {
        let path = file.path
        var archive: [UInt8] = [], directory: [UInt8] = []
        func u16(_ v: Int, _ into: inout [UInt8]) { into += [UInt8(v & 0xFF), UInt8(v >> 8 & 0xFF)] }
        func u32(_ v: UInt32, _ into: inout [UInt8]) { for k in 0 ..< 4 { into.append(UInt8(v >> (8 * UInt32(k)) & 0xFF)) } }
        for (name, value) in arrays {
            let member = Array((name + ".npy").utf8), payload = encode(value)
            guard payload.count < Int(UInt32.max), archive.count < Int(UInt32.max) else {
                throw RuntimeError(.badInput, "\(path): outputs exceed 4 GiB, more than a plain zip holds")
            }
            let crc = CRC32.checksum(payload), offset = UInt32(archive.count)
            // Local header: version 2.0, no flags, stored, no time.
            u32(0x0403_4B50, &archive); u16(20, &archive); u16(0, &archive); u16(0, &archive); u16(0, &archive); u16(0x21, &archive)
            u32(crc, &archive); u32(UInt32(payload.count), &archive); u32(UInt32(payload.count), &archive)
            u16(member.count, &archive); u16(0, &archive)
            archive += member + payload
            u32(0x0201_4B50, &directory); u16(20, &directory); u16(20, &directory); u16(0, &directory); u16(0, &directory)
            u16(0, &directory); u16(0x21, &directory)
            u32(crc, &directory); u32(UInt32(payload.count), &directory); u32(UInt32(payload.count), &directory)
            u16(member.count, &directory); u16(0, &directory); u16(0, &directory); u16(0, &directory); u16(0, &directory)
            u32(0, &directory); u32(offset, &directory)
            directory += member
        }
        var end: [UInt8] = []
        u32(0x0605_4B50, &end); u16(0, &end); u16(0, &end); u16(arrays.count, &end); u16(arrays.count, &end)
        u32(UInt32(directory.count), &end); u32(UInt32(archive.count), &end); u16(0, &end)
        try file.write(archive + directory + end)
    }
}

/// The zip CRC-32 (IEEE 802.3, reflected).
enum CRC32 {
    static let table: [UInt32] = (0 ..< 256).map { n in
        (0 ..< 8).reduce(UInt32(n)) { c, _ in c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
    }

    static func checksum(_ bytes: [UInt8]) -> UInt32 {
        ~bytes.reduce(~UInt32(0)) { table[Int(($0 ^ UInt32($1)) & 0xFF)] ^ ($0 >> 8) }
    }
}
