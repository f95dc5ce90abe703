import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// An OCI distribution-spec client for one repository: blobs, manifests, tags, mounts.
///
/// HTTPS unless `insecure` (then plain HTTP, for a registry on loopback or a lab network).
/// Auth answers the registry's `WWW-Authenticate` challenge: Basic with the credentials, or
/// Bearer with a token fetched from the challenge's realm (anonymously without credentials).
/// Network errors, 429 and 5xx are retried with exponential backoff; a download that breaks
/// resumes from the bytes it kept with a Range request.
public final class RegistryClient: ContentStore, @unchecked Sendable {
    public struct Options: Sendable {
        public var insecure = false
        public var credentials: Credentials?
        /// Attempts per request, the first included.
        public var attempts = 5
        /// Seconds before the first retry; doubled each time.
        public var backoff: TimeInterval = 0.5
        /// Seconds without a byte after which a transfer is abandoned (and retried).
        public var stallTimeout: TimeInterval = 30
        public init() {}
    }

    public let host: String
    public let repository: String
    public var location: String { "\(host)/\(repository)" }
    private let options: Options
    private let base: URL
    private let http: HTTPTransport
    private let lock = NSLock()
    private var authorization: String?
    /// Bytes sent in request bodies and received in response bodies, for the summary line.
    public private(set) var bytesSent = 0
    public private(set) var bytesReceived = 0

    public init(host: String, repository: String, options: Options) throws {
        self.host = host
        self.repository = repository
        self.options = options
        guard let base = URL(string: "\(options.insecure ? "http" : "https")://\(host)/v2/") else {
            throw DistributionError.usage("'\(host)' is not a registry host")
        }
        self.base = base
        http = HTTPTransport(stallTimeout: options.stallTimeout)
    }

    deinit { http.invalidate() }

    // MARK: - ContentStore

    public func hasBlob(_ digest: Digest) throws -> Bool {
        let r = try send("HEAD", "\(repository)/blobs/\(digest)")
        switch r.status {
        case 200: return true
        case 404: return false
        default: throw failure(r, "cannot check blob \(digest.short)")
        }
    }

    public func mountBlob(_ digest: Digest, from other: String) throws -> Bool {
        guard other != repository else { return false }
        let r = try send("POST", "\(repository)/blobs/uploads/?mount=\(digest)&from=\(other)")
        return r.status == 201
    }

    public func putBlob(_ digest: Digest, _ bytes: Data) throws {
        let start = try send("POST", "\(repository)/blobs/uploads/")
        guard start.status == 202, let location = start.header("Location") else {
            throw failure(start, "cannot start an upload")
        }
        guard var url = URL(string: location, relativeTo: start.url ?? base)?.absoluteURL,
              var parts = URLComponents(url: url, resolvingAgainstBaseURL: true) else {
            throw DistributionError.registry("\(host) gave an unusable upload location '\(location)'")
        }
        parts.queryItems = (parts.queryItems ?? []) + [URLQueryItem(name: "digest", value: digest.description)]
        url = parts.url ?? url
        let r = try send("PUT", url: url, body: bytes, headers: ["Content-Type": "application/octet-stream"])
        guard r.status == 201 else { throw failure(r, "upload of blob \(digest.short) was refused") }
        lock.lock(); bytesSent += bytes.count; lock.unlock()
    }

    public func fetchBlob(_ descriptor: Descriptor, to path: String) throws {
        if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
        var attempt = 0
        while true {
            attempt += 1
            let have = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
            if have == descriptor.size { break }
            if have > descriptor.size { try? FileManager.default.removeItem(atPath: path); _ = FileManager.default.createFile(atPath: path, contents: nil); continue }
            guard let handle = FileHandle(forWritingAtPath: path) else { throw DistributionError.io("\(path): cannot write") }
            defer { try? handle.close() }
            try handle.seekToEnd()
            let headers = have > 0 ? ["Range": "bytes=\(have)-"] : [:]
            do {
                let r = try send("GET", "\(repository)/blobs/\(descriptor.digest)", headers: headers, sink: handle, retries: false)
                if r.status == 200, have > 0 {
                    // The registry ignored the range: start over from the body it sent.
                    try handle.close()
                    try? FileManager.default.removeItem(atPath: path)
                    _ = FileManager.default.createFile(atPath: path, contents: nil)
                    continue
                }
                guard r.status == 200 || r.status == 206 else { throw failure(r, "cannot download blob \(descriptor.digest.short)") }
            } catch let error as DistributionError where error.kind == .network && attempt < options.attempts {
                Thread.sleep(forTimeInterval: options.backoff * Double(1 << (attempt - 1)))
                continue
            }
            let now = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
            lock.lock(); bytesReceived += now - have; lock.unlock()
            if now < descriptor.size {
                guard attempt < options.attempts else {
                    throw DistributionError.network("download of blob \(descriptor.digest.short) from \(host) keeps breaking off (\(now) of \(descriptor.size) bytes)")
                }
                continue   // the connection closed early: resume
            }
            break
        }
        try checkDownloaded(path, against: descriptor, from: location)
    }

    public func putManifest(_ bytes: Data, mediaType: String, reference: String) throws {
        let r = try send("PUT", "\(repository)/manifests/\(reference)", body: bytes, headers: ["Content-Type": mediaType])
        guard r.status == 201 else { throw failure(r, "manifest \(reference) was refused") }
        let digest = Digest(of: bytes)
        if let echoed = r.header("Docker-Content-Digest"), echoed != digest.description {
            throw DistributionError.registry("\(host) stored manifest \(reference) as \(echoed), not \(digest)")
        }
        lock.lock(); bytesSent += bytes.count; lock.unlock()
    }

    public func manifest(_ reference: String) throws -> Data? {
        let accept = [MediaType.imageManifest, MediaType.imageIndex].joined(separator: ", ")
        let r = try send("GET", "\(repository)/manifests/\(reference)", headers: ["Accept": accept])
        if r.status == 404 { return nil }
        guard r.status == 200 else { throw failure(r, "cannot fetch manifest \(reference)") }
        guard r.body.count <= OCILimits.maxManifestBytes else {
            throw DistributionError.badArtifact("manifest \(reference) from \(location) is \(r.body.count) bytes, over \(OCILimits.maxManifestBytes)")
        }
        let digest = Digest(of: r.body)
        if reference.hasPrefix("sha256:"), digest.description != reference {
            throw DistributionError.badArtifact("manifest \(reference) from \(location) hashes to \(digest)")
        }
        if let echoed = r.header("Docker-Content-Digest"), echoed != digest.description {
            throw DistributionError.badArtifact("manifest \(reference) from \(location) hashes to \(digest), the registry says \(echoed)")
        }
        lock.lock(); bytesReceived += r.body.count; lock.unlock()
        return r.body
    }

    public func tags() throws -> [String] {
        let r = try send("GET", "\(repository)/tags/list")
        if r.status == 404 { return [] }
        guard r.status == 200 else { throw failure(r, "cannot list tags") }
        struct Tags: Decodable { var tags: [String]? }
        return try CanonicalJSON.decode(Tags.self, from: r.body, what: "tag list of \(location)").tags ?? []
    }

    // MARK: - Requests, auth and retries

    private func send(_ method: String, _ path: String, body: Data? = nil, headers: [String: String] = [:],
                      sink: FileHandle? = nil, retries: Bool = true) throws -> HTTPTransport.Response {
        guard let url = URL(string: path, relativeTo: base)?.absoluteURL else {
            throw DistributionError.usage("cannot form a URL for \(path)")
        }
        return try send(method, url: url, body: body, headers: headers, sink: sink, retries: retries)
    }

    private func send(_ method: String, url: URL, body: Data? = nil, headers: [String: String] = [:],
                      sink: FileHandle? = nil, retries: Bool = true) throws -> HTTPTransport.Response {
        var attempt = 0
        var challenged = false
        while true {
            attempt += 1
            var request = URLRequest(url: url)
            request.httpMethod = method
            request.httpBody = body
            if body == nil, method == "POST" || method == "PUT" { request.setValue("0", forHTTPHeaderField: "Content-Length") }
            for (k, v) in headers { request.setValue(v, forHTTPHeaderField: k) }
            lock.lock(); let auth = authorization; lock.unlock()
            if let auth { request.setValue(auth, forHTTPHeaderField: "Authorization") }
            let response: HTTPTransport.Response
            do {
                response = try http.send(request, sink: sink)
            } catch let error as DistributionError {
                throw error
            } catch {
                let failure = DistributionError.network("cannot reach \(host) (\(method) \(url.path)): \(describe(error))")
                guard retries, attempt < options.attempts, !Self.isTLSFailure(error) else { throw failure }
                Thread.sleep(forTimeInterval: options.backoff * Double(1 << (attempt - 1)))
                continue
            }
            if response.status == 401, !challenged {
                challenged = true
                try answerChallenge(response, failedAuthorization: auth)
                attempt -= 1
                continue
            }
            if retries, response.status == 429 || response.status >= 500, attempt < options.attempts {
                Thread.sleep(forTimeInterval: options.backoff * Double(1 << (attempt - 1)))
                continue
            }
            if response.status == 401 || response.status == 403 {
                throw DistributionError.auth("\(host) refused \(method) \(url.path) (\(response.status))\(options.credentials == nil ? "; no credentials were given (TESSERA_REGISTRY_USERNAME/PASSWORD or --credentials)" : " with the credentials given")")
            }
            return response
        }
    }

    /// Sets `authorization` from a 401's `WWW-Authenticate` (RFC 7235; distribution's token spec).
    private func answerChallenge(_ response: HTTPTransport.Response, failedAuthorization: String?) throws {
        guard let header = response.header("WWW-Authenticate") else {
            throw DistributionError.auth("\(host) answered 401 without a WWW-Authenticate challenge")
        }
        let (scheme, parameters) = Self.parseChallenge(header)
        switch scheme {
        case "basic":
            guard let credentials = options.credentials else {
                throw DistributionError.auth("\(host) requires credentials; set TESSERA_REGISTRY_USERNAME and TESSERA_REGISTRY_PASSWORD, or pass --credentials FILE")
            }
            lock.lock(); authorization = credentials.basicHeader; lock.unlock()
        case "bearer":
            guard let realm = parameters["realm"], var parts = URLComponents(string: realm), let scheme = parts.scheme,
                  scheme == "https" || (options.insecure && scheme == "http") else {
                throw DistributionError.auth("\(host) sent a bearer challenge with an unusable realm '\(parameters["realm"] ?? "")'")
            }
            var query = parts.queryItems ?? []
            if let service = parameters["service"] { query.append(URLQueryItem(name: "service", value: service)) }
            query.append(URLQueryItem(name: "scope", value: parameters["scope"] ?? "repository:\(repository):pull,push"))
            parts.queryItems = query
            guard let url = parts.url else { throw DistributionError.auth("\(host) sent an unusable token realm") }
            var request = URLRequest(url: url)
            if let credentials = options.credentials { request.setValue(credentials.basicHeader, forHTTPHeaderField: "Authorization") }
            let answer: HTTPTransport.Response
            do { answer = try http.send(request) } catch let e as DistributionError { throw e } catch {
                throw DistributionError.network("cannot reach the token service \(url.host ?? ""): \(error.localizedDescription)")
            }
            guard answer.status == 200 else {
                throw DistributionError.auth("the token service of \(host) refused (\(answer.status))\(options.credentials == nil ? "; no credentials were given" : "")")
            }
            struct Token: Decodable { var token: String?; var access_token: String? }
            let token = try CanonicalJSON.decode(Token.self, from: answer.body, what: "token from \(url.host ?? "")")
            guard let value = token.token ?? token.access_token, !value.isEmpty else {
                throw DistributionError.auth("the token service of \(host) sent no token")
            }
            lock.lock(); authorization = "Bearer \(value)"; lock.unlock()
        default:
            throw DistributionError.auth("\(host) asks for '\(scheme)' authentication, which Tessera does not speak")
        }
    }

    /// `Bearer realm="…",service="…",scope="…"` → ("bearer", [realm: …, …]).
    static func parseChallenge(_ header: String) -> (String, [String: String]) {
        let trimmed = header.trimmingCharacters(in: .whitespaces)
        let space = trimmed.firstIndex(of: " ") ?? trimmed.endIndex
        let scheme = trimmed[..<space].lowercased()
        var parameters: [String: String] = [:]
        var rest = Substring(trimmed[space...])
        while let eq = rest.firstIndex(of: "=") {
            let key = rest[..<eq].trimmingCharacters(in: CharacterSet(charactersIn: " ,")).lowercased()
            rest = rest[rest.index(after: eq)...]
            var value = ""
            if rest.first == "\"" {
                rest = rest.dropFirst()
                while let c = rest.first, c != "\"" {
                    if c == "\\", rest.count > 1 { rest = rest.dropFirst() }
                    value.append(rest.first!)
                    rest = rest.dropFirst()
                }
                rest = rest.dropFirst()
            } else {
                let end = rest.firstIndex(of: ",") ?? rest.endIndex
                value = rest[..<end].trimmingCharacters(in: .whitespaces)
                rest = rest[end...]
            }
            parameters[key] = value
        }
        return (scheme, parameters)
    }

    /// A transport error in words: a stall names the timeout, a TLS failure suggests --insecure.
    private func describe(_ error: Error) -> String {
        let nsError = error as NSError
        if nsError.domain == NSURLErrorDomain, nsError.code == NSURLErrorTimedOut {
            return "no data for \(options.stallTimeout) s (--stall-timeout)"
        }
        let text = error.localizedDescription
        if text.contains("wrong version number") {
            return text + " (the registry speaks plain HTTP: pass --insecure if that is intended)"
        }
        if text.contains("certificate") {
            return text + " (the registry's certificate is not trusted by this system's CAs; add its CA to them, e.g. update-ca-certificates)"
        }
        return text
    }

    /// A failed TLS handshake is not retried: it fails the same way every time.
    static func isTLSFailure(_ error: Error) -> Bool {
        let text = error.localizedDescription
        return text.contains("SSL") || text.contains("TLS") || (error as NSError).code == NSURLErrorSecureConnectionFailed
    }

    private func failure(_ r: HTTPTransport.Response, _ what: String) -> DistributionError {
        struct Errors: Decodable { struct E: Decodable { var code: String?; var message: String? }; var errors: [E]? }
        let detail = (try? JSONDecoder().decode(Errors.self, from: r.body))?.errors?.first
            .map { [$0.code, $0.message].compactMap { $0 }.joined(separator: ": ") } ?? ""
        return DistributionError.registry("\(location): \(what): HTTP \(r.status)\(detail.isEmpty ? "" : " \(detail)")")
    }
}

public enum OCILimits {
    /// Largest manifest accepted, as Distribution and ORAS cap them.
    public static let maxManifestBytes = 4 << 20
    /// Largest config, signature or token body held in memory.
    public static let maxSmallBlobBytes = 16 << 20
}
