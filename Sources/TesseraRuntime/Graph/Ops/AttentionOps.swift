import Foundation
import Tessera

/// Attention (opset 23 on), RotaryEmbedding, LinearAttention (opset 27) and the preview
/// FlexAttention. Attention runs per batch and head on
/// `[B, H, S, D]` views (3-D inputs are split into heads first), with grouped-query heads,
/// a key/value cache, boolean or additive masks, causal and sliding-window masking, and
/// soft-capping, following the ONNX reference's order of operations.
enum AttentionOps {
    static var table: [String: OpKernel] {
        var t: [String: OpKernel] = [:]
        t["Attention"] = { c in try attention(c) }
        t["RotaryEmbedding"] = { c in [try rotaryEmbedding(c)] }
        t["LinearAttention"] = { c in try linearAttention(c) }
        t["ai.onnx.preview:FlexAttention"] = { c in [try flexAttention(c)] }
        return t
    }

    /// A `[B, H, S, D]` float tensor.
    struct Heads {
        var values: [Float]
        var b: Int, h: Int, s: Int, d: Int
        func at(_ b: Int, _ h: Int, _ s: Int, _ d: Int) -> Float { values[((b * self.h + h) * self.s + s) * self.d + d] }

        /// `x` as heads: 4-D as it is, 3-D `[B, S, H*D]` split into `heads`.
        init(_ x: Value, heads: Int?) throws {
            let v = x.asFloats
            if x.shape.count == 4 {
                (b, h, s, d) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
                values = v
                return
            }
            guard x.shape.count == 3, let heads, heads > 0, x.shape[2] % heads == 0 else {
                throw RuntimeError(.badShape, "attention input \(x.shape) is not [B, H, S, D], or [B, S, hidden] with a head count dividing hidden")
            }
            (b, h, s, d) = (x.shape[0], heads, x.shape[1], x.shape[2] / heads)
            values = ShapeOps.transpose(Value(v, shape: [b, s, h, d]), [0, 2, 1, 3]).floats!
        }

        init(values: [Float], b: Int, h: Int, s: Int, d: Int) { (self.values, self.b, self.h, self.s, self.d) = (values, b, h, s, d) }

        var value: Value { Value(values, shape: [b, h, s, d]) }

        /// `past` followed by these along the sequence axis.
        func appended(to past: Heads) throws -> Heads {
            guard past.b == b, past.h == h, past.d == d else { throw RuntimeError(.badShape, "the cache does not match the new keys or values") }
            var out = [Float]()
            out.reserveCapacity(try elementCount([b, h, past.s + s, d]))
            for bi in 0 ..< b {
                for hi in 0 ..< h {
                    let head = bi * h + hi
                    let pastStart: Int = head * past.s * d, start: Int = head * s * d
                    out += past.values[pastStart ..< pastStart + past.s * d]
                    out += values[start ..< start + s * d]
                }
            }
            return Heads(values: out, b: b, h: h, s: past.s + s, d: d)
        }
    }

    static func attention(_ c: NodeContext) throws -> [Value] {
        let q3 = try c.input(0)
        let q = try Heads(q3, heads: c.optionalInt("q_num_heads"))
        var k = try Heads(try c.input(1), heads: c.optionalInt("kv_num_heads"))
        var v = try Heads(try c.input(2), heads: c.optionalInt("kv_num_heads"))
        let pastLength: Int
        if let pastKey = c.optionalInput(4), let pastValue = c.optionalInput(5) {
            pastLength = pastKey.shape.count == 4 ? pastKey.shape[2] : 0
            k = try k.appended(to: try Heads(pastKey, heads: nil))
            v = try v.appended(to: try Heads(pastValue, heads: nil))
        } else {
            pastLength = 0
        }
        guard q.b == k.b, k.b == v.b, q.d == k.d, k.h == v.h, k.s == v.s, k.h > 0, q.h % k.h == 0 else {
            throw RuntimeError(.badShape, "Q \(q3.shape), K and V do not fit one attention")
        }
        let (batches, heads, queries, keys) = (q.b, q.h, q.s, k.s)
        let group = heads / k.h
        let scale = Double(c.optionalFloat("scale") ?? Float(1 / Double(q.d).squareRoot()))
        let softcap = Double(c.float("softcap", 0))
        let causal = c.int("is_causal", 0) != 0
        let left = c.int("left_window_size", -1), right = c.int("right_window_size", -1)
        let mode = c.int("qk_matmul_output_mode", 0)
        let nonPadded = c.optionalInput(6)?.asInts.map(Int.init)
        let bias = try maskBias(c.optionalInput(3), batches: batches, heads: heads, queries: queries, keys: keys)

        var y = [Float](repeating: 0, count: try elementCount([batches, heads, queries, v.d]))
        var qkOutput = [Float](repeating: 0, count: try elementCount([batches, heads, queries, keys]))
        var row = [Double](repeating: 0, count: keys), rowBias = [Double](repeating: 0, count: keys)
        for b in 0 ..< batches {
            // Causal and window masks align the last query with the last key of the cache.
            let offset = nonPadded.map { $0[b] - queries } ?? pastLength
            for h in 0 ..< heads {
                let kh = h / group
                for i in 0 ..< queries {
                    for j in 0 ..< keys {
                        var dot = 0.0
                        for d in 0 ..< q.d { dot += Double(q.at(b, h, i, d)) * Double(k.at(b, kh, j, d)) }
                        var score = dot * scale
                        if softcap > 0 { score = softcap * Foundation.tanh(score / softcap) }
                        var extra = bias?(b, h, i, j) ?? 0
                        let diff = i + offset - j
                        if causal, j > i + offset { extra = -.infinity }
                        if left >= 0, diff > left { extra = -.infinity }
                        if right >= 0, -diff > right { extra = -.infinity }
                        if let nonPadded, j >= nonPadded[b] { extra = -.infinity }
                        row[j] = score
                        rowBias[j] = extra
                    }
                    let at = ((b * heads + h) * queries + i) * keys
                    if mode <= 1 { for j in 0 ..< keys { qkOutput[at + j] = Float(row[j]) } }
                    for j in 0 ..< keys { row[j] += rowBias[j] }
                    if mode == 2 { for j in 0 ..< keys { qkOutput[at + j] = Float(row[j]) } }
                    // A row whose every key is masked attends to nothing: zeros.
                    let allMasked = rowBias.allSatisfy { $0 == -.infinity }
                    let m = row.max() ?? 0
                    var sum = 0.0
                    for j in 0 ..< keys {
                        row[j] = allMasked || m == -.infinity ? 0 : Foundation.exp(row[j] - m)
                        sum += row[j]
                    }
                    for j in 0 ..< keys { row[j] /= sum == 0 ? 1 : sum }
                    if mode == 3 { for j in 0 ..< keys { qkOutput[at + j] = Float(row[j]) } }
                    let out = ((b * heads + h) * queries + i) * v.d
                    for j in 0 ..< keys where row[j] != 0 {
                        for d in 0 ..< v.d { y[out + d] += Float(row[j] * Double(v.at(b, kh, j, d))) }
                    }
                }
            }
        }
        var output = Value(y, shape: [batches, heads, queries, v.d], type: q3.type)
        if q3.shape.count == 3 {
            output = ShapeOps.transpose(output, [0, 2, 1, 3]).reshaped([batches, queries, heads * v.d])
        }
        var kv = [k.value, v.value]
        for i in kv.indices { kv[i].type = q3.type }
        return [output] + kv + [Value(qkOutput, shape: [batches, heads, queries, keys], type: q3.type)]
    }

    /// The additive bias of an attention mask, broadcast to `[B, H, q, kv]`: a bool mask gives 0
    /// where true and -inf where false; a float mask is added as it is. A mask shorter than the
    /// keys is padded with false (-inf).
    static func maskBias(_ mask: Value?, batches: Int, heads: Int, queries: Int, keys: Int) throws -> ((Int, Int, Int, Int) -> Double)? {
        guard let mask, let width = mask.shape.last, mask.shape.count >= 2 else { return nil }
        let additive: [Double] = mask.bools.map { $0.map { $0 ? 0 : -.infinity } } ?? mask.asFloats.map(Double.init)
        let leading = Array(mask.shape.dropLast())
        let target = [batches, heads, queries]
        guard leading.count <= 3 else { throw RuntimeError(.badShape, "attention mask \(mask.shape) has too many dims") }
        let covered = Array(target.suffix(leading.count))   // the mask's dims align with the last of [B, H, q]
        let rows = try Broadcast.sourceIndices(of: leading, in: covered)
        let span = max(covered.reduce(1, *), 1)
        return { b, h, i, j in
            guard j < width else { return -.infinity }
            return additive[rows[((b * heads + h) * queries + i) % span] * width + j]
        }
    }

    static func rotaryEmbedding(_ c: NodeContext) throws -> Value {
        let x = try c.input(0), cosine = try c.input(1), sine = try c.input(2)
        let positions = c.optionalInput(3)?.asInts.map(Int.init)
        // [B, S, H, D] view: 4-D input is [B, H, S, D]; 3-D is [B, S, H*D].
        let heads = x.shape.count == 4 ? x.shape[1] : c.int("num_heads", 0)
        var view = try Heads(x, heads: heads)
        let (batches, sequence, dim) = (view.b, view.s, view.d)
        let rotary = c.int("rotary_embedding_dim", 0) == 0 ? dim : c.int("rotary_embedding_dim", 0)
        let half = rotary / 2, interleaved = c.int("interleaved", 0) != 0
        guard rotary <= dim, rotary % 2 == 0, cosine.shape.last == half, sine.shape.last == half else {
            throw RuntimeError(.badShape, "rotary caches \(cosine.shape) do not fit a rotary dim of \(rotary)")
        }
        let cos = cosine.asFloats, sin = sine.asFloats
        for b in 0 ..< batches {
            for s in 0 ..< sequence {
                // Without position ids the caches are [B, S, half]; with them, [max positions, half].
                let row = positions.map { $0[b * sequence + s] } ?? (b * sequence + s)
                guard (row + 1) * half <= cos.count else { throw RuntimeError(.badShape, "position \(row) is outside the rotary caches") }
                for h in 0 ..< view.h {
                    let base = ((b * view.h + h) * sequence + s) * dim
                    for i in 0 ..< half {
                        let (p1, p2) = interleaved ? (base + 2 * i, base + 2 * i + 1) : (base + i, base + i + half)
                        let x1 = view.values[p1], x2 = view.values[p2], cs = cos[row * half + i], sn = sin[row * half + i]
                        view.values[p1] = cs * x1 - sn * x2
                        view.values[p2] = sn * x1 + cs * x2
                    }
                }
            }
        }
        var out = view.value
        if x.shape.count == 3 { out = ShapeOps.transpose(out, [0, 2, 1, 3]).reshaped(x.shape) }
        out.type = x.type
        return out
    }

    /// LinearAttention: per token, the state `S` (`[d_k, d_v]` per key/value head) decays by
    /// exp(decay) ("gated" rules), takes the delta correction v ← β(v − Sᵀk) ("delta" rules) and
    /// adds k ⊗ v; each query head reads `scale · qᵀS` from its group's head. In float32, as the
    /// ONNX reference does; outputs `[B, T, H_q·d_v]` and the final state.
    static func linearAttention(_ c: NodeContext) throws -> [Value] {
        let rule = c.string("update_rule", "gated_delta")
        guard ["linear", "gated", "delta", "gated_delta"].contains(rule) else {
            throw RuntimeError(.unsupportedOp, "update_rule '\(rule)' is not linear, gated, delta or gated_delta")
        }
        let gated = rule.hasPrefix("gated"), delta = rule.hasSuffix("delta")
        guard let hq = c.optionalInt("q_num_heads"), let hkv = c.optionalInt("kv_num_heads"), hq > 0, hkv > 0, hq % hkv == 0 else {
            throw RuntimeError(.badGraph, "q_num_heads must be a positive multiple of kv_num_heads")
        }
        let query = try c.input(0), value = try c.input(2)
        let q = try Heads(query, heads: hq), k = try Heads(c.input(1), heads: hkv), v = try Heads(value, heads: hkv)
        let (b, t, dk, dv, group) = (q.b, q.s, q.d, v.d, hq / hkv)
        guard query.shape.count == 3, k.b == b, k.s == t, k.d == dk, v.b == b, v.s == t else {
            throw RuntimeError(.badShape, "query, key and value must be [B, T, H*D] with one B, T and key width")
        }
        let decay = c.optionalInput(4), beta = c.optionalInput(5)
        guard gated == (decay != nil), delta == (beta != nil) else {
            throw RuntimeError(.badGraph, "update_rule '\(rule)' \(gated ? "needs" : "forbids") decay and \(delta ? "needs" : "forbids") beta")
        }
        // decay: [B, T, H_kv] (per head) or [B, T, H_kv*d_k]; beta: [B, T, H_kv] or [B, T, 1].
        let decayWidth = decay.map { $0.shape.last == hkv ? 1 : dk } ?? 0
        if let decay, decay.shape != [b, t, hkv * decayWidth] {
            throw RuntimeError(.badShape, "decay is \(decay.shape); it must be [\(b), \(t), \(hkv)] or [\(b), \(t), \(hkv * dk)]")
        }
        let betaHeads = beta?.shape.last ?? 0
        if let beta, beta.shape != [b, t, betaHeads] || (betaHeads != hkv && betaHeads != 1) {
            throw RuntimeError(.badShape, "beta is \(beta.shape); it must be [\(b), \(t), \(hkv)] or [\(b), \(t), 1]")
        }
        let decays = decay?.asFloats ?? [], betas = beta?.asFloats ?? []
        var state = [Float](repeating: 0, count: try elementCount([b, hkv, dk, dv]))
        let past = c.optionalInput(3)
        if let past {
            guard past.shape == [b, hkv, dk, dv] else { throw RuntimeError(.badShape, "past_state is \(past.shape); it must be [\(b), \(hkv), \(dk), \(dv)]") }
            state = past.asFloats
        }
        let scale = c.float("scale", 0) == 0 ? 1 / Float(dk).squareRoot() : c.float("scale", 0)
        var out = [Float](repeating: 0, count: try elementCount([b, t, hq * dv]))
        var kt = [Float](repeating: 0, count: dk), vt = [Float](repeating: 0, count: dv)
        for bi in 0 ..< b {
            for i in 0 ..< t {
                for h in 0 ..< hkv {
                    let s0 = (bi * hkv + h) * dk * dv, row = bi * t + i
                    for d in 0 ..< dk { kt[d] = k.at(bi, h, i, d) }
                    for m in 0 ..< dv { vt[m] = v.at(bi, h, i, m) }
                    if gated {
                        for d in 0 ..< dk {
                            let g = Float(exp(Double(decays[(row * hkv + h) * decayWidth + (decayWidth == 1 ? 0 : d)])))
                            for m in 0 ..< dv { state[s0 + d * dv + m] *= g }
                        }
                    }
                    if delta {
                        let rate = betas[row * betaHeads + (betaHeads == 1 ? 0 : h)]
                        for m in 0 ..< dv {
                            var retrieved: Float = 0
                            for d in 0 ..< dk { retrieved += state[s0 + d * dv + m] * kt[d] }
                            vt[m] = rate * (vt[m] - retrieved)
                        }
                    }
                    for d in 0 ..< dk { for m in 0 ..< dv { state[s0 + d * dv + m] += kt[d] * vt[m] } }
                    for qh in h * group ..< (h + 1) * group {
                        for m in 0 ..< dv {
                            var sum: Float = 0
                            for d in 0 ..< dk { sum += q.at(bi, qh, i, d) * state[s0 + d * dv + m] }
                            out[(row * hq + qh) * dv + m] = scale * sum
                        }
                    }
                }
            }
        }
        return [Value(out, shape: [b, t, hq * dv], type: query.type),
                Value(state, shape: [b, hkv, dk, dv], type: past?.type ?? query.type)]
    }

    /// FlexAttention: softmax(score_mod(scale · QKᵀ)), then prob_mod, times V, on `[B, H, S, D]`
    /// inputs with grouped key/value heads. The scores are computed in `softmax_precision`
    /// (float32, or double for double inputs), the type the modifier bodies take.
    static func flexAttention(_ c: NodeContext) throws -> Value {
        let query = try c.input(0)
        guard query.shape.count == 4, try c.input(1).shape.count == 4, try c.input(2).shape.count == 4 else {
            throw RuntimeError(.badShape, "FlexAttention's Q, K and V must be rank 4")
        }
        let q = try Heads(query, heads: nil), k = try Heads(c.input(1), heads: nil), v = try Heads(c.input(2), heads: nil)
        guard k.b == q.b, v.b == q.b, k.d == q.d, v.s == k.s, v.h == k.h, k.h > 0, q.h % k.h == 0 else {
            throw RuntimeError(.badShape, "Q \(q.value.shape), K \(k.value.shape) and V \(v.value.shape) do not fit one attention")
        }
        let group = q.h / k.h
        let scale = c.optionalFloat("scale") ?? 1 / Float(q.d).squareRoot()
        let precision = try c.optionalInt("softmax_precision").map(dataType) ?? (query.type == .double ? .double : .float)
        var scores = [Float](repeating: 0, count: try elementCount([q.b, q.h, q.s, k.s]))
        for bi in 0 ..< q.b {
            for h in 0 ..< q.h {
                for i in 0 ..< q.s {
                    for j in 0 ..< k.s {
                        var sum: Float = 0
                        for d in 0 ..< q.d { sum += q.at(bi, h, i, d) * k.at(bi, h / group, j, d) }
                        scores[((bi * q.h + h) * q.s + i) * k.s + j] = sum * scale
                    }
                }
            }
        }
        func modified(_ x: Value, by name: String) throws -> Value {
            guard let body = c.bodies[name] else { return x }
            let outputs = try body.run(try ControlFlowOps.feeds(body, [.tensor(x)]), outer: c.scope)
            guard outputs.count == 1 else { throw RuntimeError(.badGraph, "\(name) must return one tensor") }
            let y = try ControlFlowOps.tensor(outputs[0].value, name)
            guard y.shape == x.shape else { throw RuntimeError(.badShape, "\(name) returned \(y.shape) for \(x.shape)") }
            return y
        }
        let shape = [q.b, q.h, q.s, k.s]
        let scored = try modified(Value(scores, shape: shape, type: precision).representable(), by: "score_mod")
        let probabilities = try modified(ReductionOps.softmax(scored, view: (q.b * q.h * q.s, k.s, 1), log: false), by: "prob_mod").asFloats
        var y = [Float](repeating: 0, count: try elementCount([q.b, q.h, q.s, v.d]))
        for bi in 0 ..< q.b {
            for h in 0 ..< q.h {
                for i in 0 ..< q.s {
                    let p0 = ((bi * q.h + h) * q.s + i) * k.s
                    for m in 0 ..< v.d {
                        var sum: Float = 0
                        for j in 0 ..< k.s { sum += probabilities[p0 + j] * v.at(bi, h / group, j, m) }
                        y[((bi * q.h + h) * q.s + i) * v.d + m] = sum
                    }
                }
            }
        }
        return Value(y, shape: [q.b, q.h, q.s, v.d], type: query.type)
    }
}
