import CTesseraKernels

/// Tessera's float32 exp, erf, sigmoid and tanh, within 2 or 3 ulp: in vector form in the C
/// kernels and here as the portable scalar reference, operation for operation the same (so every
/// variant gives the same bits). Through glibc's scalar functions MiniLM's three Erf nodes took
/// 4.4 ms; through these, 0.6 ms.
enum ElementaryFunction {
    case exp, erf, sigmoid, tanh

    var code: Int32 {
        switch self {
        case .exp: Int32(TESSERA_EXP)
        case .erf: Int32(TESSERA_ERF)
        case .sigmoid: Int32(TESSERA_SIGMOID)
        case .tanh: Int32(TESSERA_TANH)
        }
    }

    /// `self` at every element of `x`, through the variant `KernelDispatch` chose.
    func callAsFunction(_ x: [Float]) -> [Float] {
        guard let k = KernelDispatch.kernels, !x.isEmpty else { return x.map(portable) }
        return [Float](unsafeUninitializedCapacity: x.count) { y, initialized in
            k.unary(code, x, y.baseAddress!, x.count)
            initialized = x.count
        }
    }

    /// `self` at every element of `x`, in place.
    func apply(_ x: UnsafeMutablePointer<Float>, count: Int) {
        if let k = KernelDispatch.kernels { k.unary(code, x, x, count); return }
        for i in 0 ..< count { x[i] = portable(x[i]) }
    }

    func portable(_ x: Float) -> Float {
        switch self {
        case .exp: PortableKernels.exp(x)
        case .erf: PortableKernels.erf(x)
        case .sigmoid: PortableKernels.sigmoid(x)
        case .tanh: PortableKernels.tanh(x)
        }
    }
}

extension PortableKernels {
    /// exp(x): x = n·ln2 + r with |r| <= ln2/2 (ln2 in two parts), e^r by a degree-7 polynomial
    /// (Cephes' expf coefficients), times 2^n in two exact steps so that n may reach -150
    /// (subnormal results) or 128. Beyond the range: 0 or infinity; NaN stays NaN.
    static func exp(_ x: Float) -> Float {
        let hi: Float = 88.72283935546875, lo: Float = -103.97207641601562
        if x.isNaN { return x }
        if x > hi { return .infinity }
        if x < lo { return 0 }
        let n = (x * 1.44269502162933349609375).rounded(.toNearestOrEven)
        let r = x.addingProduct(n, -0.693359375).addingProduct(n, 2.12194440e-4)
        let z = r * r
        var p: Float = 1.9875691500e-4
        p = (1.3981999507e-3 as Float).addingProduct(p, r)
        p = (8.3334519073e-3 as Float).addingProduct(p, r)
        p = (4.1665795894e-2 as Float).addingProduct(p, r)
        p = (1.6666665459e-1 as Float).addingProduct(p, r)
        p = (5.0000001201e-1 as Float).addingProduct(p, r)
        p = r.addingProduct(p, z) + 1
        let k = Int32(n), half = k >> 1
        return p * Float(bitPattern: UInt32(bitPattern: (half + 127) << 23)) * Float(bitPattern: UInt32(bitPattern: (k - half + 127) << 23))
    }

    /// 1 / (1 + e^−x), as e^x / (1 + e^x) for negative x, so that tiny results keep their precision.
    static func sigmoid(_ x: Float) -> Float {
        let e = exp(-abs(x)), d = 1 + e
        return x < 0 ? e / d : 1 / d
    }

    /// tanh(x): below |x| = 0.625 x + x³·P(x²) (Cephes' tanhf coefficients), above it
    /// 1 − 2 / (e^{2|x|} + 1) with the sign of x.
    static func tanh(_ x: Float) -> Float {
        let t = abs(x), z = x * x
        if t >= 0.625 { return Float(signOf: x, magnitudeOf: 1 - 2 / (exp(t + t) + 1)) }
        var p: Float = -5.70498872745e-3
        p = (2.06390887954e-2 as Float).addingProduct(p, z)
        p = (-5.37397155531e-2 as Float).addingProduct(p, z)
        p = (1.33314422036e-1 as Float).addingProduct(p, z)
        p = (-3.33332819422e-1 as Float).addingProduct(p, z)
        return x.addingProduct(p * z, x)
    }

    /// erf(x) (minimax polynomials, split at |x| = 0.921875): x + x·P(x²) below, and
    /// 1 − exp(−Q(|x|)) with the sign of x above.
    static func erf(_ x: Float) -> Float {
        let t = abs(x), s = x * x
        if t >= 0.921875 {
            var big = (-0x1.91d2ccp-12 as Float).addingProduct(0x1.222900p-16, t)
            let u = (-0x1.8d6300p-06 as Float).addingProduct(0x1.fd1336p-09, t)
            big = u.addingProduct(big, s)
            big = (0x1.b55cb0p-4 as Float).addingProduct(big, t)
            big = (0x1.450aa0p-1 as Float).addingProduct(big, t)
            big = (0x1.079d0cp-3 as Float).addingProduct(big, t)
            big = t.addingProduct(big, t)
            return Float(signOf: x, magnitudeOf: 1 - exp(-big))
        }
        var small: Float = -0x1.3a1a82p-11
        small = (0x1.473f48p-08 as Float).addingProduct(small, s)
        small = (-0x1.b68bd2p-06 as Float).addingProduct(small, s)
        small = (0x1.ce1a46p-04 as Float).addingProduct(small, s)
        small = (-0x1.8126e0p-02 as Float).addingProduct(small, s)
        small = (0x1.06eba6p-03 as Float).addingProduct(small, s)
        return x.addingProduct(small, x)
    }
}
