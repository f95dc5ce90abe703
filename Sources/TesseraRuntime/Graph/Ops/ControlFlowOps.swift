import Tessera

/// If, Loop and Scan. Their bodies are graphs run by executors of their own, built once with
/// the node; a body sees the values of the graphs around it (`NodeContext.scope`).
enum ControlFlowOps {
    static var table: [String: ValueKernel] {
        var t: [String: ValueKernel] = [:]
        t["If"] = { c in
            guard let condition = try c.input(0).asFloats.first else { throw RuntimeError(.badShape, "If's condition is empty") }
            let branch = try c.body(condition != 0 ? "then_branch" : "else_branch")
            return try branch.run([:], outer: c.scope).map(\.value)
        }
        t["Loop"] = { c in try loop(c) }
        t["Scan"] = { c in try scan(c).map(GraphValue.tensor) }
        return t
    }

    /// The body's inputs by position.
    static func feeds(_ body: GraphExecutor, _ values: [GraphValue]) throws -> [String: GraphValue] {
        let names = body.graph.inputs.map(\.name)
        guard names.count == values.count else {
            throw RuntimeError(.badGraph, "the body takes \(names.count) inputs, the node gives it \(values.count)")
        }
        return Dictionary(uniqueKeysWithValues: zip(names, values))
    }

    /// A body output that must be a tensor (a condition, a scan output).
    static func tensor(_ value: GraphValue, _ what: String) throws -> Value {
        guard case .tensor(let v) = value else { throw RuntimeError(.badGraph, "the body's \(what) is \(value.kindDescription), not a tensor") }
        return v
    }

    static func loop(_ c: NodeContext) throws -> [GraphValue] {
        let body = try c.body("body")
        let tripCount = c.optionalInput(0).flatMap { $0.asInts.first }
        var condition = c.optionalInput(1).map { ($0.asFloats.first ?? 0) != 0 } ?? true
        var carried = c.values.dropFirst(2).compactMap { $0 }
        let scanCount = body.graph.outputs.count - 1 - carried.count
        guard scanCount >= 0 else { throw RuntimeError(.badGraph, "the body returns fewer values than the loop carries") }
        var scans = [[Value]](repeating: [], count: scanCount)
        var iteration: Int64 = 0
        while condition, tripCount.map({ iteration < $0 }) ?? true {
            let inputs = [GraphValue.tensor(Value([iteration], shape: [])), .tensor(Value([condition], shape: []))] + carried
            let outputs = try body.run(try feeds(body, inputs), outer: c.scope).map(\.value)
            condition = (try tensor(outputs[0], "condition").asFloats.first ?? 0) != 0
            carried = Array(outputs[1 ..< 1 + carried.count])
            for k in 0 ..< scanCount { scans[k].append(try tensor(outputs[1 + carried.count + k], "scan output")) }
            iteration += 1
            guard iteration < Int64(Limits.maxElementCount) else { throw RuntimeError(.tooLarge, "the loop does not end") }
        }
        return try carried + scans.map { .tensor($0.isEmpty ? Value([Float](), shape: [0]) : try ShapeOps.stack($0, axis: 0)) }
    }

    static func scan(_ c: NodeContext) throws -> [Value] {
        guard c.opset >= 9 else { throw RuntimeError(.unsupportedOp, "Scan before opset 9 (with a batch axis) is not supported") }
        let body = try c.body("body")
        let scanInputs = c.int("num_scan_inputs", 0)
        let all = (0 ..< c.inputCount).compactMap { c.optionalInput($0) }
        let stateCount = all.count - scanInputs
        guard scanInputs >= 1, stateCount >= 0 else { throw RuntimeError(.badGraph, "Scan needs num_scan_inputs between 1 and its input count") }
        var states = Array(all.prefix(stateCount))
        let sequences = Array(all.suffix(scanInputs))
        let inputAxes = try (c.ints("scan_input_axes") ?? [Int](repeating: 0, count: scanInputs)).enumerated().map {
            try normalizedAxis($0.element, rank: sequences[$0.offset].shape.count)
        }
        let inputReversed = (c.ints("scan_input_directions") ?? [Int](repeating: 0, count: scanInputs)).map { $0 != 0 }
        guard inputAxes.count == scanInputs, inputReversed.count == scanInputs,
              let length = sequences.first.map({ $0.shape[inputAxes[0]] }),
              sequences.indices.allSatisfy({ sequences[$0].shape[inputAxes[$0]] == length }) else {
            throw RuntimeError(.badShape, "Scan's inputs do not share one sequence length along their axes")
        }
        let scanOutputs = body.graph.outputs.count - stateCount
        var collected = [[Value]](repeating: [], count: scanOutputs)
        for t in 0 ..< length {
            let slices = sequences.indices.map { j -> Value in
                let axis = inputAxes[j], at = inputReversed[j] ? length - 1 - t : t
                var shape = sequences[j].shape
                let slice = ShapeOps.slice(sequences[j], starts: [at], ends: [at + 1], axes: [axis], steps: [1])
                shape.remove(at: axis)
                return slice.reshaped(shape)
            }
            let outputs = try body.run(try feeds(body, (states + slices).map(GraphValue.tensor)), outer: c.scope)
                .map { try tensor($0.value, "output") }
            states = Array(outputs.prefix(stateCount))
            for k in 0 ..< scanOutputs { collected[k].append(outputs[stateCount + k]) }
        }
        let outputAxes = c.ints("scan_output_axes") ?? [Int](repeating: 0, count: scanOutputs)
        let outputReversed = (c.ints("scan_output_directions") ?? [Int](repeating: 0, count: scanOutputs)).map { $0 != 0 }
        guard outputAxes.count == scanOutputs, outputReversed.count == scanOutputs else {
            throw RuntimeError(.badGraph, "scan_output_axes or scan_output_directions do not fit \(scanOutputs) scan outputs")
        }
        return try states + collected.indices.map { k in
            guard !collected[k].isEmpty else { return Value([Float](), shape: [0]) }
            return try ShapeOps.stack(outputReversed[k] ? collected[k].reversed() : collected[k], axis: outputAxes[k])
        }
    }
}
