#if canImport(Glibc)
import Glibc
#endif

/// A file that appears under its final name complete or not at all: the one way Tessera
/// writes a file.
///
/// The bytes go to an unnamed file (`O_TMPFILE`) in the destination's folder, which a crash
/// or `kill -9` cannot leave behind; `commit` flushes it and links it into place. Without
/// `replaceExisting` the link itself refuses an existing destination (`linkat` fails with
/// `EEXIST`), so a file created there while the writer ran is never replaced; with it, the file
/// is linked under a temporary name and renamed over the destination. Only regular files are
/// ever replaced. Where the folder's file system lacks `O_TMPFILE`, a named temporary file
/// (`.NAME.tmp-PID-XXXXXX`) is used instead, and such files left by writers that died are
/// removed the next time the same destination is written. Dropping the writer (or `discard`)
/// before `commit` leaves nothing.
public final class AtomicFile {
    public let path: String
    public let replaceExisting: Bool
    /// Bytes written so far.
    public private(set) var position = 0
    private var fd: Int32
    /// Set when the file is named (the `O_TMPFILE` fallback).
    private var temporaryPath: String?
    private var done = false
    /// Set by `commit`: whether it replaced a file that was there.
    private(set) var replaced = false

    public convenience init(path: String, replaceExisting: Bool) throws {
        try self.init(path: path, replaceExisting: replaceExisting, unnamed: true)
    }

    /// `unnamed: false` takes the named fallback directly (so tests cover both ways).
    init(path: String, replaceExisting: Bool, unnamed: Bool) throws {
        self.path = path
        self.replaceExisting = replaceExisting
        try Self.checkDestination(path, replaceExisting: replaceExisting)
        let folder = Self.folder(of: path)
        Self.removeStaleTemporaries(of: path)
        fd = unnamed ? open(folder, O_RDWR | O_CLOEXEC | Self.oTmpfile, 0o644) : -1
        if fd < 0 {
            // No O_TMPFILE on this file system: a named temporary whose name records our pid.
            var template = Array("\(Self.temporaryPrefix(of: path))\(getpid())-XXXXXX".utf8CString)
            fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
            guard fd >= 0 else {
                throw TessError(.io, "cannot create a temporary file in \(folder): \(errnoMessage())", path: path)
            }
            temporaryPath = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
            fchmod(fd, 0o644)
        }
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

    /// Flush the bytes to disk (the expensive, failure-prone part of a commit, done before any
    /// file of a group is put in place).
    func flush() throws {
        guard !done else { throw TessError(.invalidArgument, "the file was already committed or discarded", path: path) }
        guard fsync(fd) == 0 else { throw TessError(.io, "cannot flush: \(errnoMessage())", path: path) }
    }

    /// Flush, then put the file in place and flush the folder.
    public func commit() throws {
        try flush()
        try link()
    }

    /// Put the flushed file under its final name.
    func link() throws {
        do {
            try Self.checkDestination(path, replaceExisting: replaceExisting)
            replaced = replaceExisting && Self.exists(path)
            if replaceExisting {
                let named = try temporaryPath ?? linkUnderTemporaryName()
                temporaryPath = named
                guard rename(named, path) == 0 else {
                    throw TessError(.io, "cannot rename the temporary file into place: \(errnoMessage())", path: path)
                }
            } else {
                // linkat never replaces: a destination that appeared meanwhile stays untouched.
                let status = temporaryPath.map { Glibc.linkat(AT_FDCWD, $0, AT_FDCWD, path, 0) } ?? linkDescriptor(to: path)
                guard status == 0 else {
                    if errno == EEXIST { throw TessError(.io, "already exists (use --force to replace it)", path: path) }
                    throw TessError(.io, "cannot link the new file into place: \(errnoMessage())", path: path)
                }
                if let temporaryPath { unlink(temporaryPath) }
            }
        } catch {
            discard()
            throw error
        }
        temporaryPath = nil
        close(fd)
        fd = -1
        done = true
        let dfd = open(Self.folder(of: path), O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 { fsync(dfd); close(dfd) }   // durability of the link; not an error if it fails
    }

    /// Close and delete the temporary file. Safe to call more than once.
    public func discard() {
        if fd >= 0 { close(fd); fd = -1 }
        if !done, let temporaryPath { unlink(temporaryPath) }
        temporaryPath = nil
        done = true
    }

    public var isOpen: Bool { !done }

    // MARK: - Internals

    /// `O_TMPFILE` (Linux): an unnamed regular file in the given folder.
    private static let oTmpfile: Int32 = O_DIRECTORY | 0o20000000
    /// `AT_EMPTY_PATH` (Linux): `linkat` on the descriptor itself.
    private static let atEmptyPath: Int32 = 0x1000

    /// Link the unnamed file at `destination`, which must not exist. Through /proc when the
    /// process lacks the capability `AT_EMPTY_PATH` needs.
    private func linkDescriptor(to destination: String) -> Int32 {
        if Glibc.linkat(fd, "", AT_FDCWD, destination, Self.atEmptyPath) == 0 { return 0 }
        if errno == EEXIST { return -1 }
        return Glibc.linkat(AT_FDCWD, "/proc/self/fd/\(fd)", AT_FDCWD, destination, AT_SYMLINK_FOLLOW)
    }

    /// Give the unnamed file a temporary name beside the destination (to rename it over one).
    private func linkUnderTemporaryName() throws -> String {
        for attempt in 0 ..< 100 {
            let candidate = "\(Self.temporaryPrefix(of: path))\(getpid())-\(attempt)-\(UInt32.random(in: 0 ... .max))"
            if linkDescriptor(to: candidate) == 0 { return candidate }
            guard errno == EEXIST else { break }
        }
        throw TessError(.io, "cannot name the new file in \(Self.folder(of: path)): \(errnoMessage())", path: path)
    }

    /// A destination that exists may be replaced only when asked, and only if it is a regular
    /// file: never a device, FIFO, socket, folder or symbolic link.
    static func checkDestination(_ path: String, replaceExisting: Bool) throws {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw TessError(.io, "exists and is not a regular file (\(fileKind(info.st_mode))); refusing to replace it", path: path)
        }
        guard replaceExisting else { throw TessError(.io, "already exists (use --force to replace it)", path: path) }
    }

    static func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }

    static func fileKind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFDIR: return "a folder"
        case S_IFLNK: return "a symbolic link"
        case S_IFIFO: return "a FIFO"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        case S_IFSOCK: return "a socket"
        default: return "not a regular file"
        }
    }

    static func temporaryPrefix(of path: String) -> String {
        let base = path.split(separator: "/").last.map(String.init) ?? path
        return "\(folder(of: path))/.\(base).tmp-"
    }

    /// Delete `.NAME.tmp-PID-*` files of `path` whose writer (PID) is no longer running.
    static func removeStaleTemporaries(of path: String) {
        let folder = folder(of: path)
        let prefix = String(temporaryPrefix(of: path).dropFirst(folder.count + 1))
        guard let dir = opendir(folder) else { return }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            // d_name is read in place: a record is only as long as its name, so copying the
            // declared 256-byte array reads past the end of the last record (AddressSanitizer).
            let name = String(cString: UnsafeRawPointer(entry).advanced(by: MemoryLayout<dirent>.offset(of: \dirent.d_name)!)
                .assumingMemoryBound(to: CChar.self))
            guard name.hasPrefix(prefix), let pid = Int32(name.dropFirst(prefix.count).prefix { $0 != "-" }), pid > 0 else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH { unlink("\(folder)/\(name)") }
        }
    }

    static func folder(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let folder = String(path[..<slash])
        return folder.isEmpty ? "/" : folder
    }
}

/// The outputs of one command, put in place together: each is written in full and flushed
/// before any appears under its final name. No output may be one of the command's inputs or
/// another of its outputs.
public final class OutputGroup {
    private var inputs: [(path: String, identity: FileIdentity)] = []
    private var files: [AtomicFile] = []

    /// `inputs`: the files the command reads (those that do not exist are ignored).
    public init(inputs: [String] = []) {
        for input in inputs { addInput(input) }
    }

    /// Record a file the command reads, discovered while it runs (external data, say).
    public func addInput(_ path: String) {
        if let identity = FileIdentity(path) { inputs.append((path, identity)) }
    }

    /// A new output at `path`, checked against the inputs and the other outputs now (so a
    /// mistake costs nothing) and again when the group commits.
    public func file(_ path: String, replaceExisting: Bool) throws -> AtomicFile {
        try check(path)
        let canonical = FileIdentity.canonicalPath(path)
        if files.contains(where: { FileIdentity.canonicalPath($0.path) == canonical }) {
            throw TessError(.invalidArgument, "is named as two outputs of the same command", path: path)
        }
        let file = try AtomicFile(path: path, replaceExisting: replaceExisting)
        files.append(file)
        return file
    }

    /// Flush every output, then link each into place; if one fails, those already placed that
    /// did not replace a file are removed again, and the rest are discarded.
    public func commit() throws {
        do {
            for file in files { try check(file.path); try file.flush() }
        } catch {
            discard()
            throw error
        }
        var placed: [AtomicFile] = []
        for file in files {
            do {
                try file.link()
                placed.append(file)
            } catch {
                for done in placed where !done.replaced { unlink(done.path) }
                discard()
                throw error
            }
        }
    }

    public func discard() { files.forEach { $0.discard() } }

    private func check(_ output: String) throws {
        let canonical = FileIdentity.canonicalPath(output)
        let identity = FileIdentity(output)
        for input in inputs where (identity != nil && identity == input.identity) || FileIdentity.canonicalPath(input.path) == canonical {
            throw TessError(.invalidArgument, "is an input of this command (\(input.path)); refusing to overwrite it", path: output)
        }
    }
}

/// A file's device and inode: two paths name the same file exactly when these are equal.
public struct FileIdentity: Hashable, Sendable {
    public let device: UInt64
    public let inode: UInt64

    /// The identity of the file `path` names (following symbolic links), or nil if there is none.
    public init?(_ path: String) {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
    }

    /// `path` with its folder resolved (the file itself may not exist yet).
    static func canonicalPath(_ path: String) -> String {
        let folder = AtomicFile.folder(of: path)
        let base = path.split(separator: "/").last.map(String.init) ?? path
        guard let resolved = realpath(folder, nil) else { return path }
        defer { free(resolved) }
        return String(cString: resolved) + "/" + base
    }
}
