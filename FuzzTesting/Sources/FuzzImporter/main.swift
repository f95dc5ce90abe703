import Foundation
import Tessera
import TesseraONNX

/// Any bytes as an ONNX model: convert (uncompressed, to keep iterations fast), then export.
/// Errors are expected; a crash, hang or leak is a bug.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let folder = NSTemporaryDirectory() + "fuzz-importer-\(getpid())"
    try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    let model = folder + "/model.onnx", tess = folder + "/model.tess", back = folder + "/back.onnx"
    FileManager.default.createFile(atPath: model, contents: Data(bytes: data, count: size))
    guard (try? ONNXImporter.convert(model: model, to: tess, options: WriteOptions(replaceExisting: true))) != nil,
          let file = try? TessFile.open(tess) else { return 0 }
    _ = try? ONNXExporter.export(file, to: back, options: ExportOptions(replaceExisting: true))
    return 0
}
