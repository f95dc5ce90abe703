import Testing
import Tessera
import TesseraONNX
@testable import TesseraRuntime

/// Sequences and optionals flowing between nodes, and the refusals at their edges.
@Suite struct SequenceOpsTests {
    func node(_ op: String, _ inputs: [String], _ output: String, _ attributes: [String: ONNXGraph.Attribute] = [:]) -> ONNXGraph.Node {
        ONNXGraph.Node(opType: op, inputs: inputs, outputs: [output], attributes: attributes)
    }

    @Test func aSequenceIsBuiltSplitInsertedIntoAndRead() throws {
        // x = arange(6).reshape(3, 2); s = split(x) along axis 0; insert t at the front; s[-1], len(s)
        let graph = ONNXGraph(
            nodes: [node("SplitToSequence", ["x"], "s", ["keepdims": .int(0)]),
                    node("SequenceInsert", ["s", "t", "zero"], "s2"),
                    node("SequenceAt", ["s2", "last"], "y"),
                    node("SequenceLength", ["s2"], "n"),
                    node("ConcatFromSequence", ["s2"], "all", ["axis": .int(0), "new_axis": .int(1)])],
            inputs: ["x", "t", "zero", "last"].map { ONNXGraph.ValueInfo(name: $0) },
            outputs: [ONNXGraph.ValueInfo(name: "y"), ONNXGraph.ValueInfo(name: "n"), ONNXGraph.ValueInfo(name: "s2", kind: .sequence),
                      ONNXGraph.ValueInfo(name: "all")],
            opsets: ["": 17])
        let x = Value((0 ..< 6).map(Float.init), shape: [3, 2])
        let out = try GraphExecutor(graph).evaluate([
            "x": .tensor(x), "t": .tensor(Value([Float(9), 9], shape: [2])),
            "zero": .tensor(Value([Int64(0)], shape: [])), "last": .tensor(Value([Int64(-1)], shape: [])),
        ])
        guard case .tensor(let y) = out[0].value, case .tensor(let n) = out[1].value,
              case .sequence(let items, let type) = out[2].value, case .tensor(let all) = out[3].value else {
            Issue.record("wrong kinds: \(out.map { $0.value.kindDescription })"); return
        }
        #expect(y.asFloats == [4, 5] && y.shape == [2])
        #expect(n.asInts == [4])
        #expect(type == .float && items.map { $0.asFloats } == [[9, 9], [0, 1], [2, 3], [4, 5]])
        #expect(all.shape == [4, 2] && all.asFloats == [9, 9, 0, 1, 2, 3, 4, 5])
    }

    @Test func anOptionalInputLeftOutHoldsNothing() throws {
        let graph = ONNXGraph(nodes: [node("OptionalHasElement", ["o"], "has")],
                              inputs: [ONNXGraph.ValueInfo(name: "o", kind: .optional, elementType: 1)],
                              outputs: [ONNXGraph.ValueInfo(name: "has")], opsets: ["": 18])
        let executor = try GraphExecutor(graph)
        #expect(try executor.run([:])[0].value.bools == [false])
        #expect(try executor.run(["o": Value([Float(1)], shape: [1])])[0].value.bools == [true])
    }

    @Test func aTensorOpGivenASequenceIsRefusedByName() throws {
        let graph = ONNXGraph(nodes: [node("SequenceEmpty", [], "s"), node("Relu", ["s"], "y")],
                              inputs: [], outputs: [ONNXGraph.ValueInfo(name: "y")], opsets: ["": 17])
        #expect(throws: RuntimeError.self) { try GraphExecutor(graph).run([:]) }
        do {
            _ = try GraphExecutor(graph).run([:])
        } catch let error as RuntimeError {
            #expect(error.description.contains("a sequence; this op takes a tensor"))
        }
    }

    @Test func aSequenceOutputIsNotReturnedAsATensor() throws {
        let graph = ONNXGraph(nodes: [node("SequenceEmpty", [], "s")], inputs: [],
                              outputs: [ONNXGraph.ValueInfo(name: "s", kind: .sequence)], opsets: ["": 17])
        #expect(throws: RuntimeError.self) { try GraphExecutor(graph).run([:]) }
        guard case .sequence(let items, .float)? = try GraphExecutor(graph).evaluate([:]).first?.value else {
            Issue.record("SequenceEmpty is an empty float sequence"); return
        }
        #expect(items.isEmpty)
    }
}
