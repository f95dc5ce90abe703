/// Errors of the runtime: what is wrong and which tensor it concerns.
public struct RuntimeError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable {
        case notAWeight            // no reduction axis: not a GEMM operand
        case unsupportedType       // a value type the kernels do not read
        case badActivations        // activation count disagrees with batch x depth
    }

    public let code: Code
    public let message: String
    public let tensor: String?

    public init(_ code: Code, _ message: String, tensor: String? = nil) {
        self.code = code
        self.message = message
        self.tensor = tensor
    }

    public var description: String { tensor.map { "tensor '\($0)': \(message)" } ?? message }
}
