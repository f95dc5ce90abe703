import Tessera

/// What went wrong while shipping a model, as one line a person reads.
public struct DistributionError: Error, CustomStringConvertible, Sendable {
    public enum Kind: String, Sendable {
        case usage          // an impossible option or reference
        case network        // the registry could not be reached or kept failing
        case registry       // the registry answered with an error
        case auth           // credentials missing or refused
        case badArtifact    // what came back is not a valid Tessera artifact (digest, size, structure)
        case untrusted      // signature missing, wrong, for another repository, or a rollback
        case io             // local files
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }

    static func usage(_ m: String) -> Self { .init(.usage, m) }
    static func network(_ m: String) -> Self { .init(.network, m) }
    static func registry(_ m: String) -> Self { .init(.registry, m) }
    static func auth(_ m: String) -> Self { .init(.auth, m) }
    static func badArtifact(_ m: String) -> Self { .init(.badArtifact, m) }
    static func untrusted(_ m: String) -> Self { .init(.untrusted, m) }
    static func io(_ m: String) -> Self { .init(.io, m) }
}
