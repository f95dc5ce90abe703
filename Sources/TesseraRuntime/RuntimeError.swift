/// Errors of the runtime: what is wrong and which tensor or graph node it concerns.
public struct RuntimeError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable {
        case notAWeight            // no reduction axis: not a GEMM operand
        case unsupportedType       // a value type the kernels or the executor do not compute with
        case badActivations        // activation count disagrees with batch x depth
        case unsupportedOp         // an op (or an op's form) the executor lacks
        case unsupportedAttribute  // an attribute value the op does not implement
        case badGraph              // a node missing a required input, or out of topological order
        case badShape              // shapes that do not fit the op
        case badInput              // a graph input missing, unknown, or of the wrong type or shape
        case tooLarge              // a value whose size overflows or exceeds the memory budget
    }

    public let code: Code
    public let message: String
    public let tensor: String?
    /// The graph node being run, as "name (OpType)".
    public private(set) var node: String?

    public init(_ code: Code, _ message: String, tensor: String? = nil) {
        self.code = code
        self.message = message
        self.tensor = tensor
    }

    func at(node label: String) -> RuntimeError {
        var copy = self
        if copy.node == nil { copy.node = label }
        return copy
    }

    public var description: String {
        var location: [String] = []
        if let node { location.append("node \(node)") }
        if let tensor { location.append("tensor '\(tensor)'") }
        return (location.isEmpty ? "" : location.joined(separator: ", ") + ": ") + message
    }
}
