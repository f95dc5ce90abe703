import Tessera
import TesseraConvert
import TesseraRuntime

/// `verify` levels 2 and 3: every tensor of a file against its source, and every GEMM weight's
/// kernel against a dense float GEMM on the source weights.
public enum SourceVerifier {
    public struct Options: Sendable {
        /// A tensor or kernel output that is not bit-exact fails above this relative error.
        public var maxRelativeError: Double?
        /// ... or below this cosine similarity.
        public var minCosine: Double?
        public var seed: UInt64
        /// Activation rows per kernel check.
        public var batch: Int
        public var threads: Int

        public init(maxRelativeError: Double? = nil, minCosine: Double? = nil, seed: UInt64 = 0, batch: Int = 8, threads: Int = 1) {
            self.maxRelativeError = maxRelativeError
            self.minCosine = minCosine
            self.seed = seed
            self.batch = batch
            self.threads = threads
        }
    }

    /// A kernel that disagrees with a dense GEMM on the very weights it read is broken, whatever
    /// the conversion did: float32 summation order accounts for far less than this.
    static let kernelSelfTolerance = 1e-4

    public static func compare(_ file: TessFile, source: [String: Tensor], options: Options) throws -> SourceReport {
        var report = SourceReport(tensors: [], missing: [], unexpected: [])
        var seen = Set<String>()
        for index in file.tensors.indices {
            let stored = try file.tensor(index)
            seen.insert(stored.name)
            guard let original = source[stored.name] else {
                report.unexpected.append(stored.name)
                continue
            }
            report.tensors.append(try compare(stored, original, options: options))
        }
        report.missing = source.keys.filter { !seen.contains($0) }.sorted()
        return report
    }

    static func compare(_ stored: Tensor, _ original: Tensor, options: Options) throws -> TensorReport {
        var result = TensorReport(name: stored.name, layout: stored.storage.kind.description,
                                  quantization: stored.quantization.map { "\($0.codeType)" }, fidelity: nil, kernel: nil, problems: [])
        guard stored.shape == original.shape else {
            result.problems.append("shape \(stored.shape) in the file, \(original.shape) in the source")
            return result
        }
        let lossless = stored.quantization == nil && stored.dataType == original.dataType
        guard stored.dataType.isFloatingPoint || original.dataType.isFloatingPoint else {
            // Integer and boolean tensors are never converted: their bytes must match.
            if try denseBytes(stored) != denseBytes(original) { result.problems.append("values differ from the source") }
            result.fidelity = .exact
            return result
        }
        let storedValues = try stored.densify(), sourceValues = try original.densify()
        let fidelity = Fidelity(source: sourceValues, converted: storedValues)
        result.fidelity = fidelity
        if lossless, !fidelity.bitExact, let i = storedValues.indices.first(where: {
            storedValues[$0].bitPattern != sourceValues[$0].bitPattern && storedValues[$0] != 0
        }) {
            result.problems.append("element \(i) is \(storedValues[i]) in the file and \(sourceValues[i]) in the source (not a pruned zero)")
        }
        result.problems += thresholdProblems(fidelity, "tensor", options)

        // Level 3: the stored layout's kernel against a dense float GEMM on the source weights.
        guard stored.reductionAxis != nil, let op = try? LinearOperator(stored) else { return result }
        let reference = try LinearOperator(float32(original, like: stored, values: sourceValues))
        let ownWeights = try LinearOperator(float32(original, like: stored, values: storedValues))
        let x = activations(count: options.batch * op.depth, seed: options.seed)
        let y = try op.apply(x, batch: options.batch, threads: options.threads)
        let kernel = Fidelity(source: try reference.apply(x, batch: options.batch, threads: options.threads), converted: y)
        result.kernel = kernel
        let selfCheck = Fidelity(source: try ownWeights.apply(x, batch: options.batch, threads: options.threads), converted: y)
        if selfCheck.relativeError > kernelSelfTolerance {
            result.problems.append(String(format: "the %@ kernel disagrees with a dense GEMM on its own weights (relative error %.3g)",
                                          result.layout, selfCheck.relativeError))
        }
        result.problems += thresholdProblems(kernel, "kernel output", options)
        return result
    }

    private static func thresholdProblems(_ f: Fidelity, _ what: String, _ options: Options) -> [String] {
        guard !f.bitExact else { return [] }
        var problems: [String] = []
        if let limit = options.maxRelativeError, !(f.relativeError <= limit) {
            problems.append(String(format: "%@ relative error %.3g exceeds --max-rel-error %.3g", what, f.relativeError, limit))
        }
        if let limit = options.minCosine, !(f.cosine >= limit) {
            problems.append(String(format: "%@ cosine %.6f is below --min-cosine %.6f", what, f.cosine, limit))
        }
        return problems
    }

    private static func denseBytes(_ t: Tensor) throws -> TensorBytes {
        guard case .dense(let values) = try t.encoded(as: .dense).storage else { preconditionFailure("dense encoding") }
        return values
    }

    /// `values` as a dense float32 GEMM weight with `stored`'s role and reduction axis.
    private static func float32(_ original: Tensor, like stored: Tensor, values: [Float]) -> Tensor {
        Tensor(name: original.name, dataType: .float, shape: original.shape, role: stored.role,
               reductionAxis: stored.reductionAxis, storage: .dense(values: TensorBytes(float32: values)))
    }

    /// Seeded activations uniform in [-1, 1).
    public static func activations(count: Int, seed: UInt64) -> [Float] {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 &+ 0x2545_F491_4F6C_DD1D
        return (0 ..< count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(state >> 40) / Float(1 << 23) - 1
        }
    }
}

public struct TensorReport: Codable, Sendable {
    public var name: String
    public var layout: String
    public var quantization: String?
    /// Level 2: the stored tensor against the source tensor.
    public var fidelity: Fidelity?
    /// Level 3: the stored layout's kernel output against a dense GEMM on the source weights.
    public var kernel: Fidelity?
    public var problems: [String]
}

public struct SourceReport: Codable, Sendable {
    public var tensors: [TensorReport]
    /// Source tensors the file lacks.
    public var missing: [String]
    /// File tensors the source lacks.
    public var unexpected: [String]

    public var problemCount: Int { tensors.reduce(0) { $0 + $1.problems.count } + missing.count + unexpected.count }
    public var kernelChecks: Int { tensors.filter { $0.kernel != nil }.count }
}
