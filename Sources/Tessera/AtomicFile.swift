#if canImport(Glibc)
import Glibc
#endif

/// A file written under a temporary name in its destination's folder and renamed into place
/// by `commit`, so that no reader ever sees it half-written. Dropping it (or `discard`)
/// before `commit` removes the temporary file.
public final class AtomicFile {
    public let path: String
    public let replaceExisting: Bool
    private let temporaryPath: String
    private var fd: Int32
    /// Bytes written so far.
    public private(set) var position = 0
    private var done = false

    public init(path: String, replaceExisting: Bool) throws {
        if !replaceExisting, access(path, F_OK) == 0 {
            throw TessError(.io, "already exists (use --force to replace it)", path: path)
        }
        self.path = path
        self.replaceExisting = replaceExisting
        let folder = Self.folder(of: path)
        let base = path.split(separator: "/").last.map(String.init) ?? path
        var template = Array("\(folder)/.\(base).tmp-XXXXXX".utf8CString)
        fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else {
            throw TessError(.io, "cannot create a temporary file in \(folder): \(errnoMessage())", path: path)
        }
        temporaryPath = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        fchmod(fd, 0o644)
    }

    deinit { discard() }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        var written = 0
        while written < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + written, bytes.count - written)
            if n < 0 {
                if errno == EINTR { continue }
                throw TessError(.io, "cannot write: \(errnoMessage())", path: path)
            }
            written += n
        }
        position += bytes.count
    }

    public func write(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try write($0) } }

    /// Append zero bytes up to `offset`.
    public func pad(to offset: Int) throws {
        if offset > position { try write([UInt8](repeating: 0, count: offset - position)) }
    }

    /// Overwrite bytes already written (used to patch a header).
    public func write(_ bytes: [UInt8], at offset: Int) throws {
        let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
        guard n == bytes.count else { throw TessError(.io, "cannot write at offset \(offset): \(errnoMessage())", path: path) }
    }

    /// Flush, then rename over the destination and flush the folder.
    public func commit() throws {
        guard !done else { throw TessError(.invalidArgument, "the file was already committed or discarded", path: path) }
        guard fsync(fd) == 0 else { throw TessError(.io, "cannot flush: \(errnoMessage())", path: path) }
        close(fd)
        fd = -1
        if !replaceExisting, access(path, F_OK) == 0 {
            discard()
            throw TessError(.io, "already exists (use --force to replace it)", path: path)
        }
        guard rename(temporaryPath, path) == 0 else {
            let message = errnoMessage()
            discard()
            throw TessError(.io, "cannot rename the temporary file into place: \(message)", path: path)
        }
        done = true
        let dfd = open(Self.folder(of: path), O_RDONLY | O_DIRECTORY)
        if dfd >= 0 { fsync(dfd); close(dfd) }   // durability of the rename; not an error if it fails
    }

    /// Close and delete the temporary file. Safe to call more than once.
    public func discard() {
        if fd >= 0 { close(fd); fd = -1 }
        if !done { unlink(temporaryPath) }
        done = true
    }

    public var isOpen: Bool { !done }

    static func folder(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let folder = String(path[..<slash])
        return folder.isEmpty ? "/" : folder
    }
}
