import Foundation
import Testing
@testable import Tessera

@Suite struct RobustnessTests {
    static func sampleTensors() -> [Tensor] {
        Array(RoundTripTests.tensors(layout: .csr, seed: 11).prefix(6)) +
            Array(RoundTripTests.tensors(layout: .sparse24, seed: 12).suffix(3))
    }

    static func loadEverything(_ path: String) throws {
        let file = try TessFile.open(path)
        for i in file.tensors.indices { _ = try file.tensor(i) }
    }

    /// The bytes of a small file with every layout, written with `codec`.
    static func sampleFile(_ codec: Codec, in folder: TemporaryFolder) throws -> [UInt8] {
        let path = folder.file("whole.tess")
        try TessWriter.write(sampleTensors(), sections: [try Section.metadata(["k": "v"])], to: path,
                             options: WriteOptions(alignment: 16, codec: codec))
        return readBytes(path)
    }

    @Test(arguments: [Codec.none, .zstd])
    func truncatingAtEveryByteIsAnError(codec: Codec) throws {
        let folder = TemporaryFolder()
        let bytes = try Self.sampleFile(codec, in: folder)
        let cut = folder.file("cut.tess")
        for length in 0 ..< bytes.count {
            writeBytes(Array(bytes.prefix(length)), cut)
            #expect(throws: TessError.self, "prefix of \(length) bytes") { try Self.loadEverything(cut) }
        }
    }

    @Test(arguments: [Codec.none, .zstd])
    func changingAnyByteIsDetected(codec: Codec) throws {
        // Header, index and buffers are checksummed and padding must be zero: no byte is free.
        let folder = TemporaryFolder()
        let bytes = try Self.sampleFile(codec, in: folder)
        let bad = folder.file("bad.tess")
        for position in 0 ..< bytes.count {
            var copy = bytes
            copy[position] ^= 0x20
            writeBytes(copy, bad)
            #expect(throws: TessError.self, "byte \(position)") { try Self.loadEverything(bad) }
        }
    }

    @Test func writingIsDeterministic() throws {
        let folder = TemporaryFolder()
        let tensors = Self.sampleTensors()
        for codec in [Codec.none, .zstd] {
            let a = folder.file("a-\(codec).tess"), b = folder.file("b-\(codec).tess")
            try TessWriter.write(tensors, sections: [try Section.metadata(["z": 1, "a": [1, 2]])], to: a, options: WriteOptions(codec: codec))
            try TessWriter.write(tensors, sections: [try Section.metadata(["a": [1, 2], "z": 1])], to: b, options: WriteOptions(codec: codec))
            #expect(readBytes(a) == readBytes(b))
        }
    }

    @Test func packThenUnpackRestoresTheOriginalBytes() throws {
        let folder = TemporaryFolder()
        let original = folder.file("original.tess"), packed = folder.file("packed.tess"), unpacked = folder.file("unpacked.tess")
        try TessWriter.write(Self.sampleTensors(), sections: [Section(.graph, payload: [9, 9]), Section(kind: 40, payload: [1])],
                             to: original, options: WriteOptions(alignment: 128))
        try TessFile.open(original).rewrite(to: packed, options: WriteOptions(alignment: 128, codec: .zstd, zstdLevel: 5))
        let packedFile = try TessFile.open(packed)
        #expect(packedFile.buffers.allSatisfy { $0.codec != .none })
        #expect(packedFile.buffers.contains { $0.codec == .zstdShuffled && $0.codecParameter == 4 })
        #expect(packedFile.sections.count == 2, "unknown optional sections are carried through")
        try packedFile.rewrite(to: unpacked, options: WriteOptions(alignment: 128))
        #expect(readBytes(unpacked) == readBytes(original))
    }

    @Test func floatValuesAreShuffledIntoBytePlanesAndShrink() throws {
        let folder = TemporaryFolder()
        var rng = SeededRandom(seed: 5)
        // Normally distributed weights, like a trained layer's.
        let values = (0 ..< 65_536).map { _ -> Float in
            let u1 = Float.random(in: 1e-7 ..< 1, using: &rng), u2 = Float.random(in: 0 ..< 1, using: &rng)
            return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2) * 0.05
        }
        let w = Tensor(name: "w", dataType: .float, shape: [256, 256], storage: .dense(values: TensorBytes(float32: values)))
        let half = Tensor(name: "h", dataType: .float16, shape: [3], storage: .dense(values: TensorBytes(littleEndian: [UInt16(1), 2, 3])))
        let shuffled = folder.file("s.tess"), plain = folder.file("p.tess")
        try TessWriter.write([w, half], to: shuffled, options: WriteOptions(codec: .zstd))
        try TessWriter.write([w, half], to: plain, options: WriteOptions(codec: .zstd, byteShuffle: false))
        let file = try TessFile.open(shuffled)
        #expect(file.buffers.map(\.codec) == [.zstdShuffled, .zstdShuffled])
        #expect(file.buffers.map(\.codecParameter) == [4, 2])
        #expect(try file.tensor(0) == w && file.tensor(1) == half)
        #expect(try TessFile.open(plain).buffers.allSatisfy { $0.codec == .zstd })
        #expect(Double(readBytes(shuffled).count) < 0.95 * Double(readBytes(plain).count))
    }

    @Test func emptyBuffersWithoutABaseAddressAreWritten() throws {
        // A zero-length view (as a parsed model's empty raw_data is) has no base address.
        final class Owner: Sendable {}
        let empty = TensorBytes(unsafeBorrowing: UnsafeRawBufferPointer(start: nil, count: 0), owner: Owner())
        let t = Tensor(name: "e", dataType: .float, shape: [0, 4], storage: .dense(values: empty))
        let folder = TemporaryFolder()
        for codec in [Codec.none, .zstd] {
            try TessWriter.write([t], to: folder.file("e-\(codec).tess"), options: WriteOptions(codec: codec))
            #expect(try TessFile.open(folder.file("e-\(codec).tess")).tensor(0) == t)
        }
    }

    @Test func aFailedWriteLeavesNothingBehind() throws {
        let folder = TemporaryFolder()
        let path = folder.file("out.tess")
        let writer = try TessWriter(path: path)
        try writer.append(Self.sampleTensors()[0])
        let bad = Tensor(name: "bad", dataType: .float, shape: [3], storage: .dense(values: [1, 2]))
        #expect { try writer.append(bad) } throws: { ($0 as? TessError)?.code == .bufferSize }
        #expect(folder.contents.isEmpty, "no temporary file and no output after an error")
        #expect(throws: TessError.self) { try writer.finish() }
    }

    @Test func aFileBeingWrittenHasNoNameAndAnAbandonedOneLeavesNothing() throws {
        let folder = TemporaryFolder()
        do {
            let writer = try TessWriter(path: folder.file("out.tess"))
            try writer.append(Self.sampleTensors()[0])
            #expect(folder.contents.isEmpty, "an unnamed (O_TMPFILE) file: nothing for a kill to leave behind")
        }
        #expect(folder.contents.isEmpty)
    }

    @Test func anExistingFileIsKeptUntilTheNewOneIsComplete() throws {
        let folder = TemporaryFolder()
        let path = folder.file("model.tess")
        try TessWriter.write([Self.sampleTensors()[0]], to: path)
        let before = readBytes(path)
        #expect { try TessWriter(path: path) } throws: { ($0 as? TessError)?.code == .io }

        let writer = try TessWriter(path: path, options: WriteOptions(replaceExisting: true))
        try writer.append(Self.sampleTensors()[1])
        #expect(readBytes(path) == before, "the old file stays whole while the new one is written")
        try writer.finish()
        #expect(try TessFile.open(path).tensors.map(\.name) == [Self.sampleTensors()[1].name])
        #expect(folder.contents == ["model.tess"])
    }

    @Test func impossibleWriterOptionsAreRefused() {
        let folder = TemporaryFolder()
        for options in [WriteOptions(alignment: 48), WriteOptions(alignment: 8192), WriteOptions(codec: .zstd, zstdLevel: 30)] {
            #expect { try TessWriter(path: folder.file("x.tess"), options: options) } throws: { ($0 as? TessError)?.code == .invalidArgument }
        }
        #expect(throws: TessError.self) { try TessWriter(path: "/nonexistent-folder/x.tess") }
        #expect(folder.contents.isEmpty)
    }

    @Test func duplicateNamesAndBadSectionsAreRefusedByTheWriter() throws {
        let folder = TemporaryFolder()
        let t = Self.sampleTensors()[0]
        #expect { try TessWriter.write([t, t], to: folder.file("d.tess")) } throws: { ($0 as? TessError)?.code == .badName }
        #expect { try TessWriter.write([t], sections: [Section(.metadata, payload: Array("nope".utf8))], to: folder.file("m.tess")) }
            throws: { ($0 as? TessError)?.code == .badMetadata }
        #expect(folder.contents.isEmpty)
    }

    @Test func uncompressedTensorsAreZeroCopy() throws {
        let folder = TemporaryFolder()
        let path = folder.file("big.tess")
        let big = Tensor(name: "big", dataType: .uint8, shape: [1 << 20], storage: .dense(values: TensorBytes([UInt8](repeating: 3, count: 1 << 20))))
        try TessWriter.write([big], to: path)
        let file = try TessFile.open(path)
        let loaded = try file.tensor(0)
        guard case .dense(let values) = loaded.storage else { Issue.record("not dense"); return }
        #expect(values.isZeroCopy)
        values.withUnsafeBytes { view in
            file.storedBytes(ofBuffer: 0).withUnsafeBytes { #expect(view.baseAddress == $0.baseAddress) }
        }
    }

    @Test func concurrentReadersAgree() throws {
        let folder = TemporaryFolder()
        let path = folder.file("shared.tess")
        let tensors = Self.sampleTensors()
        try TessWriter.write(tensors, to: path, options: WriteOptions(codec: .zstd))
        let file = try TessFile.open(path)
        let failures = ConcurrentCounter()
        let expected = try tensors.map { try $0.densify() }
        DispatchQueue.concurrentPerform(iterations: 16) { i in
            // Every thread decodes, checks and densifies every tensor, starting at a different one.
            for k in 0 ..< tensors.count {
                let t = (i + k) % tensors.count
                guard let loaded = try? file.tensor(t), loaded == tensors[t],
                      let values = try? loaded.densify(), bits(values) == bits(expected[t]) else {
                    failures.increment()
                    continue
                }
            }
        }
        #expect(failures.value == 0)
    }
}

final class ConcurrentCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func increment() { lock.lock(); count += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return count }
}
