import Foundation

/// Rules for the sections this version defines.
enum FileSections {
    static func validate(_ section: Section, offset: Int? = nil) throws {
        switch Section.Kind(rawValue: section.kind) {
        case .metadata:
            guard section.payload.count <= Limits.maxMetadataBytes else {
                throw TessError(.limitExceeded, "metadata is \(section.payload.count) bytes, over the limit of \(Limits.maxMetadataBytes)", offset: offset)
            }
            let object = try? JSONSerialization.jsonObject(with: Data(section.payload))
            guard object is [String: Any] else {
                throw TessError(.badMetadata, "metadata is not a UTF-8 JSON object", offset: offset)
            }
        case .graph:
            guard section.payload.count <= Limits.maxGraphBytes else {
                throw TessError(.limitExceeded, "graph section is \(section.payload.count) bytes, over the limit of \(Limits.maxGraphBytes)", offset: offset)
            }
        case nil:
            break
        }
    }
}

extension Section {
    /// A metadata section holding `object` as JSON with sorted keys (deterministic bytes).
    public static func metadata(_ object: [String: Any]) throws -> Section {
        Section(.metadata, payload: Array(try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])))
    }
}
