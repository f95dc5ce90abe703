import Tessera

/// The one error type of the ONNX layer: what went wrong, in which model and which tensor.
public struct ONNXError: Error, Equatable, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        case io                   // the model (or its external data) cannot be read or written
        case parse                // not a valid ONNX protobuf (truncated, corrupt, not ONNX)
        case missingGraph         // a ModelProto without a graph
        case unsupportedDataType  // string tensors, UNDEFINED, or types newer than the .tess format
        case badTensorData        // dims disagree with the data, or data in the wrong field
        case externalData         // bad location, outside the model's folder, missing or short file
        case missingTensor        // a node or output refers to a name nothing produces
        case notConverted         // a .tess file without an ONNX graph section
        case unsupportedValue     // a map, sparse tensor or nested value where a tensor or sequence of tensors is read
    }

    public var code: Code
    public var message: String
    public var model: String?
    public var tensor: String?

    public init(_ code: Code, _ message: String, model: String? = nil, tensor: String? = nil) {
        self.code = code
        self.message = message
        self.model = model
        self.tensor = tensor
    }

    public var description: String {
        var location: [String] = []
        if let model { location.append(model) }
        if let tensor { location.append("tensor '\(tensor)'") }
        return (location.isEmpty ? "" : location.joined(separator: ", ") + ": ") + message
    }

    func inModel(_ path: String) -> ONNXError {
        var copy = self
        if copy.model == nil { copy.model = path }
        return copy
    }
}
