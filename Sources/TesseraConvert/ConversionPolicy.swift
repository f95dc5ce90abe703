import Tessera

/// Which tensors a conversion changes, and how. By default only GEMM weights (MatMul, Gemm,
/// Conv) of a float type with at least `minimumElements` elements are quantized: biases,
/// normalization weights, embedding tables and small tensors stay as they are.
public struct ConversionPolicy: Sendable {
    public static let defaultMinimumElements = 1024

    public var quantization: QuantizationSpec?
    public var minimumElements: Int

    public init(quantization: QuantizationSpec? = nil, minimumElements: Int = defaultMinimumElements) {
        self.quantization = quantization
        self.minimumElements = minimumElements
    }

    public var isLossless: Bool { quantization == nil }

    /// Whether `tensor` is one the policy transforms.
    public func applies(to tensor: Tensor) -> Bool {
        guard [.matmulB, .gemmB, .convWeight].contains(tensor.role), tensor.dataType.isFloatingPoint,
              tensor.quantization == nil, let count = try? TensorGeometry(shape: tensor.shape).elementCount else { return false }
        return count >= minimumElements
    }

    /// The tensor as the policy wants it written.
    public func transform(_ tensor: Tensor) throws -> Tensor {
        guard let quantization, applies(to: tensor) else { return tensor }
        return try Quantizer.quantize(tensor, quantization)
    }

    /// What the file's metadata records about the conversion.
    public var metadata: [String: String] {
        var out = ["mode": isLossless ? "lossless" : "lossy"]
        if let quantization { out["quantize"] = quantization.description }
        out["minimum_elements"] = String(minimumElements)
        return out
    }
}
