import CZstd

/// Every call into libzstd. Status codes are mapped to `TessError` in `check`.
enum Zstd {
    /// Compress `input` into one frame that records its content size, handing the output to
    /// `sink` in pieces of `ZSTD_CStreamOutSize()` bytes, so memory stays small for any input.
    /// Returns the frame's size.
    @discardableResult
    static func compress(_ input: UnsafeRawBufferPointer, level: Int,
                         into sink: (UnsafeRawBufferPointer) throws -> Void) throws -> Int {
        guard let context = ZSTD_createCCtx() else { throw TessError(.codec, "zstd cannot allocate a compression context") }
        defer { ZSTD_freeCCtx(context) }
        _ = try check(ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, Int32(level)), "set level")
        _ = try check(ZSTD_CCtx_setPledgedSrcSize(context, UInt64(input.count)), "set size")
        var output = [UInt8](repeating: 0, count: ZSTD_CStreamOutSize())
        var source = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
        var total = 0
        var remaining = 1
        while remaining != 0 {
            remaining = try output.withUnsafeMutableBytes { out -> Int in
                var target = ZSTD_outBuffer(dst: out.baseAddress, size: out.count, pos: 0)
                let left = try check(ZSTD_compressStream2(context, &target, &source, ZSTD_e_end), "compress")
                try sink(UnsafeRawBufferPointer(rebasing: out[0 ..< target.pos]))
                total += target.pos
                return left
            }
        }
        return total
    }

    /// Compress `input` into one frame held in memory.
    static func compress(_ input: UnsafeRawBufferPointer, level: Int) throws -> [UInt8] {
        var frame: [UInt8] = []
        try compress(input, level: level) { frame.append(contentsOf: $0) }
        return frame
    }

    /// Decode one zstd frame that must produce exactly `decodedLength` bytes, straight into
    /// memory that is neither zero-filled nor touched ahead of the decoder: a frame that is
    /// corrupt at its first block costs a block of memory, not its declared size. The size is
    /// checked against `MemoryBudget` first.
    static func decompress(_ input: UnsafeRawBufferPointer, decodedLength: Int) throws -> TensorBytes {
        // The writer always records the content size; a frame that disagrees is rejected
        // before anything is allocated.
        let declared = try frameContentSize(input)
        guard declared == decodedLength else {
            throw TessError(.codec, "zstd frame declares \(declared) content bytes, buffer table says \(decodedLength)")
        }
        let output = try HeapBytes(count: decodedLength, what: "decoding \(decodedLength) bytes")
        let produced = try check(ZSTD_decompress(output.base, decodedLength, input.baseAddress, input.count), "decompress")
        guard produced == decodedLength else {
            throw TessError(.codec, "zstd frame decoded to \(produced) bytes, buffer table says \(decodedLength)")
        }
        return TensorBytes(output)
    }

    /// The decoded size one zstd frame records in its header. Writers always record it; a frame
    /// without it, or bytes that are not exactly one frame, are refused.
    static func frameContentSize(_ input: UnsafeRawBufferPointer) throws -> Int {
        let frameSize = ZSTD_findFrameCompressedSize(input.baseAddress, input.count)
        if ZSTD_isError(frameSize) != 0 || frameSize != input.count {
            throw TessError(.codec, "stored bytes are not exactly one zstd frame")
        }
        let declared = ZSTD_getFrameContentSize(input.baseAddress, input.count)
        guard declared != ZSTD_CONTENTSIZE_UNKNOWN, declared != ZSTD_CONTENTSIZE_ERROR, declared <= UInt64(Int.max) else {
            throw TessError(.codec, "zstd frame does not record its content size")
        }
        return Int(declared)
    }

    static var versionString: String { String(cString: ZSTD_versionString()) }

    private static func check(_ status: Int, _ what: String) throws -> Int {
        if ZSTD_isError(status) != 0 {
            throw TessError(.codec, "zstd \(what) failed: \(String(cString: ZSTD_getErrorName(status)))")
        }
        return status
    }
}
