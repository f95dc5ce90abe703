import FuzzSupport
import Foundation
import Tessera
import TesseraONNX

/// Any bytes as an ONNX model: convert (uncompressed, to keep iterations fast), then export.
/// Errors are expected; a crash, hang or leak is a bug.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let model = FuzzSupport.file("model.onnx", data, size)
    let tess = model + ".tess", back = model + ".back.onnx"
    guard (try? ONNXImporter.convert(model: model, to: tess, options: WriteOptions(replaceExisting: true))) != nil,
          let file = try? TessFile.open(tess) else { return 0 }
    _ = try? ONNXExporter.export(file, to: back, options: ExportOptions(replaceExisting: true))
    return 0
}
