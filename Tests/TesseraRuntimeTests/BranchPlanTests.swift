import Testing
import Tessera
import TesseraONNX
@testable import TesseraRuntime

/// Independent branches of a graph found from node dependencies and measured times, and run side
/// by side with the same bits as one thread.
@Suite struct BranchPlanTests {
    /// 0 forks into 1 → 3 and 2 → 4, which 5 joins.
    let diamond: [[Int]] = [[], [0], [0], [1], [2], [3, 4]]

    @Test func aForkAndJoinSplitsIntoItsTwoBranches() {
        let costs = [1e-6, 1e-3, 1e-3, 1e-3, 2e-3, 1e-6]
        let regions = BranchPlan.regions(dependencies: diamond, chains: [], costs: costs, minimumGain: 50e-6)
        #expect(regions == [BranchRegion(nodes: 1 ..< 5, branches: [[2, 4], [1, 3]])])
        // Stopping before 4 saves as much: the longer region is kept.
        let even = BranchPlan.regions(dependencies: diamond, chains: [], costs: [1e-6, 1e-3, 2e-3, 1e-3, 1e-3, 1e-6], minimumGain: 50e-6)
        #expect(even == [BranchRegion(nodes: 1 ..< 5, branches: [[2, 4], [1, 3]])])
    }

    @Test func regionsSaveEnoughAndKeepFusedChainsWhole() {
        let costs = [1e-6, 1e-3, 1e-3, 1e-3, 1e-3, 1e-6]
        // Saving 2 ms: kept at a 1 ms minimum, not at 3 ms.
        #expect(BranchPlan.regions(dependencies: diamond, chains: [], costs: costs, minimumGain: 1e-3).count == 1)
        #expect(BranchPlan.regions(dependencies: diamond, chains: [], costs: costs, minimumGain: 3e-3).isEmpty)
        // A chain from 3 to the join cannot be cut: only 1 beside 2.
        #expect(BranchPlan.regions(dependencies: diamond, chains: [3 ... 5], costs: costs, minimumGain: 50e-6)
            == [BranchRegion(nodes: 1 ..< 3, branches: [[1], [2]])])
        // A chain inside a branch stays in it.
        #expect(BranchPlan.regions(dependencies: diamond, chains: [1 ... 3], costs: costs, minimumGain: 50e-6)
            == [BranchRegion(nodes: 1 ..< 5, branches: [[1, 3], [2, 4]])])
    }

    /// A Conv + Relu chain (fused) beside a Sigmoid and a Mul by a stored constant, both reading
    /// the fork's output, joined by an Add whose result meets the graph input again.
    func forkingGraph() -> ONNXGraph {
        func tensor(_ name: String, _ shape: [Int], _ f: (Int) -> Float) -> Tensor {
            Tensor(name: name, dataType: .float, shape: shape, storage: .dense(values: TensorBytes(float32: (0 ..< shape.reduce(1, *)).map(f))))
        }
        func node(_ op: String, _ inputs: [String], _ output: String, _ attributes: [String: ONNXGraph.Attribute] = [:]) -> ONNXGraph.Node {
            ONNXGraph.Node(opType: op, inputs: inputs, outputs: [output], attributes: attributes)
        }
        let nodes = [node("Relu", ["x"], "r"),
                     node("Conv", ["r", "w"], "c", ["pads": .ints([1, 1, 1, 1])]),
                     node("Sigmoid", ["r"], "s"),
                     node("Relu", ["c"], "a"),
                     node("Mul", ["s", "k"], "m"),
                     node("Add", ["a", "m"], "j"),
                     node("Add", ["j", "x"], "y")]
        let initializers = ["w": tensor("w", [3, 3, 3, 3]) { (i: Int) -> Float in Float(i % 7) / 9 - 0.3 },
                            "k": tensor("k", [3, 1, 1]) { (i: Int) -> Float in 0.5 + Float(i) }]
        return ONNXGraph(nodes: nodes, inputs: [ONNXGraph.ValueInfo(name: "x")], outputs: [ONNXGraph.ValueInfo(name: "y")],
                         initializers: initializers, opsets: ["": 17])
    }

    @Test func theExecutorPlansBranchesFromItsGraph() throws {
        let executor = try GraphExecutor(forkingGraph(), threads: 2)
        let costs = [1e-6, 1e-3, 1e-3, 1e-3, 1e-3, 1e-6, 1e-6]
        #expect(executor.branchRegions(costs: costs) == [BranchRegion(nodes: 1 ..< 5, branches: [[1, 3], [2, 4]])])
    }

    @Test func branchesComputeWhatOneThreadComputes() throws {
        let graph = forkingGraph()
        let x = Value((0 ..< 3 * 64 * 64).map { (i: Int) -> Float in Float(i % 29) / 5 - 2.5 }, shape: [1, 3, 64, 64])
        let reference = try GraphExecutor(graph).run(["x": x])[0].value
        let want: [UInt32] = reference.asFloats.map { $0.bitPattern }
        // The region forced, every run; and as the executor plans it itself.
        let forced = try GraphExecutor(graph, threads: 2)
        forced.branchState.settle([BranchRegion(nodes: 1 ..< 5, branches: [[1, 3], [2, 4]])])
        forced.profile = OpProfile()
        let planned = try GraphExecutor(graph, threads: 2)
        for _ in 0 ..< 2 + 2 * BranchState.samples {
            for executor in [forced, planned] {
                let y = try executor.run(["x": x])[0].value
                let got: [UInt32] = y.asFloats.map { $0.bitPattern }
                #expect(y.shape == reference.shape && got == want)
            }
        }
        #expect(planned.branchState.settled != nil)
        // The chain still ran fused inside its branch.
        #expect(forced.profile!.entries.keys.contains("Conv + Relu (fused)"), "\(forced.profile!.entries.keys.sorted())")
    }
}
