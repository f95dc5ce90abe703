import CONNXProto
import Foundation
import Tessera

/// The graph section of a converted file is the source `ModelProto` with every tensor payload
/// removed; each stripped `TensorProto` is marked external with one entry naming its .tess tensor.
public enum GraphSection {
    public static let tensorKey = "tessera.tensor"

    /// Verify level 1 for the graph section: it parses as an ONNX model under the importer's
    /// checks (message depth, wire format, no NUL bytes in names) and every tensor it refers to
    /// is in the file. Returns the number of references, or nil when the file has no graph.
    @discardableResult
    public static func validate(_ file: TessFile) throws -> Int? {
        guard let bytes = file.graph else { return nil }
        let model = try bytes.withUnsafeBytes { try ProtoModel(bytes: $0, path: file.path) }
        var references = 0
        for site in payloadSites(of: model) {
            guard let name = site.storedTensorName else { continue }
            guard file.index(of: name) != nil else {
                throw ONNXError(.missingTensor, "the graph section refers to tensor '\(name)', which the file does not hold", model: file.path, tensor: name)
            }
            references += 1
        }
        return references
    }
}

/// What a conversion read and wrote. Per-tensor detail is the converter's report.
public struct ImportSummary: Sendable {
    public var tensorCount: Int
    /// The source model's size: its .onnx file and the external data files it reads.
    public var sourceFileBytes: Int
    public var graphBytes: Int
    /// Size of the written .tess file.
    public var fileBytes: Int
}

public enum ONNXImporter {
    /// Convert the ONNX model at `modelPath` into a .tess file at `output`, tensor by tensor:
    /// each tensor's bytes are read (external data through a memory map), passed through
    /// `transform`, written, and freed before the next. With the identity transform the
    /// conversion is lossless. `metadata` is called once every tensor is written; its keys go
    /// into the file's metadata next to `producer` and `source`. `progress` hears (done, total).
    /// The file is part of `outputs` (which the caller commits), or put in place at once when
    /// that is nil; either way neither the model nor its external data can be the output.
    @discardableResult
    public static func convert(model modelPath: String, to output: String, options: WriteOptions,
                               outputs: OutputGroup? = nil,
                               transform: (Tensor) throws -> Tensor = { $0 },
                               metadata: () throws -> [String: Any] = { ["conversion": ["mode": "lossless"]] },
                               progress: ((Int, Int) -> Void)? = nil) throws -> ImportSummary {
        let group = outputs ?? OutputGroup()
        group.addInput(modelPath)
        // Parse, then let the source mapping go: the parsed model holds copies of everything.
        let (model, sourceFileBytes, digest) = try parse(modelPath)
        try GraphAnalysis.checkReferences(model, path: modelPath)
        let writer: TessWriter
        do {
            writer = try TessWriter(path: output, options: options, group: group)
        } catch let error as TessError {
            throw ONNXError(.io, error.message, model: error.path ?? output)
        }
        var written = 0
        do {
            let externalBytes = try forEachTensor(model, path: modelPath, outputs: group) { site, tensor, total in
                try writer.append(try transform(tensor))
                strip(site, name: tensor.name)
                written += 1
                progress?(written, total)
            }
            let graph = model.serialized()
            var document = try metadata()
            document["producer"] = "tessera"
            document["source"] = ["file": URL(fileURLWithPath: modelPath).lastPathComponent, "bytes": sourceFileBytes, "xxh3": digest,
                                  "external_data_bytes": externalBytes]
            let fileBytes = try writer.finish(sections: [Section(.graph, payload: graph), try Section.metadata(document)])
            if outputs == nil { try group.commit() }
            return ImportSummary(tensorCount: written, sourceFileBytes: sourceFileBytes + externalBytes, graphBytes: graph.count,
                                 fileBytes: fileBytes)
        } catch {
            writer.abort()
            if let error = error as? ONNXError { throw error.inModel(modelPath) }
            if let error = error as? TessError { throw ONNXError(.badTensorData, error.description, model: modelPath) }
            throw error   // the transform's own errors pass through unchanged
        }
    }

    /// Read every tensor of the model at `modelPath` without writing anything (a first pass
    /// for decisions that need the whole model, such as a global pruning threshold).
    public static func scan(model modelPath: String, visit: (Tensor) throws -> Void) throws {
        let (model, _, _) = try parse(modelPath)
        try forEachTensor(model, path: modelPath) { _, tensor, _ in try visit(tensor) }
    }

    /// Every payload site's tensor, named, with its role and reduction axis, in site order
    /// (and the number of sites). Returns the bytes of the external data files read.
    @discardableResult
    static func forEachTensor(_ model: ProtoModel, path: String, outputs: OutputGroup? = nil,
                              _ body: (PayloadSite, Tensor, Int) throws -> Void) throws -> Int {
        let uses = GraphAnalysis.weightUses(model)
        let location = ModelLocation(path: path)
        let externalFiles = ExternalFiles(outputs: outputs)
        var namer = TensorNamer()
        let sites = payloadSites(of: model)
        for site in sites {
            let name = namer.name(for: site.suggestedName)
            var tensor: Tensor
            switch site.holder {
            case .tensor(let t):
                tensor = try denseTensor(t, name: name, location: location, externalFiles: externalFiles, owner: model)
            case .sparse(let s):
                tensor = try sparseTensor(s, name: name, location: location, externalFiles: externalFiles, owner: model)
            }
            if let use = uses[site.suggestedName] {
                tensor.role = use.role
                tensor.reductionAxis = use.reductionAxis(rank: tensor.shape.count)
            }
            try body(site, tensor, sites.count)
        }
        return externalFiles.totalBytes
    }

    static func parse(_ path: String) throws -> (ProtoModel, Int, String) {
        let source: MappedFile
        do {
            source = try MappedFile(path: path)
        } catch let error as TessError {
            throw ONNXError(.io, error.message, model: path)
        }
        return (try ProtoModel(bytes: source.bytes, path: path), source.bytes.count, Checksum.hex(Checksum.xxh3(source.bytes)))
    }

    static func shape(_ dims: [Int64], name: String, model: String) throws -> [Int] {
        guard dims.allSatisfy({ $0 >= 0 }) else {
            throw ONNXError(.badTensorData, "dims \(dims) contain a negative value", model: model, tensor: name)
        }
        let shape = dims.map { Int($0) }
        do {
            _ = try TensorGeometry(shape: shape)
        } catch let error as TessError {
            throw ONNXError(.badTensorData, error.message, model: model, tensor: name)
        }
        return shape
    }

    private static func denseTensor(_ t: UnsafeMutablePointer<Onnx__TensorProto>, name: String, location: ModelLocation,
                                    externalFiles: ExternalFiles, owner: ProtoModel) throws -> Tensor {
        let type = try DataType.onnx(t.dataType, model: location.path, tensor: name)
        let shape = try shape(t.dims, name: name, model: location.path)
        let count = try TensorGeometry(shape: shape).elementCount
        let data = try tensorData(t, type: type, count: count, name: name, location: location, externalFiles: externalFiles, owner: owner)
        return Tensor(name: name, dataType: type, shape: shape, storage: .dense(values: data))
    }

    /// A COO sparse initializer: 2-D ones become CSR, others dense.
    private static func sparseTensor(_ s: UnsafeMutablePointer<Onnx__SparseTensorProto>, name: String, location: ModelLocation,
                                     externalFiles: ExternalFiles, owner: ProtoModel) throws -> Tensor {
        let model = location.path
        guard let valuesProto = s.pointee.values, let indicesProto = s.pointee.indices else {
            throw ONNXError(.badTensorData, "sparse initializer lacks values or indices", model: model, tensor: name)
        }
        let type = try DataType.onnx(valuesProto.dataType, model: model, tensor: name)
        let shape = try shape((0 ..< s.pointee.n_dims).map { s.pointee.dims[$0] }, name: name, model: model)
        guard valuesProto.dims.count == 1 else {
            throw ONNXError(.badTensorData, "sparse values must be 1-D, got dims \(valuesProto.dims)", model: model, tensor: name)
        }
        // Counts from the file go through the same checked geometry as dense dims.
        let nnz = try Self.shape(valuesProto.dims, name: name, model: model)[0]
        let values = try tensorData(valuesProto, type: type, count: nnz, name: name, location: location, externalFiles: externalFiles, owner: owner)
        let (linear, indexBytes) = try linearIndices(indicesProto, nnz: nnz, shape: shape, name: name, location: location,
                                                     externalFiles: externalFiles, owner: owner)
        // The graph section keeps the indices (see strip); external ones move inline there.
        if indicesProto.isExternal { indexBytes.withUnsafeBytes { indicesProto.setRawData($0) } }
        // Any order is kept; duplicates are refused.
        let tensor: Tensor
        do {
            let dense = try Tensor.fromCOO(name: name, dataType: type, shape: shape, linearIndices: linear, values: values, anyOrder: true)
            tensor = shape.count == 2 ? try dense.encoded(as: .csr) : dense
        } catch let error as TessError {
            throw ONNXError(.badTensorData, "sparse initializer: \(error.message)", model: model, tensor: name)
        }
        return tensor
    }

    /// A sparse initializer's indices as row-major positions in `shape`, in their stored order:
    /// from the linear form `[nnz]` or the coordinate form `[nnz, rank]` (each checked in range);
    /// and their bytes.
    static func linearIndices(_ indices: UnsafeMutablePointer<Onnx__TensorProto>, nnz: Int, shape: [Int], name: String,
                              location: ModelLocation, externalFiles: ExternalFiles,
                              owner: AnyObject & Sendable) throws -> ([Int], TensorBytes) {
        let model = location.path
        guard indices.dataType == Int32(DataType.int64.rawValue) else {
            throw ONNXError(.badTensorData, "sparse indices must be int64", model: model, tensor: name)
        }
        let rank = shape.count
        let linearForm = indices.dims == [Int64(nnz)]
        guard linearForm || indices.dims == [Int64(nnz), Int64(rank)] else {
            throw ONNXError(.badTensorData, "sparse indices dims \(indices.dims) must be [\(nnz)] or [\(nnz), \(rank)]", model: model, tensor: name)
        }
        let count = try Self.shape(indices.dims, name: name, model: model).reduce(1, *)
        let bytes = try tensorData(indices, type: .int64, count: count, name: name, location: location, externalFiles: externalFiles, owner: owner)
        let raw: [Int64] = bytes.withUnsafeBytes { p in (0 ..< count).map { Int64(littleEndian: p.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self)) } }
        if linearForm { return (raw.map { Int($0) }, bytes) }
        return (try (0 ..< nnz).map { j in
            var index = 0
            for axis in 0 ..< rank {
                let c = Int(raw[j * rank + axis])
                guard c >= 0, c < shape[axis] else {
                    throw ONNXError(.badTensorData, "sparse index \(j) is out of range on axis \(axis)", model: model, tensor: name)
                }
                index = index * shape[axis] + c
            }
            return index
        }, bytes)
    }

    /// Remove the payload from the model and point it at the .tess tensor `name`.
    private static func strip(_ site: PayloadSite, name: String) {
        switch site.holder {
        case .tensor(let t):
            t.clearData()
            t.setExternalData([(GraphSection.tensorKey, name)])
        case .sparse(let s):
            // The indices stay, so that export rebuilds the source's values and indices exactly
            // (explicit zeros and index order included) by reading the tensor at them.
            s.pointee.values?.clearData()
            s.pointee.values?.setExternalData([(GraphSection.tensorKey, name)])
        }
    }
}
