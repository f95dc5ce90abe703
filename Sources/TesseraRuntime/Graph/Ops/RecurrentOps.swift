import Foundation
import Tessera

/// RNN, GRU and LSTM: forward, reverse or both directions, per-sequence lengths, initial states,
/// clipping, custom activations and both layouts. The input projection X·Wᵀ + Wb is one product
/// over every step; each step then adds the recurrent product H·Rᵀ + Rb and applies its cell.
enum RecurrentOps {
    static var table: [String: OpKernel] {
        var t: [String: OpKernel] = [:]
        t["RNN"] = { c in try run(c, kind: .rnn) }
        t["GRU"] = { c in try run(c, kind: .gru) }
        t["LSTM"] = { c in try run(c, kind: .lstm) }
        t["com.microsoft:DynamicQuantizeLSTM"] = { c in try dynamicQuantizeLSTM(c) }
        return t
    }

    enum Kind {
        case rnn, gru, lstm
        var gates: Int { switch self { case .rnn: 1; case .gru: 3; case .lstm: 4 } }
        var defaultActivations: [String] {
            switch self { case .rnn: ["Tanh"]; case .gru: ["Sigmoid", "Tanh"]; case .lstm: ["Sigmoid", "Tanh", "Tanh"] }
        }
    }

    /// An activation function of the recurrent ops, with its alpha and beta.
    static func activation(_ name: String, alpha: Float?, beta: Float?) throws -> (Float) -> Float {
        switch name.lowercased() {
        case "tanh": return { Foundation.tanh($0) }
        case "sigmoid": return ElementwiseOps.sigmoid
        case "relu": return { max($0, 0) }
        case "affine": let a = alpha ?? 1, b = beta ?? 0; return { a * $0 + b }
        case "leakyrelu": let a = alpha ?? 0.01; return { $0 >= 0 ? $0 : a * $0 }
        case "thresholdedrelu": let a = alpha ?? 1; return { $0 > a ? $0 : 0 }
        case "scaledtanh": let a = alpha ?? 1, b = beta ?? 1; return { a * Foundation.tanh(b * $0) }
        case "hardsigmoid": let a = alpha ?? 0.2, b = beta ?? 0.5; return { max(0, min(1, a * $0 + b)) }
        case "elu": let a = alpha ?? 1; return { $0 >= 0 ? $0 : a * (Foundation.exp($0) - 1) }
        case "softsign": return { $0 / (1 + abs($0)) }
        case "softplus": return { Foundation.log1p(Foundation.exp(-abs($0))) + max($0, 0) }
        default: throw RuntimeError(.unsupportedOp, "recurrent activation '\(name)' is not known")
        }
    }

    /// One direction's GEMMs: X·Wᵀ over `[rows, input]` giving `[rows, g·hidden]`, and H·Rᵀ for
    /// gate rows `gates` over `[count, hidden]` giving `[count, gates.count]` (biases apart).
    struct Weights {
        var input: (_ x: [Float], _ rows: Int) throws -> [Float]
        var recurrent: (_ h: [Float], _ count: Int, _ gates: Range<Int>) -> [Float]
    }

    /// Float weights: W `[g·hidden, input]` and R `[g·hidden, hidden]` of one direction.
    static func floatWeights(_ w: [Float], _ r: [Float], gateRows: Int, inputSize: Int, hidden: Int, name: String, threads: Int) throws -> Weights {
        let op = try LinearOperator.dense(w, shape: [gateRows, inputSize], reductionAxis: 1, name: name)
        return Weights(input: { x, rows in try op.apply(x, batch: rows, threads: threads) }, recurrent: { h, count, gates in
            var out = [Float](repeating: 0, count: count * gates.count)
            for b in 0 ..< count {
                for (k, row) in gates.enumerated() {
                    var sum: Float = 0
                    for j in 0 ..< hidden { sum += r[row * hidden + j] * h[b * hidden + j] }
                    out[b * gates.count + k] = sum
                }
            }
            return out
        })
    }

    /// Integer weights `[depth, columns]` (8-bit codes with a scale and zero point per tensor or
    /// per column), multiplied as onnxruntime's dynamic quantization does: each GEMM quantizes
    /// its float operand to uint8 with one scale from its range, accumulates exactly, then scales.
    static func dynamicallyQuantized(codes: [Int64], scales: [Float], zeroPoints: [Int64], depth: Int, columns: Int) -> ([Float], Int, Range<Int>) -> [Float] {
        { a, rows, wanted in
            let (q, scale, zero) = QuantizationOps.quantizeDynamically(a)
            var out = [Float](repeating: 0, count: rows * wanted.count)
            for i in 0 ..< rows {
                for (k, column) in wanted.enumerated() {
                    let wz = zeroPoints.count == 1 ? zeroPoints[0] : zeroPoints[column]
                    var acc: Int64 = 0
                    for j in 0 ..< depth { acc += (q[i * depth + j] - zero) * (codes[j * columns + column] - wz) }
                    out[i * wanted.count + k] = Float(acc) * (scale * (scales.count == 1 ? scales[0] : scales[column]))
                }
            }
            return out
        }
    }

    /// onnxruntime's com.microsoft DynamicQuantizeLSTM: an LSTM whose W `[dirs, input, 4·hidden]`
    /// and R `[dirs, hidden, 4·hidden]` are 8-bit codes (inputs 8 to 11: scales and zero points).
    static func dynamicQuantizeLSTM(_ c: NodeContext) throws -> [Value] {
        let w = try c.input(1), r = try c.input(2)
        guard w.shape.count == 3, r.shape.count == 3, w.shape[0] == r.shape[0], w.shape[2] == r.shape[2], w.shape[2] % 4 == 0 else {
            throw RuntimeError(.badShape, "W \(w.shape) and R \(r.shape) are not [dirs, input, 4·hidden] and [dirs, hidden, 4·hidden]")
        }
        let (directions, inputSize, gateRows) = (w.shape[0], w.shape[1], w.shape[2])
        let hidden = gateRows / 4
        guard r.shape[1] == hidden else { throw RuntimeError(.badShape, "R \(r.shape) does not have hidden size \(hidden)") }
        let wCodes = w.asInts, rCodes = r.asInts
        let wScale = try c.input(8).asFloats, wZero = try c.input(9).asInts, rScale = try c.input(10).asFloats, rZero = try c.input(11).asInts
        func perDirection<T>(_ v: [T]) throws -> (Int) -> [T] {
            guard v.count == directions || v.count == directions * gateRows else { throw RuntimeError(.badShape, "a scale or zero point has \(v.count) values for \(directions) direction(s) of \(gateRows) columns") }
            let n = v.count / directions
            return { d in Array(v[d * n ..< (d + 1) * n]) }
        }
        let ws = try perDirection(wScale), wz = try perDirection(wZero), rs = try perDirection(rScale), rz = try perDirection(rZero)
        return try run(c, kind: .lstm, hidden: hidden, inputSize: inputSize) { d in
            let input = dynamicallyQuantized(codes: Array(wCodes[d * inputSize * gateRows ..< (d + 1) * inputSize * gateRows]),
                                             scales: ws(d), zeroPoints: wz(d), depth: inputSize, columns: gateRows)
            let recurrent = dynamicallyQuantized(codes: Array(rCodes[d * hidden * gateRows ..< (d + 1) * hidden * gateRows]),
                                                 scales: rs(d), zeroPoints: rz(d), depth: hidden, columns: gateRows)
            return Weights(input: { x, rows in input(x, rows, 0 ..< gateRows) }, recurrent: recurrent)
        }
    }

    static func run(_ c: NodeContext, kind: Kind) throws -> [Value] {
        let w = try c.input(1), r = try c.input(2)
        let directions = c.string("direction", "forward") == "bidirectional" ? 2 : 1
        let hidden = c.optionalInt("hidden_size") ?? (r.shape.last ?? 0)
        let gateRows = kind.gates * hidden
        let inputSize = w.shape.last ?? 0
        guard w.shape == [directions, gateRows, inputSize], r.shape == [directions, gateRows, hidden] else {
            throw RuntimeError(.badShape, "W \(w.shape) and R \(r.shape) do not fit \(directions) direction(s) and hidden size \(hidden)")
        }
        let weights = w.asFloats, recurrent = r.asFloats
        return try run(c, kind: kind, hidden: hidden, inputSize: inputSize) { d in
            try floatWeights(Array(weights[d * gateRows * inputSize ..< (d + 1) * gateRows * inputSize]),
                             Array(recurrent[d * gateRows * hidden ..< (d + 1) * gateRows * hidden]),
                             gateRows: gateRows, inputSize: inputSize, hidden: hidden, name: c.node.outputs.first ?? "", threads: c.threads)
        }
    }

    /// The recurrence itself, step by step over every sequence at once, with each direction's
    /// GEMMs from `weightsOf`.
    static func run(_ c: NodeContext, kind: Kind, hidden: Int, inputSize: Int, weightsOf: (Int) throws -> Weights) throws -> [Value] {
        let layout = c.int("layout", 0)
        var x = try c.input(0)
        if layout == 1 { x = ShapeOps.transpose(x, [1, 0, 2]) }   // to [seq, batch, input]
        guard x.shape.count == 3, x.shape[2] == inputSize else { throw RuntimeError(.badShape, "X \(x.shape) is not [seq, batch, \(inputSize)]") }
        let (steps, batch) = (x.shape[0], x.shape[1])
        let direction = c.string("direction", "forward")
        guard ["forward", "reverse", "bidirectional"].contains(direction) else { throw RuntimeError(.badGraph, "direction '\(direction)' is not known") }
        let directions = direction == "bidirectional" ? 2 : 1
        let g = kind.gates, gh = g * hidden
        let bias = c.optionalInput(3)?.asFloats ?? [Float](repeating: 0, count: directions * 2 * gh)
        let lengths = c.optionalInput(4)?.asInts.map(Int.init) ?? [Int](repeating: steps, count: batch)
        var initialH = c.optionalInput(5), initialC = kind == .lstm ? c.optionalInput(6) : nil
        if layout == 1 {
            initialH = initialH.map { ShapeOps.transpose($0, [1, 0, 2]) }
            initialC = initialC.map { ShapeOps.transpose($0, [1, 0, 2]) }
        }
        let peepholes = kind == .lstm ? c.optionalInput(7)?.asFloats : nil
        let stateCount = directions * batch * hidden
        guard bias.count == directions * 2 * gh, lengths.count == batch, lengths.allSatisfy({ $0 >= 0 && $0 <= steps }),
              initialH?.count ?? stateCount == stateCount, initialC?.count ?? stateCount == stateCount,
              peepholes?.count ?? directions * 3 * hidden == directions * 3 * hidden else {
            throw RuntimeError(.badShape, "B, sequence_lens, initial states or peepholes do not fit the sizes")
        }
        let names = (c.node.attributes["activations"].flatMap { if case .strings(let s) = $0 { return s } else { return nil } })
            ?? (0 ..< directions).flatMap { _ in kind.defaultActivations }
        let perDirection = kind.defaultActivations.count
        guard names.count == perDirection * directions else { throw RuntimeError(.badGraph, "\(names.count) activations for \(directions) direction(s)") }
        var alphas = c.floatList("activation_alpha") ?? [], betas = c.floatList("activation_beta") ?? []
        let functions = try names.map { name -> (Float) -> Float in
            let takesAlpha = ["affine", "leakyrelu", "thresholdedrelu", "scaledtanh", "hardsigmoid", "elu"].contains(name.lowercased())
            let takesBeta = ["affine", "scaledtanh", "hardsigmoid"].contains(name.lowercased())
            let alpha = takesAlpha && !alphas.isEmpty ? alphas.removeFirst() : nil
            let beta = takesBeta && !betas.isEmpty ? betas.removeFirst() : nil
            return try activation(name, alpha: alpha, beta: beta)
        }
        let clip = c.optionalFloat("clip").map { abs($0) }
        func clipped(_ v: Float) -> Float { clip.map { min(max(v, -$0), $0) } ?? v }
        let linearBeforeReset = c.int("linear_before_reset", 0) != 0, coupled = c.int("input_forget", 0) != 0

        let xs = x.asFloats
        var y = [Float](repeating: 0, count: try elementCount([steps, directions, batch, hidden]))
        var lastH = initialH?.asFloats ?? [Float](repeating: 0, count: stateCount)
        var lastC = initialC?.asFloats ?? [Float](repeating: 0, count: stateCount)
        for d in 0 ..< directions {
            let reverse = direction == "reverse" || d == 1
            let f = Array(functions[d * perDirection ..< (d + 1) * perDirection])
            let weights = try weightsOf(d)
            let wb = Array(bias[d * 2 * gh ..< d * 2 * gh + gh]), rb = Array(bias[d * 2 * gh + gh ..< (d + 1) * 2 * gh])
            let p = peepholes.map { Array($0[d * 3 * hidden ..< (d + 1) * 3 * hidden]) } ?? [Float](repeating: 0, count: 3 * hidden)
            let projected = try weights.input(xs, steps * batch)   // [steps · batch, g · hidden]
            var h = Array(lastH[d * batch * hidden ..< (d + 1) * batch * hidden])
            var cell = Array(lastC[d * batch * hidden ..< (d + 1) * batch * hidden])
            for step in 0 ..< steps {
                // The sequences still running; each reads its own step (from its end when reversed).
                let active = (0 ..< batch).filter { step < lengths[$0] }
                if active.isEmpty { break }
                let hs = active.flatMap { h[$0 * hidden ..< ($0 + 1) * hidden] }
                let recurrentPart = weights.recurrent(hs, active.count, 0 ..< gh)
                var resetParts: [Float] = []
                if kind == .gru, !linearBeforeReset {
                    // (r ⊙ H)·Rhᵀ needs r first.
                    let resetH = active.enumerated().flatMap { a, b in
                        (0 ..< hidden).map { j -> Float in
                            let t = reverse ? lengths[b] - 1 - step : step
                            let pre = projected[(t * batch + b) * gh + hidden + j] + wb[hidden + j] + recurrentPart[a * gh + hidden + j] + rb[hidden + j]
                            return f[0](clipped(pre)) * h[b * hidden + j]
                        }
                    }
                    resetParts = weights.recurrent(resetH, active.count, 2 * hidden ..< gh)
                }
                for (a, b) in active.enumerated() {
                    let t = reverse ? lengths[b] - 1 - step : step
                    let gates = (0 ..< gh).map { projected[(t * batch + b) * gh + $0] + wb[$0] }
                    let rec = (0 ..< gh).map { recurrentPart[a * gh + $0] + rb[$0] }
                    let hb = b * hidden
                    switch kind {
                    case .rnn:
                        for j in 0 ..< hidden { h[hb + j] = f[0](clipped(gates[j] + rec[j])) }
                    case .gru:
                        for j in 0 ..< hidden {
                            let z = f[0](clipped(gates[j] + rec[j]))
                            let reset = f[0](clipped(gates[hidden + j] + rec[hidden + j]))
                            let candidate = linearBeforeReset
                                ? f[1](clipped(gates[2 * hidden + j] + reset * rec[2 * hidden + j]))
                                : f[1](clipped(gates[2 * hidden + j] + resetParts[a * hidden + j] + rb[2 * hidden + j]))
                            h[hb + j] = (1 - z) * candidate + z * h[hb + j]
                        }
                    case .lstm:
                        for j in 0 ..< hidden {
                            let pre = { (gate: Int) in gates[gate * hidden + j] + rec[gate * hidden + j] }
                            let input = f[0](clipped(pre(0) + p[j] * cell[hb + j]))
                            let forget = coupled ? 1 - input : f[0](clipped(pre(2) + p[2 * hidden + j] * cell[hb + j]))
                            let candidate = f[1](clipped(pre(3)))
                            cell[hb + j] = forget * cell[hb + j] + input * candidate
                            let output = f[0](clipped(pre(1) + p[hidden + j] * cell[hb + j]))
                            h[hb + j] = output * f[2](cell[hb + j])
                        }
                    }
                    for j in 0 ..< hidden { y[((t * directions + d) * batch + b) * hidden + j] = h[hb + j] }
                }
            }
            lastH.replaceSubrange(d * batch * hidden ..< (d + 1) * batch * hidden, with: h)
            lastC.replaceSubrange(d * batch * hidden ..< (d + 1) * batch * hidden, with: cell)
        }
        var outputs = [Value(y, shape: [steps, directions, batch, hidden], type: x.type),
                       Value(lastH, shape: [directions, batch, hidden], type: x.type),
                       Value(lastC, shape: [directions, batch, hidden], type: x.type)]
        if layout == 1 {
            outputs[0] = ShapeOps.transpose(outputs[0], [2, 0, 1, 3])
            outputs[1] = ShapeOps.transpose(outputs[1], [1, 0, 2])
            outputs[2] = ShapeOps.transpose(outputs[2], [1, 0, 2])
        }
        return kind == .lstm ? outputs : Array(outputs.prefix(2))
    }
}
