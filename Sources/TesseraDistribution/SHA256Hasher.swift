@preconcurrency import Crypto
import Foundation

/// Incremental SHA-256 to a `Digest`.
struct SHA256Hasher {
    private var inner = SHA256()
    mutating func update(_ data: some DataProtocol) { inner.update(data: data) }
    mutating func update(_ bytes: UnsafeRawBufferPointer) { inner.update(bufferPointer: bytes) }
    func finalize() -> Digest { Digest(hex: inner.finalize().hexString) }
}
