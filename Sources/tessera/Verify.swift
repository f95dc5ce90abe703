import ArgumentParser
import Foundation
import Tessera

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a .tess file: structure, every checksum and every content rule.")

    @Argument(help: "A .tess file.")
    var file: String

    func run() throws {
        try reportingErrors {
            let start = Date()
            let tess = try TessFile.open(file)
            let checked = try tess.verifyIntegrity()
            let seconds = Date().timeIntervalSince(start)
            print("\(file): integrity OK: \(tess.tensors.count) tensors, \(tess.buffers.count) buffers, \(checked) decoded bytes checked in \(String(format: "%.3f", seconds)) s")
        }
    }
}
