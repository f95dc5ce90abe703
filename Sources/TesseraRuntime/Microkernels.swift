/// Register-blocked inner loops shared by the dense and quantized kernels: each call runs the
/// variant `KernelDispatch` chose (C, per instruction set) or the portable Swift one, which is
/// the reference the variants reproduce exactly.
///
/// The tiles compute `out[i][b] += Σ_k w[i·wr + k·ks] · xt[k·ldx + b]`, 8 rows by 32 (or 16)
/// columns, with every accumulator in a register; or, not `accumulating` (a first depth block),
/// `out[i][b] = Σ_k ...` over whatever `out` held. The dense kernel runs them two ways: an 8-row
/// tile of `yᵀ`, the weights broadcast from its packed or decoded 8-row panels (`wr == 1`,
/// `ks == 8`) and the activations vectors of 16 batch rows; or an 8-row tile of `y`, the
/// activations broadcast from 8 rows of `x` read in place (`wr` = depth, `ks == 1`) and the
/// weights vectors of 16 outputs from panels packed 32 outputs wide.

@inline(__always)
func tile8x32(_ w: UnsafePointer<Float>, _ wr: Int, _ ks: Int, _ depth: Int,
              _ xt: UnsafePointer<Float>, _ ldx: Int, _ out: UnsafeMutablePointer<Float>, _ ldo: Int, accumulating: Bool) {
    if let k = KernelDispatch.kernels { k.tile8x32(w, wr, ks, depth, xt, ldx, out, ldo, accumulating ? 1 : 0) } else {
        PortableKernels.tile8x32(w, wr, ks, depth, xt, ldx, out, ldo, accumulating: accumulating)
    }
}

@inline(__always)
func tile8x16(_ w: UnsafePointer<Float>, _ wr: Int, _ ks: Int, _ depth: Int,
              _ xt: UnsafePointer<Float>, _ ldx: Int, _ out: UnsafeMutablePointer<Float>, _ ldo: Int, accumulating: Bool) {
    if let k = KernelDispatch.kernels { k.tile8x16(w, wr, ks, depth, xt, ldx, out, ldo, accumulating ? 1 : 0) } else {
        PortableKernels.tile8x16(w, wr, ks, depth, xt, ldx, out, ldo, accumulating: accumulating)
    }
}

/// The indirect tiles: `out[i][b] (+)= Σ_k w[8k + i] · x[rows[k] + b]` over packed panels, the
/// activations of each depth read where they lie (a convolution's padded input planes).
@inline(__always)
func tile8x32(_ w: UnsafePointer<Float>, _ depth: Int, _ x: UnsafePointer<Float>, rows: UnsafePointer<Int>,
              _ out: UnsafeMutablePointer<Float>, _ ldo: Int, accumulating: Bool) {
    if let k = KernelDispatch.kernels { k.tile8x32_indirect(w, depth, x, rows, out, ldo, accumulating ? 1 : 0) } else {
        PortableKernels.tile8x32(w, depth, x, rows: rows, out, ldo, accumulating: accumulating)
    }
}

@inline(__always)
func tile8x16(_ w: UnsafePointer<Float>, _ depth: Int, _ x: UnsafePointer<Float>, rows: UnsafePointer<Int>,
              _ out: UnsafeMutablePointer<Float>, _ ldo: Int, accumulating: Bool) {
    if let k = KernelDispatch.kernels { k.tile8x16_indirect(w, depth, x, rows, out, ldo, accumulating ? 1 : 0) } else {
        PortableKernels.tile8x16(w, depth, x, rows: rows, out, ldo, accumulating: accumulating)
    }
}

/// Copies `count` floats `step` apart from `source` into `target` (a stride-2 convolution's
/// input rows split into their even and odd columns).
@inline(__always)
func copyFloats(_ source: UnsafePointer<Float>, step: Int, _ target: UnsafeMutablePointer<Float>, count: Int) {
    if step == 1 { return copyFloats(source, target, count: count) }
    if let k = KernelDispatch.kernels { k.strided_copy(source, step, target, count) } else {
        PortableKernels.stridedCopy(source, step, target, count)
    }
}

/// `Σ a[k]·b[k]`.
@inline(__always)
func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
    if let k = KernelDispatch.kernels { return k.dot(a, b, n) }
    return PortableKernels.dot(a, b, n)
}

/// `out[i] = Σ_k x[k] · values[k·rows + i]` for `i < width`: a GEMV over stored `[depth, rows]`
/// float32 values, `values` pointing at the first output's column.
@inline(__always)
func columns(_ x: UnsafePointer<Float>, _ values: UnsafePointer<Float>, rows: Int, depth: Int, _ out: UnsafeMutablePointer<Float>, width: Int) {
    if let k = KernelDispatch.kernels { k.columns(x, values, rows, depth, out, width) } else {
        PortableKernels.columns(x, values, rows: rows, depth: depth, out, width: width, load) { $0 }
    }
}

/// `columns` over int8 codes (scales and zero points are the caller's).
@inline(__always)
func columns(_ x: UnsafePointer<Float>, _ codes: UnsafePointer<Int8>, rows: Int, depth: Int, _ out: UnsafeMutablePointer<Float>, width: Int) {
    if let k = KernelDispatch.kernels { k.columns_int8(x, codes, rows, depth, out, width) } else {
        PortableKernels.columns(x, codes, rows: rows, depth: depth, out, width: width, loadFloats) { Float($0) }
    }
}

/// `c = a · b` for row-major `a [m, k]`, `b [k, n]`.
@inline(__always)
func denseProduct(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafeMutablePointer<Float>, m: Int, k: Int, n: Int) {
    if let kernels = KernelDispatch.kernels { kernels.product(a, b, c, m, k, n) } else { PortableKernels.denseProduct(a, b, c, m: m, k: k, n: n) }
}

/// The portable kernels: Swift SIMD, the reference every C variant reproduces bit for bit.
enum PortableKernels {
    @inline(never)
    static func tile8x32(_ w: UnsafePointer<Float>, _ wr: Int, _ ks: Int, _ depth: Int,
                  _ xt: UnsafePointer<Float>, _ ldx: Int, _ out: UnsafeMutablePointer<Float>, _ ldo: Int, accumulating: Bool) {
        tile8x32(w, wr, ks, depth, { xt + $0 &* ldx }, out, ldo, accumulating: accumulating)
    }

    /// The indirect tile: packed panels against the activations of depth `k` at `x + rows[k]`.
    @inline(never)
    static func tile8x32(_ w: UnsafePointer<Float>, _ depth: Int, _ x: UnsafePointer<Float>, rows: UnsafePointer<Int>,
                         _ out: UnsafeMutablePointer<Float>, _ ldo: Int, accumulating: Bool) {
        tile8x32(w, 1, 8, depth, { x + rows[$0] }, out, ldo, accumulating: accumulating)
    }

    @inline(__always)
    private static func tile8x32(_ w: UnsafePointer<Float>, _ wr: Int, _ ks: Int, _ depth: Int, _ row: (Int) -> UnsafePointer<Float>,
                                 _ out: UnsafeMutablePointer<Float>, _ ldo: Int, accumulating: Bool) {
        let o0 = out, o1 = out + ldo, o2 = o1 + ldo, o3 = o2 + ldo, o4 = o3 + ldo, o5 = o4 + ldo, o6 = o5 + ldo, o7 = o6 + ldo
        let start = { (p: UnsafeMutablePointer<Float>) in accumulating ? load(p) : Vec() }
        var c00 = start(o0), c01 = start(o0 + 16), c10 = start(o1), c11 = start(o1 + 16)
        var c20 = start(o2), c21 = start(o2 + 16), c30 = start(o3), c31 = start(o3 + 16)
        var c40 = start(o4), c41 = start(o4 + 16), c50 = start(o5), c51 = start(o5 + 16)
        var c60 = start(o6), c61 = start(o6 + 16), c70 = start(o7), c71 = start(o7 + 16)
        var wp = w
        for k in 0 ..< depth {
            let xp = row(k), x0 = load(xp), x1 = load(xp + 16)
            var b = Vec(repeating: wp[0]); c00.addProduct(x0, b); c01.addProduct(x1, b)
            b = Vec(repeating: wp[1 &* wr]); c10.addProduct(x0, b); c11.addProduct(x1, b)
            b = Vec(repeating: wp[2 &* wr]); c20.addProduct(x0, b); c21.addProduct(x1, b)
            b = Vec(repeating: wp[3 &* wr]); c30.addProduct(x0, b); c31.addProduct(x1, b)
            b = Vec(repeating: wp[4 &* wr]); c40.addProduct(x0, b); c41.addProduct(x1, b)
            b = Vec(repeating: wp[5 &* wr]); c50.addProduct(x0, b); c51.addProduct(x1, b)
            b = Vec(repeating: wp[6 &* wr]); c60.addProduct(x0, b); c61.addProduct(x1, b)
            b = Vec(repeating: wp[7 &* wr]); c70.addProduct(x0, b); c71.addProduct(x1, b)
            wp += ks
        }
        store(c00, o0); store(c01, o0 + 16); store(c10, o1); store(c11, o1 + 16)
        store(c20, o2); store(c21, o2 + 16); store(c30, o3); store(c31, o3 + 16)
        store(c40, o4); store(c41, o4 + 16); store(c50, o5); store(c51, o5 + 16)
        store(c60, o6); store(c61, o6 + 16); store(c70, o7); store(c71, o7 + 16)
    }

    @inline(never)
    static func tile8x16(_ w: UnsafePointer<Float>, _ wr: Int, _ ks: Int, _ depth: Int,
                  _ xt: UnsafePointer<Float>, _ ldx: Int, _ out: UnsafeMutablePointer<Float>, _ ldo: Int, accumulating: Bool) {
        tile8x16(w, wr, ks, depth, { xt + $0 &* ldx }, out, ldo, accumulating: accumulating)
    }

    @inline(never)
    static func tile8x16(_ w: UnsafePointer<Float>, _ depth: Int, _ x: UnsafePointer<Float>, rows: UnsafePointer<Int>,
                         _ out: UnsafeMutablePointer<Float>, _ ldo: Int, accumulating: Bool) {
        tile8x16(w, 1, 8, depth, { x + rows[$0] }, out, ldo, accumulating: accumulating)
    }

    @inline(__always)
    private static func tile8x16(_ w: UnsafePointer<Float>, _ wr: Int, _ ks: Int, _ depth: Int, _ row: (Int) -> UnsafePointer<Float>,
                                 _ out: UnsafeMutablePointer<Float>, _ ldo: Int, accumulating: Bool) {
        let o0 = out, o1 = out + ldo, o2 = o1 + ldo, o3 = o2 + ldo, o4 = o3 + ldo, o5 = o4 + ldo, o6 = o5 + ldo, o7 = o6 + ldo
        let start = { (p: UnsafeMutablePointer<Float>) in accumulating ? load(p) : Vec() }
        var c0 = start(o0), c1 = start(o1), c2 = start(o2), c3 = start(o3)
        var c4 = start(o4), c5 = start(o5), c6 = start(o6), c7 = start(o7)
        var wp = w
        for k in 0 ..< depth {
            let x0 = load(row(k))
            c0.addProduct(x0, Vec(repeating: wp[0])); c1.addProduct(x0, Vec(repeating: wp[1 &* wr]))
            c2.addProduct(x0, Vec(repeating: wp[2 &* wr])); c3.addProduct(x0, Vec(repeating: wp[3 &* wr]))
            c4.addProduct(x0, Vec(repeating: wp[4 &* wr])); c5.addProduct(x0, Vec(repeating: wp[5 &* wr]))
            c6.addProduct(x0, Vec(repeating: wp[6 &* wr])); c7.addProduct(x0, Vec(repeating: wp[7 &* wr]))
            wp += ks
        }
        store(c0, o0); store(c1, o1); store(c2, o2); store(c3, o3)
        store(c4, o4); store(c5, o5); store(c6, o6); store(c7, o7)
    }

    /// `target[t] = source[t·step]`, stepping a pointer: indexing with checked products kept
    /// this loop scalar and branchy.
    static func stridedCopy(_ source: UnsafePointer<Float>, _ step: Int, _ target: UnsafeMutablePointer<Float>, _ count: Int) {
        var from = source
        for t in 0 ..< count {
            target[t] = from.pointee
            from += step
        }
    }

    /// `Σ a[k]·b[k]` with two vector accumulators and a scalar tail.
    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var s0 = Vec(), s1 = Vec()
        var k = 0
        while k &+ 32 <= n {
            s0.addProduct(load(a + k), load(b + k))
            s1.addProduct(load(a + k + 16), load(b + k + 16))
            k &+= 32
        }
        if k &+ 16 <= n { s0.addProduct(load(a + k), load(b + k)); k &+= 16 }
        var s = (s0 + s1).sum()
        while k < n { s += a[k] * b[k]; k &+= 1 }
        return s
    }

    /// `out[i] = Σ_k x[k] · values[k·rows + i]` for `i < width` over stored `[depth, rows]`
    /// values (float32, or int8 codes through `vector` and `scalar`): four depths at a time, so
    /// each 64 outputs are loaded and stored once per four weight rows (once per row, loading
    /// and storing the outputs bounded the int8 loop).
    @inline(__always)
    static func columns<T>(_ x: UnsafePointer<Float>, _ values: UnsafePointer<T>, rows: Int, depth: Int,
                           _ out: UnsafeMutablePointer<Float>, width: Int,
                           _ vector: (UnsafePointer<T>) -> Vec, _ scalar: (T) -> Float) {
        out.initialize(repeating: 0, count: width)
        var k = 0
        while k &+ 4 <= depth {
            let s0 = Vec(repeating: x[k]), s1 = Vec(repeating: x[k &+ 1]), s2 = Vec(repeating: x[k &+ 2]), s3 = Vec(repeating: x[k &+ 3])
            let row0 = values + k &* rows
            let row1 = row0 + rows, row2 = row1 + rows, row3 = row2 + rows
            @inline(__always) func update(_ i: Int) {
                let sum = load(out + i).addingProduct(vector(row0 + i), s0).addingProduct(vector(row1 + i), s1)
                store(sum.addingProduct(vector(row2 + i), s2).addingProduct(vector(row3 + i), s3), out + i)
            }
            var i = 0
            while i &+ 64 <= width {
                update(i); update(i &+ 16); update(i &+ 32); update(i &+ 48)
                i &+= 64
            }
            while i &+ 16 <= width {
                update(i)
                i &+= 16
            }
            while i < width {
                out[i] += x[k] * scalar(row0[i]) + x[k &+ 1] * scalar(row1[i]) + x[k &+ 2] * scalar(row2[i]) + x[k &+ 3] * scalar(row3[i])
                i &+= 1
            }
            k &+= 4
        }
        while k < depth {
            let s = Vec(repeating: x[k]), row = values + k &* rows
            var i = 0
            while i &+ 16 <= width {
                store(load(out + i).addingProduct(vector(row + i), s), out + i)
                i &+= 16
            }
            while i < width {
                out[i] += x[k] * scalar(row[i])
                i &+= 1
            }
            k &+= 1
        }
    }

    /// `c = a · b` for row-major `a [m, k]`, `b [k, n]`: rows of `b` accumulated into rows of `c`,
    /// an inner loop the compiler vectorises.
    static func denseProduct(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafeMutablePointer<Float>, m: Int, k: Int, n: Int) {
        // Each row of `c` 64 and then 16 columns at a time, summed in registers over all of `k`
        // (summing into memory once per `k` made the stores the bottleneck).
        for i in 0 ..< m {
            let aRow = a + i * k, row = c + i * n
            var j = 0
            while j + 64 <= n {
                var s0 = Vec(), s1 = Vec(), s2 = Vec(), s3 = Vec()
                for p in 0 ..< k {
                    let s = Vec(repeating: aRow[p]), source = b + p * n + j
                    s0.addProduct(s, load(source)); s1.addProduct(s, load(source + 16))
                    s2.addProduct(s, load(source + 32)); s3.addProduct(s, load(source + 48))
                }
                store(s0, row + j); store(s1, row + j + 16); store(s2, row + j + 32); store(s3, row + j + 48)
                j += 64
            }
            while j + 16 <= n {
                // Two sums, so that consecutive depths do not wait on each other.
                var s0 = Vec(), s1 = Vec(), p = 0
                while p + 2 <= k {
                    s0.addProduct(Vec(repeating: aRow[p]), load(b + p * n + j))
                    s1.addProduct(Vec(repeating: aRow[p + 1]), load(b + (p + 1) * n + j))
                    p += 2
                }
                if p < k { s0.addProduct(Vec(repeating: aRow[p]), load(b + p * n + j)) }
                store(s0 + s1, row + j)
                j += 16
            }
            for j in j ..< n {
                var sum: Float = 0
                for p in 0 ..< k { sum.addProduct(aRow[p], b[p * n + j]) }
                row[j] = sum
            }
        }
    }
}
