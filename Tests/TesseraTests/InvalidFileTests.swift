import Foundation
import Testing
@testable import Tessera

/// One handcrafted invalid file per validation rule; each must fail with its own error code,
/// located where possible, and never crash.
@Suite struct InvalidFileTests {
    static let folder = TemporaryFolder()

    /// Open `bytes` as a file and load every tensor; return the error it fails with.
    static func failure(_ bytes: [UInt8], limits: ReadLimits = .default) -> TessError? {
        let path = folder.file(UUID().uuidString + ".tess")
        writeBytes(bytes, path)
        do {
            let file = try TessFile.open(path, limits: limits)
            for i in file.tensors.indices { _ = try file.tensor(i) }
            return nil
        } catch let error as TessError {
            #expect(error.path == path, "errors name the file")
            return error
        } catch {
            Issue.record("unexpected error type \(error)")
            return nil
        }
    }

    static func expect(_ code: TessError.Code, _ raw: RawFile, sourceLocation: SourceLocation = #_sourceLocation) {
        expect(code, raw.bytes(), sourceLocation: sourceLocation)
    }

    static func expect(_ code: TessError.Code, _ bytes: [UInt8], limits: ReadLimits = .default,
                       sourceLocation: SourceLocation = #_sourceLocation) {
        let error = failure(bytes, limits: limits)
        #expect(error?.code == code, "got \(error.map(String.init(describing:)) ?? "no error")", sourceLocation: sourceLocation)
    }

    // A small valid model every test breaks in one way.
    static let dense = Tensor(name: "dense", dataType: .float, shape: [2, 2], storage: .dense(values: TensorBytes(float32: [1, 2, 3, 4])))
    static let csr = try! Tensor(name: "csr", dataType: .float, shape: [2, 4],
                                 storage: .dense(values: TensorBytes(float32: [0, 1, 0, 2, 3, 0, 0, 0]))).encoded(as: .csr)
    static let sparse = try! Tensor(name: "s24", dataType: .float, shape: [2, 4], reductionAxis: 1,
                                    storage: .dense(values: TensorBytes(float32: [0, 1, 0, 2, 3, 0, 0, 0]))).encoded(as: .sparse24)
    static let quant = Tensor(name: "q", dataType: .float, shape: [2], storage: .dense(values: [1, 2]),
                              quantization: Quantization(codeType: .int8, granularity: .perTensor, scales: TensorBytes(float32: [0.5])))
    static var valid: RawFile { RawFile([dense, csr, sparse, quant], sections: [try! Section.metadata(["a": 1])]) }

    @Test func theBaselineIsValidAndMatchesTheWriterByteForByte() throws {
        #expect(Self.failure(Self.valid.bytes()) == nil)
        let path = Self.folder.file("writer.tess")
        try TessWriter.write([Self.dense, Self.csr, Self.sparse, Self.quant], sections: [try Section.metadata(["a": 1])], to: path)
        #expect(readBytes(path) == Self.valid.bytes())
    }

    // MARK: Header

    @Test func header() {
        Self.expect(.notTessFile, [])
        Self.expect(.notTessFile, Array("PK\u{3}\u{4} not a tess file".utf8))
        Self.expect(.truncated, Array(Self.valid.bytes().prefix(40)))
        var raw = Self.valid
        raw.editHeader = { $0.replaceSubrange(8 ..< 10, with: [2, 0]) }
        Self.expect(.unsupportedVersion, raw)
        raw.editHeader = { $0.putU32(0x0D0C_0B0A, at: 12) }
        Self.expect(.badEndianness, raw)
        raw.editHeader = { $0[33] ^= 1 }
        raw.fixHeaderChecksum = false
        Self.expect(.headerChecksum, raw)
        raw.fixHeaderChecksum = true
        raw.editHeader = { $0.putU32(63, at: 16) }
        Self.expect(.badHeader, raw)
        raw.editHeader = { $0.putU32(48, at: 20) }
        Self.expect(.badHeader, raw)
        raw.editHeader = { $0.putU64(1 << 5, at: 24) }
        Self.expect(.unsupportedFeature, raw)
    }

    @Test func fileLength() {
        let bytes = Self.valid.bytes()
        Self.expect(.fileSize, bytes + [0])
        Self.expect(.fileSize, Array(bytes.dropLast()))
        var raw = Self.valid
        raw.editHeader = { $0.putU64(UInt64(Limits.maxIndexBytes + 1), at: 40) }
        Self.expect(.limitExceeded, raw)
    }

    @Test func indexChecksum() {
        var bytes = Self.valid.bytes()
        bytes[bytes.count - 3] ^= 0x10
        Self.expect(.indexChecksum, bytes)
    }

    // MARK: Index structure

    @Test func counts() {
        var raw = Self.valid
        raw.editIndex = { $0.putU32(UInt32(Limits.maxTensorCount + 1), at: 0) }
        Self.expect(.limitExceeded, raw)
        raw.editIndex = { $0.putU32(100_000, at: 0) }   // within the limit, but the index is far too short
        Self.expect(.truncated, raw)
        raw.editIndex = { $0.putU32(UInt32(Limits.maxSectionCount + 1), at: 8) }
        Self.expect(.limitExceeded, raw)
        raw.editIndex = { $0.putU32(1, at: 12) }
        Self.expect(.badIndex, raw)
        raw.editIndex = { $0 += [0] }
        Self.expect(.badIndex, raw)
        raw.editIndex = { $0 = Array($0.prefix(12)) }     // shorter than the 16 bytes of counts
        Self.expect(.truncated, raw)
    }

    /// A u64 over 2^63 - 1 breaks the rule of its own field, never a generic one.
    @Test func hugeLengthsBreakTheirFieldsRule() {
        var raw = Self.valid
        raw.editHeader = { $0.putU64(1 << 63, at: 32) }
        Self.expect(.fileSize, raw)                       // index offset
        raw.editHeader = { $0.putU64(1 << 63, at: 40) }
        Self.expect(.limitExceeded, raw)                  // index length
        raw.editHeader = nil
        for (field, code) in [(0, TessError.Code.bufferLayout), (8, .bufferLayout), (16, .limitExceeded)] {
            raw.editIndex = { $0.putU64(1 << 63, at: 16 + field) }   // buffer 0's offset, stored and decoded length
            Self.expect(code, raw)
        }
        raw.editIndex = { $0.putU64(1 << 63, at: $0.count - 8 - 1) }  // the only section's length: 1 metadata byte... runs past
        raw.sections = [Section(kind: 2, payload: [7])]
        Self.expect(.truncated, raw)
    }

    @Test func csrIndexTypes() {
        let entry = Self.firstTensorField(RawFile([Self.csr]), 0) + 4 * 5 + 8 * 2 + 4   // after dtype..dims and the quantization flag
        var raw = RawFile([Self.csr])
        #expect(Self.failure(raw.bytes()) == nil)
        raw.editIndex = { $0.putU32(1, at: entry) }       // FLOAT row pointers
        Self.expect(.csrRowPointers, raw)
        raw.editIndex = { $0.putU32(1, at: entry + 4) }   // FLOAT column indices
        Self.expect(.csrColumnIndices, raw)
        raw.editIndex = { $0.putU32(99, at: entry + 4) }
        Self.expect(.unknownDataType, raw)
    }

    /// Offset of the first tensor entry's fields within the index bytes.
    static func firstTensorField(_ raw: RawFile, _ field: Int) -> Int {
        16 + raw.buffers.count * BufferEntry.encodedSize + 4 + raw.tensors[0].name.utf8.count + field
    }

    @Test func tensorEntries() {
        var raw = Self.valid
        let name = 16 + raw.buffers.count * BufferEntry.encodedSize
        raw.editIndex = { $0.putU32(0, at: name) }
        Self.expect(.badName, raw)
        raw.editIndex = { $0[name + 4] = 0xFF }   // not UTF-8
        Self.expect(.badName, raw)
        raw.editIndex = nil
        raw.tensors[1].name = "dense"
        Self.expect(.badName, raw)

        raw = Self.valid
        let field = { Self.firstTensorField(raw, $0) }
        raw.editIndex = { $0.putU32(8, at: field(0)) }      // STRING
        Self.expect(.unknownDataType, raw)
        raw.editIndex = { $0.putU32(99, at: field(0)) }
        Self.expect(.unknownDataType, raw)
        raw.editIndex = { $0.putU32(7, at: field(4)) }
        Self.expect(.unknownLayout, raw)
        raw.editIndex = { $0.putU32(99, at: field(8)) }
        Self.expect(.unknownRole, raw)
        raw.editIndex = { $0.putU32(UInt32(bitPattern: -2), at: field(12)) }
        Self.expect(.badReductionAxis, raw)
        raw.editIndex = { $0.putU32(5, at: field(12)) }
        Self.expect(.badReductionAxis, raw)
        raw.editIndex = { $0.putU32(UInt32(Limits.maxRank + 1), at: field(16)) }
        Self.expect(.badShape, raw)
    }

    @Test func shapes() {
        var raw = Self.valid
        raw.tensors[0].shape = [1 << 30, 1 << 30]   // over the element limit
        Self.expect(.badShape, raw)
        raw.tensors[0].shape = [Int.max / 2, 4]     // overflows
        Self.expect(.badShape, raw)
        raw.tensors[0].shape = [2, 3]               // buffer size no longer matches
        Self.expect(.bufferSize, raw)
        raw = Self.valid
        raw.tensors[2].reductionAxis = nil          // 2:4 without an axis
        Self.expect(.badReductionAxis, raw)
        raw = Self.valid
        raw.tensors[2].shape = [4, 2]
        raw.tensors[2].reductionAxis = 1            // axis length 2 is not a multiple of 4
        Self.expect(.badShape, raw)
    }

    @Test func quantizationParameters() {
        var raw = Self.valid
        raw.tensors[3].dataType = .int32
        Self.expect(.badQuantization, raw)
        raw = Self.valid
        raw.tensors[3].quantization!.codeType = .float
        Self.expect(.badQuantization, raw)
        raw = Self.valid
        raw.tensors[3].quantization!.scaleType = .double
        Self.expect(.badQuantization, raw)
        raw = Self.valid
        raw.tensors[3].quantization!.granularity = .perAxis(axis: 3)
        Self.expect(.badQuantization, raw)
        raw = Self.valid
        raw.tensors[3].quantization!.granularity = .perGroup(axis: 0, blockSize: 0)
        Self.expect(.badQuantization, raw)
        raw = Self.valid
        raw.buffers[raw.tensors[3].quantization!.scales].stored = Array(TensorBytes(float32: [.nan]).array)
        Self.expect(.badScale, raw)
        raw.buffers[raw.tensors[3].quantization!.scales].stored = Array(TensorBytes(float32: [-1]).array)
        Self.expect(.badScale, raw)
    }

    // MARK: Buffers

    @Test func bufferTable() {
        var raw = Self.valid
        raw.buffers[1].offset = 200                 // leaves a hole
        Self.expect(.bufferLayout, raw)
        raw = Self.valid
        raw.nonZeroPaddingAt = 64 + 16 + 3          // padding after the 16-byte first buffer
        Self.expect(.bufferLayout, raw)
        raw = Self.valid
        raw.editIndex = { $0.putU32(9, at: 16 + 32) }  // codec of buffer 0
        Self.expect(.unknownCodec, raw)
        raw.editIndex = { $0.putU32(4, at: 16 + 36) }  // a parameter for a codec that takes none
        Self.expect(.badCodecParameter, raw)
        raw.editIndex = { $0.putU64(1 << 40, at: 16 + 8) }  // stored length runs into the index
        Self.expect(.bufferLayout, raw)
        raw = Self.valid
        raw.buffers[0].decodedLength = 15           // codec none: stored != decoded
        Self.expect(.codec, raw)
    }

    @Test func bufferReferences() {
        var raw = Self.valid
        raw.tensors[0].storage = .dense(values: 99)
        Self.expect(.bufferReference, raw)
        raw = Self.valid
        raw.tensors[3].storage = .dense(values: 0)  // shared with tensor 0 (and buffer 7 orphaned)
        Self.expect(.bufferReference, raw)
        raw = Self.valid
        raw.buffers.append(RawFile.Buffer(stored: [1, 2, 3]))   // used by nobody
        Self.expect(.bufferReference, raw)
    }

    @Test func checksumsAndCodecs() {
        var raw = Self.valid
        raw.buffers[0].checksum = 12345
        Self.expect(.checksumMismatch, raw)

        // zstd: garbage, a frame with the wrong content size, and an impossible expansion.
        raw = Self.valid
        raw.buffers[0] = RawFile.Buffer(stored: [1, 2, 3, 4, 5, 6, 7, 8], codec: .zstd, decodedLength: 16,
                                        checksum: Checksum.xxh3(TensorBytes(float32: [1, 2, 3, 4]).array))
        Self.expect(.codec, raw)
        let frame = zstd(TensorBytes(float32: [1, 2, 3, 4, 5]).array)
        raw.buffers[0] = RawFile.Buffer(stored: frame, codec: .zstd, decodedLength: 16, checksum: 0)
        Self.expect(.codec, raw)
        let bomb = Tensor(name: "bomb", dataType: .uint8, shape: [1_000_000], storage: .dense(values: TensorBytes([UInt8](repeating: 0, count: 1_000_000))))
        raw = RawFile([bomb])
        raw.buffers[0] = RawFile.Buffer(stored: [0x28, 0xB5, 0x2F, 0xFD, 0, 0, 0, 0], codec: .zstd, decodedLength: 1_000_000, checksum: 0)
        Self.expect(.limitExceeded, raw)            // 8 stored bytes cannot decode to 1 MB
        // A legitimate frame, but over a device's decoded-size budget.
        let zeros = zstd([UInt8](repeating: 0, count: 1_000_000))
        raw.buffers[0] = RawFile.Buffer(stored: zeros, codec: .zstd, decodedLength: 1_000_000,
                                        checksum: Checksum.xxh3([UInt8](repeating: 0, count: 1_000_000)))
        #expect(Self.failure(raw.bytes()) == nil)
        Self.expect(.limitExceeded, raw.bytes(), limits: ReadLimits(maxDecodedBufferBytes: 999_999))
    }

    @Test func shuffledBuffers() {
        let values = TensorBytes(float32: [1, 2, 3, 4]).array
        let planes = [0, 4, 8, 12].map { values[$0] } + [1, 5, 9, 13].map { values[$0] } +
                     [2, 6, 10, 14].map { values[$0] } + [3, 7, 11, 15].map { values[$0] }
        var raw = Self.valid
        raw.buffers[0] = RawFile.Buffer(stored: zstd(planes), codec: .zstdShuffled, decodedLength: 16, checksum: Checksum.xxh3(values))
        raw.editIndex = { $0.putU32(4, at: 16 + 36) }
        #expect(Self.failure(raw.bytes()) == nil, "a hand-shuffled buffer decodes")
        for bad: UInt32 in [0, 3, 16] {
            raw.editIndex = { $0.putU32(bad, at: 16 + 36) }
            Self.expect(.badCodecParameter, raw)
        }
        raw.buffers[0] = RawFile.Buffer(stored: zstd(Array(planes.prefix(14))), codec: .zstdShuffled, decodedLength: 14, checksum: 0)
        raw.editIndex = { $0.putU32(4, at: 16 + 36) }       // 4 does not divide 14
        Self.expect(.badCodecParameter, raw)
    }

    // MARK: Content rules

    @Test func csrContent() {
        guard case .csr(_, let rp, _, let ci, _, _) = Self.valid.tensors[1].storage else { Issue.record("not CSR"); return }
        var raw = Self.valid
        raw.buffers[rp].stored = [0, 3, 2]          // decreasing
        Self.expect(.csrRowPointers, raw)
        raw.buffers[rp].stored = [1, 2, 3]          // does not start at 0
        Self.expect(.csrRowPointers, raw)
        raw.buffers[rp].stored = [0, 2, 2]          // ends before nnz
        Self.expect(.csrRowPointers, raw)
        raw = Self.valid
        raw.buffers[ci].stored = [1, 4, 0]          // column 4 of 4
        Self.expect(.csrColumnIndices, raw)
        raw.buffers[ci].stored = [3, 1, 0]          // not increasing within row 0
        Self.expect(.csrColumnIndices, raw)
        raw = Self.valid
        raw.tensors[1].storage = .csr(rowPointerType: .uint8, rowPointers: rp, columnIndexType: .uint8,
                                      columnIndices: ci, nonZeroCount: 9, values: 4)
        Self.expect(.bufferSize, raw)               // more non-zeros than elements
        let wide = try! Tensor(name: "wide", dataType: .uint8, shape: [1, 300],
                               storage: .dense(values: TensorBytes([UInt8](repeating: 1, count: 300)))).encoded(as: .csr)
        raw = RawFile([wide])
        guard case .csr(_, let wrp, _, let wci, let nnz, let values) = raw.tensors[0].storage else { return }
        raw.tensors[0].storage = .csr(rowPointerType: .uint16, rowPointers: wrp, columnIndexType: .uint8,
                                      columnIndices: wci, nonZeroCount: nnz, values: values)
        Self.expect(.csrColumnIndices, raw)         // u8 cannot index 300 columns
    }

    @Test func sparse24Content() {
        guard case .sparse24(_, let meta) = Self.valid.tensors[2].storage else { Issue.record("not 2:4"); return }
        var raw = Self.valid
        raw.buffers[meta].stored = [0x4C]          // valid
        #expect(Self.failure(raw.bytes()) == nil)
        raw.buffers[meta].stored = [0x43]          // nibble 3 = (3, 0): i0 > i1
        Self.expect(.sparse24Metadata, raw)
        raw.buffers[meta].stored = [0x55]          // (1, 1): not two positions
        Self.expect(.sparse24Metadata, raw)
        var odd = RawFile([try! Tensor(name: "odd", dataType: .float, shape: [4], reductionAxis: 0,
                                       storage: .dense(values: TensorBytes(float32: [0, 1, 0, 0]))).encoded(as: .sparse24)])
        odd.buffers[1].stored = [0x44]             // one group: the high nibble must stay zero
        Self.expect(.sparse24Metadata, odd)
    }

    @Test func unusedNibblesOfFourBitArrays() {
        let int4 = Tensor(name: "n", dataType: .int4, shape: [3], storage: .dense(values: [0x21, 0x03]))
        var raw = RawFile([int4])
        #expect(Self.failure(raw.bytes()) == nil)
        raw.buffers[0].stored = [0x21, 0x13]        // element 3 does not exist: its nibble must be 0
        Self.expect(.bufferLayout, raw)
        let zp = Tensor(name: "z", dataType: .float, shape: [3], storage: .dense(values: [0x21, 0x03]),
                        quantization: Quantization(codeType: .uint4, granularity: .perAxis(axis: 0),
                                                   scales: TensorBytes(float32: [1, 1, 1]), zeroPoints: [0x00, 0xF0]))
        Self.expect(.bufferLayout, RawFile([zp]))
    }

    // MARK: Sections

    @Test func sections() {
        var raw = Self.valid
        raw.sections = [Section(kind: 1, payload: Array("[1, 2]".utf8))]
        Self.expect(.badMetadata, raw)
        raw.sections = [Section(kind: 2, payload: [1]), Section(kind: 2, payload: [2])]
        Self.expect(.badSection, raw)
        raw.sections = [Section(kind: 77, required: true, payload: [1])]
        Self.expect(.unsupportedFeature, raw)
        raw.sections = [Section(kind: 77, required: false, payload: [1])]
        #expect(Self.failure(raw.bytes()) == nil, "unknown optional sections are skipped")
        raw.sections = [Section(kind: 2, payload: [1])]
        raw.editIndex = { $0[$0.count - 1 - 1 - 8 - 4 + 1] = 4 }   // flags of the only section: reserved bit
        Self.expect(.badSection, raw)
    }

    @Test func metadataIsJSONAsEveryParserReadsIt() {
        var raw = Self.valid
        raw.sections = [Section(kind: 1, payload: [0xEF, 0xBB, 0xBF] + Array("{}".utf8))]
        Self.expect(.badMetadata, raw)                        // a byte order mark (RFC 8259 section 8.1)
        raw.sections = [Section(kind: 1, payload: [0x7B, 0x00, 0x7D, 0x00])]
        Self.expect(.badMetadata, raw)                        // UTF-16
        raw.sections = [Section(kind: 1, payload: [0x7B, 0x22, 0xFF, 0x22, 0x3A, 0x31, 0x7D])]
        Self.expect(.badMetadata, raw)                        // not UTF-8
    }

    static func compressed(_ kind: UInt32, _ payload: [UInt8]) -> StoredSection {
        StoredSection(kind: kind, flags: StoredSection.zstdFlag, bytes: try! payload.withUnsafeBytes { try Zstd.compress($0, level: 3) })
    }

    @Test func compressedSections() {
        let metadata = Array("{\"a\": 1}".utf8)
        var raw = Self.valid
        raw.storedSections = [Self.compressed(1, metadata)]
        raw.requiredFeatures = FileHeader.compressedSectionsFeature
        #expect(Self.failure(raw.bytes()) == nil)
        raw.requiredFeatures = 0
        Self.expect(.badSection, raw)                         // compressed without the feature bit
        raw.storedSections = nil
        raw.requiredFeatures = FileHeader.compressedSectionsFeature
        Self.expect(.badSection, raw)                         // the feature bit without a compressed section
        raw.storedSections = [StoredSection(kind: 1, flags: StoredSection.zstdFlag, bytes: metadata)]
        Self.expect(.codec, raw)                              // not a zstd frame
        var truncated = Self.compressed(2, [UInt8](repeating: 7, count: 1000))
        truncated.bytes.removeLast()
        raw.storedSections = [truncated]
        Self.expect(.codec, raw)
        raw.storedSections = [Self.compressed(1, Array("[1]".utf8))]
        Self.expect(.badMetadata, raw)                        // decoded payloads follow the same rules
        let huge = Array("{\"a\": \"".utf8) + [UInt8](repeating: 0x61, count: Limits.maxMetadataBytes) + Array("\"}".utf8)
        raw.storedSections = [Self.compressed(1, huge)]
        Self.expect(.limitExceeded, raw)                      // checked on the declared size, before decoding
        raw.storedSections = [Self.compressed(1, metadata)]
        raw.editHeader = { $0.putU64(FileHeader.compressedSectionsFeature | 2, at: 24) }
        Self.expect(.unsupportedFeature, raw)                 // other feature bits stay unknown
    }

    /// The codes of file rules, each exercised by an invalid file above.
    static let fileRuleCodes: Set<TessError.Code> = [
        .notTessFile, .unsupportedVersion, .unsupportedFeature, .badEndianness, .headerChecksum, .badHeader,
        .fileSize, .truncated, .indexChecksum, .badIndex, .limitExceeded, .badName, .unknownDataType, .unknownLayout,
        .unknownCodec, .badCodecParameter, .unknownRole, .badShape, .badReductionAxis, .badQuantization, .bufferLayout,
        .bufferReference, .bufferSize, .checksumMismatch, .codec, .csrRowPointers, .csrColumnIndices,
        .sparse24Metadata, .badScale, .badSection, .badMetadata,
    ]

    @Test func everyRuleHasAnInvalidFile() {
        // Codes that are not about file bytes.
        let notFileRules: Set<TessError.Code> = [.io, .unsupportedOperation, .invalidArgument]
        #expect(Set(TessError.Code.allCases).subtracting(notFileRules) == Self.fileRuleCodes)
    }

    /// Section 11's table (its last column) names exactly the codes of the file rules.
    @Test func theSpecTableNamesTheseCodes() throws {
        let path = URL(fileURLWithPath: #filePath).appendingPathComponent("../../../spec/FORMAT.md").standardized.path
        let spec = try String(contentsOfFile: path, encoding: .utf8)
        let validation = try #require(spec.components(separatedBy: "## 11. Validation").last?.components(separatedBy: "## 12.").first)
        var named = Set<String>()
        for line in validation.split(separator: "\n") where line.hasPrefix("| ") && !line.hasPrefix("| rule") {
            let code = try #require(line.split(separator: "|").last)
            for match in code.matches(of: /`(\w+)`/) { named.insert(String(match.1)) }
        }
        #expect(named == Set(Self.fileRuleCodes.map(\.rawValue)))
    }
}
