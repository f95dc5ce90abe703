import Tessera
import TesseraONNX

/// What one op sees while it runs: its node (attributes), its input values, the default-domain
/// opset (several ops moved attributes to inputs over the versions) and, for a GEMM whose weight
/// is stored in the file, that weight as a `LinearOperator`.
struct NodeContext {
    let node: ONNXGraph.Node
    let opset: Int64
    let values: [GraphValue?]
    let weight: LinearOperator?
    let threads: Int
    /// Whether int8 weights quantize their activations (`ActivationArithmetic`).
    var activations = ActivationArithmetic.float
    /// For If, Loop and Scan: their bodies by attribute name, and every value the node can see.
    var bodies: [String: GraphExecutor] = [:]
    var scope: Scope = { _ in nil }
    /// What the op prepared on an earlier run of this node (see `NodeCache`).
    var cache = NodeCache()
    /// Which inputs are the graph's initializers, not overridden: the same on every run.
    var constantInputs: [Bool] = []

    func isConstant(_ i: Int) -> Bool { i < constantInputs.count && constantInputs[i] }

    func body(_ name: String) throws -> GraphExecutor {
        guard let body = bodies[name] else { throw RuntimeError(.badGraph, "attribute '\(name)' (a subgraph) is required") }
        return body
    }

    var inputCount: Int { values.count }

    /// Input `i`, which must be a tensor.
    func input(_ i: Int) throws -> Value {
        guard case .tensor(let v) = try value(i) else {
            throw RuntimeError(.badGraph, "input \(i) is \(try value(i).kindDescription); this op takes a tensor")
        }
        return v
    }

    /// Input `i` when it is given and is a tensor.
    func optionalInput(_ i: Int) -> Value? {
        guard i < values.count, case .tensor(let v)? = values[i] else { return nil }
        return v
    }

    /// The inputs that are given (variadic ops: Concat, Sum, Einsum), each a tensor.
    func givenInputs() throws -> [Value] {
        try values.indices.filter { values[$0] != nil }.map { try input($0) }
    }

    /// Input `i` whatever it is: a tensor, a sequence or an empty optional.
    func value(_ i: Int) throws -> GraphValue {
        guard i < values.count, let v = values[i] else {
            throw RuntimeError(.badGraph, "input \(i) is required")
        }
        return v
    }

    /// Input `i`, which must be a sequence: its tensors and their element type.
    func sequence(_ i: Int) throws -> (items: [Value], elementType: DataType) {
        let v = try value(i)
        guard case .sequence(let items, let type) = v else {
            throw RuntimeError(.badGraph, "input \(i) is \(v.kindDescription); this op takes a sequence")
        }
        return (items, type)
    }

    func floats(_ i: Int) throws -> [Float] {
        let v = try input(i)
        guard let f = v.floats else { throw RuntimeError(.unsupportedType, "input \(i) is \(v.type); this op computes on float tensors") }
        return f
    }

    /// Input `i` (a float tensor) in precision `T`: ops generic over their precision read it so.
    func floats<T: BinaryFloatingPoint>(_ i: Int, as _: T.Type) throws -> [T] {
        let v = try input(i)
        switch v.elements {
        case .float, .double: return v.floating(T.self)
        default: throw RuntimeError(.unsupportedType, "input \(i) is \(v.type); this op computes on float tensors")
        }
    }

    /// Whether input `i` is float64: then a generic op runs in Double.
    func isDouble(_ i: Int) -> Bool { (try? input(i))?.type == .double }

    func attribute(_ name: String) -> ONNXGraph.Attribute? { node.attributes[name] }

    func int(_ name: String, _ fallback: Int) -> Int {
        if case .int(let v)? = node.attributes[name] { return Int(v) }
        return fallback
    }

    func optionalInt(_ name: String) -> Int? {
        if case .int(let v)? = node.attributes[name] { return Int(v) }
        return nil
    }

    func ints(_ name: String) -> [Int]? {
        if case .ints(let v)? = node.attributes[name] { return v.map { Int($0) } }
        return nil
    }

    func optionalFloat(_ name: String) -> Float? {
        if case .float(let v)? = node.attributes[name] { return v }
        return nil
    }

    func floatList(_ name: String) -> [Float]? {
        if case .floats(let v)? = node.attributes[name] { return v }
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

/// What an op prepares once for its node and reuses on later runs while `key` (input shapes,
/// say) stays the same: Conv's weight operators and window tables. An executor runs one graph
/// at a time, so the node's cache is never used by two runs at once.
final class NodeCache: @unchecked Sendable {
    private var key: [Int] = []
    private var value: Any?

    func value<T>(for key: [Int], _ build: () throws -> T) rethrows -> T {
        if key == self.key, let value = value as? T { return value }
        let built = try build()
        (self.key, value) = (key, built)
        return built
    }
}

/// The element type an attribute (Cast's `to`, a `dtype`) names.
func dataType(_ number: Int) throws -> DataType {
    guard let type = DataType(number: number) else { throw RuntimeError(.unsupportedType, "data type \(number) is not known") }
    return type
}

/// An axis attribute in [-rank, rank) made non-negative. A scalar has no axis, except for ops
/// that treat it as one element along axis 0 (`scalarAllowed`).
func normalizedAxis(_ axis: Int, rank: Int, scalarAllowed: Bool = false) throws -> Int {
    let a = axis < 0 ? axis + rank : axis
    guard a >= 0, a < (scalarAllowed ? max(rank, 1) : rank) else {
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

/// The element count of an output shape an op is about to allocate, refused before any
/// allocation when a dim is negative, the product overflows, or the value (with the index
/// array most ops build beside it, 8 bytes an element) exceeds `MemoryBudget`. Every shape
/// that comes from data, attributes or broadcasting goes through here.
func elementCount(_ shape: [Int]) throws -> Int {
    var count = 1
    for d in shape {
        guard d >= 0 else { throw RuntimeError(.badShape, "output shape \(shape) has a negative dim") }
        let (product, overflow) = count.multipliedReportingOverflow(by: d)
        guard !overflow else { throw RuntimeError(.tooLarge, "output shape \(shape) has more elements than an Int can count") }
        count = product
    }
    do {
        try MemoryBudget.check(count, width: 8, "output shape \(shape) (\(count) elements)")
    } catch let error as TessError {
        throw RuntimeError(.tooLarge, error.message)
    }
    return count
}

/// `a + b` for sizes from data, refused on overflow.
func checkedSum(_ a: Int, _ b: Int) throws -> Int {
    let (sum, overflow) = a.addingReportingOverflow(b)
    guard !overflow else { throw RuntimeError(.tooLarge, "size \(a) + \(b) overflows") }
    return sum
}
