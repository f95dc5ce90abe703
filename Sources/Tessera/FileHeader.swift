/// The fixed 64-byte header at offset 0. See spec/FORMAT.md, "Header".
public struct FileHeader: Equatable, Sendable {
    public static let size = 64
    /// PNG-style: a high byte (not text), the name, CR LF (catches newline translation), ^Z.
    public static let magic: [UInt8] = [0x89, 0x54, 0x45, 0x53, 0x53, 0x0D, 0x0A, 0x1A]   // \x89 T E S S \r \n ^Z
    /// Written little-endian, so the file holds 0D 0C 0B 0A.
    public static let endiannessMarker: UInt32 = 0x0A0B_0C0D
    public static let majorVersion: UInt16 = 1
    /// The minor version of a file that uses nothing added after 1.0.
    public static let minorVersion: UInt16 = 0
    /// Bit 0 (format 1.1): some section is stored as a zstd frame.
    public static let compressedSectionsFeature: UInt64 = 1
    /// Feature bits this reader understands.
    public static let knownRequiredFeatures: UInt64 = compressedSectionsFeature

    public var majorVersion: UInt16 = FileHeader.majorVersion
    public var minorVersion: UInt16 = FileHeader.minorVersion
    public var alignment: Int
    public var requiredFeatures: UInt64 = 0
    public var indexOffset: Int
    public var indexLength: Int
    public var indexChecksum: UInt64

    public init(alignment: Int, indexOffset: Int, indexLength: Int, indexChecksum: UInt64) {
        self.alignment = alignment
        self.indexOffset = indexOffset
        self.indexLength = indexLength
        self.indexChecksum = indexChecksum
    }

    func encode() -> [UInt8] {
        var w = ByteWriter(reservingCapacity: Self.size)
        w.append(contentsOf: Self.magic)
        w.u16(majorVersion)
        w.u16(minorVersion)
        w.u32(Self.endiannessMarker)
        w.u32(Self.size)
        w.u32(alignment)
        w.u64(requiredFeatures)
        w.u64(indexOffset)
        w.u64(indexLength)
        w.u64(indexChecksum)
        let checksum = Checksum.xxh3(w.bytes)
        w.u64(checksum)
        return w.bytes
    }

    /// Parse and check the header of `file`, a whole file.
    static func decode(_ file: UnsafeRawBufferPointer) throws -> FileHeader {
        try decode(file, fileSize: file.count)
    }

    /// Parse and check the header at the start of `file`, part of a file of `fileSize` bytes.
    static func decode(_ file: UnsafeRawBufferPointer, fileSize: Int) throws -> FileHeader {
        let magicLength = Self.magic.count
        guard file.count >= magicLength, file.prefix(magicLength).elementsEqual(Self.magic) else {
            throw TessError(.notTessFile, "not a .tess file (the first bytes are not the Tessera magic)", offset: 0)
        }
        guard file.count >= Self.size else {
            throw TessError(.truncated, "file is \(file.count) bytes, shorter than the \(Self.size)-byte header; it was truncated", offset: 0)
        }
        var c = ByteCursor(UnsafeRawBufferPointer(rebasing: file.prefix(Self.size)), what: "header")
        _ = try c.readBytes(magicLength)
        let major = try c.readU16(), minor = try c.readU16()
        guard major == Self.majorVersion else {
            throw TessError(.unsupportedVersion, "format version \(major).\(minor) is not supported (this reader reads \(Self.majorVersion).x)", offset: 8)
        }
        let marker = try c.readU32()
        guard marker == Self.endiannessMarker else {
            throw TessError(.badEndianness, "endianness marker is 0x\(String(marker, radix: 16)), expected 0x\(String(Self.endiannessMarker, radix: 16)) (little-endian)", offset: 12)
        }
        let stored = UInt64(littleEndian: file.loadUnaligned(fromByteOffset: 56, as: UInt64.self))
        let computed = Checksum.xxh3(UnsafeRawBufferPointer(rebasing: file.prefix(56)))
        guard stored == computed else {
            throw TessError(.headerChecksum, "header checksum is \(Checksum.hex(stored)) but the header hashes to \(Checksum.hex(computed)); the header is corrupt", offset: 56)
        }
        let headerSize = try c.readU32()
        guard headerSize == Self.size else {
            throw TessError(.badHeader, "header size is \(headerSize), must be \(Self.size)", offset: 16)
        }
        let alignment = Int(try c.readU32())
        guard alignment.nonzeroBitCount == 1, (Limits.minAlignment ... Limits.maxAlignment).contains(alignment) else {
            throw TessError(.badHeader, "alignment \(alignment) is not a power of two in \(Limits.minAlignment)...\(Limits.maxAlignment)", offset: 20)
        }
        let features = try c.readU64()
        guard features & ~Self.knownRequiredFeatures == 0 else {
            throw TessError(.unsupportedFeature, "the file requires features 0x\(String(features, radix: 16)) that this reader does not implement", offset: 24)
        }
        let indexOffset = try c.readLength("index offset", else: .fileSize)
        let indexLength = try c.readLength("index length", else: .limitExceeded)
        var header = FileHeader(alignment: alignment, indexOffset: indexOffset, indexLength: indexLength,
                                indexChecksum: try c.readU64())
        header.minorVersion = minor
        header.requiredFeatures = features
        guard indexLength <= Limits.maxIndexBytes else {
            throw TessError(.limitExceeded, "index is \(indexLength) bytes, over the limit of \(Limits.maxIndexBytes)", offset: 40)
        }
        let (end, overflow) = indexOffset.addingReportingOverflow(indexLength)
        guard !overflow, end == fileSize else {
            let hint = !overflow && end > fileSize ? "; the file was truncated" : "; bytes were appended or the header is wrong"
            throw TessError(.fileSize, "header says the file ends at byte \(overflow ? "(overflow)" : String(end)) but it has \(fileSize) bytes\(hint)", offset: 32)
        }
        guard indexOffset >= alignUp(Self.size, alignment), indexOffset % alignment == 0 else {
            throw TessError(.bufferLayout, "index offset \(indexOffset) is not an aligned offset after the header", offset: 32)
        }
        return header
    }
}
