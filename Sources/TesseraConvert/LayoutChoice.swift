import Tessera

/// `--layout`: a fixed layout, or `auto` (the smallest lossless one).
public enum LayoutRequest: String, Sendable, CaseIterable {
    case auto, dense, csr, sparse24
}

public enum LayoutChoice {
    /// Bytes of all of a tensor's buffers (decoded, before any codec).
    public static func bytes(_ tensor: Tensor) -> Int { tensor.buffers.reduce(0) { $0 + $1.buffer.count } }

    /// `tensor` in the requested layout, and why. `auto` tries every layout that holds the
    /// tensor exactly and keeps the smallest (ties prefer dense, then 2:4, then CSR).
    /// `sparsity` is the tensor's, when the caller already knows it.
    public static func choose(_ tensor: Tensor, _ request: LayoutRequest, sparsity: Double? = nil) throws -> (Tensor, String) {
        let dense = try tensor.encoded(as: .dense)
        let denseBytes = bytes(dense)
        func ratio(_ t: Tensor) -> String { denseBytes == 0 ? "" : String(format: ", %.3fx of dense", Double(bytes(t)) / Double(denseBytes)) }
        let zeros = try sparsity ?? tensor.sparsity()
        switch request {
        case .dense:
            return (dense, "dense: requested")
        case .csr:
            let csr = try tensor.encoded(as: .csr)
            return (csr, String(format: "csr: requested, %.1f%% zeros", zeros * 100) + ratio(csr))
        case .sparse24:
            do {
                let s = try tensor.encoded(as: .sparse24)
                return (s, "sparse24: requested" + ratio(s))
            } catch {
                throw ConvertError("tensor '\(tensor.name)' cannot be stored as sparse24: it does not satisfy 2:4 along its reduction axis (prune it with --prune 2:4)")
            }
        case .auto:
            // Layouts that cannot beat dense at this sparsity are not tried: 2:4 needs half the
            // elements zero, CSR at least one index byte per stored value.
            var best = (dense, "dense: smallest exact layout (\(String(format: "%.1f", zeros * 100))% zeros)")
            if zeros >= 0.5, let s = try? tensor.encoded(as: .sparse24), bytes(s) < bytes(best.0) {
                best = (s, "sparse24: satisfies 2:4 along axis \(tensor.reductionAxis!)" + ratio(s))
            }
            // CSR needs at least nnz * (value bits + 8) bits against numel * value bits for dense.
            if zeros > 8 / (Double(tensor.valueType.bitWidth) + 8) {
                let csr = try tensor.encoded(as: .csr)
                if bytes(csr) < bytes(best.0) {
                    best = (csr, String(format: "csr: %.1f%% zeros", zeros * 100) + ratio(csr))
                }
            }
            return best
        }
    }
}
