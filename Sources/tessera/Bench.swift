import ArgumentParser
import Foundation
import Tessera
import TesseraRuntime
import TesseraVerify

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time each GEMM weight's kernel against the dense float32 kernel on the same shape.",
        discussion: """
            For dense and 2:4 weights with symmetric int8 codes and one scale per output, each batch is \
            also timed with the activations quantized to uint8 and integer sums (the "uint8 x ms" \
            column; LinearOperator.applyQuantizingActivations), the arithmetic of onnxruntime's MatMulInteger.
            """)

    @Argument(help: "A .tess file.")
    var file: String

    @Option(help: "The batch (activation rows) timed next to batch 1.")
    var batch = 32

    @Option(help: "Threads per kernel call.")
    var threads = 1

    @Option(help: "Seconds spent timing each kernel (the best run is reported).")
    var budget = 0.2

    @OptionGroup var resources: ResourceOptions

    func validate() throws {
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1") }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        guard budget > 0 else { throw ValidationError("--budget must be positive") }
    }

    func run() throws {
        GraphExecutor.keepFreedMemoryForReuse()
        try reportingErrors {
            resources.apply()
            let tess = try TessFile.open(file)
            print("\(file.terminalSafe): kernel against dense float32 on the same shape, \(threads) thread(s), \(KernelDispatch.selected.rawValue) kernels, best of \(budget) s")
            var rows = [["tensor", "layout", "quant", "rows x depth", "batch", "kernel ms", "dense ms", "speedup", "uint8 x ms"]]
            for index in tess.tensors.indices {
                let stored = try tess.tensor(index)
                guard stored.reductionAxis != nil, let op = try? LinearOperator(stored) else { continue }
                let dense = try LinearOperator(Tensor(name: stored.name, dataType: .float, shape: stored.shape, role: stored.role,
                                                      reductionAxis: stored.reductionAxis,
                                                      storage: .dense(values: TensorBytes(float32: try stored.densify()))))
                for n in Set([1, batch]).sorted() {
                    let x = SourceVerifier.activations(count: n * op.depth, seed: 1)
                    let kernel = time(op, x, n), reference = time(dense, x, n)
                    let integer = op.runsQuantizedActivations ? time(op, x, n, quantizingActivations: true) : nil
                    rows.append([stored.name, stored.storage.kind.description, stored.quantization.map { "\($0.codeType)" } ?? "-",
                                 "\(op.rows) x \(op.depth)", "\(n)", String(format: "%.4f", kernel * 1e3),
                                 String(format: "%.4f", reference * 1e3), String(format: "%.2fx", reference / kernel),
                                 integer.map { String(format: "%.4f", $0 * 1e3) } ?? "-"])
                }
            }
            guard rows.count > 1 else {
                print("no GEMM weights (tensors with a reduction axis) to time")
                return
            }
            TextTable.lines(rows).forEach { print($0) }
        }
    }

    /// Best seconds per call of `op` on `x` over the budget (after one warm-up call).
    private func time(_ op: LinearOperator, _ x: [Float], _ n: Int, quantizingActivations: Bool = false) -> Double {
        var y = [Float](repeating: 0, count: n * op.rows)
        return x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in
                let xBase = xp.baseAddress!, yBase = yp.baseAddress!
                return Timing.best(budget: budget) {
                    if quantizingActivations {
                        op.applyQuantizingActivations(xBase, batch: n, into: yBase, threads: threads)
                    } else {
                        op.apply(xBase, batch: n, into: yBase, threads: threads)
                    }
                }
            }
        }
    }
}
