import Foundation
import Tessera

/// The loss ops: negative log-likelihood over `[N, C, d1, ...]` log-probabilities, alone or
/// after a log-softmax over the class axis.
enum LossOps {
    static var table: [String: OpKernel] {
        var t: [String: OpKernel] = [:]
        t["NegativeLogLikelihoodLoss"] = { c in [try negativeLogLikelihood(c, logProbabilities: try c.input(0))] }
        t["SoftmaxCrossEntropyLoss"] = { c in
            let scores = try c.input(0)
            guard scores.shape.count >= 2 else { throw RuntimeError(.badShape, "scores \(scores.shape) have no class axis") }
            let logProbabilities = try ReductionOps.logSoftmax(scores, axis: 1)
            let loss = try negativeLogLikelihood(c, logProbabilities: logProbabilities)
            return c.node.outputs.count > 1 ? [loss, logProbabilities] : [loss]
        }
        return t
    }

    /// Loss at each position is `-weight[t] * x[n, t, d...]` for target class t (0 where t is
    /// `ignore_index`); `mean` divides the sum by the sum of the weights used.
    static func negativeLogLikelihood(_ c: NodeContext, logProbabilities x: Value) throws -> Value {
        let target = try c.input(1)
        guard x.shape.count >= 2, target.shape == [x.shape[0]] + Array(x.shape.dropFirst(2)) else {
            throw RuntimeError(.badShape, "input \(x.shape) and target \(target.shape) do not fit [N, C, d...] and [N, d...]")
        }
        let classes = x.shape[1], spatial = x.shape.dropFirst(2).reduce(1, *)
        let weights = c.optionalInput(2)?.asDoubles
        if let weights, weights.count != classes { throw RuntimeError(.badShape, "\(weights.count) weights for \(classes) classes") }
        let ignored = c.optionalInt("ignore_index").map(Int64.init)
        // Losses in Double: exact products of float32 operands, and float64 kept as it is.
        let v = x.asDoubles
        var losses = [Double](repeating: 0, count: target.count), weightSum = 0.0
        for (p, t) in target.asInts.enumerated() where t != ignored {
            guard t >= 0, t < classes else { throw RuntimeError(.badShape, "target \(t) is not a class in 0..<\(classes)") }
            let w = weights?[Int(t)] ?? 1
            let n = p / max(spatial, 1), d = p % max(spatial, 1)
            losses[p] = -w * v[(n * classes + Int(t)) * spatial + d]
            weightSum += w
        }
        switch c.string("reduction", "mean") {
        case "none": return Value(computed: losses, shape: target.shape, type: x.type)
        case "sum": return Value(computed: [losses.reduce(0, +)], shape: [], type: x.type)
        case "mean": return Value(computed: [losses.reduce(0, +) / weightSum], shape: [], type: x.type)
        case let other: throw RuntimeError(.badGraph, "reduction '\(other)' is not none, sum or mean")
        }
    }
}
