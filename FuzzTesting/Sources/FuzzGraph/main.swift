import FuzzSupport
import TesseraONNX

/// Any bytes as an ONNX model, run by the graph executor on small generated inputs: every op's
/// shape logic (broadcasting, Reshape, Expand, Tile, Range, Pad, Gather, Conv and pool windows)
/// on hostile constants and attributes, under an 8 MiB budget. Errors are expected; a crash, hang or leak is a bug.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let model = FuzzSupport.file("graph.onnx", data, size)
    if let graph = try? ONNXGraph(model: model) { FuzzSupport.run(graph) }
    return 0
}
