import CONNXProto

/// A place in a model that holds tensor bytes. Import and export visit sites in the same
/// order, so both agree on which .tess tensor belongs where.
struct PayloadSite {
    enum Holder {
        /// A `TensorProto`: an initializer or a tensor-valued node attribute (e.g. Constant's value).
        case tensor(UnsafeMutablePointer<Onnx__TensorProto>)
        /// A `sparse_initializer` (COO values and indices).
        case sparse(UnsafeMutablePointer<Onnx__SparseTensorProto>)
    }

    var holder: Holder
    /// The name the .tess tensor takes unless another tensor already has it.
    var suggestedName: String
    /// True for the main graph's initializers (where export can add DequantizeLinear nodes).
    var isMainInitializer = false

    /// Identifies the holder, to find a site's tensor again while walking the graph.
    enum Key: Hashable {
        case tensor(UnsafeMutablePointer<Onnx__TensorProto>)
        case sparse(UnsafeMutablePointer<Onnx__SparseTensorProto>)
    }

    /// In a graph section: the .tess tensor this site's payload was moved to.
    var storedTensorName: String? {
        switch holder {
        case .tensor(let t): return t.isExternal ? t.externalData[GraphSection.tensorKey] : nil
        case .sparse(let s): return s.pointee.values.flatMap { $0.isExternal ? $0.externalData[GraphSection.tensorKey] : nil }
        }
    }

    var key: Key {
        switch holder {
        case .tensor(let t): return .tensor(t)
        case .sparse(let s): return .sparse(s)
        }
    }
}

/// Every payload site of `model`, depth-first: a graph's initializers, its sparse initializers,
/// then each node's tensor attributes and subgraphs in order; then the model's functions.
func payloadSites(of model: ProtoModel) -> [PayloadSite] {
    var sites: [PayloadSite] = []

    func visitNodes(_ nodes: [UnsafeMutablePointer<Onnx__NodeProto>]) {
        for node in nodes {
            let outputs = (0 ..< node.pointee.n_output).map { string(node.pointee.output[$0]) }
            let owner = outputs.first(where: { !$0.isEmpty }) ?? string(node.pointee.name)
            let isConstant = string(node.pointee.op_type) == "Constant"
            for attribute in elements(node.pointee.attribute, node.pointee.n_attribute) {
                let attributeName = string(attribute.pointee.name)
                if let t = attribute.pointee.t {
                    let fallback = isConstant && attributeName == "value" ? owner : "\(owner):\(attributeName)"
                    sites.append(PayloadSite(holder: .tensor(t), suggestedName: t.name.isEmpty ? fallback : t.name))
                }
                for (k, t) in elements(attribute.pointee.tensors, attribute.pointee.n_tensors).enumerated() {
                    sites.append(PayloadSite(holder: .tensor(t), suggestedName: t.name.isEmpty ? "\(owner):\(attributeName):\(k)" : t.name))
                }
                if let g = attribute.pointee.g { visitGraph(g) }
                for g in elements(attribute.pointee.graphs, attribute.pointee.n_graphs) { visitGraph(g) }
            }
        }
    }

    func visitGraph(_ graph: UnsafeMutablePointer<Onnx__GraphProto>) {
        for t in elements(graph.pointee.initializer, graph.pointee.n_initializer) {
            sites.append(PayloadSite(holder: .tensor(t), suggestedName: t.name, isMainInitializer: graph == model.graph))
        }
        for s in elements(graph.pointee.sparse_initializer, graph.pointee.n_sparse_initializer) {
            sites.append(PayloadSite(holder: .sparse(s), suggestedName: s.pointee.values.map { $0.name } ?? ""))
        }
        visitNodes(elements(graph.pointee.node, graph.pointee.n_node))
    }

    visitGraph(model.graph)
    for function in elements(model.proto.pointee.functions, model.proto.pointee.n_functions) {
        visitNodes(elements(function.pointee.node, function.pointee.n_node))
    }
    return sites
}

/// Gives each site a unique .tess tensor name: its suggested name, or that name with `#k`
/// (the smallest k that is free) when it is empty or already taken.
struct TensorNamer {
    private var taken = Set<String>()
    /// Per base name, the suffix to try next: repeated names cost O(1) each, not a scan.
    private var nextSuffix: [String: Int] = [:]

    mutating func name(for suggested: String) -> String {
        let base = suggested.isEmpty ? "tensor" : suggested
        if !suggested.isEmpty, taken.insert(base).inserted { return base }
        var k = nextSuffix[base, default: 1]
        while !taken.insert("\(base)#\(k)").inserted { k += 1 }
        nextSuffix[base] = k + 1
        return "\(base)#\(k)"
    }
}
