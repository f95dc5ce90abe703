import Tessera

/// Detection post-processing: NonMaxSuppression.
enum DetectionOps {
    static var table: [String: OpKernel] {
        ["NonMaxSuppression": { [try nonMaxSuppression($0)] }]
    }

    /// Per batch and class, boxes by descending score (ties: lower index first), each kept
    /// unless it overlaps a kept one by more than the IoU threshold, up to the per-class limit.
    static func nonMaxSuppression(_ c: NodeContext) throws -> Value {
        let boxes = try c.input(0), scores = try c.input(1)
        guard boxes.shape.count == 3, boxes.shape[2] == 4, scores.shape.count == 3,
              scores.shape[0] == boxes.shape[0], scores.shape[2] == boxes.shape[1] else {
            throw RuntimeError(.badShape, "boxes \(boxes.shape) and scores \(scores.shape) are not [B, N, 4] and [B, C, N]")
        }
        let (batches, classes, count) = (scores.shape[0], scores.shape[1], scores.shape[2])
        let limit = max(Int(c.optionalInput(2)?.asInts.first ?? 0), 0)
        let iouThreshold = c.optionalInput(3)?.asFloats.first ?? 0
        let scoreThreshold = c.optionalInput(4)?.asFloats.first
        let centered = c.int("center_point_box", 0) != 0
        let b = boxes.asFloats, s = scores.asFloats
        /// (x min, y min, x max, y max) of box i of a batch.
        func corners(_ batch: Int, _ i: Int) -> (Float, Float, Float, Float) {
            let p = (batch * count + i) * 4
            if centered {
                let (x, y, w, h) = (b[p], b[p + 1], b[p + 2] / 2, b[p + 3] / 2)
                return (x - w, y - h, x + w, y + h)
            }
            return (min(b[p + 1], b[p + 3]), min(b[p], b[p + 2]), max(b[p + 1], b[p + 3]), max(b[p], b[p + 2]))
        }
        func overlaps(_ batch: Int, _ i: Int, _ j: Int) -> Bool {
            let (ax0, ay0, ax1, ay1) = corners(batch, i), (bx0, by0, bx1, by1) = corners(batch, j)
            let w = min(ax1, bx1) - max(ax0, bx0), h = min(ay1, by1) - max(ay0, by0)
            guard w > 0, h > 0 else { return false }
            let intersection = w * h
            let areaA = (ax1 - ax0) * (ay1 - ay0), areaB = (bx1 - bx0) * (by1 - by0)
            let union = areaA + areaB - intersection
            guard areaA > 0, areaB > 0, union > 0 else { return false }
            return intersection / union > iouThreshold
        }
        var selected: [Int64] = []
        for batch in 0 ..< batches {
            for cls in 0 ..< classes {
                let base = (batch * classes + cls) * count
                let candidates = (0 ..< count).filter { scoreThreshold == nil || s[base + $0] > scoreThreshold! }
                    .sorted { s[base + $0] > s[base + $1] || (s[base + $0] == s[base + $1] && $0 < $1) }
                var kept: [Int] = []
                for i in candidates where kept.count < limit {
                    if kept.allSatisfy({ !overlaps(batch, i, $0) }) {
                        kept.append(i)
                        selected += [Int64(batch), Int64(cls), Int64(i)]
                    }
                }
            }
        }
        return Value(selected, shape: [selected.count / 3, 3])
    }
}
