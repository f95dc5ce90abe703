import Foundation
import Tessera

/// Einsum and Det: contractions and determinants in Double (small operands; the GEMMs of real
/// models go through MatMul and Gemm).
enum LinearAlgebraOps {
    static var table: [String: OpKernel] {
        var t: [String: OpKernel] = [:]
        t["Einsum"] = { c in [try einsum(c)] }
        t["Det"] = { c in [try determinant(c)] }
        return t
    }

    /// `equation` ("ij,jk->ik", with `...` for broadcast dims; no "->" sums the letters seen
    /// once, in order) over the inputs.
    static func einsum(_ c: NodeContext) throws -> Value {
        let operands = try c.givenInputs()
        let equation = c.string("equation", "").replacingOccurrences(of: " ", with: "")
        let sides = equation.components(separatedBy: "->")
        var terms = sides[0].components(separatedBy: ",")
        guard sides.count <= 2, terms.count == operands.count else { throw RuntimeError(.badGraph, "Einsum equation '\(equation)' does not fit \(operands.count) inputs") }
        // "..." becomes upper-case letters, one per broadcast dim (right-aligned across operands).
        let ellipsisRank = try zip(terms, operands).map { term, x -> Int in
            guard term.contains("...") else { return 0 }
            let named = term.replacingOccurrences(of: "...", with: "").count
            guard x.shape.count >= named else { throw RuntimeError(.badShape, "term '\(term)' has more letters than \(x.shape)") }
            return x.shape.count - named
        }.max() ?? 0
        let broadcastLetters = String("ABCDEFGHIJKLMNOPQRSTUVWXYZ".prefix(ellipsisRank))
        for (k, term) in terms.enumerated() where term.contains("...") {
            let named = term.replacingOccurrences(of: "...", with: "").count
            terms[k] = term.replacingOccurrences(of: "...", with: String(broadcastLetters.suffix(operands[k].shape.count - named)))
        }
        var output: String
        if sides.count == 2 {
            output = sides[1].replacingOccurrences(of: "...", with: broadcastLetters)
        } else {
            let all = terms.joined()
            output = broadcastLetters + String(Set(all.filter { $0.isLowercase }).filter { l in all.filter { $0 == l }.count == 1 }.sorted())
        }
        var sizes: [Character: Int] = [:]
        for (term, x) in zip(terms, operands) {
            guard term.count == x.shape.count else { throw RuntimeError(.badShape, "term '\(term)' does not fit \(x.shape)") }
            for (letter, n) in zip(term, x.shape) {
                if let known = sizes[letter], known != n, n != 1 {
                    guard known == 1 else { throw RuntimeError(.badShape, "index '\(letter)' is \(known) and \(n)") }
                    sizes[letter] = n
                } else if sizes[letter] == nil { sizes[letter] = n }
            }
        }
        let letters = Array(Set(terms.joined() + output)).sorted()
        guard output.allSatisfy({ sizes[$0] != nil }) else { throw RuntimeError(.badGraph, "Einsum output '\(output)' uses an index no input has") }
        let extents = letters.map { sizes[$0]! }
        let outShape = output.map { sizes[$0]! }
        var y = [Double](repeating: 0, count: try elementCount(outShape))
        _ = try elementCount(extents)
        let values = operands.map { $0.asDoubles }
        let position = { (term: String, x: Value, index: [Character: Int]) -> Int in
            zip(term, Broadcast.strides(x.shape)).enumerated().reduce(0) { sum, item in
                let (axis, (letter, stride)) = item
                return sum + (x.shape[axis] == 1 ? 0 : index[letter]! * stride)
            }
        }
        let outStrides = Broadcast.strides(outShape)
        var counter = [Int](repeating: 0, count: letters.count)
        for _ in 0 ..< extents.reduce(1, *) {
            let index = Dictionary(uniqueKeysWithValues: zip(letters, counter))
            var product = 1.0
            for (k, term) in terms.enumerated() { product *= values[k][position(term, operands[k], index)] }
            y[zip(output, outStrides).reduce(0) { $0 + index[$1.0]! * $1.1 }] += product
            var d = letters.count - 1
            while d >= 0 { counter[d] += 1; if counter[d] < extents[d] { break }; counter[d] = 0; d -= 1 }
        }
        let first = operands[0]
        if case .int = first.elements { return Value(y.map { Int64($0) }, shape: outShape, type: first.type) }
        return Value(computed: y, shape: outShape, type: first.type)
    }

    /// The determinant of each `[M, M]` matrix of `[..., M, M]`, by LU with partial pivoting.
    static func determinant(_ c: NodeContext) throws -> Value {
        let x = try c.input(0)
        guard x.shape.count >= 2, x.shape[x.shape.count - 1] == x.shape[x.shape.count - 2] else {
            throw RuntimeError(.badShape, "Det needs [..., M, M], got \(x.shape)")
        }
        let n = x.shape.last!, v = x.asDoubles
        let batch = x.shape.dropLast(2).reduce(1, *)
        let dets = (0 ..< batch).map { b -> Double in
            var a = Array(v[b * n * n ..< (b + 1) * n * n])
            var det = 1.0
            for col in 0 ..< n {
                let pivot = (col ..< n).max { abs(a[$0 * n + col]) < abs(a[$1 * n + col]) }!
                if a[pivot * n + col] == 0 { return 0 }
                if pivot != col {
                    for k in 0 ..< n { a.swapAt(pivot * n + k, col * n + k) }
                    det = -det
                }
                det *= a[col * n + col]
                for row in col + 1 ..< n {
                    let f = a[row * n + col] / a[col * n + col]
                    for k in col ..< n { a[row * n + k] -= f * a[col * n + k] }
                }
            }
            return det
        }
        return Value(computed: dets, shape: Array(x.shape.dropLast(2)), type: x.type)
    }
}
