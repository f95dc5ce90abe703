import CONNXProto
import Foundation
import Tessera

public struct ExportOptions: Sendable {
    public var replaceExisting: Bool
    /// When the tensor data would exceed this many bytes, tensors of at least
    /// `externalMinimumBytes` go to `OUT.data` (protobuf cannot hold more than 2 GiB).
    public var externalDataThreshold: Int
    public var externalMinimumBytes: Int

    public init(replaceExisting: Bool = false, externalDataThreshold: Int = 2_000_000_000, externalMinimumBytes: Int = 1024) {
        self.replaceExisting = replaceExisting
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
    /// logical float type. Output is written atomically.
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
            guard let name = tensorName(site), let i = file.index(of: name) else { continue }
            let entry = file.tensors[i]
            total += entry.dataType.byteCount(try TensorGeometry(shape: entry.shape).elementCount)
        }
        let external = total > options.externalDataThreshold
        let dataPath = output + ".data"
        let dataFile = external ? try AtomicFile(path: dataPath, replaceExisting: options.replaceExisting) : nil
        let dataName = URL(fileURLWithPath: dataPath).lastPathComponent

        var count = 0
        for site in sites {
            guard let name = tensorName(site) else { continue }
            let tensor: Tensor
            do {
                tensor = try file.tensor(named: name)
            } catch let error as TessError where error.code == .invalidArgument {
                throw ONNXError(.missingTensor, "the graph refers to tensor '\(name)', which the file does not hold", model: file.path, tensor: name)
            }
            count += 1
            switch site.holder {
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
                let (indices, values) = try tensor.coo()
                guard let v = s.pointee.values, let ix = s.pointee.indices else { continue }
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
        let modelFile = try AtomicFile(path: output, replaceExisting: options.replaceExisting)
        try modelFile.write(bytes)
        if let dataFile {
            let size = dataFile.position
            try dataFile.commit()
            try modelFile.commit()
            return ExportSummary(tensors: count, modelBytes: bytes.count, externalData: (dataPath, size))
        }
        try modelFile.commit()
        return ExportSummary(tensors: count, modelBytes: bytes.count, externalData: nil)
    }

    /// The .tess tensor a site points at, if its payload was moved out at conversion.
    private static func tensorName(_ site: PayloadSite) -> String? {
        switch site.holder {
        case .tensor(let t): return t.isExternal ? t.externalData[GraphSection.tensorKey] : nil
        case .sparse(let s): return s.pointee.values.flatMap { $0.isExternal ? $0.externalData[GraphSection.tensorKey] : nil }
        }
    }

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
