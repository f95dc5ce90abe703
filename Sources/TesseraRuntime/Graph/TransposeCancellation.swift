import Tessera
import TesseraONNX

/// Transposes that cancel across elementwise nodes, taken out of a graph before it runs.
///
/// Models converted from TensorFlow wrap every Conv in a pair: Transpose to NCHW, Conv,
/// Transpose back to NHWC, then the bias, batch normalization, residual Add and Relu in NHWC.
/// Elementwise nodes compute each element from the elements at the same position of their
/// broadcast inputs, so they commute with a permutation of every input's axes: a region of them
/// whose non-constant inputs all come from Transposes with one permutation P can run on the
/// untransposed tensors instead, with each constant operand's axes permuted by P's inverse. The
/// Transposes into the region then go (their readers read their input), and each Transpose
/// out of it reads an untransposed tensor: an Identity where its permutation undoes P, else one
/// Transpose with the two permutations composed. Every output keeps its bits and every value
/// outside the regions its layout; values inside a region hold their elements permuted.
///
/// A region is only taken when each of its values is read by nothing but its own nodes and
/// the Transposes out of it (not by a graph output, a subgraph or another op), and each
/// constant operand is a stored dense initializer whose permuted axes keep its elements in
/// order (a per-channel [1, 1, 1, C] becomes [1, C, 1, 1]): its bytes stay as they are.
/// onnxruntime's transpose optimizer does the same, more generally. open-nsfw: 101 of 110.
enum TransposeCancellation {
    /// Ops that act element by element on their broadcast inputs (one output, no axis
    /// attributes), so they commute with any permutation applied to all of their inputs.
    static let elementwise: Set<String> = [
        "Abs", "Add", "And", "Cast", "Ceil", "Clip", "Div", "Elu", "Equal", "Erf", "Exp", "Floor", "Greater",
        "HardSigmoid", "HardSwish", "Identity", "LeakyRelu", "Less", "Log", "Max", "Min", "Mul", "Neg", "Not",
        "Or", "Pow", "PRelu", "Reciprocal", "Relu", "Round", "Selu", "Sigmoid", "Sign", "Softplus", "Sqrt", "Sub",
        "Tanh",
    ]

    static func rewrite(_ graph: ONNXGraph) -> ONNXGraph {
        let nodes = graph.nodes
        guard nodes.contains(where: { $0.opType == "Transpose" }) else { return graph }
        var readers: [String: [Int]] = [:], producer: [String: Int] = [:]
        // Values read where a region's layout would leak: graph outputs and subgraphs' reads.
        var pinned = Set(graph.outputs.map(\.name))
        for (index, node) in nodes.enumerated() {
            for input in Set(node.inputs) where !input.isEmpty { readers[input, default: []].append(index) }
            for output in node.outputs where !output.isEmpty { producer[output] = index }
            for body in GraphExecutor.subgraphs(of: node).values { pinned.formUnion(GraphExecutor.outerNames(body)) }
        }
        let overridable = Set(graph.overridableInputs.map(\.name))
        func storedConstant(_ name: String) -> Tensor? {
            guard !overridable.contains(name), let t = graph.initializers[name], t.quantization == nil,
                  case .dense = t.storage else { return nil }
            return t
        }
        func permutation(_ index: Int) -> [Int]? {
            let node = nodes[index]
            guard node.domain.isEmpty, node.opType == "Transpose", node.inputs.count == 1, node.outputs.count == 1,
                  case .ints(let p)? = node.attributes["perm"] else { return nil }
            let perm = p.map { Int($0) }
            return perm.sorted() == Array(perm.indices) ? perm : nil
        }
        func isElementwise(_ index: Int) -> Bool {
            let node = nodes[index]
            return node.domain.isEmpty && elementwise.contains(node.opType) && node.outputs.count == 1
                && GraphExecutor.subgraphs(of: node).isEmpty
        }

        var rewritten = graph
        var removed = Set<Int>(), taken = Set<Int>()
        for start in nodes.indices where !taken.contains(start) {
            guard let p = permutation(start),
                  let region = Region(from: start, permutation: p, nodes: nodes, readers: readers, producer: producer,
                                      pinned: pinned, isConstant: { storedConstant($0) != nil },
                                      permutationOf: { taken.contains($0) ? nil : permutation($0) }, isElementwise: isElementwise)
            else { continue }
            // Each constant operand, its axes permuted into the untransposed layout (kept only
            // if every constant of the region fits).
            var constants: [String: String] = [:], moved: [String: Tensor] = [:]
            var fits = true
            for index in region.nodes {
                for input in nodes[index].inputs where !input.isEmpty && producer[input] == nil && constants[input] == nil {
                    guard let tensor = storedConstant(input), let shape = Self.untransposedShape(tensor.shape, p) else { fits = false; break }
                    if shape == tensor.shape {
                        constants[input] = input
                    } else {
                        let name = "\(input)/axes\(Self.inverse(p).map(String.init).joined(separator: ","))"
                        var permuted = tensor
                        (permuted.name, permuted.shape, permuted.reductionAxis) = (name, shape, nil)
                        moved[name] = permuted
                        constants[input] = name
                    }
                }
                if !fits { break }
            }
            guard fits else { continue }
            rewritten.initializers.merge(moved) { _, new in new }
            taken.formUnion(region.entries)
            taken.formUnion(region.exits)
            // Readers of an entry read what it transposed; constants read their permuted copies.
            var renamed = constants
            for entry in region.entries {
                renamed[nodes[entry].outputs[0]] = nodes[entry].inputs[0]
                removed.insert(entry)
            }
            for index in region.nodes.union(region.exits) {
                rewritten.nodes[index].inputs = rewritten.nodes[index].inputs.map { renamed[$0] ?? $0 }
            }
            for exit in region.exits {
                let composed = permutation(exit)!.map { p[$0] }
                if composed == Array(composed.indices) {
                    rewritten.nodes[exit].opType = "Identity"
                    rewritten.nodes[exit].attributes = [:]
                } else {
                    rewritten.nodes[exit].attributes["perm"] = .ints(composed.map { Int64($0) })
                }
            }
        }
        rewritten.nodes = rewritten.nodes.enumerated().filter { !removed.contains($0.offset) }.map(\.element)
        return rewritten
    }

    /// `q` with `q[p[k]] = k`.
    static func inverse(_ p: [Int]) -> [Int] {
        var q = [Int](repeating: 0, count: p.count)
        for (k, axis) in p.enumerated() { q[axis] = k }
        return q
    }

    /// The shape a constant broadcast against values transposed by `p` takes against the
    /// untransposed ones (rank padded to `p.count`, axes permuted by p's inverse), when its
    /// elements stay in the same order (the axes longer than 1 keep their order); else nil.
    static func untransposedShape(_ shape: [Int], _ p: [Int]) -> [Int]? {
        guard shape.count <= p.count else { return nil }
        let full = [Int](repeating: 1, count: p.count - shape.count) + shape
        // Untransposed axis j is transposed axis inverse(p)[j].
        let from = inverse(p)
        let moved = from.map { full[$0] }
        if moved == full { return shape }
        let order = from.filter { full[$0] != 1 }
        return order == order.sorted() ? moved : nil
    }

    /// The elementwise nodes reached from one Transpose, and the Transposes into and out of them.
    struct Region {
        var nodes = Set<Int>(), entries = Set<Int>(), exits = Set<Int>()

        /// Grows from the Transpose `start` (permutation `p`) forward through readers and back
        /// through producers; nil when a value escapes or an input comes from anything but the
        /// region, a Transpose by `p` or a constant.
        init?(from start: Int, permutation p: [Int], nodes graphNodes: [ONNXGraph.Node], readers: [String: [Int]],
              producer: [String: Int], pinned: Set<String>, isConstant: (String) -> Bool,
              permutationOf: (Int) -> [Int]?, isElementwise: (Int) -> Bool) {
            var pendingNodes: [Int] = [], pendingValues: [String] = []
            func enter(_ entry: Int) {
                if entries.insert(entry).inserted { pendingValues.append(graphNodes[entry].outputs[0]) }
            }
            enter(start)
            while !pendingNodes.isEmpty || !pendingValues.isEmpty {
                if let index = pendingNodes.popLast() {
                    guard nodes.insert(index).inserted else { continue }
                    for input in graphNodes[index].inputs where !input.isEmpty {
                        guard let source = producer[input] else {
                            guard isConstant(input) else { return nil }
                            continue
                        }
                        if permutationOf(source) == p {
                            enter(source)
                        } else if isElementwise(source) {
                            pendingNodes.append(source)
                        } else {
                            return nil
                        }
                    }
                    pendingValues.append(graphNodes[index].outputs[0])
                } else {
                    let value = pendingValues.removeLast()
                    guard !pinned.contains(value) else { return nil }
                    for reader in readers[value] ?? [] {
                        if permutationOf(reader)?.count == p.count {
                            exits.insert(reader)
                        } else if isElementwise(reader) {
                            pendingNodes.append(reader)
                        } else {
                            return nil
                        }
                    }
                }
            }
            // A Transpose both into and out of the region (by p twice) would need both rewrites.
            guard entries.isDisjoint(with: exits) else { return nil }
        }
    }
}
