/// How far a converted tensor is from its source, element by element.
public struct Fidelity: Codable, Equatable, Sendable {
    public var maxAbsError: Double
    /// ||x - y|| / ||x|| (0 when x is all zero and y equals it).
    public var relativeError: Double
    /// 10 log10(||x||^2 / ||x - y||^2) in dB; nil when exact.
    public var snrDB: Double?
    public var cosine: Double
    public var bitExact: Bool

    enum CodingKeys: String, CodingKey {
        case cosine
        case maxAbsError = "max_abs_error", relativeError = "relative_error", snrDB = "snr_db", bitExact = "bit_exact"
    }

    /// An unchanged tensor.
    public static let exact = Fidelity(source: [], converted: [])

    public init(source x: [Float], converted y: [Float]) {
        precondition(x.count == y.count, "fidelity compares tensors of one shape")
        var maxAbs = 0.0, signal = 0.0, noise = 0.0, dot = 0.0, yy = 0.0
        var exact = true
        for i in x.indices {
            let a = Double(x[i]), b = Double(y[i])
            if x[i].bitPattern != y[i].bitPattern { exact = false }
            let d = a - b
            maxAbs = max(maxAbs, abs(d))
            signal += a * a
            noise += d * d
            dot += a * b
            yy += b * b
        }
        maxAbsError = maxAbs
        relativeError = signal == 0 ? (noise == 0 ? 0 : .infinity) : (noise / signal).squareRoot()
        snrDB = noise == 0 ? nil : 10 * log10(signal / noise)
        cosine = signal == 0 || yy == 0 ? (signal == yy ? 1 : 0) : dot / (signal * yy).squareRoot()
        bitExact = exact
    }
}

#if canImport(Glibc)
import Glibc
#endif
