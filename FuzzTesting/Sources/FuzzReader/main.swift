import FuzzSupport
import Tessera
import TesseraONNX

/// Any bytes as a .tess file: open, load every tensor (checksums and content rules), densify;
/// then the graph section: verify level 1's checks, and the graph run by the executor.
/// Errors are expected; a crash, hang or leak is a bug.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let path = FuzzSupport.file("reader.tess", data, size)
    guard let file = try? TessFile.open(path, limits: ReadLimits(maxDecodedBufferBytes: 64 << 20)) else { return 0 }
    for i in file.tensors.indices {
        guard let tensor = try? file.tensor(i) else { continue }
        _ = try? tensor.densify()
        _ = try? tensor.encoded(as: .dense)
    }
    if (try? GraphSection.validate(file)) != nil, let graph = try? ONNXGraph(file: file) { FuzzSupport.run(graph) }
    return 0
}
