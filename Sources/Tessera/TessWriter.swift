#if canImport(Glibc)
import Glibc
#endif

/// How a writer lays out and encodes buffers.
public struct WriteOptions: Sendable, Equatable {
    /// Buffer alignment: a power of two in `Limits.minAlignment...Limits.maxAlignment`.
    public var alignment: Int
    /// Codec applied to every buffer.
    public var codec: Codec
    /// zstd level when `codec == .zstd`.
    public var zstdLevel: Int
    /// Replace an existing file at the destination (otherwise that is an error).
    public var replaceExisting: Bool

    public init(alignment: Int = Limits.defaultAlignment, codec: Codec = .none, zstdLevel: Int = 3,
                replaceExisting: Bool = false) {
        self.alignment = alignment
        self.codec = codec
        self.zstdLevel = zstdLevel
        self.replaceExisting = replaceExisting
    }
}

/// Writes a .tess file tensor by tensor.
///
/// Buffers go to a temporary file in the destination's folder as tensors are appended, so a
/// model is never held twice; `finish` appends the index, patches the header, flushes and
/// renames. Until then nothing exists under the final name, and a writer that is dropped or
/// fails removes its temporary file. The same tensors, sections and options give the same bytes.
public final class TessWriter {
    public let path: String
    public let options: WriteOptions
    private let temporaryPath: String
    private var fd: Int32
    private var position: Int
    private var index = FileIndex()
    private var names = Set<String>()
    private var finished = false

    public init(path: String, options: WriteOptions = WriteOptions()) throws {
        guard options.alignment.nonzeroBitCount == 1,
              (Limits.minAlignment ... Limits.maxAlignment).contains(options.alignment) else {
            throw TessError(.invalidArgument, "alignment \(options.alignment) is not a power of two in \(Limits.minAlignment)...\(Limits.maxAlignment)")
        }
        guard options.codec == .none || Limits.zstdLevels.contains(options.zstdLevel) else {
            throw TessError(.invalidArgument, "zstd level \(options.zstdLevel) is outside \(Limits.zstdLevels.lowerBound)...\(Limits.zstdLevels.upperBound)")
        }
        if !options.replaceExisting, access(path, F_OK) == 0 {
            throw TessError(.io, "already exists (use --force to replace it)", path: path)
        }
        self.path = path
        self.options = options
        let folder = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        let base = path.split(separator: "/").last.map(String.init) ?? path
        var template = Array("\(folder.isEmpty ? "/" : folder)/.\(base).tmp-XXXXXX".utf8CString)
        fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else {
            throw TessError(.io, "cannot create a temporary file in \(folder): \(errnoMessage())", path: path)
        }
        temporaryPath = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        fchmod(fd, 0o644)
        position = 0
        do {
            try writeAll([UInt8](repeating: 0, count: FileHeader.size))   // patched by finish()
        } catch {
            abort()
            throw error
        }
    }

    deinit { if !finished { abort() } }

    /// Validate `tensor` and write its buffers.
    public func append(_ tensor: Tensor) throws {
        try requireOpen()
        do {
            try tensor.validate()
            guard names.insert(tensor.name).inserted else {
                throw TessError(.badName, "a tensor with this name was already written", tensor: tensor.name)
            }
            let entry = try tensor.mapBuffers { _, bytes in try writeBuffer(bytes) }
            index.tensors.append(entry)
        } catch {
            abort()
            throw error
        }
    }

    /// Write the index (with `sections`, sorted by kind) and the header, then flush and rename
    /// onto the final path.
    public func finish(sections: [Section] = []) throws {
        try requireOpen()
        do {
            index.sections = try Self.checkedSections(sections)
            try pad(to: alignUp(position, options.alignment))
            let indexBytes = index.encode()
            guard indexBytes.count <= Limits.maxIndexBytes else {
                throw TessError(.limitExceeded, "index would be \(indexBytes.count) bytes, over the limit of \(Limits.maxIndexBytes)")
            }
            let header = FileHeader(alignment: options.alignment, indexOffset: position, indexLength: indexBytes.count,
                                    indexChecksum: Checksum.xxh3(indexBytes))
            try writeAll(indexBytes)
            let headerBytes = header.encode()
            let written = headerBytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
            guard written == headerBytes.count else { throw ioError("cannot write the header") }
            guard fsync(fd) == 0 else { throw ioError("cannot flush") }
            close(fd)
            fd = -1
            if !options.replaceExisting, access(path, F_OK) == 0 {
                throw TessError(.io, "already exists (use --force to replace it)", path: path)
            }
            guard rename(temporaryPath, path) == 0 else { throw ioError("cannot rename the temporary file into place") }
            finished = true
            syncFolder()
        } catch {
            abort()
            throw error
        }
    }

    /// Give up: close and delete the temporary file. Safe to call more than once.
    public func abort() {
        if fd >= 0 { close(fd); fd = -1 }
        if !finished { unlink(temporaryPath) }
        finished = true
    }

    /// Write a whole model in one call.
    public static func write(_ tensors: [Tensor], sections: [Section] = [], to path: String,
                             options: WriteOptions = WriteOptions()) throws {
        let writer = try TessWriter(path: path, options: options)
        for t in tensors { try writer.append(t) }
        try writer.finish(sections: sections)
    }

    // MARK: - Internals

    private func writeBuffer(_ bytes: TensorBytes) throws -> Int {
        guard index.buffers.count < Limits.maxBufferCount else {
            throw TessError(.limitExceeded, "more than \(Limits.maxBufferCount) buffers")
        }
        try pad(to: alignUp(position, options.alignment))
        let offset = position
        let (checksum, stored): (UInt64, Int) = try bytes.withUnsafeBytes { raw in
            let checksum = Checksum.xxh3(raw)
            switch options.codec {
            case .none:
                try writeAll(raw)
                return (checksum, raw.count)
            case .zstd:
                let compressed = try Zstd.compress(raw, level: options.zstdLevel)
                try writeAll(compressed)
                return (checksum, compressed.count)
            }
        }
        index.buffers.append(BufferEntry(offset: offset, storedLength: stored, decodedLength: bytes.count,
                                         checksum: checksum, codec: options.codec))
        return index.buffers.count - 1
    }

    private static func checkedSections(_ sections: [Section]) throws -> [Section] {
        guard sections.count <= Limits.maxSectionCount else {
            throw TessError(.limitExceeded, "\(sections.count) sections exceed the limit of \(Limits.maxSectionCount)")
        }
        let sorted = sections.sorted { $0.kind < $1.kind }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.kind == b.kind {
            throw TessError(.badSection, "section kind \(a.kind) appears twice")
        }
        for s in sorted { try FileSections.validate(s) }
        return sorted
    }

    private func requireOpen() throws {
        if finished { throw TessError(.invalidArgument, "the writer was already finished or aborted", path: path) }
    }

    private func pad(to target: Int) throws {
        if target > position { try writeAll([UInt8](repeating: 0, count: target - position)) }
    }

    private func writeAll(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try writeAll($0) } }

    private func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw ioError("cannot write")
            }
            done += n
        }
        position += bytes.count
    }

    private func ioError(_ what: String) -> TessError {
        TessError(.io, "\(what): \(errnoMessage())", path: path)
    }

    /// Make the rename durable; failure here does not undo a completed write.
    private func syncFolder() {
        let folder = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        let dfd = Glibc.open(folder.isEmpty ? "/" : folder, O_RDONLY | O_DIRECTORY)
        if dfd >= 0 { fsync(dfd); close(dfd) }
    }
}
