import Crypto
import Foundation
import Testing
import Tessera
@testable import TesseraDistribution

/// A distribution-form file of float32 tensors with `sizes` elements, named t0, t1, … unless
/// `names` says; each tensor's values depend only on its name.
private func writeModel(_ path: String, sizes: [Int], names: [String]? = nil) throws {
    let tensors = try sizes.enumerated().map { i, n -> Tensor in
        var state = Checksum.xxh3(Array((names?[i] ?? "t\(i)").utf8))
        let values = (0 ..< n).map { _ -> Float in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int32(truncatingIfNeeded: state >> 33)) / 1e9
        }
        let t = Tensor(name: names?[i] ?? "t\(i)", dataType: .float, shape: [n], storage: .dense(values: TensorBytes(float32: values)))
        try t.validate()
        return t
    }
    try TessWriter.write(tensors, sections: [try .metadata(["name": "test"])], to: path,
                         options: WriteOptions(codec: .zstd, replaceExisting: true))
}

private final class Folder {
    let path = NSTemporaryDirectory() + "tessera-dist-" + UUID().uuidString
    init() { try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func file(_ name: String) -> String { path + "/" + name }
}

@Suite struct ArtifactTests {
    @Test func theIndexAndTheLayersRebuildTheFileByteForByte() throws {
        let folder = Folder()
        let path = folder.file("m.tess")
        try writeModel(path, sizes: [40_000, 10, 300, 20_000, 7, 1, 50_000, 3])
        let file = try TessFile.open(path)
        let artifact = try ModelArtifact(file: file)
        #expect(artifact.tensorRuns.first == 0 ..< 1)   // 160 KB: a layer of its own
        var rebuilt = [UInt8](repeating: 0, count: file.fileSize)
        rebuilt.replaceSubrange(0 ..< 64, with: artifact.headerAndIndex[0 ..< 64])
        rebuilt.replaceSubrange(file.header.indexOffset..., with: artifact.headerAndIndex[64...])
        for run in artifact.tensorRuns {
            let layer = [UInt8](artifact.layerBytes(run, from: file))
            #expect(layer.count == artifact.layerSize(run))
            for (from, to, count) in artifact.placements(run) { rebuilt.replaceSubrange(to ..< to + count, with: layer[from ..< from + count]) }
        }
        #expect(rebuilt == readFile(path))
        // A pulled manifest's counts give the same runs.
        let again = try ModelArtifact(headerAndIndex: artifact.headerAndIndex, tensorCounts: artifact.tensorRuns.map(\.count))
        #expect(again.tensorRuns == artifact.tensorRuns)
        #expect(throws: DistributionError.self) { try ModelArtifact(headerAndIndex: artifact.headerAndIndex, tensorCounts: [file.tensors.count + 1]) }
    }

    @Test func addingASmallTensorDisturbsOnlyItsOwnPack() throws {
        let folder = Folder()
        let names = (0 ..< 400).map { "layer.\($0 / 4).w\($0 % 4)" }
        let sizes = (0 ..< 400).map { 200 + ($0 * 37) % 900 }
        try writeModel(folder.file("a.tess"), sizes: sizes, names: names)
        var names2 = names, sizes2 = sizes
        names2.insert("layer.50.extra", at: 201)
        sizes2.insert(500, at: 201)
        try writeModel(folder.file("b.tess"), sizes: sizes2, names: names2)
        let a = try TessFile.open(folder.file("a.tess")), b = try TessFile.open(folder.file("b.tess"))
        let runsA = try ModelArtifact(file: a).tensorRuns.map { $0.map { a.tensors[$0].name } }
        let runsB = try ModelArtifact(file: b).tensorRuns.map { $0.map { b.tensors[$0].name } }
        #expect(runsA.count > 10)
        let changed = Set(runsB.map { $0.joined(separator: ",") }).subtracting(runsA.map { $0.joined(separator: ",") })
        #expect(changed.count == 1)
        #expect(changed.first?.contains("layer.50.extra") == true)
    }

    @Test func aSkeletonRefusesACorruptIndexOrAWrongLength() throws {
        let folder = Folder()
        let path = folder.file("m.tess")
        try writeModel(path, sizes: [100, 200])
        let bytes = try TessFile.open(path).headerAndIndex
        var flipped = bytes
        flipped[bytes.count - 3] ^= 1
        #expect { try flipped.withUnsafeBytes { try FileSkeleton(headerAndIndex: $0) } } throws: { ($0 as? TessError)?.code == .indexChecksum }
        let short = Array(bytes.dropLast())
        #expect { try short.withUnsafeBytes { try FileSkeleton(headerAndIndex: $0) } } throws: { ($0 as? TessError)?.code == .fileSize }
        #expect { try [UInt8](repeating: 0, count: 10).withUnsafeBytes { try FileSkeleton(headerAndIndex: $0) } } throws: { ($0 as? TessError)?.code == .truncated }
    }

    @Test func aZeroCopyFileIsRefusedByTheArtifactLayout() throws {
        let folder = Folder()
        let path = folder.file("m.tess")
        try TessWriter.write([Tensor(name: "x", dataType: .float, shape: [2], storage: .dense(values: TensorBytes(float32: [1, 2])))], to: path)
        #expect { try ModelArtifact(file: try TessFile.open(path)) } throws: { "\($0)".contains("tessera pack") }
    }
}

private func readFile(_ path: String) -> [UInt8] { Array(FileManager.default.contents(atPath: path)!) }

@Suite struct ReferenceAndAuthTests {
    @Test func referencesNameHostRepositoryAndTagOrDigest() throws {
        let r = try Reference(parsing: "registry.example:5000/team/minilm:v2")
        #expect(r.host == "registry.example:5000" && r.repository == "team/minilm" && r.reference == "v2")
        #expect(try Reference(parsing: "h/m").reference == "latest")
        let d = "sha256:" + String(repeating: "ab", count: 32)
        #expect(try Reference(parsing: "h/m@\(d)").reference == d)
        for bad in ["noslash", "h/Upper:v1", "h/m:bad tag", "h/m@sha256:12", "h//m:v1", "/m:v1"] {
            #expect(throws: DistributionError.self, "\(bad)") { try Reference(parsing: bad) }
        }
    }

    @Test func challengesAreParsedWithQuotedCommas() {
        let (scheme, p) = RegistryClient.parseChallenge(#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push""#)
        #expect(scheme == "bearer")
        #expect(p == ["realm": "https://auth.example/token", "service": "reg", "scope": "repository:a/b:pull,push"])
        #expect(RegistryClient.parseChallenge(#"Basic realm="x""#).0 == "basic")
    }

    @Test func credentialsComeFromTheEnvironmentThenADockerConfig() throws {
        let folder = Folder()
        let config = folder.file("config.json")
        try Data(#"{"auths":{"reg:5000":{"auth":"\#(Data("u:p:w".utf8).base64EncodedString())"}}}"#.utf8).write(to: URL(fileURLWithPath: config))
        let fromFile = try Credentials.lookup(host: "reg:5000", file: config, environment: [:])
        #expect(fromFile?.username == "u" && fromFile?.password == "p:w")
        #expect(try Credentials.lookup(host: "other", file: config, environment: [:]) == nil)
        let fromEnv = try Credentials.lookup(host: "reg:5000", file: config, environment: ["TESSERA_REGISTRY_USERNAME": "e", "TESSERA_REGISTRY_PASSWORD": "f"])
        #expect(fromEnv?.username == "e")
    }
}

@Suite struct SigningTests {
    private func statement(sequence: Int = 3, repository: String = "team/m") -> Statement {
        Statement(repository: repository, manifest: Digest(of: Data("m".utf8)), file: Digest(of: Data("f".utf8)), sequence: sequence,
                  tensors: [.init(name: "w", sha256: Digest(of: Data("w".utf8)).hex)], sections: [])
    }

    @Test func aSignatureVerifiesOnlyWithItsKeyAndItsPayload() throws {
        let (privatePEM, publicPEM) = Signing.generateKey()
        let key = try P256.Signing.PrivateKey(pemRepresentation: privatePEM)
        let envelope = try Signing.sign(statement(), with: key)
        let trusted = try P256.Signing.PublicKey(pemRepresentation: publicPEM)
        #expect(try Signing.verify(envelope, trusted: [trusted]).predicate.sequence == 3)
        let other = try P256.Signing.PublicKey(pemRepresentation: Signing.generateKey().publicPEM)
        #expect { try Signing.verify(envelope, trusted: [other]) } throws: { ($0 as? DistributionError)?.kind == .untrusted }
        // Any change to the payload breaks it (here: the sequence, a rollback in disguise).
        var forged = envelope
        forged.payload = try CanonicalJSON.encode(statement(sequence: 9)).base64EncodedString()
        #expect { try Signing.verify(forged, trusted: [trusted]) } throws: { ($0 as? DistributionError)?.kind == .untrusted }
        // Several trusted keys (rotation): any one will do.
        #expect(try Signing.verify(envelope, trusted: [other, trusted]).predicate.repository == "team/m")
    }

    @Test func theSignedBytesAreDSSEPreAuthenticationEncoding() {
        #expect(String(decoding: Signing.pae("t/x", Data("hello".utf8)), as: UTF8.self) == "DSSEv1 3 t/x 5 hello")
    }

    @Test func theTrustStateRefusesRollbackAndASequenceReused() throws {
        let m = Digest(of: Data("m".utf8)), other = Digest(of: Data("other".utf8))
        var state = TrustState()
        state.repositories["team/m"] = .init(sequence: 3, manifest: m.description)
        try state.check(statement(sequence: 3), manifest: m)   // reinstalling the same release
        try state.check(statement(sequence: 4), manifest: other)
        #expect { try state.check(statement(sequence: 2), manifest: other) } throws: { "\($0)".contains("rollback refused") }
        #expect { try state.check(statement(sequence: 3), manifest: other) } throws: { "\($0)".contains("another manifest") }
        try state.check(statement(sequence: 1, repository: "team/new"), manifest: other)
    }
}

@Suite struct OCILayoutTests {
    @Test func manifestsAreTaggedAndBlobsCheckedOnTheWayOut() throws {
        let folder = Folder()
        let store = try OCILayoutStore(folder: folder.file("layout"), repository: "m", create: true)
        let blob = Data("layer".utf8)
        try store.putBlob(Digest(of: blob), blob)
        let manifest = Data(#"{"schemaVersion":2}"#.utf8)
        try store.putManifest(manifest, mediaType: MediaType.imageManifest, reference: "v1")
        try store.putManifest(manifest, mediaType: MediaType.imageManifest, reference: "v1")
        #expect(try store.tags() == ["v1"])
        #expect(try store.manifest("v1") == manifest)
        #expect(try store.manifest(Digest(of: manifest).description) == manifest)
        #expect(try store.manifest("v2") == nil)
        // A blob altered on disk is caught on the way out, and not left behind.
        try Data("LAYER".utf8).write(to: URL(fileURLWithPath: folder.file("layout/blobs/sha256/\(Digest(of: blob).hex)")))
        let out = folder.file("out")
        #expect { try store.fetchBlob(Descriptor(mediaType: "x", digest: Digest(of: blob), size: blob.count), to: out) } throws: {
            "\($0)".contains("corrupt or was altered")
        }
        #expect(!FileManager.default.fileExists(atPath: out))
        #expect(throws: DistributionError.self) { try OCILayoutStore(folder: folder.file("none"), repository: "m", create: false) }
    }
}
