import ArgumentParser
import Foundation
import Tessera
import TesseraConvert
import TesseraONNX
import TesseraRuntime

@main
struct TesseraCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tessera",
        abstract: "Small, verifiable model files for edge deployment.",
        subcommands: [Convert.self, Inspect.self, Verify.self, Export.self, Pack.self, Unpack.self, Run.self, Ops.self, Bench.self, Push.self, Pull.self, Keygen.self]
    )
}

/// Runs `body`, turning a format or ONNX error into one line on stderr and exit status 1.
func reportingErrors(_ body: () throws -> Void) throws {
    if let problem = KernelDispatch.environmentProblem { fail(problem) }
    do {
        try body()
    } catch let error as TessError {
        fail(error.description)
    } catch let error as ONNXError {
        fail(error.description)
    } catch let error as ConvertError {
        fail(error.description)
    } catch let error as RuntimeError {
        fail(error.description)
    }
}

/// One line on stderr, control characters escaped, and exit status 1.
func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("tessera: error: \(message.terminalSafe)\n".utf8))
    Foundation.exit(1)
}

/// Options shared by commands that read files: the memory budget (`MemoryBudget`).
/// `--activations`: how int8 weights meet their activations in the executor.
extension ActivationArithmetic: ExpressibleByArgument {}

struct ResourceOptions: ParsableArguments {
    @Option(name: .customLong("max-memory"),
            help: "Refuse to allocate more than SIZE for one decoded buffer, tensor or value (e.g. 512M, 8G; default: half of the memory this process may use).")
    var maxMemory: String?

    func validate() throws {
        if let maxMemory, MemoryBudget.parse(maxMemory) == nil {
            throw ValidationError("--max-memory must be a size such as 512M or 8G, got '\(maxMemory)'")
        }
    }

    func apply() {
        if let bytes = maxMemory.flatMap(MemoryBudget.parse) { MemoryBudget.bytes = bytes }
    }
}

/// Options shared by commands that write a file.
struct OutputOptions: ParsableArguments {
    @Option(name: .shortAndLong, help: "Output file.")
    var output: String

    @Flag(help: "Replace the output file if it exists.")
    var force = false
}
