import Testing
import Tessera
import TesseraConvert

@Suite struct QuantizerTests {
    /// A MatMul weight [K, N] with values spread over a wide range.
    static func weight(k: Int = 64, n: Int = 12, seed: UInt64 = 1) -> Tensor {
        var state = seed
        let values = (0 ..< k * n).map { i -> Float in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            let u = Float(state >> 40) / Float(1 << 24) - 0.5
            return u * Float(1 + i % 7)
        }
        return Tensor(name: "w", dataType: .float, shape: [k, n], role: .matmulB, reductionAxis: 0,
                      storage: .dense(values: TensorBytes(float32: values)))
    }

    static func scaleOf(_ q: Quantization<TensorBytes>, count: Int) throws -> [Float] {
        try ScalarDecoding.floats(q.scales, type: q.scaleType, count: count)
    }

    @Test(arguments: ["int8", "int4:group=16", "int8:group=5", "int4:group=32"], [false, true])
    func errorIsAtMostHalfAScale(spec text: String, asymmetric: Bool) throws {
        let w = Self.weight()
        let spec = try QuantizationSpec.parse(text, asymmetric: asymmetric)
        let q = try Quantizer.quantize(w, spec)
        let quantization = try #require(q.quantization)
        #expect(quantization.codeType == spec.codeType)
        #expect((quantization.zeroPoints != nil) == asymmetric)
        let geometry = try TensorGeometry(shape: w.shape)
        let scales = try Self.scaleOf(quantization, count: geometry.scaleCount(quantization.granularity))
        let indexer = ScaleIndexer(quantization.granularity, geometry: geometry)
        let original = try w.densify(), restored = try q.densify()
        for i in original.indices {
            let scale = scales[indexer.index(i)]
            #expect(abs(original[i] - restored[i]) <= scale / 2 * 1.0001, "element \(i)")
        }
    }

    @Test func scalesRunAlongTheRightAxes() throws {
        let w = Self.weight(k: 64, n: 12)
        let perChannel = try #require(try Quantizer.quantize(w, QuantizationSpec(bits: .int8)).quantization)
        #expect(perChannel.granularity == .perAxis(axis: 1))                   // N: output channels
        let grouped = try #require(try Quantizer.quantize(w, QuantizationSpec(bits: .int4, groupSize: 32)).quantization)
        #expect(grouped.granularity == .perGroup(axis: 0, blockSize: 32))       // along K
        #expect(try TensorGeometry(shape: [64, 12]).scaleShape(grouped.granularity) == [2, 12])

        var gemm = w
        gemm.role = .gemmB
        gemm.reductionAxis = 1                                                  // transB=1: [N, K]
        #expect(try Quantizer.quantize(gemm, QuantizationSpec(bits: .int8)).quantization?.granularity == .perAxis(axis: 0))
        let conv = Tensor(name: "c", dataType: .float, shape: [8, 4, 3, 3], role: .convWeight, reductionAxis: 1,
                          storage: .dense(values: TensorBytes(float32: (0 ..< 288).map { Float($0) - 100 })))
        #expect(try Quantizer.quantize(conv, QuantizationSpec(bits: .int8)).quantization?.granularity == .perAxis(axis: 0))
    }

    @Test func roundsHalfToEvenAndSaturates() {
        #expect(Quantizer.code(2.5, scale: 1, zeroPoint: 0, qmin: -128, qmax: 127) == 2)
        #expect(Quantizer.code(3.5, scale: 1, zeroPoint: 0, qmin: -128, qmax: 127) == 4)
        #expect(Quantizer.code(-2.5, scale: 1, zeroPoint: 0, qmin: -128, qmax: 127) == -2)
        #expect(Quantizer.code(1000, scale: 1, zeroPoint: 0, qmin: -128, qmax: 127) == 127)
        #expect(Quantizer.code(-1000, scale: 1, zeroPoint: 0, qmin: -8, qmax: 7) == -8)
        #expect(Quantizer.code(7, scale: 0, zeroPoint: 3, qmin: 0, qmax: 15) == 3)   // all-zero group
    }

    @Test func zerosStayExactlyZeroSoSparsityIsKept() throws {
        var values = [Float](repeating: 0, count: 64 * 8)
        for i in stride(from: 0, to: values.count, by: 4) { values[i] = Float(i % 13) - 6; values[i + 1] = 0.37 * Float(i % 5) }
        let w = try Tensor(name: "s", dataType: .float, shape: [64, 8], role: .matmulB, reductionAxis: 0,
                           storage: .dense(values: TensorBytes(float32: values))).encoded(as: .csr)
        for asymmetric in [false, true] {
            let q = try Quantizer.quantize(w, QuantizationSpec(bits: .int8, asymmetric: asymmetric))
            #expect(q.storage.kind == .csr)
            let restored = try q.densify()
            #expect(values.indices.filter { values[$0] == 0 }.allSatisfy { restored[$0] == 0 })
        }
    }

    @Test func byDefaultLargeGemmWeightsAndEmbeddingTablesAreQuantized() throws {
        let recipe = Recipe(quantize: "int8")
        #expect(try recipe.plan(for: Self.weight(k: 64, n: 16)).quantize != nil)
        #expect(try recipe.plan(for: Self.weight(k: 8, n: 8)).quantize == nil)   // 64 < 1024 elements
        var bias = Self.weight(k: 64, n: 16)
        bias.role = .unknown
        #expect(try recipe.plan(for: bias).quantize == nil)
        var embedding = bias
        embedding.role = .gatherData
        embedding.reductionAxis = nil
        let quantized = try Converter(recipe: recipe).convert(embedding)
        #expect(quantized.quantization?.granularity == .perAxis(axis: 0))   // one scale per row, as looked up
        var floatEmbeddings = recipe
        floatEmbeddings.quantizeEmbeddings = false
        #expect(try Converter(recipe: floatEmbeddings).convert(embedding).densify() == (try embedding.densify()))
        let ints = Tensor(name: "i", dataType: .int32, shape: [64, 16], role: .matmulB, reductionAxis: 0,
                          storage: .dense(values: TensorBytes([UInt8](repeating: 1, count: 4096))))
        #expect(try recipe.plan(for: ints).quantize == nil)
    }

    @Test func badSpecsAreRefused() throws {
        for text in ["int3", "int8:groups=4", "int4:group=0", "int8:group=x", ""] {
            #expect(throws: ConvertError.self) { try QuantizationSpec.parse(text) }
        }
        #expect((try? QuantizationSpec.parse("int4:group=32")) == QuantizationSpec(bits: .int4, groupSize: 32))
    }
}
