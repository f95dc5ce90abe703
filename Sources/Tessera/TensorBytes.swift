#if canImport(Glibc)
import Glibc
#endif

/// The bytes of one buffer: owned, or a zero-copy view into a mapped file that it keeps alive.
public struct TensorBytes: Sendable, Equatable, ExpressibleByArrayLiteral, CustomStringConvertible {
    // Unchecked because of the borrowed pointer: it is only read, and its owner keeps it valid.
    private enum Backing: @unchecked Sendable {
        case owned([UInt8])
        case heap(HeapBytes)
        case mapped(MappedFile, offset: Int, count: Int)
        case borrowed(UnsafeRawBufferPointer, owner: AnyObject & Sendable)
    }

    private let backing: Backing

    public init(_ bytes: [UInt8]) { backing = .owned(bytes) }
    public init(arrayLiteral elements: UInt8...) { backing = .owned(elements) }
    init(_ heap: HeapBytes) { backing = .heap(heap) }

    /// A view of `count` bytes at `offset` in `file`; no copy is made. The range must lie
    /// within the file.
    public init(mapped file: MappedFile, offset: Int, count: Int) {
        precondition(offset >= 0 && count >= 0 && offset <= file.bytes.count - count, "range outside the mapped file")
        backing = .mapped(file, offset: offset, count: count)
    }

    /// A view of memory that `owner` keeps valid and unchanged for as long as it lives; no copy
    /// is made. For bytes inside a parsed model that are written out before the model is freed.
    public init(unsafeBorrowing bytes: UnsafeRawBufferPointer, owner: AnyObject & Sendable) {
        backing = .borrowed(bytes, owner: owner)
    }

    /// Little-endian bytes of `values`.
    public init<T: FixedWidthInteger>(littleEndian values: [T]) {
        var out = [UInt8]()
        out.reserveCapacity(values.count * MemoryLayout<T>.size)
        for v in values { Swift.withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        backing = .owned(out)
    }

    /// Little-endian bytes of `values` (IEEE binary32).
    public init(float32 values: [Float]) { self.init(littleEndian: values.map(\.bitPattern)) }

    public var count: Int {
        switch backing {
        case .owned(let a): return a.count
        case .heap(let h): return h.count
        case .mapped(_, _, let count): return count
        case .borrowed(let bytes, _): return bytes.count
        }
    }

    /// True when the bytes are a view into a mapped file rather than a copy.
    public var isZeroCopy: Bool {
        if case .mapped = backing { return true }
        return false
    }

    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        switch backing {
        case .owned(let a):
            return try a.withUnsafeBytes(body)
        case .heap(let h):
            return try withExtendedLifetime(h) { try body(UnsafeRawBufferPointer(start: h.base, count: h.count)) }
        case .mapped(let file, let offset, let count):
            return try body(UnsafeRawBufferPointer(rebasing: file.bytes[offset ..< offset + count]))
        case .borrowed(let bytes, let owner):
            return try withExtendedLifetime(owner) { try body(bytes) }
        }
    }

    /// A copy as an array.
    public var array: [UInt8] {
        switch backing {
        case .owned(let a): return a
        case .heap, .mapped, .borrowed: return withUnsafeBytes { Array($0) }
        }
    }

    public static func == (a: TensorBytes, b: TensorBytes) -> Bool {
        guard a.count == b.count else { return false }
        return a.withUnsafeBytes { pa in b.withUnsafeBytes { pb in pa.elementsEqual(pb) } }
    }

    public var description: String { "\(count) bytes" }
}

/// Memory from malloc, never zero-filled, so that pages are touched only as they are written
/// (a decoder that fails at its first block has used almost none of it). Failing to allocate is
/// an error, not a crash.
final class HeapBytes: @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    let count: Int

    init(count: Int, what: @autoclosure () -> String) throws {
        try MemoryBudget.check(count, what())
        guard let base = malloc(max(count, 1)) else {
            throw TessError(.limitExceeded, "\(what()): cannot allocate \(count) bytes")
        }
        self.base = base
        self.count = count
    }

    deinit { free(base) }
}
