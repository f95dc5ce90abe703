import Tessera

/// Detection post-processing: NonMaxSuppression, and RoiAlign's pooling of box regions.
enum DetectionOps {
    static var table: [String: OpKernel] {
        ["NonMaxSuppression": { [try nonMaxSuppression($0)] }, "RoiAlign": { [try roiAlign($0)] }]
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
        // Boxes and scores are read in Double (exact for float32): float64 ones keep their precision.
        let iouThreshold = c.optionalInput(3)?.asDoubles.first ?? 0
        let scoreThreshold = c.optionalInput(4)?.asDoubles.first
        let centered = c.int("center_point_box", 0) != 0
        let b = boxes.asDoubles, s = scores.asDoubles
        /// (x min, y min, x max, y max) of box i of a batch.
        func corners(_ batch: Int, _ i: Int) -> (Double, Double, Double, Double) {
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

    /// RoiAlign: each box `[x1, y1, x2, y2]` (scaled by `spatial_scale`) of its batch image cut
    /// into output_height × output_width bins, each the average (or max) of a grid of bilinear
    /// samples, as onnxruntime and the ONNX reference compute it (max mode: the max of the
    /// weighted corner values).
    static func roiAlign(_ c: NodeContext) throws -> Value {
        let x = try c.input(0), rois = try c.input(1), batchIndices = try c.input(2).asInts
        guard x.shape.count == 4, rois.shape.count == 2, rois.shape[1] == 4, batchIndices.count == rois.shape[0] else {
            throw RuntimeError(.badShape, "X \(x.shape), rois \(rois.shape) and batch_indices are not [N, C, H, W], [R, 4] and [R]")
        }
        let (channels, height, width) = (x.shape[1], x.shape[2], x.shape[3])
        let outH = c.int("output_height", 1), outW = c.int("output_width", 1), ratio = c.int("sampling_ratio", 0)
        let scale = Double(c.float("spatial_scale", 1))
        let halfPixel = c.string("coordinate_transformation_mode", c.opset >= 16 ? "half_pixel" : "output_half_pixel") == "half_pixel"
        let mode = c.string("mode", "avg")
        guard outH > 0, outW > 0, ratio >= 0, mode == "avg" || mode == "max" else {
            throw RuntimeError(.badGraph, "RoiAlign needs positive output sizes, a sampling_ratio >= 0 and mode avg or max")
        }
        let v = x.asDoubles, boxes = rois.asDoubles
        var out = [Double](repeating: 0, count: try elementCount([rois.shape[0], channels, outH, outW]))
        for r in 0 ..< rois.shape[0] {
            let image = Int(batchIndices[r])
            guard image >= 0, image < x.shape[0] else { throw RuntimeError(.badShape, "batch index \(image) is outside \(x.shape[0]) images") }
            let offset = halfPixel ? 0.5 : 0
            let startW = boxes[r * 4] * scale - offset, startH = boxes[r * 4 + 1] * scale - offset
            var roiW = boxes[r * 4 + 2] * scale - offset - startW, roiH = boxes[r * 4 + 3] * scale - offset - startH
            if !halfPixel { roiW = max(roiW, 1); roiH = max(roiH, 1) }   // malformed boxes become 1×1
            let binH = roiH / Double(outH), binW = roiW / Double(outW)
            let gridH = ratio > 0 ? ratio : Int((roiH / Double(outH)).rounded(.up))
            let gridW = ratio > 0 ? ratio : Int((roiW / Double(outW)).rounded(.up))
            let count = Double(max(gridH * gridW, 1))
            // Four corners and weights per sample, shared by every channel.
            var samples: [(positions: [Int], weights: [Double])] = []
            for ph in 0 ..< outH {
                for pw in 0 ..< outW {
                    for iy in 0 ..< gridH {
                        var y = startH + Double(ph) * binH + (Double(iy) + 0.5) * binH / Double(gridH)
                        for ix in 0 ..< gridW {
                            var xx = startW + Double(pw) * binW + (Double(ix) + 0.5) * binW / Double(gridW)
                            if y < -1 || y > Double(height) || xx < -1 || xx > Double(width) {
                                samples.append(([0, 0, 0, 0], [0, 0, 0, 0]))
                                continue
                            }
                            y = max(y, 0); xx = max(xx, 0)
                            var yLow = Int(y), xLow = Int(xx), yHigh = yLow + 1, xHigh = xLow + 1
                            if yLow >= height - 1 { yLow = height - 1; yHigh = yLow; y = Double(yLow) }
                            if xLow >= width - 1 { xLow = width - 1; xHigh = xLow; xx = Double(xLow) }
                            let ly = y - Double(yLow), lx = xx - Double(xLow), hy = 1 - ly, hx = 1 - lx
                            samples.append(([yLow * width + xLow, yLow * width + xHigh, yHigh * width + xLow, yHigh * width + xHigh],
                                            [hy * hx, hy * lx, ly * hx, ly * lx]))
                        }
                    }
                }
            }
            for ch in 0 ..< channels {
                let plane = (image * channels + ch) * height * width
                for bin in 0 ..< outH * outW {
                    var value = 0.0, first = true
                    for s in samples[bin * gridH * gridW ..< (bin + 1) * gridH * gridW] {
                        let corners = (0 ..< 4).map { s.weights[$0] * v[plane + s.positions[$0]] }
                        if mode == "avg" {
                            value += corners.reduce(0, +)
                        } else {
                            value = first ? corners.max()! : max(value, corners.max()!)
                            first = false
                        }
                    }
                    out[((r * channels + ch) * outH * outW) + bin] = mode == "avg" ? value / count : value
                }
            }
        }
        return Value(computed: out, shape: [rois.shape[0], channels, outH, outW], type: x.type)
    }
}
