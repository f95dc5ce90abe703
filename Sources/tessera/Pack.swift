import ArgumentParser
import Tessera

struct Pack: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write the distribution form: every buffer zstd-compressed.")

    @Argument(help: "A .tess file.")
    var input: String

    @OptionGroup var out: OutputOptions

    @OptionGroup var resources: ResourceOptions

    @Option(help: "zstd level (\(Limits.zstdLevels.lowerBound)-\(Limits.zstdLevels.upperBound)).")
    var level = 3

    func validate() throws {
        guard Limits.zstdLevels.contains(level) else {
            throw ValidationError("--level must be in \(Limits.zstdLevels.lowerBound)...\(Limits.zstdLevels.upperBound), got \(level)")
        }
    }

    func run() throws {
        try reportingErrors {
            resources.apply()
            let tess = try TessFile.open(input)
            try tess.rewrite(to: out.output, options: WriteOptions(alignment: tess.header.alignment, codec: .zstd,
                                                                   zstdLevel: level, replaceExisting: out.force))
        }
    }
}

struct Unpack: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write the zero-copy form: every buffer uncompressed.")

    @Argument(help: "A .tess file.")
    var input: String

    @OptionGroup var out: OutputOptions

    @OptionGroup var resources: ResourceOptions

    func run() throws {
        try reportingErrors {
            resources.apply()
            let tess = try TessFile.open(input)
            try tess.rewrite(to: out.output, options: WriteOptions(alignment: tess.header.alignment, codec: .none,
                                                                   replaceExisting: out.force))
        }
    }
}
