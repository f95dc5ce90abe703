import Foundation
@testable import Tessera

/// SplitMix64: a small seeded generator so every random test is reproducible.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A fresh folder under the system temp dir, removed when the test is done with it.
final class TemporaryFolder: Sendable {
    let path: String
    init() {
        path = NSTemporaryDirectory() + "tessera-tests-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func file(_ name: String) -> String { path + "/" + name }
    var contents: [String] { (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] }
}

func readBytes(_ path: String) -> [UInt8] { Array(FileManager.default.contents(atPath: path)!) }
func writeBytes(_ bytes: [UInt8], _ path: String) { precondition(FileManager.default.createFile(atPath: path, contents: Data(bytes))) }

/// Builds random dense tensors whose absent elements (see `Tensor+Layout`) follow a mask, so
/// that any layout can store them.
struct TensorFactory {
    var rng: SeededRandom

    init(seed: UInt64) { rng = SeededRandom(seed: seed) }

    /// Random non-zero bits for one element of `type` (4-bit types use the low nibble).
    mutating func nonZeroElement(_ type: DataType) -> [UInt8] {
        let width = max(type.bitWidth / 8, 1)
        while true {
            var e = (0 ..< width).map { _ in UInt8.random(in: 0 ... 255, using: &rng) }
            if type.bitWidth == 4 { e[0] &= 0x0F }
            if e.contains(where: { $0 != 0 }) { return e }
        }
    }

    /// Which elements are absent: each with probability `zeroFraction`; if `axis` is given,
    /// every group of four along it keeps at most two elements (2:4-compatible).
    mutating func absentMask(shape: [Int], zeroFraction: Double, sparse24Axis axis: Int?) -> [Bool] {
        let geometry = try! TensorGeometry(shape: shape)
        var absent = (0 ..< geometry.elementCount).map { _ in Double.random(in: 0 ..< 1, using: &rng) < zeroFraction }
        if let axis {
            let view = geometry.sparse24(axis: axis)
            for row in 0 ..< view.rows {
                for group in 0 ..< view.groupsPerRow {
                    let members = (0 ..< 4).map { view.logicalIndex(row: row, k: group * 4 + $0) }
                    var present = members.filter { !absent[$0] }
                    present.shuffle(using: &rng)
                    for i in present.dropFirst(2) { absent[i] = true }
                }
            }
        }
        return absent
    }

    /// A dense, unquantized tensor of `type`.
    mutating func dense(name: String, type: DataType, shape: [Int], zeroFraction: Double = 0.5,
                        reductionAxis: Int? = nil, sparse24Compatible: Bool = false) -> Tensor {
        let absent = absentMask(shape: shape, zeroFraction: zeroFraction,
                                sparse24Axis: sparse24Compatible ? reductionAxis : nil)
        var values = try! PackedBuilder(type, count: absent.count)
        for (i, isAbsent) in absent.enumerated() where !isAbsent {
            let e = nonZeroElement(type)
            e.withUnsafeBytes { values.set(i, from: PackedElements($0, type), 0) }
        }
        return Tensor(name: name, dataType: type, shape: shape, role: reductionAxis == nil ? .unknown : .matmulB,
                      reductionAxis: reductionAxis, storage: .dense(values: TensorBytes(values.bytes)))
    }

    /// A dense quantized tensor (logical float32) with random codes, scales and zero points.
    mutating func quantized(name: String, shape: [Int], codeType: DataType, scaleType: DataType,
                            granularity: QuantizationGranularity, zeroPoints: Bool, zeroFraction: Double = 0.5,
                            reductionAxis: Int? = nil, sparse24Compatible: Bool = false) -> Tensor {
        let geometry = try! TensorGeometry(shape: shape)
        let scaleCount = geometry.scaleCount(granularity)
        let codeBits = codeType.bitWidth
        let codeRange: ClosedRange<UInt8> = codeBits == 4 ? 0 ... 15 : 0 ... 255
        var zp = try! PackedBuilder(codeType, count: scaleCount)
        var zpCodes = [UInt8](repeating: 0, count: scaleCount)
        if zeroPoints {
            for s in 0 ..< scaleCount {
                zpCodes[s] = UInt8.random(in: codeRange, using: &rng)
                zp.setSmall(s, zpCodes[s])
            }
        }
        let scales: TensorBytes
        if scaleType == .float {
            scales = TensorBytes(float32: (0 ..< scaleCount).map { _ in Float.random(in: 0.001 ... 0.1, using: &rng) })
        } else {
            scales = TensorBytes(littleEndian: (0 ..< scaleCount).map { _ in Float16(Float.random(in: 0.001 ... 0.1, using: &rng)).bitPattern })
        }
        let absent = absentMask(shape: shape, zeroFraction: zeroFraction,
                                sparse24Axis: sparse24Compatible ? reductionAxis : nil)
        let indexer = ScaleIndexer(granularity, geometry: geometry)
        var codes = try! PackedBuilder(codeType, count: absent.count)
        for (i, isAbsent) in absent.enumerated() {
            let z = zpCodes[indexer.index(i)]
            var code = z
            if !isAbsent { while code == z { code = UInt8.random(in: codeRange, using: &rng) } }
            codes.setSmall(i, code)
        }
        let q = Quantization(codeType: codeType, scaleType: scaleType, granularity: granularity, scales: scales,
                             zeroPoints: zeroPoints ? TensorBytes(zp.bytes) : nil)
        return Tensor(name: name, dataType: .float, shape: shape, role: .matmulB, reductionAxis: reductionAxis,
                      storage: .dense(values: TensorBytes(codes.bytes)), quantization: q)
    }
}

extension PackedBuilder {
    /// Set element `i` to the code `v` (at most 8 bits; 4-bit builders take its low nibble).
    mutating func setSmall(_ i: Int, _ v: UInt8) {
        [v].withUnsafeBytes { set(i, from: PackedElements($0, bitWidth == 4 ? .uint4 : .uint8), 0) }
    }
}

/// Float arrays compared by bit pattern (NaNs included).
func bits(_ a: [Float]) -> [UInt32] { a.map(\.bitPattern) }

/// A zstd frame of `bytes` (level 3).
func zstd(_ bytes: [UInt8]) -> [UInt8] { try! bytes.withUnsafeBytes { try Zstd.compress($0, level: 3) } }
