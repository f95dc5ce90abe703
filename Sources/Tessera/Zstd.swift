import CZstd

/// Every call into libzstd. Status codes are mapped to `TessError` in `check`.
enum Zstd {
    static func compress(_ input: UnsafeRawBufferPointer, level: Int) throws -> [UInt8] {
        let bound = ZSTD_compressBound(input.count)
        var output = [UInt8](repeating: 0, count: bound)
        let written = try output.withUnsafeMutableBytes { out in
            try check(ZSTD_compress(out.baseAddress, bound, input.baseAddress, input.count, Int32(level)), "compress")
        }
        output.removeSubrange(written...)
        return output
    }

    /// Decode one zstd frame that must produce exactly `decodedLength` bytes.
    static func decompress(_ input: UnsafeRawBufferPointer, decodedLength: Int) throws -> [UInt8] {
        let frameSize = ZSTD_findFrameCompressedSize(input.baseAddress, input.count)
        if ZSTD_isError(frameSize) != 0 || frameSize != input.count {
            throw TessError(.codec, "stored bytes are not exactly one zstd frame")
        }
        let declared = ZSTD_getFrameContentSize(input.baseAddress, input.count)
        // The writer always records the content size; a frame that disagrees is rejected
        // before anything is allocated.
        if declared != UInt64(decodedLength) {
            throw TessError(.codec, "zstd frame declares \(declared == ZSTD_CONTENTSIZE_UNKNOWN ? "no" : String(declared)) content bytes, buffer table says \(decodedLength)")
        }
        var output = [UInt8](repeating: 0, count: decodedLength)
        let produced = try output.withUnsafeMutableBytes { out in
            try check(ZSTD_decompress(out.baseAddress, decodedLength, input.baseAddress, input.count), "decompress")
        }
        guard produced == decodedLength else {
            throw TessError(.codec, "zstd frame decoded to \(produced) bytes, buffer table says \(decodedLength)")
        }
        return output
    }

    static var versionString: String { String(cString: ZSTD_versionString()) }

    private static func check(_ status: Int, _ what: String) throws -> Int {
        if ZSTD_isError(status) != 0 {
            throw TessError(.codec, "zstd \(what) failed: \(String(cString: ZSTD_getErrorName(status)))")
        }
        return status
    }
}
