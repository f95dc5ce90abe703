/// Register-blocked inner loops shared by the dense and quantized kernels.
///
/// Both compute an 8-row tile of `yᵀ`: `out[i][b] += Σ_k w[i + k·ks] · xt[k·ldx + b]`, 8 rows
/// by 32 (or 16) batch columns, with every accumulator in a register. The weights are
/// broadcast from `w` (a decoded panel with `ks == 8`, or float32 rows stored adjacently);
/// the activations are vectors of 16 batch rows.

@inline(never)
func tile8x32(_ w: UnsafePointer<Float>, _ ks: Int, _ depth: Int,
              _ xt: UnsafePointer<Float>, _ ldx: Int, _ out: UnsafeMutablePointer<Float>, _ ldo: Int) {
    let o0 = out, o1 = out + ldo, o2 = o1 + ldo, o3 = o2 + ldo, o4 = o3 + ldo, o5 = o4 + ldo, o6 = o5 + ldo, o7 = o6 + ldo
    var c00 = load(o0), c01 = load(o0 + 16), c10 = load(o1), c11 = load(o1 + 16)
    var c20 = load(o2), c21 = load(o2 + 16), c30 = load(o3), c31 = load(o3 + 16)
    var c40 = load(o4), c41 = load(o4 + 16), c50 = load(o5), c51 = load(o5 + 16)
    var c60 = load(o6), c61 = load(o6 + 16), c70 = load(o7), c71 = load(o7 + 16)
    var wp = w, xp = xt
    for _ in 0 ..< depth {
        let x0 = load(xp), x1 = load(xp + 16)
        var b = Vec(repeating: wp[0]); c00.addProduct(x0, b); c01.addProduct(x1, b)
        b = Vec(repeating: wp[1]); c10.addProduct(x0, b); c11.addProduct(x1, b)
        b = Vec(repeating: wp[2]); c20.addProduct(x0, b); c21.addProduct(x1, b)
        b = Vec(repeating: wp[3]); c30.addProduct(x0, b); c31.addProduct(x1, b)
        b = Vec(repeating: wp[4]); c40.addProduct(x0, b); c41.addProduct(x1, b)
        b = Vec(repeating: wp[5]); c50.addProduct(x0, b); c51.addProduct(x1, b)
        b = Vec(repeating: wp[6]); c60.addProduct(x0, b); c61.addProduct(x1, b)
        b = Vec(repeating: wp[7]); c70.addProduct(x0, b); c71.addProduct(x1, b)
        wp += ks
        xp += ldx
    }
    store(c00, o0); store(c01, o0 + 16); store(c10, o1); store(c11, o1 + 16)
    store(c20, o2); store(c21, o2 + 16); store(c30, o3); store(c31, o3 + 16)
    store(c40, o4); store(c41, o4 + 16); store(c50, o5); store(c51, o5 + 16)
    store(c60, o6); store(c61, o6 + 16); store(c70, o7); store(c71, o7 + 16)
}

@inline(never)
func tile8x16(_ w: UnsafePointer<Float>, _ ks: Int, _ depth: Int,
              _ xt: UnsafePointer<Float>, _ ldx: Int, _ out: UnsafeMutablePointer<Float>, _ ldo: Int) {
    let o0 = out, o1 = out + ldo, o2 = o1 + ldo, o3 = o2 + ldo, o4 = o3 + ldo, o5 = o4 + ldo, o6 = o5 + ldo, o7 = o6 + ldo
    var c0 = load(o0), c1 = load(o1), c2 = load(o2), c3 = load(o3)
    var c4 = load(o4), c5 = load(o5), c6 = load(o6), c7 = load(o7)
    var wp = w, xp = xt
    for _ in 0 ..< depth {
        let x0 = load(xp)
        c0.addProduct(x0, Vec(repeating: wp[0])); c1.addProduct(x0, Vec(repeating: wp[1]))
        c2.addProduct(x0, Vec(repeating: wp[2])); c3.addProduct(x0, Vec(repeating: wp[3]))
        c4.addProduct(x0, Vec(repeating: wp[4])); c5.addProduct(x0, Vec(repeating: wp[5]))
        c6.addProduct(x0, Vec(repeating: wp[6])); c7.addProduct(x0, Vec(repeating: wp[7]))
        wp += ks
        xp += ldx
    }
    store(c0, o0); store(c1, o1); store(c2, o2); store(c3, o3)
    store(c4, o4); store(c5, o5); store(c6, o6); store(c7, o7)
}

/// `Σ a[k]·b[k]` with two vector accumulators and a scalar tail.
@inline(__always)
func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
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
