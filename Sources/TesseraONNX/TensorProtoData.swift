import CONNXProto
import Foundation
import Tessera

/// Where a model's external data files may live: its own folder, nothing outside it.
struct ModelLocation {
    let path: String
    let folder: String

    init(path: String) {
        self.path = path
        let url = URL(fileURLWithPath: path)
        folder = url.deletingLastPathComponent().standardizedFileURL.resolvingSymlinksInPath().path
    }

    /// The file an external `location` names, refused when absolute or outside the folder
    /// (after resolving `..` and symbolic links).
    func resolve(_ location: String, tensor: String) throws -> String {
        guard !location.isEmpty else {
            throw ONNXError(.externalData, "external data has no location", model: path, tensor: tensor)
        }
        guard !location.hasPrefix("/") else {
            throw ONNXError(.externalData, "external data location '\(location)' is absolute; only paths relative to the model's folder are allowed", model: path, tensor: tensor)
        }
        let resolved = URL(fileURLWithPath: folder).appendingPathComponent(location).standardizedFileURL.resolvingSymlinksInPath().path
        guard resolved.hasPrefix(folder.hasSuffix("/") ? folder : folder + "/") else {
            throw ONNXError(.externalData, "external data location '\(location)' leaves the model's folder", model: path, tensor: tensor)
        }
        return resolved
    }
}

/// Maps external data files once each, however many tensors they hold, and records each as
/// an input of `outputs` (so that no output of the command can replace one).
final class ExternalFiles {
    private var maps: [String: MappedFile] = [:]
    private let outputs: OutputGroup?

    init(outputs: OutputGroup? = nil) { self.outputs = outputs }

    /// Bytes of the distinct files mapped so far.
    var totalBytes: Int { maps.values.reduce(0) { $0 + $1.bytes.count } }

    func map(_ path: String, model: String, tensor: String) throws -> MappedFile {
        if let m = maps[path] { return m }
        do {
            let m = try MappedFile(path: path)
            maps[path] = m
            outputs?.addInput(path)
            return m
        } catch let error as TessError {
            throw ONNXError(.externalData, "cannot read external data file \(path): \(error.message)", model: model, tensor: tensor)
        }
    }
}

extension DataType {
    /// The Tessera type for an ONNX data type number, or a clear error.
    static func onnx(_ raw: Int32, model: String, tensor: String) throws -> DataType {
        if raw == 8 {
            throw ONNXError(.unsupportedDataType, "string tensors cannot be stored in a .tess file", model: model, tensor: tensor)
        }
        guard raw > 0, let type = DataType(number: raw) else {
            throw ONNXError(.unsupportedDataType, "ONNX data type \(raw) is not supported (.tess v1 stores types 1-23 except string)", model: model, tensor: tensor)
        }
        return type
    }
}

/// The little-endian bytes of a `TensorProto`'s data, from whichever field holds them.
///
/// `raw_data` is borrowed in place from `owner` (the parsed model), not copied.
func tensorData(_ t: UnsafeMutablePointer<Onnx__TensorProto>, type: DataType, count: Int, name: String,
                location: ModelLocation, externalFiles: ExternalFiles, owner: AnyObject & Sendable) throws -> TensorBytes {
    let model = location.path
    let expected = type.byteCount(count)
    func mismatch(_ what: String, _ got: Int, _ want: Int) -> ONNXError {
        ONNXError(.badTensorData, "\(what) holds \(got) values but dims \(t.dims) need \(want)", model: model, tensor: name)
    }
    if t.pointee.segment != nil {
        throw ONNXError(.badTensorData, "segmented tensors are not supported", model: model, tensor: name)
    }
    if t.isExternal {
        let info = t.externalData
        let file = try location.resolve(info["location"] ?? "", tensor: name)
        let map = try externalFiles.map(file, model: model, tensor: name)
        guard let offset = Int(info["offset"] ?? "0"), offset >= 0 else {
            throw ONNXError(.externalData, "external data offset '\(info["offset"] ?? "")' is not a byte offset", model: model, tensor: name)
        }
        let length = try info["length"].map { text -> Int in
            guard let n = Int(text), n >= 0 else {
                throw ONNXError(.externalData, "external data length '\(text)' is not a byte count", model: model, tensor: name)
            }
            return n
        } ?? expected
        guard length == expected else {
            throw ONNXError(.badTensorData, "external data length is \(length) bytes but dims \(t.dims) of \(type) need \(expected)", model: model, tensor: name)
        }
        guard offset <= map.bytes.count, length <= map.bytes.count - offset else {
            throw ONNXError(.externalData, "external data file \(file) has \(map.bytes.count) bytes, too short for \(length) bytes at offset \(offset)", model: model, tensor: name)
        }
        return TensorBytes(mapped: map, offset: offset, count: length)
    }
    if t.pointee.has_raw_data != 0 {
        let raw = t.pointee.raw_data
        guard raw.len == expected else {
            throw ONNXError(.badTensorData, "raw_data has \(raw.len) bytes but dims \(t.dims) of \(type) need \(expected)", model: model, tensor: name)
        }
        return TensorBytes(unsafeBorrowing: UnsafeRawBufferPointer(start: raw.data, count: raw.len), owner: owner)
    }
    let p = t.pointee
    switch type {
    case .float, .complex64:
        let want = type == .float ? count : 2 * count
        guard p.n_float_data == want else { throw mismatch("float_data", p.n_float_data, want) }
        return TensorBytes(littleEndian: (0 ..< want).map { p.float_data[$0].bitPattern })
    case .double, .complex128:
        let want = type == .double ? count : 2 * count
        guard p.n_double_data == want else { throw mismatch("double_data", p.n_double_data, want) }
        return TensorBytes(littleEndian: (0 ..< want).map { p.double_data[$0].bitPattern })
    case .int64:
        guard p.n_int64_data == count else { throw mismatch("int64_data", p.n_int64_data, count) }
        return TensorBytes(littleEndian: (0 ..< count).map { p.int64_data[$0] })
    case .uint64:
        guard p.n_uint64_data == count else { throw mismatch("uint64_data", p.n_uint64_data, count) }
        return TensorBytes(littleEndian: (0 ..< count).map { p.uint64_data[$0] })
    case .uint32:
        guard p.n_uint64_data == count else { throw mismatch("uint64_data", p.n_uint64_data, count) }
        return TensorBytes(littleEndian: (0 ..< count).map { UInt32(truncatingIfNeeded: p.uint64_data[$0]) })
    case .int4, .uint4, .float4e2m1:
        // Each int32 holds one byte: two packed 4-bit elements.
        let want = (count + 1) / 2
        guard p.n_int32_data == want else { throw mismatch("int32_data", p.n_int32_data, want) }
        return TensorBytes((0 ..< want).map { UInt8(truncatingIfNeeded: p.int32_data[$0]) })
    case .int32:
        guard p.n_int32_data == count else { throw mismatch("int32_data", p.n_int32_data, count) }
        return TensorBytes(littleEndian: (0 ..< count).map { p.int32_data[$0] })
    case .int16, .uint16, .float16, .bfloat16:
        guard p.n_int32_data == count else { throw mismatch("int32_data", p.n_int32_data, count) }
        return TensorBytes(littleEndian: (0 ..< count).map { UInt16(truncatingIfNeeded: p.int32_data[$0]) })
    case .int8, .uint8, .bool, .float8e4m3fn, .float8e4m3fnuz, .float8e5m2, .float8e5m2fnuz:
        guard p.n_int32_data == count else { throw mismatch("int32_data", p.n_int32_data, count) }
        return TensorBytes((0 ..< count).map { UInt8(truncatingIfNeeded: p.int32_data[$0]) })
    }
}
