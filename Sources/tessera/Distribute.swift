import ArgumentParser
import Foundation
import Tessera
import TesseraDistribution

/// How to reach a registry, shared by push and pull.
struct RegistryOptions: ParsableArguments {
    @Flag(help: "Talk plain HTTP to the registry (loopback or a lab network); HTTPS otherwise.")
    var insecure = false

    @Option(help: "Credentials file in Docker's config.json form (default: $DOCKER_CONFIG/config.json or ~/.docker/config.json; TESSERA_REGISTRY_USERNAME and TESSERA_REGISTRY_PASSWORD take precedence).")
    var credentials: String?

    @Option(help: "Transfers in parallel.")
    var jobs = 4

    @Option(help: "Seconds without a byte after which a transfer is retried.")
    var stallTimeout: Double = 30

    @Option(help: "Attempts per request before giving up (network errors, 429 and 5xx are retried with backoff).")
    var attempts = 5

    @Option(name: .customLong("oci-layout"), help: "Use an OCI image layout folder instead of a registry (air gap; skopeo and oras read and write it).")
    var ociLayout: String?

    @Option(help: "With --oci-layout: the tag (default: latest on push; the layout's only tag on pull).")
    var tag: String?

    @Option(help: "With --oci-layout: the repository name releases are signed for.")
    var repository = "model"

    func validate() throws {
        guard jobs >= 1, jobs <= 64 else { throw ValidationError("--jobs must be in 1...64, got \(jobs)") }
        guard stallTimeout > 0 else { throw ValidationError("--stall-timeout must be positive") }
        guard attempts >= 1 else { throw ValidationError("--attempts must be at least 1") }
        if ociLayout == nil, tag != nil { throw ValidationError("--tag goes with --oci-layout; a registry reference carries its tag") }
    }

    /// The store and the reference to push to or pull from.
    func store(_ reference: String?, creating: Bool) throws -> (ContentStore, String) {
        if let ociLayout {
            guard reference == nil else { throw DistributionError(.usage, "give a registry reference or --oci-layout, not both") }
            let store = try OCILayoutStore(folder: ociLayout, repository: repository, create: creating)
            if let tag { return (store, tag) }
            if creating { return (store, "latest") }
            guard let only = try store.onlyTag() else {
                throw DistributionError(.usage, "\(ociLayout): holds several tags or none; name one with --tag")
            }
            return (store, only)
        }
        guard let reference else { throw DistributionError(.usage, "give a registry reference (host[:port]/repository:tag) or --oci-layout DIR") }
        let ref = try Reference(parsing: reference)
        var options = RegistryClient.Options()
        options.insecure = insecure
        options.credentials = try Credentials.lookup(host: ref.host, file: credentials)
        options.stallTimeout = stallTimeout
        options.attempts = attempts
        return (try RegistryClient(host: ref.host, repository: ref.repository, options: options), ref.reference)
    }
}

/// Runs `body`, turning a distribution or format error into one line and exit status 1.
func reportingDistributionErrors(_ body: () throws -> Void) throws {
    try reportingErrors {
        do { try body() } catch let error as DistributionError { fail(error.description) }
    }
}

func megabytes(_ n: Int) -> String { String(format: "%.2f MB", Double(n) / 1e6) }

struct Push: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Publish a .tess file to an OCI registry (or an OCI image layout), one blob per tensor.",
        discussion: """
        The registry gets the distribution form (a zero-copy file is packed first): an OCI artifact \
        (artifactType application/vnd.tessera.model.v1) whose layers are the index and the tensors, \
        one layer per tensor of 64 KiB or more and small tensors packed together. Blobs the \
        registry already holds are not sent, so a new version costs only its changed tensors. \
        With --sign KEY, a signed release statement (DSSE, in-toto) goes beside it under the tag \
        sha256-<manifest hex>.sig. spec/DISTRIBUTION.md has the layout.
        """)

    @Argument(help: "A .tess file.")
    var file: String

    @Argument(help: "host[:port]/repository:tag (omit with --oci-layout).")
    var reference: String?

    @OptionGroup var registry: RegistryOptions

    @Option(help: "Sign the release with this ECDSA P-256 private key (tessera keygen).")
    var sign: String?

    @Option(help: "The signed release's sequence number (default: one more than the repository's highest).")
    var sequence: Int?

    @Option(help: "Another repository of the same registry to mount missing blobs from instead of uploading them.")
    var mountFrom: String?

    @Option(help: "zstd level when a zero-copy file is packed before pushing.")
    var level = 3

    func validate() throws {
        guard Limits.zstdLevels.contains(level) else { throw ValidationError("--level must be in \(Limits.zstdLevels)") }
        if sequence != nil, sign == nil { throw ValidationError("--sequence goes with --sign") }
        if let sequence, sequence < 1 { throw ValidationError("--sequence must be at least 1") }
    }

    func run() throws {
        try reportingDistributionErrors {
            let (store, tag) = try registry.store(reference, creating: true)
            var options = Publisher.Options()
            options.jobs = registry.jobs
            options.zstdLevel = level
            options.signingKey = try sign.map(Signing.loadPrivateKey)
            options.sequence = sequence
            options.mountFrom = try mountFrom.map { name in
                guard name.split(separator: "/").allSatisfy({ !$0.isEmpty }) else { throw DistributionError(.usage, "--mount-from \(name): not a repository") }
                return name
            }
            let start = Date()
            let r = try Publisher.push(file, to: store, tag: tag, options: options)
            let seconds = Date().timeIntervalSince(start)
            let share = r.fileSize > 0 ? 100 * Double(r.bytesUploaded) / Double(r.fileSize) : 0
            var line = "pushed \(file) to \(store.location):\(tag): manifest \(r.manifest), \(r.layers) layers (\(r.layersReused) already there"
            line += r.layersMounted > 0 ? ", \(r.layersMounted) mounted)" : ")"
            line += ", sent \(megabytes(r.bytesUploaded)) for a \(megabytes(r.fileSize)) file (\(String(format: "%.1f", share))%) in \(String(format: "%.2f", seconds)) s"
            if let s = r.sequence { line += ", signed release \(s)" }
            print(line.terminalSafe)
        }
    }
}

struct Pull: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fetch a model from an OCI registry (or an OCI image layout) into a checked .tess file.",
        discussion: """
        Every blob's digest, the rebuilt file's structure and checksums and its SHA-256 are checked \
        before the file appears under its name; an interrupted pull leaves nothing there and resumes \
        from a hidden .NAME.pull folder beside it. With --trust, the release must be signed by a \
        trusted key, for this repository, and no older than the last release this site installed \
        (recorded in --trust-state); the signature is written beside the file as FILE.sig.
        """)

    @Argument(help: "host[:port]/repository:tag or @sha256:digest (omit with --oci-layout).")
    var reference: String?

    @OptionGroup var out: OutputOptions

    @OptionGroup var registry: RegistryOptions

    @Flag(help: "Write the zero-copy form instead of the exact distribution form that was pushed.")
    var unpack = false

    @Option(help: "An installed version of the model: tensors it holds unchanged are taken from it, not the network.")
    var base: String?

    @Option(name: .customLong("tensors"), help: "GLOB: pull only the tensors whose names match (repeatable); the file holds just those.")
    var tensorGlobs: [String] = []

    @Option(name: .customLong("trust"), help: "KEY.pub: accept only releases signed by this key (repeatable, for rotation).")
    var trust: [String] = []

    @Option(help: "The file recording the last release installed per repository (default: $XDG_STATE_HOME/tessera/trust-state.json).")
    var trustState: String?

    func validate() throws {
        if trustState != nil, trust.isEmpty { throw ValidationError("--trust-state goes with --trust") }
    }

    func run() throws {
        try reportingDistributionErrors {
            let (store, reference) = try registry.store(self.reference, creating: false)
            var options = Installer.Options(output: out.output)
            options.replaceExisting = out.force
            options.unpack = unpack
            options.jobs = registry.jobs
            options.base = base
            options.tensorGlobs = tensorGlobs
            options.trusted = try trust.map(Signing.loadPublicKey)
            if let trustState { options.trustStatePath = trustState }
            let start = Date()
            let r = try Installer.pull(reference, from: store, options: options)
            let seconds = Date().timeIntervalSince(start)
            let received = (store as? RegistryClient)?.bytesReceived ?? r.bytesDownloaded
            var line = "pulled \(store.location):\(reference) into \(out.output): manifest \(r.manifest), \(megabytes(r.fileSize)), \(r.tensors) tensors; "
            line += "\(r.layersDownloaded) of \(r.layers - 1) tensor layers downloaded"
            if r.layersFromBase > 0 { line += ", \(r.layersFromBase) taken from \(base ?? "")" }
            line += ", \(megabytes(received)) received in \(String(format: "%.2f", seconds)) s"
            if let s = r.sequence { line += "; signed release \(s) verified" }
            print(line.terminalSafe)
        }
    }
}

struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a signing key pair: KEY (ECDSA P-256 private key, PEM, mode 600) and KEY.pub.")

    @OptionGroup var out: OutputOptions

    func run() throws {
        try reportingErrors {
            let (privatePEM, publicPEM) = Signing.generateKey()
            let group = OutputGroup()
            let mask = umask(0o077)   // the private key is never readable by others, even briefly
            defer { umask(mask) }
            let key = try group.file(out.output, replaceExisting: out.force)
            try key.write(Array(privatePEM.utf8) + [10])
            let pub = try group.file(out.output + ".pub", replaceExisting: out.force)
            try pub.write(Array(publicPEM.utf8) + [10])
            try group.commit()
            chmod(out.output, 0o600)
            chmod(out.output + ".pub", 0o644)
            print("wrote \(out.output) (private: keep it secret) and \(out.output).pub (give it to sites: pull --trust)".terminalSafe)
        }
    }
}
