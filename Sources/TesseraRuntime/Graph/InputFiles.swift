import Foundation
import Tessera
import TesseraONNX

/// Graph inputs from files: numpy `.npy` arrays or ONNX `.pb` protobufs (as in a model's
/// `test_data_set_*` folders): a `TensorProto`, or a `SequenceProto`/`OptionalProto` for an
/// input the graph declares a sequence or optional.
public enum InputFiles {
    public static func read(_ path: String) throws -> Value {
        guard case .tensor(let v) = try read(path, as: ONNXGraph.ValueInfo(name: "")) else { preconditionFailure("a tensor input reads as a tensor") }
        return v
    }

    /// The value in `path` for the graph input `info`.
    public static func read(_ path: String, as info: ONNXGraph.ValueInfo) throws -> GraphValue {
        if path.hasSuffix(".npy") {
            guard info.kind == .tensor || info.kind == .optional else {
                throw RuntimeError(.badInput, "\(path): input '\(info.name)' is a \(info.kind); give it as an ONNX SequenceProto .pb file")
            }
            return .tensor(try NumpyFiles.read(path))
        }
        guard path.hasSuffix(".pb") else {
            throw RuntimeError(.badInput, "\(path): inputs are .npy arrays or ONNX TensorProto (SequenceProto, OptionalProto) .pb files")
        }
        do {
            return try GraphValue(try ONNXDataFile.read(path, kind: info.kind), elementType: info.elementType)
        } catch let error as RuntimeError {
            throw RuntimeError(error.code, "\(path): \(error.message)")
        }
    }
}
