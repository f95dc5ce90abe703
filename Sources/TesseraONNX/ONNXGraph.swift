import CONNXProto
import Foundation
import Tessera

/// The computation graph of an ONNX model as plain Swift values: what an executor needs, with
/// every payload resolved to a `Tensor`. From a source `.onnx` the tensors are its own (dense,
/// or CSR for sparse initializers); from a converted `.tess` they are the stored tensors, in
/// their stored layouts and quantization.
public struct ONNXGraph: Sendable {
    public enum Dimension: Sendable, Equatable, CustomStringConvertible {
        case fixed(Int)
        case symbolic(String)
        case unknown

        public var description: String {
            switch self {
            case .fixed(let n): return String(n)
            case .symbolic(let name): return name
            case .unknown: return "?"
            }
        }
    }

    /// A graph input or output: its name and, where the model declares them, type and dims.
    public struct ValueInfo: Sendable {
        /// What the value is: a tensor (also when undeclared), a sequence of tensors, an optional
        /// (of a tensor or a sequence), or a kind the executor does not hold (a map).
        public enum Kind: Sendable { case tensor, sequence, optional, other }

        public var name: String
        public var kind: Kind
        /// The ONNX element type number (1 = float, 7 = int64, 9 = bool, ...) of the tensor, or
        /// of the tensors a sequence or optional holds; 0 when undeclared.
        public var elementType: Int32
        /// The tensor's dims; nil when the model declares no shape, and for other kinds.
        public var dims: [Dimension]?

        public init(name: String, kind: Kind = .tensor, elementType: Int32 = 0, dims: [Dimension]? = nil) {
            self.name = name; self.kind = kind; self.elementType = elementType; self.dims = dims
        }
    }

    public enum Attribute: Sendable {
        case int(Int64)
        case float(Float)
        case string(String)
        case ints([Int64])
        case floats([Float])
        case strings([String])
        case tensor(Tensor)
        /// A body (If's branches, Loop's and Scan's body), parsed as its own graph.
        case graph(ONNXGraph)
        case graphs([ONNXGraph])
        /// A type (Optional's `type`), as a value info without a name.
        case type(ValueInfo)
        /// Sparse tensors and lists of types: kept only so that their presence is known.
        case unsupported(String)
    }

    public struct Node: Sendable {
        public var name: String
        public var opType: String
        /// "" for the default ONNX domain ("ai.onnx" is normalised to "").
        public var domain: String
        /// Empty strings mark omitted optional inputs.
        public var inputs: [String]
        public var outputs: [String]
        public var attributes: [String: Attribute]

        public init(name: String = "", opType: String, domain: String = "", inputs: [String], outputs: [String],
                    attributes: [String: Attribute] = [:]) {
            self.name = name; self.opType = opType; self.domain = domain
            self.inputs = inputs; self.outputs = outputs; self.attributes = attributes
        }

        /// "name (OpType)", or the op type alone for an unnamed node.
        public var label: String { name.isEmpty ? opType : "\(name) (\(opType))" }
    }

    /// Where the graph came from (for messages).
    public var path: String
    /// Opset version per domain ("" for the default domain).
    public var opsets: [String: Int64]
    /// Graph inputs that are not initializers.
    public var inputs: [ValueInfo]
    /// Graph inputs that are also initializers: the initializer is a default a caller may
    /// override (ONNX IR 4 and later).
    public var overridableInputs: [ValueInfo] = []
    public var outputs: [ValueInfo]
    public var initializers: [String: Tensor]
    public var nodes: [Node]

    public var defaultOpset: Int64 { opsets[""] ?? 0 }

    /// A graph built in code (tests, or models assembled without ONNX).
    public init(nodes: [Node], inputs: [ValueInfo], outputs: [ValueInfo], initializers: [String: Tensor] = [:],
                opsets: [String: Int64] = ["": 17], path: String = "<in memory>") {
        self.nodes = nodes; self.inputs = inputs; self.outputs = outputs
        self.initializers = initializers; self.opsets = opsets; self.path = path
    }

    /// The graph of the ONNX model at `path`, with its own tensors (external data included).
    public init(model path: String) throws {
        let (model, _, _) = try ONNXImporter.parse(path)
        try GraphAnalysis.checkReferences(model, path: path)
        var tensors: [PayloadSite.Key: Tensor] = [:]
        try ONNXImporter.forEachTensor(model, path: path) { site, tensor, _ in tensors[site.key] = tensor }
        try self.init(model, path: path, tensors: tensors)
    }

    /// The graph section of a converted file, each payload the file's stored tensor.
    public init(file: TessFile) throws {
        guard let bytes = file.graph else {
            throw ONNXError(.notConverted, "has no ONNX graph section; only files converted from ONNX hold a graph to run", model: file.path)
        }
        let model = try bytes.withUnsafeBytes { try ProtoModel(bytes: $0, path: file.path) }
        var tensors: [PayloadSite.Key: Tensor] = [:]
        for site in payloadSites(of: model) {
            guard let name = site.storedTensorName else { continue }
            do {
                tensors[site.key] = try file.tensor(named: name)
            } catch let error as TessError where error.code == .invalidArgument {
                throw ONNXError(.missingTensor, "the graph refers to tensor '\(name)', which the file does not hold", model: file.path, tensor: name)
            }
        }
        try self.init(model, path: file.path, tensors: tensors)
    }

    private init(_ model: ProtoModel, path: String, tensors: [PayloadSite.Key: Tensor]) throws {
        var opsets: [String: Int64] = [:]
        for entry in elements(model.proto.pointee.opset_import, model.proto.pointee.n_opset_import) {
            let domain = string(entry.pointee.domain)
            opsets[domain == "ai.onnx" ? "" : domain] = entry.pointee.version
        }
        self.init(model.graph, opsets: opsets, path: path, tensors: tensors)
    }

    /// A graph of the model (the main graph or a subgraph), its payloads taken from `tensors`.
    private init(_ graph: UnsafeMutablePointer<Onnx__GraphProto>, opsets: [String: Int64], path: String,
                 tensors: [PayloadSite.Key: Tensor]) {
        self.path = path
        self.opsets = opsets
        let g = graph.pointee
        var initializers: [String: Tensor] = [:]
        for t in elements(g.initializer, g.n_initializer) {
            if let tensor = tensors[.tensor(t)] { initializers[t.name] = tensor }
        }
        for s in elements(g.sparse_initializer, g.n_sparse_initializer) {
            if let tensor = tensors[.sparse(s)], let name = s.pointee.values?.name { initializers[name] = tensor }
        }
        self.initializers = initializers
        let declared = elements(g.input, g.n_input).map(Self.valueInfo)
        inputs = declared.filter { initializers[$0.name] == nil }
        overridableInputs = declared.filter { initializers[$0.name] != nil }
        outputs = elements(g.output, g.n_output).map(Self.valueInfo)
        nodes = elements(g.node, g.n_node).map { node in
            let p = node.pointee
            var attributes: [String: Attribute] = [:]
            for a in elements(p.attribute, p.n_attribute) {
                attributes[string(a.pointee.name)] = Self.attribute(a, opsets: opsets, path: path, tensors: tensors)
            }
            let domain = string(p.domain)
            return Node(name: string(p.name), opType: string(p.op_type), domain: domain == "ai.onnx" ? "" : domain,
                        inputs: (0 ..< p.n_input).map { string(p.input[$0]) },
                        outputs: (0 ..< p.n_output).map { string(p.output[$0]) }, attributes: attributes)
        }
    }

    private static func valueInfo(_ v: UnsafeMutablePointer<Onnx__ValueInfoProto>) -> ValueInfo {
        typeInfo(v.pointee.type, name: string(v.pointee.name))
    }

    private static func typeInfo(_ type: UnsafeMutablePointer<Onnx__TypeProto>?, name: String) -> ValueInfo {
        var info = ValueInfo(name: name)
        guard let type else { return info }
        switch type.pointee.value_case {
        case ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE: break
        case ONNX__TYPE_PROTO__VALUE_SEQUENCE_TYPE, ONNX__TYPE_PROTO__VALUE_OPTIONAL_TYPE:
            info.kind = type.pointee.value_case == ONNX__TYPE_PROTO__VALUE_SEQUENCE_TYPE ? .sequence : .optional
            // The element type of the innermost tensor (an optional may hold a sequence).
            var inner: UnsafeMutablePointer<Onnx__TypeProto>? = type
            while let t = inner {
                switch t.pointee.value_case {
                case ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE: info.elementType = t.pointee.tensor_type?.pointee.elem_type ?? 0; inner = nil
                case ONNX__TYPE_PROTO__VALUE_SEQUENCE_TYPE: inner = t.pointee.sequence_type?.pointee.elem_type
                case ONNX__TYPE_PROTO__VALUE_OPTIONAL_TYPE: inner = t.pointee.optional_type?.pointee.elem_type
                default: info.kind = .other; inner = nil
                }
            }
            return info
        default:
            info.kind = .other
            return info
        }
        guard let tensorType = type.pointee.tensor_type else { return info }
        info.elementType = tensorType.pointee.elem_type
        if let shape = tensorType.pointee.shape {
            info.dims = elements(shape.pointee.dim, shape.pointee.n_dim).map { d in
                switch d.pointee.value_case {
                case ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE: return .fixed(Int(d.pointee.dim_value))
                case ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM: return .symbolic(string(d.pointee.dim_param))
                default: return .unknown
                }
            }
        }
        return info
    }

    private static func attribute(_ a: UnsafeMutablePointer<Onnx__AttributeProto>, opsets: [String: Int64], path: String,
                                  tensors: [PayloadSite.Key: Tensor]) -> Attribute {
        let p = a.pointee
        func text(_ b: ProtobufCBinaryData) -> String {
            String(decoding: UnsafeRawBufferPointer(start: b.data, count: b.len), as: UTF8.self)
        }
        switch p.type {
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT: return .int(p.i)
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT: return .float(p.f)
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING: return .string(text(p.s))
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS: return .ints((0 ..< p.n_ints).map { p.ints[$0] })
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS: return .floats((0 ..< p.n_floats).map { p.floats[$0] })
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS: return .strings((0 ..< p.n_strings).map { text(p.strings[$0]) })
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR:
            if let t = p.t, let tensor = tensors[.tensor(t)] { return .tensor(tensor) }
            return .unsupported("tensor")
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH:
            guard let g = p.g else { return .unsupported("empty subgraph") }
            return .graph(ONNXGraph(g, opsets: opsets, path: path, tensors: tensors))
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPHS:
            return .graphs(elements(p.graphs, p.n_graphs).map { ONNXGraph($0, opsets: opsets, path: path, tensors: tensors) })
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TYPE_PROTO: return .type(typeInfo(p.tp, name: ""))
        default: return .unsupported("attribute type \(p.type.rawValue)")
        }
    }
}

extension ONNXGraph {
    /// The graph of a `.tess` file (told apart by its magic) or of an ONNX model.
    public static func open(_ path: String) throws -> ONNXGraph {
        // Opened as every input is: regular files only, never blocking (a FIFO is refused).
        let head: [UInt8]
        do {
            let file = try MappedFile(path: path)
            head = withExtendedLifetime(file) { Array(file.bytes.prefix(FileHeader.magic.count)) }
        } catch let error as TessError {
            throw ONNXError(.io, error.message, model: path)
        }
        if head == FileHeader.magic { return try ONNXGraph(file: try TessFile.open(path)) }
        return try ONNXGraph(model: path)
    }
}
