import Foundation

/// `host[:port]/repository[:tag|@sha256:digest]`, as OCI distribution names them.
public struct Reference: Equatable, Sendable, CustomStringConvertible {
    public var host: String
    public var repository: String
    /// A tag or a digest (`sha256:…`).
    public var reference: String

    public init(parsing text: String) throws {
        func bad(_ why: String) -> DistributionError {
            .usage("'\(text)' is not a registry reference (host[:port]/repository:tag): \(why)")
        }
        guard let slash = text.firstIndex(of: "/") else { throw bad("no repository after the host") }
        host = String(text[..<slash])
        var rest = String(text[text.index(after: slash)...])
        guard !host.isEmpty, host.allSatisfy({ $0.isLetter || $0.isNumber || ".-:[]".contains($0) }) else { throw bad("bad host") }
        if let at = rest.firstIndex(of: "@") {
            reference = try Digest(parsing: String(rest[rest.index(after: at)...])).description
            rest = String(rest[..<at])
        } else if let colon = rest.lastIndex(of: ":") {
            reference = String(rest[rest.index(after: colon)...])
            rest = String(rest[..<colon])
            guard Self.isTag(reference) else { throw bad("bad tag '\(reference)'") }
        } else {
            reference = "latest"
        }
        repository = rest
        guard Self.isRepository(repository) else {
            throw bad("repository '\(repository)' must be lowercase components of letters and digits, joined by '.', '_' or '-', separated by '/'")
        }
    }

    public var isDigest: Bool { reference.hasPrefix("sha256:") }
    public var description: String { "\(host)/\(repository)\(isDigest ? "@" : ":")\(reference)" }

    static func isTag(_ s: String) -> Bool {
        guard let first = s.first, s.count <= 128, first.isASCII, first.isLetter || first.isNumber || first == "_" else { return false }
        return s.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }
    }

    static func isRepository(_ s: String) -> Bool {
        guard !s.isEmpty, s.count <= 255 else { return false }
        return s.split(separator: "/", omittingEmptySubsequences: false).allSatisfy { component in
            guard let f = component.first, let l = component.last, isLowerAlnum(f), isLowerAlnum(l) else { return false }
            return component.allSatisfy { isLowerAlnum($0) || "._-".contains($0) }
        }
    }

    private static func isLowerAlnum(_ c: Character) -> Bool { c.isASCII && (c.isNumber || c.isLowercase) }
}

/// A user name and password for one registry host: from `TESSERA_REGISTRY_USERNAME` and
/// `TESSERA_REGISTRY_PASSWORD`, else from a Docker-style `config.json` (`auths.HOST.auth`,
/// base64 of `user:password`), the file `docker login`, `skopeo login` and `oras login` write.
public struct Credentials: Sendable {
    public var username: String
    public var password: String

    public init(username: String, password: String) {
        self.username = username
        self.password = password
    }

    var basicHeader: String { "Basic " + Data("\(username):\(password)".utf8).base64EncodedString() }

    /// Credentials for `host`, or nil. `file`: an explicit credentials file (an error if unreadable).
    public static func lookup(host: String, file: String?, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Credentials? {
        if let user = environment["TESSERA_REGISTRY_USERNAME"], let password = environment["TESSERA_REGISTRY_PASSWORD"] {
            return Credentials(username: user, password: password)
        }
        let path: String
        if let file {
            path = file
        } else if let folder = environment["DOCKER_CONFIG"] {
            path = folder + "/config.json"
        } else if let home = environment["HOME"] {
            path = home + "/.docker/config.json"
        } else {
            return nil
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            if file != nil { throw DistributionError.usage("\(path): cannot read the credentials file") }
            return nil
        }
        struct Config: Decodable { struct Entry: Decodable { var auth: String? }; var auths: [String: Entry]? }
        let config = try CanonicalJSON.decode(Config.self, from: data, what: "credentials file \(path)")
        let entry = config.auths?[host] ?? config.auths?["https://\(host)"] ?? config.auths?["http://\(host)"]
        guard let auth = entry?.auth else { return nil }
        guard let decoded = Data(base64Encoded: auth).flatMap({ String(data: $0, encoding: .utf8) }),
              let colon = decoded.firstIndex(of: ":") else {
            throw DistributionError.usage("\(path): auths.\(host).auth is not base64 of user:password")
        }
        return Credentials(username: String(decoded[..<colon]), password: String(decoded[decoded.index(after: colon)...]))
    }
}
