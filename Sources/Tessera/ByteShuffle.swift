/// Byte planes: element i's byte j moves to position j * count + i. Float weights compress
/// better this way (sign and exponent bytes repeat; mantissa bytes are noise): MiniLM's
/// float32 weights go from 1.08x to 1.17x under zstd -3 (docs/COMPRESSION.md).
enum ByteShuffle {
    static let widths: Set<Int> = [2, 4, 8]

    /// Shuffle `input` into `out` in one sequential pass, writing `width` output streams. `out`'s
    /// memory is reused from call to call: a writer shuffling buffer after buffer would
    /// otherwise fault in (and the kernel zero) fresh pages for every one.
    static func shuffle(_ input: UnsafeRawBufferPointer, width: Int, into out: inout [UInt8]) {
        if out.count != input.count {
            if out.capacity >= input.count {
                out.removeAll(keepingCapacity: true)
                out.append(contentsOf: repeatElement(0, count: input.count))
            } else {
                out = [UInt8](repeating: 0, count: input.count)
            }
        }
        guard input.count > 0 else { return }   // an empty view may have no base address
        let count = input.count / width
        out.withUnsafeMutableBufferPointer { out in
            let source = input.bindMemory(to: UInt8.self).baseAddress!
            let target = out.baseAddress!
            switch width {
            case 4:
                for i in 0 ..< count {
                    let v = UInt32(littleEndian: UnsafeRawPointer(source + i &* 4).loadUnaligned(as: UInt32.self))
                    target[i] = UInt8(truncatingIfNeeded: v)
                    target[count &+ i] = UInt8(truncatingIfNeeded: v >> 8)
                    target[2 &* count &+ i] = UInt8(truncatingIfNeeded: v >> 16)
                    target[3 &* count &+ i] = UInt8(truncatingIfNeeded: v >> 24)
                }
            default:
                for i in 0 ..< count {
                    for j in 0 ..< width { target[j &* count &+ i] = source[i &* width &+ j] }
                }
            }
        }
    }

    static func unshuffle(_ input: TensorBytes, width: Int) throws -> TensorBytes {
        let out = try HeapBytes(count: input.count, what: "unshuffling \(input.count) bytes")
        let count = input.count / width
        input.withUnsafeBytes { planes in
            guard let source = planes.bindMemory(to: UInt8.self).baseAddress else { return }
            let target = out.base.assumingMemoryBound(to: UInt8.self)
            for i in 0 ..< count {
                for j in 0 ..< width { target[i &* width &+ j] = source[j &* count &+ i] }
            }
        }
        return TensorBytes(out)
    }
}
