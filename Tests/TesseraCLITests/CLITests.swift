import Foundation
import Testing
import Tessera

/// The result of running the `tessera` binary.
struct RunResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Run the `tessera` binary built next to this test bundle.
func tessera(_ arguments: String...) throws -> RunResult { try tessera(arguments) }

func tessera(_ arguments: [String]) throws -> RunResult {
    let products = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    let process = Process()
    process.executableURL = products.appendingPathComponent("tessera")
    process.arguments = arguments
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return RunResult(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                     stderr: String(decoding: stderr, as: UTF8.self))
}

final class Workspace: Sendable {
    let path: String
    init() {
        path = NSTemporaryDirectory() + "tessera-cli-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func file(_ name: String) -> String { path + "/" + name }
    var contents: Set<String> { Set((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []) }
    func bytes(_ name: String) -> Data { FileManager.default.contents(atPath: file(name)) ?? Data() }

    /// A model with one tensor of each layout, one quantized.
    func model(_ name: String = "model.tess") throws -> String {
        let dense = Tensor(name: "w.dense", dataType: .float, shape: [2, 4],
                           storage: .dense(values: TensorBytes(float32: [1, 0, 0, 2, 0, 3, 4, 0])))
        var sparse = dense
        sparse.name = "w.sparse24"
        sparse.reductionAxis = 1
        let q = Tensor(name: "w.int8", dataType: .float, shape: [3], storage: .dense(values: [1, 0, 255]),
                       quantization: Quantization(codeType: .int8, granularity: .perTensor, scales: TensorBytes(float32: [0.5])))
        var csr = dense
        csr.name = "w.csr"
        try TessWriter.write([dense, try sparse.encoded(as: .sparse24), try csr.encoded(as: .csr), q],
                             sections: [try Section.metadata(["producer": "cli-tests"])], to: file(name))
        return file(name)
    }
}

@Suite struct CLITests {
    @Test func inspectPrintsATableWithTotals() throws {
        let ws = Workspace()
        let r = try tessera("inspect", try ws.model())
        #expect(r.status == 0)
        for expected in ["w.dense", "w.sparse24", "sparse24", "w.csr", "csr", "int8 per-tensor f32", "50.0%", "total (4 tensors)", "Tessera v1.0"] {
            #expect(r.stdout.contains(expected), "missing \(expected)")
        }
    }

    @Test func inspectJSONIsMachineReadable() throws {
        let ws = Workspace()
        let r = try tessera("inspect", "--json", try ws.model())
        #expect(r.status == 0)
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let tensors = try #require(doc["tensors"] as? [[String: Any]])
        #expect(tensors.map { $0["name"] as? String } == ["w.dense", "w.sparse24", "w.csr", "w.int8"])
        #expect(tensors[1]["layout"] as? String == "sparse24")
        #expect(tensors[1]["reduction_axis"] as? Int == 1)
        #expect(tensors[3]["quantization"] as? String == "int8 per-tensor f32")
        #expect((doc["metadata"] as? [String: Any])?["producer"] as? String == "cli-tests")
        #expect(doc["version"] as? String == "1.0")
    }

    @Test func packAndUnpackAreLossless() throws {
        let ws = Workspace()
        let model = try ws.model()
        #expect(try tessera("pack", model, "-o", ws.file("packed.tess"), "--level", "9").status == 0)
        let packed = try TessFile.open(ws.file("packed.tess"))
        #expect(packed.buffers.allSatisfy { $0.codec != .none })
        #expect(try tessera("verify", ws.file("packed.tess")).status == 0)
        #expect(try tessera("unpack", ws.file("packed.tess"), "-o", ws.file("unpacked.tess")).status == 0)
        #expect(ws.bytes("unpacked.tess") == ws.bytes("model.tess"))
    }

    @Test func verifyReportsIntegrity() throws {
        let ws = Workspace()
        let r = try tessera("verify", try ws.model())
        #expect(r.status == 0)
        #expect(r.stdout.contains("integrity OK: 4 tensors"))
    }

    /// One line on stderr that names the file, exit status 1, and nothing written.
    func expectUserError(_ r: RunResult, mentioning: String, _ ws: Workspace, leaves files: Set<String>,
                         sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(r.status == 1, sourceLocation: sourceLocation)
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].hasPrefix("tessera: error: "), "stderr: \(r.stderr)", sourceLocation: sourceLocation)
        #expect(r.stderr.contains(mentioning), "stderr: \(r.stderr)", sourceLocation: sourceLocation)
        #expect(ws.contents == files, "no partial output", sourceLocation: sourceLocation)
    }

    @Test func userErrorsAreOneClearLine() throws {
        let ws = Workspace()
        let missing = ws.file("missing.tess")
        for command in ["inspect", "verify"] {
            expectUserError(try tessera(command, missing), mentioning: "missing.tess: cannot open", ws, leaves: [])
        }
        expectUserError(try tessera("pack", missing, "-o", ws.file("out.tess")), mentioning: "missing.tess", ws, leaves: [])

        try #require(FileManager.default.createFile(atPath: ws.file("notes.txt"), contents: Data("hello".utf8)))
        expectUserError(try tessera("inspect", ws.file("notes.txt")), mentioning: "not a .tess file", ws, leaves: ["notes.txt"])

        _ = try ws.model()
        var corrupt = ws.bytes("model.tess")
        corrupt[100] ^= 0xFF
        try #require(FileManager.default.createFile(atPath: ws.file("corrupt.tess"), contents: corrupt))
        let files: Set = ["notes.txt", "model.tess", "corrupt.tess"]
        expectUserError(try tessera("verify", ws.file("corrupt.tess")), mentioning: "corrupt", ws, leaves: files)
        expectUserError(try tessera("unpack", ws.file("corrupt.tess"), "-o", ws.file("x.tess")), mentioning: "corrupt.tess", ws, leaves: files)

        let truncated = ws.bytes("model.tess").prefix(300)
        try #require(FileManager.default.createFile(atPath: ws.file("short.tess"), contents: Data(truncated)))
        expectUserError(try tessera("inspect", ws.file("short.tess")), mentioning: "truncated", ws, leaves: files.union(["short.tess"]))
    }

    @Test func anExistingOutputNeedsForce() throws {
        let ws = Workspace()
        let model = try ws.model()
        try #require(FileManager.default.createFile(atPath: ws.file("out.tess"), contents: Data("keep me".utf8)))
        expectUserError(try tessera("pack", model, "-o", ws.file("out.tess")), mentioning: "--force", ws, leaves: ["model.tess", "out.tess"])
        #expect(ws.bytes("out.tess") == Data("keep me".utf8))
        #expect(try tessera("pack", model, "-o", ws.file("out.tess"), "--force").status == 0)
        #expect(try TessFile.open(ws.file("out.tess")).tensors.count == 4)
        #expect(ws.contents == ["model.tess", "out.tess"])
    }

    @Test func impossibleOptionsAreRejected() throws {
        let ws = Workspace()
        let model = try ws.model()
        let r = try tessera("pack", model, "-o", ws.file("out.tess"), "--level", "40")
        #expect(r.status != 0)
        #expect(r.stderr.contains("--level"))
        #expect(ws.contents == ["model.tess"])
    }
}
