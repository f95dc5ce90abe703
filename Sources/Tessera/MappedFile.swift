#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A read-only memory map of a whole file, unmapped when the last reference goes.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let bytes: UnsafeRawBufferPointer

    /// Maps `path`, which must be a regular file. It is opened without blocking, so a FIFO or
    /// device is refused at once instead of waiting for a writer.
    public init(path: String) throws {
        self.path = path
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        guard fd >= 0 else { throw TessError(.io, "cannot open: \(errnoMessage())", path: path) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw TessError(.io, "cannot stat: \(errnoMessage())", path: path) }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw TessError(.io, "is \(AtomicFile.fileKind(info.st_mode)), not a regular file", path: path)
        }
        let size = Int(info.st_size)
        if size == 0 {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        guard let address = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), address != MAP_FAILED else {
            throw TessError(.io, "cannot map \(size) bytes: \(errnoMessage())", path: path)
        }
        bytes = UnsafeRawBufferPointer(start: address, count: size)
    }

    deinit {
        if let base = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), bytes.count) }
    }
}

func errnoMessage() -> String { String(cString: strerror(errno)) }
