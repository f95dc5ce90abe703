import Foundation
import Tessera
import TesseraONNX
import TesseraRuntime

/// What the targets share: a scratch file per process, and running a graph on small inputs.
public enum FuzzSupport {
    /// Write the fuzzer's bytes to a file of this process named `name`, and return its path.
    public static func file(_ name: String, _ data: UnsafePointer<UInt8>, _ size: Int) -> String {
        let path = NSTemporaryDirectory() + "fuzz-\(getpid())-\(name)"
        FileManager.default.createFile(atPath: path, contents: Data(bytes: data, count: size))
        return path
    }

    /// Build the executor for `graph` and run it on generated inputs of at most 4096 elements
    /// each (fixed dims as declared, others 2), under an 8 MiB memory budget (larger values are
    /// legitimate but slow in a debug ASan build): the shape logic of
    /// every op meets whatever shapes, attributes and constants the input holds.
    public static func run(_ graph: ONNXGraph) {
        MemoryBudget.bytes = 8 << 20
        guard let executor = try? GraphExecutor(graph) else { return }
        var inputs: [String: Value] = [:]
        for info in graph.inputs {
            let shape = (info.dims ?? []).map { d -> Int in
                if case .fixed(let n) = d { return n }
                return 2
            }
            guard shape.allSatisfy({ $0 >= 0 }), let count = try? TensorGeometry(shape: shape).elementCount, count <= 4096 else { return }
            let type = DataType(number: info.elementType) ?? .float
            if type == .bool {
                inputs[info.name] = Value((0 ..< count).map { $0 % 3 == 0 }, shape: shape)
            } else if type.isFloatingPoint {
                inputs[info.name] = Value((0 ..< count).map { Float($0 % 7) - 3 }, shape: shape, type: type)
            } else {
                inputs[info.name] = Value((0 ..< count).map { Int64($0 % 5) - 1 }, shape: shape, type: type)
            }
        }
        _ = try? executor.run(inputs)
    }
}
