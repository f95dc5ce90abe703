/// A file's structure without its buffers: the header and index bytes, decoded and checked.
///
/// A distribution client receives the header and index before any buffer and must know where
/// each buffer goes before the file exists. `FileSkeleton` decodes them with the reader's own
/// checks (header, index checksum, index structure, the buffer offsets of FORMAT.md §4), so a
/// hostile registry is just another hostile file. The assembled file is then opened with
/// `TessFile.open`, which checks the rest.
public struct FileSkeleton: Sendable {
    public let header: FileHeader
    public let buffers: [BufferEntry]
    public let tensors: [TensorEntry]

    /// The size of the file this skeleton describes.
    public var fileSize: Int { header.indexOffset + header.indexLength }

    /// `bytes` is the header (64 bytes) followed by the whole index, as `TessFile.headerAndIndex` returns.
    public init(headerAndIndex bytes: UnsafeRawBufferPointer) throws {
        guard bytes.count >= FileHeader.size else {
            throw TessError(.truncated, "header and index are \(bytes.count) bytes, shorter than the \(FileHeader.size)-byte header", offset: 0)
        }
        let indexLength = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 40, as: UInt64.self))
        let indexOffset = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 32, as: UInt64.self))
        guard indexLength == UInt64(bytes.count - FileHeader.size), indexOffset <= UInt64(Int.max - bytes.count) else {
            throw TessError(.fileSize, "header declares an index of \(indexLength) bytes, \(bytes.count - FileHeader.size) follow it", offset: 40)
        }
        header = try FileHeader.decode(bytes, fileSize: Int(indexOffset) + Int(indexLength))
        let index = UnsafeRawBufferPointer(rebasing: bytes[FileHeader.size...])
        let computed = Checksum.xxh3(index)
        guard computed == header.indexChecksum else {
            throw TessError(.indexChecksum, "index checksum is \(Checksum.hex(header.indexChecksum)) but the index hashes to \(Checksum.hex(computed)); the index is corrupt", offset: header.indexOffset)
        }
        let decoded = try FileIndex.decode(index, base: header.indexOffset)
        var expected = alignUp(FileHeader.size, header.alignment)
        for (i, b) in decoded.buffers.enumerated() {
            let (end, overflow) = b.offset.addingReportingOverflow(b.storedLength)
            guard b.offset == expected, !overflow, end <= header.indexOffset else {
                throw TessError(.bufferLayout, "buffer \(i) (\(b.storedLength) bytes at \(b.offset)) is not at the aligned end of the previous region, \(expected), or runs past the index", offset: header.indexOffset + 16 + i * BufferEntry.encodedSize)
            }
            expected = alignUp(end, header.alignment)
        }
        guard header.indexOffset == expected else {
            throw TessError(.bufferLayout, "index starts at \(header.indexOffset), must start at \(expected) (aligned end of the last buffer)", offset: 32)
        }
        buffers = decoded.buffers
        tensors = decoded.tensors
    }
}

extension TessFile {
    /// The header and index bytes, the part of the file that `FileSkeleton` decodes.
    public var headerAndIndex: [UInt8] {
        Array(UnsafeRawBufferPointer(rebasing: mappedBytes[0 ..< FileHeader.size])) +
            Array(UnsafeRawBufferPointer(rebasing: mappedBytes[header.indexOffset ..< header.indexOffset + header.indexLength]))
    }
}
