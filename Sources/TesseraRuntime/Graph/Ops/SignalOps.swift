import Foundation
import Tessera

/// DFT, STFT, the window functions and MelWeightMatrix of signal processing. Complex values are a last axis of
/// 2 (real, imaginary); a last axis of 1 is a real signal.
enum SignalOps {
    static var table: [String: OpKernel] {
        var t: [String: OpKernel] = [:]
        t["DFT"] = { c in [try dft(c)] }
        t["STFT"] = { c in [try stft(c)] }
        t["MelWeightMatrix"] = { c in [try melWeightMatrix(c)] }
        t["HannWindow"] = { c in [try window(c) { n, span in pow(sin(Double.pi * n / span), 2) }] }
        t["HammingWindow"] = { c in [try window(c) { n, span in 25.0 / 46 - (1 - 25.0 / 46) * cos(2 * Double.pi * n / span) }] }
        t["BlackmanWindow"] = { c in
            [try window(c) { n, span in 0.42 - 0.5 * cos(2 * Double.pi * n / span) + 0.08 * cos(4 * Double.pi * n / span) }]
        }
        return t
    }

    /// `f(n, N)` for n in 0 ..< size, with N the size when `periodic` (the default) and size - 1
    /// when symmetric.
    static func window(_ c: NodeContext, _ f: (Double, Double) -> Double) throws -> Value {
        guard let size = try c.input(0).asInts.first.map(Int.init), size >= 0 else { throw RuntimeError(.badShape, "the window size must be a non-negative scalar") }
        _ = try elementCount([size])
        let span = Double(c.int("periodic", 1) != 0 ? size : size - 1)
        let values = (0 ..< size).map { f(Double($0), span) }
        return try Value(values, shape: [size]).cast(to: try dataType(c.int("output_datatype", Int(DataType.float.rawValue))))
    }

    /// The discrete Fourier transform along `axis` (an attribute before opset 20, an input
    /// after), of length `dft_length` (the input zero-padded or cut), inverse (divided by the
    /// length) or not, one-sided (the first length/2 + 1 bins; inverse: a real signal from them,
    /// by Hermitian symmetry) or not. Direct sums in Double.
    static func dft(_ c: NodeContext) throws -> Value {
        let x = try c.input(0)
        let rank = x.shape.count
        guard rank >= 2, let parts = x.shape.last, parts == 1 || parts == 2 else { throw RuntimeError(.badShape, "DFT input \(x.shape) must end in 1 (real) or 2 (complex)") }
        let rawAxis = c.opset >= 20 ? Int(c.optionalInput(2)?.asInts.first ?? -2) : c.int("axis", 1)
        let axis = ((rawAxis % rank) + rank) % rank
        guard axis < rank - 1 else { throw RuntimeError(.badShape, "DFT axis \(rawAxis) is the complex axis of \(x.shape)") }
        let inverse = c.int("inverse", 0) != 0, onesided = c.int("onesided", 0) != 0
        let n = x.shape[axis]
        let length = c.optionalInput(1)?.asInts.first.map(Int.init) ?? (inverse && onesided ? 2 * (n - 1) : n)
        return try dft(x, axis: axis, length: length, inverse: inverse, onesided: onesided)
    }

    /// The DFT of `x` (last axis 1 or 2) along `axis`, of `length` points.
    static func dft(_ x: Value, axis: Int, length: Int, inverse: Bool, onesided: Bool) throws -> Value {
        let rank = x.shape.count, parts = x.shape[rank - 1], n = x.shape[axis]
        guard length >= 1 else { throw RuntimeError(.badShape, "dft_length must be positive, got \(length)") }
        let bins = inverse ? length : (onesided ? length / 2 + 1 : length)
        let (outer, _, inner) = ReductionOps.split(Array(x.shape.dropLast()), axis)
        var shape = x.shape
        shape[axis] = bins
        shape[rank - 1] = inverse && onesided ? 1 : 2
        var y = [Double](repeating: 0, count: try elementCount(shape))
        _ = try elementCount([bins, length])
        let v = x.asDoubles, outParts = shape[rank - 1]
        func input(_ o: Int, _ k: Int, _ i: Int) -> (Double, Double) {
            guard k < n else { return (0, 0) }
            let p = ((o * n + k) * inner + i) * parts
            return (v[p], parts == 2 ? v[p + 1] : 0)
        }
        let sign: Double = inverse ? 1 : -1
        for o in 0 ..< outer {
            for i in 0 ..< inner {
                // The full spectrum (or signal) of this line, Hermitian-completed for irfft.
                var line = (0 ..< length).map { input(o, $0, i) }
                if inverse && onesided {
                    let kept = length / 2 + 1
                    for k in 0 ..< length {
                        if k >= kept || k >= n { line[k] = k > length / 2 && length - k < n ? (input(o, length - k, i).0, -input(o, length - k, i).1) : (0, 0) }
                    }
                    line[0].1 = 0
                    if length % 2 == 0 { line[length / 2].1 = 0 }
                }
                for k in 0 ..< bins {
                    var re = 0.0, im = 0.0
                    for t in 0 ..< length {
                        let angle = sign * 2 * Double.pi * Double(k * t % length) / Double(length)
                        let (a, b) = line[t]
                        re += a * cos(angle) - b * sin(angle)
                        im += a * sin(angle) + b * cos(angle)
                    }
                    if inverse { re /= Double(length); im /= Double(length) }
                    let p = ((o * bins + k) * inner + i) * outParts
                    y[p] = re
                    if outParts == 2 { y[p + 1] = im }
                }
            }
        }
        return Value(computed: y, shape: shape, type: x.type)
    }

    /// STFT: frames of `frame_length` every `frame_step` along the signal `[B, L, 1 or 2]`, each
    /// multiplied by `window` (ones without it) and transformed: `[B, frames, bins, 2]`.
    static func stft(_ c: NodeContext) throws -> Value {
        let x = try c.input(0)
        guard x.shape.count == 3, x.shape[2] == 1 || x.shape[2] == 2 else { throw RuntimeError(.badShape, "STFT's signal \(x.shape) must be [batch, length, 1 or 2]") }
        let (batch, signalLength, parts) = (x.shape[0], x.shape[1], x.shape[2])
        guard let step = try c.input(1).asInts.first.map(Int.init), step > 0 else { throw RuntimeError(.badShape, "frame_step must be a positive scalar") }
        let window = c.optionalInput(2)?.asDoubles
        let frameLength = c.optionalInput(3)?.asInts.first.map(Int.init) ?? window?.count ?? signalLength
        guard frameLength >= 1, frameLength <= signalLength, window.map({ $0.count == frameLength }) ?? true else {
            throw RuntimeError(.badShape, "frame_length \(frameLength) must be in 1...\(signalLength) and equal the window's length")
        }
        let frames = (signalLength - frameLength) / step + 1
        let v = x.asDoubles
        var framed = [Double](repeating: 0, count: try elementCount([batch, frames, frameLength, parts]))
        for b in 0 ..< batch {
            for f in 0 ..< frames {
                for t in 0 ..< frameLength {
                    for p in 0 ..< parts {
                        framed[((b * frames + f) * frameLength + t) * parts + p] = v[(b * signalLength + f * step + t) * parts + p] * (window?[t] ?? 1)
                    }
                }
            }
        }
        let onesided = c.int("onesided", 1) != 0
        // Framed in x's precision (a float32 product rounds the exact double product).
        return try dft(Value(computed: framed, shape: [batch, frames, frameLength, parts], type: x.type), axis: 2, length: frameLength, inverse: false, onesided: onesided)
    }

    /// MelWeightMatrix: `[dft_length/2 + 1, num_mel_bins]` triangular filters between edges
    /// spaced evenly on the mel scale, in the ONNX reference's arithmetic (the edges' log1p in
    /// float32, the rest in float64, bins floored to integers).
    static func melWeightMatrix(_ c: NodeContext) throws -> Value {
        guard let melBins = try c.input(0).asInts.first.map(Int.init), let dftLength = try c.input(1).asInts.first.map(Int.init),
              let sampleRate = try c.input(2).asInts.first, let lower = try c.input(3).asFloats.first,
              let upper = try c.input(4).asFloats.first, melBins > 0, dftLength > 0, sampleRate > 0 else {
            throw RuntimeError(.badShape, "MelWeightMatrix needs positive num_mel_bins, dft_length and sample_rate, and two edge frequencies")
        }
        let spectrumBins = dftLength / 2 + 1
        func mel(_ hertz: Float) -> Double { Double(2595 * Foundation.log1p(hertz / 700)) / Foundation.log(10.0) }
        let low = mel(lower), step = (mel(upper) - low) / Double(melBins + 2)
        let edges = try (0 ..< melBins + 2).map { k -> Int in
            let hertz = 700 * Foundation.expm1((Double(k) * step + low) / 2595 * Foundation.log(10.0))
            let bin = (Double(dftLength + 1) * hertz / Double(sampleRate)).rounded(.down)
            guard bin >= 0, bin < Double(spectrumBins) else { throw RuntimeError(.badShape, "mel edge \(hertz) Hz falls outside the \(spectrumBins) spectrum bins") }
            return Int(bin)
        }
        var out = [Float](repeating: 0, count: try elementCount([spectrumBins, melBins]))
        for i in 0 ..< melBins {
            let (left, center, right) = (edges[i], edges[i + 1], edges[i + 2])
            if center == left {
                out[center * melBins + i] = 1
            } else {
                for j in left ... center { out[j * melBins + i] = Float(Double(j - left) / Double(center - left)) }
            }
            if right > center {
                for j in center ..< right { out[j * melBins + i] = Float(Double(right - j) / Double(right - center)) }
            }
        }
        return try Value(out, shape: [spectrumBins, melBins]).cast(to: try dataType(c.int("output_datatype", Int(DataType.float.rawValue))))
    }
}
