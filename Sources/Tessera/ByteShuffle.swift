/// Byte planes: element i's byte j moves to position j * count + i. Float weights compress
/// better this way (sign and exponent bytes repeat; mantissa bytes are noise): MiniLM's
/// float32 weights go from 1.08x to 1.17x under zstd -3 (docs/COMPRESSION.md).
enum ByteShuffle {
    static let widths: Set<Int> = [2, 4, 8]

    static func shuffle(_ input: UnsafeRawBufferPointer, width: Int) -> [UInt8] {
        let count = input.count / width
        return [UInt8](unsafeUninitializedCapacity: input.count) { out, initialized in
            for j in 0 ..< width {
                let plane = j &* count
                var source = j
                for i in 0 ..< count {
                    out[plane &+ i] = input[source]
                    source &+= width
                }
            }
            initialized = input.count
        }
    }

    static func unshuffle(_ input: [UInt8], width: Int) -> [UInt8] {
        let count = input.count / width
        return [UInt8](unsafeUninitializedCapacity: input.count) { out, initialized in
            input.withUnsafeBufferPointer { planes in
                for j in 0 ..< width {
                    let plane = j &* count
                    var target = j
                    for i in 0 ..< count {
                        out[target] = planes[plane &+ i]
                        target &+= width
                    }
                }
            }
            initialized = input.count
        }
    }
}
