import Foundation
import Testing
import Tessera

/// `tessera verify --source` and `tessera bench` on the committed digits model.
@Suite struct VerifyTests {
    static let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("fixtures/onnx/digits_mlp.onnx").path

    func convert(_ ws: Workspace, _ name: String, _ options: String...) throws -> String {
        let out = ws.file(name)
        let r = try tessera(["convert", Self.source, "-o", out, "--compress", "none"] + options)
        try #require(r.status == 0, "\(r.stderr)")
        return out
    }

    /// Rewrites `path` with `change` applied to the tensor named `name` (checksums recomputed,
    /// so only a comparison with the source can notice).
    func rewrite(_ path: String, to out: String, tensor name: String, _ change: (inout [UInt8]) -> Void,
                 buffer: (Tensor) -> TensorBytes) throws {
        let file = try TessFile.open(path)
        var tensors: [Tensor] = []
        for i in file.tensors.indices {
            var t = try file.tensor(i)
            if t.name == name {
                let target = buffer(t)
                t = t.mapBuffers { _, b in
                    guard b == target else { return b }
                    var bytes = b.array
                    change(&bytes)
                    return TensorBytes(bytes)
                }
            }
            tensors.append(t)
        }
        try TessWriter.write(tensors, sections: file.sections, to: out)
    }

    @Test func losslessFileMatchesItsSourceAtEveryLevel() throws {
        let ws = Workspace()
        let file = try convert(ws, "d.tess")
        let r = try tessera("verify", file, "--source", Self.source, "--max-rel-error", "0", "--min-cosine", "1")
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("8 tensors compared, 3 GEMM weights run through their kernels"))
        #expect(r.stdout.contains("verdict: OK"))
        let json = try tessera("verify", file, "--source", Self.source, "--json")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect(object["passed"] as? Bool == true)
    }

    @Test func thresholdsTurnConversionErrorIntoTheExitStatus() throws {
        let ws = Workspace()
        let file = try convert(ws, "q.tess", "--prune", "2:4", "--quantize", "int8")
        let loose = try tessera("verify", file, "--source", Self.source, "--min-cosine", "0.5")
        #expect(loose.status == 0, "\(loose.stderr)")
        let strict = try tessera("verify", file, "--source", Self.source, "--min-cosine", "0.99")
        #expect(strict.status == 1)
        #expect(strict.stdout.contains("FAIL: tensor 'coefficient': kernel output cosine"))
        #expect(strict.stderr.contains("problem(s) against"))
    }

    @Test func flippedMetadataNibbleIsCaught() throws {
        let ws = Workspace()
        let file = try convert(ws, "s.tess", "--prune", "2:4")
        // In place: the checksum no longer matches.
        let tess = try TessFile.open(file)
        let entry = try #require(tess.tensors.first { $0.name == "coefficient" })
        guard case .sparse24(_, let metadataBuffer) = entry.storage else { Issue.record("not 2:4"); return }
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
        bytes[tess.buffers[metadataBuffer].offset + 3] ^= 0x05   // positions (1,3) <-> (0,2) style flip
        let flipped = ws.file("flipped.tess")
        try Data(bytes).write(to: URL(fileURLWithPath: flipped))
        let r = try tessera("verify", flipped)
        #expect(r.status == 1)
        #expect(r.stderr.contains("coefficient") && r.stderr.contains("checksum"), "\(r.stderr)")

        // Re-checksummed: the values now sit at other positions than in the source.
        let rewritten = ws.file("rewritten.tess")
        try rewrite(file, to: rewritten, tensor: "coefficient", { $0[3] = ($0[3] & 0xF0) | ($0[3] & 0x0F == 0x9 ? 0x6 : 0x9) }) { t in
            guard case .sparse24(_, let metadata) = t.storage else { preconditionFailure() }
            return metadata
        }
        #expect(try tessera("verify", rewritten).status == 0)
        let r2 = try tessera("verify", rewritten, "--source", Self.source)
        #expect(r2.status == 1)
        #expect(r2.stdout.contains("FAIL: tensor 'coefficient': element"), "\(r2.stdout)")
    }

    @Test func changedScaleIsCaught() throws {
        let ws = Workspace()
        let file = try convert(ws, "q.tess", "--quantize", "int8")
        #expect(try tessera("verify", file, "--source", Self.source, "--max-rel-error", "0.02").status == 0)
        let changed = ws.file("changed.tess")
        try rewrite(file, to: changed, tensor: "coefficient1", { bytes in
            // Double the first scale (float32, little-endian): one output channel is now twice too large.
            let doubled = (Float(bitPattern: UInt32(bytes[0]) | UInt32(bytes[1]) << 8 | UInt32(bytes[2]) << 16 | UInt32(bytes[3]) << 24) * 2).bitPattern
            for i in 0 ..< 4 { bytes[i] = UInt8(truncatingIfNeeded: doubled >> (8 * UInt32(i))) }
        }) { $0.quantization!.scales }
        let r = try tessera("verify", changed, "--source", Self.source, "--max-rel-error", "0.02")
        #expect(r.status == 1)
        #expect(r.stdout.contains("FAIL: tensor 'coefficient1': tensor relative error"), "\(r.stdout)")
        #expect(r.stdout.contains("FAIL: tensor 'coefficient1': kernel output relative error"), "\(r.stdout)")
    }

    @Test func truncatedBufferIsCaught() throws {
        let ws = Workspace()
        let file = try convert(ws, "d.tess")
        let tess = try TessFile.open(file)
        let cut = tess.buffers[0].offset + tess.buffers[0].storedLength / 2
        let truncated = ws.file("truncated.tess")
        try Data(try Data(contentsOf: URL(fileURLWithPath: file)).prefix(cut)).write(to: URL(fileURLWithPath: truncated))
        let r = try tessera("verify", truncated, "--source", Self.source)
        #expect(r.status == 1)
        #expect(r.stderr.contains("truncated.tess"), "\(r.stderr)")
        #expect(r.stdout.isEmpty)
    }

    @Test func benchTimesEveryGEMMWeight() throws {
        let ws = Workspace()
        let file = try convert(ws, "s.tess", "--prune", "2:4")
        let r = try tessera("bench", file, "--batch", "4", "--budget", "0.01")
        #expect(r.status == 0, "\(r.stderr)")
        for name in ["coefficient ", "coefficient1 ", "coefficient2 "] { #expect(r.stdout.contains(name)) }
        #expect(r.stdout.contains("sparse24"))
        #expect(try tessera("bench", file, "--batch", "0").status != 0)
        // Float 2:4 weights have no integer path; int8 ones are timed with uint8 activations too.
        #expect(r.stdout.split(separator: "\n").filter { $0.contains("sparse24") }.allSatisfy { $0.hasSuffix(" -") }, "\(r.stdout)")
        let int8 = try convert(ws, "q.tess", "--prune", "2:4", "--quantize", "int8")
        let q = try tessera("bench", int8, "--batch", "4", "--budget", "0.01")
        #expect(q.status == 0, "\(q.stderr)")
        // Every int8 weight (2:4 or dense), at every batch size.
        let int8Rows = q.stdout.split(separator: "\n").filter { $0.contains(" int8 ") }
        #expect(int8Rows.count >= 4 && int8Rows.allSatisfy { Double($0.split(separator: " ").last!) != nil }, "\(q.stdout)")
    }
}
