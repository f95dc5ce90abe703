@preconcurrency import Crypto
import Foundation
import Tessera

/// The artifact's config blob: small JSON any OCI tool can show.
public struct ModelConfig: Codable, Sendable {
    public struct FileDigest: Codable, Sendable { public var sha256: String; public var size: Int }
    public var format = "tess"
    public var formatVersion: String
    /// The distribution-form file the layers rebuild, byte for byte.
    public var file: FileDigest
    public var tensors: Int
    public var zstdLevel: Int?
}

/// `tessera push`: a `.tess` file into a store as a model artifact, sending only the blobs the
/// store lacks, then the manifest, then (with a key) a signed release statement.
public enum Publisher {
    public struct Options: Sendable {
        public var jobs = 4
        /// zstd level used when the file is in the zero-copy form and has to be packed first.
        public var zstdLevel = 3
        public var signingKey: P256.Signing.PrivateKey?
        /// The release's sequence number; by default one more than the highest signed one.
        public var sequence: Int?
        /// Another repository of the same registry to mount missing blobs from.
        public var mountFrom: String?
        public init() {}
    }

    public struct Result: Sendable {
        public var manifest: Digest
        public var fileSize: Int
        public var layers: Int
        public var layersReused: Int
        public var layersMounted: Int
        public var bytesUploaded: Int
        public var sequence: Int?
    }

    public static func push(_ path: String, to store: ContentStore, tag: String, options: Options) throws -> Result {
        var file = try TessFile.open(path)
        var zstdLevel: Int? = nil
        var packedCopy: String? = nil
        defer { if let packedCopy { unlink(packedCopy) } }
        if file.buffers.contains(where: { $0.codec == .none }) {
            // The registry holds the distribution form: pack a copy first.
            let copy = NSTemporaryDirectory() + "/tessera-push-\(getpid())-\(UInt32.random(in: 0 ... .max)).tess"
            try file.rewrite(to: copy, options: WriteOptions(alignment: file.header.alignment, codec: .zstd, zstdLevel: options.zstdLevel))
            packedCopy = copy
            file = try TessFile.open(copy)
            zstdLevel = options.zstdLevel
        }
        let artifact = try ModelArtifact(file: file)
        let fileDigest = try Digest(ofFile: file.path)
        let config = ModelConfig(formatVersion: "\(file.header.majorVersion).\(file.header.minorVersion)",
                                 file: .init(sha256: fileDigest.hex, size: file.fileSize),
                                 tensors: file.tensors.count, zstdLevel: zstdLevel)
        let configBytes = try CanonicalJSON.encode(config)

        // Blob 0 is the config, 1 the index layer, then the tensor layers.
        let indexBytes = Data(artifact.headerAndIndex)
        let runs = artifact.tensorRuns
        let blobCount = 2 + runs.count
        final class Tally: @unchecked Sendable {
            let lock = NSLock()
            var descriptors: [Descriptor?]
            var reused = 0, mounted = 0, uploaded = 0
            init(_ n: Int) { descriptors = Array(repeating: nil, count: n) }
        }
        let tally = Tally(blobCount)
        let fileRef = file
        try parallelFor(blobCount, jobs: options.jobs) { i in
            let data = i < 2 ? (i == 0 ? configBytes : indexBytes) : artifact.layerBytes(runs[i - 2], from: fileRef)
            let digest = Digest(of: data)
            var descriptor: Descriptor
            switch i {
            case 0: descriptor = Descriptor(mediaType: MediaType.config, digest: digest, size: data.count)
            case 1: descriptor = Descriptor(mediaType: MediaType.index, digest: digest, size: data.count, annotations: [Annotation.title: "index.tessidx"])
            default:
                let run = runs[i - 2]
                descriptor = Descriptor(mediaType: MediaType.tensors, digest: digest, size: data.count, annotations: [
                    Annotation.title: artifact.title(run),
                    Annotation.tensorCount: String(run.count),
                    Annotation.firstTensor: artifact.skeleton.tensors[run.lowerBound].name,
                ])
            }
            var how = 0   // 0 uploaded, 1 reused, 2 mounted
            if try store.hasBlob(digest) {
                how = 1
            } else if let other = options.mountFrom, try store.mountBlob(digest, from: other) {
                how = 2
            } else {
                try store.putBlob(digest, data)
            }
            tally.lock.lock()
            tally.descriptors[i] = descriptor
            switch how {
            case 1: if i > 0 { tally.reused += 1 }   // the config is not a layer
            case 2: if i > 0 { tally.mounted += 1 }
            default: tally.uploaded += data.count
            }
            tally.lock.unlock()
        }
        let descriptors = tally.descriptors.map { $0! }
        let manifest = ImageManifest(artifactType: MediaType.model, config: descriptors[0], layers: Array(descriptors[1...]))
        let manifestBytes = try CanonicalJSON.encode(manifest)
        let manifestDigest = Digest(of: manifestBytes)
        try store.putManifest(manifestBytes, mediaType: MediaType.imageManifest, reference: tag)
        var result = Result(manifest: manifestDigest, fileSize: file.fileSize, layers: descriptors.count - 1,
                            layersReused: tally.reused, layersMounted: tally.mounted,
                            bytesUploaded: tally.uploaded + manifestBytes.count)

        if let key = options.signingKey {
            let sequence = try options.sequence ?? (highestSequence(in: store) + 1)
            let statement = Statement(repository: store.repository, manifest: manifestDigest, file: fileDigest, sequence: sequence,
                                      tensors: try Release.tensorDigests(file), sections: Release.sectionDigests(file))
            let envelope = try CanonicalJSON.encode(try Signing.sign(statement, with: key))
            let empty = Data("{}".utf8)
            let emptyDigest = Digest(of: empty)
            if try !store.hasBlob(emptyDigest) { try store.putBlob(emptyDigest, empty) }
            try store.putBlob(Digest(of: envelope), envelope)
            let signature = ImageManifest(
                artifactType: MediaType.signature,
                config: Descriptor(mediaType: MediaType.empty, digest: emptyDigest, size: empty.count),
                layers: [Descriptor(mediaType: MediaType.dsse, digest: Digest(of: envelope), size: envelope.count)],
                subject: Descriptor(mediaType: MediaType.imageManifest, digest: manifestDigest, size: manifestBytes.count),
                annotations: [Annotation.sequence: String(sequence)])
            let signatureBytes = try CanonicalJSON.encode(signature)
            // Tagged by the referrers tag schema, which every registry serves; a registry with the
            // referrers API also lists it there through `subject`.
            try store.putManifest(signatureBytes, mediaType: MediaType.imageManifest, reference: signatureTag(manifestDigest))
            result.bytesUploaded += envelope.count + signatureBytes.count
            result.sequence = sequence
        }
        return result
    }

    static func signatureTag(_ manifest: Digest) -> String { "sha256-\(manifest.hex).sig" }

    /// The highest sequence among the repository's signature manifests (a hint for numbering).
    static func highestSequence(in store: ContentStore) throws -> Int {
        var highest = 0
        for tag in try store.tags() where tag.hasPrefix("sha256-") && tag.hasSuffix(".sig") {
            guard let data = try store.manifest(tag),
                  let manifest = try? JSONDecoder().decode(ImageManifest.self, from: data),
                  let sequence = manifest.annotations?[Annotation.sequence].flatMap({ Int($0) }) else { continue }
            highest = max(highest, sequence)
        }
        return highest
    }
}
