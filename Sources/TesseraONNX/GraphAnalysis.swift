import CONNXProto
import Tessera

/// How the graph uses each named value as a weight, which fixes its GEMM reduction axis.
struct WeightUse {
    var role: WeightRole
    /// Gemm's transB attribute (only meaningful for `.gemmB`).
    var transposedB = false

    /// The reduction axis for a tensor of `rank` used this way, or nil.
    func reductionAxis(rank: Int) -> Int? {
        switch role {
        case .matmulB, .matmulIntegerB: return rank >= 2 ? rank - 2 : (rank == 1 ? 0 : nil)   // B [..., K, N]
        case .gemmB: return rank == 2 ? (transposedB ? 1 : 0) : nil
        case .convWeight: return rank >= 3 ? 1 : nil                                          // [Cout, Cin/g, k...]
        case .unknown, .dequantizeInput, .gatherData: return nil
        }
    }
}

enum GraphAnalysis {
    /// The first weight use of each value name, over every graph and subgraph in node order.
    static func weightUses(_ model: ProtoModel) -> [String: WeightUse] {
        var uses: [String: WeightUse] = [:]
        func visit(_ graph: UnsafeMutablePointer<Onnx__GraphProto>) {
            for node in elements(graph.pointee.node, graph.pointee.n_node) {
                let domain = string(node.pointee.domain)
                let inputs = (0 ..< node.pointee.n_input).map { string(node.pointee.input[$0]) }
                let attributes = elements(node.pointee.attribute, node.pointee.n_attribute)
                if domain.isEmpty || domain == "ai.onnx" {
                    var use: (Int, WeightUse)?
                    switch string(node.pointee.op_type) {
                    case "MatMul": use = (1, WeightUse(role: .matmulB))
                    case "MatMulInteger": use = (1, WeightUse(role: .matmulIntegerB))
                    case "Conv": use = (1, WeightUse(role: .convWeight))
                    case "DequantizeLinear": use = (0, WeightUse(role: .dequantizeInput))
                    case "Gather": use = (0, WeightUse(role: .gatherData))
                    case "Gemm":
                        let transB = attributes.first { string($0.pointee.name) == "transB" }.map { $0.pointee.i != 0 } ?? false
                        use = (1, WeightUse(role: .gemmB, transposedB: transB))
                    default: break
                    }
                    if let (index, weightUse) = use, index < inputs.count, !inputs[index].isEmpty, uses[inputs[index]] == nil {
                        uses[inputs[index]] = weightUse
                    }
                }
                for attribute in attributes {
                    if let g = attribute.pointee.g { visit(g) }
                    for g in elements(attribute.pointee.graphs, attribute.pointee.n_graphs) { visit(g) }
                }
            }
        }
        visit(model.graph)
        return uses
    }

    /// Every node input and graph output must name a graph input, an initializer, a node
    /// output, or (in a subgraph) a value of an enclosing graph.
    static func checkReferences(_ model: ProtoModel, path: String) throws {
        func check(_ graph: UnsafeMutablePointer<Onnx__GraphProto>, outer: Set<String>) throws {
            let g = graph.pointee
            var known = outer
            for v in elements(g.input, g.n_input) { known.insert(string(v.pointee.name)) }
            for t in elements(g.initializer, g.n_initializer) { known.insert(t.name) }
            for s in elements(g.sparse_initializer, g.n_sparse_initializer) { known.insert(s.pointee.values.map { $0.name } ?? "") }
            let nodes = elements(g.node, g.n_node)
            for node in nodes {
                for i in 0 ..< node.pointee.n_output { known.insert(string(node.pointee.output[i])) }
            }
            for node in nodes {
                for i in 0 ..< node.pointee.n_input {
                    let input = string(node.pointee.input[i])
                    guard input.isEmpty || known.contains(input) else {
                        let label = string(node.pointee.name).isEmpty ? string(node.pointee.op_type) : "\(string(node.pointee.name)) (\(string(node.pointee.op_type)))"
                        throw ONNXError(.missingTensor, "node \(label) reads '\(input)', which no graph input, initializer or node produces", model: path, tensor: input)
                    }
                }
                for attribute in elements(node.pointee.attribute, node.pointee.n_attribute) {
                    if let sub = attribute.pointee.g { try check(sub, outer: known) }
                    for sub in elements(attribute.pointee.graphs, attribute.pointee.n_graphs) { try check(sub, outer: known) }
                }
            }
            for v in elements(g.output, g.n_output) where !known.contains(string(v.pointee.name)) {
                throw ONNXError(.missingTensor, "graph output '\(string(v.pointee.name))' is not produced by any node", model: path, tensor: string(v.pointee.name))
            }
        }
        try check(model.graph, outer: [])
    }
}
