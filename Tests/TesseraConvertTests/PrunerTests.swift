import Testing
import Tessera
import TesseraConvert

@Suite struct PrunerTests {
    /// Distinct magnitudes so "the two largest" is unambiguous: element i has |x| = i + 1.
    static func tensor(_ shape: [Int], role: WeightRole, axis: Int, name: String = "w") throws -> Tensor {
        let count = try TensorGeometry(shape: shape).elementCount
        let values = (0 ..< count).map { i in Float(i + 1) * (i % 3 == 0 ? -1 : 1) }
        return Tensor(name: name, dataType: .float, shape: shape, role: role, reductionAxis: axis,
                      storage: .dense(values: TensorBytes(float32: values)))
    }

    /// Every group of four along `axis` has at most two non-zeros, and they are the two largest.
    static func expectTwoFour(_ before: Tensor, _ after: Tensor, axis: Int, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let x = try before.densify(), y = try after.densify()
        let view = try TensorGeometry(shape: before.shape).sparse24(axis: axis)
        for row in 0 ..< view.rows {
            for group in 0 ..< view.groupsPerRow {
                let members = (0 ..< 4).map { view.logicalIndex(row: row, k: group * 4 + $0) }
                let kept = members.filter { y[$0] != 0 }
                let largest = members.sorted { abs(x[$0]) > abs(x[$1]) }.prefix(2)
                #expect(Set(kept) == Set(largest), "row \(row) group \(group)", sourceLocation: sourceLocation)
                #expect(kept.allSatisfy { x[$0] == y[$0] }, "kept values are unchanged", sourceLocation: sourceLocation)
            }
        }
        #expect(try after.encoded(as: .sparse24).storage.kind == .sparse24, sourceLocation: sourceLocation)
    }

    @Test func matmulWeightsArePrunedAlongK() throws {
        let w = try Self.tensor([8, 3], role: .matmulB, axis: 0)                   // [K, N]
        try Self.expectTwoFour(w, try Pruner.prune(w, .twoFour), axis: 0)
        // Along the wrong axis the result is not 2:4 along K: a sparse tensor core could not use it.
        let wrong = try Pruner.prune(Self.tensor([8, 4], role: .matmulB, axis: 1), .twoFour)
        var asMatMul = wrong
        asMatMul.reductionAxis = 0
        #expect(throws: TessError.self) { try asMatMul.encoded(as: .sparse24) }
    }

    @Test(arguments: [0, 1])
    func gemmWeightsFollowTransB(axis: Int) throws {
        let w = try Self.tensor([8, 8], role: .gemmB, axis: axis)                 // transB = axis
        try Self.expectTwoFour(w, try Pruner.prune(w, .twoFour), axis: axis)
    }

    @Test func convWeightsArePrunedAlongInputChannels() throws {
        // [Cout, Cin, kh, kw]: groups of four input channels at every output channel and kernel position.
        let w = try Self.tensor([3, 8, 2, 3], role: .convWeight, axis: 1)
        let pruned = try Pruner.prune(w, .twoFour)
        try Self.expectTwoFour(w, pruned, axis: 1)
        let y = try pruned.densify()
        for cout in 0 ..< 3 {
            for position in 0 ..< 6 {
                for group in 0 ..< 2 {
                    let channels = (0 ..< 4).map { (cout * 8 + group * 4 + $0) * 6 + position }
                    #expect(channels.filter { y[$0] != 0 }.count == 2)
                }
            }
        }
    }

    @Test func tensorsThatCannotBe24AreReportedNotGuessed() throws {
        let odd = try Self.tensor([10, 4], role: .matmulB, axis: 0)
        #expect(Pruner.obstacle(.twoFour, odd) == "reduction axis 0 has length 10, not a multiple of 4")
        #expect(throws: ConvertError.self) { try Pruner.prune(odd, .twoFour) }
        let recipe = Recipe(prune: "2:4", minimumElements: 1)
        let converter = try Converter(recipe: recipe)
        let result = try converter.convert(odd)
        let unchanged = try odd.densify()
        #expect(result.storage.kind == .dense)
        #expect(try result.densify() == unchanged)
        #expect(converter.report.tensors[0].reason.contains("not pruned: reduction axis 0 has length 10"))
    }

    @Test func magnitudePruningZeroesTheSmallest() throws {
        let w = try Self.tensor([16, 8], role: .matmulB, axis: 0)
        let y = try Pruner.prune(w, .magnitude(0.75)).densify()
        #expect(y.filter { $0 == 0 }.count == 96)
        #expect(y.prefix(96).allSatisfy { $0 == 0 } && y.suffix(32).allSatisfy { $0 != 0 })   // |x| grows with i
    }

    @Test func globalMagnitudeUsesOneThresholdAcrossTensors() throws {
        let small = try Self.tensor([8, 8], role: .matmulB, axis: 0, name: "small")    // |x| 1...64
        var large = try Self.tensor([8, 8], role: .matmulB, axis: 0, name: "large")
        large = try large.keepingOnly { _ in true }
        let scaled = try large.densify().map { $0 * 100 }                             // |x| 100...6400
        large.storage = .dense(values: TensorBytes(float32: scaled))
        let converter = try Converter(recipe: Recipe(prune: "global-magnitude:0.5", minimumElements: 1))
        #expect(converter.needsFirstPass)
        try converter.observe(small)
        try converter.observe(large)
        let a = try converter.convert(small).densify(), b = try converter.convert(large).densify()
        // Half of all 128 weights go, and they are the small tensor's (all below 100).
        #expect(a.allSatisfy { $0 == 0 } && b.allSatisfy { $0 != 0 })
    }

    @Test func autoLayoutPicksTheSmallestExactEncoding() throws {
        let w = try Self.tensor([64, 16], role: .matmulB, axis: 0)
        let (dense, why) = try LayoutChoice.choose(w, .auto)
        #expect(dense.storage.kind == .dense && why.hasPrefix("dense"))
        let (s24, why24) = try LayoutChoice.choose(try Pruner.prune(w, .twoFour), .auto)
        #expect(s24.storage.kind == .sparse24 && why24.contains("satisfies 2:4"))
        let (csr, whyCSR) = try LayoutChoice.choose(try Pruner.prune(w, .magnitude(0.9)), .auto)
        // 64 x 16 at 90% zeros: u8/u16 indices make CSR smallest.
        #expect(csr.storage.kind == .csr && whyCSR.hasPrefix("csr: 89.9% zeros"))   // floor(0.9 * 1024) = 921
        #expect(throws: ConvertError.self) { try LayoutChoice.choose(w, .sparse24) }
    }

    @Test func recipesMatchByGlobFirstRuleWins() throws {
        let recipe = Recipe(prune: "2:4", quantize: "int8", rules: [
            .init(match: "*.bias", skip: true),
            .init(match: "embed*", quantize: "int4:group=32"),
            .init(match: "layer1.*", prune: "magnitude:0.5", layout: "csr"),
        ])
        let gemm = try Self.tensor([64, 32], role: .matmulB, axis: 0, name: "layer0.weight")
        #expect(try recipe.plan(for: gemm) == TensorPlan(prune: .twoFour, quantize: QuantizationSpec(bits: .int8)))
        var bias = gemm
        bias.name = "layer0.bias"
        let biasPlan = try recipe.plan(for: bias)
        #expect(biasPlan.prune == nil && biasPlan.quantize == nil)
        var embedding = gemm
        embedding.name = "embeddings.word"
        embedding.role = .gatherData
        #expect(try recipe.plan(for: embedding).quantize == QuantizationSpec(bits: .int4, groupSize: 32))
        var layer1 = gemm
        layer1.name = "layer1.weight"
        let plan = try recipe.plan(for: layer1)
        #expect(plan.prune == .magnitude(0.5) && plan.layout == .csr && plan.quantize == QuantizationSpec(bits: .int8))
        var unused = gemm
        unused.role = .unknown
        unused.name = "other"
        #expect(try recipe.plan(for: unused).prune == nil)   // not a GEMM weight and no rule
        #expect(throws: ConvertError.self) { try Recipe(rules: [.init(match: "*", prune: "3:4")]).validate() }
    }
}
