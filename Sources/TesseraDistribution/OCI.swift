@preconcurrency import Crypto
import Foundation

/// A content digest, `sha256:<64 hex>`: the only algorithm Tessera writes or accepts.
public struct Digest: Hashable, Sendable, Codable, CustomStringConvertible {
    public let hex: String

    public init(of bytes: some DataProtocol) {
        hex = SHA256.hash(data: bytes).hexString
    }

    public init(hex: String) { self.hex = hex }

    /// Parses `sha256:<64 lowercase hex>`; anything else (another algorithm, a path) is refused,
    /// since digests from a registry become file names.
    public init(parsing text: String) throws {
        let hex = text.hasPrefix("sha256:") ? String(text.dropFirst(7)) : ""
        guard hex.count == 64, hex.allSatisfy({ ("0"..."9").contains($0) || ("a"..."f").contains($0) }) else {
            throw DistributionError.badArtifact("'\(text.prefix(80))' is not a sha256 digest")
        }
        self.hex = hex
    }

    public var description: String { "sha256:\(hex)" }
    public var short: String { String(hex.prefix(12)) }

    public init(from decoder: Decoder) throws {
        try self.init(parsing: try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

extension Sequence where Element == UInt8 {
    var hexString: String { map { String(format: "%02x", $0) }.joined() }
}

/// An OCI content descriptor (image-spec `descriptor.md`).
public struct Descriptor: Codable, Equatable, Sendable {
    public var mediaType: String
    public var digest: Digest
    public var size: Int
    public var artifactType: String?
    public var annotations: [String: String]?

    public init(mediaType: String, digest: Digest, size: Int, artifactType: String? = nil, annotations: [String: String]? = nil) {
        self.mediaType = mediaType
        self.digest = digest
        self.size = size
        self.artifactType = artifactType
        self.annotations = annotations
    }
}

/// An OCI image manifest, used as an artifact manifest (image-spec `manifest.md`).
public struct ImageManifest: Codable, Equatable, Sendable {
    public var schemaVersion = 2
    public var mediaType = MediaType.imageManifest
    public var artifactType: String?
    public var config: Descriptor
    public var layers: [Descriptor]
    public var subject: Descriptor?
    public var annotations: [String: String]?

    public init(artifactType: String?, config: Descriptor, layers: [Descriptor], subject: Descriptor? = nil, annotations: [String: String]? = nil) {
        self.artifactType = artifactType
        self.config = config
        self.layers = layers
        self.subject = subject
        self.annotations = annotations
    }
}

/// An OCI image index: the top of an image layout, and the referrers API's answer.
public struct ImageIndex: Codable, Equatable, Sendable {
    public var schemaVersion = 2
    public var mediaType: String? = MediaType.imageIndex
    public var manifests: [Descriptor]

    public init(manifests: [Descriptor]) { self.manifests = manifests }
}

public enum MediaType {
    public static let imageManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let imageIndex = "application/vnd.oci.image.index.v1+json"
    public static let empty = "application/vnd.oci.empty.v1+json"
    public static let model = "application/vnd.tessera.model.v1"
    public static let config = "application/vnd.tessera.config.v1+json"
    public static let index = "application/vnd.tessera.index.v1"
    public static let tensors = "application/vnd.tessera.tensors.v1"
    public static let signature = "application/vnd.tessera.signature.v1"
    public static let dsse = "application/vnd.dsse.envelope.v1+json"
}

public enum Annotation {
    public static let title = "org.opencontainers.image.title"
    /// On a tensor layer: how many tensors, in index order, the layer holds.
    public static let tensorCount = "org.tessera.tensor-count"
    /// On a tensor layer: the first tensor's name (the only one for a single-tensor layer).
    public static let firstTensor = "org.tessera.tensor"
    /// On a signature manifest: the statement's sequence number (a hint for the next push;
    /// only the signed statement is trusted).
    public static let sequence = "org.tessera.sequence"
}

/// JSON written the same way every time: sorted keys, no escaped slashes, no whitespace, so
/// the same model always gives the same manifest digest.
enum CanonicalJSON {
    static func encode<T: Encodable>(_ value: T) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(value)
    }

    static func decode<T: Decodable>(_ type: T.Type, from data: Data, what: String) throws -> T {
        do {
            return try JSONDecoder().decode(type, from: data)
        } catch {
            throw DistributionError.badArtifact("\(what) is not valid: \(Self.describe(error))")
        }
    }

    private static func describe(_ error: Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): return "'\(key.stringValue)' is missing"
        case DecodingError.typeMismatch(_, let c), DecodingError.valueNotFound(_, let c), DecodingError.dataCorrupted(let c):
            let path = c.codingPath.map(\.stringValue).joined(separator: ".")
            return path.isEmpty ? c.debugDescription : "\(path): \(c.debugDescription)"
        case let e as DistributionError: return e.message
        default: return "\(error)"
        }
    }
}
