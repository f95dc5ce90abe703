import CTesseraKernels
import Foundation
import Testing
import Tessera
import TesseraONNX
@testable import TesseraRuntime

/// Op semantics against results worked out by hand (numpy's, for the same calls).
@Suite struct GraphExecutorTests {
    /// Runs one node on `inputs` (named a, b, c, ...) and returns its first output.
    func run(_ op: String, _ inputs: [Value], attributes: [String: ONNXGraph.Attribute] = [:], opset: Int64 = 17) throws -> Value {
        let names = inputs.indices.map { String(UnicodeScalar(UInt8(97 + $0))) }
        let graph = ONNXGraph(nodes: [ONNXGraph.Node(opType: op, inputs: names, outputs: ["y"], attributes: attributes)],
                              inputs: names.map { ONNXGraph.ValueInfo(name: $0) }, outputs: [ONNXGraph.ValueInfo(name: "y")],
                              opsets: ["": opset])
        return try GraphExecutor(graph).run(Dictionary(uniqueKeysWithValues: zip(names, inputs)))[0].value
    }

    func iota(_ shape: [Int]) -> Value { Value((0 ..< shape.reduce(1, *)).map(Float.init), shape: shape) }
    func ints(_ v: [Int64]) -> Value { Value(v, shape: [v.count]) }
    func floats(_ v: [Float], _ shape: [Int]) -> Value { Value(v, shape: shape) }

    @Test func broadcastingAddsAlongEveryStretchedAxis() throws {
        let y = try run("Add", [iota([2, 1, 3]), floats([10, 20], [2, 1])])
        #expect(y.shape == [2, 2, 3])
        #expect(y.asFloats == [10, 11, 12, 20, 21, 22, 13, 14, 15, 23, 24, 25])
    }

    /// An operand varying along separate runs of axes (an attention mask over scores), on either
    /// side of a Sub, against the element-by-element definition.
    @Test func broadcastingAlongSeparateRunsOfAxes() throws {
        let big = iota([2, 3, 4, 5]), mask = Value((0 ..< 10).map { Float($0) * 100 }, shape: [2, 1, 1, 5])
        let small = Value((0 ..< 6).map { Float($0) * 100 }, shape: [2, 3, 1, 1, 1])
        for (a, b) in [(big, mask), (mask, big), (small, iota([2, 3, 1, 4, 5]))] {
            let y = try run("Sub", [a, b])
            let shape = try Broadcast.shape([a.shape, b.shape])
            let (ai, bi) = (try Broadcast.sourceIndices(of: a.shape, in: shape), try Broadcast.sourceIndices(of: b.shape, in: shape))
            let expected: [Float] = (0 ..< ai.count).map { a.asFloats[ai[$0]] - b.asFloats[bi[$0]] }
            #expect(y.shape == shape && y.asFloats == expected, "\(a.shape) - \(b.shape)")
        }
    }

    /// Broadcast arithmetic split among threads (whole outer blocks, or runs of the middle axis)
    /// gives the bits of one thread, with the varying operand on either side.
    @Test func broadcastArithmeticSplitsWithTheSameBits() throws {
        guard KernelDispatch.kernels != nil else { return }   // the portable build has no C path to split
        let cases: [([Int], [Int])] = [([300_000], [300_000]), ([4, 100_000], [4, 1]), ([2, 3, 50_000], [50_000]), ([6, 40_000], [1])]
        for (fullShape, partShape) in cases {
            let full: [Float] = (0 ..< fullShape.reduce(1, *)).map { (i: Int) -> Float in Float(i % 1013) / 7 - 50 }
            let part: [Float] = (0 ..< partShape.reduce(1, *)).map { (i: Int) -> Float in Float(i % 97) / 3 + 1 }
            for op in [Int32(TESSERA_SUB), Int32(TESSERA_DIV)] {
                for (a, aShape, b, bShape) in [(full, fullShape, part, partShape), (part, partShape, full, fullShape)] {
                    let one = try #require(try Broadcast.arithmetic(a, aShape, b, bShape, op, threads: 1))
                    let two = try #require(try Broadcast.arithmetic(a, aShape, b, bShape, op, threads: 2))
                    let (x, y): ([UInt32], [UInt32]) = (one.0.map { $0.bitPattern }, two.0.map { $0.bitPattern })
                    #expect(one.1 == two.1 && x == y, "\(aShape) \(bShape) op \(op)")
                }
            }
        }
    }

    /// A float transpose split among threads (bands of rows of one matrix, or whole matrices)
    /// moves every element where one thread does, and where the strided walk does.
    @Test func transposeSplitsWithTheSameElements() throws {
        for (shape, perm) in [([1, 64, 100, 40], [0, 2, 3, 1]), ([1, 100, 40, 67], [0, 3, 1, 2]), ([4, 64, 2000], [0, 2, 1])] {
            let x = iota(shape)
            let two = ShapeOps.transpose(x, perm, threads: 2), one = ShapeOps.transpose(x, perm)
            let strides = Broadcast.strides(shape)
            let walked = x.walking(perm.map { shape[$0] }, strides: perm.map { strides[$0] }, base: 0)
            #expect(two.shape == one.shape && two.asFloats == one.asFloats && two.asFloats == walked.asFloats, "\(shape) \(perm)")
        }
    }

    @Test func sliceWithNegativeStepsAndClampedEnds() throws {
        // x[::-2, 1:100] for x = arange(12).reshape(4, 3)
        let y = try run("Slice", [iota([4, 3]), ints([-1, 1]), ints([Int64.min, 100]), ints([0, 1]), ints([-2, 1])])
        #expect(y.shape == [2, 2])
        #expect(y.asFloats == [10, 11, 4, 5])
    }

    @Test func reshapeCopiesZerosAndInfersMinusOne() throws {
        let y = try run("Reshape", [iota([2, 3, 4]), ints([0, -1])])
        #expect(y.shape == [2, 12])
        #expect(throws: RuntimeError.self) { try run("Reshape", [iota([2, 3, 4]), ints([5, -1])]) }
    }

    @Test func gatherTakesNegativeIndicesAlongAnAxis() throws {
        let y = try run("Gather", [iota([2, 3]), Value([Int64(-1), 0], shape: [2])], attributes: ["axis": .int(1)])
        #expect(y.shape == [2, 2])
        #expect(y.asFloats == [2, 0, 5, 3])
        #expect(throws: RuntimeError.self) { try run("Gather", [iota([2, 3]), ints([3])], attributes: ["axis": .int(1)]) }
    }

    /// The exact GELU chain (Div, Erf, Add, Mul by x, Mul) runs as one fused kernel with the same
    /// bits as its nodes one by one (an observer turns fusion off); a chain whose inner value
    /// has a second reader, or whose constant is not a scalar, runs unfused.
    @Test func geluChainRunsFusedWithTheSameBits() throws {
        func scalar(_ name: String, _ v: Float, _ shape: [Int] = []) -> Tensor {
            Tensor(name: name, dataType: .float, shape: shape, storage: .dense(values: TensorBytes(float32: [Float](repeating: v, count: shape.reduce(1, *)))))
        }
        func graph(extraReader: Bool, divisorShape: [Int]) -> ONNXGraph {
            var nodes = [ONNXGraph.Node(opType: "Div", inputs: ["x", "sqrt2"], outputs: ["d"], attributes: [:]),
                         ONNXGraph.Node(opType: "Erf", inputs: ["d"], outputs: ["e"], attributes: [:]),
                         ONNXGraph.Node(opType: "Add", inputs: ["one", "e"], outputs: ["a"], attributes: [:]),
                         ONNXGraph.Node(opType: "Mul", inputs: ["a", "x"], outputs: ["m"], attributes: [:]),
                         ONNXGraph.Node(opType: "Mul", inputs: ["m", "half"], outputs: ["y"], attributes: [:])]
            var outputs = [ONNXGraph.ValueInfo(name: "y")]
            if extraReader {
                nodes.append(ONNXGraph.Node(opType: "Neg", inputs: ["e"], outputs: ["z"], attributes: [:]))
                outputs.append(ONNXGraph.ValueInfo(name: "z"))
            }
            return ONNXGraph(nodes: nodes, inputs: [ONNXGraph.ValueInfo(name: "x")], outputs: outputs,
                             initializers: ["sqrt2": scalar("sqrt2", 1.4142135, divisorShape), "one": scalar("one", 1), "half": scalar("half", 0.5)])
        }
        let x = Value((0 ..< 1000).map { Float($0 - 500) / 61 }, shape: [8, 125])
        for (extraReader, divisorShape, fused) in [(false, [Int](), true), (false, [1, 1], true), (true, [], false), (false, [8, 1], false), (false, [1, 1, 1], false)] {
            let executor = try GraphExecutor(graph(extraReader: extraReader, divisorShape: divisorShape))
            executor.profile = OpProfile()
            let y = try executor.run(["x": x])[0].value
            let reference = try GraphExecutor(graph(extraReader: extraReader, divisorShape: divisorShape))
            reference.observer = ([], { _, _ in })
            let expected = try reference.run(["x": x])[0].value
            #expect(y.shape == expected.shape && y.asFloats.map(\.bitPattern) == expected.asFloats.map(\.bitPattern))
            #expect(executor.profile!.entries.keys.contains { $0.hasPrefix("Gelu") } == fused, "extra reader \(extraReader), divisor \(divisorShape)")
        }
        let exact = x.asFloats.map { v in Double(v) * 0.5 * (1 + erf(Double(v) / 2.0.squareRoot())) }
        let fusedY = try GraphExecutor(graph(extraReader: false, divisorShape: [])).run(["x": x])[0].value.asFloats
        #expect(zip(fusedY, exact).allSatisfy { abs(Double($0) - $1) <= 1e-5 * max(1, abs($1)) })
    }

    /// SiLU (Sigmoid, then Mul by the same input, in either operand order) runs fused with the
    /// nodes' bits; a Mul by another value is not SiLU.
    @Test func siluChainRunsFusedWithTheSameBits() throws {
        let x = Value((0 ..< 999).map { Float($0 - 500) / 23 }, shape: [3, 333])
        for (mulInputs, fused) in [(["x", "s"], true), (["s", "x"], true), (["s", "z"], false)] {
            let graph = ONNXGraph(nodes: [ONNXGraph.Node(opType: "Sigmoid", inputs: ["x"], outputs: ["s"], attributes: [:]),
                                          ONNXGraph.Node(opType: "Mul", inputs: mulInputs, outputs: ["y"], attributes: [:])],
                                  inputs: [ONNXGraph.ValueInfo(name: "x"), ONNXGraph.ValueInfo(name: "z")], outputs: [ONNXGraph.ValueInfo(name: "y")])
            let executor = try GraphExecutor(graph)
            executor.profile = OpProfile()
            let y = try executor.run(["x": x, "z": x])[0].value
            let reference = try GraphExecutor(graph)
            reference.observer = ([], { _, _ in })
            #expect(y.asFloats.map(\.bitPattern) == (try reference.run(["x": x, "z": x])[0].value).asFloats.map(\.bitPattern))
            #expect(executor.profile!.entries.keys.contains { $0.hasPrefix("SiLU") } == fused, "\(mulInputs)")
        }
    }

    /// A Conv and the inference BatchNormalization of its output run as one, normalized in place,
    /// with the nodes' bits; a BatchNormalization in training mode runs unfused.
    @Test func convBatchNormRunsFusedWithTheSameBits() throws {
        func tensor(_ name: String, _ shape: [Int], _ f: (Int) -> Float) -> Tensor {
            Tensor(name: name, dataType: .float, shape: shape, storage: .dense(values: TensorBytes(float32: (0 ..< shape.reduce(1, *)).map(f))))
        }
        let pixels: [Float] = (0 ..< 594).map { Float($0 % 17) / 5 - 1.5 }
        let x = Value(pixels, shape: [2, 3, 9, 11])
        for training in [0, 1] {
            let conv = ONNXGraph.Node(opType: "Conv", inputs: ["x", "w", "b"], outputs: ["c"], attributes: ["pads": .ints([1, 1, 1, 1])])
            let attributes: [String: ONNXGraph.Attribute] = ["epsilon": .float(1e-3), "training_mode": .int(Int64(training))]
            let norm = ONNXGraph.Node(opType: "BatchNormalization", inputs: ["c", "s", "t", "m", "v"], outputs: ["y"], attributes: attributes)
            var initializers: [String: Tensor] = [:]
            initializers["w"] = tensor("w", [4, 3, 3, 3]) { Float($0 % 7) / 9 - 0.3 }
            initializers["b"] = tensor("b", [4]) { Float($0) }
            initializers["s"] = tensor("s", [4]) { 1 + Float($0) / 3 }
            initializers["t"] = tensor("t", [4]) { Float($0) / 7 }
            initializers["m"] = tensor("m", [4]) { Float($0) / 2 }
            initializers["v"] = tensor("v", [4]) { 0.5 + Float($0) }
            let graph = ONNXGraph(nodes: [conv, norm], inputs: [ONNXGraph.ValueInfo(name: "x")], outputs: [ONNXGraph.ValueInfo(name: "y")],
                                  initializers: initializers)
            let executor = try GraphExecutor(graph)
            executor.profile = OpProfile()
            let y = try executor.run(["x": x])[0].value
            let reference = try GraphExecutor(graph)
            reference.observer = ([], { _, _ in })
            let expected = try reference.run(["x": x])[0].value
            #expect(y.shape == expected.shape)
            #expect(y.asFloats.map { $0.bitPattern } == expected.asFloats.map { $0.bitPattern })
            #expect(executor.profile!.entries.keys.contains { $0.hasPrefix("Conv + BatchNormalization") } == (training == 0))
        }
    }

    /// A Conv's epilogue (BatchNormalization, the Add of a residual computed before it, then an
    /// activation) runs in place on its output with the nodes' bits, each activation as its op
    /// computes it, whichever way the Conv runs (im2col blocks, depthwise planes, a pointwise
    /// GEMM, a single pixel's GEMV); a residual computed after the Conv leaves the Add, and what
    /// follows, unfused.
    @Test func convEpiloguesRunFusedWithTheSameBits() throws {
        func tensor(_ name: String, _ shape: [Int], _ f: (Int) -> Float) -> Tensor {
            Tensor(name: name, dataType: .float, shape: shape, storage: .dense(values: TensorBytes(float32: (0 ..< shape.reduce(1, *)).map(f))))
        }
        func node(_ op: String, _ inputs: [String], _ output: String, _ attributes: [String: ONNXGraph.Attribute] = [:]) -> ONNXGraph.Node {
            ONNXGraph.Node(opType: op, inputs: inputs, outputs: [output], attributes: attributes)
        }
        let x = Value((0 ..< 594).map { Float($0 % 23) / 4 - 2.5 }, shape: [2, 3, 9, 11])
        var initializers: [String: Tensor] = [:]
        initializers["w"] = tensor("w", [3, 3, 3, 3]) { Float($0 % 7) / 9 - 0.3 }
        initializers["dw"] = tensor("dw", [3, 1, 3, 3]) { Float($0 % 5) / 7 - 0.2 }
        initializers["pw"] = tensor("pw", [3, 3, 1, 1]) { Float($0 % 4) / 3 - 0.4 }
        for (name, f) in [("s", { 1 + Float($0) / 3 }), ("t", { Float($0) / 7 }), ("m", { Float($0) / 2 }), ("v", { 0.5 + Float($0) })] as [(String, (Int) -> Float)] {
            initializers[name] = tensor(name, [3], f)
        }
        let pixels: [Float] = (0 ..< 153_600).map { (i: Int) -> Float in Float(i % 23) / 4 - 2.5 }
        let large = Value(pixels, shape: [2, 3, 160, 160])
        let pixel = Value([0.5, -1.25, 2, 3.5, -0.75, 1] as [Float], shape: [2, 3, 1, 1])
        // The weight, its group, its pads, and the inputs it runs on (the last also on two threads).
        let convolutions: [(weight: String, group: Int64, pads: [Int64], inputs: [Value])] = [
            ("w", 1, [1, 1, 1, 1], [x, large]), ("dw", 3, [1, 1, 1, 1], [x, large]), ("pw", 1, [0, 0, 0, 0], [pixel, x, large]),
        ]
        initializers["lo"] = tensor("lo", [], { _ in -0.75 })
        initializers["hi"] = tensor("hi", [], { _ in 1.5 })
        (initializers["sq2"], initializers["one"], initializers["half"]) = (tensor("sq2", [], { _ in 1.4142135 }), tensor("one", [], { _ in 1 }),
                                                                            tensor("half", [], { _ in 0.5 }))
        let activations: [(nodes: [ONNXGraph.Node], opset: Int64, name: String)] = [
            ([node("Relu", ["r"], "y")], 17, "Relu"),
            ([node("HardSwish", ["r"], "y")], 17, "HardSwish"),
            ([node("LeakyRelu", ["r"], "y", ["alpha": .float(0.1)])], 17, "LeakyRelu"),
            ([node("HardSigmoid", ["r"], "y", ["alpha": .float(0.3)])], 17, "HardSigmoid"),
            ([node("Clip", ["r", "lo", "hi"], "y")], 17, "Clip"),
            ([node("Clip", ["r", "", "hi"], "y")], 17, "Clip"),
            ([node("Clip", ["r"], "y", ["min": .float(-1), "max": .float(0.5)])], 10, "Clip"),
            ([node("Sigmoid", ["r"], "g"), node("Mul", ["g", "r"], "y")], 17, "SiLU"),
            ([node("Div", ["r", "sq2"], "d"), node("Erf", ["d"], "e"), node("Add", ["e", "one"], "e1"), node("Mul", ["r", "e1"], "g"),
              node("Mul", ["g", "half"], "y")], 17, "Gelu"),
        ]
        for (tail, opset, activation) in activations {
            let cases: [(convolution: (weight: String, group: Int64, pads: [Int64], inputs: [Value]), shortcutFirst: Bool)] =
                convolutions.flatMap { [($0, true), ($0, false)] }
            for (convolution, shortcutFirst) in cases {
                // The shortcut, a Relu of x, before the Conv (fused) or after it (the Add runs alone).
                let shortcut = node("Relu", ["x"], "k")
                var nodes = [node("Conv", ["x", convolution.weight], "c", ["pads": .ints(convolution.pads), "group": .int(convolution.group)]),
                             node("BatchNormalization", ["c", "s", "t", "m", "v"], "n", ["epsilon": .float(1e-3)]),
                             node("Add", ["k", "n"], "r")] + tail
                nodes.insert(shortcut, at: shortcutFirst ? 0 : 2)
                let graph = ONNXGraph(nodes: nodes, inputs: [ONNXGraph.ValueInfo(name: "x")], outputs: [ONNXGraph.ValueInfo(name: "y")],
                                      initializers: initializers, opsets: ["": opset])
                let executor = try GraphExecutor(graph)
                executor.profile = OpProfile()
                let reference = try GraphExecutor(graph)
                reference.observer = ([], { _, _ in })
                // Twice: the second run reuses the folded and cached state.
                for input in convolution.inputs.dropLast() {
                    for _ in 0 ..< 2 {
                        let y = try executor.run(["x": input])[0].value, expected = try reference.run(["x": input])[0].value
                        let (got, want): ([UInt32], [UInt32]) = (y.asFloats.map { $0.bitPattern }, expected.asFloats.map { $0.bitPattern })
                        #expect(y.shape == expected.shape && got == want, "\(activation) \(convolution.weight) \(input.shape)")
                    }
                }
                // Large enough for the Conv to split its output among two threads.
                if shortcutFirst, let input = convolution.inputs.last {
                    let split = try GraphExecutor(graph, threads: 2)
                    let (y, expected) = (try split.run(["x": input])[0].value, try reference.run(["x": input])[0].value)
                    let (got, want): ([UInt32], [UInt32]) = (y.asFloats.map { $0.bitPattern }, expected.asFloats.map { $0.bitPattern })
                    #expect(y.shape == expected.shape && got == want, "\(activation) \(convolution.weight) on two threads")
                }
                let fused = shortcutFirst ? "Conv + BatchNormalization + Add + \(activation) (fused)" : "Conv + BatchNormalization (fused)"
                #expect(executor.profile!.entries.keys.contains(fused), "\(executor.profile!.entries.keys.sorted())")
            }
        }
    }

    /// A Conv exported without its bias, then an Add of a per-channel constant (either operand
    /// order, any rank that broadcasts along channels, or a scalar), a batch normalization as
    /// TensorFlow exports it (Sub, Mul, and a Div here, with a constant first and second) and a
    /// Relu, Casts to float and an Identity between them, runs fused with the nodes' bits; a constant that
    /// broadcasts along another axis leaves the chain unfused.
    @Test func convWithAConstantBiasAddRunsFused() throws {
        let pixels: [Float] = (0 ..< 594).map { (i: Int) -> Float in Float(i % 19) / 4 - 2.25 }
        let x = Value(pixels, shape: [2, 3, 9, 11])
        let w = Tensor(name: "w", dataType: .float, shape: [3, 3, 3, 3],
                       storage: .dense(values: TensorBytes(float32: (0 ..< 81).map { (i: Int) -> Float in Float(i % 7) / 9 - 0.3 })))
        for (shape, constantFirst, fused) in [([1, 3, 1, 1], false, true), ([3, 1, 1], true, true), ([Int](), false, true), ([1, 1, 1, 11], false, false)] {
            let count = shape.reduce(1, *)
            let b = Tensor(name: "cb", dataType: .float, shape: shape,
                           storage: .dense(values: TensorBytes(float32: (0 ..< count).map { (i: Int) -> Float in Float(i) / 3 - 0.5 })))
            let perChannel = { (v: [Float]) in Tensor(name: "", dataType: .float, shape: [1, 3, 1, 1], storage: .dense(values: TensorBytes(float32: v))) }
            let toFloat: [String: ONNXGraph.Attribute] = ["to": .int(1)]
            let nodes = [ONNXGraph.Node(opType: "Conv", inputs: ["x", "w"], outputs: ["c"], attributes: ["pads": .ints([1, 1, 1, 1])]),
                         ONNXGraph.Node(opType: "Cast", inputs: ["c"], outputs: ["c1"], attributes: toFloat),
                         ONNXGraph.Node(opType: "Add", inputs: constantFirst ? ["cb", "c1"] : ["c1", "cb"], outputs: ["a"], attributes: [:]),
                         ONNXGraph.Node(opType: "Sub", inputs: ["a", "mean"], outputs: ["s"], attributes: [:]),
                         ONNXGraph.Node(opType: "Cast", inputs: ["s"], outputs: ["s1"], attributes: toFloat),
                         ONNXGraph.Node(opType: "Mul", inputs: ["scale", "s1"], outputs: ["m"], attributes: [:]),
                         ONNXGraph.Node(opType: "Div", inputs: ["two", "m"], outputs: ["d"], attributes: [:]),
                         ONNXGraph.Node(opType: "Identity", inputs: ["d"], outputs: ["d1"], attributes: [:]),
                         ONNXGraph.Node(opType: "Relu", inputs: ["d1"], outputs: ["r"], attributes: [:]),
                         ONNXGraph.Node(opType: "Cast", inputs: ["r"], outputs: ["y"], attributes: toFloat)]
            let graph = ONNXGraph(nodes: nodes, inputs: [ONNXGraph.ValueInfo(name: "x")], outputs: [ONNXGraph.ValueInfo(name: "y")],
                                  initializers: ["w": w, "cb": b, "mean": perChannel([0.25, -0.5, 1]), "scale": perChannel([1.5, -2, 0.75]),
                                                 "two": perChannel([2, 2, -2])])
            let executor = try GraphExecutor(graph)
            executor.profile = OpProfile()
            let reference = try GraphExecutor(graph)
            reference.observer = ([], { _, _ in })
            let y = try executor.run(["x": x])[0].value, expected = try reference.run(["x": x])[0].value
            let (got, want): ([UInt32], [UInt32]) = (y.asFloats.map { $0.bitPattern }, expected.asFloats.map { $0.bitPattern })
            #expect(y.shape == expected.shape && got == want, "\(shape)")
            #expect(executor.profile!.entries.keys.contains("Conv + Add, Sub, Mul, Div (constant) + Relu (fused)") == fused, "\(shape) \(executor.profile!.entries.keys.sorted())")
        }
    }

    /// A ResNet block as exported: the shortcut Conv comes first, but its scaling comes after the
    /// main Conv in the node order. The shortcut's chain computes it at its first node, so the
    /// main Conv's chain takes the residual Add and the Relu too; same bits as unfused. So
    /// does the next block's, whose shortcut is Cast to float after its Conv (TensorFlow's way).
    @Test func aResidualFromAnEarlierChainIsFused() throws {
        let f = { (shape: [Int], v: [Float]) in Tensor(name: "", dataType: .float, shape: shape, storage: .dense(values: TensorBytes(float32: v))) }
        let x = Value((0 ..< 594).map { Float($0 % 19) / 4 - 2.25 }, shape: [2, 3, 9, 11])
        let node = { (op: String, inputs: [String], output: String) in ONNXGraph.Node(opType: op, inputs: inputs, outputs: [output], attributes: [:]) }
        var conv = node("Conv", ["x", "w"], "c")
        conv.attributes["pads"] = .ints([1, 1, 1, 1])
        var second = conv, cast = node("Cast", ["r1"], "k")
        (second.inputs, second.outputs, cast.attributes["to"]) = (["r1", "w"], ["c2"], .int(1))
        let nodes = [node("Conv", ["x", "pw"], "sc"), conv, node("Add", ["c", "cb"], "a"), node("Mul", ["sc", "scale"], "scs"),
                     node("Add", ["a", "scs"], "r"), node("Relu", ["r"], "r1"),
                     second, cast, node("Add", ["k", "c2"], "r2"), node("Relu", ["r2"], "y")]
        let graph = ONNXGraph(nodes: nodes, inputs: [ONNXGraph.ValueInfo(name: "x")], outputs: [ONNXGraph.ValueInfo(name: "y")],
                              initializers: ["w": f([3, 3, 3, 3], (0 ..< 81).map { Float($0 % 7) / 9 - 0.3 }),
                                             "pw": f([3, 3, 1, 1], (0 ..< 9).map { Float($0 % 4) / 3 - 0.4 }),
                                             "cb": f([3, 1, 1], [0.5, -1, 0.25]), "scale": f([1, 3, 1, 1], [2, -0.5, 1.5])])
        let executor = try GraphExecutor(graph)
        executor.profile = OpProfile()
        let reference = try GraphExecutor(graph)
        reference.observer = ([], { _, _ in })
        let y = try executor.run(["x": x])[0].value, expected = try reference.run(["x": x])[0].value
        #expect(y.shape == expected.shape && y.asFloats.map(\.bitPattern) == expected.asFloats.map(\.bitPattern))
        #expect(Set(executor.profile!.entries.keys) == ["Conv + Mul (constant) (fused)", "Conv + Add (constant) + Add + Relu (fused)",
                                                         "Conv + Add + Relu (fused)", "Cast"],
                "\(executor.profile!.entries.keys.sorted())")
    }

    /// A depthwise convolution large enough to split its planes among threads gives the bits of
    /// one thread (a strided one with a channel multiplier too); so does a MaxPool.
    @Test func depthwiseConvolutionSplitsPlanesWithTheSameBits() throws {
        let pixels: [Float] = (0 ..< 131_072).map { (i: Int) -> Float in Float(i % 29) / 7 - 2 }
        let x = Value(pixels, shape: [2, 16, 64, 64])
        for (multiplier, strides) in [(1, [1, 1]), (2, [2, 2])] {
            let w = Tensor(name: "w", dataType: .float, shape: [16 * multiplier, 1, 3, 3],
                           storage: .dense(values: TensorBytes(float32: (0 ..< 144 * multiplier).map { (i: Int) -> Float in Float(i % 11) / 5 - 1 })))
            let conv = ONNXGraph.Node(opType: "Conv", inputs: ["x", "w"], outputs: ["y"],
                                      attributes: ["group": .int(16), "pads": .ints([1, 1, 1, 1]), "strides": .ints(strides.map(Int64.init))])
            let graph = ONNXGraph(nodes: [conv], inputs: [ONNXGraph.ValueInfo(name: "x")], outputs: [ONNXGraph.ValueInfo(name: "y")],
                                  initializers: ["w": w])
            let one = try GraphExecutor(graph, threads: 1).run(["x": x])[0].value
            let two = try GraphExecutor(graph, threads: 2).run(["x": x])[0].value
            let (a, b): ([UInt32], [UInt32]) = (one.asFloats.map { $0.bitPattern }, two.asFloats.map { $0.bitPattern })
            #expect(one.shape == two.shape && a == b, "\(multiplier) \(strides)")
        }
        // MaxPool splits its planes the same way.
        let pool = ONNXGraph(nodes: [ONNXGraph.Node(opType: "MaxPool", inputs: ["x"], outputs: ["y"],
                                                    attributes: ["kernel_shape": .ints([3, 3]), "strides": .ints([2, 2]), "pads": .ints([1, 1, 1, 1])])],
                             inputs: [ONNXGraph.ValueInfo(name: "x")], outputs: [ONNXGraph.ValueInfo(name: "y")])
        let one = try GraphExecutor(pool, threads: 1).run(["x": x])[0].value, two = try GraphExecutor(pool, threads: 2).run(["x": x])[0].value
        let (a, b): ([UInt32], [UInt32]) = (one.asFloats.map { $0.bitPattern }, two.asFloats.map { $0.bitPattern })
        #expect(one.shape == [2, 16, 32, 32] && one.shape == two.shape && a == b)
    }

    /// A depthwise convolution with a bias, whichever kernel runs it, gives the bits of the
    /// definition: each output starts as its channel's bias and adds weight × input for each tap
    /// in order (a multiply, then an add), zeros outside the input. Heights 9 to 12 leave every
    /// count of rows after the kernel's blocks of four.
    @Test func depthwiseConvolutionStartsFromTheBias() throws {
        let (channels, w) = (3, 21)
        for h in 9 ... 12 { for (multiplier, stride) in [(1, 1), (2, 2)] {
            let x = (0 ..< 2 * channels * h * w).map { (i: Int) -> Float in Float(i % 17) / 5 - 1.5 }
            let outChannels = channels * multiplier
            let weights = (0 ..< outChannels * 9).map { (i: Int) -> Float in Float(i % 7) / 3 - 0.9 }
            let bias = (0 ..< outChannels).map { (i: Int) -> Float in Float(i) * 0.625 - 1.1 }
            let graph = ONNXGraph(nodes: [ONNXGraph.Node(opType: "Conv", inputs: ["x", "w", "b"], outputs: ["y"],
                                                         attributes: ["group": .int(Int64(channels)), "pads": .ints([1, 1, 1, 1]),
                                                                      "strides": .ints([Int64(stride), Int64(stride)])])],
                                  inputs: [ONNXGraph.ValueInfo(name: "x")], outputs: [ONNXGraph.ValueInfo(name: "y")],
                                  initializers: ["w": Tensor(name: "w", dataType: .float, shape: [outChannels, 1, 3, 3], storage: .dense(values: TensorBytes(float32: weights))),
                                                 "b": Tensor(name: "b", dataType: .float, shape: [outChannels], storage: .dense(values: TensorBytes(float32: bias)))])
            let y = try GraphExecutor(graph).run(["x": Value(x, shape: [2, channels, h, w])])[0].value
            let (oh, ow) = ((h + 2 - 3) / stride + 1, (w + 2 - 3) / stride + 1)
            var expected: [Float] = []
            for n in 0 ..< 2 {
                for co in 0 ..< outChannels {
                    let plane = (n * channels + co / multiplier) * h * w
                    for oy in 0 ..< oh {
                        for ox in 0 ..< ow {
                            var sum = bias[co]
                            for ky in 0 ..< 3 {
                                for kx in 0 ..< 3 {
                                    let (iy, ix) = (oy * stride + ky - 1, ox * stride + kx - 1)
                                    let v = iy >= 0 && iy < h && ix >= 0 && ix < w ? x[plane + iy * w + ix] : 0
                                    let product = weights[co * 9 + ky * 3 + kx] * v
                                    sum = sum + product
                                }
                            }
                            expected.append(sum)
                        }
                    }
                }
            }
            #expect(y.shape == [2, outChannels, oh, ow])
            #expect(y.asFloats.map(\.bitPattern) == expected.map(\.bitPattern), "height \(h) multiplier \(multiplier) stride \(stride)")
        } }
    }

    /// A convolution of one column block: its padded input copy and its columns split by channel
    /// among threads, then its GEMM; the bits of one thread.
    @Test func singleBlockConvolutionSplitsItsCopiesWithTheSameBits() throws {
        let pixels: [Float] = (0 ..< 524_288).map { (i: Int) -> Float in Float(i % 31) / 8 - 2 }
        let x = Value(pixels, shape: [1, 32, 128, 128])
        let w = Tensor(name: "w", dataType: .float, shape: [8, 32, 1, 1],
                       storage: .dense(values: TensorBytes(float32: (0 ..< 256).map { (i: Int) -> Float in Float(i % 13) / 6 - 1 })))
        let graph = ONNXGraph(nodes: [ONNXGraph.Node(opType: "Conv", inputs: ["x", "w"], outputs: ["y"], attributes: ["strides": .ints([2, 2])])],
                              inputs: [ONNXGraph.ValueInfo(name: "x")], outputs: [ONNXGraph.ValueInfo(name: "y")], initializers: ["w": w])
        let one = try GraphExecutor(graph, threads: 1).run(["x": x])[0].value, two = try GraphExecutor(graph, threads: 2).run(["x": x])[0].value
        let (a, b): ([UInt32], [UInt32]) = (one.asFloats.map { $0.bitPattern }, two.asFloats.map { $0.bitPattern })
        #expect(one.shape == [1, 8, 64, 64] && one.shape == two.shape && a == b)
    }

    /// A 2-D convolution reads its columns in place from the padded input planes split into
    /// phases by its strides, its outputs computed on the phase planes' width and closed up: each
    /// output is bias + the chain of fused multiply-adds over (channel, ky, kx) in order, bit for
    /// bit. Depth 288 spans two of the GEMM's depth blocks, 37 x 45 inputs make several blocks of
    /// whole rows, 10 output channels leave a part panel; dilations, strides 2 and 1 x k kernels
    /// move the taps' offsets and phases. A 1 x 1 kernel reads the input planes themselves, and
    /// its last pixel (1665 = 104 vectors + 1) from a padded copy. The two 1 x 9 kernels pad
    /// their rows by more than a quarter, so their columns are copied from the phase planes.
    @Test func convolutionsReadTheirColumnsInPlace() throws {
        let (channels, outChannels, h, w) = (32, 10, 37, 45)
        let x = (0 ..< channels * h * w).map { (i: Int) -> Float in Float(sin(Double(i) * 0.37)) * 1.7 }
        let cases: [(kernel: [Int], dilation: Int, pad: [Int], stride: Int, threads: Int)] = [
            ([3, 3], 1, [1, 1], 1, 1), ([3, 3], 1, [1, 1], 1, 2), ([3, 3], 2, [2, 1], 1, 1), ([1, 3], 1, [0, 1], 1, 2), ([1, 1], 1, [0, 0], 1, 1),
            ([1, 1], 1, [0, 0], 1, 2), ([3, 3], 1, [1, 1], 2, 1), ([3, 3], 1, [1, 1], 2, 2), ([7, 7], 1, [3, 3], 2, 1), ([1, 1], 1, [0, 0], 2, 1),
            ([3, 3], 2, [2, 1], 2, 1), ([1, 9], 2, [0, 8], 1, 1), ([1, 9], 3, [0, 12], 2, 2),
        ]
        for (kernel, dilation, pad, stride, threads) in cases {
            let taps = kernel[0] * kernel[1]
            let weights = (0 ..< outChannels * channels * taps).map { (i: Int) -> Float in Float(cos(Double(i) * 0.11)) * 0.3 }
            let bias = (0 ..< outChannels).map { (i: Int) -> Float in Float(i) * 0.37 - 1.3 }
            let graph = ONNXGraph(nodes: [ONNXGraph.Node(opType: "Conv", inputs: ["x", "w", "b"], outputs: ["y"],
                                                         attributes: ["pads": .ints([Int64(pad[0]), Int64(pad[1]), Int64(pad[0]), Int64(pad[1])]),
                                                                      "dilations": .ints([Int64(dilation), Int64(dilation)]),
                                                                      "strides": .ints([Int64(stride), Int64(stride)])])],
                                  inputs: [ONNXGraph.ValueInfo(name: "x")], outputs: [ONNXGraph.ValueInfo(name: "y")],
                                  initializers: ["w": Tensor(name: "w", dataType: .float, shape: [outChannels, channels] + kernel,
                                                             storage: .dense(values: TensorBytes(float32: weights))),
                                                 "b": Tensor(name: "b", dataType: .float, shape: [outChannels], storage: .dense(values: TensorBytes(float32: bias)))])
            let y = try GraphExecutor(graph, threads: threads).run(["x": Value(x, shape: [1, channels, h, w])])[0].value
            let (oh, ow) = ((h + 2 * pad[0] - (kernel[0] - 1) * dilation - 1) / stride + 1, (w + 2 * pad[1] - (kernel[1] - 1) * dilation - 1) / stride + 1)
            var expected: [Float] = []
            for co in 0 ..< outChannels {
                for oy in 0 ..< oh {
                    for ox in 0 ..< ow {
                        var sum: Float = 0
                        for c in 0 ..< channels {
                            for ky in 0 ..< kernel[0] {
                                for kx in 0 ..< kernel[1] {
                                    let (iy, ix) = (oy * stride + ky * dilation - pad[0], ox * stride + kx * dilation - pad[1])
                                    let v = iy >= 0 && iy < h && ix >= 0 && ix < w ? x[(c * h + iy) * w + ix] : 0
                                    sum = sum.addingProduct(v, weights[((co * channels + c) * kernel[0] + ky) * kernel[1] + kx])
                                }
                            }
                        }
                        expected.append(bias[co] + sum)
                    }
                }
            }
            #expect(y.shape == [1, outChannels, oh, ow])
            let differing = zip(y.asFloats, expected).filter { $0.bitPattern != $1.bitPattern }.count
            #expect(differing == 0, "kernel \(kernel), dilation \(dilation), stride \(stride), \(threads) threads: \(differing) outputs differ")
        }
    }

    /// A 1-D convolution, and a 2-D one over a single column (jax2tf's form of it), run as one
    /// row of the padded planes: bias + the chain over (channel, tap) in order, bit for bit.
    @Test func oneDimensionalConvolutionsRunAsRows() throws {
        let (channels, outChannels, length) = (24, 9, 301)
        let x = (0 ..< channels * length).map { (i: Int) -> Float in Float(sin(Double(i) * 0.23)) * 1.3 }
        let weights = (0 ..< outChannels * channels * 5).map { (i: Int) -> Float in Float(cos(Double(i) * 0.17)) * 0.4 }
        let bias = (0 ..< outChannels).map { (i: Int) -> Float in Float(i) * 0.29 - 1.1 }
        for (column, stride, pad) in [(false, 1, 2), (false, 2, 1), (true, 1, 0), (true, 2, 2)] {
            let spatial = column ? [length, 1] : [length], kernel = column ? [5, 1] : [5]
            let pads: [Int64] = column ? [Int64(pad), 0, Int64(pad), 0] : [Int64(pad), Int64(pad)]
            let graph = ONNXGraph(nodes: [ONNXGraph.Node(opType: "Conv", inputs: ["x", "w", "b"], outputs: ["y"],
                                                         attributes: ["pads": .ints(pads), "strides": .ints(column ? [Int64(stride), 1] : [Int64(stride)])])],
                                  inputs: [ONNXGraph.ValueInfo(name: "x")], outputs: [ONNXGraph.ValueInfo(name: "y")],
                                  initializers: ["w": Tensor(name: "w", dataType: .float, shape: [outChannels, channels] + kernel,
                                                             storage: .dense(values: TensorBytes(float32: weights))),
                                                 "b": Tensor(name: "b", dataType: .float, shape: [outChannels], storage: .dense(values: TensorBytes(float32: bias)))])
            let y = try GraphExecutor(graph).run(["x": Value(x, shape: [1, channels] + spatial)])[0].value
            let outputs = (length + 2 * pad - 5) / stride + 1
            var expected: [Float] = []
            for co in 0 ..< outChannels {
                for o in 0 ..< outputs {
                    var sum: Float = 0
                    for c in 0 ..< channels {
                        for k in 0 ..< 5 {
                            let i = o * stride + k - pad
                            sum = sum.addingProduct(i >= 0 && i < length ? x[c * length + i] : 0, weights[(co * channels + c) * 5 + k])
                        }
                    }
                    expected.append(bias[co] + sum)
                }
            }
            #expect(y.shape == [1, outChannels, outputs] + (column ? [1] : []))
            let differing = zip(y.asFloats, expected).filter { $0.bitPattern != $1.bitPattern }.count
            #expect(differing == 0, "column \(column), stride \(stride): \(differing) outputs differ")
        }
    }

    /// A MatMul on a stored weight and the Add of its bias run as one, the bias added as the
    /// kernel writes each output, bit for bit the Add node's sums: float32 weights in every layout
    /// (the dense GEMM adds it as it transposes yᵀ, in 16 x 16 blocks and at the edges) and int8
    /// weights with float and with int8 activations; a single row and batches.
    @Test func biasAddIsFusedIntoTheMatMul() throws {
        let (depth, outputs) = (64, 40)
        let bias = Tensor(name: "b", dataType: .float, shape: [outputs],
                          storage: .dense(values: TensorBytes(float32: (0 ..< outputs).map { Float($0) / 7 - 2 })))
        for values in [KernelTests.Values.float32, .int8PerOutput] {
            for layout in LayoutKind.allCases {
                let w = try KernelTests.tensor(shape: [depth, outputs], axis: 0, values: values, seed: 5).encoded(as: layout)
                let graph = ONNXGraph(nodes: [ONNXGraph.Node(opType: "MatMul", inputs: ["x", w.name], outputs: ["m"], attributes: [:]),
                                              ONNXGraph.Node(opType: "Add", inputs: ["b", "m"], outputs: ["y"], attributes: [:])],
                                      inputs: [ONNXGraph.ValueInfo(name: "x")], outputs: [ONNXGraph.ValueInfo(name: "y")],
                                      initializers: [w.name: w, "b": bias])
                for batch in [1, 5, 37] {
                    let x = Value(KernelTests.random(count: batch * depth, seed: 9), shape: [batch, depth])
                    for activations in ActivationArithmetic.allCases {
                        let fused = try GraphExecutor(graph, activations: activations)
                        fused.profile = OpProfile()
                        let unfused = try GraphExecutor(graph, activations: activations)
                        unfused.observer = ([], { _, _ in })
                        let y = try fused.run(["x": x])[0].value, expected = try unfused.run(["x": x])[0].value
                        #expect(y.shape == [batch, outputs] && y.asFloats.map(\.bitPattern) == expected.asFloats.map(\.bitPattern),
                                "\(values) \(layout) \(batch) \(activations)")
                        #expect(fused.profile!.entries.keys.contains { $0.contains("fused bias") }, "\(values) \(layout) \(activations)")
                    }
                }
            }
        }
    }

    /// Attention's Div by a constant, Add of the mask and Softmax run as one: the bits of the three
    /// nodes, whichever operand of the Add the mask is and however it broadcasts; a Softmax
    /// over another axis runs unfused.
    @Test func scaledMaskedSoftmaxIsFused() throws {
        let n = 20
        let scale = Tensor(name: "c", dataType: .float, shape: [], storage: .dense(values: TensorBytes(float32: [5.656854])))
        for (maskShape, maskFirst, axis) in [([1, 1, 1, n], false, -1), ([2, 1, 1, n], true, 3), ([2, 3, 4, n], false, -1), ([2, 3, 4, n], false, 2)] {
            let add = maskFirst ? ["mask", "scaled"] : ["scaled", "mask"]
            let graph = ONNXGraph(nodes: [ONNXGraph.Node(opType: "Div", inputs: ["x", "c"], outputs: ["scaled"], attributes: [:]),
                                          ONNXGraph.Node(opType: "Add", inputs: add, outputs: ["masked"], attributes: [:]),
                                          ONNXGraph.Node(opType: "Softmax", inputs: ["masked"], outputs: ["y"], attributes: ["axis": .int(Int64(axis))])],
                                  inputs: [ONNXGraph.ValueInfo(name: "x"), ONNXGraph.ValueInfo(name: "mask")],
                                  outputs: [ONNXGraph.ValueInfo(name: "y")], initializers: ["c": scale])
            let x = Value(KernelTests.random(count: 24 * n, seed: 3).map { $0 * 30 }, shape: [2, 3, 4, n])
            let mask = Value(KernelTests.random(count: maskShape.reduce(1, *), seed: 4).map { $0 < -0.5 ? Float(-10_000) : 0 }, shape: maskShape)
            let fused = try GraphExecutor(graph)
            fused.profile = OpProfile()
            let unfused = try GraphExecutor(graph)
            unfused.observer = ([], { _, _ in })
            let y = try fused.run(["x": x, "mask": mask])[0].value, expected = try unfused.run(["x": x, "mask": mask])[0].value
            #expect(y.shape == x.shape && y.asFloats.map(\.bitPattern) == expected.asFloats.map(\.bitPattern), "\(maskShape) \(maskFirst) \(axis)")
            #expect((fused.profile!.entries["Softmax (fused Div, Add)"] != nil) == (axis != 2), "\(maskShape) \(axis)")
        }
    }

    /// Transposes around elementwise regions (as TensorFlow exports wrap each Conv) are taken
    /// out: a chain with constants, a residual Add of two transposed inputs, an exit that undoes
    /// the permutation (an Identity) and one that does not (one composed Transpose). Kept: a
    /// region whose constant would change its element order, and one that reaches a graph
    /// output. The outputs keep their bits: against the same graph with every value an output,
    /// which pins every region.
    @Test func transposesCancelAcrossElementwiseRegions() throws {
        let f = { (v: [Float], shape: [Int]) in Tensor(name: "", dataType: .float, shape: shape, storage: .dense(values: TensorBytes(float32: v))) }
        let nhwc: ONNXGraph.Attribute = .ints([0, 2, 3, 1])
        func node(_ op: String, _ inputs: [String], _ output: String, perm: ONNXGraph.Attribute? = nil) -> ONNXGraph.Node {
            ONNXGraph.Node(opType: op, inputs: inputs, outputs: [output], attributes: perm.map { ["perm": $0] } ?? [:])
        }
        let nodes = [
            node("Transpose", ["x"], "t1", perm: nhwc), node("Add", ["t1", "bias"], "a"), node("Mul", ["scale", "a"], "s"),
            node("Relu", ["s"], "r"), node("Transpose", ["z"], "u", perm: nhwc), node("Add", ["r", "u"], "sum"),
            node("Sigmoid", ["sum"], "o"), node("Transpose", ["o"], "y", perm: .ints([0, 3, 1, 2])),
            node("Transpose", ["o"], "y2", perm: .ints([0, 3, 2, 1])),
            node("Transpose", ["x"], "t3", perm: nhwc), node("Mul", ["t3", "wc"], "m"), node("Transpose", ["m"], "y3", perm: .ints([0, 3, 1, 2])),
            node("Transpose", ["x"], "t5", perm: nhwc), node("Neg", ["t5"], "n5"),
        ]
        let outputs = ["y", "y2", "y3", "n5"]
        let graph = ONNXGraph(nodes: nodes, inputs: [ONNXGraph.ValueInfo(name: "x"), ONNXGraph.ValueInfo(name: "z")],
                              outputs: outputs.map { ONNXGraph.ValueInfo(name: $0) },
                              initializers: ["bias": f([0.5, -1, 2], [3]), "scale": f([3, 0.25, -2], [1, 1, 1, 3]),
                                             "wc": f(KernelTests.random(count: 15, seed: 9), [1, 1, 5, 3])])
        let rewritten = TransposeCancellation.rewrite(graph)
        #expect(rewritten.nodes.filter { $0.opType == "Transpose" }.map(\.outputs[0]).sorted() == ["t3", "t5", "y2", "y3"])
        #expect(rewritten.nodes.filter { $0.opType == "Identity" }.map(\.outputs[0]) == ["y"])
        #expect(rewritten.nodes.first { $0.outputs[0] == "y2" }.map { $0.inputs == ["o"] && $0.attributes["perm"].map { "\($0)" } == "\(ONNXGraph.Attribute.ints([0, 1, 3, 2]))" } == true)

        var pinned = graph
        pinned.outputs = outputs.map { ONNXGraph.ValueInfo(name: $0) } + nodes.map { ONNXGraph.ValueInfo(name: $0.outputs[0]) }.filter { !outputs.contains($0.name) }
        #expect(TransposeCancellation.rewrite(pinned).nodes.count == nodes.count)
        let inputs = ["x": floats(KernelTests.random(count: 120, seed: 1), [2, 3, 4, 5]), "z": floats(KernelTests.random(count: 120, seed: 2), [2, 3, 4, 5])]
        let got = try GraphExecutor(graph).run(inputs), expected = try GraphExecutor(pinned).run(inputs)
        for (index, name) in outputs.enumerated() {
            #expect(got[index].name == name && expected[index].name == name)
            #expect(got[index].value.shape == expected[index].value.shape, "\(name)")
            #expect(got[index].value.asFloats.map(\.bitPattern) == expected[index].value.asFloats.map(\.bitPattern), "\(name)")
        }
    }

    /// Nodes built on Shape outputs and constants (a Reshape's target, as exports compute it)
    /// reuse their outputs from the last run while the shapes they read are the same, and are
    /// computed again when a shape changes, also after a run that failed between the Shape node
    /// and them (here a Reshape of a second input `z` that does not fit).
    @Test func shapeComputationsAreReusedWhileTheShapesHold() throws {
        let i64 = { (v: [Int64]) in Tensor(name: "", dataType: .int64, shape: [v.count], storage: .dense(values: TensorBytes(littleEndian: v))) }
        let nodes = [ONNXGraph.Node(opType: "Shape", inputs: ["x"], outputs: ["s"], attributes: [:]),
                     ONNXGraph.Node(opType: "Reshape", inputs: ["z", "four"], outputs: ["z4"], attributes: [:]),
                     ONNXGraph.Node(opType: "Gather", inputs: ["s", "zero"], outputs: ["rows"], attributes: [:]),
                     ONNXGraph.Node(opType: "Concat", inputs: ["rows", "minusOne"], outputs: ["target"], attributes: ["axis": .int(0)]),
                     ONNXGraph.Node(opType: "Reshape", inputs: ["x", "target"], outputs: ["flat"], attributes: [:]),
                     ONNXGraph.Node(opType: "Mul", inputs: ["flat", "flat"], outputs: ["y"], attributes: [:])]
        let graph = ONNXGraph(nodes: nodes, inputs: [ONNXGraph.ValueInfo(name: "x"), ONNXGraph.ValueInfo(name: "z")],
                              outputs: [ONNXGraph.ValueInfo(name: "y"), ONNXGraph.ValueInfo(name: "z4")],
                              initializers: ["zero": i64([0]), "minusOne": i64([-1]), "four": i64([4])])
        let executor = try GraphExecutor(graph)
        #expect(executor.shapeSource == [true, false, false, false, false, false] && executor.shapeDerived == [false, false, true, true, false, false])
        executor.profile = OpProfile()
        var computed = 0
        for (shape, fits, reused) in [([2, 3, 2], true, false), ([2, 3, 2], true, true), ([3, 2, 2], true, false), ([3, 2, 2], true, true),
                                      ([2, 3, 2], false, false), ([2, 3, 2], true, false), ([2, 3, 2], true, true)] {
            let x = floats((0 ..< 12).map(Float.init), shape), z = floats(fits ? [1, 2, 3, 4] : [1, 2, 3], [fits ? 4 : 3])
            guard fits else {
                #expect(throws: RuntimeError.self) { try executor.run(["x": x, "z": z]) }
                continue
            }
            let y = try executor.run(["x": x, "z": z])[0].value
            #expect(y.shape == [shape[0], 12 / shape[0]] && y.asFloats == (0 ..< 12).map { Float($0 * $0) }, "\(shape)")
            let gathers = executor.profile!.entries["Gather"]?.nodes ?? 0
            #expect(gathers == computed + (reused ? 0 : 1), "\(shape) reused \(reused)")
            computed = gathers
        }
    }

    /// Nodes computed from constants alone run once; later runs reuse their outputs. A default
    /// the caller may override is not a constant.
    @Test func constantSubgraphsAreFoldedOnceAndOverridesStillApply() throws {
        let w = Tensor(name: "w", dataType: .float, shape: [2], storage: .dense(values: TensorBytes(float32: [1, 2])))
        let d = Tensor(name: "d", dataType: .float, shape: [2], storage: .dense(values: TensorBytes(float32: [10, 20])))
        let nodes = [ONNXGraph.Node(opType: "Mul", inputs: ["w", "w"], outputs: ["w2"], attributes: [:]),   // constant: folded
                     ONNXGraph.Node(opType: "Mul", inputs: ["d", "w2"], outputs: ["dw"], attributes: [:]),   // d may be overridden
                     ONNXGraph.Node(opType: "Add", inputs: ["x", "dw"], outputs: ["y"], attributes: [:])]
        var graph = ONNXGraph(nodes: nodes, inputs: [ONNXGraph.ValueInfo(name: "x")], outputs: [ONNXGraph.ValueInfo(name: "y")],
                              initializers: ["w": w, "d": d])
        graph.overridableInputs = [ONNXGraph.ValueInfo(name: "d")]
        let executor = try GraphExecutor(graph)
        #expect(executor.foldable == [true, false, false])
        let x = floats([1, 1], [2])
        #expect(try executor.run(["x": x])[0].value.asFloats == [11, 81])
        #expect(try executor.run(["x": floats([2, 3], [2])])[0].value.asFloats == [12, 83])
        #expect(try executor.run(["x": x, "d": floats([1, 1], [2])])[0].value.asFloats == [2, 5])
    }

    /// What FuzzGraph found: shapes and values that trapped instead of being refused.
    @Test func fuzzFindingsAreRefusedOrDefined() throws {
        let scalar = Value([Float(1)], shape: [])
        #expect { try run("Gather", [scalar, ints([0])]) } throws: { ($0 as? RuntimeError)?.code == .badShape }
        #expect { try run("Concat", [scalar, scalar]) } throws: { ($0 as? RuntimeError)?.code == .badShape }
        #expect { try run("Gemm", [iota([4, 8]), iota([8])], attributes: ["transB": .int(1)]) } throws: {
            ($0 as? RuntimeError)?.message == "Gemm's B must be 2-D, got [8]"
        }
        #expect { try run("LayerNormalization", [iota([2, 3]), iota([4])]) } throws: {
            ($0 as? RuntimeError)?.message == "shape [4] does not broadcast to [3]"
        }
        // Float indices and shapes saturate (NaN is 0) instead of trapping on conversion.
        #expect { try run("Gather", [iota([3]), floats([.nan, 1e30], [2])]) } throws: { ($0 as? RuntimeError)?.code == .badShape }
        #expect { try run("Conv", [iota([1, 1, 3, 3]), iota([2, 1, 2, 2]), iota([3])]) } throws: {
            ($0 as? RuntimeError)?.message == "bias has 3 values for 2 output channels"
        }
        #expect { try run("LRN", [iota([1, 2, 2]), ], attributes: ["size": .int(0)]) } throws: { ($0 as? RuntimeError)?.code == .badShape }
        #expect { try run("LRN", [iota([4])]) } throws: { ($0 as? RuntimeError)?.code == .badShape }
        #expect { try run("ArgMax", [iota([2, 0])], attributes: ["axis": .int(1)]) } throws: { ($0 as? RuntimeError)?.code == .badShape }
        #expect { try run("Pad", [iota([0, 2]), ints([1, 0, 1, 0])], attributes: ["mode": .string("edge")]) } throws: {
            ($0 as? RuntimeError)?.code == .badShape
        }
        #expect(try run("Neg", [ints([Int64.min, 5])]).asFloats == [Float(Int64.min), -5])
        #expect(try run("Abs", [ints([Int64.min])]).asFloats == [Float(Int64.min)])
        #expect(try run("Cast", [floats([.nan, 1e30, -1e30], [3])], attributes: ["to": .int(7)]).asFloats == [0, 9.2e18, -9.2e18])
        #expect { try run("Cast", [iota([2])], attributes: ["to": .int(-3)]) } throws: { ($0 as? RuntimeError)?.code == .unsupportedType }
        let declared = ONNXGraph(nodes: [ONNXGraph.Node(opType: "Identity", inputs: ["x"], outputs: ["y"])],
                                 inputs: [ONNXGraph.ValueInfo(name: "x", elementType: -5)], outputs: [ONNXGraph.ValueInfo(name: "y")])
        #expect { try GraphExecutor(declared).run(["x": iota([2])]) } throws: { ($0 as? RuntimeError)?.message.contains("type -5") == true }
    }

    @Test func padReflectsAndReplicatesEdges() throws {
        let x = iota([1, 3])
        #expect(try run("Pad", [x, ints([0, 2, 0, 1])], attributes: ["mode": .string("reflect")]).asFloats == [2, 1, 0, 1, 2, 1])
        #expect(try run("Pad", [x, ints([0, 1, 0, 2])], attributes: ["mode": .string("edge")]).asFloats == [0, 0, 1, 2, 2, 2])
    }

    @Test func binaryOpsBroadcastEveryWay() throws {
        // Scalars, trailing rows, one value per row, masks over the last axis, an operand
        // stretched on both sides and two partial operands, against a multi-index walk.
        let pairs: [([Int], [Int])] = [
            ([2, 3, 4], [4]), ([2, 3, 4], [3, 1]), ([2, 3, 4], [1, 3, 1]), ([2, 3, 4], [2, 1, 4]), ([1, 1, 4], [2, 3, 4]),
            ([2, 3, 4], []), ([], [2, 3]), ([2, 1, 4], [3, 1]), ([2, 3, 4], [1, 1, 1]), ([2, 3, 4], [2, 3, 1]), ([0, 3], [3]),
            ([1, 5, 1], [1, 1, 7]), ([2, 3, 1], [3, 4]), ([2, 1, 4], [3, 4]),
        ]
        for (aShape, bShape) in pairs {
            let a = (0 ..< aShape.reduce(1, *)).map { Float($0) }, b = (0 ..< bShape.reduce(1, *)).map { Float($0 * 100) }
            let (y, shape) = try Broadcast.apply(a, aShape, b, bShape) { $0 + 1000 * $1 }
            let rank = max(aShape.count, bShape.count)
            let padA = [Int](repeating: 1, count: rank - aShape.count) + aShape, padB = [Int](repeating: 1, count: rank - bShape.count) + bShape
            #expect(shape == zip(padA, padB).map { max($0, $1) == 0 || min($0, $1) == 0 ? 0 : max($0, $1) }, "\(aShape) with \(bShape)")
            var expected: [Float] = []
            for flat in 0 ..< shape.reduce(1, *) {
                var rest = flat, ia = 0, ib = 0, strideA = 1, strideB = 1
                for axis in (0 ..< rank).reversed() {
                    let position = rest % shape[axis]
                    rest /= shape[axis]
                    ia += (padA[axis] == 1 ? 0 : position) * strideA
                    ib += (padB[axis] == 1 ? 0 : position) * strideB
                    strideA *= padA[axis]
                    strideB *= padB[axis]
                }
                expected.append(a[ia] + 1000 * b[ib])
            }
            #expect(y == expected, "\(aShape) with \(bShape)")
        }
    }

    @Test func matMulOfTwoActivationsCoversEveryColumnBlock() throws {
        // 83 columns: one block of 64, one of 16 and 3 alone; odd depths leave a depth over.
        for (m, k, n) in [(3, 5, 83), (2, 8, 16), (1, 1, 70)] {
            let a = (0 ..< 2 * m * k).map { Float(($0 * 7) % 11) - 5 }, b = (0 ..< k * n).map { Float(($0 * 5) % 13) - 6 }
            let y = try run("MatMul", [floats(a, [2, m, k]), floats(b, [k, n])])
            #expect(y.shape == [2, m, n])
            var expected: [Float] = []
            for batch in 0 ..< 2 {
                for i in 0 ..< m {
                    for j in 0 ..< n { expected.append((0 ..< k).reduce(0) { $0 + a[(batch * m + i) * k + $1] * b[$1 * n + j] }) }
                }
            }
            #expect(y.floats == expected, "\(m) x \(k) x \(n)")
        }
    }

    /// A B computed from constants (an int8 weight dequantized by Cast and Mul) runs as an
    /// operator made on the first run and reused: the same products on every run, for a
    /// batched, a 2-D and a 1-D A.
    @Test func matMulOnAFoldedWeightRunsThroughItsOperator() throws {
        let (k, n) = (5, 37)
        let codes = Tensor(name: "codes", dataType: .int8, shape: [k, n], storage: .dense(values: TensorBytes((0 ..< k * n).map { UInt8(bitPattern: Int8($0 % 9 - 4)) })))
        let scale = Tensor(name: "scale", dataType: .float, shape: [1, n], storage: .dense(values: TensorBytes(float32: (0 ..< n).map { Float($0 % 3 + 1) })))
        let graph = ONNXGraph(nodes: [ONNXGraph.Node(opType: "Cast", inputs: ["codes"], outputs: ["c"], attributes: ["to": .int(1)]),
                                      ONNXGraph.Node(opType: "Mul", inputs: ["c", "scale"], outputs: ["b"], attributes: [:]),
                                      ONNXGraph.Node(opType: "MatMul", inputs: ["x", "b"], outputs: ["y"], attributes: [:])],
                              inputs: [ONNXGraph.ValueInfo(name: "x")], outputs: [ONNXGraph.ValueInfo(name: "y")],
                              initializers: ["codes": codes, "scale": scale])
        let b = (0 ..< k * n).map { Float($0 % 9 - 4) * Float($0 % n % 3 + 1) }
        let executor = try GraphExecutor(graph)
        for shape in [[2, 3, k], [4, k], [k]] {
            let rows = shape.dropLast().reduce(1, *), a = (0 ..< rows * k).map { Float(($0 * 7) % 11) - 5 }
            let expected = (0 ..< rows).flatMap { i in (0 ..< n).map { j in (0 ..< k).reduce(Float(0)) { $0 + a[i * k + $1] * b[$1 * n + j] } } }
            for _ in 0 ..< 2 {
                let y = try executor.run(["x": floats(a, shape)])[0].value
                #expect(y.shape == shape.dropLast() + [n] && y.floats == expected, "\(shape)")
            }
        }
    }

    @Test func whereBroadcastsItsCondition() throws {
        let y = try run("Where", [Value([true, false], shape: [2]), iota([2, 2]), floats([-1], [1])])
        #expect(y.asFloats == [0, -1, 2, -1])
    }

    /// Softmax and LogSoftmax on an axis before the last run 16 lines at a time, each line with
    /// the operations of the line-by-line reference, so the same bits: blocks of 16 lines, lines
    /// left over, and infinities and NaN in a line.
    @Test func softmaxOnAnInnerAxisMatchesTheLineByLineReference() throws {
        for (outer, n, inner) in [(2, 7, 16), (1, 33, 37), (3, 1, 20), (2, 5, 5)] {
            var x = KernelTests.random(count: outer * n * inner, seed: UInt64(n * inner)).map { $0 * 20 }
            x[3] = .infinity
            x[min(17, x.count - 1)] = -.infinity
            x[x.count / 2] = .nan
            for log in [false, true] {
                var got = x, expected = x
                ReductionOps.softmaxColumns(&got, view: (outer, n, inner), log: log)
                ReductionOps.softmaxLines(&expected, view: (outer, n, inner), log: log, exp: ElementaryFunction.exp.portable, ln: { Foundation.log($0) })
                #expect(got.map(\.bitPattern) == expected.map(\.bitPattern), "\((outer, n, inner)) log \(log)")
            }
        }
    }

    /// The MaxPool row kernel (taken when no Indices output is asked for) gives the generic
    /// pool's values, bit for bit: strides 1 and 2 with rows that end in partial vectors,
    /// padding (at the end only too, as SAME_UPPER pads a 2x2 window), a dilation, a stride of
    /// 3, and NaN and -inf among the inputs.
    @Test func maxPoolKernelMatchesTheGenericPool() throws {
        for width in [37, 40, 160] {
            var pixels = KernelTests.random(count: 2 * 3 * 9 * width, seed: UInt64(width)).map { $0 * 4 }
            (pixels[5], pixels[width + 1], pixels[pixels.count - 2]) = (.nan, -.infinity, .nan)
            let x = floats(pixels, [2, 3, 9, width])
            for (kernel, strides, pads, dilations) in [([2, 2], [2, 2], [0, 0, 0, 0], [1, 1]), ([3, 3], [2, 2], [1, 1, 1, 1], [1, 1]),
                                                       ([3, 3], [1, 1], [1, 1, 1, 1], [1, 1]), ([2, 2], [1, 1], [0, 0, 0, 0], [1, 2]),
                                                       ([3, 2], [3, 3], [0, 1, 0, 1], [1, 1]), ([2, 2], [1, 1], [0, 0, 1, 1], [1, 1])]
                    as [([Int64], [Int64], [Int64], [Int64])] {
                let attributes: [String: ONNXGraph.Attribute] = ["kernel_shape": .ints(kernel), "strides": .ints(strides), "pads": .ints(pads),
                                                                 "dilations": .ints(dilations)]
                let rowKernel = try run("MaxPool", [x], attributes: attributes)
                let generic = try GraphExecutor(ONNXGraph(nodes: [ONNXGraph.Node(opType: "MaxPool", inputs: ["a"], outputs: ["y", "i"], attributes: attributes)],
                                                          inputs: [ONNXGraph.ValueInfo(name: "a")], outputs: [ONNXGraph.ValueInfo(name: "y")])).run(["a": x])[0].value
                #expect(rowKernel.shape == generic.shape && rowKernel.asFloats.map(\.bitPattern) == generic.asFloats.map(\.bitPattern),
                        "width \(width) kernel \(kernel) strides \(strides) dilations \(dilations)")
                // Every variant the CPU runs, called as the op calls it.
                let (oh, ow) = (generic.shape[2], generic.shape[3]), k = kernel.map(Int.init), st = strides.map(Int.init)
                let (dl, pd) = (dilations.map(Int.init), pads.map(Int.init))
                for isa in KernelVariantTests.variants {
                    let table = try #require(KernelDispatch.table(for: isa))
                    var y = [Float](repeating: 0, count: 6 * oh * ow), seen = [Float](repeating: 0, count: ow)
                    for plane in 0 ..< 6 {
                        pixels.withUnsafeBufferPointer { v in
                            y.withUnsafeMutableBufferPointer { y in
                                table.maxpool(v.baseAddress! + plane * 9 * width, 9, width, k[0], k[1], st[0], st[1], dl[0], dl[1], pd[0], pd[1],
                                              y.baseAddress! + plane * oh * ow, oh, ow, &seen)
                            }
                        }
                    }
                    #expect(y.map(\.bitPattern) == generic.asFloats.map(\.bitPattern), "\(isa) width \(width) kernel \(kernel) strides \(strides)")
                }
            }
        }
    }

    @Test func softmaxBeforeOpset13FlattensAtTheAxis() throws {
        let x = floats([0, 0, 0, 0], [1, 2, 2])
        #expect(try run("Softmax", [x], opset: 11).asFloats == [0.25, 0.25, 0.25, 0.25])
        #expect(try run("Softmax", [x], opset: 13).asFloats == [0.5, 0.5, 0.5, 0.5])
    }

    @Test func integerDivisionTruncatesAndCastWraps() throws {
        let quotient = try run("Div", [ints([7, -7]), ints([2, 2])])
        #expect(quotient.asInts == [3, -3])
        let int8 = Int64(DataType.int8.rawValue)
        let wrapped = try run("Cast", [ints([300, -129])], attributes: ["to": .int(int8)])
        #expect(wrapped.type == .int8)
        #expect(wrapped.asInts == [44, 127])
    }

    @Test func missingOpsAreNamedBeforeRunning() throws {
        let graph = ONNXGraph(nodes: [ONNXGraph.Node(opType: "ImageDecoder", inputs: ["x"], outputs: ["a"]),
                                      ONNXGraph.Node(opType: "StringNormalizer", inputs: ["a"], outputs: ["y"])],
                              inputs: [ONNXGraph.ValueInfo(name: "x")], outputs: [ONNXGraph.ValueInfo(name: "y")])
        #expect(GraphExecutor.missingOps(graph).map(\.op) == ["ImageDecoder", "StringNormalizer"])
        #expect(throws: RuntimeError.self) { try GraphExecutor(graph) }
    }

    /// A Conv weight stored as CSR (decoded once) and the same weight dense give the same
    /// output, with groups, strides, pads and dilations.
    @Test func convThroughAStoredSparseWeightMatchesTheDenseWeight() throws {
        let weights: [Float] = (0 ..< 192).map { (i: Int) -> Float in i % 3 == 0 ? 0 : Float((i * 7) % 11) - 5 }
        let dense = Tensor(name: "w", dataType: .float, shape: [8, 4, 3, 2], role: .convWeight, reductionAxis: 1,
                           storage: .dense(values: TensorBytes(float32: weights)))
        let pixels: [Float] = (0 ..< 480).map { (i: Int) -> Float in Float((i * 13) % 17) / 4 - 2 }
        let x = Value(pixels, shape: [2, 8, 5, 6])
        let attributes: [String: ONNXGraph.Attribute] = ["group": .int(2), "strides": .ints([2, 1]),
                                                         "pads": .ints([1, 0, 1, 1]), "dilations": .ints([1, 2])]
        func conv(_ w: Tensor) throws -> Value {
            let graph = ONNXGraph(nodes: [ONNXGraph.Node(opType: "Conv", inputs: ["x", "w"], outputs: ["y"], attributes: attributes)],
                                  inputs: [ONNXGraph.ValueInfo(name: "x")], outputs: [ONNXGraph.ValueInfo(name: "y")], initializers: ["w": w])
            return try GraphExecutor(graph).run(["x": x])[0].value
        }
        let expected = try conv(dense)
        let sparse = try conv(try dense.encoded(as: LayoutKind.csr))
        #expect(expected.shape == [2, 8, 3, 5])   // H: (5 + 2 - 3) / 2 + 1; W: (6 + 1 - 3) + 1
        #expect(expected.asFloats == sparse.asFloats)
    }
}
