/// The one error type of the format layer: what went wrong and where.
///
/// `code` says which rule was broken (tests assert on it); `tensor` and `offset` locate the
/// problem in the file; `description` is the one line a person reads.
public struct TessError: Error, Equatable, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable, CaseIterable {
        case io                      // the file could not be opened, read, written or renamed
        case notTessFile             // wrong magic
        case unsupportedVersion      // major version this reader does not know
        case unsupportedFeature      // a required feature bit or section this reader does not know
        case badEndianness           // endianness marker is not little-endian
        case headerChecksum
        case badHeader               // header size or alignment
        case fileSize                // file length disagrees with the header (truncated or extended)
        case truncated               // a structure runs past the end of its region
        case indexChecksum
        case badIndex                // the index's reserved field, bytes after its last section
        case limitExceeded
        case badName                 // empty, over-long, not UTF-8, or duplicate
        case unknownDataType
        case unknownLayout
        case unknownCodec
        case badCodecParameter       // a shuffle width that is not 2, 4 or 8, or does not divide the length
        case unknownRole
        case badShape                // rank, dims or element count
        case badReductionAxis
        case badQuantization
        case bufferLayout            // alignment, overlap, holes, padding, trailing bytes
        case bufferReference         // out of range, shared, or unreferenced
        case bufferSize              // decoded length disagrees with what the tensor needs
        case checksumMismatch
        case codec                   // a codec's rule: codec none's lengths, a zstd frame that is invalid or of the wrong size
        case csrRowPointers
        case csrColumnIndices
        case sparse24Metadata
        case badScale                // a quantization scale that is not finite and >= 0
        case badSection              // duplicate or malformed section
        case badMetadata             // metadata is not a JSON object
        case unsupportedOperation    // a valid tensor asked for something it cannot do (e.g. densify strings)
        case invalidArgument         // a caller asked for something impossible (writer options, tensors)
    }

    public var code: Code
    public var message: String
    /// Tensor the problem belongs to, when there is one.
    public var tensor: String?
    /// Absolute file offset of the offending bytes, when known.
    public var offset: Int?
    /// File the problem was found in, when known.
    public var path: String?

    public init(_ code: Code, _ message: String, tensor: String? = nil, offset: Int? = nil, path: String? = nil) {
        self.code = code
        self.message = message
        self.tensor = tensor
        self.offset = offset
        self.path = path
    }

    public var description: String {
        var where_: [String] = []
        if let path { where_.append(path) }
        if let offset { where_.append("offset \(offset)") }
        if let tensor { where_.append("tensor '\(tensor)'") }
        let prefix = where_.isEmpty ? "" : where_.joined(separator: ", ") + ": "
        return prefix + message
    }

    /// The same error, located in `tensor` unless it already names one.
    func inTensor(_ name: String) -> TessError {
        var copy = self
        if copy.tensor == nil { copy.tensor = name }
        return copy
    }

    func inFile(_ path: String) -> TessError {
        var copy = self
        if copy.path == nil { copy.path = path }
        return copy
    }
}
