import Foundation
import Tessera

/// Any bytes as a .tess file: open, load every tensor (checksums and content rules), densify.
/// Errors are expected; a crash, hang or leak is a bug.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let path = NSTemporaryDirectory() + "fuzz-reader-\(getpid()).tess"
    FileManager.default.createFile(atPath: path, contents: Data(bytes: data, count: size))
    guard let file = try? TessFile.open(path, limits: ReadLimits(maxDecodedBufferBytes: 64 << 20)) else { return 0 }
    for i in file.tensors.indices {
        guard let tensor = try? file.tensor(i) else { continue }
        _ = try? tensor.densify()
        _ = try? tensor.encoded(as: .dense)
    }
    return 0
}
