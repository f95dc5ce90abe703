import ArgumentParser
import TesseraRuntime

struct Ops: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the ops the graph executor runs (\"domain:Op\" outside the default domain).")

    func run() {
        print(GraphExecutor.supportedOps.joined(separator: "\n"))
    }
}
