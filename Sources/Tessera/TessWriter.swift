/// How a writer lays out and encodes buffers.
public struct WriteOptions: Sendable, Equatable {
    /// Buffer alignment: a power of two in `Limits.minAlignment...Limits.maxAlignment`.
    public var alignment: Int
    /// Codec applied to every buffer.
    public var codec: Codec
    /// zstd level when `codec == .zstd`.
    public var zstdLevel: Int
    /// Replace an existing file at the destination (otherwise that is an error).
    public var replaceExisting: Bool
    /// With zstd, split floating-point values and scales into byte planes first
    /// (codec zstd+shuffle); other buffers use plain zstd.
    public var byteShuffle: Bool

    public init(alignment: Int = Limits.defaultAlignment, codec: Codec = .none, zstdLevel: Int = 3,
                replaceExisting: Bool = false, byteShuffle: Bool = true) {
        self.alignment = alignment
        self.codec = codec
        self.zstdLevel = zstdLevel
        self.replaceExisting = replaceExisting
        self.byteShuffle = byteShuffle
    }
}

/// Writes a .tess file tensor by tensor.
///
/// Buffers go to a temporary file in the destination's folder as tensors are appended, so a
/// model is never held twice; `finish` appends the index, patches the header, flushes and
/// links it into place (see `AtomicFile`). Until then nothing exists under the final name, and a
/// writer that is dropped or fails leaves nothing behind. Written as part of an `OutputGroup`,
/// the file is put in place by the group's `commit`, together with the command's other outputs.
/// The same tensors, sections and options give the same bytes.
public final class TessWriter {
    public let path: String
    public let options: WriteOptions
    private let file: AtomicFile
    private let group: OutputGroup?
    private var index = FileIndex()
    private var names = Set<String>()
    /// Reused for byte-shuffled buffers.
    private var planes: [UInt8] = []

    public init(path: String, options: WriteOptions = WriteOptions(), group: OutputGroup? = nil) throws {
        guard options.alignment.nonzeroBitCount == 1,
              (Limits.minAlignment ... Limits.maxAlignment).contains(options.alignment) else {
            throw TessError(.invalidArgument, "alignment \(options.alignment) is not a power of two in \(Limits.minAlignment)...\(Limits.maxAlignment)")
        }
        guard options.codec != .zstdShuffled else {
            throw TessError(.invalidArgument, "choose codec zstd; byteShuffle decides which buffers are shuffled")
        }
        guard options.codec == .none || Limits.zstdLevels.contains(options.zstdLevel) else {
            throw TessError(.invalidArgument, "zstd level \(options.zstdLevel) is outside \(Limits.zstdLevels.lowerBound)...\(Limits.zstdLevels.upperBound)")
        }
        self.path = path
        self.options = options
        self.group = group
        file = try group?.file(path, replaceExisting: options.replaceExisting)
            ?? AtomicFile(path: path, replaceExisting: options.replaceExisting)
        try file.write([UInt8](repeating: 0, count: FileHeader.size))   // patched by finish()
    }

    /// Validate `tensor` and write its buffers.
    public func append(_ tensor: Tensor) throws {
        try requireOpen()
        do {
            try tensor.validate()
            guard names.insert(tensor.name).inserted else {
                throw TessError(.badName, "a tensor with this name was already written", tensor: tensor.name)
            }
            let entry = try tensor.mapBuffers { role, bytes in try writeBuffer(bytes, shuffleWidth: shuffleWidth(tensor, role)) }
            index.tensors.append(entry)
        } catch {
            file.discard()
            throw error
        }
    }

    /// Write the index (with `sections`, sorted by kind) and the header, then put the file in
    /// place (unless its group does that). Returns the file's size.
    @discardableResult
    public func finish(sections: [Section] = []) throws -> Int {
        try requireOpen()
        do {
            index.sections = try Self.checkedSections(sections).map {
                try FileSections.store($0, zstdLevel: options.codec == .none ? nil : options.zstdLevel)
            }
            try file.pad(to: alignUp(file.position, options.alignment))
            let indexBytes = index.encode()
            guard indexBytes.count <= Limits.maxIndexBytes else {
                throw TessError(.limitExceeded, "index would be \(indexBytes.count) bytes, over the limit of \(Limits.maxIndexBytes)")
            }
            var header = FileHeader(alignment: options.alignment, indexOffset: file.position, indexLength: indexBytes.count,
                                    indexChecksum: Checksum.xxh3(indexBytes))
            if index.sections.contains(where: \.isCompressed) {   // a 1.1 feature; otherwise the file is a 1.0 file
                header.minorVersion = 1
                header.requiredFeatures = FileHeader.compressedSectionsFeature
            }
            try file.write(indexBytes)
            try file.write(header.encode(), at: 0)
            if group == nil { try file.commit() }
            return file.position
        } catch {
            file.discard()
            throw error
        }
    }

    /// Give up: delete the temporary file. Safe to call more than once.
    public func abort() { file.discard() }

    /// Write a whole model in one call.
    public static func write(_ tensors: [Tensor], sections: [Section] = [], to path: String,
                             options: WriteOptions = WriteOptions()) throws {
        let writer = try TessWriter(path: path, options: options)
        for t in tensors { try writer.append(t) }
        try writer.finish(sections: sections)
    }

    // MARK: - Internals

    /// Byte-plane width for a buffer, or 0: floating-point values (not quantization codes)
    /// and scales, when shuffling is on and the buffer is compressed.
    private func shuffleWidth(_ tensor: Tensor, _ role: BufferRole) -> Int {
        guard options.codec == .zstd, options.byteShuffle else { return 0 }
        let type: DataType
        switch role {
        case .values where tensor.quantization == nil: type = tensor.dataType
        case .scales: type = tensor.quantization!.scaleType
        default: return 0
        }
        guard [.float, .float16, .bfloat16, .double].contains(type) else { return 0 }
        return type.bitWidth / 8
    }

    private func writeBuffer(_ bytes: TensorBytes, shuffleWidth: Int) throws -> Int {
        guard index.buffers.count < Limits.maxBufferCount else {
            throw TessError(.limitExceeded, "more than \(Limits.maxBufferCount) buffers")
        }
        try file.pad(to: alignUp(file.position, options.alignment))
        let offset = file.position
        let (checksum, stored): (UInt64, Int) = try bytes.withUnsafeBytes { raw in
            let checksum = Checksum.xxh3(raw)
            switch options.codec {
            case .none:
                try file.write(raw)
                return (checksum, raw.count)
            case .zstd where shuffleWidth > 0 && raw.count > 0 && raw.count % shuffleWidth == 0:
                ByteShuffle.shuffle(raw, width: shuffleWidth, into: &planes)
                return (checksum, try planes.withUnsafeBytes { try Zstd.compress($0, level: options.zstdLevel) { try file.write($0) } })
            case .zstd, .zstdShuffled:
                return (checksum, try Zstd.compress(raw, level: options.zstdLevel) { try file.write($0) })
            }
        }
        let shuffled = options.codec == .zstd && shuffleWidth > 0 && bytes.count > 0 && bytes.count % shuffleWidth == 0
        index.buffers.append(BufferEntry(offset: offset, storedLength: stored, decodedLength: bytes.count, checksum: checksum,
                                         codec: shuffled ? .zstdShuffled : options.codec, codecParameter: shuffled ? shuffleWidth : 0))
        return index.buffers.count - 1
    }

    private static func checkedSections(_ sections: [Section]) throws -> [Section] {
        guard sections.count <= Limits.maxSectionCount else {
            throw TessError(.limitExceeded, "\(sections.count) sections exceed the limit of \(Limits.maxSectionCount)")
        }
        let sorted = sections.sorted { $0.kind < $1.kind }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.kind == b.kind {
            throw TessError(.badSection, "section kind \(a.kind) appears twice")
        }
        for s in sorted { try FileSections.validate(s) }
        return sorted
    }

    private func requireOpen() throws {
        guard file.isOpen else { throw TessError(.invalidArgument, "the writer was already finished or aborted", path: path) }
    }
}
