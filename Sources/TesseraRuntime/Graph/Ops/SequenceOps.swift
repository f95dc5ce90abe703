import Tessera

/// Sequences of tensors and optionals, and Identity (which passes any value). Positions follow
/// ONNX: negative counts from the back; insertion accepts the length itself (the end).
enum SequenceOps {
    static var table: [String: ValueKernel] {
        var t: [String: ValueKernel] = [:]
        t["Identity"] = { c in [try c.value(0)] }
        t["SequenceEmpty"] = { c in [.sequence([], elementType: try dataType(c.int("dtype", Int(DataType.float.rawValue))))] }
        t["SequenceConstruct"] = { c in
            let items = try c.givenInputs()
            guard let type = items.first?.type, items.allSatisfy({ $0.type == type }) else {
                throw RuntimeError(.badGraph, "SequenceConstruct needs at least one input, all of one element type")
            }
            return [.sequence(items, elementType: type)]
        }
        t["SequenceLength"] = { c in [.tensor(Value([Int64(try c.sequence(0).items.count)], shape: []))] }
        t["SequenceAt"] = { c in
            let (items, _) = try c.sequence(0)
            return [.tensor(items[try position(c.input(1), count: items.count, end: false)])]
        }
        t["SequenceInsert"] = { c in
            var (items, type) = try c.sequence(0)
            let item = try c.input(1)
            guard item.type == type else { throw RuntimeError(.badGraph, "the tensor is \(item.type); the sequence holds \(type)") }
            let at = try c.optionalInput(2).map { try position($0, count: items.count, end: true) } ?? items.count
            items.insert(item, at: at)
            return [.sequence(items, elementType: type)]
        }
        t["SequenceErase"] = { c in
            var (items, type) = try c.sequence(0)
            guard !items.isEmpty else { throw RuntimeError(.badShape, "SequenceErase on an empty sequence") }
            let at = try c.optionalInput(1).map { try position($0, count: items.count, end: false) } ?? items.count - 1
            items.remove(at: at)
            return [.sequence(items, elementType: type)]
        }
        t["ConcatFromSequence"] = { c in
            let (items, _) = try c.sequence(0)
            guard let first = items.first else { throw RuntimeError(.badShape, "ConcatFromSequence on an empty sequence") }
            guard c.int("new_axis", 0) != 0 else {
                return [.tensor(try ShapeOps.concatenate(items, axis: try normalizedAxis(c.int("axis", 0), rank: first.shape.count)))]
            }
            let axis = try normalizedAxis(c.int("axis", 0), rank: first.shape.count + 1)
            return [.tensor(try ShapeOps.stack(items, axis: axis))]
        }
        t["SplitToSequence"] = { c in [try splitToSequence(c)] }
        t["SequenceMap"] = { c in try sequenceMap(c) }
        t["Optional"] = { c in
            if let value = c.values.first.flatMap({ $0 }) { return [value] }
            guard case .type(let info)? = c.attribute("type") else { throw RuntimeError(.badGraph, "Optional without an input needs attribute 'type'") }
            guard info.kind != .other else { throw RuntimeError(.unsupportedType, "Optional of a map is not supported") }
            return [.none]
        }
        t["OptionalHasElement"] = { c in
            let value = c.values.first.flatMap { $0 } ?? .none
            if case .none = value { return [.tensor(Value([false], shape: []))] }
            return [.tensor(Value([true], shape: []))]
        }
        t["OptionalGetElement"] = { c in
            let value = try c.value(0)
            if case .none = value { throw RuntimeError(.badInput, "OptionalGetElement on an optional that holds nothing") }
            return [value]
        }
        return t
    }

    /// A scalar position into a sequence of `count`, made non-negative; `end` admits `count`.
    static func position(_ v: Value, count: Int, end: Bool) throws -> Int {
        guard v.count == 1, let p = v.asInts.first else { throw RuntimeError(.badShape, "a sequence position is one integer") }
        let at = p < 0 ? Int(clamping: p) + count : Int(clamping: p)
        guard at >= 0, at < count + (end ? 1 : 0) else {
            throw RuntimeError(.badShape, "position \(p) is outside a sequence of \(count)")
        }
        return at
    }

    static func splitToSequence(_ c: NodeContext) throws -> GraphValue {
        let x = try c.input(0)
        let axis = try normalizedAxis(c.int("axis", 0), rank: x.shape.count)
        let length = x.shape[axis]
        var sizes: [Int]
        var squeeze = false
        if let split = c.optionalInput(1) {
            let given = split.asInts.map { Int(clamping: $0) }
            if split.shape.isEmpty {
                guard let chunk = given.first, chunk > 0 else { throw RuntimeError(.badShape, "split must be positive") }
                sizes = stride(from: 0, to: length, by: chunk).map { min(chunk, length - $0) }
            } else {
                sizes = given
            }
        } else {
            sizes = [Int](repeating: 1, count: length)
            squeeze = c.int("keepdims", 1) == 0
        }
        guard sizes.allSatisfy({ $0 >= 0 }), sizes.reduce(0, +) == length else {
            throw RuntimeError(.badShape, "split sizes \(sizes) do not cover axis \(axis) of \(x.shape)")
        }
        var start = 0
        let items = sizes.map { size -> Value in
            defer { start += size }
            let part = ShapeOps.slice(x, starts: [start], ends: [start + size], axes: [axis], steps: [1])
            guard squeeze else { return part }
            var shape = part.shape
            shape.remove(at: axis)
            return part.reshaped(shape)
        }
        return .sequence(items, elementType: x.type)
    }

    /// The body once per element of the sequence inputs (which share one length); tensor
    /// inputs go to every run whole. Each body output becomes a sequence.
    static func sequenceMap(_ c: NodeContext) throws -> [GraphValue] {
        let body = try c.body("body")
        let inputs = try (0 ..< c.inputCount).map { try c.value($0) }
        let lengths = inputs.compactMap { v -> Int? in if case .sequence(let items, _) = v { return items.count } else { return nil } }
        guard let length = lengths.first, lengths.allSatisfy({ $0 == length }) else {
            throw RuntimeError(.badShape, "SequenceMap's sequence inputs do not share one length")
        }
        var outputs = [[Value]](repeating: [], count: body.graph.outputs.count)
        for i in 0 ..< length {
            let feeds = inputs.map { v -> GraphValue in
                if case .sequence(let items, _) = v { return .tensor(items[i]) }
                return v
            }
            let results = try body.run(try ControlFlowOps.feeds(body, feeds), outer: c.scope)
            for (k, result) in results.enumerated() { outputs[k].append(try ControlFlowOps.tensor(result.value, "output")) }
        }
        return try zip(outputs, body.graph.outputs).map { items, info in
            let type = try items.first?.type ?? dataType(Int(info.elementType))
            return .sequence(items, elementType: type)
        }
    }
}
