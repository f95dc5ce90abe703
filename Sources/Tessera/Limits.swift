/// Every bound the reader and writer enforce, in one place.
///
/// `spec/FORMAT.md` ("Limits") mirrors this table; change both together.
public enum Limits {
    /// Length of a tensor name in UTF-8 bytes. Names are never truncated.
    public static let maxNameBytes = 4096
    /// Number of dimensions of one tensor.
    public static let maxRank = 16
    /// Elements in one tensor (product of its dims).
    public static let maxElementCount: Int = 1 << 48
    /// Tensors in one file.
    public static let maxTensorCount = 1_000_000
    /// Buffers in one file (a tensor uses at most five).
    public static let maxBufferCount = 5 * maxTensorCount
    /// Sections in the index.
    public static let maxSectionCount = 64
    /// Bytes of the whole index (tensor table, buffer table, sections).
    public static let maxIndexBytes = 512 << 20
    /// Bytes of the metadata JSON document.
    public static let maxMetadataBytes = 16 << 20
    /// Bytes of the graph section.
    public static let maxGraphBytes = 256 << 20
    /// Default cap on one buffer's decoded size; `ReadLimits` can lower it.
    public static let defaultMaxDecodedBufferBytes = 64 << 30
    /// zstd cannot expand input more than this: its largest block (128 KiB) costs at least
    /// 4 bytes (an RLE block), so a stored length bounds the decoded length before decoding.
    public static let maxZstdExpansion = 32_768
    /// Smallest and largest buffer alignment (both powers of two).
    public static let minAlignment = 8
    public static let maxAlignment = 4096
    /// Alignment the writer uses unless told otherwise (a cache line, enough for AVX-512).
    public static let defaultAlignment = 64
    /// zstd levels accepted by the writer.
    public static let zstdLevels = 1...22
}

/// Caps a reader applies on top of the format's fixed limits, for constrained devices.
public struct ReadLimits: Sendable {
    /// Largest decoded size of one buffer the reader will allocate.
    public var maxDecodedBufferBytes: Int

    public init(maxDecodedBufferBytes: Int = Limits.defaultMaxDecodedBufferBytes) {
        self.maxDecodedBufferBytes = maxDecodedBufferBytes
    }

    public static let `default` = ReadLimits()
}
