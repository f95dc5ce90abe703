import Foundation
import Tessera

/// An OCI image layout on disk (image-spec `image-layout.md`): `oci-layout`, `index.json` and
/// `blobs/sha256/<hex>`, the air-gap form that `skopeo copy oci:DIR` and `oras` read and write.
/// Tags are `org.opencontainers.image.ref.name` annotations in `index.json`.
public final class OCILayoutStore: ContentStore, @unchecked Sendable {
    public let folder: String
    public var location: String { folder }
    public let repository: String
    private let lock = NSLock()

    /// `create`: make the layout if the folder is empty or missing (push); else it must exist (pull).
    public init(folder: String, repository: String, create: Bool) throws {
        self.folder = folder
        self.repository = repository
        let fm = FileManager.default
        let marker = folder + "/oci-layout"
        if !fm.fileExists(atPath: marker) {
            guard create else { throw DistributionError.usage("\(folder): not an OCI image layout (no oci-layout file)") }
            if fm.fileExists(atPath: folder), let entries = try? fm.contentsOfDirectory(atPath: folder), !entries.isEmpty {
                throw DistributionError.usage("\(folder): exists, is not empty and is not an OCI image layout")
            }
            do {
                try fm.createDirectory(atPath: folder + "/blobs/sha256", withIntermediateDirectories: true)
                try Self.writeAtomically(Data(#"{"imageLayoutVersion":"1.0.0"}"#.utf8), to: marker)
                try Self.writeAtomically(try CanonicalJSON.encode(ImageIndex(manifests: [])), to: folder + "/index.json")
            } catch let e as DistributionError { throw e } catch {
                throw DistributionError.io("\(folder): cannot create an OCI image layout: \(error.localizedDescription)")
            }
        }
    }

    private func blobPath(_ d: Digest) -> String { "\(folder)/blobs/sha256/\(d.hex)" }

    public func hasBlob(_ digest: Digest) throws -> Bool { FileManager.default.fileExists(atPath: blobPath(digest)) }
    public func mountBlob(_ digest: Digest, from repository: String) throws -> Bool { false }

    public func putBlob(_ digest: Digest, _ bytes: Data) throws {
        try Self.writeAtomically(bytes, to: blobPath(digest))
    }

    public func fetchBlob(_ descriptor: Descriptor, to path: String) throws {
        let source = blobPath(descriptor.digest)
        guard FileManager.default.fileExists(atPath: source) else {
            throw DistributionError.badArtifact("\(folder): blob \(descriptor.digest) is missing")
        }
        try? FileManager.default.removeItem(atPath: path)
        do { try FileManager.default.copyItem(atPath: source, toPath: path) } catch {
            throw DistributionError.io("\(path): cannot copy blob \(descriptor.digest.short): \(error.localizedDescription)")
        }
        try checkDownloaded(path, against: descriptor, from: folder)
    }

    public func putManifest(_ bytes: Data, mediaType: String, reference: String) throws {
        let digest = Digest(of: bytes)
        try putBlob(digest, bytes)
        lock.lock(); defer { lock.unlock() }
        var index = try readIndex()
        let isTag = !reference.hasPrefix("sha256:")
        index.manifests.removeAll { isTag && $0.annotations?[Self.refName] == reference }
        if !index.manifests.contains(where: { $0.digest == digest && $0.annotations?[Self.refName] == (isTag ? reference : nil) }) {
            index.manifests.append(Descriptor(mediaType: mediaType, digest: digest, size: bytes.count,
                                              annotations: isTag ? [Self.refName: reference] : nil))
        }
        try Self.writeAtomically(try CanonicalJSON.encode(index), to: folder + "/index.json")
    }

    public func manifest(_ reference: String) throws -> Data? {
        let descriptor: Descriptor?
        if reference.hasPrefix("sha256:") {
            let d = try Digest(parsing: reference)
            descriptor = try hasBlob(d) ? Descriptor(mediaType: MediaType.imageManifest, digest: d, size: 0) : nil
        } else {
            descriptor = try readIndex().manifests.first { $0.annotations?[Self.refName] == reference }
        }
        guard let descriptor else { return nil }
        let path = blobPath(descriptor.digest)
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path), let size = attributes[.size] as? Int,
              size <= OCILimits.maxManifestBytes, let data = FileManager.default.contents(atPath: path) else {
            throw DistributionError.badArtifact("\(folder): manifest \(reference) is missing or over \(OCILimits.maxManifestBytes) bytes")
        }
        guard Digest(of: data) == descriptor.digest else {
            throw DistributionError.badArtifact("\(folder): manifest \(reference) does not match its digest \(descriptor.digest)")
        }
        return data
    }

    public func tags() throws -> [String] { try readIndex().manifests.compactMap { $0.annotations?[Self.refName] } }

    /// The tag a layout with one manifest uses when none is named.
    public func onlyTag() throws -> String? {
        let tags = try self.tags().filter { !$0.hasSuffix(".sig") }
        return tags.count == 1 ? tags[0] : nil
    }

    static let refName = "org.opencontainers.image.ref.name"

    private func readIndex() throws -> ImageIndex {
        let path = folder + "/index.json"
        guard let data = FileManager.default.contents(atPath: path) else { throw DistributionError.io("\(path): cannot read") }
        return try CanonicalJSON.decode(ImageIndex.self, from: data, what: path)
    }

    /// Write through Tessera's atomic file, so a layout never holds a half-written blob.
    static func writeAtomically(_ data: Data, to path: String) throws {
        do {
            let file = try AtomicFile(path: path, replaceExisting: true)
            try data.withUnsafeBytes { try file.write($0) }
            try file.commit()
        } catch let error as TessError {
            throw DistributionError.io(error.description)
        }
    }
}
