/// How a buffer's stored bytes encode its decoded bytes. Numbers are never reused.
public enum Codec: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case none = 0
    case zstd = 1
    /// zstd over the bytes split into `codecParameter` byte planes (2, 4 or 8).
    case zstdShuffled = 2

    public var description: String {
        switch self {
        case .none: return "none"
        case .zstd: return "zstd"
        case .zstdShuffled: return "zstd+shuffle"
        }
    }
}

/// One row of the buffer table.
public struct BufferEntry: Equatable, Sendable {
    public static let encodedSize = 40
    /// Absolute file offset of the stored bytes (a multiple of the file's alignment).
    public var offset: Int
    public var storedLength: Int
    public var decodedLength: Int
    /// XXH3-64 of the decoded bytes.
    public var checksum: UInt64
    public var codec: Codec
    /// The byte-plane width for `.zstdShuffled`; 0 for the other codecs.
    public var codecParameter: Int = 0
}

/// A section of the index: a kind, a required flag and its payload (decoded: how the file
/// stores it, plain or as one zstd frame, is the writer's choice; see `StoredSection`).
public struct Section: Equatable, Sendable {
    public enum Kind: UInt32, Sendable {
        case metadata = 1   // a UTF-8 JSON object
        case graph = 2      // the model graph (defined by the ONNX layer)
    }

    public var kind: UInt32
    /// A reader that does not know `kind` must refuse the file when this is set.
    public var required: Bool
    public var payload: [UInt8]

    public init(kind: UInt32, required: Bool = false, payload: [UInt8]) {
        self.kind = kind
        self.required = required
        self.payload = payload
    }

    public init(_ kind: Kind, payload: [UInt8]) { self.init(kind: kind.rawValue, payload: payload) }
}

/// A section as the index holds it: flag bit 0 marks it required, bit 1 says the bytes are one
/// zstd frame of the payload (format 1.1).
struct StoredSection: Equatable {
    static let requiredFlag: UInt32 = 1
    static let zstdFlag: UInt32 = 2
    static let knownFlags = requiredFlag | zstdFlag

    var kind: UInt32
    var flags: UInt32
    var bytes: [UInt8]

    var isCompressed: Bool { flags & Self.zstdFlag != 0 }
    var isRequired: Bool { flags & Self.requiredFlag != 0 }
}

/// The index: buffer table, tensor table and sections, stored after the last buffer.
struct FileIndex {
    var buffers: [BufferEntry] = []
    var tensors: [TensorEntry] = []
    var sections: [StoredSection] = []

    static let noBuffer: UInt32 = 0xFFFF_FFFF
    static let minimumTensorEntrySize = 33

    func encode() -> [UInt8] {
        var w = ByteWriter()
        w.u32(tensors.count)
        w.u32(buffers.count)
        w.u32(sections.count)
        w.u32(0)
        for b in buffers {
            w.u64(b.offset)
            w.u64(b.storedLength)
            w.u64(b.decodedLength)
            w.u64(b.checksum)
            w.u32(b.codec.rawValue)
            w.u32(b.codecParameter)
        }
        for t in tensors { Self.encode(t, into: &w) }
        for s in sections {
            w.u32(s.kind)
            w.u32(s.flags)
            w.u64(s.bytes.count)
            w.append(contentsOf: s.bytes)
        }
        return w.bytes
    }

    private static func encode(_ t: TensorEntry, into w: inout ByteWriter) {
        let name = Array(t.name.utf8)
        w.u32(name.count)
        w.append(contentsOf: name)
        w.u32(t.dataType.rawValue)
        w.u32(t.storage.kind.rawValue)
        w.u32(t.role.rawValue)
        w.i32(Int32(t.reductionAxis ?? -1))
        w.u32(t.shape.count)
        for d in t.shape { w.u64(d) }
        if let q = t.quantization {
            w.u32(1)
            w.u32(q.codeType.rawValue)
            w.u32(q.scaleType.rawValue)
            switch q.granularity {
            case .perTensor: w.u32(0); w.i32(-1); w.u64(0)
            case .perAxis(let axis): w.u32(1); w.i32(Int32(axis)); w.u64(0)
            case .perGroup(let axis, let block): w.u32(2); w.i32(Int32(axis)); w.u64(block)
            }
            w.u32(q.scales)
            w.u32(q.zeroPoints.map(UInt32.init) ?? noBuffer)
        } else {
            w.u32(0)
        }
        switch t.storage {
        case .dense(let values):
            w.u32(values)
        case .csr(let rpt, let rp, let cit, let ci, let nnz, let values):
            w.u32(rpt.rawValue)
            w.u32(cit.rawValue)
            w.u64(nnz)
            w.u32(rp)
            w.u32(ci)
            w.u32(values)
        case .sparse24(let values, let metadata):
            w.u32(values)
            w.u32(metadata)
        }
    }

    /// Parse the index bytes (which start at absolute offset `base`). Structure only; the
    /// reader checks cross-references afterwards.
    static func decode(_ bytes: UnsafeRawBufferPointer, base: Int) throws -> FileIndex {
        var c = ByteCursor(bytes, base: base, what: "index")
        let tensorCount = Int(try c.readU32())
        let bufferCount = Int(try c.readU32())
        let sectionCount = Int(try c.readU32())
        let reservedAt = c.absolutePosition
        guard try c.readU32() == 0 else { throw TessError(.badIndex, "reserved index field is not zero", offset: reservedAt) }
        guard tensorCount <= Limits.maxTensorCount else {
            throw TessError(.limitExceeded, "\(tensorCount) tensors exceed the limit of \(Limits.maxTensorCount)", offset: base)
        }
        guard bufferCount <= Limits.maxBufferCount else {
            throw TessError(.limitExceeded, "\(bufferCount) buffers exceed the limit of \(Limits.maxBufferCount)", offset: base + 4)
        }
        guard sectionCount <= Limits.maxSectionCount else {
            throw TessError(.limitExceeded, "\(sectionCount) sections exceed the limit of \(Limits.maxSectionCount)", offset: base + 8)
        }
        // Counts are checked against the bytes present before any array is sized by them.
        guard bufferCount * BufferEntry.encodedSize + tensorCount * minimumTensorEntrySize <= c.remaining else {
            throw TessError(.truncated, "index declares \(tensorCount) tensors and \(bufferCount) buffers, more than its \(bytes.count) bytes can hold", offset: base)
        }
        var index = FileIndex()
        index.buffers.reserveCapacity(bufferCount)
        for _ in 0 ..< bufferCount {
            let at = c.absolutePosition
            let offset = try c.readLength("buffer offset", else: .bufferLayout)
            let stored = try c.readLength("stored length", else: .bufferLayout)
            let decoded = try c.readLength("decoded length", else: .limitExceeded)
            let checksum = try c.readU64()
            let rawCodec = try c.readU32()
            guard let codec = Codec(rawValue: rawCodec) else {
                throw TessError(.unknownCodec, "buffer \(index.buffers.count) uses codec \(rawCodec), which this reader does not know", offset: at + 32)
            }
            let parameter = Int(try c.readU32())
            guard codec == .zstdShuffled ? ByteShuffle.widths.contains(parameter) && decoded % parameter == 0 : parameter == 0 else {
                throw TessError(.badCodecParameter, "buffer \(index.buffers.count) has codec \(codec) with parameter \(parameter); zstd+shuffle takes 2, 4 or 8 dividing the decoded length, other codecs 0", offset: at + 36)
            }
            index.buffers.append(BufferEntry(offset: offset, storedLength: stored, decodedLength: decoded, checksum: checksum,
                                             codec: codec, codecParameter: parameter))
        }
        index.tensors.reserveCapacity(tensorCount)
        for _ in 0 ..< tensorCount { index.tensors.append(try decodeTensor(&c)) }
        for _ in 0 ..< sectionCount {
            let at = c.absolutePosition
            let kind = try c.readU32()
            let flags = try c.readU32()
            guard flags & ~StoredSection.knownFlags == 0 else {
                throw TessError(.badSection, "section flags 0x\(String(flags, radix: 16)) use reserved bits", offset: at + 4)
            }
            let length = try c.readLength("section length", else: .truncated)
            index.sections.append(StoredSection(kind: kind, flags: flags, bytes: Array(try c.readBytes(length))))
        }
        guard c.isAtEnd else {
            throw TessError(.badIndex, "index has \(c.remaining) bytes after its last section", offset: c.absolutePosition)
        }
        return index
    }

    private static func decodeTensor(_ c: inout ByteCursor) throws -> TensorEntry {
        let entryOffset = c.absolutePosition
        let nameLength = Int(try c.readU32())
        guard nameLength >= 1, nameLength <= Limits.maxNameBytes else {
            throw TessError(.badName, "tensor name length \(nameLength) is outside 1...\(Limits.maxNameBytes)", offset: entryOffset)
        }
        let nameBytes = try c.readBytes(nameLength)
        guard let name = String(validating: nameBytes, as: UTF8.self) else {
            throw TessError(.badName, "tensor name is not valid UTF-8", offset: entryOffset + 4)
        }
        do {
            return try decodeTensorBody(&c, name: name)
        } catch let error as TessError {
            throw error.inTensor(name)
        }
    }

    private static func decodeTensorBody(_ c: inout ByteCursor, name: String) throws -> TensorEntry {
        var at = c.absolutePosition
        let dataType = try DataType.decode(try c.readU32(), field: "data type", offset: at)
        at = c.absolutePosition
        let rawLayout = try c.readU32()
        guard let layout = LayoutKind(rawValue: rawLayout) else {
            throw TessError(.unknownLayout, "layout \(rawLayout) is not known", offset: at)
        }
        at = c.absolutePosition
        let rawRole = try c.readU32()
        guard let role = WeightRole(rawValue: rawRole) else {
            throw TessError(.unknownRole, "role \(rawRole) is not known", offset: at)
        }
        at = c.absolutePosition
        let axis = try c.readI32()
        guard axis >= -1 else { throw TessError(.badReductionAxis, "reduction axis \(axis) is negative", offset: at) }
        at = c.absolutePosition
        let rank = Int(try c.readU32())
        guard rank <= Limits.maxRank else {
            throw TessError(.badShape, "rank \(rank) exceeds the limit of \(Limits.maxRank)", offset: at)
        }
        var shape: [Int] = []
        for _ in 0 ..< rank {
            at = c.absolutePosition
            let d = try c.readU64()
            guard d <= UInt64(Limits.maxElementCount) else {
                throw TessError(.badShape, "dim \(shape.count) is \(d), over the element limit \(Limits.maxElementCount)", offset: at)
            }
            shape.append(Int(d))
        }
        at = c.absolutePosition
        var quantization: Quantization<Int>?
        switch try c.readU32() {
        case 0: break
        case 1:
            at = c.absolutePosition
            let codeType = try DataType.decode(try c.readU32(), field: "code type", offset: at)
            at = c.absolutePosition
            let scaleType = try DataType.decode(try c.readU32(), field: "scale type", offset: at)
            at = c.absolutePosition
            let kind = try c.readU32()
            let qAxis = Int(try c.readI32())
            let block = try c.readLength("group size", else: .badQuantization)
            let granularity: QuantizationGranularity
            // Axis and group size are checked together, by the same rule for every granularity.
            switch (kind, qAxis, block) {
            case (0, -1, 0): granularity = .perTensor
            case (1, 0..., 0): granularity = .perAxis(axis: qAxis)
            case (2, 0..., 1...): granularity = .perGroup(axis: qAxis, blockSize: block)
            default:
                throw TessError(.badQuantization, "granularity \(kind) with axis \(qAxis) and group size \(block) is not valid (per-tensor: axis -1, group size 0; per-axis: axis >= 0, group size 0; per-group: axis >= 0, group size >= 1)", offset: at)
            }
            let scales = Int(try c.readU32())
            let zp = try c.readU32()
            quantization = Quantization(codeType: codeType, scaleType: scaleType, granularity: granularity,
                                        scales: scales, zeroPoints: zp == noBuffer ? nil : Int(zp))
        case let other:
            throw TessError(.badQuantization, "quantization kind \(other) is not known", offset: at)
        }
        let storage: Storage<Int>
        switch layout {
        case .dense:
            storage = .dense(values: Int(try c.readU32()))
        case .csr:
            at = c.absolutePosition
            let rowType = try Self.csrIndexType(&c, "row pointer", else: .csrRowPointers)
            let columnType = try Self.csrIndexType(&c, "column index", else: .csrColumnIndices)
            let nnz = try c.readLength("nnz", else: .bufferSize)
            let rp = Int(try c.readU32()), ci = Int(try c.readU32()), values = Int(try c.readU32())
            storage = .csr(rowPointerType: rowType, rowPointers: rp, columnIndexType: columnType,
                           columnIndices: ci, nonZeroCount: nnz, values: values)
        case .sparse24:
            let values = Int(try c.readU32())
            storage = .sparse24(values: values, metadata: Int(try c.readU32()))
        }
        return TensorEntry(name: name, dataType: dataType, shape: shape, role: role,
                           reductionAxis: axis == -1 ? nil : Int(axis), storage: storage, quantization: quantization)
    }

    /// A CSR index type: a known data type number (else `unknownDataType`) that is an unsigned
    /// integer type (else `code`, the rule of that array).
    private static func csrIndexType(_ c: inout ByteCursor, _ field: String, else code: TessError.Code) throws -> IndexType {
        let at = c.absolutePosition
        let type = try DataType.decode(try c.readU32(), field: "\(field) type", offset: at)
        guard let indexType = IndexType(rawValue: type.rawValue) else {
            throw TessError(code, "\(field) type \(type) must be uint8, uint16, uint32 or uint64", offset: at)
        }
        return indexType
    }
}
