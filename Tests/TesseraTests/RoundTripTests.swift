import Foundation
import Testing
@testable import Tessera

/// write -> read gives back identical tensors and sections, for every layout x value
/// encoding x codec, over random shapes and the edge cases the format must handle.
@Suite struct RoundTripTests {
    static let plainTypes = DataType.allCases
    static let codecs: [Codec] = [.none, .zstd]

    /// Shapes for a layout; 2:4 shapes have a reduction axis whose length is a multiple of 4.
    static func shapes(for layout: LayoutKind, rng: inout SeededRandom) -> [(shape: [Int], axis: Int?)] {
        switch layout {
        case .dense, .csr:
            return [([], nil), ([0], nil), ([1], nil), ([7], 0), ([3, 0, 2], nil), ([1, 1], 1),
                    ([Int.random(in: 1 ... 9, using: &rng), Int.random(in: 1 ... 40, using: &rng)], 0),
                    ([2, 3, Int.random(in: 1 ... 5, using: &rng), 3], 1)]
        case .sparse24:
            return [([0, 4], 1), ([4], 0), ([8, 1], 0), ([Int.random(in: 1 ... 6, using: &rng), 12], 1),
                    ([16, Int.random(in: 1 ... 7, using: &rng)], 0),
                    ([3, 8, 2, Int.random(in: 1 ... 3, using: &rng)], 1)]   // Conv-like [Cout, Cin, kh, kw]
        }
    }

    /// Every tensor of a layout: all plain dtypes, then every quantization variant.
    static func tensors(layout: LayoutKind, seed: UInt64) -> [Tensor] {
        var factory = TensorFactory(seed: seed)
        var rng = SeededRandom(seed: seed ^ 0xABCD)
        var out: [Tensor] = []
        for (s, (shape, axis)) in shapes(for: layout, rng: &rng).enumerated() {
            for type in plainTypes {
                out.append(factory.dense(name: "\(layout)/\(type)/\(s)", type: type, shape: shape,
                                         zeroFraction: [0.0, 0.5, 0.9, 1.0][s % 4], reductionAxis: axis,
                                         sparse24Compatible: layout == .sparse24))
            }
            guard !shape.isEmpty else { continue }
            let lastAxis = shape.count - 1
            let granularities: [QuantizationGranularity] = [.perTensor, .perAxis(axis: 0),
                                                            .perGroup(axis: axis ?? lastAxis, blockSize: 4),
                                                            .perGroup(axis: lastAxis, blockSize: 3)]
            for code in Quantization<TensorBytes>.codeTypes {
                for (g, granularity) in granularities.enumerated() {
                    out.append(factory.quantized(name: "\(layout)/q\(code)/\(s)/\(g)", shape: shape, codeType: code,
                                                 scaleType: g % 2 == 0 ? .float : .float16, granularity: granularity,
                                                 zeroPoints: g >= 2, zeroFraction: 0.6, reductionAxis: axis,
                                                 sparse24Compatible: layout == .sparse24))
                }
            }
        }
        return try! out.map { try $0.encoded(as: layout) }
    }

    @Test(arguments: LayoutKind.allCases, codecs)
    func everyEncodingRoundTrips(layout: LayoutKind, codec: Codec) throws {
        let folder = TemporaryFolder()
        let path = folder.file("model.tess")
        let tensors = Self.tensors(layout: layout, seed: UInt64(layout.rawValue) * 7 + 1)
        let sections = [try Section.metadata(["producer": "tests", "layout": layout.description]),
                        Section(.graph, payload: [1, 2, 3])]
        try TessWriter.write(tensors, sections: sections, to: path, options: WriteOptions(codec: codec))

        let file = try TessFile.open(path)
        #expect(file.tensors.count == tensors.count)
        #expect(file.sections == sections)
        for (i, expected) in tensors.enumerated() {
            let actual = try file.tensor(i)
            #expect(actual == expected, "tensor \(expected.name)")
            #expect(actual.storage.kind == layout)
            // Zero-copy exactly when uncompressed.
            #expect(actual.buffers.allSatisfy { $0.buffer.isZeroCopy == (codec == .none) })
            // Leaving the layout and coming back loses nothing.
            #expect(try actual.encoded(as: .dense).encoded(as: layout) == expected)
            if expected.dataType != .complex64 && expected.dataType != .complex128 {
                #expect(bits(try actual.densify()) == bits(try expected.encoded(as: .dense).densify()))
            }
        }
        #expect(try file.verifyIntegrity() > 0)
    }

    @Test func longNamesAndThousandsOfTensors() throws {
        let folder = TemporaryFolder()
        let path = folder.file("many.tess")
        // 4096 bytes exactly, with multi-byte characters: never truncated.
        let longName = String(repeating: "é", count: 2047) + "xy"
        #expect(longName.utf8.count == Limits.maxNameBytes)
        var tensors = [Tensor(name: longName, dataType: .float, shape: [2], storage: .dense(values: TensorBytes(float32: [1, -0.0])))]
        for i in 0 ..< 3000 {
            tensors.append(Tensor(name: "t\(i)", dataType: .int32, shape: [1], storage: .dense(values: TensorBytes(littleEndian: [Int32(i)]))))
        }
        try TessWriter.write(tensors, to: path)
        let file = try TessFile.open(path)
        #expect(file.tensors.count == 3001)
        #expect(try file.tensor(named: longName) == tensors[0])
        #expect(try file.tensor(named: "t2999").densify() == [2999])
        #expect(bits(try file.tensor(0).densify()) == bits([1, -0.0]))

        let tooLong = Tensor(name: longName + "z", dataType: .float, shape: [], storage: .dense(values: TensorBytes(float32: [1])))
        #expect(throws: TessError.self) { try TessWriter.write([tooLong], to: folder.file("long.tess")) }
    }

    @Test func theDistributionFormCompressesSectionsAsFormat11() throws {
        let graph = [UInt8](repeating: 0x2A, count: 5000)
        let sections = [try Section.metadata(["producer": "test", "notes": String(repeating: "abc", count: 500)]), Section(.graph, payload: graph)]
        let tensors = Self.tensors(layout: .dense, seed: 7)
        let folder = TemporaryFolder()
        var indexLengths: [Int] = []
        for codec in [Codec.none, .zstd] {
            let path = folder.file("sections-\(codec).tess")
            try TessWriter.write(tensors, sections: sections, to: path, options: WriteOptions(codec: codec))
            let file = try TessFile.open(path)
            #expect(file.sections == sections.sorted { $0.kind < $1.kind })
            #expect(file.header.minorVersion == (codec == .none ? 0 : 1))
            #expect(file.header.requiredFeatures == (codec == .none ? 0 : FileHeader.compressedSectionsFeature))
            indexLengths.append(file.header.indexLength)
        }
        #expect(indexLengths[0] - indexLengths[1] > 6000, "the 6.5 KB of sections shrink to a few dozen bytes")
    }

    @Test func emptyModelRoundTrips() throws {
        let folder = TemporaryFolder()
        let path = folder.file("empty.tess")
        try TessWriter.write([], to: path)
        let file = try TessFile.open(path)
        #expect(file.tensors.isEmpty && file.buffers.isEmpty && file.sections.isEmpty)
        #expect(file.fileSize == 64 + 16)
    }

    @Test(arguments: [8, 64, 4096])
    func alignmentIsHonoured(alignment: Int) throws {
        let folder = TemporaryFolder()
        let path = folder.file("a.tess")
        let tensors = Self.tensors(layout: .csr, seed: 3).prefix(40)
        try TessWriter.write(Array(tensors), to: path, options: WriteOptions(alignment: alignment))
        let file = try TessFile.open(path)
        #expect(file.header.alignment == alignment)
        #expect(file.buffers.allSatisfy { $0.offset % alignment == 0 })
        #expect(file.header.indexOffset % alignment == 0)
        for i in file.tensors.indices { #expect(try file.tensor(i) == tensors[tensors.startIndex + i]) }
    }
}
