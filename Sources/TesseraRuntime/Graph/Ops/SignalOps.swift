import Foundation
import Tessera

/// The window functions of signal processing (DFT and STFT are not here yet).
enum SignalOps {
    static var table: [String: OpKernel] {
        var t: [String: OpKernel] = [:]
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
        let values = (0 ..< size).map { Float(f(Double($0), span)) }
        return try Value(values, shape: [size]).cast(to: try dataType(c.int("output_datatype", Int(DataType.float.rawValue))))
    }
}
