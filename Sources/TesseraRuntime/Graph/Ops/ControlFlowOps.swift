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
        let body = try c.body("body")
        let scanInputs = c.int("num_scan_inputs", 0)
        // Opset 8 has a batch axis first and optional sequence_lens before the states.
        let batched = c.opset < 9
        if batched, let lengths = c.optionalInput(0) {
            guard let first = lengths.asInts.first, lengths.asInts.allSatisfy({ $0 == first }) else {
                throw RuntimeError(.unsupportedAttribute, "Scan (opset 8) with sequence_lens that differ between batch rows is not supported")
            }
        }
        let all = ((batched ? 1 : 0) ..< c.inputCount).compactMap { c.optionalInput($0) }
        let stateCount = all.count - scanInputs
        guard scanInputs >= 1, stateCount >= 0 else { throw RuntimeError(.badGraph, "Scan needs num_scan_inputs between 1 and its input count") }
        let scanOutputs = body.graph.outputs.count - stateCount
        if !batched {
            return try scanSequence(c, body, states: Array(all.prefix(stateCount)), sequences: Array(all.suffix(scanInputs)),
                                    inputReversed: (c.ints("scan_input_directions") ?? [Int](repeating: 0, count: scanInputs)).map { $0 != 0 },
                                    inputAxes: c.ints("scan_input_axes"), scanOutputs: scanOutputs,
                                    outputAxes: c.ints("scan_output_axes"), outputReversed: c.ints("scan_output_directions")?.map { $0 != 0 })
        }
        // Opset 8: each batch row scanned on its own (sequence axis 0 once the row is taken), then stacked.
        guard let batch = all.first?.shape.first, all.allSatisfy({ $0.shape.first == batch }) else {
            throw RuntimeError(.badShape, "Scan's inputs do not share one batch size")
        }
        let rows = try (0 ..< batch).map { b in
            let row = all.map { v -> Value in
                ShapeOps.slice(v, starts: [b], ends: [b + 1], axes: [0], steps: [1]).reshaped(Array(v.shape.dropFirst()))
            }
            return try scanSequence(c, body, states: Array(row.prefix(stateCount)), sequences: Array(row.suffix(scanInputs)),
                                    inputReversed: (c.ints("directions") ?? [Int](repeating: 0, count: scanInputs)).map { $0 != 0 },
                                    inputAxes: nil, scanOutputs: scanOutputs, outputAxes: nil, outputReversed: nil)
        }
        return try (0 ..< stateCount + scanOutputs).map { k in try ShapeOps.stack(rows.map { $0[k] }, axis: 0) }
    }

    /// One scan over `sequences` along their axes, carrying `states` through the body.
    static func scanSequence(_ c: NodeContext, _ body: GraphExecutor, states initial: [Value], sequences: [Value], inputReversed: [Bool],
                             inputAxes: [Int]?, scanOutputs: Int, outputAxes: [Int]?, outputReversed: [Bool]?) throws -> [Value] {
        var states = initial
        let scanInputs = sequences.count
        let inputAxes = try (inputAxes ?? [Int](repeating: 0, count: scanInputs)).enumerated().map {
            try normalizedAxis($0.element, rank: sequences[$0.offset].shape.count)
        }
        guard inputAxes.count == scanInputs, inputReversed.count == scanInputs,
              let length = sequences.first.map({ $0.shape[inputAxes[0]] }),
              sequences.indices.allSatisfy({ sequences[$0].shape[inputAxes[$0]] == length }) else {
            throw RuntimeError(.badShape, "Scan's inputs do not share one sequence length along their axes")
        }
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
            states = Array(outputs.prefix(states.count))
            for k in 0 ..< scanOutputs { collected[k].append(outputs[states.count + k]) }
        }
        let axes = outputAxes ?? [Int](repeating: 0, count: scanOutputs)
        let reversed = outputReversed ?? [Bool](repeating: false, count: scanOutputs)
        guard axes.count == scanOutputs, reversed.count == scanOutputs else {
            throw RuntimeError(.badGraph, "scan_output_axes or scan_output_directions do not fit \(scanOutputs) scan outputs")
        }
        return try states + collected.indices.map { k in
            guard !collected[k].isEmpty else { return Value([Float](), shape: [0]) }
            return try ShapeOps.stack(reversed[k] ? collected[k].reversed() : collected[k], axis: axes[k])
        }
    }
}
