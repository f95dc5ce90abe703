import Foundation
import Tessera

/// The digests a signature vouches for, computed from a file in either form, and the check of
/// a file against a signed statement (`tessera verify --signature`, and every signed pull).
public enum Release {
    /// SHA-256 of each tensor's decoded buffers (checksums checked on the way), in index order;
    /// `only` restricts it to some tensor indices.
    public static func tensorDigests(_ file: TessFile, only: Set<Int>? = nil) throws -> [Statement.NamedDigest] {
        var out: [Statement.NamedDigest] = []
        for i in file.tensors.indices where only?.contains(i) ?? true {
            let tensor = try file.tensor(i)
            var hasher = SHA256Hasher()
            for (_, bytes) in tensor.buffers { bytes.withUnsafeBytes { hasher.update($0) } }
            out.append(.init(name: tensor.name, sha256: hasher.finalize().hex))
        }
        return out
    }

    public static func sectionDigests(_ file: TessFile) -> [Statement.NamedDigest] {
        file.sections.map { s in
            let name = Section.Kind(rawValue: s.kind).map { "\($0)" } ?? "\(s.kind)"
            return .init(name: name, sha256: Digest(of: s.payload).hex)
        }
    }

    /// Checks `file` against a verified statement: every tensor of the file (or of `only`) is
    /// signed with the same digest, and so is every section. A file may hold fewer tensors (and
    /// sections) than were signed only with `allowMissing` (a `--tensors` subset) or `only`. Returns how many
    /// tensors were checked.
    @discardableResult
    public static func check(_ file: TessFile, against statement: Statement, only: Set<Int>? = nil, allowMissing: Bool = false) throws -> Int {
        let signed = Dictionary(statement.predicate.tensors.map { ($0.name, $0.sha256) }, uniquingKeysWith: { a, _ in a })
        let digests = try tensorDigests(file, only: only)
        for digest in digests {
            guard let expected = signed[digest.name] else {
                throw DistributionError.untrusted("\(file.path): tensor '\(digest.name)' is not in the signed release")
            }
            guard expected == digest.sha256 else {
                throw DistributionError.untrusted("\(file.path): tensor '\(digest.name)' differs from the signed release (sha256 \(digest.sha256.prefix(12)), signed \(expected.prefix(12)))")
            }
        }
        if !allowMissing, only == nil, file.tensors.count != signed.count {
            throw DistributionError.untrusted("\(file.path): holds \(file.tensors.count) tensors, the signed release \(signed.count)")
        }
        let signedSections = Dictionary(statement.predicate.sections.map { ($0.name, $0.sha256) }, uniquingKeysWith: { a, _ in a })
        let sections = sectionDigests(file)
        for s in sections where signedSections[s.name] != s.sha256 {
            throw DistributionError.untrusted("\(file.path): the \(s.name) section differs from the signed release")
        }
        guard allowMissing || sections.count == signedSections.count else {
            throw DistributionError.untrusted("\(file.path): has \(sections.count) sections, the signed release \(signedSections.count)")
        }
        return digests.count
    }
}

/// Runs `body(0..<count)` on up to `jobs` threads; the first error stops new work and is rethrown.
func parallelFor(_ count: Int, jobs: Int, _ body: @Sendable (Int) throws -> Void) throws {
    final class State: @unchecked Sendable {
        let lock = NSLock()
        var next = 0
        var error: Error?
    }
    let state = State()
    DispatchQueue.concurrentPerform(iterations: max(1, min(jobs, count))) { _ in
        while true {
            state.lock.lock()
            guard state.error == nil, state.next < count else { state.lock.unlock(); return }
            let i = state.next
            state.next += 1
            state.lock.unlock()
            do { try body(i) } catch {
                state.lock.lock()
                if state.error == nil { state.error = error }
                state.lock.unlock()
            }
        }
    }
    if let error = state.error { throw error }
}
