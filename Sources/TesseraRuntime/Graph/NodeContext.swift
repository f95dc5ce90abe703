import Tessera
import TesseraONNX

/// What one op sees while it runs: its node (attributes), its input values, the default-domain
/// opset (several ops moved attributes to inputs over the versions) and, for a GEMM whose weight
/// is stored in the file, that weight as a `LinearOperator`.
struct NodeContext {
    let node: ONNXGraph.Node
    let opset: Int64
    let values: [Value?]
    let weight: LinearOperator?
    let threads: Int

    var inputCount: Int { values.count }

    func input(_ i: Int) throws -> Value {
        guard i < values.count, let v = values[i] else {
            throw RuntimeError(.badGraph, "input \(i) is required")
        }
        return v
    }

    func optionalInput(_ i: Int) -> Value? { i < values.count ? values[i] : nil }

    func floats(_ i: Int) throws -> [Float] {
        let v = try input(i)
        guard let f = v.floats else { throw RuntimeError(.unsupportedType, "input \(i) is \(v.type); this op computes on float tensors") }
        return f
    }

    func attribute(_ name: String) -> ONNXGraph.Attribute? { node.attributes[name] }

    func int(_ name: String, _ fallback: Int) -> Int {
        if case .int(let v)? = node.attributes[name] { return Int(v) }
        return fallback
    }

    func ints(_ name: String) -> [Int]? {
        if case .ints(let v)? = node.attributes[name] { return v.map { Int($0) } }
        return nil
    }

    func float(_ name: String, _ fallback: Float) -> Float {
        if case .float(let v)? = node.attributes[name] { return v }
        return fallback
    }

    func string(_ name: String, _ fallback: String) -> String {
        if case .string(let v)? = node.attributes[name] { return v }
        return fallback
    }

    /// Integers from input `i` (opsets that moved them there) or attribute `name` (older ones).
    func intList(input i: Int, attribute name: String) -> [Int]? {
        if let v = optionalInput(i) { return v.asInts.map { Int($0) } }
        return ints(name)
    }
}

/// An axis attribute in [-rank, rank) made non-negative.
func normalizedAxis(_ axis: Int, rank: Int) throws -> Int {
    let a = axis < 0 ? axis + rank : axis
    guard a >= 0, a < max(rank, 1) else {
        throw RuntimeError(.badShape, "axis \(axis) is out of range for rank \(rank)")
    }
    return a
}

/// A split point in [-rank, rank] (Flatten, old Softmax) made non-negative.
func splitAxis(_ axis: Int, rank: Int) throws -> Int {
    let a = axis < 0 ? axis + rank : axis
    guard a >= 0, a <= rank else {
        throw RuntimeError(.badShape, "axis \(axis) is out of range for rank \(rank)")
    }
    return a
}
