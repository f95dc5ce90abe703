import Foundation

/// Where artifacts live: a registry (`RegistryClient`) or an OCI image layout on disk
/// (`OCILayoutStore`). Push and pull see only this.
public protocol ContentStore: AnyObject, Sendable {
    /// For messages: the registry and repository, or the layout's folder.
    var location: String { get }
    /// The repository path that signatures name (the host is left out, so mirrors agree).
    var repository: String { get }

    func hasBlob(_ digest: Digest) throws -> Bool
    /// Link a blob that another repository of the same registry holds; false when not done.
    func mountBlob(_ digest: Digest, from repository: String) throws -> Bool
    func putBlob(_ digest: Digest, _ bytes: Data) throws
    /// Download into `path`, resuming what a file at `path` already holds, then check the
    /// size and digest; a blob that fails the check is deleted.
    func fetchBlob(_ descriptor: Descriptor, to path: String) throws
    func putManifest(_ bytes: Data, mediaType: String, reference: String) throws
    /// The manifest's bytes, checked against `reference` when it is a digest.
    func manifest(_ reference: String) throws -> Data?
    func tags() throws -> [String]
}

extension ContentStore {
    /// A small blob (config, index, signature) read into memory; `limit` caps what is accepted.
    func smallBlob(_ descriptor: Descriptor, limit: Int, in folder: String) throws -> Data {
        guard descriptor.size <= limit else {
            throw DistributionError.badArtifact("blob \(descriptor.digest.short) declares \(descriptor.size) bytes, over the limit of \(limit) for a \(descriptor.mediaType)")
        }
        let path = folder + "/" + descriptor.digest.hex
        try fetchBlob(descriptor, to: path)
        guard let data = FileManager.default.contents(atPath: path) else { throw DistributionError.io("\(path): cannot read a downloaded blob") }
        return data
    }
}

/// Checks a downloaded file against its descriptor; deletes it when it does not match.
func checkDownloaded(_ path: String, against descriptor: Descriptor, from location: String) throws {
    let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? -1
    guard size == descriptor.size else {
        try? FileManager.default.removeItem(atPath: path)
        throw DistributionError.badArtifact("blob \(descriptor.digest) from \(location) has \(size) bytes, its descriptor says \(descriptor.size)")
    }
    let actual = try Digest(ofFile: path)
    guard actual == descriptor.digest else {
        try? FileManager.default.removeItem(atPath: path)
        throw DistributionError.badArtifact("blob \(descriptor.digest) from \(location) hashes to \(actual): it is corrupt or was altered")
    }
}

extension Digest {
    /// The digest of a file, read in 4 MiB pieces.
    init(ofFile path: String) throws {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw DistributionError.io("\(path): cannot open") }
        defer { try? handle.close() }
        var hasher = SHA256Hasher()
        while let chunk = try handle.read(upToCount: 4 << 20), !chunk.isEmpty { hasher.update(chunk) }
        self = hasher.finalize()
    }
}
