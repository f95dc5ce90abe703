import ArgumentParser
import Foundation
import Tessera

@main
struct TesseraCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tessera",
        abstract: "Small, verifiable model files for edge deployment.",
        subcommands: [Inspect.self, Verify.self, Pack.self, Unpack.self]
    )
}

/// Runs `body`, turning a format error into one line on stderr and exit status 1.
func reportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as TessError {
        FileHandle.standardError.write(Data("tessera: error: \(error)\n".utf8))
        throw ExitCode(1)
    }
}

/// Options shared by commands that write a file.
struct OutputOptions: ParsableArguments {
    @Option(name: .shortAndLong, help: "Output file.")
    var output: String

    @Flag(help: "Replace the output file if it exists.")
    var force = false
}
