import Foundation
import Tessera
import TesseraONNX

/// Graph inputs from files: numpy `.npy` arrays or ONNX `TensorProto` protobufs (`.pb`, as in
/// a model's `test_data_set_*` folders).
public enum InputFiles {
    public static func read(_ path: String) throws -> Value {
        if path.hasSuffix(".npy") { return try NumpyFiles.read(path) }
        guard path.hasSuffix(".pb") else {
            throw RuntimeError(.badInput, "\(path): inputs are .npy arrays or ONNX TensorProto .pb files")
        }
        do {
            return try Value(try ONNXTensorFile.read(path))
        } catch let error as RuntimeError {
            throw RuntimeError(error.code, "\(path): \(error.message)")
        }
    }
}
