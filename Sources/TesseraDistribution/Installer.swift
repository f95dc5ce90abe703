@preconcurrency import Crypto
import Foundation
import Tessera

/// `tessera pull`: a model artifact from a store into a file that appears complete and checked,
/// or not at all.
///
/// Order of trust: the manifest's digest; with trusted keys, the signed statement (subject =
/// this manifest, this repository, no rollback); every blob's size and digest; the rebuilt file
/// through the hardened reader (structure, every buffer checksum); its SHA-256 against the
/// config; every tensor's digest against the statement. Only then is the output put in place
/// (atomically, with its signature beside it) and the trust state advanced.
///
/// Blobs download into a work folder beside the output (`.NAME.pull`), kept when a transfer
/// fails so the next pull resumes them, and removed when the pull succeeds or finds bad content.
public enum Installer {
    public struct Options: Sendable {
        public var output: String
        public var replaceExisting = false
        /// Write the zero-copy form instead of the exact distribution form.
        public var unpack = false
        public var jobs = 4
        /// An installed version: tensors whose stored bytes match a layer come from it, not the network.
        public var base: String?
        /// Only tensors whose names match one of these shell globs.
        public var tensorGlobs: [String] = []
        /// Keys a release must be signed by; empty: signatures are not checked.
        public var trusted: [P256.Signing.PublicKey] = []
        public var trustStatePath = TrustState.defaultPath
        public init(output: String) { self.output = output }
    }

    public struct Result: Sendable {
        public var manifest: Digest
        public var fileSize: Int
        public var layers: Int
        public var layersDownloaded: Int
        public var layersFromBase: Int
        public var bytesDownloaded: Int
        public var tensors: Int
        public var sequence: Int?
    }

    public static func pull(_ reference: String, from store: ContentStore, options: Options) throws -> Result {
        let fm = FileManager.default
        let output = options.output
        if !options.replaceExisting, fm.fileExists(atPath: output) {
            throw DistributionError.usage("\(output): already exists (use --force to replace it)")
        }
        guard let manifestBytes = try store.manifest(reference) else {
            throw DistributionError.registry("\(store.location): no manifest '\(reference)'")
        }
        let manifestDigest = Digest(of: manifestBytes)
        let manifest = try CanonicalJSON.decode(ImageManifest.self, from: manifestBytes, what: "manifest \(reference)")
        guard manifest.artifactType == MediaType.model, manifest.config.mediaType == MediaType.config,
              let indexLayer = manifest.layers.first, indexLayer.mediaType == MediaType.index,
              manifest.layers.dropFirst().allSatisfy({ $0.mediaType == MediaType.tensors }) else {
            throw DistributionError.badArtifact("\(store.location):\(reference) is not a Tessera model (artifactType \(manifest.artifactType ?? "none"))")
        }

        let outputFolder = (output as NSString).deletingLastPathComponent
        let work = (outputFolder.isEmpty ? "." : outputFolder) + "/." + (output as NSString).lastPathComponent + ".pull"
        do { try fm.createDirectory(atPath: work, withIntermediateDirectories: true) } catch {
            throw DistributionError.io("\(work): cannot create the download folder: \(error.localizedDescription)")
        }
        do {
            let result = try pull(manifest, digest: manifestDigest, reference: reference, from: store, work: work, options: options)
            try? fm.removeItem(atPath: work)
            return result
        } catch let error as DistributionError where error.kind == .network || error.kind == .io {
            throw error   // keep the work folder: the next pull resumes it
        } catch {
            try? fm.removeItem(atPath: work)
            throw error
        }
    }

    private static func pull(_ manifest: ImageManifest, digest manifestDigest: Digest, reference: String,
                             from store: ContentStore, work: String, options: Options) throws -> Result {
        // The signature first: nothing big is fetched for an untrusted release.
        var state = TrustState()
        var release: (statement: Statement, envelope: Data)? = nil
        if !options.trusted.isEmpty {
            state = try TrustState.load(options.trustStatePath)
            release = try trustedRelease(manifestDigest, reference: reference, from: store, work: work, trusted: options.trusted, state: state)
        }
        let statement = release?.statement

        let configBytes = try store.smallBlob(manifest.config, limit: 1 << 20, in: work)
        let config = try CanonicalJSON.decode(ModelConfig.self, from: configBytes, what: "model config")
        let indexLayer = manifest.layers[0]
        let headerAndIndex = try store.smallBlob(indexLayer, limit: Limits.maxIndexBytes + FileHeader.size, in: work)
        let counts = try manifest.layers.dropFirst().map { layer -> Int in
            guard let text = layer.annotations?[Annotation.tensorCount], let n = Int(text) else {
                throw DistributionError.badArtifact("layer \(layer.digest.short) lacks its \(Annotation.tensorCount) annotation")
            }
            return n
        }
        let artifact: ModelArtifact
        do { artifact = try ModelArtifact(headerAndIndex: Array(headerAndIndex), tensorCounts: counts) } catch let e as TessError {
            throw DistributionError.badArtifact("the index layer of \(store.location):\(reference): \(e.description)")
        }
        let layers = Array(manifest.layers.dropFirst())
        for (layer, run) in zip(layers, artifact.tensorRuns) where layer.size != artifact.layerSize(run) {
            throw DistributionError.badArtifact("layer \(layer.digest.short) is \(layer.size) bytes, its tensors store \(artifact.layerSize(run))")
        }
        guard artifact.skeleton.fileSize == config.file.size else {
            throw DistributionError.badArtifact("the index describes a \(artifact.skeleton.fileSize)-byte file, the config \(config.file.size)")
        }

        // Which tensors, hence which layers.
        var selected: Set<Int>? = nil
        if !options.tensorGlobs.isEmpty {
            let picked = artifact.skeleton.tensors.indices.filter { t in
                options.tensorGlobs.contains { fnmatch($0, artifact.skeleton.tensors[t].name, 0) == 0 }
            }
            guard !picked.isEmpty else {
                throw DistributionError.usage("no tensor of \(store.location):\(reference) matches \(options.tensorGlobs.joined(separator: " or "))")
            }
            selected = Set(picked)
        }
        let needed = artifact.tensorRuns.indices.filter { l in selected.map { s in artifact.tensorRuns[l].contains { s.contains($0) } } ?? true }

        // Layers the installed file already holds, byte for byte.
        var fromBase = Set<Int>()
        if let base = options.base {
            fromBase = try layersFromBase(base, artifact: artifact, layers: layers, needed: needed, zstdLevel: config.zstdLevel, work: work)
        }
        let toFetch = needed.filter { !fromBase.contains($0) }
        try parallelFor(toFetch.count, jobs: options.jobs) { k in
            let l = toFetch[k]
            let path = work + "/" + layers[l].digest.hex
            let partial = path + ".partial"
            if FileManager.default.fileExists(atPath: path) { return }
            try store.fetchBlob(layers[l], to: partial)
            guard rename(partial, path) == 0 else { throw DistributionError.io("\(path): cannot rename a downloaded blob") }
        }

        // Rebuild: header and index, each layer's buffers at their offsets; holes for layers not pulled.
        let staged = work + "/model.tess"
        try assemble(artifact, layers: layers, needed: needed, work: work, into: staged)
        let file: TessFile
        do { file = try TessFile.open(staged) } catch let e as TessError {
            throw DistributionError.badArtifact("the rebuilt file is not valid: \(e.description)")
        }
        if selected == nil {
            let digest = try Digest(ofFile: staged)
            guard digest.hex == config.file.sha256 else {
                throw DistributionError.badArtifact("the rebuilt file hashes to \(digest), the config says sha256:\(config.file.sha256)")
            }
        }
        do {
            // Every buffer checksum of what is kept, and the signed digests.
            if let statement {
                if selected == nil, statement.subject.count < 2 || statement.subject[1].digest["sha256"] != config.file.sha256 {
                    throw DistributionError.untrusted("the signed statement names another file than the manifest's; refused")
                }
                try Release.check(file, against: statement, only: selected)
            } else {
                for t in file.tensors.indices where selected?.contains(t) ?? true { _ = try file.tensor(t) }
            }
        } catch let e as TessError {
            throw DistributionError.badArtifact("the rebuilt file: \(e.description)")
        }

        // Put the output (and its signature) in place together.
        let group = OutputGroup(inputs: [options.base].compactMap { $0 })
        do {
            if selected != nil || options.unpack {
                let writer = try TessWriter(path: options.output, options: WriteOptions(
                    alignment: file.header.alignment, codec: options.unpack ? .none : .zstd,
                    zstdLevel: config.zstdLevel ?? 3, replaceExisting: options.replaceExisting), group: group)
                for t in file.tensors.indices where selected?.contains(t) ?? true { try writer.append(try file.tensor(t)) }
                // A subset keeps the metadata but not the graph, which names tensors it lacks.
                try writer.finish(sections: selected == nil ? file.sections : file.sections.filter { $0.kind != Section.Kind.graph.rawValue })
            } else {
                let out = try group.file(options.output, replaceExisting: options.replaceExisting)
                try copy(staged, into: out)
            }
            if let envelope = release?.envelope {
                let sig = try group.file(options.output + ".sig", replaceExisting: true)
                try envelope.withUnsafeBytes { try sig.write($0) }
            }
            try group.commit()
        } catch let e as TessError {
            group.discard()
            throw DistributionError.io(e.description)
        }
        if let statement {
            state.repositories[statement.predicate.repository] = .init(sequence: statement.predicate.sequence, manifest: manifestDigest.description)
            try state.save(options.trustStatePath)
        }
        let size = (try? FileManager.default.attributesOfItem(atPath: options.output)[.size] as? Int) ?? 0
        return Result(manifest: manifestDigest, fileSize: size, layers: manifest.layers.count,
                      layersDownloaded: toFetch.count, layersFromBase: fromBase.count,
                      bytesDownloaded: toFetch.reduce(0) { $0 + layers[$1].size } + manifest.config.size + manifest.layers[0].size,
                      tensors: selected?.count ?? file.tensors.count, sequence: statement?.predicate.sequence)
    }

    /// The release statement signed for `manifest` by a trusted key, for this repository, and no
    /// older than what `state` records; with the envelope's bytes (kept beside the output).
    private static func trustedRelease(_ manifest: Digest, reference: String, from store: ContentStore, work: String,
                                       trusted: [P256.Signing.PublicKey], state: TrustState) throws -> (Statement, Data) {
        guard let signatureBytes = try store.manifest(Publisher.signatureTag(manifest)) else {
            throw DistributionError.untrusted("\(store.location):\(reference) is not signed; refused (--trust requires a signed release)")
        }
        let signature = try CanonicalJSON.decode(ImageManifest.self, from: signatureBytes, what: "signature manifest")
        guard signature.subject?.digest == manifest, let layer = signature.layers.first, layer.mediaType == MediaType.dsse else {
            throw DistributionError.untrusted("the signature of \(store.location):\(reference) is not a Tessera signature of this manifest")
        }
        let bytes = try store.smallBlob(layer, limit: OCILimits.maxSmallBlobBytes, in: work)
        let envelope = try CanonicalJSON.decode(Envelope.self, from: bytes, what: "signature envelope")
        let statement = try Signing.verify(envelope, trusted: trusted)
        guard statement.manifestDigest == manifest.hex else {
            throw DistributionError.untrusted("the signed statement names manifest \(statement.manifestDigest ?? "none"), not \(manifest); refused")
        }
        guard statement.predicate.repository == store.repository else {
            throw DistributionError.untrusted("the release is signed for repository '\(statement.predicate.repository)', not '\(store.repository)'; refused")
        }
        try state.check(statement, manifest: manifest)
        return (statement, bytes)
    }

    /// Layers whose bytes can be rebuilt from `base`, written into `work` under their digests.
    /// A tensor is taken from the base when its buffers there decode to the same checksums; a
    /// base in the zero-copy form is packed first at the level the release was packed with.
    private static func layersFromBase(_ basePath: String, artifact: ModelArtifact, layers: [Descriptor], needed: [Int],
                                       zstdLevel: Int?, work: String) throws -> Set<Int> {
        var base: TessFile
        do { base = try TessFile.open(basePath) } catch let e as TessError { throw DistributionError.usage("--base: \(e.description)") }
        if base.buffers.contains(where: { $0.codec == .none }) {
            let packed = work + "/base.tess"
            try? FileManager.default.removeItem(atPath: packed)
            do {
                try base.rewrite(to: packed, options: WriteOptions(alignment: base.header.alignment, codec: .zstd, zstdLevel: zstdLevel ?? 3))
                base = try TessFile.open(packed)
            } catch let e as TessError { throw DistributionError.io("--base: \(e.description)") }
        }
        var taken = Set<Int>()
        for l in needed {
            let path = work + "/" + layers[l].digest.hex
            var data = Data(capacity: layers[l].size)
            var usable = true
            for t in artifact.tensorRuns[l] where usable {
                let entry = artifact.skeleton.tensors[t]
                guard let bt = base.index(of: entry.name) else { usable = false; break }
                let baseBuffers = base.tensors[bt].buffers
                guard baseBuffers.count == entry.buffers.count else { usable = false; break }
                for ((_, b), (_, bb)) in zip(entry.buffers, baseBuffers) {
                    let want = artifact.skeleton.buffers[b], have = base.buffers[bb]
                    guard want.checksum == have.checksum, want.storedLength == have.storedLength, want.codec == have.codec else { usable = false; break }
                    base.storedBytes(ofBuffer: bb).withUnsafeBytes { data.append(contentsOf: $0) }
                }
            }
            guard usable, Digest(of: data) == layers[l].digest else { continue }
            guard FileManager.default.createFile(atPath: path, contents: data) else { throw DistributionError.io("\(path): cannot write") }
            taken.insert(l)
        }
        return taken
    }

    private static func assemble(_ artifact: ModelArtifact, layers: [Descriptor], needed: [Int], work: String, into path: String) throws {
        let fm = FileManager.default
        try? fm.removeItem(atPath: path)
        guard fm.createFile(atPath: path, contents: nil), let out = FileHandle(forWritingAtPath: path) else {
            throw DistributionError.io("\(path): cannot create")
        }
        defer { try? out.close() }
        do {
            try out.truncate(atOffset: UInt64(artifact.skeleton.fileSize))
            let headerAndIndex = artifact.headerAndIndex
            try out.seek(toOffset: 0)
            try out.write(contentsOf: headerAndIndex[0 ..< FileHeader.size])
            try out.seek(toOffset: UInt64(artifact.skeleton.header.indexOffset))
            try out.write(contentsOf: headerAndIndex[FileHeader.size...])
            for l in needed {
                let blob = try MappedFile(path: work + "/" + layers[l].digest.hex)
                for (from, to, count) in artifact.placements(artifact.tensorRuns[l]) {
                    try out.seek(toOffset: UInt64(to))
                    try out.write(contentsOf: UnsafeRawBufferPointer(rebasing: blob.bytes[from ..< from + count]))
                }
            }
        } catch let e as TessError {
            throw DistributionError.io(e.description)
        }
    }

    private static func copy(_ path: String, into out: AtomicFile) throws {
        let map = try MappedFile(path: path)
        var at = 0
        while at < map.bytes.count {
            let n = min(8 << 20, map.bytes.count - at)
            try out.write(UnsafeRawBufferPointer(rebasing: map.bytes[at ..< at + n]))
            at += n
        }
    }
}
