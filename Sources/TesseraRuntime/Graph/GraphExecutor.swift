import CTesseraKernels
import Dispatch
import Foundation
import Tessera
import TesseraONNX

/// An op on tensors: most ops.
typealias OpKernel = @Sendable (NodeContext) throws -> [Value]
/// An op that takes or makes sequences and optionals (Sequence*, Optional*, Identity, If, Loop).
typealias ValueKernel = @Sendable (NodeContext) throws -> [GraphValue]
/// The values a body sees from the graphs around it, by name (nil: not defined there).
typealias Scope = (String) throws -> GraphValue?

/// Runs an ONNX graph with its stored weights: GEMM weights (MatMul's and Gemm's B) through the
/// kernel for their stored layout and quantization, every other tensor (Conv's weights too)
/// decoded once.
///
/// Construction checks the whole graph first: a model needing ops the executor lacks is refused
/// with every missing op named, before anything runs.
public final class GraphExecutor {
    public let graph: ONNXGraph
    public let threads: Int
    public let activations: ActivationArithmetic
    private let weights: [Int: LinearOperator]   // by node index
    private let lastUse: [String: Int]            // value name → index of the last node reading it
    private let bodies: [Int: [String: GraphExecutor]]   // subgraph executors by node index and attribute
    private let caches: [NodeCache]                        // by node index
    private let fusions: [Int: Fusion]                     // by the index of a chain's first node
    private let producers: [String: Int]                   // value name → index of the node computing it
    private var constants: [String: Value] = [:]
    private let constantsLock = NSLock()
    /// Where this executor stands in planning its branch regions (`BranchPlan`).
    let branchState: BranchState
    /// Names whose value no run can change: initializers the caller cannot override, and the
    /// outputs of nodes computed from them alone (`foldable`).
    private let constantNames: Set<String>
    /// Nodes whose inputs are all constant (a Cast of fp16 weights, a shape computation on
    /// constants): computed on the first run, their outputs kept for the later ones.
    let foldable: [Bool]
    private var folded: [Int: [GraphValue]] = [:]
    /// Shape nodes on values computed while running, and the nodes computed from their outputs
    /// and constants alone (Gather, Unsqueeze, Concat building a Reshape's target): a transformer
    /// export has a hundred, each a few µs of bookkeeping. A Shape node's output is kept and
    /// compared on the next run; `shapeVersion` counts the changes (and the times a Shape node
    /// ran where its output could not be compared: in a branch). A shape-derived node reuses
    /// the outputs it kept while the version is the one they were computed at, so it never
    /// reuses outputs computed from other shapes than this run's, even after a failed run.
    let shapeSource: [Bool], shapeDerived: [Bool]
    private var shapeMemo: [Int: (version: Int, outputs: [GraphValue])] = [:]
    private var shapeVersion = 0
    /// When set, every node's wall time is added here by op type (`tessera run --profile`).
    public var profile: OpProfile?
    /// When set, `visit` sees each tensor named in `names` as the run produces it, graph inputs
    /// included (calibration captures GEMM inputs this way).
    public var observer: (names: Set<String>, visit: (String, Value) throws -> Void)?

    static let kernels: [String: ValueKernel] = {
        var all: [String: ValueKernel] = [:]
        func register(_ op: String, _ kernel: @escaping ValueKernel) {
            precondition(all.updateValue(kernel, forKey: op) == nil, "two op families register \(op)")
        }
        for table in [ElementwiseOps.table, ShapeOps.table, UnfoldOps.table, IndexingOps.table, ReductionOps.table, LossOps.table, QuantizationOps.table, ResizeOps.table, AttentionOps.table, ConvTransposeOps.table, LayoutOps.table, RecurrentOps.table, LinearAlgebraOps.table, SignalOps.table, DetectionOps.table, LinearOps.table, ConvolutionOps.table] {
            for (op, kernel) in table { register(op) { try kernel($0).map(GraphValue.tensor) } }
        }
        for table in [ControlFlowOps.table, SequenceOps.table] {
            for (op, kernel) in table { register(op, kernel) }
        }
        return all
    }()

    /// The op types the executor runs ("domain:Op" outside the default domain), sorted.
    public static var supportedOps: [String] { kernels.keys.sorted() }

    static func key(_ node: ONNXGraph.Node) -> String { node.domain.isEmpty ? node.opType : "\(node.domain):\(node.opType)" }

    /// Every op of `graph` (subgraphs included) the executor lacks, with how many nodes use it,
    /// in first-use order.
    public static func missingOps(_ graph: ONNXGraph) -> [(op: String, nodes: Int)] {
        var order: [String] = [], counts: [String: Int] = [:]
        func visit(_ graph: ONNXGraph) {
            for node in graph.nodes {
                if kernels[key(node)] == nil {
                    let k = key(node)
                    if counts[k] == nil { order.append(k) }
                    counts[k, default: 0] += 1
                }
                for body in subgraphs(of: node).values { visit(body) }
            }
        }
        visit(graph)
        return order.map { ($0, counts[$0]!) }
    }

    static func subgraphs(of node: ONNXGraph.Node) -> [String: ONNXGraph] {
        var bodies: [String: ONNXGraph] = [:]
        for (name, attribute) in node.attributes { if case .graph(let g) = attribute { bodies[name] = g } }
        return bodies
    }

    /// Names a graph reads from its enclosing scope: read by a node (or a nested body) and
    /// defined by none of its inputs, initializers or nodes.
    static func outerNames(_ graph: ONNXGraph) -> Set<String> {
        var defined = Set(graph.inputs.map(\.name) + graph.overridableInputs.map(\.name) + graph.initializers.keys)
        var read = Set<String>()
        for node in graph.nodes {
            for input in node.inputs where !input.isEmpty && !defined.contains(input) { read.insert(input) }
            for body in subgraphs(of: node).values { read.formUnion(outerNames(body).subtracting(defined)) }
            defined.formUnion(node.outputs)
        }
        for output in graph.outputs where !defined.contains(output.name) { read.insert(output.name) }
        return read
    }

    public init(_ source: ONNXGraph, threads: Int = 1, activations: ActivationArithmetic = .float) throws {
        let missing = Self.missingOps(source)
        guard missing.isEmpty else {
            let list = missing.map { $0.nodes == 1 ? $0.op : "\($0.op) (\($0.nodes) nodes)" }.joined(separator: ", ")
            throw RuntimeError(.unsupportedOp, "the executor lacks \(missing.count) op(s) this model needs: \(list)")
        }
        for node in source.nodes {
            for (name, attribute) in node.attributes {
                switch attribute {
                case .unsupported(let what):
                    throw RuntimeError(.unsupportedOp, "node \(node.label): attribute '\(name)' is a \(what), which the executor does not run")
                case .graphs: throw RuntimeError(.unsupportedOp, "node \(node.label): attribute '\(name)' is a list of subgraphs, which the executor does not run")
                default: break
                }
            }
        }
        let graph = TransposeCancellation.rewrite(source)
        self.graph = graph
        self.threads = max(1, threads)
        self.activations = activations
        var lastUse: [String: Int] = [:]
        var weights: [Int: LinearOperator] = [:]
        var bodies: [Int: [String: GraphExecutor]] = [:]
        for (index, node) in graph.nodes.enumerated() {
            for input in node.inputs where !input.isEmpty { lastUse[input] = index }
            if let op = try Self.storedWeight(node, graph.initializers) { weights[index] = op }
            // A node with bodies also reads what they read from outside: keep those values alive.
            for (name, body) in Self.subgraphs(of: node) {
                let executor = try GraphExecutor(body, threads: threads, activations: activations)
                executor.branchState.disable()   // bodies run inside their node, often many times
                bodies[index, default: [:]][name] = executor
                for outer in Self.outerNames(body) { lastUse[outer] = index }
            }
        }
        for output in graph.outputs { lastUse[output.name] = graph.nodes.count }
        var constantNames = Set(graph.initializers.keys).subtracting(graph.overridableInputs.map(\.name))
        foldable = graph.nodes.map { node in
            let fold = !Self.nondeterministic.contains(node.opType) && Self.subgraphs(of: node).isEmpty
                && node.inputs.allSatisfy { $0.isEmpty || constantNames.contains($0) }
            if fold { constantNames.formUnion(node.outputs.filter { !$0.isEmpty }) }
            return fold
        }
        self.constantNames = constantNames
        var shapeNames: Set<String> = [], shapeSource = [Bool](repeating: false, count: graph.nodes.count), shapeDerived = shapeSource
        for (index, node) in graph.nodes.enumerated() where !foldable[index] {
            if node.opType == "Shape" && node.domain.isEmpty {
                shapeSource[index] = true
            } else {
                shapeDerived[index] = !Self.nondeterministic.contains(node.opType) && Self.subgraphs(of: node).isEmpty
                    && weights[index] == nil && node.inputs.contains { shapeNames.contains($0) }
                    && node.inputs.allSatisfy { $0.isEmpty || constantNames.contains($0) || shapeNames.contains($0) }
            }
            if shapeSource[index] || shapeDerived[index] { shapeNames.formUnion(node.outputs.filter { !$0.isEmpty }) }
        }
        (self.shapeSource, self.shapeDerived) = (shapeSource, shapeDerived)
        fusions = Fusion.plan(graph, constant: { constantNames.contains($0) }, storedWeight: { weights[$0] != nil })
        var producers: [String: Int] = [:]
        for (index, node) in graph.nodes.enumerated() { for output in node.outputs where !output.isEmpty { producers[output] = index } }
        self.producers = producers
        self.weights = weights
        self.lastUse = lastUse
        self.bodies = bodies
        caches = graph.nodes.map { _ in NodeCache() }
        branchState = BranchState(enabled: self.threads > 1)
    }

    /// Ops whose outputs differ from run to run: never folded.
    static let nondeterministic: Set<String> = ["RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"]

    /// The operator for a node's stored GEMM weight, when its layout and reduction axis fit the use.
    private static func storedWeight(_ node: ONNXGraph.Node, _ initializers: [String: Tensor]) throws -> LinearOperator? {
        // float64 weights stay values: the kernels compute in float32.
        guard node.domain.isEmpty, node.inputs.count > 1, var tensor = initializers[node.inputs[1]],
              tensor.dataType.isFloatingPoint, tensor.dataType != .double else { return nil }
        let rank = tensor.shape.count
        let expected: Int?
        switch node.opType {
        case "MatMul": expected = rank == 2 ? 0 : nil
        case "Gemm":
            if case .int(let t)? = node.attributes["transB"], t != 0 { expected = rank == 2 ? 1 : nil } else { expected = rank == 2 ? 0 : nil }
        // Conv weights, however stored, are decoded once into float32 for the column GEMM and
        // the depthwise kernel: through the stored kernels (kn2row) int8 and 2:4 convolutions
        // ran 3 to 30 times slower than dense (make bench, Real models).
        default: expected = nil
        }
        guard let axis = expected else { return nil }
        if tensor.reductionAxis != axis {
            // Only a plain dense tensor can be read along another axis; others are decoded.
            guard tensor.storage.kind == .dense, tensor.quantization == nil else { return nil }
            tensor.reductionAxis = axis
        }
        return try LinearOperator(tensor)
    }

    /// For processes that run graphs (the CLI): freed memory stays with the process for reuse.
    /// Each node allocates and frees buffers of the same large sizes on every run; glibc otherwise
    /// returns them to the kernel and faults them back in zeroed (MiniLM 1x128: median 26 ms,
    /// 23 ms so). Process-wide, so it is the caller's choice, not the executor's.
    public static func keepFreedMemoryForReuse() { tessera_keep_freed_memory() }

    /// Runs the graph on `inputs` (every graph input by name, and optionally values for graph
    /// inputs that have an initializer as their default) and returns its outputs in order.
    /// For graphs whose inputs and outputs are tensors; `evaluate` takes and gives any value.
    public func run(_ inputs: [String: Value]) throws -> [(name: String, value: Value)] {
        try evaluate(inputs.mapValues(GraphValue.tensor)).map { name, value in
            guard case .tensor(let tensor) = value else {
                throw RuntimeError(.unsupportedType, "graph output '\(name)' is \(value.kindDescription), not a tensor")
            }
            return (name, tensor)
        }
    }

    /// Runs the graph on tensors, sequences and optionals (an optional graph input left out
    /// holds nothing) and returns its outputs in order.
    public func evaluate(_ inputs: [String: GraphValue]) throws -> [(name: String, value: GraphValue)] {
        try run(inputs, outer: { _ in nil })
    }

    /// Runs the graph as a body of an enclosing graph whose visible values are `outer` (a name
    /// defined here hides the same name outside).
    func run(_ inputs: [String: GraphValue], outer: @escaping Scope) throws -> [(name: String, value: GraphValue)] {
        var values = Values()
        for (name, value) in inputs where !graph.inputs.contains(where: { $0.name == name }) {
            guard let info = graph.overridableInputs.first(where: { $0.name == name }) else {
                let names = (graph.inputs + graph.overridableInputs).map(\.name).joined(separator: ", ")
                throw RuntimeError(.badInput, "'\(name)' is not an input of the graph (inputs: \(names))")
            }
            try check(value, against: info)
            values[name] = value   // read before the initializer it overrides
        }
        for info in graph.inputs {
            guard let value = inputs[info.name] ?? (info.kind == .optional ? GraphValue.none : nil) else {
                throw RuntimeError(.badInput, "graph input '\(info.name)' is not given (inputs: \(graph.inputs.map(\.name).joined(separator: ", ")))")
            }
            try check(value, against: info)
            values[info.name] = value
            try observe(info.name, value)
        }
        let plan = branchState.regions(observed: observer != nil)
        var timing = branchState.measuring && observer == nil ? [Double](repeating: 0, count: graph.nodes.count) : nil
        var absorbed = Set<Int>()   // nodes a fused chain computed
        var index = 0, next = 0
        while index < graph.nodes.count {
            if next < plan.count, plan[next].nodes.lowerBound == index {
                let region = plan[next]
                if region.nodes.contains(where: { shapeSource[$0] || shapeDerived[$0] }) { shapeVersion += 1 }
                let started = DispatchTime.now().uptimeNanoseconds
                try runBranches(region, values: &values, outer: outer)
                branchState.timeTrial(next, seconds: Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9)
                (index, next) = (region.nodes.upperBound, next + 1)
                continue
            }
            let started = timing == nil ? 0 : DispatchTime.now().uptimeNanoseconds
            try step(index, values: &values, absorbed: &absorbed, outer: outer, threads: threads, inBranch: false)
            if timing != nil { timing![index] = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9 }
            index += 1
        }
        if observer == nil { branchState.finishRun(costs: timing, plan: { self.branchRegions(costs: $0) }) }
        return try graph.outputs.map { info in
            if let v = values[info.name] { return (info.name, v) }
            if graph.initializers[info.name] == nil, try outer(info.name) == nil {
                throw RuntimeError(.badGraph, "graph output '\(info.name)' was not computed")
            }
            return (info.name, try value(info.name, in: values, outer: outer))
        }
    }

    /// Runs node `index` (or skips it: folded on an earlier run, or computed by a fused chain)
    /// and drops the values it read last. In a branch (`inBranch`) it neither keeps folded
    /// outputs nor drops values computed before the branch: the other branch may be reading them.
    private func step(_ index: Int, values: inout Values, absorbed: inout Set<Int>, outer: @escaping Scope, threads: Int, inBranch: Bool) throws {
        let node = graph.nodes[index]
        defer { for name in node.inputs where lastUse[name] == index { values[name] = nil } }
        if let outputs = folded[index] {
            for (name, value) in zip(node.outputs, outputs) where !name.isEmpty { values[name] = value }
            return
        }
        if absorbed.contains(index) { return }
        let keepsShapes = (shapeSource[index] || shapeDerived[index]) && !inBranch && observer == nil
        if keepsShapes, shapeDerived[index], let kept = shapeMemo[index], kept.version == shapeVersion {
            for (name, value) in zip(node.outputs, kept.outputs) where !name.isEmpty { values[name] = value }
            return
        }
        do {
            // A stored weight runs through its kernel unless the caller overrode it.
            let weight = weights[index].flatMap { values[node.inputs[1]] == nil ? $0 : nil }
            let operands: [GraphValue?] = try node.inputs.enumerated().map { k, name in
                if name.isEmpty || (k == 1 && weight != nil) { return nil }
                return try value(name, in: values, outer: outer)
            }
            var context = NodeContext(node: node, opset: graph.defaultOpset, values: operands, weight: weight, threads: threads)
            context.activations = activations
            context.cache = caches[index]
            context.constantInputs = node.inputs.map { !$0.isEmpty && constantNames.contains($0) }
            if let nodeBodies = bodies[index] {
                context.bodies = nodeBodies
                let visible = values
                context.scope = { [unowned self] name in try self.value(name, in: visible, outer: outer) }
            }
            let started = profile == nil ? 0 : DispatchTime.now().uptimeNanoseconds
            if observer == nil, let fusion = fusions[index], let result = try fusion.run({ try available($0, in: values) }, context: context) {
                profile?.add(fusion.name, node: fusion.output, nanoseconds: DispatchTime.now().uptimeNanoseconds - started)
                values[fusion.output] = .tensor(result)
                absorbed.formUnion(fusion.absorbed)
                return
            }
            let results = try Self.kernels[Self.key(node)]!(context)
            profile?.add(weight == nil ? Self.key(node) : "\(Self.key(node)) (stored weight)", node: node.outputs.first ?? "",
                         nanoseconds: DispatchTime.now().uptimeNanoseconds - started)
            let outputs = results.map { $0.representable() }
            for (name, result) in zip(node.outputs, outputs) where !name.isEmpty {
                values[name] = result
                try observe(name, result)
            }
            if let missing = node.outputs.dropFirst(results.count).first(where: { !$0.isEmpty }) {
                throw RuntimeError(.unsupportedOp, "output '\(missing)' is not computed by the executor")
            }
            if foldable[index] && !inBranch { folded[index] = outputs }
            if keepsShapes {
                if shapeSource[index], !(shapeMemo[index].map { Self.sameIntegers($0.outputs, outputs) } ?? false) { shapeVersion += 1 }
                shapeMemo[index] = (shapeVersion, outputs)
            }
        } catch let error as RuntimeError {
            throw error.at(node: node.label)
        }
    }

    /// Whether two Shape outputs are the same integer tensors.
    private static func sameIntegers(_ a: [GraphValue], _ b: [GraphValue]) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { a, b in
            guard case .tensor(let x) = a, case .tensor(let y) = b, case .int(let i) = x.elements, case .int(let j) = y.elements else { return false }
            return x.type == y.type && x.shape == y.shape && i == j
        }
    }

    /// Runs a region's two branches side by side, each op on one thread, each branch seeing the
    /// values computed before the region and its own; then keeps what they computed and drops
    /// what the region read last.
    private func runBranches(_ region: BranchRegion, values: inout Values, outer: @escaping Scope) throws {
        let before = values.flattened()
        var results: [Result<[String: GraphValue], Error>] = Array(repeating: .success([:]), count: region.branches.count)
        results.withUnsafeMutableBufferPointer { results in
            Threads.split(region.branches.count, threads: region.branches.count) { range in
                for b in range {
                    results[b] = Result {
                        var own = Values(shared: before), absorbed = Set<Int>()
                        for index in region.branches[b] {
                            try step(index, values: &own, absorbed: &absorbed, outer: outer, threads: 1, inBranch: true)
                        }
                        return own.local
                    }
                }
            }
        }
        for result in results {
            for (name, value) in try result.get() { values[name] = value }
        }
        for index in region.nodes {
            for name in graph.nodes[index].inputs where lastUse[name] == index { values[name] = nil }
        }
    }

    /// The regions worth running as branches, from each node's measured time.
    func branchRegions(costs: [Double]) -> [BranchRegion] {
        var dependencies = graph.nodes.map { node in
            node.inputs.compactMap { producers[$0] }
        }
        for (index, node) in graph.nodes.enumerated() {
            for body in Self.subgraphs(of: node).values {
                dependencies[index] += Self.outerNames(body).compactMap { producers[$0] }
            }
        }
        var chains: [ClosedRange<Int>] = []
        for (first, fusion) in fusions {
            for member in fusion.absorbed { dependencies[member].append(first) }
            chains.append(first ... (fusion.absorbed.max() ?? first))
        }
        for index in dependencies.indices { dependencies[index].removeAll { $0 >= index } }   // out of order: fails when run
        return BranchPlan.regions(dependencies: dependencies, chains: chains, costs: costs, minimumGain: BranchState.minimumGain)
    }

    /// `name`'s value when it is known before its node's turn: computed already, an initializer,
    /// or the output of a folded node (a later Constant node's, after the first run); else nil.
    private func available(_ name: String, in values: Values) throws -> GraphValue? {
        if let v = values[name] { return v }
        if let index = producers[name], let outputs = folded[index], let k = graph.nodes[index].outputs.firstIndex(of: name) {
            return outputs[k]
        }
        return graph.initializers[name] == nil ? nil : try value(name, in: values, outer: { _ in nil })
    }

    private func observe(_ name: String, _ value: GraphValue) throws {
        guard let observer, observer.names.contains(name), case .tensor(let tensor) = value else { return }
        try observer.visit(name, tensor)
    }

    private func value(_ name: String, in values: Values, outer: Scope) throws -> GraphValue {
        if let v = values[name] { return v }
        guard let tensor = graph.initializers[name] else {
            if let v = try outer(name) { return v }
            throw RuntimeError(.badGraph, "reads '\(name)' before any node computes it (the graph is not in topological order)")
        }
        // Decoded on first use; two branches may ask at once.
        constantsLock.lock()
        defer { constantsLock.unlock() }
        if let v = constants[name] { return .tensor(v) }
        let v = try Value(tensor)
        constants[name] = v
        return .tensor(v)
    }

    private func check(_ given: GraphValue, against info: ONNXGraph.ValueInfo) throws {
        guard given.fits(info) else {
            throw RuntimeError(.badInput, "input '\(info.name)' is \(given.kindDescription); the graph declares \(info.kind)")
        }
        if info.elementType != 0, let type = given.elementType, info.elementType != Int32(type.rawValue) {
            let declared = DataType(number: info.elementType).map { "\($0)" } ?? "type \(info.elementType)"
            throw RuntimeError(.badInput, "input '\(info.name)' is \(type); the graph declares \(declared)")
        }
        guard case .tensor(let value) = given, let dims = info.dims else { return }
        let declared = "[\(dims.map(\.description).joined(separator: ", "))]"
        guard dims.count == value.shape.count else {
            throw RuntimeError(.badInput, "input '\(info.name)' has shape \(value.shape); the graph declares \(declared)")
        }
        for (d, n) in zip(dims, value.shape) {
            if case .fixed(let f) = d, f > 0, f != n {   // -1 and 0 are written for dynamic dims
                throw RuntimeError(.badInput, "input '\(info.name)' has shape \(value.shape); the graph declares \(declared)")
            }
        }
    }
}

/// The values a run has computed, by name: its own over those it shares (a branch sees the
/// values computed before its region and writes only its own).
struct Values {
    private(set) var local: [String: GraphValue] = [:]
    private let shared: [String: GraphValue]

    init(shared: [String: GraphValue] = [:]) { self.shared = shared }

    subscript(name: String) -> GraphValue? {
        get { local[name] ?? shared[name] }
        set { local[name] = newValue }
    }

    func flattened() -> [String: GraphValue] { shared.isEmpty ? local : shared.merging(local) { $1 } }
}

/// How stored int8 GEMM weights meet their activations.
public enum ActivationArithmetic: String, CaseIterable, Sendable {
    /// The reference: codes are scaled back to float and multiply float activations, so a
    /// converted model differs from its source by the weights' rounding alone.
    case float
    /// W8A8, as onnxruntime's dynamic quantization runs: each activation row is quantized to
    /// uint8 (DynamicQuantizeLinear) and multiplies int8 weight codes in int32
    /// (`LinearOperator.applyQuantizingActivations`). Faster, and outputs move by the
    /// activations' rounding too. Weights that cannot run so (float, CSR, int4, zero points)
    /// stay on the float path.
    case int8
}

/// Wall time per op type, and per node, over the runs of an executor (subgraph bodies count
/// inside their node).
public final class OpProfile {
    public private(set) var entries: [String: (nodes: Int, seconds: Double)] = [:]
    /// Per node (a fused chain is one), named by the output it writes (its first; a chain's
    /// last node's): its op and seconds.
    public private(set) var nodes: [String: (op: String, seconds: Double)] = [:]

    public init() {}

    private let lock = NSLock()   // branches run side by side

    func add(_ op: String, node: String, nanoseconds: UInt64) {
        lock.lock()
        defer { lock.unlock() }
        let seconds = Double(nanoseconds) / 1e9
        entries[op, default: (0, 0)].nodes += 1
        entries[op, default: (0, 0)].seconds += seconds
        nodes[node, default: (op, 0)].seconds += seconds
    }
}
