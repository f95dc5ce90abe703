@testable import Tessera

/// An independent assembler of .tess bytes, written from the spec's layout rules, used to
/// handcraft invalid files. Checksums are computed unless a test overrides them, so each
/// invalid file breaks exactly the rule it is about.
struct RawFile {
    struct Buffer {
        var stored: [UInt8]
        var codec: Codec = .none
        var decodedLength: Int? = nil     // default: stored.count
        var checksum: UInt64? = nil       // default: XXH3 of the stored bytes (right for codec none)
        var offset: Int? = nil            // default: the aligned end of the previous region
    }

    var alignment = 64
    var buffers: [Buffer] = []
    var tensors: [TensorEntry] = []
    var sections: [Section] = []
    /// When set, the index holds these instead of `sections` stored plain.
    var storedSections: [StoredSection]? = nil
    var requiredFeatures: UInt64 = 0
    /// Edits applied to the index bytes before they are checksummed.
    var editIndex: ((inout [UInt8]) -> Void)? = nil
    /// Edits applied to the header after its checksum is computed (set `fixHeaderChecksum`
    /// to recompute it afterwards).
    var editHeader: ((inout [UInt8]) -> Void)? = nil
    var fixHeaderChecksum = true
    var nonZeroPaddingAt: Int? = nil

    /// A file holding `tensors` (buffers taken in canonical order).
    init(_ tensors: [Tensor] = [], sections: [Section] = []) {
        for t in tensors {
            self.tensors.append(t.mapBuffers { _, bytes in
                buffers.append(Buffer(stored: bytes.array))
                return buffers.count - 1
            })
        }
        self.sections = sections
    }

    func bytes() -> [UInt8] {
        var file = [UInt8](repeating: 0, count: 64)
        var table: [BufferEntry] = []
        for b in buffers {
            let aligned = alignUp(file.count, alignment)
            file += [UInt8](repeating: 0, count: aligned - file.count)
            let offset = b.offset ?? file.count
            if offset > file.count { file += [UInt8](repeating: 0, count: offset - file.count) }
            table.append(BufferEntry(offset: offset, storedLength: b.stored.count,
                                     decodedLength: b.decodedLength ?? b.stored.count,
                                     checksum: b.checksum ?? Checksum.xxh3(b.stored), codec: b.codec))
            file += b.stored
        }
        file += [UInt8](repeating: 0, count: alignUp(file.count, alignment) - file.count)
        if let at = nonZeroPaddingAt { file[at] = 0xAA }
        let stored = storedSections ?? sections.map {
            StoredSection(kind: $0.kind, flags: $0.required ? StoredSection.requiredFlag : 0, bytes: $0.payload)
        }
        var index = FileIndex(buffers: table, tensors: tensors, sections: stored).encode()
        editIndex?(&index)
        let indexOffset = file.count
        file += index
        var fields = FileHeader(alignment: alignment, indexOffset: indexOffset, indexLength: index.count,
                                indexChecksum: Checksum.xxh3(index))
        fields.requiredFeatures = requiredFeatures
        var header = fields.encode()
        if let editHeader {
            editHeader(&header)
            if fixHeaderChecksum {
                let sum = Checksum.xxh3(Array(header[0 ..< 56]))
                withUnsafeBytes(of: sum.littleEndian) { header.replaceSubrange(56 ..< 64, with: $0) }
            }
        }
        file.replaceSubrange(0 ..< 64, with: header)
        return file
    }
}

extension Array where Element == UInt8 {
    mutating func putU32(_ v: UInt32, at offset: Int) {
        Swift.withUnsafeBytes(of: v.littleEndian) { replaceSubrange(offset ..< offset + 4, with: $0) }
    }

    mutating func putU64(_ v: UInt64, at offset: Int) {
        Swift.withUnsafeBytes(of: v.littleEndian) { replaceSubrange(offset ..< offset + 8, with: $0) }
    }
}
