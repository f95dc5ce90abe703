import CONNXProto
import Tessera

/// A value stored on its own as ONNX test data (`test_data_set_*/input_0.pb`): a `TensorProto`,
/// or, for sequence and optional graph inputs, onnx-data.proto's `SequenceProto` and
/// `OptionalProto`. The file does not say which; the graph input's declared kind does.
public enum ONNXDataValue: Sendable {
    case tensor(Tensor)
    case sequence([Tensor])
    /// An optional that holds nothing.
    case none
}

public enum ONNXDataFile {
    /// A `TensorProto` file.
    public static func tensor(_ path: String) throws -> Tensor {
        try withBytes(path) { bytes in
            let proto = try UnpackedProto(bytes, path: path, what: "TensorProto", Onnx__TensorProto.self,
                                          init: onnx__tensor_proto__init, unpack: onnx__tensor_proto__unpack,
                                          free: onnx__tensor_proto__free_unpacked)
            return try tensor(proto.message, owner: proto, path: path)
        }
    }

    /// A file holding a value of `kind` (tensor, sequence of tensors, or optional of either).
    public static func read(_ path: String, kind: ONNXGraph.ValueInfo.Kind) throws -> ONNXDataValue {
        switch kind {
        case .tensor: return .tensor(try tensor(path))
        case .sequence:
            return try withBytes(path) { bytes in
                let proto = try UnpackedProto(bytes, path: path, what: "SequenceProto", Onnx__SequenceProto.self,
                                              init: onnx__sequence_proto__init, unpack: onnx__sequence_proto__unpack,
                                              free: onnx__sequence_proto__free_unpacked)
                return .sequence(try tensors(of: proto.message, owner: proto, path: path))
            }
        case .optional:
            return try withBytes(path) { bytes in
                let proto = try UnpackedProto(bytes, path: path, what: "OptionalProto", Onnx__OptionalProto.self,
                                              init: onnx__optional_proto__init, unpack: onnx__optional_proto__unpack,
                                              free: onnx__optional_proto__free_unpacked)
                let o = proto.message.pointee
                if let t = o.tensor_value { return .tensor(try tensor(t, owner: proto, path: path)) }
                if let s = o.sequence_value { return .sequence(try tensors(of: s, owner: proto, path: path)) }
                guard o.sparse_tensor_value == nil, o.map_value == nil, o.optional_value == nil else {
                    throw ONNXError(.unsupportedValue, "the optional holds a sparse tensor, map or optional; inputs are tensors or sequences of tensors", model: path)
                }
                return .none
            }
        case .other:
            throw ONNXError(.unsupportedValue, "maps and other non-tensor values cannot be read as inputs", model: path)
        }
    }

    private static func withBytes<T>(_ path: String, _ body: (UnsafeRawBufferPointer) throws -> T) throws -> T {
        let file: MappedFile
        do {
            file = try MappedFile(path: path)
        } catch let error as TessError {
            throw ONNXError(.io, error.message, model: path)
        }
        return try withExtendedLifetime(file) { try body(file.bytes) }
    }

    private static func tensors(of s: UnsafeMutablePointer<Onnx__SequenceProto>, owner: AnyObject & Sendable, path: String) throws -> [Tensor] {
        let p = s.pointee
        guard p.n_sparse_tensor_values == 0, p.n_sequence_values == 0, p.n_map_values == 0, p.n_optional_values == 0 else {
            throw ONNXError(.unsupportedValue, "the sequence holds sparse tensors, sequences, maps or optionals; inputs are sequences of tensors", model: path)
        }
        return try (0 ..< p.n_tensor_values).map { try tensor(p.tensor_values[$0]!, owner: owner, path: path) }
    }

    private static func tensor(_ t: UnsafeMutablePointer<Onnx__TensorProto>, owner: AnyObject & Sendable, path: String) throws -> Tensor {
        let name = t.name
        let type = try DataType.onnx(t.dataType, model: path, tensor: name)
        let shape = try ONNXImporter.shape(t.dims, name: name, model: path)
        let count = try TensorGeometry(shape: shape).elementCount
        let data = try tensorData(t, type: type, count: count, name: name, location: ModelLocation(path: path),
                                  externalFiles: ExternalFiles(), owner: owner)
        return Tensor(name: name, dataType: type, shape: shape, storage: .dense(values: data))
    }
}

/// One unpacked protobuf-c message, freed with its owner; tensors read from it may point into it.
private final class UnpackedProto<Message>: @unchecked Sendable {
    let message: UnsafeMutablePointer<Message>
    private let free: (UnsafeMutablePointer<Message>?, UnsafeMutablePointer<ProtobufCAllocator>?) -> Void

    init(_ bytes: UnsafeRawBufferPointer, path: String, what: String, _: Message.Type,
         init initialize: (UnsafeMutablePointer<Message>?) -> Void,
         unpack: (UnsafeMutablePointer<ProtobufCAllocator>?, Int, UnsafePointer<UInt8>?) -> UnsafeMutablePointer<Message>?,
         free: @escaping (UnsafeMutablePointer<Message>?, UnsafeMutablePointer<ProtobufCAllocator>?) -> Void) throws {
        let empty = UnsafeMutablePointer<Message>.allocate(capacity: 1)
        defer { empty.deallocate() }
        initialize(empty)
        let descriptor = empty.withMemoryRebound(to: ProtobufCMessage.self, capacity: 1) { $0.pointee.descriptor! }
        try ProtoModel.checkWireFormat(bytes, descriptor: descriptor, path: path)
        guard let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), let message = unpack(nil, bytes.count, base) else {
            throw ONNXError(.parse, "not a valid ONNX \(what): the protobuf is truncated or corrupt", model: path)
        }
        self.message = message
        self.free = free
    }

    deinit { free(message, nil) }
}
