@preconcurrency import Crypto
import Foundation

/// ECDSA P-256 keys in PEM (the curve cosign and OpenSSF model signing use), DSSE envelopes
/// and the in-toto statement that names what a signature vouches for.
public enum Signing {
    public static let payloadType = "application/vnd.in-toto+json"
    public static let statementType = "https://in-toto.io/Statement/v1"
    public static let predicateType = "https://tessera.dev/model-release/v1"

    /// A new key pair: the private key in PKCS#8 PEM, the public key in SPKI PEM.
    public static func generateKey() -> (privatePEM: String, publicPEM: String) {
        let key = P256.Signing.PrivateKey()
        return (key.pemRepresentation, key.publicKey.pemRepresentation)
    }

    public static func loadPrivateKey(_ path: String) throws -> P256.Signing.PrivateKey {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw DistributionError.usage("\(path): cannot read the signing key") }
        do { return try P256.Signing.PrivateKey(pemRepresentation: text) } catch {
            throw DistributionError.usage("\(path): not an ECDSA P-256 private key in PEM (tessera keygen writes one)")
        }
    }

    public static func loadPublicKey(_ path: String) throws -> P256.Signing.PublicKey {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw DistributionError.usage("\(path): cannot read the trusted key") }
        do { return try P256.Signing.PublicKey(pemRepresentation: text) } catch {
            throw DistributionError.usage("\(path): not an ECDSA P-256 public key in PEM")
        }
    }

    /// A key's id: the SHA-256 of its SubjectPublicKeyInfo, in hex.
    public static func keyID(_ key: P256.Signing.PublicKey) -> String { Digest(of: key.derRepresentation).hex }

    /// DSSE's pre-authentication encoding: what is actually signed.
    static func pae(_ type: String, _ payload: Data) -> Data {
        var out = Data("DSSEv1 \(type.utf8.count) \(type) \(payload.count) ".utf8)
        out.append(payload)
        return out
    }

    public static func sign(_ statement: Statement, with key: P256.Signing.PrivateKey) throws -> Envelope {
        let payload = try CanonicalJSON.encode(statement)
        let signature = try key.signature(for: pae(payloadType, payload))
        return Envelope(payloadType: payloadType, payload: payload.base64EncodedString(),
                        signatures: [.init(keyid: keyID(key.publicKey), sig: signature.derRepresentation.base64EncodedString())])
    }

    /// The statement, if one of the envelope's signatures is by one of `trusted`; else why not.
    public static func verify(_ envelope: Envelope, trusted: [P256.Signing.PublicKey]) throws -> Statement {
        guard envelope.payloadType == payloadType, let payload = Data(base64Encoded: envelope.payload) else {
            throw DistributionError.untrusted("the signature envelope is not a DSSE in-toto envelope")
        }
        let signed = pae(envelope.payloadType, payload)
        let good = envelope.signatures.contains { s in
            guard let der = Data(base64Encoded: s.sig), let signature = try? P256.Signing.ECDSASignature(derRepresentation: der) else { return false }
            return trusted.contains { $0.isValidSignature(signature, for: signed) }
        }
        guard good else {
            let ids = envelope.signatures.map { String($0.keyid.prefix(16)) }.joined(separator: ", ")
            throw DistributionError.untrusted("the model is signed by key \(ids.isEmpty ? "(none)" : ids), which is not a trusted key, or the signature is wrong")
        }
        let statement = try CanonicalJSON.decode(Statement.self, from: payload, what: "signed statement")
        guard statement._type == statementType, statement.predicateType == predicateType else {
            throw DistributionError.untrusted("the signed statement is not a Tessera model release (\(statement.predicateType))")
        }
        return statement
    }
}

/// A DSSE envelope (github.com/secure-systems-lab/dsse).
public struct Envelope: Codable, Sendable {
    public struct Signature: Codable, Sendable { public var keyid: String; public var sig: String }
    public var payloadType: String
    public var payload: String
    public var signatures: [Signature]
}

/// An in-toto Statement v1 whose predicate is a Tessera model release.
public struct Statement: Codable, Sendable {
    public struct Subject: Codable, Sendable { public var name: String; public var digest: [String: String] }
    public struct Release: Codable, Sendable {
        /// The repository path (no host, so mirrors agree) the release belongs to.
        public var repository: String
        /// Grows with every signed release of the repository; a site refuses a lower one.
        public var sequence: Int
        /// SHA-256 of each tensor's decoded buffers, concatenated in the tensor's buffer order,
        /// in index order: the same in the zero-copy and the distribution form.
        public var tensors: [NamedDigest]
        /// SHA-256 of each section's decoded payload ("metadata", "graph", or the kind number).
        public var sections: [NamedDigest]
    }
    public struct NamedDigest: Codable, Sendable, Equatable { public var name: String; public var sha256: String }

    public var _type = Signing.statementType
    /// [0]: the manifest (name = repository); [1]: the distribution-form file.
    public var subject: [Subject]
    public var predicateType = Signing.predicateType
    public var predicate: Release

    public init(repository: String, manifest: Digest, file: Digest, sequence: Int, tensors: [NamedDigest], sections: [NamedDigest]) {
        subject = [Subject(name: repository, digest: ["sha256": manifest.hex]),
                   Subject(name: "model.tess", digest: ["sha256": file.hex])]
        predicate = Release(repository: repository, sequence: sequence, tensors: tensors, sections: sections)
    }

    public var manifestDigest: String? { subject.first?.digest["sha256"] }
}

/// What this site has installed, per repository: the highest sequence and its manifest, so a
/// signed but older release (a rollback, or a frozen mirror) is refused.
public struct TrustState: Codable, Sendable {
    public struct Installed: Codable, Sendable { public var sequence: Int; public var manifest: String }
    public var repositories: [String: Installed] = [:]

    /// The default state file: `$XDG_STATE_HOME/tessera/trust-state.json` or `~/.local/state/…`.
    public static var defaultPath: String {
        let env = ProcessInfo.processInfo.environment
        let base = env["XDG_STATE_HOME"] ?? ((env["HOME"] ?? ".") + "/.local/state")
        return base + "/tessera/trust-state.json"
    }

    public static func load(_ path: String) throws -> TrustState {
        guard FileManager.default.fileExists(atPath: path) else { return TrustState() }
        guard let data = FileManager.default.contents(atPath: path) else { throw DistributionError.io("\(path): cannot read the trust state") }
        return try CanonicalJSON.decode(TrustState.self, from: data, what: "trust state \(path)")
    }

    public func save(_ path: String) throws {
        let folder = (path as NSString).deletingLastPathComponent
        if !folder.isEmpty { try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) }
        try OCILayoutStore.writeAtomically(try CanonicalJSON.encode(self), to: path)
    }

    /// Refuses `statement` when it is older than what was installed for its repository, or
    /// the same sequence for a different manifest.
    public func check(_ statement: Statement, manifest: Digest) throws {
        let release = statement.predicate
        guard let installed = repositories[release.repository] else { return }
        if release.sequence < installed.sequence {
            throw DistributionError.untrusted("rollback refused: \(release.repository) release \(release.sequence) is older than release \(installed.sequence), installed here")
        }
        if release.sequence == installed.sequence, installed.manifest != manifest.description {
            throw DistributionError.untrusted("\(release.repository) release \(release.sequence) is installed here with another manifest (\(installed.manifest)); refused")
        }
    }
}
