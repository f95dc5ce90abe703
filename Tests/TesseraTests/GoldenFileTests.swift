import Foundation
import Testing
@testable import Tessera

/// A committed v1 file: today's reader must read it and today's writer must reproduce it byte
/// for byte. Regenerate (and review the diff) with fixtures/regenerate.sh.
@Suite struct GoldenFileTests {
    static let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../fixtures/golden/tiny.tess").standardized.path

    /// MatMul B [K=4, N=2] pruned 2:4 along K, and an int8 per-axis bias: the file dumped in
    /// spec/FORMAT.md.
    static func tensors() throws -> [Tensor] {
        let weight = Tensor(name: "fc.weight", dataType: .float, shape: [4, 2], role: .matmulB, reductionAxis: 0,
                            storage: .dense(values: TensorBytes(float32: [1, 0, 0, 5, 2, 6, 0, 0])))
        let bias = Tensor(name: "fc.bias", dataType: .float, shape: [2], storage: .dense(values: TensorBytes(littleEndian: [Int8(-128), 127])),
                          quantization: Quantization(codeType: .int8, granularity: .perAxis(axis: 0), scales: TensorBytes(float32: [0.25, 0.5])))
        return [try weight.encoded(as: .sparse24), bias]
    }

    static let sections = [Section(.metadata, payload: Array(#"{"producer":"tessera"}"#.utf8))]
    static let options = WriteOptions(alignment: 16, replaceExisting: true)

    @Test func theCommittedFileStillReadsAndIsReproducedExactly() throws {
        if ProcessInfo.processInfo.environment["TESSERA_REGENERATE_FIXTURES"] == "1" {
            try TessWriter.write(try Self.tensors(), sections: Self.sections, to: Self.path, options: Self.options)
        }
        let file = try TessFile.open(Self.path)
        #expect(try file.tensors.indices.map { try file.tensor($0) } == (try Self.tensors()))
        #expect(try file.tensor(named: "fc.weight").densify() == [1, 0, 0, 5, 2, 6, 0, 0])
        #expect(try file.tensor(named: "fc.bias").densify() == [-32, 63.5])
        #expect(file.metadataJSON == Self.sections[0].payload)

        let folder = TemporaryFolder()
        try TessWriter.write(try Self.tensors(), sections: Self.sections, to: folder.file("again.tess"), options: Self.options)
        #expect(readBytes(folder.file("again.tess")) == readBytes(Self.path))
    }
}
