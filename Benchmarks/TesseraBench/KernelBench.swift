import ArgumentParser
import Dispatch
import Foundation
import Tessera
import TesseraRuntime

/// Tessera's kernels next to numpy/OpenBLAS, scipy CSR and onnxruntime on the same shapes.
/// Shapes are M x K x N with N the batch: y = W·x with W [M, K], stored as a MatMul B [K, M].
/// Each shape is timed in interleaved rounds (the peers, then Tessera's kernels); every time is
/// the best over the rounds, and each target line gives the rounds' own ratios beside the best,
/// so that a slow spell of a shared machine shows as spread instead of as a ratio.
struct KernelBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernels",
        abstract: "Dense, CSR and 2:4 kernels (float and int8) against numpy, scipy and onnxruntime.")

    @Option(help: "Python with numpy, scipy, threadpoolctl and onnxruntime (for the peers).") var python = "python3"
    @Option(help: "Comma-separated M x K x N shapes.") var shapes = "768x768x128,3072x768x128,768x3072x128,4096x4096x32,4096x4096x1"
    @Option(help: "Comma-separated CSR sparsities.") var sparsities = "0.75,0.9,0.95"
    @Option(help: "Seconds spent timing each kernel in each round (the best run is reported).") var budget = 0.2
    @Option(help: "Interleaved rounds per shape: the peers, then Tessera's kernels.") var rounds = 3

    func validate() throws {
        guard rounds >= 1, budget > 0 else { throw ValidationError("--rounds must be at least 1 and --budget positive") }
    }

    func run() throws {
        let shapeList = shapes.split(separator: ",").map { $0.split(separator: "x").map { Int($0)! } }
        let csrLevels = sparsities.split(separator: ",").map { Double($0)! }
        let bandwidth = Self.readBandwidth()
        print("Kernel benchmark (best of \(rounds) interleaved rounds of \(budget) s per kernel; GFLOP/s = 2·M·K·N / time, dense-equivalent for sparse kernels)")
        print(String(format: "memory read bandwidth, one thread: %.1f GB/s (sum over a 1 GiB array)\n", bandwidth / 1e9))
        var checks: [String] = []

        for shape in shapeList {
            let (m, k, n) = (shape[0], shape[1], shape[2])
            let flops = 2.0 * Double(m * k * n)
            print("\(m) x \(k) x \(n)")
            print("  kernel                  threads   time ms   GFLOP/s   vs numpy dense   vs its peer")
            var model = SyntheticModel(seed: UInt64(m * 31 + k))
            let x = model.normal(n * k, std: 1)
            // `w8a8`: the activations quantized to uint8 too (applyQuantizingActivations), as
            // MatMulInteger's are; every other kernel keeps float activations.
            var variants: [(name: String, tensor: Tensor, peer: String, w8a8: Bool)] = []
            let dense = model.normal(k * m)
            variants.append(("dense f32", SyntheticModel.dense("w", dense, [k, m], role: .matmulB, axis: 0), "ort_fp32", false))
            variants.append(("dense int8", SyntheticModel.int8PerChannel("w", dense, k: k, n: m), "ort_int8", false))
            variants.append(("dense int8 W8A8", SyntheticModel.int8PerChannel("w", dense, k: k, n: m), "ort_int8", true))
            let pruned = model.pruned24(k, m)
            variants.append(("2:4 f32", try SyntheticModel.dense("w", pruned, [k, m], role: .matmulB, axis: 0).encoded(as: .sparse24), "numpy", false))
            let int8Sparse = try SyntheticModel.int8PerChannel("w", pruned, k: k, n: m).encoded(as: .sparse24)
            variants.append(("2:4 int8", int8Sparse, "ort_int8", false))
            variants.append(("2:4 int8 W8A8", int8Sparse, "ort_int8", true))
            for level in csrLevels {
                let w = model.prunedUnstructured(k * m, sparsity: level)
                variants.append(("csr \(Int(level * 100))%", try SyntheticModel.dense("w", w, [k, m], role: .matmulB, axis: 0).encoded(as: .csr), "scipy_csr_\(level)", false))
            }
            let ops = try variants.map { try LinearOperator($0.tensor) }
            var y = [Float](repeating: 0, count: n * m)
            // Per round: the peers' seconds (by peer and thread count), then ours (by variant and threads).
            var peerRounds: [[String: [String: Double]]] = [], ourRounds: [[[Int: Double]]] = Array(repeating: [], count: variants.count)
            for _ in 0 ..< rounds {
                peerRounds.append(try runPeers(shape: "\(m)x\(k)x\(n)")["\(m),\(k),\(n)"] ?? [:])
                for (v, variant) in variants.enumerated() {
                    var times: [Int: Double] = [:]
                    for threads in [1, 2] {
                        times[threads] = x.withUnsafeBufferPointer { xp in
                            y.withUnsafeMutableBufferPointer { yp in
                                Timing.best(budget: budget, maxRuns: 500) {
                                    if variant.w8a8 {
                                        ops[v].applyQuantizingActivations(xp.baseAddress!, batch: n, into: yp.baseAddress!, threads: threads)
                                    } else {
                                        ops[v].apply(xp.baseAddress!, batch: n, into: yp.baseAddress!, threads: threads)
                                    }
                                }
                            }
                        }
                    }
                    ourRounds[v].append(times)
                }
            }
            for (v, variant) in variants.enumerated() {
                for threads in [1, 2] {
                    let ours = ourRounds[v].map { $0[threads]! }, seconds = ours.min()!
                    /// The peer's best over the rounds, and its ratio to ours round by round.
                    func ratio(_ name: String) -> Ratio? {
                        let theirs = peerRounds.compactMap { $0[name]?[String(threads)] }
                        guard theirs.count == ours.count else { return nil }
                        return Ratio(best: theirs.min()! / seconds, rounds: zip(theirs, ours).map { $0 / $1 })
                    }
                    let numpy = ratio("numpy"), other = ratio(variant.peer)
                    var line = "  " + pad(variant.name, 24) + pad("\(threads)", 10) + pad(String(format: "%.3f", seconds * 1e3), 10)
                        + pad(String(format: "%.1f", flops / seconds / 1e9), 10)
                        + pad(numpy.map { String(format: "%.2fx", $0.best) } ?? "-", 17)
                        + (other.map { String(format: "%.2fx %@", $0.best, variant.peer) } ?? "-")
                    if n == 1 {
                        let bytes = variant.tensor.buffers.reduce(0) { $0 + $1.buffer.count }
                        line += String(format: "   weights %.1f GB/s = %.0f%% of bandwidth", Double(bytes) / seconds / 1e9, Double(bytes) / seconds / bandwidth * 100)
                        if threads == 1 && ["dense f32", "2:4 f32", "2:4 int8"].contains(variant.name) {
                            checks.append(String(format: "GEMV %@ at %dx%d: %.0f%% of read bandwidth (target >= 60%%)", variant.name, m, k, Double(bytes) / seconds / bandwidth * 100))
                        }
                    }
                    print(line)
                    if threads == 1, let numpy, let other {
                        checks += Self.targets(variant.name, m, k, n, numpy, other)
                    }
                }
            }
            print("")
        }
        print("Targets (one thread):")
        checks.forEach { print("  " + $0) }
    }

    /// A peer's time over ours: best against best, and each round's own.
    struct Ratio {
        let best: Double
        let rounds: [Double]
        /// "1.23x (rounds 1.10-1.40)".
        var text: String { String(format: "%.2fx (rounds %.2f-%.2f)", best, rounds.min()!, rounds.max()!) }
    }

    static func targets(_ kernel: String, _ m: Int, _ k: Int, _ n: Int, _ vsNumpy: Ratio, _ vsPeer: Ratio) -> [String] {
        let at = "\(m)x\(k)x\(n)"
        switch (kernel, at) {
        case ("dense f32", "768x768x128"): return ["dense f32 GEMM \(at): \(vsNumpy.text) numpy (target >= 0.6x)"]
        case ("2:4 f32", "768x768x128"): return ["2:4 f32 GEMM \(at): \(vsNumpy.text) numpy dense (target >= 1.0x)"]
        case ("csr 90%", "768x768x128"):
            return ["CSR 90% \(at): \(vsPeer.text) scipy CSR (target >= 3x), \(vsNumpy.text) numpy dense (target >= 1.5x)"]
        case ("dense int8 W8A8", "768x768x128"):
            return ["dense int8 GEMM \(at), uint8 activations quantized in the timed call: \(vsPeer.text) onnxruntime MatMulInteger (target >= 0.7x)"]
        case ("2:4 int8 W8A8", "768x768x128"):
            return ["2:4 int8 GEMM \(at), uint8 activations (kept codes with VBMI, else packed codes): \(vsPeer.text) onnxruntime MatMulInteger (target >= 1.2x)"]
        case ("2:4 int8", "4096x4096x1"): return ["2:4 int8 GEMV \(at), float activations: \(vsPeer.text) onnxruntime MatMulInteger"]
        case ("2:4 int8 W8A8", "4096x4096x1"):
            return ["2:4 int8 single row \(at), uint8 activations like MatMulInteger's (quantized in the timed call; the kept-code GEMM with VBMI, else the 2:4 GEMV): \(vsPeer.text) onnxruntime MatMulInteger (target >= 1.0x)"]
        default: return []
        }
    }

    /// Bytes per second of one thread summing a 1 GiB array (far larger than the caches).
    static func readBandwidth() -> Double {
        let count = 1 << 28
        let data = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { data.deallocate() }
        data.initialize(repeating: 1, count: count)
        var fastest = Double.infinity, sink: Float = 0
        for _ in 0 ..< 3 {
            let t = DispatchTime.now().uptimeNanoseconds
            var a0 = SIMD16<Float>(), a1 = SIMD16<Float>(), a2 = SIMD16<Float>(), a3 = SIMD16<Float>()
            let raw = UnsafeRawPointer(data)
            for i in stride(from: 0, to: count * 4, by: 256) {
                a0 += raw.loadUnaligned(fromByteOffset: i, as: SIMD16<Float>.self)
                a1 += raw.loadUnaligned(fromByteOffset: i + 64, as: SIMD16<Float>.self)
                a2 += raw.loadUnaligned(fromByteOffset: i + 128, as: SIMD16<Float>.self)
                a3 += raw.loadUnaligned(fromByteOffset: i + 192, as: SIMD16<Float>.self)
            }
            sink += (a0 + a1 + a2 + a3).sum()
            fastest = min(fastest, Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9)
        }
        precondition(sink > 0)
        return Double(count * 4) / fastest
    }

    /// Seconds per peer and thread count on `shape` ("MxKxN"), keyed "M,K,N", from
    /// Benchmarks/kernel_peers.py, each peer given twice our budget per kernel.
    func runPeers(shape: String) throws -> [String: [String: [String: Double]]] {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("kernel_peers.py").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [python, script, shape, sparsities, String(budget * 2)]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw ValidationError("\(script) failed") }
        return try JSONDecoder().decode([String: [String: [String: Double]]].self, from: data)
    }

    func pad(_ s: String, _ width: Int) -> String { s.padding(toLength: max(width, s.count + 1), withPad: " ", startingAt: 0) }
}
