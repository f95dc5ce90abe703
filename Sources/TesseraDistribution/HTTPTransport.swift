import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// One HTTP exchange at a time per caller, over a shared URLSession (FoundationNetworking on
/// Linux, libcurl underneath). Bodies either come back in memory or stream into a file as they
/// arrive, so a download that dies keeps what it received and can resume with a Range request.
final class HTTPTransport: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    struct Response {
        var status: Int
        /// Header names in lower case.
        var headers: [String: String]
        var body: Data
        var url: URL?

        func header(_ name: String) -> String? { headers[name.lowercased()] }
    }

    /// Bodies of error answers and of in-memory responses are cut at this size.
    static let maxInMemoryBody = 64 << 20

    private final class Exchange {
        var response: HTTPURLResponse?
        var body = Data()
        var sink: FileHandle?
        var sinkError: Error?
        var tooLarge = false
        var challenged = false
        var error: Error?
        let done = DispatchSemaphore(value: 0)
        init(sink: FileHandle?) { self.sink = sink }
    }

    private var session: URLSession!
    private let lock = NSLock()
    private var exchanges: [Int: Exchange] = [:]
    private let queue = OperationQueue()

    /// `stallTimeout`: seconds without a byte after which an exchange fails.
    init(stallTimeout: TimeInterval) {
        super.init()
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = stallTimeout
        configuration.httpMaximumConnectionsPerHost = 32
        configuration.urlCache = nil
        configuration.httpShouldSetCookies = false
        queue.maxConcurrentOperationCount = 1
        session = URLSession(configuration: configuration, delegate: self, delegateQueue: queue)
    }

    func invalidate() { session.finishTasksAndInvalidate() }

    /// Sends `request`; a 2xx body goes to `sink` when given, else into `Response.body`.
    func send(_ request: URLRequest, sink: FileHandle? = nil) throws -> Response {
        let exchange = Exchange(sink: sink)
        let task = session.dataTask(with: request)
        lock.lock(); exchanges[task.taskIdentifier] = exchange; lock.unlock()
        task.resume()
        exchange.done.wait()
        lock.lock(); exchanges[task.taskIdentifier] = nil; lock.unlock()
        if let error = exchange.sinkError { throw error }
        if let error = exchange.error { throw error }
        guard let http = exchange.response else {
            throw DistributionError.network("\(request.url?.host ?? "the registry") sent no HTTP response")
        }
        if exchange.tooLarge {
            throw DistributionError.registry("\(request.httpMethod ?? "GET") \(request.url?.path ?? "") answered with more than \(Self.maxInMemoryBody) bytes")
        }
        var headers: [String: String] = [:]
        for (k, v) in http.allHeaderFields {
            if let k = k as? String, let v = v as? String { headers[k.lowercased()] = v }
        }
        return Response(status: http.statusCode, headers: headers, body: exchange.body, url: http.url)
    }

    private func exchange(_ task: URLSessionTask) -> Exchange? {
        lock.lock(); defer { lock.unlock() }
        return exchanges[task.taskIdentifier]
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
                    completionHandler: @escaping (URLSession.ResponseDisposition) -> Void) {
        exchange(dataTask)?.response = response as? HTTPURLResponse
        completionHandler(.allow)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        guard let x = exchange(dataTask) else { return }
        let ok = (200 ..< 300).contains(x.response?.statusCode ?? 0)
        if ok, let sink = x.sink {
            guard x.sinkError == nil else { return }
            do { try sink.write(contentsOf: data) } catch {
                x.sinkError = DistributionError.io("cannot write a download: \(error.localizedDescription)")
                dataTask.cancel()
            }
        } else if x.body.count + data.count <= Self.maxInMemoryBody {
            x.body.append(data)
        } else {
            x.tooLarge = true
            dataTask.cancel()
        }
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: Error?) {
        guard let x = exchange(task) else { return }
        if let error, !x.tooLarge, x.sinkError == nil, !(x.challenged && x.response?.statusCode == 401) { x.error = error }
        x.done.signal()
    }

    /// A 401 comes back to the caller, which knows the registry's auth schemes. FoundationNetworking
    /// stalls on a 401 under default handling, so the challenge is cancelled and the response
    /// already received (status and headers) is what `send` returns.
    func urlSession(_ session: URLSession, task: URLSessionTask, didReceive challenge: URLAuthenticationChallenge,
                    completionHandler: @escaping (URLSession.AuthChallengeDisposition, URLCredential?) -> Void) {
        exchange(task)?.challenged = true
        completionHandler(.cancelAuthenticationChallenge, nil)
    }

    /// Credentials never follow a redirect to another host (a blob store's signed URL, say).
    func urlSession(_ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
                    newRequest request: URLRequest, completionHandler: @escaping (URLRequest?) -> Void) {
        var next = request
        if request.url?.host != task.originalRequest?.url?.host || request.url?.port != task.originalRequest?.url?.port {
            next.setValue(nil, forHTTPHeaderField: "Authorization")
        }
        completionHandler(next)
    }
}
