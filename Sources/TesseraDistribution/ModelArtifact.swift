import Foundation
import Tessera

/// A `.tess` file in the distribution form, cut into OCI blobs ("tess-oci v1", spec/DISTRIBUTION.md).
///
/// - layer 0 is the header and the index (which holds the sections): everything but the buffers;
/// - every later layer is a run of consecutive tensors (index order): the stored bytes of each
///   tensor's buffers, in the tensor's buffer order, concatenated. A tensor whose stored bytes
///   reach `ownLayerBytes` is a layer of its own; smaller ones share *pack* layers, cut where a
///   tensor's name hashes to a cut point, so adding or removing a tensor disturbs only its pack.
///
/// Buffer offsets are fixed by FORMAT.md §4, so the index and the layers rebuild the exact file.
/// A layer's bytes depend only on its tensors, so a tensor unchanged between versions is the same
/// blob, which the registry stores and sends once.
public struct ModelArtifact: Sendable {
    /// Tensors with at least this many stored bytes get a layer of their own.
    public static let ownLayerBytes = 64 << 10
    /// A pack is closed once it holds this many bytes.
    public static let maxPackBytes = 1 << 20
    /// A pack is never cut by the name hash below this size, so tiny tensors share layers.
    public static let minPackBytes = 16 << 10
    /// Most layers one manifest may list: about 250 bytes each keeps a manifest near 1 MB,
    /// well under the 4 MiB that registries accept.
    public static let maxLayers = 4000

    public let skeleton: FileSkeleton
    public let headerAndIndex: [UInt8]
    /// Tensor ranges of layers 1...
    public let tensorRuns: [Range<Int>]

    /// The file's cut into layers. The file must be in the distribution form (every buffer compressed).
    public init(file: TessFile) throws {
        let bytes = file.headerAndIndex
        try self.init(headerAndIndex: bytes, skeleton: try bytes.withUnsafeBytes { try FileSkeleton(headerAndIndex: $0) })
        if let plain = skeleton.buffers.firstIndex(where: { $0.codec == .none && $0.storedLength > 0 }) {
            throw DistributionError.usage("\(file.path): buffer \(plain) is not compressed; only the distribution form is pushed (tessera pack)")
        }
    }

    init(headerAndIndex: [UInt8], skeleton: FileSkeleton) throws {
        self.headerAndIndex = headerAndIndex
        self.skeleton = skeleton
        tensorRuns = Self.cut(skeleton)
        guard tensorRuns.count + 1 <= Self.maxLayers else {
            throw DistributionError.usage("the file would need \(tensorRuns.count + 1) layers, over the limit of \(Self.maxLayers)")
        }
    }

    /// Rebuild from a pulled manifest: the index layer's bytes and each tensor layer's count.
    public init(headerAndIndex: [UInt8], tensorCounts: [Int]) throws {
        let skeleton = try headerAndIndex.withUnsafeBytes { try FileSkeleton(headerAndIndex: $0) }
        self.headerAndIndex = headerAndIndex
        self.skeleton = skeleton
        var runs: [Range<Int>] = []
        var start = 0
        for count in tensorCounts {
            guard count >= 1, count <= skeleton.tensors.count - start else {
                throw DistributionError.badArtifact("the manifest's layers do not cover the index's \(skeleton.tensors.count) tensors one by one")
            }
            runs.append(start ..< start + count)
            start += count
        }
        guard start == skeleton.tensors.count else {
            throw DistributionError.badArtifact("the manifest's layers hold \(start) tensors, the index has \(skeleton.tensors.count)")
        }
        tensorRuns = runs
    }

    public func storedBytes(ofTensor t: Int) -> Int { Self.storedBytes(skeleton, t) }

    static func storedBytes(_ s: FileSkeleton, _ t: Int) -> Int {
        s.tensors[t].buffers.reduce(0) { $0 + s.buffers[$1.buffer].storedLength }
    }

    /// Bytes of the tensor layer for `run`.
    public func layerSize(_ run: Range<Int>) -> Int { run.reduce(0) { $0 + storedBytes(ofTensor: $1) } }

    /// The layer's bytes, copied from `file` (whose index is this artifact's).
    public func layerBytes(_ run: Range<Int>, from file: TessFile) -> Data {
        var data = Data(capacity: layerSize(run))
        for t in run {
            for (_, b) in skeleton.tensors[t].buffers {
                file.storedBytes(ofBuffer: b).withUnsafeBytes { data.append(contentsOf: $0) }
            }
        }
        return data
    }

    /// Where a layer's bytes go in the file: (offset in the layer, offset in the file, length).
    public func placements(_ run: Range<Int>) -> [(from: Int, to: Int, count: Int)] {
        var out: [(Int, Int, Int)] = []
        var at = 0
        for t in run {
            for (_, b) in skeleton.tensors[t].buffers {
                let entry = skeleton.buffers[b]
                out.append((at, entry.offset, entry.storedLength))
                at += entry.storedLength
            }
        }
        return out
    }

    public func title(_ run: Range<Int>) -> String {
        let name = Self.sanitized(skeleton.tensors[run.lowerBound].name)
        return run.count == 1 ? "\(name).tensor" : "\(name)+\(run.count - 1).tensors"
    }

    /// Consecutive runs: big tensors alone, small ones packed and cut at content-defined points.
    static func cut(_ s: FileSkeleton) -> [Range<Int>] {
        var runs: [Range<Int>] = []
        var packStart: Int? = nil
        var packBytes = 0
        func closePack(_ end: Int) {
            if let start = packStart { runs.append(start ..< end) }
            packStart = nil
            packBytes = 0
        }
        for (t, entry) in s.tensors.enumerated() {
            let bytes = storedBytes(s, t)
            if bytes >= ownLayerBytes {
                closePack(t)
                runs.append(t ..< t + 1)
                continue
            }
            if packStart == nil { packStart = t }
            packBytes += bytes
            let cutHere = Checksum.xxh3(Array(entry.name.utf8)) % 4 == 0
            if packBytes >= maxPackBytes || (packBytes >= minPackBytes && cutHere) { closePack(t + 1) }
        }
        closePack(s.tensors.count)
        return runs
    }

    /// A file name from a tensor name: letters, digits, '.', '_' and '-' kept, the rest '_'.
    static func sanitized(_ name: String) -> String {
        let kept = name.unicodeScalars.prefix(120).map { c -> Character in
            c.isASCII && (CharacterSet.alphanumerics.contains(c) || "._-".unicodeScalars.contains(c)) ? Character(c) : "_"
        }
        return String(kept)
    }
}
