import Foundation
import Tessera

/// Conversion decisions, reproducible and stored in the file: defaults for every eligible
/// tensor (GEMM weights of a float type with at least `minimumElements` elements), and rules
/// matched by glob on tensor names that override them, first match wins.
///
/// ```json
/// {"prune": "2:4", "quantize": "int8", "layout": "auto", "minimum_elements": 1024,
///  "rules": [{"match": "*.bias", "skip": true},
///            {"match": "embeddings.word_embeddings.weight", "quantize": "int4:group=32"}]}
/// ```
/// A rule applies to the tensors it matches whatever their role; `skip` keeps a tensor exact.
/// A wildcard rule (`*`, `?` or `[` in `match`) prunes and quantizes the tensors it can and
/// notes in the report why it left the others; a rule naming one tensor that it cannot apply
/// to is an error.
public struct Recipe: Codable, Equatable, Sendable {
    public struct Rule: Codable, Equatable, Sendable {
        public var match: String
        public var skip: Bool?
        public var prune: String?
        public var quantize: String?
        public var asymmetric: Bool?
        public var layout: String?

        public init(match: String, skip: Bool? = nil, prune: String? = nil, quantize: String? = nil,
                    asymmetric: Bool? = nil, layout: String? = nil) {
            self.match = match; self.skip = skip; self.prune = prune
            self.quantize = quantize; self.asymmetric = asymmetric; self.layout = layout
        }
    }

    public static let defaultMinimumElements = 1024

    public var prune: String?
    public var quantize: String?
    public var asymmetric: Bool?
    public var layout: String?
    public var minimumElements: Int?
    /// Whether `quantize` also applies to embedding tables (Gather data), one scale per row, as
    /// onnxruntime's `quantize_dynamic` does (nil: yes).
    public var quantizeEmbeddings: Bool?
    /// An `.npz` calibration set (arrays named after the graph inputs, batch axis first): with
    /// it, pruning and quantization of GEMM weights are solved on data (SparseGPT, GPTQ).
    public var calibration: String?
    public var rules: [Rule]

    public init(prune: String? = nil, quantize: String? = nil, asymmetric: Bool? = nil, layout: String? = nil,
                minimumElements: Int? = nil, quantizeEmbeddings: Bool? = nil, rules: [Rule] = []) {
        self.prune = prune; self.quantize = quantize; self.asymmetric = asymmetric
        self.layout = layout; self.minimumElements = minimumElements; self.quantizeEmbeddings = quantizeEmbeddings
        self.rules = rules
    }

    enum CodingKeys: String, CodingKey {
        case prune, quantize, asymmetric, layout, rules
        case minimumElements = "minimum_elements", quantizeEmbeddings = "quantize_embeddings", calibration
    }

    /// Every key is optional: a recipe of defaults alone needs no `rules`.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(prune: try c.decodeIfPresent(String.self, forKey: .prune), quantize: try c.decodeIfPresent(String.self, forKey: .quantize),
                  asymmetric: try c.decodeIfPresent(Bool.self, forKey: .asymmetric), layout: try c.decodeIfPresent(String.self, forKey: .layout),
                  minimumElements: try c.decodeIfPresent(Int.self, forKey: .minimumElements),
                  quantizeEmbeddings: try c.decodeIfPresent(Bool.self, forKey: .quantizeEmbeddings),
                  rules: try c.decodeIfPresent([Rule].self, forKey: .rules) ?? [])
        calibration = try c.decodeIfPresent(String.self, forKey: .calibration)
    }

    public static func load(_ path: String) throws -> Recipe {
        let data: Data
        do {
            let file = try MappedFile(path: path)   // regular files only, opened without blocking
            data = Data(file.bytes)
        } catch let error as TessError {
            throw ConvertError("\(path): cannot read the recipe: \(error.message)")
        }
        do {
            let recipe = try JSONDecoder().decode(Recipe.self, from: data)
            try recipe.validate()
            return recipe
        } catch let error as ConvertError {
            throw ConvertError("\(path): \(error.description)")
        } catch {
            throw ConvertError("\(path): not a valid recipe: \(error)")
        }
    }

    /// Parse every option once so that a bad recipe fails before any tensor is read.
    public func validate() throws {
        _ = try prune.map(PruneSpec.parse)
        _ = try quantize.map { try QuantizationSpec.parse($0, asymmetric: asymmetric ?? false) }
        _ = try Self.layoutRequest(layout)
        guard (minimumElements ?? 0) >= 0 else { throw ConvertError("minimum_elements must not be negative") }
        if calibration != nil, isLossless { throw ConvertError("a calibration set needs --prune or --quantize: a lossless conversion has nothing to calibrate") }
        for rule in rules {
            _ = try rule.prune.map(PruneSpec.parse)
            _ = try rule.quantize.map { try QuantizationSpec.parse($0, asymmetric: rule.asymmetric ?? asymmetric ?? false) }
            _ = try Self.layoutRequest(rule.layout)
        }
    }

    public var isLossless: Bool {
        prune == nil && quantize == nil && rules.allSatisfy { $0.prune == nil && $0.quantize == nil }
    }

    /// What happens to `tensor`.
    public func plan(for tensor: Tensor) throws -> TensorPlan {
        let rule = rules.first { fnmatch($0.match, tensor.name, 0) == 0 }
        if rule?.skip == true { return TensorPlan(layout: try Self.layoutRequest(rule?.layout ?? layout), note: "skipped by rule '\(rule!.match)'") }
        let minimum = minimumElements ?? Self.defaultMinimumElements
        let eligible = rule != nil || Self.isGemmWeight(tensor, minimumElements: minimum)
        // Embedding tables are quantized (per row) but never pruned by default.
        let embedding = rule == nil && quantizeEmbeddings != false && Self.isEmbeddingTable(tensor, minimumElements: minimum)
        let pruneText = rule?.prune ?? (eligible ? prune : nil)
        let quantizeText = rule?.quantize ?? (eligible || embedding ? quantize : nil)
        let asymmetric = rule?.asymmetric ?? self.asymmetric ?? false
        return TensorPlan(prune: try pruneText.map(PruneSpec.parse),
                          quantize: try quantizeText.map { try QuantizationSpec.parse($0, asymmetric: asymmetric) },
                          layout: try Self.layoutRequest(rule?.layout ?? layout),
                          note: rule.map { "rule '\($0.match)'" },
                          source: rule.map { $0.match.contains(where: { "*?[".contains($0) }) ? .wildcardRule : .exactRule } ?? .defaults)
    }

    static func isGemmWeight(_ tensor: Tensor, minimumElements: Int) -> Bool {
        isFloatWeight(tensor, roles: [.matmulB, .gemmB, .convWeight], minimumElements: minimumElements)
    }

    /// A float table that a Gather reads rows of (word, position embeddings), at least 2-D.
    static func isEmbeddingTable(_ tensor: Tensor, minimumElements: Int) -> Bool {
        tensor.shape.count >= 2 && isFloatWeight(tensor, roles: [.gatherData], minimumElements: minimumElements)
    }

    private static func isFloatWeight(_ tensor: Tensor, roles: Set<WeightRole>, minimumElements: Int) -> Bool {
        guard roles.contains(tensor.role), tensor.dataType.isFloatingPoint, tensor.quantization == nil,
              let count = try? TensorGeometry(shape: tensor.shape).elementCount else { return false }
        return count >= minimumElements
    }

    static func layoutRequest(_ text: String?) throws -> LayoutRequest {
        guard let text else { return .auto }
        guard let request = LayoutRequest(rawValue: text) else {
            throw ConvertError("layout must be one of \(LayoutRequest.allCases.map(\.rawValue).joined(separator: ", ")), got '\(text)'")
        }
        return request
    }
}

/// The decisions for one tensor.
public struct TensorPlan: Equatable, Sendable {
    public var prune: PruneSpec?
    public var quantize: QuantizationSpec?
    public var layout: LayoutRequest = .auto
    public var note: String?
    /// What made the plan. A wildcard rule applies where it can; a rule naming the tensor, or the
    /// defaults for a GEMM weight, must quantize it when asked to.
    public var source: Source

    public enum Source: Sendable { case defaults, exactRule, wildcardRule }

    public init(prune: PruneSpec? = nil, quantize: QuantizationSpec? = nil, layout: LayoutRequest = .auto, note: String? = nil,
                source: Source = .defaults) {
        self.prune = prune
        self.quantize = quantize
        self.layout = layout
        self.note = note
        self.source = source
    }
}
