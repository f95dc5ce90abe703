/// An open .tess file: mapped, with its whole structure validated before any tensor is
/// handed out.
///
/// `open` checks the header, the index checksum, every table entry, the buffer tiling and
/// every cross-reference; its cost grows with the number of tensors, not the file size.
/// Loading a tensor then checks its buffers' checksums and its content rules. Uncompressed
/// buffers are handed out zero-copy; zstd buffers are decoded one at a time, on request.
/// Instances are immutable and safe to share between threads.
public final class TessFile: @unchecked Sendable {
    public let path: String
    public let header: FileHeader
    public let buffers: [BufferEntry]
    public let tensors: [TensorEntry]
    public let sections: [Section]
    public let limits: ReadLimits
    private let map: MappedFile
    private let tensorIndex: [String: Int]

    public var fileSize: Int { map.bytes.count }
    var mappedBytes: UnsafeRawBufferPointer { map.bytes }
    public var metadataJSON: [UInt8]? { section(.metadata)?.payload }
    public var graph: [UInt8]? { section(.graph)?.payload }

    public static func open(_ path: String, limits: ReadLimits = .default) throws -> TessFile {
        do {
            return try TessFile(map: try MappedFile(path: path), limits: limits)
        } catch let error as TessError {
            throw error.inFile(path)
        }
    }

    private init(map: MappedFile, limits: ReadLimits) throws {
        self.map = map
        self.path = map.path
        self.limits = limits
        let file = map.bytes
        header = try FileHeader.decode(file)
        let indexBytes = UnsafeRawBufferPointer(rebasing: file[header.indexOffset ..< header.indexOffset + header.indexLength])
        let computed = Checksum.xxh3(indexBytes)
        guard computed == header.indexChecksum else {
            throw TessError(.indexChecksum, "index checksum is \(Checksum.hex(header.indexChecksum)) but the index hashes to \(Checksum.hex(computed)); the index is corrupt", offset: header.indexOffset)
        }
        let index = try FileIndex.decode(indexBytes, base: header.indexOffset)
        try Self.checkBufferTiling(index.buffers, header: header, file: file, limits: limits)
        tensorIndex = try Self.checkTensors(index, header: header)
        sections = try Self.loadSections(index.sections, header: header)
        buffers = index.buffers
        tensors = index.tensors
    }

    public func section(_ kind: Section.Kind) -> Section? { sections.first { $0.kind == kind.rawValue } }

    public func index(of name: String) -> Int? { tensorIndex[name] }

    /// Tensor `i` with its buffers (zero-copy where uncompressed), checksums and content checked.
    public func tensor(_ i: Int, verifyChecksums: Bool = true) throws -> Tensor {
        let entry = tensors[i]
        do {
            let tensor = try entry.mapBuffers { role, b in
                try bytes(ofBuffer: b, verifyChecksum: verifyChecksums, what: "\(role.rawValue) (buffer \(b))")
            }
            try tensor.validate()
            return tensor
        } catch let error as TessError {
            throw error.inTensor(entry.name).inFile(path)
        }
    }

    public func tensor(named name: String, verifyChecksums: Bool = true) throws -> Tensor {
        guard let i = tensorIndex[name] else {
            throw TessError(.invalidArgument, "no tensor named '\(name)'", path: path)
        }
        return try tensor(i, verifyChecksums: verifyChecksums)
    }

    /// The decoded bytes of buffer `b`: a view into the map when uncompressed, else decoded now.
    public func bytes(ofBuffer b: Int, verifyChecksum: Bool = true) throws -> TensorBytes {
        try bytes(ofBuffer: b, verifyChecksum: verifyChecksum, what: "buffer \(b)")
    }

    /// The stored (possibly compressed) bytes of buffer `b`, zero-copy.
    public func storedBytes(ofBuffer b: Int) -> TensorBytes {
        let entry = buffers[b]
        return TensorBytes(mapped: map, offset: entry.offset, count: entry.storedLength)
    }

    /// Every checksum and every content rule of every tensor. Returns the decoded bytes checked.
    @discardableResult
    public func verifyIntegrity() throws -> Int {
        var checked = 0
        for i in tensors.indices {
            let t = try tensor(i, verifyChecksums: true)
            checked += t.buffers.reduce(0) { $0 + $1.buffer.count }
        }
        return checked
    }

    /// Copy every tensor and section into a new file written with `options` (used by pack and
    /// unpack). Decoded bytes, and therefore checksums, are unchanged. The destination may not
    /// be this file.
    public func rewrite(to destination: String, options: WriteOptions) throws {
        let group = OutputGroup(inputs: [path])
        let writer = try TessWriter(path: destination, options: options, group: group)
        for i in tensors.indices { try writer.append(try tensor(i)) }
        try writer.finish(sections: sections)
        try group.commit()
    }

    // MARK: - Internals

    private func bytes(ofBuffer b: Int, verifyChecksum: Bool, what: String) throws -> TensorBytes {
        let entry = buffers[b]
        let stored = storedBytes(ofBuffer: b)
        let decoded: TensorBytes
        switch entry.codec {
        case .none:
            decoded = stored
        case .zstd, .zstdShuffled:
            do {
                let bytes = try stored.withUnsafeBytes { try Zstd.decompress($0, decodedLength: entry.decodedLength) }
                decoded = entry.codec == .zstd ? bytes : try ByteShuffle.unshuffle(bytes, width: entry.codecParameter)
            } catch var error as TessError {
                error.message = "\(what): \(error.message)"
                error.offset = entry.offset
                throw error
            }
        }
        // A freshly decoded buffer is always checked: decoding is the expensive part anyway.
        if verifyChecksum || entry.codec != .none {
            let actual = decoded.withUnsafeBytes { Checksum.xxh3($0) }
            guard actual == entry.checksum else {
                throw TessError(.checksumMismatch, "\(what) checksum is \(Checksum.hex(actual)), the buffer table says \(Checksum.hex(entry.checksum)); the data is corrupt", offset: entry.offset)
            }
        }
        return decoded
    }

    /// Buffers tile the space between header and index: each starts at the aligned end of the
    /// one before, padding is zero, and the index starts at the aligned end of the last.
    private static func checkBufferTiling(_ buffers: [BufferEntry], header: FileHeader, file: UnsafeRawBufferPointer,
                                          limits: ReadLimits) throws {
        let tableOffset = header.indexOffset + 16
        var expected = alignUp(FileHeader.size, header.alignment)
        var previousEnd = FileHeader.size
        for (i, b) in buffers.enumerated() {
            let entryOffset = tableOffset + i * BufferEntry.encodedSize
            guard b.offset == expected else {
                throw TessError(.bufferLayout, "buffer \(i) starts at \(b.offset), must start at \(expected) (aligned end of the previous region)", offset: entryOffset)
            }
            try checkZeroPadding(file, from: previousEnd, to: expected)
            let (end, overflow) = b.offset.addingReportingOverflow(b.storedLength)
            guard !overflow, end <= header.indexOffset else {
                throw TessError(.bufferLayout, "buffer \(i) (\(b.storedLength) bytes at \(b.offset)) runs past the start of the index at \(header.indexOffset)", offset: entryOffset + 8)
            }
            switch b.codec {
            case .none:
                guard b.storedLength == b.decodedLength else {
                    throw TessError(.codec, "uncompressed buffer \(i) stores \(b.storedLength) bytes but declares \(b.decodedLength)", offset: entryOffset + 16)
                }
            case .zstd, .zstdShuffled:
                guard b.decodedLength <= limits.maxDecodedBufferBytes else {
                    throw TessError(.limitExceeded, "buffer \(i) declares \(b.decodedLength) decoded bytes, over the reader's limit of \(limits.maxDecodedBufferBytes)", offset: entryOffset + 16)
                }
                guard b.decodedLength / Limits.maxZstdExpansion <= b.storedLength else {
                    throw TessError(.limitExceeded, "buffer \(i) declares \(b.decodedLength) decoded bytes from \(b.storedLength) stored; zstd cannot expand more than \(Limits.maxZstdExpansion)x", offset: entryOffset + 16)
                }
            }
            previousEnd = end
            expected = alignUp(end, header.alignment)
        }
        guard header.indexOffset == expected else {
            throw TessError(.bufferLayout, "index starts at \(header.indexOffset), must start at \(expected) (aligned end of the last buffer)", offset: 32)
        }
        try checkZeroPadding(file, from: previousEnd, to: expected)
    }

    private static func checkZeroPadding(_ file: UnsafeRawBufferPointer, from start: Int, to end: Int) throws {
        for i in start ..< end where file[i] != 0 {
            throw TessError(.bufferLayout, "padding byte is 0x\(String(file[i], radix: 16)), padding must be zero", offset: i)
        }
    }

    /// Unique names, valid descriptions, and every buffer used by exactly one tensor slot with
    /// the decoded length that slot needs. Returns the name lookup table.
    private static func checkTensors(_ index: FileIndex, header: FileHeader) throws -> [String: Int] {
        var byName: [String: Int] = [:]
        byName.reserveCapacity(index.tensors.count)
        var owner = [Int](repeating: -1, count: index.buffers.count)
        for (t, entry) in index.tensors.enumerated() {
            guard byName.updateValue(t, forKey: entry.name) == nil else {
                throw TessError(.badName, "tensor \(t) repeats the name of an earlier tensor", tensor: entry.name, offset: header.indexOffset)
            }
            let expected = try entry.expectedByteCounts()
            for ((role, b), count) in zip(entry.buffers, expected) {
                guard b >= 0, b < index.buffers.count else {
                    throw TessError(.bufferReference, "\(role.rawValue) refer to buffer \(b), the file has \(index.buffers.count)", tensor: entry.name)
                }
                guard owner[b] == -1 else {
                    throw TessError(.bufferReference, "\(role.rawValue) refer to buffer \(b), already used by tensor \(owner[b])", tensor: entry.name)
                }
                owner[b] = t
                guard index.buffers[b].decodedLength == count else {
                    throw TessError(.bufferSize, "\(role.rawValue) (buffer \(b)) decode to \(index.buffers[b].decodedLength) bytes, the tensor needs \(count)", tensor: entry.name, offset: index.buffers[b].offset)
                }
            }
        }
        if let orphan = owner.firstIndex(of: -1) {
            throw TessError(.bufferReference, "buffer \(orphan) is not used by any tensor", offset: index.buffers[orphan].offset)
        }
        return byName
    }

    /// Each kind at most once, unknown required kinds refused, compressed payloads decoded
    /// (only with the header's feature bit, which is set exactly when one is), each checked.
    private static func loadSections(_ stored: [StoredSection], header: FileHeader) throws -> [Section] {
        var seen = Set<UInt32>()
        var sections: [Section] = []
        let compressed = stored.contains { $0.isCompressed }
        guard compressed == (header.requiredFeatures & FileHeader.compressedSectionsFeature != 0) else {
            throw TessError(.badSection, compressed ? "a section is compressed but the header lacks required feature bit 0"
                                                    : "the header sets required feature bit 0 (compressed sections) but no section is compressed",
                            offset: header.indexOffset)
        }
        for s in stored {
            guard seen.insert(s.kind).inserted else {
                throw TessError(.badSection, "section kind \(s.kind) appears twice", offset: header.indexOffset)
            }
            if Section.Kind(rawValue: s.kind) == nil, s.isRequired {
                throw TessError(.unsupportedFeature, "the file has a required section of kind \(s.kind) that this reader does not know", offset: header.indexOffset)
            }
            sections.append(try FileSections.load(s, offset: header.indexOffset))
        }
        return sections
    }
}
