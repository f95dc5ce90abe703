/* The float32 kernels, written once over 16-float vectors and included by one file per
   instruction set, which sets the target and the SUFFIX of the names. The loops mirror the
   portable Swift kernels (Microkernels.swift, DenseKernel.swift, LinearOps.swift) operation for
   operation: explicit fused multiply-adds, no contraction, the same summation order. */

#include <math.h>

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define NAME(f) CAT(f, SUFFIX)

typedef float vec __attribute__((vector_size(64), aligned(4)));
typedef signed char v16i8 __attribute__((vector_size(16), aligned(1)));

static inline vec NAME(load)(const float *p) { vec v; __builtin_memcpy(&v, p, sizeof v); return v; }
static inline void NAME(store)(vec v, float *p) { __builtin_memcpy(p, &v, sizeof v); }
static inline vec NAME(splat)(float s) { return (vec){s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s}; }
typedef int vint __attribute__((vector_size(64)));
/* Lane by lane, `mask` (a comparison's all-ones or zero lanes) ? a : b. */
static inline vec NAME(select)(vint mask, vec a, vec b) { return (vec)((mask & (vint)a) | (~mask & (vint)b)); }
#define SELECT NAME(select)
#define LOAD NAME(load)
#define STORE NAME(store)
#define SPLAT NAME(splat)
#define FMA(acc, a, b) __builtin_elementwise_fma(a, b, acc)

/* The horizontal sum in the order of Swift's SIMD16.sum(): lane by lane from -0. */
static inline float NAME(sum)(vec v) {
    float s = -0.0f;
    for (int i = 0; i < 16; i++) s += v[i];
    return s;
}

/* The tiles' loops, inlined three times: for packed panels (wr == 1, the weights of one depth
   adjacent), for rows read in place (wr apart), and for packed panels against activation rows
   at xt + rows[k] (`rows` not null: the indirect tiles). */
static inline __attribute__((always_inline)) void NAME(tile8x32_body)(const float *w, ptrdiff_t wr, ptrdiff_t ks,
                                                                      ptrdiff_t depth, const float *xt, ptrdiff_t ldx,
                                                                      const ptrdiff_t *rows, float *out, ptrdiff_t ldo,
                                                                      int accumulate) {
    float *o[8];
    for (int i = 0; i < 8; i++) o[i] = out + i * ldo;
    vec c0[8], c1[8];
    for (int i = 0; i < 8; i++) {
        c0[i] = accumulate ? LOAD(o[i]) : SPLAT(0.0f);
        c1[i] = accumulate ? LOAD(o[i] + 16) : SPLAT(0.0f);
    }
    for (ptrdiff_t k = 0; k < depth; k++) {
        const float *xk = rows ? xt + rows[k] : xt + k * ldx;
        vec x0 = LOAD(xk), x1 = LOAD(xk + 16);
        for (int i = 0; i < 8; i++) {
            vec b = SPLAT(w[i * wr]);
            c0[i] = FMA(c0[i], x0, b);
            c1[i] = FMA(c1[i], x1, b);
        }
        w += ks;
    }
    for (int i = 0; i < 8; i++) { STORE(c0[i], o[i]); STORE(c1[i], o[i] + 16); }
}

static void NAME(tile8x32)(const float *w, ptrdiff_t wr, ptrdiff_t ks, ptrdiff_t depth, const float *xt, ptrdiff_t ldx,
                           float *out, ptrdiff_t ldo, int accumulate) {
    if (wr == 1) NAME(tile8x32_body)(w, 1, ks, depth, xt, ldx, 0, out, ldo, accumulate);
    else NAME(tile8x32_body)(w, wr, ks, depth, xt, ldx, 0, out, ldo, accumulate);
}

static void NAME(tile8x32_indirect)(const float *w, ptrdiff_t depth, const float *x, const ptrdiff_t *rows, float *out,
                                    ptrdiff_t ldo, int accumulate) {
    NAME(tile8x32_body)(w, 1, 8, depth, x, 0, rows, out, ldo, accumulate);
}

static inline __attribute__((always_inline)) void NAME(tile8x16_body)(const float *w, ptrdiff_t wr, ptrdiff_t ks,
                                                                      ptrdiff_t depth, const float *xt, ptrdiff_t ldx,
                                                                      const ptrdiff_t *rows, float *out, ptrdiff_t ldo,
                                                                      int accumulate) {
    vec c[8];
    for (int i = 0; i < 8; i++) c[i] = accumulate ? LOAD(out + i * ldo) : SPLAT(0.0f);
    for (ptrdiff_t k = 0; k < depth; k++) {
        vec x0 = LOAD(rows ? xt + rows[k] : xt + k * ldx);
        for (int i = 0; i < 8; i++) c[i] = FMA(c[i], x0, SPLAT(w[i * wr]));
        w += ks;
    }
    for (int i = 0; i < 8; i++) STORE(c[i], out + i * ldo);
}

static void NAME(tile8x16)(const float *w, ptrdiff_t wr, ptrdiff_t ks, ptrdiff_t depth, const float *xt, ptrdiff_t ldx,
                           float *out, ptrdiff_t ldo, int accumulate) {
    if (wr == 1) NAME(tile8x16_body)(w, 1, ks, depth, xt, ldx, 0, out, ldo, accumulate);
    else NAME(tile8x16_body)(w, wr, ks, depth, xt, ldx, 0, out, ldo, accumulate);
}

static void NAME(tile8x16_indirect)(const float *w, ptrdiff_t depth, const float *x, const ptrdiff_t *rows, float *out,
                                    ptrdiff_t ldo, int accumulate) {
    NAME(tile8x16_body)(w, 1, 8, depth, x, 0, rows, out, ldo, accumulate);
}

static float NAME(dot)(const float *a, const float *b, ptrdiff_t n) {
    vec s0 = SPLAT(0), s1 = SPLAT(0);
    ptrdiff_t k = 0;
    for (; k + 32 <= n; k += 32) {
        s0 = FMA(s0, LOAD(a + k), LOAD(b + k));
        s1 = FMA(s1, LOAD(a + k + 16), LOAD(b + k + 16));
    }
    if (k + 16 <= n) { s0 = FMA(s0, LOAD(a + k), LOAD(b + k)); k += 16; }
    float s = NAME(sum)(s0 + s1);
    for (; k < n; k++) s += a[k] * b[k];
    return s;
}

static inline __attribute__((always_inline)) void NAME(columns_of)(const float *x, const void *values_, int int8, ptrdiff_t rows,
                                                                     ptrdiff_t depth, float *out, ptrdiff_t width) {
    const float *values = values_;
    const int8_t *codes = values_;
    /* Sixteen values from element e of the stored rows, and one. */
#define VALUES(e) (int8 ? __builtin_convertvector(*(const v16i8 *)(codes + (e)), vec) : LOAD(values + (e)))
#define VALUE(e) (int8 ? (float)codes[e] : values[e])
    for (ptrdiff_t i = 0; i < width; i++) out[i] = 0;
    ptrdiff_t k = 0;
    for (; k + 4 <= depth; k += 4) {
        vec s0 = SPLAT(x[k]), s1 = SPLAT(x[k + 1]), s2 = SPLAT(x[k + 2]), s3 = SPLAT(x[k + 3]);
        ptrdiff_t r0 = k * rows, r1 = r0 + rows, r2 = r1 + rows, r3 = r2 + rows;
        ptrdiff_t i = 0;
        for (; i + 16 <= width; i += 16) {
            vec sum = FMA(FMA(LOAD(out + i), VALUES(r0 + i), s0), VALUES(r1 + i), s1);
            STORE(FMA(FMA(sum, VALUES(r2 + i), s2), VALUES(r3 + i), s3), out + i);
        }
        for (; i < width; i++)
            out[i] += x[k] * VALUE(r0 + i) + x[k + 1] * VALUE(r1 + i) + x[k + 2] * VALUE(r2 + i) + x[k + 3] * VALUE(r3 + i);
    }
    for (; k < depth; k++) {
        vec s = SPLAT(x[k]);
        ptrdiff_t row = k * rows;
        ptrdiff_t i = 0;
        for (; i + 16 <= width; i += 16) STORE(FMA(LOAD(out + i), VALUES(row + i), s), out + i);
        for (; i < width; i++) out[i] += x[k] * VALUE(row + i);
    }
#undef VALUES
#undef VALUE
}

static void NAME(columns)(const float *x, const float *values, ptrdiff_t rows, ptrdiff_t depth, float *out, ptrdiff_t width) {
    NAME(columns_of)(x, values, 0, rows, depth, out, width);
}

static void NAME(columns_int8)(const float *x, const int8_t *codes, ptrdiff_t rows, ptrdiff_t depth, float *out, ptrdiff_t width) {
    NAME(columns_of)(x, codes, 1, rows, depth, out, width);
}

/* R rows of `product`, each with exactly the arithmetic of a row alone (so the same bits): the
   rows only share the loads of b. */
static inline __attribute__((always_inline)) void NAME(product_rows)(int R, const float *a, const float *b, float *c,
                                                                     ptrdiff_t k, ptrdiff_t n) {
    ptrdiff_t j = 0;
    for (; j + 64 <= n; j += 64) {
        vec s[4][4];
        for (int r = 0; r < R; r++) s[r][0] = s[r][1] = s[r][2] = s[r][3] = SPLAT(0);
        for (ptrdiff_t p = 0; p < k; p++) {
            const float *source = b + p * n + j;
            vec b0 = LOAD(source), b1 = LOAD(source + 16), b2 = LOAD(source + 32), b3 = LOAD(source + 48);
            for (int r = 0; r < R; r++) {
                vec x = SPLAT(a[r * k + p]);
                s[r][0] = FMA(s[r][0], x, b0); s[r][1] = FMA(s[r][1], x, b1);
                s[r][2] = FMA(s[r][2], x, b2); s[r][3] = FMA(s[r][3], x, b3);
            }
        }
        for (int r = 0; r < R; r++) {
            float *row = c + r * n + j;
            STORE(s[r][0], row); STORE(s[r][1], row + 16); STORE(s[r][2], row + 32); STORE(s[r][3], row + 48);
        }
    }
    for (; j + 16 <= n; j += 16) {
        vec s0[4], s1[4];
        for (int r = 0; r < R; r++) s0[r] = s1[r] = SPLAT(0);
        ptrdiff_t p = 0;
        for (; p + 2 <= k; p += 2) {
            vec b0 = LOAD(b + p * n + j), b1 = LOAD(b + (p + 1) * n + j);
            for (int r = 0; r < R; r++) {
                s0[r] = FMA(s0[r], SPLAT(a[r * k + p]), b0);
                s1[r] = FMA(s1[r], SPLAT(a[r * k + p + 1]), b1);
            }
        }
        for (int r = 0; r < R; r++) {
            if (p < k) s0[r] = FMA(s0[r], SPLAT(a[r * k + p]), LOAD(b + p * n + j));
            STORE(s0[r] + s1[r], c + r * n + j);
        }
    }
    for (int r = 0; r < R; r++)
        for (ptrdiff_t jj = j; jj < n; jj++) {
            float sum = 0;
            for (ptrdiff_t p = 0; p < k; p++) sum = __builtin_fmaf(a[r * k + p], b[p * n + jj], sum);
            c[r * n + jj] = sum;
        }
}

static void NAME(product)(const float *a, const float *b, float *c, ptrdiff_t m, ptrdiff_t k, ptrdiff_t n) {
    ptrdiff_t i = 0;
    for (; i + PRODUCT_ROWS <= m; i += PRODUCT_ROWS) NAME(product_rows)(PRODUCT_ROWS, a + i * k, b, c + i * n, k, n);
    for (; i < m; i++) NAME(product_rows)(1, a + i * k, b, c + i * n, k, n);
}

static void NAME(sparse_tile8x32)(const float *v, const int32_t *off, ptrdiff_t count, const float *xt, float *out,
                                  ptrdiff_t ldo) {
    const ptrdiff_t s = TESSERA_SPARSE_PANEL_STRIDE;
    vec c0[8], c1[8];
    for (int i = 0; i < 8; i++) { c0[i] = LOAD(out + i * ldo); c1[i] = LOAD(out + i * ldo + 16); }
    for (ptrdiff_t j = 0; j < count; j++) {
        for (int i = 0; i < 8; i++) {
            const float *p = xt + off[j + i * s];
            vec b = SPLAT(v[j + i * s]);
            c0[i] = FMA(c0[i], LOAD(p), b);
            c1[i] = FMA(c1[i], LOAD(p + 16), b);
        }
    }
    for (int i = 0; i < 8; i++) { STORE(c0[i], out + i * ldo); STORE(c1[i], out + i * ldo + 16); }
}

static void NAME(sparse_tile8x16)(const float *v, const int32_t *off, ptrdiff_t count, const float *xt, float *out,
                                  ptrdiff_t ldo) {
    const ptrdiff_t s = TESSERA_SPARSE_PANEL_STRIDE;
    vec c[8];
    for (int i = 0; i < 8; i++) c[i] = LOAD(out + i * ldo);
    for (ptrdiff_t j = 0; j < count; j++)
        for (int i = 0; i < 8; i++) c[i] = FMA(c[i], LOAD(xt + off[j + i * s]), SPLAT(v[j + i * s]));
    for (int i = 0; i < 8; i++) STORE(c[i], out + i * ldo);
}

/* One width's CSR row, its vector count a constant so that the sums stay in registers. */
static inline __attribute__((always_inline)) void NAME(csr_row_n)(int n, ptrdiff_t lo, ptrdiff_t hi, const uint8_t *depth,
                                                                   const float *values, const float *xt, ptrdiff_t ld,
                                                                   float *out, int adding) {
    vec a[4], c[4];
    for (int q = 0; q < n; q++) { a[q] = adding ? LOAD(out + 16 * q) : SPLAT(0); c[q] = SPLAT(0); }
    ptrdiff_t i = lo;
    for (; i + 2 <= hi; i += 2) {
        const float *p = xt + depth[i] * ld, *r = xt + depth[i + 1] * ld;
        vec w = SPLAT(values[i]), u = SPLAT(values[i + 1]);
        for (int q = 0; q < n; q++) a[q] = FMA(a[q], LOAD(p + 16 * q), w);
        for (int q = 0; q < n; q++) c[q] = FMA(c[q], LOAD(r + 16 * q), u);
    }
    if (i < hi) {
        const float *p = xt + depth[i] * ld;
        vec w = SPLAT(values[i]);
        for (int q = 0; q < n; q++) a[q] = FMA(a[q], LOAD(p + 16 * q), w);
    }
    for (int q = 0; q < n; q++) STORE(a[q] + c[q], out + 16 * q);
}

static void NAME(csr_row)(ptrdiff_t width, ptrdiff_t lo, ptrdiff_t hi, const uint8_t *depth, const float *values,
                          const float *xt, ptrdiff_t ld, float *out, int adding) {
    switch (width) {
    case 64: NAME(csr_row_n)(4, lo, hi, depth, values, xt, ld, out, adding); break;
    case 32: NAME(csr_row_n)(2, lo, hi, depth, values, xt, ld, out, adding); break;
    default: NAME(csr_row_n)(1, lo, hi, depth, values, xt, ld, out, adding); break;
    }
}

/* One operator's loops: the compiler vectorises each (exactly rounded operations, so any order
   of lanes gives the same bits). */
#define BINARY_LOOPS(EXPR)                                                                                  \
    for (ptrdiff_t o = 0; o < outer; o++) {                                                               \
        if (inner == 1) {                                                                                 \
            const float *f = full + o * middle; float *y = out + o * middle;                              \
            for (ptrdiff_t m = 0; m < middle; m++) { float x = f[m], p = part[m]; y[m] = (EXPR); }        \
        } else {                                                                                          \
            for (ptrdiff_t m = 0; m < middle; m++) {                                                      \
                const float *f = full + (o * middle + m) * inner; float *y = out + (o * middle + m) * inner; \
                float p = part[m];                                                                        \
                for (ptrdiff_t j = 0; j < inner; j++) { float x = f[j]; y[j] = (EXPR); }                  \
            }                                                                                             \
        }                                                                                                 \
    }

static void NAME(binary)(int op, const float *full, const float *part, float *out, ptrdiff_t outer, ptrdiff_t middle,
                         ptrdiff_t inner, int part_first) {
    switch (op * 2 + (part_first != 0)) {
    case TESSERA_ADD * 2: case TESSERA_ADD * 2 + 1: BINARY_LOOPS(x + p) break;
    case TESSERA_MUL * 2: case TESSERA_MUL * 2 + 1: BINARY_LOOPS(x * p) break;
    case TESSERA_SUB * 2: BINARY_LOOPS(x - p) break;
    case TESSERA_SUB * 2 + 1: BINARY_LOOPS(p - x) break;
    case TESSERA_DIV * 2: BINARY_LOOPS(x / p) break;
    case TESSERA_DIV * 2 + 1: BINARY_LOOPS(p / x) break;
    }
}
#undef BINARY_LOOPS

/* exp(x) to about 1 ulp: x = n·ln2 + r with |r| <= ln2/2 (ln2 in two parts), e^r by a degree-7
   polynomial (Cephes' expf coefficients), times 2^n in two exact steps so that n may reach
   -150 (subnormal results) or 128. Beyond the range: 0 or infinity; NaN stays NaN. */
static inline vec NAME(exp_v)(vec x) {
    const vec hi = SPLAT(88.72283935546875f), lo = SPLAT(-103.97207641601562f);
    vec c = __builtin_elementwise_min(__builtin_elementwise_max(x, lo), hi);
    vec n = __builtin_elementwise_roundeven(c * SPLAT(1.44269502162933349609375f));
    vec r = FMA(c, n, SPLAT(-0.693359375f));
    r = FMA(r, n, SPLAT(2.12194440e-4f));
    vec z = r * r;
    vec p = SPLAT(1.9875691500e-4f);
    p = FMA(SPLAT(1.3981999507e-3f), p, r);
    p = FMA(SPLAT(8.3334519073e-3f), p, r);
    p = FMA(SPLAT(4.1665795894e-2f), p, r);
    p = FMA(SPLAT(1.6666665459e-1f), p, r);
    p = FMA(SPLAT(5.0000001201e-1f), p, r);
    p = FMA(r, p, z) + SPLAT(1.0f);
    vint k = __builtin_convertvector(n, vint), half = k >> 1;
    vec y = p * (vec)((half + 127) << 23) * (vec)((k - half + 127) << 23);
    y = SELECT(x > hi, SPLAT(__builtin_inff()), y);
    y = SELECT(x < lo, SPLAT(0.0f), y);
    return SELECT(x != x, x, y);
}

/* erf(x) to about 1 ulp (minimax polynomials, split at |x| = 0.921875): x + x·P(x²) below, and
   1 − exp(−Q(|x|)) with the sign of x above. */
static inline vec NAME(erf_v)(vec x) {
    vec t = __builtin_elementwise_abs(x), s = x * x;
    vec small = SPLAT(-0x1.3a1a82p-11f);
    small = FMA(SPLAT(0x1.473f48p-08f), small, s);
    small = FMA(SPLAT(-0x1.b68bd2p-06f), small, s);
    small = FMA(SPLAT(0x1.ce1a46p-04f), small, s);
    small = FMA(SPLAT(-0x1.8126e0p-02f), small, s);
    small = FMA(SPLAT(0x1.06eba6p-03f), small, s);
    small = FMA(x, small, x);
    vec big = FMA(SPLAT(-0x1.91d2ccp-12f), SPLAT(0x1.222900p-16f), t);
    vec u = FMA(SPLAT(-0x1.8d6300p-06f), SPLAT(0x1.fd1336p-09f), t);
    big = FMA(u, big, s);
    big = FMA(SPLAT(0x1.b55cb0p-4f), big, t);
    big = FMA(SPLAT(0x1.450aa0p-1f), big, t);
    big = FMA(SPLAT(0x1.079d0cp-3f), big, t);
    big = FMA(t, big, t);
    big = SPLAT(1.0f) - NAME(exp_v)(-big);
    big = __builtin_elementwise_copysign(big, x);
    return SELECT(t >= SPLAT(0.921875f), big, small);
}

/* 1 / (1 + e^−x), as e^x / (1 + e^x) for negative x, so that tiny results keep their precision. */
static inline vec NAME(sigmoid_v)(vec x) {
    vec e = NAME(exp_v)(-__builtin_elementwise_abs(x)), d = SPLAT(1.0f) + e;
    return SELECT(x < SPLAT(0.0f), e / d, SPLAT(1.0f) / d);
}

/* tanh(x): below |x| = 0.625 x + x³·P(x²) (Cephes' tanhf coefficients), above it
   1 − 2 / (e^{2|x|} + 1) with the sign of x. */
static inline vec NAME(tanh_v)(vec x) {
    vec t = __builtin_elementwise_abs(x), z = x * x;
    vec p = SPLAT(-5.70498872745e-3f);
    p = FMA(SPLAT(2.06390887954e-2f), p, z);
    p = FMA(SPLAT(-5.37397155531e-2f), p, z);
    p = FMA(SPLAT(1.33314422036e-1f), p, z);
    p = FMA(SPLAT(-3.33332819422e-1f), p, z);
    vec small = FMA(x, p * z, x);
    vec big = SPLAT(1.0f) - SPLAT(2.0f) / (NAME(exp_v)(t + t) + SPLAT(1.0f));
    big = __builtin_elementwise_copysign(big, x);
    return SELECT(t >= SPLAT(0.625f), big, small);
}

static inline vec NAME(unary_v)(int op, vec v) {
    switch (op) {
    case TESSERA_EXP: return NAME(exp_v)(v);
    case TESSERA_ERF: return NAME(erf_v)(v);
    case TESSERA_SIGMOID: return NAME(sigmoid_v)(v);
    default: return NAME(tanh_v)(v);
    }
}

static void NAME(unary)(int op, const float *x, float *y, ptrdiff_t n) {
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        vec v = LOAD(x + i);
        STORE(NAME(unary_v)(op, v), y + i);
    }
    if (i < n) {   /* the tail through one padded vector */
        float in[16] = {0}, out[16];
        for (ptrdiff_t j = 0; i + j < n; j++) in[j] = x[i + j];
        vec v = LOAD(in);
        STORE(NAME(unary_v)(op, v), out);
        for (ptrdiff_t j = 0; i + j < n; j++) y[i + j] = out[j];
    }
}

static void NAME(softmax)(const float *x, float *y, ptrdiff_t rows, ptrdiff_t n, int log) {
    for (ptrdiff_t o = 0; o < rows; o++) {
        const float *row = x + o * n;
        float *out = y + o * n;
        float m = -__builtin_inff();
        ptrdiff_t k = 0;
        if (n >= 16) {
            vec mv = LOAD(row);
            for (k = 16; k + 16 <= n; k += 16) mv = __builtin_elementwise_max(mv, LOAD(row + k));
            for (int j = 0; j < 16; j++) m = mv[j] > m ? mv[j] : m;
        }
        for (; k < n; k++) m = row[k] > m ? row[k] : m;
        vec lanes = SPLAT(0), shift = SPLAT(m);
        for (k = 0; k + 16 <= n; k += 16) {
            vec e = NAME(exp_v)(LOAD(row + k) - shift);
            lanes += e;
            if (!log) STORE(e, out + k);
        }
        float sum = NAME(sum)(lanes), tail[16] = {0};
        if (k < n) {   /* the tail through one padded vector, as `unary` computes it */
            for (ptrdiff_t j = 0; k + j < n; j++) tail[j] = row[k + j] - m;
            STORE(NAME(exp_v)(LOAD(tail)), tail);
            for (ptrdiff_t j = 0; k + j < n; j++) sum += tail[j];
        }
        if (log) {
            vec l = SPLAT(logf(sum));
            for (k = 0; k + 16 <= n; k += 16) STORE(LOAD(row + k) - shift - l, out + k);
            for (; k < n; k++) out[k] = row[k] - m - l[0];
        } else {
            vec s = SPLAT(sum);
            ptrdiff_t full = k;
            for (k = 0; k < full; k += 16) STORE(LOAD(out + k) / s, out + k);
            for (; k < n; k++) out[k] = tail[k - full] / sum;
        }
    }
}

static void NAME(masked_softmax)(const float *x, float *y, ptrdiff_t rows, ptrdiff_t n, float divisor, const float *mask,
                                 ptrdiff_t mask_step, int mask_first) {
    const vec d = SPLAT(divisor);
    for (ptrdiff_t o = 0; o < rows; o++) {
        const float *row = x + o * n;
        float *out = y + o * n;
        ptrdiff_t k = 0;
        for (; k + 16 <= n; k += 16) {
            vec t = LOAD(row + k) / d, m = mask_step ? LOAD(mask + k) : SPLAT(mask[0]);
            STORE(mask_first ? m + t : t + m, out + k);
        }
        for (; k < n; k++) {
            float t = row[k] / divisor, m = mask[k * mask_step];
            out[k] = mask_first ? m + t : t + m;
        }
        NAME(softmax)(out, out, 1, n, 0);
    }
}

static void NAME(gelu)(const float *x, float *y, ptrdiff_t n, float a, float b, float c) {
    vec va = SPLAT(a), vb = SPLAT(b), vc = SPLAT(c);
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        vec v = LOAD(x + i);
        STORE(((NAME(erf_v)(v / va) + vb) * v) * vc, y + i);
    }
    if (i < n) {   /* the tail through one padded vector */
        float in[16] = {0}, out[16];
        for (ptrdiff_t j = 0; i + j < n; j++) in[j] = x[i + j];
        vec v = LOAD(in);
        STORE(((NAME(erf_v)(v / va) + vb) * v) * vc, out);
        for (ptrdiff_t j = 0; i + j < n; j++) y[i + j] = out[j];
    }
}

static void NAME(silu)(const float *x, float *y, ptrdiff_t n) {
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        vec v = LOAD(x + i);
        STORE(v * NAME(sigmoid_v)(v), y + i);
    }
    if (i < n) {   /* the tail through one padded vector */
        float in[16] = {0}, out[16];
        for (ptrdiff_t j = 0; i + j < n; j++) in[j] = x[i + j];
        vec v = LOAD(in);
        STORE(v * NAME(sigmoid_v)(v), out);
        for (ptrdiff_t j = 0; i + j < n; j++) y[i + j] = out[j];
    }
}

typedef double vecd __attribute__((vector_size(64), aligned(4)));
typedef float vec8 __attribute__((vector_size(32), aligned(4)));

static inline vecd NAME(load8d)(const float *p) {
    vec8 v;
    __builtin_memcpy(&v, p, sizeof v);
    return __builtin_convertvector(v, vecd);
}

static void NAME(layernorm)(const float *x, float *y, ptrdiff_t rows, ptrdiff_t n, const float *gamma, const float *beta,
                            double epsilon, float *means, float *inverses) {
    for (ptrdiff_t o = 0; o < rows; o++) {
        const float *row = x + o * n;
        float *out = y + o * n;
        vecd lanes = {0, 0, 0, 0, 0, 0, 0, 0};
        ptrdiff_t k = 0;
        for (; k + 8 <= n; k += 8) lanes += NAME(load8d)(row + k);
        double sum = 0;
        for (int j = 0; j < 8; j++) sum += lanes[j];
        for (; k < n; k++) sum += (double)row[k];
        double mean = sum / (double)n;
        vecd mv = {mean, mean, mean, mean, mean, mean, mean, mean}, squares8 = {0, 0, 0, 0, 0, 0, 0, 0};
        for (k = 0; k + 8 <= n; k += 8) {
            vecd d = NAME(load8d)(row + k) - mv;
            squares8 += d * d;
        }
        double squares = 0;
        for (int j = 0; j < 8; j++) squares += squares8[j];
        for (; k < n; k++) squares += ((double)row[k] - mean) * ((double)row[k] - mean);
        double inverse = 1 / sqrt(squares / (double)n + epsilon);
        means[o] = (float)mean;
        inverses[o] = (float)inverse;
        vecd iv = {inverse, inverse, inverse, inverse, inverse, inverse, inverse, inverse};
        for (k = 0; k + 8 <= n; k += 8) {
            vec8 g, r = __builtin_convertvector((NAME(load8d)(row + k) - mv) * iv, vec8);
            __builtin_memcpy(&g, gamma + k, sizeof g);
            r = r * g;
            if (beta) { vec8 b; __builtin_memcpy(&b, beta + k, sizeof b); r = r + b; }
            __builtin_memcpy(out + k, &r, sizeof r);
        }
        for (; k < n; k++) {
            float r = (float)(((double)row[k] - mean) * inverse) * gamma[k];
            out[k] = beta ? r + beta[k] : r;
        }
    }
}

/* Output columns [lo, hi) whose input column ox·s + offset lies in [0, w). */
static inline void NAME(inside)(ptrdiff_t offset, ptrdiff_t s, ptrdiff_t w, ptrdiff_t ow, ptrdiff_t *lo, ptrdiff_t *hi) {
    ptrdiff_t first = offset >= 0 ? 0 : (-offset + s - 1) / s;
    ptrdiff_t last = w - 1 - offset < 0 ? -1 : (w - 1 - offset) / s;   /* the largest ox reading column < w */
    *lo = first;
    *hi = last + 1 < ow ? last + 1 : ow;
    if (*hi < *lo) *hi = *lo;
}

/* The first n (<= 16) floats at p in a vector, zeros after them; and stored back. AVX-512 masks
   them; otherwise a partial vector goes through a copy. */
static inline __attribute__((always_inline)) vec NAME(load_first)(const float *p, ptrdiff_t n) {
    if (n == 16) return LOAD(p);
#ifdef TESSERA_MASKED_VECTORS
    return (vec)_mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p);
#else
    float part[16] = {0};
    for (ptrdiff_t j = 0; j < n; j++) part[j] = p[j];
    return LOAD(part);
#endif
}

static inline __attribute__((always_inline)) void NAME(store_first)(vec v, float *p, ptrdiff_t n) {
    if (n == 16) { STORE(v, p); return; }
#ifdef TESSERA_MASKED_VECTORS
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), (__m512)v);
#else
    float part[16];
    STORE(v, part);
    for (ptrdiff_t j = 0; j < n; j++) p[j] = part[j];
#endif
}

/* Sixteen inputs `sx` apart from s: one tap's pixels for sixteen outputs in a row (depthwise
   convolution and MaxPool). */
static inline __attribute__((always_inline)) vec NAME(strided_taps)(const float *s, ptrdiff_t sx) {
    if (sx == 1) return LOAD(s);
    if (sx == 2) return __builtin_shufflevector(LOAD(s), LOAD(s + 16), 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    vec x;
    for (int j = 0; j < 16; j++) x[j] = s[j * sx];
    return x;
}

/* The first m (1 to 16) of the floats two apart from s, zeros after them, reading none past the
   last: a stride-2 row's last partial vector (MaxPool, strided_copy). */
static inline __attribute__((always_inline)) vec NAME(evens_first)(const float *s, ptrdiff_t m) {
    const ptrdiff_t need = 2 * m - 1;
    return __builtin_shufflevector(NAME(load_first)(s, need < 16 ? need : 16), NAME(load_first)(s + 16, need > 16 ? need - 16 : 0),
                                   0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
}

/* R output rows (rows `step` floats apart in the padded input, `ow` apart in out), sixteen
   outputs at a time, each summing its taps in order onto the bias: R
   independent sums hide each multiply-add's latency. The last block goes through a copy. */
static inline __attribute__((always_inline)) void NAME(depthwise_rows)(int R, const float *top, ptrdiff_t step, const float *weights,
                                                                       ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t sx, ptrdiff_t dx,
                                                                       ptrdiff_t tapRow, float bias, float *out, ptrdiff_t ow) {
    for (ptrdiff_t ox = 0; ox < ow; ox += 16) {
        ptrdiff_t n = ow - ox < 16 ? ow - ox : 16;
        vec acc[4];
        _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) acc[r] = SPLAT(bias);
        for (ptrdiff_t ky = 0; ky < kh; ky++)
            for (ptrdiff_t kx = 0; kx < kw; kx++) {
                vec weight = SPLAT(weights[ky * kw + kx]);
                const float *source = top + ky * tapRow + ox * sx + kx * dx;
                _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) acc[r] = acc[r] + weight * NAME(strided_taps)(source + r * step, sx);
            }
        _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) NAME(store_first)(acc[r], out + r * ow + ox, n);
    }
}

static void NAME(depthwise)(const float *in, ptrdiff_t h, ptrdiff_t w, const float *weights, ptrdiff_t kh, ptrdiff_t kw,
                            ptrdiff_t sy, ptrdiff_t sx, ptrdiff_t dy, ptrdiff_t dx, ptrdiff_t py, ptrdiff_t px, float bias,
                            float *out, ptrdiff_t oh, ptrdiff_t ow, float *padded) {
    /* The rows the windows read, zeros around the input (already there: only the input's
       place is written), each wide enough that every block of 16 outputs (the last one too)
       loads whole vectors. Rows are short: copied in vectors, not by a library call each. */
    const ptrdiff_t ph = (oh - 1) * sy + (kh - 1) * dy + 1, ps = tessera_depthwise_stride(ow, kw, sx, dx);
    const ptrdiff_t first = px < 0 ? -px : 0, last = w < ps - px ? w : ps - px;   /* input columns that land in a row */
    for (ptrdiff_t r = 0; r < ph && first < last; r++) {
        ptrdiff_t iy = r - py;
        if (iy < 0 || iy >= h) continue;
        const float *source = in + iy * w + first;
        float *row = padded + r * ps + first + px;
        ptrdiff_t j = 0;
        for (; j + 16 <= last - first; j += 16) STORE(LOAD(source + j), row + j);
        if (j < last - first) NAME(store_first)(NAME(load_first)(source + j, last - first - j), row + j, last - first - j);
    }
    /* Rows four at a time; the stride a constant where it is 1 or 2, so the tap loads are plain. */
#define DEPTHWISE_ROWS(R, SX) NAME(depthwise_rows)(R, padded + oy * sy * ps, sy * ps, weights, kh, kw, SX, dx, dy * ps, bias, out + oy * ow, ow)
#define DEPTHWISE_ANY_STRIDE(R) if (sx == 1) DEPTHWISE_ROWS(R, 1); else if (sx == 2) DEPTHWISE_ROWS(R, 2); else DEPTHWISE_ROWS(R, sx)
    ptrdiff_t oy = 0;
    for (; oy + 4 <= oh; oy += 4) { DEPTHWISE_ANY_STRIDE(4); }
    /* The last one to three rows together: each row alone waited on its sums' additions. */
    switch (oh - oy) {
    case 3: DEPTHWISE_ANY_STRIDE(3); break;
    case 2: DEPTHWISE_ANY_STRIDE(2); break;
    case 1: DEPTHWISE_ANY_STRIDE(1); break;
    }
#undef DEPTHWISE_ANY_STRIDE
#undef DEPTHWISE_ROWS
}

static void NAME(maxpool)(const float *in, ptrdiff_t h, ptrdiff_t w, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t sy, ptrdiff_t sx,
                          ptrdiff_t dy, ptrdiff_t dx, ptrdiff_t py, ptrdiff_t px, float *out, ptrdiff_t oh, ptrdiff_t ow,
                          float *seen) {
    for (ptrdiff_t oy = 0; oy < oh; oy++) {
        float *row = out + oy * ow;
        for (ptrdiff_t ox = 0; ox < ow; ox++) { row[ox] = -__builtin_inff(); seen[ox] = 0; }
        for (ptrdiff_t ky = 0; ky < kh; ky++) {
            ptrdiff_t iy = oy * sy + ky * dy - py;
            if (iy < 0 || iy >= h) continue;
            const float *source = in + iy * w;
            for (ptrdiff_t kx = 0; kx < kw; kx++) {
                ptrdiff_t offset = kx * dx - px, lo, hi;
                NAME(inside)(offset, sx, w, ow, &lo, &hi);
                ptrdiff_t ox = lo;
                /* Sixteen outputs at a time while the tap's vector loads stay inside the row. */
                for (; ox + 16 <= hi && (ox + 16) * sx + offset <= w; ox += 16) {
                    vec v = NAME(strided_taps)(source + ox * sx + offset, sx), current = LOAD(row + ox);
                    vint take = (LOAD(seen + ox) == SPLAT(0)) | (v > current);
                    STORE(SELECT(take, v, current), row + ox);
                    STORE(SPLAT(1), seen + ox);
                }
                /* The rest, whose last vector load would pass the row's end: for strides 1 and 2
                   partial vectors that load only the taps (a scalar loop here was most of a
                   2x2 pool's time, a fifth of its outputs), else one at a time. */
                for (; ox < hi && sx <= 2; ox += 16) {
                    ptrdiff_t m = hi - ox < 16 ? hi - ox : 16;
                    const float *s = source + ox * sx + offset;
                    vec v = sx == 1 ? NAME(load_first)(s, m) : NAME(evens_first)(s, m);
                    vec current = NAME(load_first)(row + ox, m);
                    vint take = (NAME(load_first)(seen + ox, m) == SPLAT(0)) | (v > current);
                    NAME(store_first)(SELECT(take, v, current), row + ox, m);
                    NAME(store_first)(SPLAT(1), seen + ox, m);
                }
                for (; ox < hi; ox++) {
                    float v = source[ox * sx + offset];
                    row[ox] = (seen[ox] == 0 || v > row[ox]) ? v : row[ox];
                    seen[ox] = 1;
                }
            }
        }
    }
}

/* One step of the Conv epilogue (see tessera_epilogue) on a vector, for a constant `activation`;
   `addOnly` (a constant) when the steps are one Add of the constant and nothing normalizes. */
static inline __attribute__((always_inline)) vec NAME(epilogue_v)(const tessera_epilogue *e, int activation, int addOnly, vec v,
                                                                  const float *residual, ptrdiff_t n, const int *ops, const float *constants) {
    const vec zero = SPLAT(0.0f), one = SPLAT(1.0f);
    if (addOnly) {
        v = v + SPLAT(constants[0]);
    } else if (e->normalize) {
        const vecd scale = {e->scale, e->scale, e->scale, e->scale, e->scale, e->scale, e->scale, e->scale};
        const vecd shift = {e->shift, e->shift, e->shift, e->shift, e->shift, e->shift, e->shift, e->shift};
        vec8 lo = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7), hi = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
        lo = __builtin_convertvector(__builtin_convertvector(lo, vecd) * scale + shift, vec8);
        hi = __builtin_convertvector(__builtin_convertvector(hi, vecd) * scale + shift, vec8);
        v = __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    }
    for (int s = 0; s < e->steps && !addOnly; s++) {
        const vec c = SPLAT(constants[s]);
        switch (ops[s]) {
        case TESSERA_STEP_ADD: v = v + c; break;
        case TESSERA_STEP_ADD | TESSERA_STEP_CONSTANT_FIRST: v = c + v; break;
        case TESSERA_STEP_SUB: v = v - c; break;
        case TESSERA_STEP_SUB | TESSERA_STEP_CONSTANT_FIRST: v = c - v; break;
        case TESSERA_STEP_MUL: v = v * c; break;
        case TESSERA_STEP_MUL | TESSERA_STEP_CONSTANT_FIRST: v = c * v; break;
        case TESSERA_STEP_DIV: v = v / c; break;
        default: v = c / v; break;
        }
    }
    if (residual) {
        vec r = NAME(load_first)(residual, n);
        v = e->residual_first ? r + v : v + r;
    }
    vec t;
    switch (activation) {
    case TESSERA_RELU: return SELECT(v <= zero, zero, v);
    case TESSERA_HARDSWISH:
        t = SPLAT(1.0f / 6.0f) * v + SPLAT(0.5f);
        t = SELECT(t < one, t, one);
        return v * SELECT(t >= zero, t, zero);
    case TESSERA_LEAKYRELU: return SELECT(v >= zero, v, SPLAT(e->alpha) * v);
    case TESSERA_HARDSIGMOID:
        t = SPLAT(e->alpha) * v + SPLAT(e->beta);
        t = SELECT(t < one, t, one);
        return SELECT(t >= zero, t, zero);
    case TESSERA_CLIP:
        t = SELECT(SPLAT(e->alpha) >= v, SPLAT(e->alpha), v);
        return SELECT(SPLAT(e->beta) < t, SPLAT(e->beta), t);
    case TESSERA_SILU: return v * NAME(sigmoid_v)(v);
    case TESSERA_GELU: return ((NAME(erf_v)(v / SPLAT(e->alpha)) + SPLAT(e->beta)) * v) * SPLAT(e->gamma);
    default: return v;
    }
}

static void NAME(epilogue)(float *v, ptrdiff_t n, const tessera_epilogue *steps) {
    /* Local copies: no store to v can change them. */
    const tessera_epilogue copy = *steps, *e = &copy;
    int ops[TESSERA_EPILOGUE_MAX_STEPS];
    float constants[TESSERA_EPILOGUE_MAX_STEPS];
    for (int s = 0; s < e->steps; s++) { ops[s] = e->ops[s]; constants[s] = e->constants[s]; }
    /* A Conv exported without its bias and then Added one (PaddlePaddle's) has a loop of its own:
       a step loop and its switch on every vector were a third of a Relu epilogue's time. */
    const int addOnly = !e->normalize && e->steps == 1 && ops[0] == TESSERA_STEP_ADD;
#define EPILOGUE_RUN(activation, addOnly) \
    ptrdiff_t i = 0; \
    /* Two vectors at a time: GELU's and SiLU's long chains overlap (one at a time, each waited \
       on its own). */ \
    for (; i + 32 <= n; i += 32) { \
        vec x0 = e->source ? SPLAT(e->initial) + LOAD(e->source + i) : LOAD(v + i); \
        vec x1 = e->source ? SPLAT(e->initial) + LOAD(e->source + i + 16) : LOAD(v + i + 16); \
        vec y0 = NAME(epilogue_v)(e, activation, addOnly, x0, e->residual ? e->residual + i : 0, 16, ops, constants); \
        vec y1 = NAME(epilogue_v)(e, activation, addOnly, x1, e->residual ? e->residual + i + 16 : 0, 16, ops, constants); \
        STORE(y0, v + i); \
        STORE(y1, v + i + 16); \
    } \
    for (; i < n; i += 16) { \
        ptrdiff_t m = n - i < 16 ? n - i : 16; \
        vec x = e->source ? SPLAT(e->initial) + NAME(load_first)(e->source + i, m) : NAME(load_first)(v + i, m); \
        NAME(store_first)(NAME(epilogue_v)(e, activation, addOnly, x, e->residual ? e->residual + i : 0, m, ops, constants), v + i, m); \
    }
#define EPILOGUE_LOOP(activation) if (addOnly) { EPILOGUE_RUN(activation, 1) } else { EPILOGUE_RUN(activation, 0) }
    switch (e->activation) {
    case TESSERA_RELU: EPILOGUE_LOOP(TESSERA_RELU) break;
    case TESSERA_HARDSWISH: EPILOGUE_LOOP(TESSERA_HARDSWISH) break;
    case TESSERA_LEAKYRELU: EPILOGUE_LOOP(TESSERA_LEAKYRELU) break;
    case TESSERA_HARDSIGMOID: EPILOGUE_LOOP(TESSERA_HARDSIGMOID) break;
    case TESSERA_CLIP: EPILOGUE_LOOP(TESSERA_CLIP) break;
    case TESSERA_SILU: EPILOGUE_LOOP(TESSERA_SILU) break;
    case TESSERA_GELU: EPILOGUE_LOOP(TESSERA_GELU) break;
    default: EPILOGUE_LOOP(TESSERA_IDENTITY) break;
    }
#undef EPILOGUE_LOOP
#undef EPILOGUE_RUN
}

static void NAME(strided_copy)(const float *source, ptrdiff_t step, float *target, ptrdiff_t count) {
    ptrdiff_t t = 0;
    if (step == 2) {
        /* Thirty-two floats read for sixteen: the last read is the one before the last copied. */
        for (; t + 17 <= count; t += 16) {
            vec a = LOAD(source + 2 * t), b = LOAD(source + 2 * t + 16);
            STORE(__builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30), target + t);
        }
        /* The last one to sixteen from partial loads that read up to the last copied (one at a
           time, they were a fifth of an 80-float row and most of its time). */
        if (t < count) {
            NAME(store_first)(NAME(evens_first)(source + 2 * t, count - t), target + t, count - t);
            return;
        }
    }
    for (; t < count; t++) target[t] = source[t * step];
}

const tessera_kernels NAME(tessera_kernels) = {
    NAME(tile8x32), NAME(tile8x16), NAME(tile8x32_indirect), NAME(tile8x16_indirect), NAME(dot), NAME(columns), NAME(columns_int8), NAME(product),
    NAME(sparse_tile8x32), NAME(sparse_tile8x16), NAME(csr_row), NAME(binary), NAME(unary), NAME(depthwise), NAME(maxpool),
    NAME(softmax), NAME(masked_softmax), NAME(layernorm), NAME(gelu), NAME(silu), NAME(epilogue), NAME(strided_copy),
};
