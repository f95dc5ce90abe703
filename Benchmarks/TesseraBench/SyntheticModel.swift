import Foundation
import Tessera

/// A generated model with every layout and quantization the format holds, for the demo and
/// for benchmarks until real models arrive through the ONNX importer. Weights are normally
/// distributed like trained weights; pruning and quantization here are the simplest honest
/// versions (magnitude, symmetric round-half-even), not the converter's.
struct SyntheticModel {
    var rng: Xorshift

    init(seed: UInt64) { rng = Xorshift(seed: seed) }

    mutating func normal(_ count: Int, std: Float = 0.05) -> [Float] {
        var out = [Float](repeating: 0, count: count)
        var i = 0
        while i < count {
            // Box-Muller: two normals per pair of uniforms.
            let u1 = max(rng.unit(), 1e-12), u2 = rng.unit()
            let r = (-2 * log(u1)).squareRoot() * std
            out[i] = r * cos(2 * .pi * u2)
            if i + 1 < count { out[i + 1] = r * sin(2 * .pi * u2) }
            i += 2
        }
        return out
    }

    /// `[K, N]` MatMul weight with the two largest magnitudes of every four along K kept.
    mutating func pruned24(_ k: Int, _ n: Int) -> [Float] {
        var w = normal(k * n)
        for column in 0 ..< n {
            for g in stride(from: 0, to: k, by: 4) {
                let idx = (g ..< g + 4).map { $0 * n + column }.sorted { abs(w[$0]) > abs(w[$1]) }
                for i in idx.dropFirst(2) { w[i] = 0 }
            }
        }
        return w
    }

    /// Unstructured magnitude pruning to `sparsity`.
    mutating func prunedUnstructured(_ count: Int, sparsity: Double) -> [Float] {
        var w = normal(count)
        let threshold = w.map(abs).sorted()[min(count - 1, Int(Double(count) * sparsity))]
        for i in w.indices where abs(w[i]) < threshold { w[i] = 0 }
        return w
    }

    /// Symmetric int8 per output channel (axis 1 of a `[K, N]` MatMul weight).
    static func int8PerChannel(_ name: String, _ w: [Float], k: Int, n: Int) -> Tensor {
        var scales = [Float](repeating: 0, count: n)
        for column in 0 ..< n {
            var m: Float = 0
            for row in 0 ..< k { m = max(m, abs(w[row * n + column])) }
            scales[column] = m / 127
        }
        let codes = (0 ..< k * n).map { i -> UInt8 in
            let s = scales[i % n]
            let q = s == 0 ? 0 : (w[i] / s).rounded(.toNearestOrEven)
            return UInt8(bitPattern: Int8(max(-128, min(127, q))))
        }
        return Tensor(name: name, dataType: .float, shape: [k, n], role: .matmulB, reductionAxis: 0,
                      storage: .dense(values: TensorBytes(codes)),
                      quantization: Quantization(codeType: .int8, granularity: .perAxis(axis: 1), scales: TensorBytes(float32: scales)))
    }

    /// uint4 with zero point 8, groups of `block` along K, float16 scales.
    static func uint4Grouped(_ name: String, _ w: [Float], k: Int, n: Int, block: Int) -> Tensor {
        let blocks = (k + block - 1) / block
        var scales = [Float](repeating: 0, count: blocks * n)
        for b in 0 ..< blocks {
            for column in 0 ..< n {
                var m: Float = 0
                for row in b * block ..< min(k, (b + 1) * block) { m = max(m, abs(w[row * n + column])) }
                scales[b * n + column] = Float(Float16(m / 7))
            }
        }
        var packed = [UInt8](repeating: 0, count: (k * n + 1) / 2)
        for i in 0 ..< k * n {
            let s = scales[(i / n / block) * n + i % n]
            let q = s == 0 ? 0 : (w[i] / s).rounded(.toNearestOrEven)
            let code = UInt8(max(0, min(15, q + 8)))
            packed[i / 2] |= i % 2 == 0 ? code : code << 4
        }
        let zeroPoints = [UInt8](repeating: 0x88, count: (blocks * n + 1) / 2).enumerated().map { i, b in
            // The unused high nibble of an odd count stays zero.
            (blocks * n) % 2 == 1 && i == (blocks * n) / 2 ? b & 0x0F : b
        }
        return Tensor(name: name, dataType: .float, shape: [k, n], role: .matmulB, reductionAxis: 0,
                      storage: .dense(values: TensorBytes(packed)),
                      quantization: Quantization(codeType: .uint4, scaleType: .float16,
                                                 granularity: .perGroup(axis: 0, blockSize: block),
                                                 scales: TensorBytes(littleEndian: scales.map { Float16($0).bitPattern }),
                                                 zeroPoints: TensorBytes(zeroPoints)))
    }

    static func dense(_ name: String, _ values: [Float], _ shape: [Int], role: WeightRole = .unknown, axis: Int? = nil) -> Tensor {
        Tensor(name: name, dataType: .float, shape: shape, role: role, reductionAxis: axis,
               storage: .dense(values: TensorBytes(float32: values)))
    }

    /// A small MLP-like model using every layout, plus `extraLayers` dense float32 layers of
    /// `layerSide` x `layerSide` to reach a target size.
    mutating func tensors(width: Int = 256, extraLayers: Int = 0, layerSide: Int = 1024) throws -> [Tensor] {
        let h = width
        var out: [Tensor] = [
            Self.dense("embed.weight", normal(1000 * 64), [1000, 64], role: .gatherData),
            try Self.dense("fc1.weight", pruned24(64, h), [64, h], role: .matmulB, axis: 0).encoded(as: .sparse24),
            Self.dense("fc1.bias", normal(h), [h]),
            try Self.dense("fc2.weight", prunedUnstructured(h * h, sparsity: 0.9), [h, h], role: .matmulB, axis: 0).encoded(as: .csr),
            Self.int8PerChannel("fc3.weight", normal(h * h), k: h, n: h),
            try Self.int8PerChannel("fc4.weight", pruned24(h, h), k: h, n: h).encoded(as: .sparse24),
            Self.uint4Grouped("fc5.weight", normal(h * 10), k: h, n: 10, block: 32),
            Self.dense("conv.weight", normal(16 * 8 * 3 * 3), [16, 8, 3, 3], role: .convWeight, axis: 1),
        ]
        for i in 0 ..< extraLayers {
            out.append(Self.dense("block\(i).weight", normal(layerSide * layerSide), [layerSide, layerSide], role: .matmulB, axis: 0))
        }
        return out
    }
}

/// xorshift64*: fast and seeded, good enough for synthetic weights.
struct Xorshift {
    var state: UInt64
    init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }
    mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 0x2545_F491_4F6C_DD1D
    }
    mutating func unit() -> Float { Float(next() >> 40) / Float(1 << 24) }
}
