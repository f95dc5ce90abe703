import CTesseraKernels
import TesseraONNX

/// Chains of nodes the executor runs as one kernel, found once per graph: their intermediate
/// values are never stored, and the fused kernel makes the same float operations in the same
/// order, so outputs keep their bits. A chain runs fused only when its operands turn out as the
/// pattern needs (float32, scalar constants) and are known at its first node (a Constant node
/// placed later in the graph is, from the second run on, when it is folded), and no observer
/// watches values; otherwise its nodes run one by one.
struct Fusion {
    enum Kind {
        /// BERT's exact GELU, `((erf(x / a) + b) · x) · c` with scalar constants a, b, c:
        /// Div → Erf → Add → Mul (by x) → Mul, as PyTorch exports `nn.GELU()`.
        case gelu(divisor: String, addend: String, factor: String)
        /// A float32 Conv and the inference BatchNormalization of its output, normalized in place
        /// as the Conv writes it (no second tensor): BatchNormalization's own arithmetic.
        case batchNorm(scale: String, bias: String, mean: String, variance: String, epsilon: Double)
        /// SiLU (swish), `x · sigmoid(x)`: Sigmoid → Mul (by x), as YOLO-style models export it.
        case silu
        /// A MatMul on a stored int8 weight run W8A8, then an Add of a constant bias over its
        /// outputs: the GEMM's last step adds the bias as it writes each output.
        case bias(String)
    }

    let kind: Kind
    /// The chain's input, and the nodes after the first that the fused kernel stands for.
    let input: String
    let absorbed: [Int]
    /// The last node's output, which the fused kernel writes.
    let output: String

    /// The fusible chains of `graph`, by the index of their first node. `constant` tells which
    /// values no run can change; a chain's inner values must each be read by one node only and
    /// not be graph outputs.
    static func plan(_ graph: ONNXGraph, constant: (String) -> Bool, storedWeight: (Int) -> Bool) -> [Int: Fusion] {
        var readers: [String: Int] = [:], reader: [String: Int] = [:]
        for (index, node) in graph.nodes.enumerated() {
            for input in node.inputs where !input.isEmpty {
                readers[input, default: 0] += 1
                reader[input] = index
            }
            for body in GraphExecutor.subgraphs(of: node).values {
                for name in GraphExecutor.outerNames(body) { readers[name, default: 0] += 2 }
            }
        }
        for output in graph.outputs { readers[output.name, default: 0] += 2 }
        let nodes = graph.nodes
        /// The node reading `name`, when it is its only reader.
        func next(_ name: String) -> (Int, ONNXGraph.Node)? {
            guard readers[name] == 1, let index = reader[name] else { return nil }
            return (index, nodes[index])
        }
        /// The operand of a two-input default-domain node other than `name`, when it is constant.
        func constantOperand(_ node: ONNXGraph.Node, _ name: String) -> String? {
            guard node.domain.isEmpty, node.inputs.count == 2, node.outputs.count == 1 else { return nil }
            let other = node.inputs[0] == name ? node.inputs[1] : node.inputs[0]
            return node.inputs.contains(name) && other != name && constant(other) ? other : nil
        }
        var plans: [Int: Fusion] = [:]
        for (index, div) in nodes.enumerated() where div.domain.isEmpty && div.opType == "Div" && div.inputs.count == 2 {
            let x = div.inputs[0], divisor = div.inputs[1]
            guard !constant(x), constant(divisor), div.outputs.count == 1,
                  let (erfIndex, erf) = next(div.outputs[0]), erf.domain.isEmpty, erf.opType == "Erf", erf.outputs.count == 1,
                  let (addIndex, add) = next(erf.outputs[0]), add.opType == "Add", let addend = constantOperand(add, erf.outputs[0]),
                  let (mulIndex, mul) = next(add.outputs[0]), mul.domain.isEmpty, mul.opType == "Mul", mul.outputs.count == 1,
                  Set(mul.inputs) == [x, add.outputs[0]],
                  let (lastIndex, last) = next(mul.outputs[0]), last.opType == "Mul", let factor = constantOperand(last, mul.outputs[0])
            else { continue }
            plans[index] = Fusion(kind: .gelu(divisor: divisor, addend: addend, factor: factor), input: x,
                                  absorbed: [erfIndex, addIndex, mulIndex, lastIndex], output: last.outputs[0])
        }
        for (index, sigmoid) in nodes.enumerated() where sigmoid.domain.isEmpty && sigmoid.opType == "Sigmoid" && sigmoid.inputs.count == 1 {
            let x = sigmoid.inputs[0]
            guard !constant(x), sigmoid.outputs.count == 1, let (mulIndex, mul) = next(sigmoid.outputs[0]), mul.domain.isEmpty,
                  mul.opType == "Mul", mul.outputs.count == 1, mul.inputs.count == 2, Set(mul.inputs) == [x, sigmoid.outputs[0]] else { continue }
            plans[index] = Fusion(kind: .silu, input: x, absorbed: [mulIndex], output: mul.outputs[0])
        }
        for (index, conv) in nodes.enumerated() where conv.domain.isEmpty && conv.opType == "Conv" && conv.outputs.count == 1 {
            guard let (normIndex, norm) = next(conv.outputs[0]), norm.domain.isEmpty, norm.opType == "BatchNormalization",
                  norm.inputs.count == 5, norm.inputs[0] == conv.outputs[0], norm.inputs.dropFirst().allSatisfy(constant),
                  norm.outputs.dropFirst().allSatisfy(\.isEmpty) else { continue }
            var epsilon = 1e-5, inference = true
            for (name, attribute) in norm.attributes {
                switch (name, attribute) {
                case ("epsilon", .float(let e)): epsilon = Double(e)
                case ("training_mode", .int(let t)): inference = inference && t == 0
                case ("momentum", _): break
                default: inference = false   // spatial, is_test, consumed_inputs: older forms run unfused
                }
            }
            guard inference else { continue }
            plans[index] = Fusion(kind: .batchNorm(scale: norm.inputs[1], bias: norm.inputs[2], mean: norm.inputs[3], variance: norm.inputs[4],
                                                   epsilon: epsilon),
                                  input: conv.inputs[0], absorbed: [normIndex], output: norm.outputs[0])
        }
        for (index, matMul) in nodes.enumerated() where matMul.opType == "MatMul" && storedWeight(index) && matMul.outputs.count == 1 {
            guard let (addIndex, add) = next(matMul.outputs[0]), add.opType == "Add", let bias = constantOperand(add, matMul.outputs[0]) else { continue }
            plans[index] = Fusion(kind: .bias(bias), input: matMul.inputs[0], absorbed: [addIndex], output: add.outputs[0])
        }
        return plans
    }

    /// The chain's name in `--profile`.
    var name: String {
        switch kind {
        case .gelu: "Gelu (fused Div, Erf, Add, Mul, Mul)"
        case .batchNorm: "Conv + BatchNormalization (fused)"
        case .silu: "SiLU (fused Sigmoid, Mul)"
        case .bias: "MatMul + Add (stored weight, fused bias)"
        }
    }

    /// The chain's output from its input and constants (`value` reads a name, nil while it is not
    /// known), or nil when they are not known yet or not what the fused kernel takes.
    /// `context` is the first node's.
    func run(_ value: (String) throws -> GraphValue?, context: NodeContext) throws -> Value? {
        guard case .tensor(let x)? = try value(input), case .float(let v) = x.elements, x.type == .float else { return nil }
        switch kind {
        case .bias(let name):
            guard let op = context.weight, context.quantizesActivations(op), let k = x.shape.last, k == op.depth,
                  case .tensor(let b)? = try value(name), b.type == .float, b.count == op.rows, b.shape.last == op.rows,
                  b.shape.count <= x.shape.count, case .float(let bias) = b.elements else { return nil }
            return Value(try context.applyWeight(op, v, batch: v.count / max(k, 1), bias: bias), shape: x.shape.dropLast() + [op.rows])
        case .silu:
            return Value(Self.silu(v), shape: x.shape)
        case .batchNorm(let scale, let bias, let mean, let variance, let epsilon):
            guard x.shape.count >= 3, case .tensor(let w)? = try value(context.node.inputs[1]), let channels = w.shape.first else { return nil }
            var parameters: [[Double]] = []
            for name in [scale, bias, mean, variance] {
                guard case .tensor(let p)? = try value(name), p.type == .float, p.count == channels else { return nil }
                parameters.append(p.asDoubles)
            }
            var y = try ConvolutionOps.conv(context)
            guard y.type == .float, y.shape.count >= 2, y.shape[1] == channels else { return nil }
            // The output's only reference, so that it is normalized where it lies.
            var values: [Float] = []
            if case .float(let stored) = y.elements { values = stored }
            y.elements = .float([])
            let (batch, spatial) = (y.shape[0], y.shape.dropFirst(2).reduce(1, *))
            values.withUnsafeMutableBufferPointer { v in
                guard let base = v.baseAddress else { return }
                ReductionOps.normalizeChannels(base, batch: batch, channels: channels, spatial: spatial, scale: parameters[0],
                                               bias: parameters[1], epsilon: epsilon) { _, ch in (parameters[2][ch], parameters[3][ch]) }
            }
            y.elements = .float(values)
            return y
        case .gelu(let divisor, let addend, let factor):
            var scalars: [Float] = []
            for name in [divisor, addend, factor] {
                guard case .tensor(let c)? = try value(name), c.type == .float, c.count == 1, c.shape.count <= x.shape.count,
                      case .float(let f) = c.elements else { return nil }
                scalars.append(f[0])
            }
            return Value(Self.gelu(v, divisor: scalars[0], addend: scalars[1], factor: scalars[2]), shape: x.shape)
        }
    }

    /// `((erf(x / a) + b) · x) · c` at each element: the unfused nodes' operations, in their order.
    static func gelu(_ x: [Float], divisor a: Float, addend b: Float, factor c: Float,
                     kernels: tessera_kernels? = KernelDispatch.kernels) -> [Float] {
        [Float](unsafeUninitializedCapacity: x.count) { y, initialized in
            x.withUnsafeBufferPointer { x in
                if let k = kernels, x.count > 0 {
                    k.gelu(x.baseAddress!, y.baseAddress!, x.count, a, b, c)
                } else {
                    for i in 0 ..< x.count { y[i] = ((PortableKernels.erf(x[i] / a) + b) * x[i]) * c }
                }
            }
            initialized = x.count
        }
    }

    /// `x · sigmoid(x)` at each element: the unfused nodes' operations.
    static func silu(_ x: [Float], kernels: tessera_kernels? = KernelDispatch.kernels) -> [Float] {
        [Float](unsafeUninitializedCapacity: x.count) { y, initialized in
            x.withUnsafeBufferPointer { x in
                if let k = kernels, x.count > 0 {
                    k.silu(x.baseAddress!, y.baseAddress!, x.count)
                } else {
                    for i in 0 ..< x.count { y[i] = x[i] * PortableKernels.sigmoid(x[i]) }
                }
            }
            initialized = x.count
        }
    }
}
