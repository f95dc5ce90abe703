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

    static func run(_ c: NodeContext, kind: Kind) throws -> [Value] {
        let layout = c.int("layout", 0)
        var x = try c.input(0)
        if layout == 1 { x = ShapeOps.transpose(x, [1, 0, 2]) }   // to [seq, batch, input]
        guard x.shape.count == 3 else { throw RuntimeError(.badShape, "X \(x.shape) is not 3-D") }
        let (steps, batch, inputSize) = (x.shape[0], x.shape[1], x.shape[2])
        let w = try c.input(1), r = try c.input(2)
        let direction = c.string("direction", "forward")
        let directions = direction == "bidirectional" ? 2 : 1
        guard ["forward", "reverse", "bidirectional"].contains(direction) else { throw RuntimeError(.badGraph, "direction '\(direction)' is not known") }
        let hidden = c.optionalInt("hidden_size") ?? (r.shape.last ?? 0)
        let g = kind.gates
        guard w.shape == [directions, g * hidden, inputSize], r.shape == [directions, g * hidden, hidden] else {
            throw RuntimeError(.badShape, "W \(w.shape) and R \(r.shape) do not fit \(directions) direction(s), hidden size \(hidden) and input \(inputSize)")
        }
        let bias = c.optionalInput(3)?.asFloats ?? [Float](repeating: 0, count: directions * 2 * g * hidden)
        let lengths = c.optionalInput(4)?.asInts.map(Int.init) ?? [Int](repeating: steps, count: batch)
        var initialH = c.optionalInput(5), initialC = kind == .lstm ? c.optionalInput(6) : nil
        if layout == 1 {
            initialH = initialH.map { ShapeOps.transpose($0, [1, 0, 2]) }
            initialC = initialC.map { ShapeOps.transpose($0, [1, 0, 2]) }
        }
        let peepholes = kind == .lstm ? c.optionalInput(7)?.asFloats : nil
        guard bias.count == directions * 2 * g * hidden, lengths.count == batch, lengths.allSatisfy({ $0 >= 0 && $0 <= steps }),
              initialH?.count ?? directions * batch * hidden == directions * batch * hidden,
              initialC?.count ?? directions * batch * hidden == directions * batch * hidden,
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
        let linearBeforeReset = c.int("linear_before_reset", 0) != 0, coupled = c.int("input_forget", 0) != 0

        let xs = x.asFloats, weights = w.asFloats, recurrent = r.asFloats
        var y = [Float](repeating: 0, count: try elementCount([steps, directions, batch, hidden]))
        var lastH = [Float](repeating: 0, count: directions * batch * hidden), lastC = lastH
        let gh = g * hidden
        for d in 0 ..< directions {
            let reverse = direction == "reverse" || d == 1
            let f = Array(functions[d * perDirection ..< (d + 1) * perDirection])
            let wd = Array(weights[d * gh * inputSize ..< (d + 1) * gh * inputSize])
            let rd = Array(recurrent[d * gh * hidden ..< (d + 1) * gh * hidden])
            let wb = Array(bias[d * 2 * gh ..< d * 2 * gh + gh]), rb = Array(bias[d * 2 * gh + gh ..< (d + 1) * 2 * gh])
            // X·Wᵀ + Wb for every step and sequence at once: [steps · batch, g · hidden].
            let projected = try LinearOperator.dense(wd, shape: [gh, inputSize], reductionAxis: 1, name: c.node.outputs.first ?? "")
                .apply(xs, batch: steps * batch, threads: c.threads)
            for b in 0 ..< batch {
                var h = initialH.map { Array($0.asFloats[(d * batch + b) * hidden ..< (d * batch + b + 1) * hidden]) } ?? [Float](repeating: 0, count: hidden)
                var cell = initialC.map { Array($0.asFloats[(d * batch + b) * hidden ..< (d * batch + b + 1) * hidden]) } ?? [Float](repeating: 0, count: hidden)
                for step in 0 ..< lengths[b] {
                    let t = reverse ? lengths[b] - 1 - step : step
                    var gates = (0 ..< gh).map { projected[(t * batch + b) * gh + $0] + wb[$0] }
                    let recurrentPart = product(rd, h, rows: 0 ..< gh, hidden: hidden, bias: rb)
                    func clipped(_ v: Float) -> Float { clip.map { min(max(v, -$0), $0) } ?? v }
                    switch kind {
                    case .rnn:
                        h = (0 ..< hidden).map { f[0](clipped(gates[$0] + recurrentPart[$0])) }
                    case .gru:
                        let z = (0 ..< hidden).map { f[0](clipped(gates[$0] + recurrentPart[$0])) }
                        let reset = (0 ..< hidden).map { f[0](clipped(gates[hidden + $0] + recurrentPart[hidden + $0])) }
                        let candidate: [Float]
                        if linearBeforeReset {
                            candidate = (0 ..< hidden).map { f[1](clipped(gates[2 * hidden + $0] + reset[$0] * recurrentPart[2 * hidden + $0])) }
                        } else {
                            let resetH = (0 ..< hidden).map { reset[$0] * h[$0] }
                            let part = product(rd, resetH, rows: 2 * hidden ..< 3 * hidden, hidden: hidden, bias: Array(rb[2 * hidden ..< 3 * hidden]))
                            candidate = (0 ..< hidden).map { f[1](clipped(gates[2 * hidden + $0] + part[$0])) }
                        }
                        h = (0 ..< hidden).map { (1 - z[$0]) * candidate[$0] + z[$0] * h[$0] }
                    case .lstm:
                        for k in 0 ..< gh { gates[k] += recurrentPart[k] }
                        let p = peepholes.map { Array($0[d * 3 * hidden ..< (d + 1) * 3 * hidden]) } ?? [Float](repeating: 0, count: 3 * hidden)
                        let input = (0 ..< hidden).map { f[0](clipped(gates[$0] + p[$0] * cell[$0])) }
                        let forget = coupled ? input.map { 1 - $0 } : (0 ..< hidden).map { f[0](clipped(gates[2 * hidden + $0] + p[2 * hidden + $0] * cell[$0])) }
                        let candidate = (0 ..< hidden).map { f[1](clipped(gates[3 * hidden + $0])) }
                        cell = (0 ..< hidden).map { forget[$0] * cell[$0] + input[$0] * candidate[$0] }
                        let output = (0 ..< hidden).map { f[0](clipped(gates[hidden + $0] + p[hidden + $0] * cell[$0])) }
                        h = (0 ..< hidden).map { output[$0] * f[2](cell[$0]) }
                    }
                    for j in 0 ..< hidden { y[((t * directions + d) * batch + b) * hidden + j] = h[j] }
                }
                for j in 0 ..< hidden {
                    lastH[(d * batch + b) * hidden + j] = h[j]
                    lastC[(d * batch + b) * hidden + j] = cell[j]
                }
            }
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

    /// Rows `rows` of `matrix` (row length `hidden`) times `vector`, plus `bias` (indexed from 0).
    static func product(_ matrix: [Float], _ vector: [Float], rows: Range<Int>, hidden: Int, bias: [Float]) -> [Float] {
        rows.enumerated().map { k, row in
            var sum = bias[k]
            for j in 0 ..< hidden { sum += matrix[row * hidden + j] * vector[j] }
            return sum
        }
    }
}
