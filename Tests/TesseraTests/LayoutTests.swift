import Testing
@testable import Tessera

/// Small tensors whose encodings are worked out by hand from the spec's rules.
@Suite struct LayoutTests {
    @Test func csrKeepsNegativeZeroAndEmptyRows() throws {
        // [[0, 1.5, 0], [0, 0, 0], [2, 0, -0.0]]
        let dense = Tensor(name: "w", dataType: .float, shape: [3, 3],
                           storage: .dense(values: TensorBytes(float32: [0, 1.5, 0, 0, 0, 0, 2, 0, -0.0])))
        let csr = try dense.encoded(as: .csr)
        #expect(csr.storage == .csr(rowPointerType: .uint8, rowPointers: [0, 1, 1, 3],
                                    columnIndexType: .uint8, columnIndices: [1, 0, 2],
                                    nonZeroCount: 3, values: TensorBytes(float32: [1.5, 2, -0.0])))
        #expect(bits(try csr.densify()) == bits([0, 1.5, 0, 0, 0, 0, 2, 0, -0.0]))
        #expect(try csr.sparsity() == 6.0 / 9.0)
    }

    @Test func csrPicksTheNarrowestIndexTypes() throws {
        let columns = 300, rows = 300   // columns need u16; 300 non-zeros need u16 row pointers
        var values = [Float](repeating: 0, count: rows * columns)
        for r in 0 ..< rows { values[r * columns + (r * 7) % columns] = Float(r + 1) }
        let csr = try Tensor(name: "w", dataType: .float, shape: [rows, columns],
                             storage: .dense(values: TensorBytes(float32: values))).encoded(as: .csr)
        guard case .csr(let rpt, _, let cit, _, let nnz, _) = csr.storage else { Issue.record("not CSR"); return }
        #expect(rpt == .uint16 && cit == .uint16 && nnz == rows)
        #expect(try csr.densify() == values)
    }

    @Test func sparse24GroupsRunAlongTheReductionAxis() throws {
        // MatMul B [K=4, N=2], reduction axis 0: column n is one row of the 2:4 view.
        // Column 0 = [1, 0, 2, 0] keeps (0, 2) -> nibble 0b1000; column 1 = [0, 5, 6, 0] keeps (1, 2) -> 0b1001.
        let w = Tensor(name: "w", dataType: .float, shape: [4, 2], role: .matmulB, reductionAxis: 0,
                       storage: .dense(values: TensorBytes(float32: [1, 0, 0, 5, 2, 6, 0, 0])))
        let s = try w.encoded(as: .sparse24)
        #expect(s.storage == .sparse24(values: TensorBytes(float32: [1, 2, 5, 6]), metadata: [0x98]))
        #expect(try s.densify() == [1, 0, 0, 5, 2, 6, 0, 0])

        // The same values along axis 1 break 2:4? Rows [1,0] are only 2 long: rejected, not guessed.
        var wrongAxis = w
        wrongAxis.reductionAxis = 1
        #expect(throws: TessError.self) { try wrongAxis.encoded(as: .sparse24) }
    }

    @Test func sparse24CanonicalPairsForSparseGroups() throws {
        // Groups [0,0,0,7] -> (0,3) = 0xC; [0,0,0,0] -> (0,1) = 0x4; [0,3,0,0] -> (0,1) = 0x4.
        let w = Tensor(name: "w", dataType: .float, shape: [1, 12], reductionAxis: 1,
                       storage: .dense(values: TensorBytes(float32: [0, 0, 0, 7, 0, 0, 0, 0, 0, 3, 0, 0])))
        let s = try w.encoded(as: .sparse24)
        #expect(s.storage == .sparse24(values: TensorBytes(float32: [0, 7, 0, 0, 0, 3]), metadata: [0x4C, 0x04]))
    }

    @Test func sparse24ConvWeightGroupsRunAlongInputChannels() throws {
        // Conv W [Cout=1, Cin=4, kh=1, kw=2]: groups are the 4 input channels at each kernel position.
        // Logical order is (cin, kw): position kw=0 -> [a0,a1,a2,a3] = [1,0,0,2], kw=1 -> [0,3,4,0].
        let values: [Float] = [1, 0, /* cin 1 */ 0, 3, /* cin 2 */ 0, 4, /* cin 3 */ 2, 0]
        let w = Tensor(name: "conv", dataType: .float, shape: [1, 4, 1, 2], role: .convWeight, reductionAxis: 1,
                       storage: .dense(values: TensorBytes(float32: values)))
        let s = try w.encoded(as: .sparse24)
        // kw=0 keeps (0,3) -> 0xC with [1,2]; kw=1 keeps (1,2) -> 0x9 with [3,4].
        #expect(s.storage == .sparse24(values: TensorBytes(float32: [1, 2, 3, 4]), metadata: [0x9C]))
        #expect(try s.densify() == values)
    }

    @Test func moreThanTwoNonZerosIsNot24() throws {
        let w = Tensor(name: "w", dataType: .float, shape: [4], reductionAxis: 0,
                       storage: .dense(values: TensorBytes(float32: [1, 2, 3, 0])))
        #expect { try w.encoded(as: .sparse24) } throws: { ($0 as? TessError)?.code == .sparse24Metadata }
    }

    @Test func dequantizePerAxisPerGroupAndZeroPoints() throws {
        // int8 per-axis(0): scales [0.5, 2]; codes [[2,-4],[1,3]] -> [[1,-2],[2,6]].
        let perAxis = Tensor(name: "a", dataType: .float, shape: [2, 2],
                             storage: .dense(values: TensorBytes(littleEndian: [Int8(2), -4, 1, 3])),
                             quantization: Quantization(codeType: .int8, granularity: .perAxis(axis: 0),
                                                        scales: TensorBytes(float32: [0.5, 2])))
        #expect(try perAxis.densify() == [1, -2, 2, 6])

        // uint4 per-tensor, scale 0.25, zero point 8; codes [8, 12, 0] packed low nibble first.
        let uint4 = Tensor(name: "b", dataType: .float, shape: [3], storage: .dense(values: [0xC8, 0x00]),
                           quantization: Quantization(codeType: .uint4, granularity: .perTensor,
                                                      scales: TensorBytes(float32: [0.25]), zeroPoints: [0x08]))
        #expect(try uint4.densify() == [0, 1, -2])

        // int4 codes [-1, 7, -8] = nibbles F, 7, 8.
        let int4 = Tensor(name: "c", dataType: .float, shape: [3], storage: .dense(values: [0x7F, 0x08]),
                          quantization: Quantization(codeType: .int4, granularity: .perTensor, scales: TensorBytes(float32: [1])))
        #expect(try int4.densify() == [-1, 7, -8])

        // Per-group along axis 1, block 2, 5 columns -> 3 scales (the last block is short).
        let grouped = Tensor(name: "d", dataType: .float, shape: [1, 5],
                             storage: .dense(values: TensorBytes(littleEndian: [Int8(1), 2, 3, 4, 5])),
                             quantization: Quantization(codeType: .int8, granularity: .perGroup(axis: 1, blockSize: 2),
                                                        scales: TensorBytes(float32: [1, 10, 100])))
        #expect(try grouped.densify() == [1, 2, 30, 40, 500])
        #expect(try TensorGeometry(shape: [6, 5]).scaleShape(QuantizationGranularity.perGroup(axis: 1, blockSize: 2)) == [6, 3])

        // f16 scales: 0x3800 = 0.5.
        let half = Tensor(name: "e", dataType: .float16, shape: [2], storage: .dense(values: TensorBytes(littleEndian: [Int8(3), -3])),
                          quantization: Quantization(codeType: .int8, scaleType: .float16, granularity: .perTensor,
                                                     scales: TensorBytes(littleEndian: [UInt16(0x3800)])))
        #expect(try half.densify() == [1.5, -1.5])
    }

    @Test func quantizedSparseDropsCodesEqualToTheZeroPoint() throws {
        // uint8 with zero point 10: codes equal to 10 are real zeros and are not stored.
        let t = Tensor(name: "q", dataType: .float, shape: [1, 4], reductionAxis: 1,
                       storage: .dense(values: [10, 12, 10, 7]),
                       quantization: Quantization(codeType: .uint8, granularity: .perTensor,
                                                  scales: TensorBytes(float32: [0.5]), zeroPoints: [10]))
        let csr = try t.encoded(as: .csr)
        guard case .csr(_, _, _, let columns, let nnz, let values) = csr.storage else { Issue.record("not CSR"); return }
        #expect(nnz == 2 && columns == [1, 3] && values == [12, 7])
        #expect(try csr.densify() == [0, 1, 0, -1.5])
        #expect(try t.encoded(as: .sparse24).densify() == [0, 1, 0, -1.5])
        #expect(try csr.encoded(as: .dense) == t)
    }

    @Test func scalarDecodingOfEveryFloatFormat() throws {
        func one(_ bytes: [UInt8], _ type: DataType) throws -> Float {
            try ScalarDecoding.floats(TensorBytes(bytes), type: type, count: 1)[0]
        }
        #expect(try one([0x00, 0x3C], .float16) == 1)
        #expect(try one([0x80, 0x3F], .bfloat16) == 1)
        #expect(try one([0, 0, 0, 0, 0, 0, 0xF0, 0x3F], .double) == 1)
        #expect(try one([0x7E], .float8e4m3fn) == 448)
        #expect(try one([0x01], .float8e4m3fn) == 1.0 / 512)
        #expect(try one([0x7F], .float8e4m3fn).isNaN)
        #expect(try one([0xB8], .float8e4m3fn) == -1)
        #expect(try one([0x7F], .float8e4m3fnuz) == 240)
        #expect(try one([0x80], .float8e4m3fnuz).isNaN)
        #expect(try one([0x7B], .float8e5m2) == 57344)
        #expect(try one([0x7C], .float8e5m2) == .infinity)
        #expect(try one([0x7F], .float8e5m2fnuz) == 57344)
        #expect(try one([0x07], .float4e2m1) == 6)
        #expect(try one([0x0F], .float4e2m1) == -6)
        #expect(try one([0x0E], .int4) == -2)
        #expect(try one([0xFF, 0xFF], .int16) == -1)
        #expect(try one([0x02], .bool) == 1)
        #expect(throws: TessError.self) { try one([0, 0, 0, 0, 0, 0, 0, 0], .complex64) }
    }

    @Test func checksumMatchesPublishedXXH3Vectors() {
        // XXH3_64bits with seed 0: the empty input and the 'a' test vector of xxHash's sanity tests.
        #expect(Checksum.xxh3([UInt8]()) == 0x2D06_8005_38D3_94C2)
        #expect(Checksum.hex(Checksum.xxh3([UInt8]())) == "2d06800538d394c2")
        let stream = StreamingChecksum()
        let data = [UInt8](repeating: 7, count: 1000)
        data.withUnsafeBytes { stream.update(UnsafeRawBufferPointer(rebasing: $0[0 ..< 300])); stream.update(UnsafeRawBufferPointer(rebasing: $0[300...])) }
        #expect(stream.value == Checksum.xxh3(data))
    }
}
