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
        /// A float32 Conv and what follows it, applied in place to the Conv's output in the
        /// nodes' order with their own arithmetic (no second tensor).
        case convolution(ConvEpilogue)
        /// SiLU (swish), `x · sigmoid(x)`: Sigmoid → Mul (by x), as YOLO-style models export it.
        case silu
        /// Attention's scores: Div by a scalar constant, Add of a mask (a value that broadcasts to
        /// the scores, as the extended attention mask does), Softmax over the last axis (its
        /// `axis` attribute, or the opset's default, kept here). One pass per row.
        case maskedSoftmax(divisor: String, mask: String, maskFirst: Bool, axis: Int)
        /// A MatMul on a stored weight, then an Add of a constant bias over its outputs: the
        /// kernel adds the bias as it writes each output (the float GEMM as it transposes yᵀ
        /// into y, the integer one as it scales its sums).
        case bias(String)
    }

    /// The nodes after a Conv that its fused kernel applies, each optional, in this order.
    struct ConvEpilogue {
        /// An inference BatchNormalization, with its parameters' names.
        var batchNorm: (scale: String, bias: String, mean: String, variance: String, epsilon: Double)?
        /// Adds, Subs, Muls and Divs by a constant with one value per channel (or one for all):
        /// a bias the Conv was exported without, a batch normalization exported as Sub, Mul, Add.
        /// `op` is the kernel's code (`TESSERA_STEP_…`, with the constant-first flag).
        var steps: [(op: Int32, name: String)] = []
        /// An Add of a value computed before the Conv (a residual), same shape; `first` when that
        /// value is the Add's first operand.
        var residual: (name: String, first: Bool)?
        var activation: Activation?
    }

    /// An activation a Conv's epilogue applies, element by element, with the op's own function.
    enum Activation {
        case relu, hardSwish, leakyRelu(Float), hardSigmoid(Float, Float)
        /// SiLU, Sigmoid then Mul by the Conv's output (the SiLU chain's kernel).
        case silu
        /// BERT's exact GELU (the `gelu` chain), with its scalar constants' names, then values.
        case gelu(divisor: String, addend: String, factor: String)
        case geluValues(Float, Float, Float)
        /// Clip, with its bounds as attributes (before opset 11) or from inputs (a name, "" for none).
        case clip(Float, Float)
        case clipInputs(String, String)

        /// The op name in `--profile`.
        var name: String {
            switch self {
            case .relu: "Relu"
            case .hardSwish: "HardSwish"
            case .leakyRelu: "LeakyRelu"
            case .hardSigmoid: "HardSigmoid"
            case .silu: "SiLU"
            case .gelu, .geluValues: "Gelu"
            case .clip, .clipInputs: "Clip"
            }
        }

        /// The activation of `node`, which reads the value `input` and is its only reader, when
        /// it is one the epilogue applies (float32 attributes, as the ops read them).
        init?(_ node: ONNXGraph.Node, input: String, opset: Int64) {
            guard node.domain.isEmpty, node.inputs.first == input, node.outputs.count == 1 else { return nil }
            func float(_ name: String, _ fallback: Float) -> Float {
                if case .float(let v)? = node.attributes[name] { return v }
                return fallback
            }
            switch node.opType {
            case "Relu": self = .relu
            case "HardSwish": self = .hardSwish
            case "LeakyRelu": self = .leakyRelu(float("alpha", 0.01))
            case "HardSigmoid": self = .hardSigmoid(float("alpha", 0.2), float("beta", 0.5))
            case "Clip" where opset < 11:
                self = .clip(Float(Double(float("min", -.greatestFiniteMagnitude))), Float(Double(float("max", .greatestFiniteMagnitude))))
            case "Clip":
                let bounds = node.inputs.dropFirst()
                self = .clipInputs(bounds.first ?? "", bounds.dropFirst().first ?? "")
            default: return nil
            }
        }

        /// The activation with its Clip bounds or GELU constants read (`value` reads a name), or
        /// nil when one is not a known float scalar (a GELU's must have the output's rank or less).
        func resolved(_ value: (String) throws -> GraphValue?, rank: Int) throws -> Activation? {
            if case .gelu(let divisor, let addend, let factor) = self {
                return try Fusion.scalars([divisor, addend, factor], rank: rank, value).map { .geluValues($0[0], $0[1], $0[2]) }
            }
            guard case .clipInputs(let lowName, let highName) = self else { return self }
            var bounds: [Float] = []
            for (name, fallback) in [(lowName, -Double.infinity), (highName, .infinity)] {
                guard !name.isEmpty else { bounds.append(Float(fallback)); continue }
                guard case .tensor(let b)? = try value(name), b.type == .float, b.count <= 1 else { return nil }
                bounds.append(Float(b.asDoubles.first ?? fallback))
            }
            return .clip(bounds[0], bounds[1])
        }

        /// The (resolved) activation as the epilogue kernel takes it: its code and parameters.
        var parameters: (code: Int32, alpha: Float, beta: Float, gamma: Float) {
            switch self {
            case .relu: (Int32(TESSERA_RELU), 0, 0, 0)
            case .hardSwish: (Int32(TESSERA_HARDSWISH), 0, 0, 0)
            case .leakyRelu(let a): (Int32(TESSERA_LEAKYRELU), a, 0, 0)
            case .hardSigmoid(let a, let b): (Int32(TESSERA_HARDSIGMOID), a, b, 0)
            case .clip(let low, let high): (Int32(TESSERA_CLIP), low, high, 0)
            case .clipInputs, .gelu: preconditionFailure("an activation's inputs are read first (resolved)")
            case .silu: (Int32(TESSERA_SILU), 0, 0, 0)
            case .geluValues(let a, let b, let c): (Int32(TESSERA_GELU), a, b, c)
            }
        }
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
        var readers: [String: Int] = [:], reader: [String: Int] = [:], producer: [String: Int] = [:]
        for (index, node) in graph.nodes.enumerated() {
            for input in node.inputs where !input.isEmpty {
                readers[input, default: 0] += 1
                reader[input] = index
            }
            for output in node.outputs where !output.isEmpty { producer[output] = index }
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
        for (index, div) in nodes.enumerated() where plans[index] == nil && div.domain.isEmpty && div.opType == "Div" && div.inputs.count == 2 {
            let scores = div.inputs[0], divisor = div.inputs[1]
            guard !constant(scores), constant(divisor), div.outputs.count == 1, let (addIndex, add) = next(div.outputs[0]),
                  add.domain.isEmpty, add.opType == "Add", add.inputs.count == 2, add.outputs.count == 1,
                  let mask = add.inputs.first(where: { $0 != div.outputs[0] }), !mask.isEmpty,
                  let (softmaxIndex, softmax) = next(add.outputs[0]), softmax.domain.isEmpty, softmax.opType == "Softmax",
                  softmax.inputs.count == 1, softmax.outputs.count == 1
            else { continue }
            var axis = graph.defaultOpset < 13 ? 1 : -1
            if case .int(let a)? = softmax.attributes["axis"] { axis = Int(a) }
            plans[index] = Fusion(kind: .maskedSoftmax(divisor: divisor, mask: mask, maskFirst: add.inputs[0] == mask, axis: axis),
                                  input: scores, absorbed: [addIndex, softmaxIndex], output: softmax.outputs[0])
        }
        for (index, sigmoid) in nodes.enumerated() where sigmoid.domain.isEmpty && sigmoid.opType == "Sigmoid" && sigmoid.inputs.count == 1 {
            let x = sigmoid.inputs[0]
            guard !constant(x), sigmoid.outputs.count == 1, let (mulIndex, mul) = next(sigmoid.outputs[0]), mul.domain.isEmpty,
                  mul.opType == "Mul", mul.outputs.count == 1, mul.inputs.count == 2, Set(mul.inputs) == [x, sigmoid.outputs[0]] else { continue }
            plans[index] = Fusion(kind: .silu, input: x, absorbed: [mulIndex], output: mul.outputs[0])
        }
        for (index, conv) in nodes.enumerated() where conv.domain.isEmpty && conv.opType == "Conv" && conv.outputs.count == 1 {
            var epilogue = ConvEpilogue(), absorbed: [Int] = [], current = conv.outputs[0]
            if let (normIndex, norm) = next(current), norm.domain.isEmpty, norm.opType == "BatchNormalization",
               norm.inputs.count == 5, norm.inputs[0] == current, norm.inputs.dropFirst().allSatisfy(constant),
               norm.outputs.dropFirst().allSatisfy(\.isEmpty), let epsilon = inferenceEpsilon(norm) {
                epilogue.batchNorm = (norm.inputs[1], norm.inputs[2], norm.inputs[3], norm.inputs[4], epsilon)
                (absorbed, current) = ([normIndex], norm.outputs[0])
            }
            /// The Add reading `current` and its other operand (`first` when that comes first).
            func add() -> (index: Int, other: String, first: Bool, output: String)? {
                guard let (addIndex, add) = next(current), add.domain.isEmpty, add.opType == "Add", add.inputs.count == 2,
                      add.outputs.count == 1 else { return nil }
                let first = add.inputs[1] == current, other = first ? add.inputs[0] : add.inputs[1]
                return other == current ? nil : (addIndex, other, first, add.outputs[0])
            }
            /// Identities and Casts to float32 after `current` (see `isNoOp`).
            func skipNoOps() {
                while let (noOpIndex, noOp) = next(current), Self.isNoOp(noOp) {
                    absorbed.append(noOpIndex)
                    current = noOp.outputs[0]
                }
            }
            skipNoOps()
            while epilogue.steps.count < Int(TESSERA_EPILOGUE_MAX_STEPS), let (stepIndex, step) = next(current), step.domain.isEmpty,
                  let op = Self.stepCodes[step.opType], let other = constantOperand(step, current) {
                let first = step.inputs[0] == other
                epilogue.steps.append((first ? op | Int32(TESSERA_STEP_CONSTANT_FIRST) : op, other))
                absorbed.append(stepIndex)
                current = step.outputs[0]
                skipNoOps()
            }
            // A residual must be known when the Conv runs: given, computed by an earlier node, or
            // by a later node that an earlier chain absorbs (it computes all of its nodes at its
            // first: a ResNet block's shortcut Conv and its normalization). Should that chain run
            // unfused, this one does too (its residual is not known yet).
            // TensorFlow exports Cast the shortcut to float just before the Add, after the Conv:
            // the fused chain reads what the Casts read (it takes float32 values only, which a
            // Cast to float leaves as they are).
            func knownBefore(_ node: Int) -> Bool { node < index || plans.contains { $0.key < index && $0.value.absorbed.contains(node) } }
            func uncast(_ name: String) -> String {
                guard let p = producer[name], !knownBefore(p), Self.isNoOp(nodes[p]) else { return name }
                return uncast(nodes[p].inputs[0])
            }
            if let a = add(), !constant(a.other), case let residual = uncast(a.other), producer[residual].map(knownBefore) ?? true {
                epilogue.residual = (residual, a.first)
                absorbed.append(a.index)
                current = a.output
                skipNoOps()
            }
            if let (activationIndex, node) = next(current), let activation = Activation(node, input: current, opset: graph.defaultOpset) {
                epilogue.activation = activation
                absorbed.append(activationIndex)
                current = node.outputs[0]
                skipNoOps()
            } else if readers[current] == 2, let s = nodes.firstIndex(where: { $0.opType == "Sigmoid" && $0.inputs == [current] }),
                      nodes[s].domain.isEmpty, nodes[s].outputs.count == 1, let (mulIndex, mul) = next(nodes[s].outputs[0]),
                      mul.domain.isEmpty, mul.opType == "Mul", mul.outputs.count == 1, mul.inputs.count == 2,
                      Set(mul.inputs) == [current, nodes[s].outputs[0]] {
                epilogue.activation = .silu
                absorbed += [s, mulIndex]
                current = mul.outputs[0]
            } else if readers[current] == 2, let (divIndex, gelu) = plans.first(where: { $0.value.input == current && $0.key > index }),
                      case .gelu(let divisor, let addend, let factor) = gelu.kind {
                // A GELU planned on its own (its Div reads the chain's output, its Mul too).
                epilogue.activation = .gelu(divisor: divisor, addend: addend, factor: factor)
                plans[divIndex] = nil
                absorbed += [divIndex] + gelu.absorbed
                current = gelu.output
            }
            guard !absorbed.isEmpty else { continue }
            plans[index] = Fusion(kind: .convolution(epilogue), input: conv.inputs[0], absorbed: absorbed, output: current)
        }
        for (index, matMul) in nodes.enumerated() where matMul.opType == "MatMul" && storedWeight(index) && matMul.outputs.count == 1 {
            guard let (addIndex, add) = next(matMul.outputs[0]), add.opType == "Add", let bias = constantOperand(add, matMul.outputs[0]) else { continue }
            plans[index] = Fusion(kind: .bias(bias), input: matMul.inputs[0], absorbed: [addIndex], output: add.outputs[0])
        }
        return plans
    }

    /// BatchNormalization's epsilon when it runs in inference mode in the form the fused
    /// kernel takes (opset 9 on: older forms with spatial, is_test or consumed_inputs run unfused).
    static func inferenceEpsilon(_ norm: ONNXGraph.Node) -> Double? {
        var epsilon = 1e-5
        for (name, attribute) in norm.attributes {
            switch (name, attribute) {
            case ("epsilon", .float(let e)): epsilon = Double(e)
            case ("training_mode", .int(let t)) where t == 0: break
            case ("momentum", _): break
            default: return nil
            }
        }
        return epsilon
    }

    /// Whether `node` changes nothing on the float32 values a fused chain carries: an Identity
    /// or a Cast to float (TensorFlow exports put a Cast between most nodes, Paddle exports
    /// Identities).
    static func isNoOp(_ node: ONNXGraph.Node) -> Bool {
        guard node.domain.isEmpty, node.inputs.count == 1, node.outputs.count == 1 else { return false }
        if node.opType == "Identity" { return true }
        if node.opType == "Cast", case .int(1)? = node.attributes["to"] { return true }
        return false
    }

    /// The epilogue's step for each op, and each step's name (by the code without its flag).
    static let stepCodes: [String: Int32] = ["Add": Int32(TESSERA_STEP_ADD), "Sub": Int32(TESSERA_STEP_SUB),
                                             "Mul": Int32(TESSERA_STEP_MUL), "Div": Int32(TESSERA_STEP_DIV)]
    static let stepNames = ["Add", "Sub", "Mul", "Div"]

    /// The chain's name in `--profile`.
    var name: String {
        switch kind {
        case .gelu: "Gelu (fused Div, Erf, Add, Mul, Mul)"
        case .convolution(let e):
            (["Conv"] + (e.batchNorm == nil ? [] : ["BatchNormalization"])
                + (e.steps.isEmpty ? [] : [e.steps.map { Self.stepNames[Int($0.op & 3)] }.joined(separator: ", ") + " (constant)"])
                + (e.residual == nil ? [] : ["Add"])
                + (e.activation.map { [$0.name] } ?? [])).joined(separator: " + ") + " (fused)"
        case .silu: "SiLU (fused Sigmoid, Mul)"
        case .bias: "MatMul + Add (stored weight, fused bias)"
        case .maskedSoftmax: "Softmax (fused Div, Add)"
        }
    }

    /// The chain's output from its input and constants (`value` reads a name, nil while it is not
    /// known), or nil when they are not known yet or not what the fused kernel takes.
    /// `context` is the first node's.
    func run(_ value: (String) throws -> GraphValue?, context: NodeContext) throws -> Value? {
        guard case .tensor(let x)? = try value(input), case .float(let v) = x.elements, x.type == .float else { return nil }
        switch kind {
        case .bias(let name):
            guard let op = context.weight, let k = x.shape.last, k == op.depth,
                  case .tensor(let b)? = try value(name), b.type == .float, b.count == op.rows, b.shape.last == op.rows,
                  b.shape.count <= x.shape.count, case .float(let bias) = b.elements else { return nil }
            return Value(try context.applyWeight(op, v, batch: v.count / max(k, 1), bias: bias), shape: x.shape.dropLast() + [op.rows])
        case .silu:
            return Value(Self.silu(v, threads: context.threads), shape: x.shape)
        case .maskedSoftmax(let divisorName, let maskName, let maskFirst, let axis):
            // Neither operand may broadcast the scores to a larger shape; the mask repeats along rows.
            let rank = x.shape.count
            guard rank >= 1, let n = x.shape.last, n > 0, axis == rank - 1 || axis == -1,
                  case .tensor(let d)? = try value(divisorName), d.type == .float, d.count == 1, d.shape.count <= rank,
                  case .float(let divisor) = d.elements,
                  case .tensor(let m)? = try value(maskName), m.type == .float, m.shape.count <= rank, case .float(let mask) = m.elements
            else { return nil }
            let maskShape = [Int](repeating: 1, count: rank - m.shape.count) + m.shape
            guard zip(maskShape, x.shape).allSatisfy({ $0 == 1 || $0 == $1 }) else { return nil }
            return Value(Self.maskedSoftmax(v, shape: x.shape, divisor: divisor[0], mask: mask, maskShape: maskShape, maskFirst: maskFirst),
                         shape: x.shape)
        case .convolution(let e):
            guard x.shape.count >= 3, case .tensor(let w)? = try value(context.node.inputs[1]), let channels = w.shape.first else { return nil }
            var normalization: [(scale: Double, shift: Double)] = []
            if let n = e.batchNorm {
                var parameters: [[Double]] = []
                for name in [n.scale, n.bias, n.mean, n.variance] {
                    guard case .tensor(let p)? = try value(name), p.type == .float, p.count == channels else { return nil }
                    parameters.append(p.asDoubles)
                }
                normalization = (0 ..< channels).map {
                    ReductionOps.normalization(scale: parameters[0][$0], bias: parameters[1][$0], mean: parameters[2][$0],
                                               variance: parameters[3][$0], epsilon: n.epsilon)
                }
            }
            // Each step's constant broadcasts along the channel axis only: [C, 1, 1], [1, C, 1, 1],
            // or one value. `constants[channel · steps + s]` is step s's for a channel.
            var constants = [Float](repeating: 0, count: channels * e.steps.count)
            for (s, step) in e.steps.enumerated() {
                guard case .tensor(let v)? = try value(step.name), v.type == .float, v.shape.count <= x.shape.count,
                      case .float(let f) = v.elements, f.count == channels || f.count == 1 else { return nil }
                let aligned = [Int](repeating: 1, count: x.shape.count - v.shape.count) + v.shape
                guard aligned.indices.allSatisfy({ $0 == 1 ? aligned[$0] == f.count : aligned[$0] == 1 }) else { return nil }
                for c in 0 ..< channels { constants[c * e.steps.count + s] = f.count == channels ? f[c] : f[0] }
            }
            let ops = e.steps.map(\.op)
            var residual: Value?
            if let r = e.residual {
                guard case .tensor(let v)? = try value(r.name), v.type == .float, v.shape.count == x.shape.count,
                      v.shape[0] == x.shape[0], v.shape[1] == channels else { return nil }
                residual = v
            }
            var activation: Activation?
            if let a = e.activation {
                guard let resolved = try a.resolved(value, rank: x.shape.count) else { return nil }
                activation = resolved
            }
            // The epilogue runs on each run of outputs the Conv finishes, while they are in cache.
            let other: [Float] = if case .float(let f)? = residual?.elements { f } else { [] }
            // A residual's planes as it has them; one that turns out not to have the output's
            // shape (broadcasting spatially, not seen in exported models) is not read past its
            // end here, and the chain then runs unfused, the Conv again.
            let otherSpatial = residual.map { $0.shape.dropFirst(2).reduce(1, *) } ?? 0
            var steps = tessera_epilogue()
            steps.normalize = normalization.isEmpty ? 0 : 1
            steps.steps = Int32(e.steps.count)
            if let r = e.residual { steps.residual_first = r.first ? 1 : 0 }
            if let a = activation { (steps.activation, steps.alpha, steps.beta, steps.gamma) = a.parameters }
            // Constants from here on: the finisher runs once per channel and block, and
            // capturing them as variables checked exclusive access on every call.
            let (template, scaleShift, stepCount) = (steps, normalization, e.steps.count)
            let y = try other.withUnsafeBufferPointer { other in
                try ops.withUnsafeBufferPointer { ops in
                    try constants.withUnsafeBufferPointer { constants in
                        try ConvolutionOps.conv(context) { p, offset, run, count, source in
                            let ch = p % channels
                            var channel = template
                            if let source { (channel.source, channel.initial) = source }
                            if !scaleShift.isEmpty { (channel.scale, channel.shift) = scaleShift[ch] }
                            if stepCount > 0 { (channel.ops, channel.constants) = (ops.baseAddress, constants.baseAddress! + ch * stepCount) }
                            if e.residual != nil, offset + count <= otherSpatial, let base = other.baseAddress {
                                channel.residual = base + p * otherSpatial + offset
                            }
                            Self.epilogue(run, count: count, channel)
                        }
                    }
                }
            }
            guard y.type == .float, y.shape.count >= 2, y.shape[1] == channels, residual.map({ $0.shape == y.shape }) ?? true else { return nil }
            return y
        case .gelu(let divisor, let addend, let factor):
            guard let scalars = try Self.scalars([divisor, addend, factor], rank: x.shape.count, value) else { return nil }
            return Value(Self.gelu(v, divisor: scalars[0], addend: scalars[1], factor: scalars[2], threads: context.threads), shape: x.shape)
        }
    }

    /// The values of `names`, when each is a known float32 scalar of rank `rank` or less (so that
    /// broadcasting it keeps the shape).
    static func scalars(_ names: [String], rank: Int, _ value: (String) throws -> GraphValue?) throws -> [Float]? {
        var scalars: [Float] = []
        for name in names {
            guard case .tensor(let c)? = try value(name), c.type == .float, c.count == 1, c.shape.count <= rank,
                  case .float(let f) = c.elements else { return nil }
            scalars.append(f[0])
        }
        return scalars
    }

    /// `((erf(x / a) + b) · x) · c` at each element: the unfused nodes' operations, in their order.
    static func gelu(_ x: [Float], divisor a: Float, addend b: Float, factor c: Float,
                     kernels: tessera_kernels? = KernelDispatch.kernels, threads: Int = 1) -> [Float] {
        elementwise(x, threads: threads) { x, y, n in
            if let k = kernels {
                k.gelu(x, y, n, a, b, c)
            } else {
                for i in 0 ..< n { y[i] = ((PortableKernels.erf(x[i] / a) + b) * x[i]) * c }
            }
        }
    }

    /// A fused Conv's epilogue on `count` outputs in place (see `tessera_epilogue`): the nodes'
    /// operations in their order, through the C kernel or here, the portable reference. It runs
    /// once per channel and block, so it takes the one function it calls (copying the whole
    /// table per call was 4% of a 3x3 convolution, perf).
    static func epilogue(_ v: UnsafeMutablePointer<Float>, count: Int, _ e: tessera_epilogue,
                         kernel: tessera_epilogue_fn? = KernelDispatch.kernels?.epilogue) {
        if let kernel {
            withUnsafePointer(to: e) { kernel(v, count, $0) }
            return
        }
        for i in 0 ..< count {
            var x = e.source.map { e.initial + $0[i] } ?? v[i]
            if e.normalize != 0 { x = Float(Double(x) * e.scale + e.shift) }
            for s in 0 ..< Int(e.steps) {
                let c = e.constants![s]
                switch Int(e.ops![s]) {
                case TESSERA_STEP_ADD: x = x + c
                case TESSERA_STEP_ADD | TESSERA_STEP_CONSTANT_FIRST: x = c + x
                case TESSERA_STEP_SUB: x = x - c
                case TESSERA_STEP_SUB | TESSERA_STEP_CONSTANT_FIRST: x = c - x
                case TESSERA_STEP_MUL: x = x * c
                case TESSERA_STEP_MUL | TESSERA_STEP_CONSTANT_FIRST: x = c * x
                case TESSERA_STEP_DIV: x = x / c
                default: x = c / x
                }
            }
            if let r = e.residual { x = e.residual_first != 0 ? r[i] + x : x + r[i] }
            switch Int(e.activation) {
            case TESSERA_RELU: x = ElementwiseOps.relu(x)
            case TESSERA_HARDSWISH: x = ElementwiseOps.hardSwish(x)
            case TESSERA_LEAKYRELU: x = ElementwiseOps.leakyRelu(x, e.alpha)
            case TESSERA_HARDSIGMOID: x = ElementwiseOps.hardSigmoid(x, e.alpha, e.beta)
            case TESSERA_CLIP: x = ElementwiseOps.clip(x, e.alpha, e.beta)
            case TESSERA_SILU: x = x * PortableKernels.sigmoid(x)
            case TESSERA_GELU: x = ((PortableKernels.erf(x / e.alpha) + e.beta) * x) * e.gamma
            default: break
            }
            v[i] = x
        }
    }

    /// Softmax over the last axis of `x / divisor + mask` (`mask + …` when `maskFirst`), the mask
    /// broadcast from `maskShape` (the scores' rank): the Div, Add and Softmax nodes' operations.
    /// The C kernel takes the rows that share a mask row at a time.
    static func maskedSoftmax(_ x: [Float], shape: [Int], divisor: Float, mask: [Float], maskShape: [Int], maskFirst: Bool,
                              kernels: tessera_kernels? = KernelDispatch.kernels) -> [Float] {
        let n = shape.last!, rows = x.count / n, step = maskShape.last! == 1 ? 0 : 1
        let strides = zip(Broadcast.strides(maskShape), maskShape).map { $1 == 1 ? 0 : $0 }
        /// The offset in `mask` of row r's mask values.
        func maskOffset(_ r: Int) -> Int {
            var (rest, offset) = (r, 0)
            for axis in stride(from: shape.count - 2, through: 0, by: -1) {
                offset += rest % shape[axis] * strides[axis]
                rest /= shape[axis]
            }
            return offset
        }
        guard let k = kernels else {
            var t = x
            for r in 0 ..< rows {
                let base = maskOffset(r)
                for j in 0 ..< n {
                    let q = x[r * n + j] / divisor, m = mask[base + j * step]
                    t[r * n + j] = maskFirst ? m + q : q + m
                }
            }
            return ReductionOps.softmaxRows(t, rows: rows, n: n, log: false, kernels: nil)
        }
        return [Float](unsafeUninitializedCapacity: x.count) { y, initialized in
            x.withUnsafeBufferPointer { x in mask.withUnsafeBufferPointer { mask in
                var first = 0
                while first < rows {
                    let offset = maskOffset(first)
                    var end = first + 1
                    while end < rows, maskOffset(end) == offset { end += 1 }
                    k.masked_softmax(x.baseAddress! + first * n, y.baseAddress! + first * n, end - first, n, divisor,
                                     mask.baseAddress! + offset, step, maskFirst ? 1 : 0)
                    first = end
                }
            } }
            initialized = x.count
        }
    }

    /// `x · sigmoid(x)` at each element: the unfused nodes' operations.
    static func silu(_ x: [Float], kernels: tessera_kernels? = KernelDispatch.kernels, threads: Int = 1) -> [Float] {
        elementwise(x, threads: threads) { x, y, n in
            if let k = kernels { k.silu(x, y, n) } else { for i in 0 ..< n { y[i] = x[i] * PortableKernels.sigmoid(x[i]) } }
        }
    }

    /// `body(x, y, n)` over runs of `x` (each a multiple of 64 elements but the last), split among
    /// threads when there are enough elements (`Threads.worthwhile`): element by element, so the
    /// same outputs.
    private static func elementwise(_ x: [Float], threads: Int,
                                    _ body: (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void) -> [Float] {
        [Float](unsafeUninitializedCapacity: x.count) { y, initialized in
            x.withUnsafeBufferPointer { x in
                guard let input = x.baseAddress, let output = y.baseAddress else { return }
                Threads.split(x.count, threads: Threads.worthwhile(threads, work: x.count), granularity: 64) { range in
                    body(input + range.lowerBound, output + range.lowerBound, range.count)
                }
            }
            initialized = x.count
        }
    }
}
