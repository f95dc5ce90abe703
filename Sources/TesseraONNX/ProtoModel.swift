import CONNXProto
#if canImport(Glibc)
import Glibc
#endif
import CProtobufC
import Tessera

/// Owns one unpacked `ModelProto` (protobuf-c frees it as a whole in `deinit`). Every protobuf-c
/// call of the ONNX layer is in this file; the rest sees Swift types or these pointers.
final class ProtoModel: @unchecked Sendable {
    let proto: UnsafeMutablePointer<Onnx__ModelProto>

    /// Deepest message nesting accepted (C++ protobuf's default recursion limit). protobuf-c
    /// unpacks recursively, so deeper input would overflow the stack instead of failing.
    static let maxMessageDepth = 100

    init(bytes: UnsafeRawBufferPointer, path: String) throws {
        var empty = Onnx__ModelProto()   // the real address of the descriptor, as an initialised message holds it
        onnx__model_proto__init(&empty)
        try Self.checkWireFormat(bytes, descriptor: empty.base.descriptor, path: path)
        guard let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self),
              let proto = onnx__model_proto__unpack(nil, bytes.count, base) else {
            throw ONNXError(.parse, "not a valid ONNX model: the protobuf is truncated or corrupt", model: path)
        }
        self.proto = proto
        guard proto.pointee.graph != nil else {
            throw ONNXError(.missingGraph, "the model has no graph", model: path)
        }
    }

    deinit { onnx__model_proto__free_unpacked(proto, nil) }

    /// Walks every message of the wire format iteratively (following message-typed fields
    /// through protobuf-c's descriptors) before protobuf-c, which unpacks recursively, sees a
    /// byte. It refuses:
    /// - nesting deeper than `maxMessageDepth`, in every message, wherever malformed bytes are;
    /// - malformed bytes anywhere (which unpack would reject too, but only after recursing);
    /// - a NUL byte in a string field: protobuf-c hands strings out NUL-terminated, so names
    ///   that differ only after a NUL would silently become one name.
    static func checkWireFormat(_ bytes: UnsafeRawBufferPointer, descriptor: UnsafePointer<ProtobufCMessageDescriptor>,
                                path: String) throws {
        func corrupt(_ offset: Int) -> ONNXError {
            ONNXError(.parse, "not a valid ONNX model: the protobuf is truncated or corrupt at byte \(offset)", model: path)
        }
        var pending: [(start: Int, end: Int, descriptor: UnsafePointer<ProtobufCMessageDescriptor>, depth: Int)] =
            [(0, bytes.count, descriptor, 1)]
        func varint(_ position: inout Int, _ end: Int) throws -> UInt64 {
            var value: UInt64 = 0
            for shift in stride(from: 0, to: 64, by: 7) {
                guard position < end else { throw corrupt(position) }
                let byte = bytes[position]
                position += 1
                value |= UInt64(byte & 0x7F) << UInt64(shift)
                if byte & 0x80 == 0 { return value }
            }
            throw corrupt(position)
        }
        while let frame = pending.popLast() {
            var position = frame.start
            while position < frame.end {
                let keyOffset = position
                let key = try varint(&position, frame.end)
                let fixedSize: Int
                switch key & 7 {
                case 0: _ = try varint(&position, frame.end); continue
                case 1: fixedSize = 8
                case 5: fixedSize = 4
                case 2:
                    let length = try varint(&position, frame.end)
                    guard length <= UInt64(frame.end - position) else { throw corrupt(position) }
                    let end = position + Int(length)
                    if key >> 3 <= UInt64(UInt32.max),
                       let field = protobuf_c_message_descriptor_get_field(frame.descriptor, UInt32(key >> 3)) {
                        if field.pointee.type == PROTOBUF_C_TYPE_MESSAGE,
                           let sub = field.pointee.descriptor?.assumingMemoryBound(to: ProtobufCMessageDescriptor.self) {
                            guard frame.depth < maxMessageDepth else {
                                throw ONNXError(.parse, "messages are nested more than \(maxMessageDepth) deep; refusing a model that would exhaust the stack", model: path)
                            }
                            pending.append((position, end, sub, frame.depth + 1))
                        } else if field.pointee.type == PROTOBUF_C_TYPE_STRING,
                                  let zero = bytes[position ..< end].firstIndex(of: 0) {
                            let fieldName = String(cString: field.pointee.name)
                            let message = String(cString: frame.descriptor.pointee.short_name)
                            throw ONNXError(.parse, "\(message).\(fieldName) at byte \(keyOffset) holds a NUL byte (at byte \(zero)); names and strings with NUL bytes are refused, since they could not be told apart", model: path)
                        }
                    }
                    position = end
                    continue
                default:
                    throw corrupt(keyOffset)   // groups (wire types 3, 4) and invalid wire types
                }
                guard fixedSize <= frame.end - position else { throw corrupt(position) }
                position += fixedSize
            }
        }
    }

    var graph: UnsafeMutablePointer<Onnx__GraphProto> { proto.pointee.graph! }

    func serialized() -> [UInt8] {
        let size = onnx__model_proto__get_packed_size(proto)
        var out = [UInt8](repeating: 0, count: size)
        let written = out.withUnsafeMutableBufferPointer { onnx__model_proto__pack(proto, $0.baseAddress!) }
        precondition(written == size, "protobuf-c packed a different size than it computed")
        return out
    }
}

/// Reading and replacing the payload of a `TensorProto` in place. Memory handed to protobuf-c
/// comes from malloc, as its default allocator frees with free().
extension UnsafeMutablePointer where Pointee == Onnx__TensorProto {
    var name: String { pointee.name.map { String(cString: $0) } ?? "" }
    var dims: [Int64] { (0 ..< pointee.n_dims).map { pointee.dims[$0] } }
    var dataType: Int32 { pointee.data_type }
    var isExternal: Bool {
        pointee.has_data_location != 0 && pointee.data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL
    }

    /// `external_data` as a dictionary (later keys win, as in onnx's Python helper).
    var externalData: [String: String] {
        var out: [String: String] = [:]
        for i in 0 ..< pointee.n_external_data {
            guard let entry = pointee.external_data[i] else { continue }
            out[entry.pointee.key.map { String(cString: $0) } ?? ""] = entry.pointee.value.map { String(cString: $0) } ?? ""
        }
        return out
    }

    /// Drop every data field and free its memory at once (so a converter's memory falls as it
    /// goes). String data is never cleared: string tensors are refused before this.
    func clearData() {
        free(pointee.raw_data.data)
        pointee.raw_data = ProtobufCBinaryData(len: 0, data: nil)
        pointee.has_raw_data = 0
        free(pointee.float_data); pointee.float_data = nil; pointee.n_float_data = 0
        free(pointee.int32_data); pointee.int32_data = nil; pointee.n_int32_data = 0
        free(pointee.int64_data); pointee.int64_data = nil; pointee.n_int64_data = 0
        free(pointee.double_data); pointee.double_data = nil; pointee.n_double_data = 0
        free(pointee.uint64_data); pointee.uint64_data = nil; pointee.n_uint64_data = 0
        setExternalData([])
    }

    /// Replace the dims.
    func setDims(_ dims: [Int]) {
        free(pointee.dims)
        pointee.dims = nil
        pointee.n_dims = dims.count
        guard !dims.isEmpty else { return }
        pointee.dims = malloc(dims.count * MemoryLayout<Int64>.stride)!.assumingMemoryBound(to: Int64.self)
        for (i, d) in dims.enumerated() { pointee.dims[i] = Int64(d) }
    }

    /// Store `bytes` as `raw_data` (replacing any other data field).
    func setRawData(_ bytes: UnsafeRawBufferPointer) {
        clearData()
        let copy = malloc(max(bytes.count, 1))!.assumingMemoryBound(to: UInt8.self)
        if bytes.count > 0 { copy.initialize(from: bytes.bindMemory(to: UInt8.self).baseAddress!, count: bytes.count) }
        pointee.raw_data = ProtobufCBinaryData(len: bytes.count, data: copy)
        pointee.has_raw_data = 1
    }

    /// Replace `external_data` and mark the data external (or default, when `entries` is empty).
    func setExternalData(_ entries: [(String, String)]) {
        for i in 0 ..< pointee.n_external_data {
            if let entry = pointee.external_data[i] {
                protobuf_c_message_free_unpacked(UnsafeMutableRawPointer(entry).assumingMemoryBound(to: ProtobufCMessage.self), nil)
            }
        }
        free(pointee.external_data)
        pointee.external_data = nil
        pointee.n_external_data = 0
        pointee.has_data_location = 0
        pointee.data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__DEFAULT
        guard !entries.isEmpty else { return }
        let array = malloc(entries.count * MemoryLayout<UnsafeMutablePointer<Onnx__StringStringEntryProto>?>.stride)!
            .assumingMemoryBound(to: UnsafeMutablePointer<Onnx__StringStringEntryProto>?.self)
        for (i, (key, value)) in entries.enumerated() {
            let entry = malloc(MemoryLayout<Onnx__StringStringEntryProto>.stride)!.assumingMemoryBound(to: Onnx__StringStringEntryProto.self)
            onnx__string_string_entry_proto__init(entry)
            entry.pointee.key = strdup(key)
            entry.pointee.value = strdup(value)
            array[i] = entry
        }
        pointee.external_data = array
        pointee.n_external_data = entries.count
        pointee.has_data_location = 1
        pointee.data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL
    }
}

/// C string helpers for the other message types.
func string(_ p: UnsafeMutablePointer<CChar>?) -> String { p.map { String(cString: $0) } ?? "" }

/// Swift arrays over protobuf-c repeated fields.
func elements<T>(_ base: UnsafeMutablePointer<UnsafeMutablePointer<T>?>?, _ count: Int) -> [UnsafeMutablePointer<T>] {
    guard let base else { return [] }
    return (0 ..< count).compactMap { base[$0] }
}

/// Building new messages (for `export --keep-quantized`). Every allocation uses malloc/strdup,
/// which protobuf-c's default allocator frees with the rest of the model.
extension ProtoModel {
    /// The default-domain opset the model imports (0 when it imports none).
    var defaultOpset: Int64 {
        let imports = elements(proto.pointee.opset_import, proto.pointee.n_opset_import)
        return imports.first { ["", "ai.onnx"].contains(string($0.pointee.domain)) }?.pointee.version ?? 0
    }

    /// Every value name of the main graph: inputs, outputs, initializers, node outputs.
    var valueNames: Set<String> {
        let g = graph.pointee
        var names = Set<String>()
        for v in elements(g.input, g.n_input) { names.insert(string(v.pointee.name)) }
        for v in elements(g.output, g.n_output) { names.insert(string(v.pointee.name)) }
        for t in elements(g.initializer, g.n_initializer) { names.insert(t.name) }
        for node in elements(g.node, g.n_node) {
            for i in 0 ..< node.pointee.n_output { names.insert(string(node.pointee.output[i])) }
        }
        return names
    }

    static func newTensor(name: String, dims: [Int], dataType: DataType, raw: TensorBytes) -> UnsafeMutablePointer<Onnx__TensorProto> {
        let t = allocate(Onnx__TensorProto.self)
        onnx__tensor_proto__init(t)
        t.pointee.name = strdup(name)
        t.pointee.has_data_type = 1
        t.pointee.data_type = Int32(dataType.rawValue)
        t.setDims(dims)
        raw.withUnsafeBytes { t.setRawData($0) }
        return t
    }

    /// Replace main-graph initializer `old` with `replacement` and append `extra` initializers.
    func replaceInitializer(_ old: UnsafeMutablePointer<Onnx__TensorProto>, with replacement: UnsafeMutablePointer<Onnx__TensorProto>,
                            adding extra: [UnsafeMutablePointer<Onnx__TensorProto>]) {
        let g = graph
        for i in 0 ..< g.pointee.n_initializer where g.pointee.initializer[i] == old {
            g.pointee.initializer[i] = replacement
        }
        protobuf_c_message_free_unpacked(UnsafeMutableRawPointer(old).assumingMemoryBound(to: ProtobufCMessage.self), nil)
        let count = g.pointee.n_initializer + extra.count
        let array = realloc(g.pointee.initializer, count * MemoryLayout<UnsafeMutablePointer<Onnx__TensorProto>?>.stride)!
            .assumingMemoryBound(to: UnsafeMutablePointer<Onnx__TensorProto>?.self)
        for (k, t) in extra.enumerated() { array[g.pointee.n_initializer + k] = t }
        g.pointee.initializer = array
        g.pointee.n_initializer = count
    }

    /// Drop `name` from the main graph's inputs (old IR versions list initializers there too).
    func removeGraphInput(_ name: String) {
        let g = graph
        var kept = 0
        for i in 0 ..< g.pointee.n_input {
            guard let v = g.pointee.input[i] else { continue }
            if string(v.pointee.name) == name {
                protobuf_c_message_free_unpacked(UnsafeMutableRawPointer(v).assumingMemoryBound(to: ProtobufCMessage.self), nil)
            } else {
                g.pointee.input[kept] = v
                kept += 1
            }
        }
        g.pointee.n_input = kept
    }

    /// Put a node with integer attributes first in the main graph.
    func prependNode(opType: String, inputs: [String], outputs: [String], attributes: [(String, Int64)]) {
        let node = Self.allocate(Onnx__NodeProto.self)
        onnx__node_proto__init(node)
        node.pointee.op_type = strdup(opType)
        node.pointee.input = Self.strings(inputs)
        node.pointee.n_input = inputs.count
        node.pointee.output = Self.strings(outputs)
        node.pointee.n_output = outputs.count
        if !attributes.isEmpty {
            let array = malloc(attributes.count * MemoryLayout<UnsafeMutablePointer<Onnx__AttributeProto>?>.stride)!
                .assumingMemoryBound(to: UnsafeMutablePointer<Onnx__AttributeProto>?.self)
            for (k, (name, value)) in attributes.enumerated() {
                let a = Self.allocate(Onnx__AttributeProto.self)
                onnx__attribute_proto__init(a)
                a.pointee.name = strdup(name)
                a.pointee.has_type = 1
                a.pointee.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT
                a.pointee.has_i = 1
                a.pointee.i = value
                array[k] = a
            }
            node.pointee.attribute = array
            node.pointee.n_attribute = attributes.count
        }
        let g = graph
        let count = g.pointee.n_node + 1
        let nodes = realloc(g.pointee.node, count * MemoryLayout<UnsafeMutablePointer<Onnx__NodeProto>?>.stride)!
            .assumingMemoryBound(to: UnsafeMutablePointer<Onnx__NodeProto>?.self)
        for i in stride(from: count - 1, to: 0, by: -1) { nodes[i] = nodes[i - 1] }
        nodes[0] = node
        g.pointee.node = nodes
        g.pointee.n_node = count
    }

    private static func allocate<T>(_ type: T.Type) -> UnsafeMutablePointer<T> {
        malloc(MemoryLayout<T>.stride)!.assumingMemoryBound(to: T.self)
    }

    private static func strings(_ values: [String]) -> UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? {
        guard !values.isEmpty else { return nil }
        let array = malloc(values.count * MemoryLayout<UnsafeMutablePointer<CChar>?>.stride)!
            .assumingMemoryBound(to: UnsafeMutablePointer<CChar>?.self)
        for (i, v) in values.enumerated() { array[i] = strdup(v) }
        return array
    }
}
