import CONNXProto
import Foundation
import Tessera

public struct ExportOptions: Sendable {
    public var replaceExisting: Bool
    /// When the tensor data would exceed this many bytes, tensors of at least
    /// `externalMinimumBytes` go to `OUT.data` (protobuf cannot hold more than 2 GiB).
    public var externalDataThreshold: Int
    public var externalMinimumBytes: Int
    /// Write quantized main-graph initializers as integer codes plus a DequantizeLinear node,
    /// instead of dequantizing them.
    public var keepQuantized: Bool

    public init(replaceExisting: Bool = false, externalDataThreshold: Int = 2_000_000_000, externalMinimumBytes: Int = 1024,
                keepQuantized: Bool = false) {
        self.replaceExisting = replaceExisting
        self.keepQuantized = keepQuantized
        self.externalDataThreshold = externalDataThreshold
        self.externalMinimumBytes = externalMinimumBytes
    }
}

public struct ExportSummary: Sendable {
    public var tensors: Int
    public var modelBytes: Int
    /// Path and size of the external data file, when one was written.
    public var externalData: (path: String, bytes: Int)?
}

public enum ONNXExporter {
    /// Rebuild the ONNX model of a converted .tess file: the graph section with every tensor's
    /// data restored. Sparse layouts are densified; quantized tensors are dequantized to their
    /// logical float type. Output is written atomically. External data goes to
    /// `OUT.<digest>.data`, a name unique to what is exported: it is put in place before the
    /// model, so a model under its final name always reads its own data, even after a crash
    /// between the two. Data files of earlier exports to the same name are removed afterwards.
    @discardableResult
    public static func export(_ file: TessFile, to output: String, options: ExportOptions = ExportOptions()) throws -> ExportSummary {
        guard let graph = file.graph else {
            throw ONNXError(.notConverted, "has no ONNX graph section; only files converted from ONNX can be exported", model: file.path)
        }
        let model = try graph.withUnsafeBytes { try ProtoModel(bytes: $0, path: file.path) }
        let sites = payloadSites(of: model)

        // First pass: sizes only, to decide whether the data must go to an external file.
        var total = 0
        for site in sites {
            guard let name = site.storedTensorName, let i = file.index(of: name) else { continue }
            let entry = file.tensors[i]
            total += entry.dataType.byteCount(try TensorGeometry(shape: entry.shape).elementCount)
        }
        let external = total > options.externalDataThreshold
        let outputs = OutputGroup(inputs: [file.path])
        let dataName = "\(URL(fileURLWithPath: output).lastPathComponent).\(dataDigest(file, options)).data"
        let dataPath = URL(fileURLWithPath: output).deletingLastPathComponent().appendingPathComponent(dataName).path
        let dataFile = external ? try outputs.file(dataPath, replaceExisting: true) : nil
        let modelFile = try outputs.file(output, replaceExisting: options.replaceExisting)

        var count = 0
        for site in sites {
            guard let name = site.storedTensorName else { continue }
            let tensor: Tensor
            do {
                tensor = try file.tensor(named: name)
            } catch let error as TessError where error.code == .invalidArgument {
                throw ONNXError(.missingTensor, "the graph refers to tensor '\(name)', which the file does not hold", model: file.path, tensor: name)
            }
            count += 1
            switch site.holder {
            case .tensor(let t) where options.keepQuantized && tensor.quantization != nil && site.isMainInitializer:
                try keepQuantized(tensor, replacing: t, in: model, path: file.path)
            case .tensor(let t):
                guard t.dims == tensor.shape.map(Int64.init) else {
                    throw ONNXError(.badTensorData, "graph dims \(t.dims) differ from the stored shape \(tensor.shape)", model: file.path, tensor: name)
                }
                let bytes = try onnxBytes(tensor, as: t.dataType, path: file.path)
                if let dataFile, bytes.count >= options.externalMinimumBytes {
                    try dataFile.pad(to: (dataFile.position + 4095) / 4096 * 4096)
                    let offset = dataFile.position
                    try bytes.withUnsafeBytes { try dataFile.write($0) }
                    t.clearData()
                    t.setExternalData([("location", dataName), ("offset", String(offset)), ("length", String(bytes.count))])
                } else {
                    bytes.withUnsafeBytes { t.setRawData($0) }
                }
            case .sparse(let s):
                guard let v = s.pointee.values, let ix = s.pointee.indices else { continue }
                let nnz = Int(ix.dims.first ?? 0)
                if nnz == 0 || ix.pointee.has_raw_data != 0 || ix.pointee.n_int64_data > 0 {
                    // The source's indices, kept in the graph section: the values at them, in
                    // their order, rebuild the source's sparse initializer exactly.
                    let (linear, _) = try ONNXImporter.linearIndices(ix, nnz: nnz, shape: tensor.shape, name: name,
                                                                     location: ModelLocation(path: file.path),
                                                                     externalFiles: ExternalFiles(), owner: model)
                    try tensor.values(atLinearIndices: linear).withUnsafeBytes { v.setRawData($0) }
                    v.setDims([nnz])
                    continue
                }
                // Files written before the graph section kept the indices: the non-absent
                // elements in row-major order.
                let (indices, values) = try tensor.coo()
                values.withUnsafeBytes { v.setRawData($0) }
                v.setDims([indices.count])
                let rank = tensor.shape.count
                let coordinates: [Int64]
                if ix.dims.count == 1 {
                    coordinates = indices.map(Int64.init)
                } else {
                    coordinates = indices.flatMap { linear -> [Int64] in
                        var rest = linear
                        var c = [Int64](repeating: 0, count: rank)
                        for axis in stride(from: rank - 1, through: 0, by: -1) {
                            c[axis] = Int64(rest % tensor.shape[axis])
                            rest /= tensor.shape[axis]
                        }
                        return c
                    }
                }
                TensorBytes(littleEndian: coordinates).withUnsafeBytes { ix.setRawData($0) }
                ix.setDims(ix.dims.count == 1 ? [indices.count] : [indices.count, rank])
            }
        }

        let bytes = model.serialized()
        try modelFile.write(bytes)
        try outputs.commit()   // the data file first, then the model
        removeEarlierDataFiles(of: output, keeping: dataName)
        return ExportSummary(tensors: count, modelBytes: bytes.count, externalData: dataFile.map { (dataPath, $0.position) })
    }

    /// 16 hex digits naming the exported data: the file's index checksum (which covers every
    /// buffer's checksum, name and shape), its graph, and the options that change the bytes.
    private static func dataDigest(_ file: TessFile, _ options: ExportOptions) -> String {
        let graph = file.graph.map { Checksum.xxh3($0) } ?? 0
        let key = TensorBytes(littleEndian: [file.header.indexChecksum, graph, UInt64(options.keepQuantized ? 1 : 0),
                                             UInt64(options.externalMinimumBytes)])
        return key.withUnsafeBytes { Checksum.hex(Checksum.xxh3($0)) }
    }

    /// Delete `OUT.<16 hex digits>.data` files other than `keeping`: the data of models this
    /// export replaced, or of one interrupted before its model was put in place.
    private static func removeEarlierDataFiles(of output: String, keeping: String) {
        let folder = URL(fileURLWithPath: output).deletingLastPathComponent().path
        let prefix = URL(fileURLWithPath: output).lastPathComponent + "."
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder) else { return }
        for name in names where name != keeping && name.hasPrefix(prefix) && name.hasSuffix(".data") {
            let digest = name.dropFirst(prefix.count).dropLast(".data".count)
            if digest.count == 16, digest.allSatisfy(\.isHexDigit) { try? FileManager.default.removeItem(atPath: folder + "/" + name) }
        }
    }

    /// Replace initializer `t` by its integer codes, scales and zero points, and produce its
    /// original name with a DequantizeLinear node (axis / block_size as the granularity needs).
    private static func keepQuantized(_ tensor: Tensor, replacing t: UnsafeMutablePointer<Onnx__TensorProto>,
                                      in model: ProtoModel, path: String) throws {
        let q = tensor.quantization!
        let name = t.name
        guard tensor.dataType == .float else {
            throw ONNXError(.unsupportedDataType, "--keep-quantized writes float32 weights only; this one is \(tensor.dataType)", model: path, tensor: name)
        }
        let opset: Int64, attributes: [(String, Int64)]
        switch q.granularity {
        case .perTensor: (opset, attributes) = (10, [])
        case .perAxis(let axis): (opset, attributes) = (13, [("axis", Int64(axis))])
        case .perGroup(let axis, let block): (opset, attributes) = (21, [("axis", Int64(axis)), ("block_size", Int64(block))])
        }
        let needed = q.codeType.bitWidth == 4 ? max(opset, 21) : opset
        guard model.defaultOpset >= needed else {
            throw ONNXError(.unsupportedDataType, "--keep-quantized needs opset \(needed) for a \(q.summary) DequantizeLinear; the model imports opset \(model.defaultOpset) (export without --keep-quantized to dequantize)", model: path, tensor: name)
        }
        let geometry = try TensorGeometry(shape: tensor.shape)
        let scaleShape = geometry.scaleShape(q.granularity)
        guard case .dense(let codes) = try tensor.encoded(as: .dense).storage else { preconditionFailure("dense") }
        let scales = q.scaleType == .float ? q.scales
            : TensorBytes(float32: try ScalarDecoding.floats(q.scales, type: q.scaleType, count: geometry.scaleCount(q.granularity)))
        var taken = model.valueNames
        func fresh(_ base: String) -> String {
            var candidate = base, k = 1
            while taken.contains(candidate) { candidate = "\(base)#\(k)"; k += 1 }
            taken.insert(candidate)
            return candidate
        }
        let codesName = fresh(name + "::quantized"), scaleName = fresh(name + "::scale")
        var extra = [ProtoModel.newTensor(name: scaleName, dims: scaleShape, dataType: .float, raw: scales)]
        var inputs = [codesName, scaleName]
        if let zeroPoints = q.zeroPoints {
            let zeroPointName = fresh(name + "::zero_point")
            extra.append(ProtoModel.newTensor(name: zeroPointName, dims: scaleShape, dataType: q.codeType, raw: zeroPoints))
            inputs.append(zeroPointName)
        }
        model.replaceInitializer(t, with: ProtoModel.newTensor(name: codesName, dims: tensor.shape, dataType: q.codeType, raw: codes),
                                 adding: extra)
        model.removeGraphInput(name)
        model.prependNode(opType: "DequantizeLinear", inputs: inputs, outputs: [name], attributes: attributes)
    }

    /// The .tess tensor a site points at, if its payload was moved out at conversion.
    /// The tensor's elements as ONNX raw_data of type `onnxType`.
    private static func onnxBytes(_ tensor: Tensor, as onnxType: Int32, path: String) throws -> TensorBytes {
        guard onnxType == Int32(tensor.dataType.rawValue) else {
            throw ONNXError(.badTensorData, "graph type \(onnxType) differs from the stored type \(tensor.dataType)", model: path, tensor: tensor.name)
        }
        guard tensor.quantization != nil else {
            guard case .dense(let values) = try tensor.encoded(as: .dense).storage else { preconditionFailure("dense") }
            return values
        }
        let floats = try tensor.densify()
        switch tensor.dataType {
        case .float: return TensorBytes(float32: floats)
        case .double: return TensorBytes(littleEndian: floats.map { Double($0).bitPattern })
        case .float16: return TensorBytes(littleEndian: floats.map { Float16($0).bitPattern })
        case .bfloat16: return TensorBytes(littleEndian: floats.map(bfloat16Bits))
        default: throw ONNXError(.unsupportedDataType, "a quantized tensor must dequantize to a float type", model: path, tensor: tensor.name)
        }
    }

    /// float32 -> bfloat16 with round-half-to-even (NaN stays a quiet NaN).
    static func bfloat16Bits(_ x: Float) -> UInt16 {
        if x.isNaN { return 0x7FC0 }
        let bits = x.bitPattern
        let rounding = 0x7FFF + ((bits >> 16) & 1)
        return UInt16((bits &+ rounding) >> 16)
    }
}
