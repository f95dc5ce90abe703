/// Element access for buffers of any bit width: 4-bit types two per byte (low nibble first),
/// wider types as `bitWidth / 8` little-endian bytes. Encoders and densify share it.
struct PackedElements {
    let bytes: UnsafeRawBufferPointer
    let bitWidth: Int
    var byteWidth: Int { bitWidth / 8 }

    init(_ bytes: UnsafeRawBufferPointer, _ type: DataType) {
        self.bytes = bytes
        self.bitWidth = type.bitWidth
    }

    @inline(__always)
    func nibble(_ i: Int) -> UInt8 {
        let b = bytes[i >> 1]
        return i & 1 == 0 ? b & 0x0F : b >> 4
    }

    /// The raw bits of element `i` when it is at most 8 bits wide (quantization codes).
    @inline(__always)
    func small(_ i: Int) -> UInt8 { bitWidth == 4 ? nibble(i) : bytes[i] }

    /// True when every bit of element `i` is zero (-0.0 is therefore not zero: keeping it
    /// keeps conversions bit-exact).
    @inline(__always)
    func isAllZero(_ i: Int) -> Bool {
        if bitWidth == 4 { return nibble(i) == 0 }
        let w = byteWidth
        var j = i &* w
        let end = j &+ w
        while j < end {
            if bytes[j] != 0 { return false }
            j &+= 1
        }
        return true
    }
}

/// A packed output buffer filled element by element, in order or at random positions.
struct PackedBuilder {
    private(set) var bytes: [UInt8]
    let bitWidth: Int
    private(set) var count = 0

    /// An empty builder for appending.
    init(_ type: DataType, reservingCapacity capacity: Int = 0) {
        bitWidth = type.bitWidth
        bytes = []
        bytes.reserveCapacity(type.byteCount(capacity))
    }

    /// `count` elements, every one set to `fill` (a code of at most 8 bits, or 0). The size is
    /// checked against `MemoryBudget` first: counts come from shapes in files.
    init(_ type: DataType, count: Int, fill: UInt8 = 0) throws {
        try MemoryBudget.check(type.byteCount(count), "\(count) \(type) elements")
        bitWidth = type.bitWidth
        self.count = count
        if bitWidth == 4 {
            bytes = [UInt8](repeating: (fill & 0x0F) | (fill << 4), count: type.byteCount(count))
            if count & 1 == 1 { bytes[bytes.count - 1] &= 0x0F }   // the unused high nibble stays zero
        } else {
            precondition(fill == 0 || bitWidth == 8, "only byte-wide codes have a non-zero fill")
            bytes = [UInt8](repeating: fill, count: type.byteCount(count))
        }
    }

    mutating func append(_ source: PackedElements, _ i: Int) {
        if bitWidth == 4 {
            appendNibble(source.nibble(i))
        } else {
            let w = bitWidth / 8
            bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: source.bytes[i * w ..< i * w + w]))
            count += 1
        }
    }

    mutating func appendNibble(_ v: UInt8) {
        if count & 1 == 0 { bytes.append(v & 0x0F) } else { bytes[bytes.count - 1] |= (v & 0x0F) << 4 }
        count += 1
    }

    /// Set element `i` to element `j` of `source`.
    mutating func set(_ i: Int, from source: PackedElements, _ j: Int) {
        if bitWidth == 4 {
            let v = source.nibble(j)
            let shift: UInt8 = i & 1 == 0 ? 0 : 4
            bytes[i >> 1] = (bytes[i >> 1] & ~(0x0F << shift)) | (v << shift)
        } else {
            let w = bitWidth / 8
            for k in 0 ..< w { bytes[i * w + k] = source.bytes[j * w + k] }
        }
    }
}

/// Maps a logical element index to its scale (and zero point) index.
public struct ScaleIndexer: Sendable {
    private let granularity: QuantizationGranularity
    private let axisLength: Int, inner: Int, block: Int, blocks: Int

    public init(_ granularity: QuantizationGranularity, geometry: TensorGeometry) {
        switch granularity {
        case .perTensor:
            self.granularity = .perTensor
            axisLength = 1; inner = 1; block = 1; blocks = 1
        case .perAxis(let axis):
            self.granularity = .perAxis(axis: axis)
            axisLength = geometry.shape[axis]; inner = geometry.product(axis + 1 ..< geometry.shape.count)
            block = 1; blocks = axisLength
        case .perGroup(let axis, let size):
            self.granularity = .perGroup(axis: axis, blockSize: size)
            axisLength = geometry.shape[axis]; inner = geometry.product(axis + 1 ..< geometry.shape.count)
            block = size; blocks = (axisLength + size - 1) / size
        }
    }

    @inline(__always)
    public func index(_ i: Int) -> Int {
        switch granularity {
        case .perTensor:
            return 0
        case .perAxis:
            return (i / inner) % axisLength
        case .perGroup:
            let outerAndAxis = i / inner, inside = i - outerAndAxis * inner
            let o = outerAndAxis / axisLength, a = outerAndAxis - o * axisLength
            return (o * blocks + a / block) * inner + inside
        }
    }
}
