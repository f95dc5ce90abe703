import Foundation

/// Rules for the sections this version defines, and how they are stored.
enum FileSections {
    /// The largest payload a section of `kind` may decode to.
    static func maxPayloadBytes(kind: UInt32) -> Int {
        switch Section.Kind(rawValue: kind) {
        case .metadata: return Limits.maxMetadataBytes
        case .graph: return Limits.maxGraphBytes
        case nil: return Limits.maxIndexBytes
        }
    }

    static func validate(_ section: Section, offset: Int? = nil) throws {
        let limit = maxPayloadBytes(kind: section.kind)
        guard section.payload.count <= limit else {
            throw TessError(.limitExceeded, "\(name(section.kind)) is \(section.payload.count) bytes, over the limit of \(limit)", offset: offset)
        }
        if Section.Kind(rawValue: section.kind) == .metadata { try validateMetadata(section.payload, offset: offset) }
    }

    /// RFC 8259 JSON in UTF-8, an object, with no byte order mark: what every JSON parser
    /// accepts. (Foundation alone would also take a BOM, or UTF-16 and UTF-32 text.)
    private static func validateMetadata(_ payload: [UInt8], offset: Int?) throws {
        if payload.starts(with: [0xEF, 0xBB, 0xBF]) {
            throw TessError(.badMetadata, "metadata starts with a UTF-8 byte order mark, which JSON (RFC 8259) does not allow", offset: offset)
        }
        // A NUL byte is never valid JSON text, and without one Foundation cannot take the bytes for UTF-16 or -32.
        guard !payload.contains(0), String(validating: payload, as: UTF8.self) != nil,
              (try? JSONSerialization.jsonObject(with: Data(payload))) is [String: Any] else {
            throw TessError(.badMetadata, "metadata is not a UTF-8 JSON object", offset: offset)
        }
    }

    /// How a writer stores `section`: as one zstd frame at `zstdLevel` when that is smaller,
    /// else as it is.
    static func store(_ section: Section, zstdLevel: Int?) throws -> StoredSection {
        let flags = section.required ? StoredSection.requiredFlag : 0
        if let zstdLevel, !section.payload.isEmpty {
            let frame = try section.payload.withUnsafeBytes { try Zstd.compress($0, level: zstdLevel) }
            if frame.count < section.payload.count {
                return StoredSection(kind: section.kind, flags: flags | StoredSection.zstdFlag, bytes: frame)
            }
        }
        return StoredSection(kind: section.kind, flags: flags, bytes: section.payload)
    }

    /// The section a reader hands out: decoded, with the rules of section 5.3 checked. A
    /// compressed payload's declared size is checked against its kind's limit, zstd's largest
    /// expansion and the memory budget before anything is allocated.
    static func load(_ stored: StoredSection, offset: Int) throws -> Section {
        var payload = stored.bytes
        if stored.isCompressed {
            let declared = try stored.bytes.withUnsafeBytes { try Zstd.frameContentSize($0) }
            let limit = maxPayloadBytes(kind: stored.kind)
            guard declared <= limit else {
                throw TessError(.limitExceeded, "\(name(stored.kind)) declares \(declared) decoded bytes, over the limit of \(limit)", offset: offset)
            }
            guard declared / Limits.maxZstdExpansion <= stored.bytes.count else {
                throw TessError(.limitExceeded, "\(name(stored.kind)) declares \(declared) decoded bytes from \(stored.bytes.count) stored; zstd cannot expand more than \(Limits.maxZstdExpansion)x", offset: offset)
            }
            do {
                payload = try stored.bytes.withUnsafeBytes { try Zstd.decompress($0, decodedLength: declared) }.withUnsafeBytes { Array($0) }
            } catch var error as TessError {
                error.message = "\(name(stored.kind)): \(error.message)"
                error.offset = offset
                throw error
            }
        }
        let section = Section(kind: stored.kind, required: stored.isRequired, payload: payload)
        try validate(section, offset: offset)
        return section
    }

    private static func name(_ kind: UInt32) -> String {
        switch Section.Kind(rawValue: kind) {
        case .metadata: return "metadata"
        case .graph: return "graph section"
        case nil: return "section kind \(kind)"
        }
    }
}

extension Section {
    /// A metadata section holding `object` as JSON with sorted keys (deterministic bytes).
    public static func metadata(_ object: [String: Any]) throws -> Section {
        Section(.metadata, payload: Array(try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])))
    }
}
