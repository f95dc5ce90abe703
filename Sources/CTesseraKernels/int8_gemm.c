/* The W8A8 GEMM in three steps: activation rows quantized to uint8 (ONNX DynamicQuantizeLinear),
   uint8 x int8 codes summed exactly in int32, and the sums scaled back to float. The portable
   variant is plain C; the VNNI variant computes the same values (exact integer sums, the same
   float operations in the same order), so results do not depend on the variant. */
#include <math.h>
#include <string.h>
#include "tessera_kernels.h"

void tessera_quantize_u8_portable(const float *x, ptrdiff_t n, uint8_t *codes, float *scale, int32_t *zero_point) {
    float low = 0, high = 0;
    for (ptrdiff_t i = 0; i < n; i++) { low = x[i] < low ? x[i] : low; high = x[i] > high ? x[i] : high; }
    float s = (high - low) / 255;
    *scale = s;
    if (!(s > 0)) { *zero_point = 0; memset(codes, 0, (size_t)n); return; }
    float z = fminf(fmaxf(nearbyintf(-low / s), 0), 255);
    *zero_point = (int32_t)z;
    for (ptrdiff_t i = 0; i < n; i++) codes[i] = (uint8_t)fminf(fmaxf(nearbyintf(x[i] / s) + z, 0), 255);
}

/* Wrapping int32 arithmetic is exact here: the true difference Σ (code_x − z)·code_w fits. */
static inline int32_t corrected(int32_t sum, int32_t zero_point, int32_t row_sum) {
    return (int32_t)((uint32_t)sum - (uint32_t)zero_point * (uint32_t)row_sum);
}

/* Activation row b's sums s[0 ..< 16] of outputs r0 ..< r0 + 16 into `o`. */
static void finish16(const int32_t *s, ptrdiff_t b, ptrdiff_t r0, const tessera_int8_output *o) {
    for (ptrdiff_t r = r0; r < r0 + 16 && r < o->outputs; r++) {
        float y = o->row_scales[r] * o->scales[b] * (float)corrected(s[r - r0], o->zero_points[b], o->row_sums[r]);
        o->out[b * o->ldy + r] = o->bias ? y + o->bias[r] : y;
    }
}

static void int8_gemm_portable(const uint8_t *x, ptrdiff_t batch, ptrdiff_t kp, const int8_t *wp, ptrdiff_t blocks,
                               const tessera_int8_output *o) {
    ptrdiff_t k4n = kp / 4;
    for (ptrdiff_t b = 0; b < batch; b++) {
        const uint8_t *xr = x + b * kp;
        for (ptrdiff_t rb = 0; rb < blocks; rb++) {
            const int8_t *w = wp + rb * k4n * 64;
            int32_t s[16] = {0};
            for (ptrdiff_t k4 = 0; k4 < k4n; k4++)
                for (int j = 0; j < 16; j++)
                    for (int t = 0; t < 4; t++) s[j] += (int32_t)xr[4 * k4 + t] * (int32_t)w[64 * k4 + 4 * j + t];
            finish16(s, b, 16 * rb, o);
        }
    }
}

ptrdiff_t tessera_first_nonfinite(const float *x, ptrdiff_t n) {
    enum { chunk = 256 };
    ptrdiff_t i = 0;
    for (; i + chunk <= n; i += chunk) {
        uint32_t bad = 0;
        for (ptrdiff_t j = 0; j < chunk; j++) {
            uint32_t bits;
            memcpy(&bits, x + i + j, sizeof bits);
            bad |= (bits & 0x7f800000u) == 0x7f800000u;
        }
        if (bad) break;
    }
    for (; i < n; i++) if (!isfinite(x[i])) return i;
    return n;
}

void tessera_int8_sparse24_gemm_portable(const uint8_t *x, ptrdiff_t batch, ptrdiff_t kp, const uint8_t *positions,
                                         const int8_t *codes, ptrdiff_t pairs, ptrdiff_t blocks, const tessera_int8_output *o) {
    for (ptrdiff_t b = 0; b < batch; b++)
        for (ptrdiff_t rb = 0; rb < blocks; rb++) {
            int32_t s[16] = {0};
            for (ptrdiff_t p = 0; p < pairs; p++) {
                const uint8_t *window = x + b * kp + 64 * (p / 8), *pos = positions + (rb * pairs + p) * 64;
                const int8_t *w = codes + (rb * pairs + p) * 64;
                for (int j = 0; j < 16; j++)
                    for (int t = 0; t < 4; t++) s[j] += (int32_t)window[pos[4 * j + t]] * (int32_t)w[4 * j + t];
            }
            finish16(s, b, 16 * rb, o);
        }
}

const tessera_int8_kernels tessera_int8_kernels_portable = {
    tessera_quantize_u8_portable, int8_gemm_portable, 8, 0, tessera_first_nonfinite,
};

#if defined(__x86_64__)
#include <immintrin.h>

#define VNNI __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")))

/* tessera_first_nonfinite on 64 floats at a time: an exponent of all ones is infinity or NaN. */
static VNNI ptrdiff_t first_nonfinite_vnni(const float *x, ptrdiff_t n) {
    const __m512i exponent = _mm512_set1_epi32(0x7f800000);
    ptrdiff_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __mmask16 bad = 0;
        for (int j = 0; j < 4; j++)
            bad |= _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_loadu_si512(x + i + 16 * j), exponent), exponent);
        if (bad) break;
    }
    return i + tessera_first_nonfinite(x + i, n - i);
}

/* The portable quantizer's codes, faster three ways. The range takes four running minima and
   maxima (one waited on its own last result at every vector); min and max give the same answer
   in any order (finite x; a zero's sign does not reach the codes). round(x / s) + z is taken as
   round(x · (1/s) + z) in one FMA: for finite x, |x / s| <= 256 and the sum below 512, the
   result is within 2^-14 of x / s + z (two roundings: 2^-16 and 2^-15), and the correctly
   rounded quotient within 2^-17 of x / s, so both round to the same integer unless the FMA lies
   within 2^-12 of a half-integer (vreduceps gives its distance to the nearest integer); 64
   values with such a lane divide instead. Four vectors of integers are clamped to [0, 255] by
   the saturating packs, as the float clamp would. Scales under 2^-100 (whose reciprocal might
   overflow) always divide. */
static VNNI void quantize_u8_vnni(const float *x, ptrdiff_t n, uint8_t *codes, float *scale, int32_t *zero_point) {
    __m512 lo[4], hi[4];
    for (int j = 0; j < 4; j++) lo[j] = hi[j] = _mm512_setzero_ps();
    ptrdiff_t i = 0;
    for (; i + 64 <= n; i += 64)
        for (int j = 0; j < 4; j++) {
            __m512 v = _mm512_loadu_ps(x + i + 16 * j);
            lo[j] = _mm512_min_ps(lo[j], v);
            hi[j] = _mm512_max_ps(hi[j], v);
        }
    for (; i + 16 <= n; i += 16) { __m512 v = _mm512_loadu_ps(x + i); lo[0] = _mm512_min_ps(lo[0], v); hi[0] = _mm512_max_ps(hi[0], v); }
    float low = _mm512_reduce_min_ps(_mm512_min_ps(_mm512_min_ps(lo[0], lo[1]), _mm512_min_ps(lo[2], lo[3])));
    float high = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(hi[0], hi[1]), _mm512_max_ps(hi[2], hi[3])));
    for (; i < n; i++) { low = x[i] < low ? x[i] : low; high = x[i] > high ? x[i] : high; }
    float s = (high - low) / 255;
    *scale = s;
    if (!(s > 0)) { *zero_point = 0; memset(codes, 0, (size_t)n); return; }
    float z = fminf(fmaxf(nearbyintf(-low / s), 0), 255);
    *zero_point = (int32_t)z;
    __m512 vs = _mm512_set1_ps(s), vz = _mm512_set1_ps(z), top = _mm512_set1_ps(255), zero = _mm512_setzero_ps();
    /* The codes of 16 values by division. */
#define DIVIDED(v) _mm512_cvtusepi32_epi8(_mm512_cvttps_epi32(_mm512_min_ps(_mm512_max_ps(                            \
        _mm512_add_ps(_mm512_roundscale_ps(_mm512_div_ps(v, vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), vz), zero), top)))
    i = 0;
    if (s >= 0x1p-100f) {
        const __m512 reciprocal = _mm512_set1_ps(1 / s), edge = _mm512_set1_ps(0.5f - 0x1p-12f);
        /* The packs interleave 128-bit lanes: dword 4l + m holds vector m's values 4l to 4l + 3. */
        const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        for (; i + 64 <= n; i += 64) {
            __m512i c[4];
            __mmask16 near = 0;
            for (int j = 0; j < 4; j++) {
                __m512 p = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16 * j), reciprocal, vz);
                near |= _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_reduce_ps(p, _MM_FROUND_TO_NEAREST_INT)), edge, _CMP_GE_OQ);
                c[j] = _mm512_cvt_roundps_epi32(p, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            }
            if (near) {
                for (int j = 0; j < 4; j++) _mm_storeu_si128((__m128i *)(codes + i + 16 * j), DIVIDED(_mm512_loadu_ps(x + i + 16 * j)));
            } else {
                __m512i words = _mm512_packus_epi16(_mm512_packus_epi32(c[0], c[1]), _mm512_packus_epi32(c[2], c[3]));
                _mm512_storeu_si512(codes + i, _mm512_permutexvar_epi32(order, words));
            }
        }
    }
    for (; i + 16 <= n; i += 16) _mm_storeu_si128((__m128i *)(codes + i), DIVIDED(_mm512_loadu_ps(x + i)));
#undef DIVIDED
    for (; i < n; i++) codes[i] = (uint8_t)fminf(fmaxf(nearbyintf(x[i] / s) + z, 0), 255);
}

/* TILE(nb, ...) with nb (1 to 8) a constant, so that the tile's register arrays unroll. */
#define BY_ROW_COUNT(nb, TILE, ...)                                                                        \
    switch (nb) {                                                                                          \
    case 8: TILE(8, __VA_ARGS__); break;                                                                   \
    case 7: TILE(7, __VA_ARGS__); break;                                                                   \
    case 6: TILE(6, __VA_ARGS__); break;                                                                   \
    case 5: TILE(5, __VA_ARGS__); break;                                                                   \
    case 4: TILE(4, __VA_ARGS__); break;                                                                   \
    case 3: TILE(3, __VA_ARGS__); break;                                                                   \
    case 2: TILE(2, __VA_ARGS__); break;                                                                   \
    default: TILE(1, __VA_ARGS__); break;                                                                  \
    }

/* The per-output operands of outputs r ..< r + 16: lanes m are those below `outputs`. */
typedef struct {
    __mmask16 m;
    __m512i row_sums;
    __m512 row_scales, bias;
} outputs16;

static inline __attribute__((always_inline)) VNNI outputs16 outputs_at(const tessera_int8_output *o, ptrdiff_t r) {
    outputs16 p = {0, _mm512_setzero_si512(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    if (r >= o->outputs) return p;
    p.m = o->outputs - r >= 16 ? 0xffff : (__mmask16)((1u << (o->outputs - r)) - 1);
    p.row_sums = _mm512_maskz_loadu_epi32(p.m, o->row_sums + r);
    p.row_scales = _mm512_maskz_loadu_ps(p.m, o->row_scales + r);
    if (o->bias) p.bias = _mm512_maskz_loadu_ps(p.m, o->bias + r);
    return p;
}

/* Activation row b's sums of outputs r ..< r + 16 (operands p) into `o`: the portable
   finish16's operations in its order, 16 lanes at a time; lanes past the last output are
   neither read nor stored. */
static inline __attribute__((always_inline)) VNNI void finish16_vnni(__m512i sum, outputs16 p, ptrdiff_t b, ptrdiff_t r,
                                                                     const tessera_int8_output *o) {
    if (!p.m) return;
    sum = _mm512_sub_epi32(sum, _mm512_mullo_epi32(_mm512_set1_epi32(o->zero_points[b]), p.row_sums));
    __m512 f = _mm512_mul_ps(_mm512_mul_ps(p.row_scales, _mm512_set1_ps(o->scales[b])), _mm512_cvtepi32_ps(sum));
    if (o->bias) f = _mm512_add_ps(f, p.bias);
    _mm512_mask_storeu_ps(o->out + b * o->ldy + r, p.m, f);
}

/* nb (<= 8) activation rows, from row b0, by two 16-row weight blocks from block rb: 16 int32
   accumulators in registers, one vpdpbusd per row and block for each four depths, finished from
   the registers. */
static inline __attribute__((always_inline)) VNNI void tile(int nb, const uint8_t *x, ptrdiff_t b0, ptrdiff_t kp, const int8_t *wp,
                                                            ptrdiff_t rb, const tessera_int8_output *o) {
    ptrdiff_t k4n = kp / 4;
    const int8_t *w0 = wp + rb * k4n * 64, *w1 = w0 + k4n * 64;
    __m512i c0[8], c1[8];
    for (int i = 0; i < nb; i++) { c0[i] = _mm512_setzero_si512(); c1[i] = _mm512_setzero_si512(); }
    for (ptrdiff_t k4 = 0; k4 < k4n; k4++) {
        __m512i a0 = _mm512_loadu_si512(w0 + 64 * k4), a1 = _mm512_loadu_si512(w1 + 64 * k4);
        for (int i = 0; i < nb; i++) {
            int32_t four;
            memcpy(&four, x + (b0 + i) * kp + 4 * k4, 4);
            __m512i xb = _mm512_set1_epi32(four);
            c0[i] = _mm512_dpbusd_epi32(c0[i], xb, a0);
            c1[i] = _mm512_dpbusd_epi32(c1[i], xb, a1);
        }
    }
    outputs16 p0 = outputs_at(o, 16 * rb), p1 = outputs_at(o, 16 * rb + 16);
    for (int i = 0; i < nb; i++) {
        finish16_vnni(c0[i], p0, b0 + i, 16 * rb, o);
        finish16_vnni(c1[i], p1, b0 + i, 16 * rb + 16, o);
    }
}

/* Activation rows first ..< batch. */
static VNNI void int8_gemm_vnni_rows(const uint8_t *x, ptrdiff_t first, ptrdiff_t batch, ptrdiff_t kp, const int8_t *wp,
                                     ptrdiff_t blocks, const tessera_int8_output *output) {
    /* A local copy: the outputs' stores cannot change it, so its fields stay in registers. */
    const tessera_int8_output copy = *output, *o = &copy;
    for (ptrdiff_t b0 = first; b0 < batch; b0 += 8) {
        ptrdiff_t nb = batch - b0 < 8 ? batch - b0 : 8;
        for (ptrdiff_t rb = 0; rb < blocks; rb += 2) BY_ROW_COUNT(nb, tile, x, b0, kp, wp, rb, o);
    }
}

static VNNI void int8_gemm_vnni(const uint8_t *x, ptrdiff_t batch, ptrdiff_t kp, const int8_t *wp, ptrdiff_t blocks,
                                const tessera_int8_output *o) {
    int8_gemm_vnni_rows(x, 0, batch, kp, wp, blocks, o);
}

const tessera_int8_kernels tessera_int8_kernels_vnni = { quantize_u8_vnni, int8_gemm_vnni, 8, 0, first_nonfinite_vnni };

#define AMX __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,amx-tile,amx-int8")))

/* The tile configuration (palette 1): every tile 16 rows of 64 bytes. tmm0-3 hold the int32
   sums of 2 x 2 blocks of 16 activation rows by 16 outputs, tmm4-5 two blocks' activation
   codes (16 rows by 64 depths), tmm6-7 two weight blocks' codes: the packed layout's 64-byte
   steps are AMX's B layout already (4 depths of 16 outputs per row). */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_config;

/* Weights up to this many bytes stay in L2 (2 MB per core where AMX is) from one 32-row chunk
   of activations to the next. */
enum { AMX_CACHED_WEIGHT_BYTES = 1 << 20 };

/* Activation rows b0 ..< b0 + 16 (or + 32 with `two`) by weight blocks rb and rb + 1, 64 depths
   per step; the 32 x 32 sums go through 4 KB of cache to be finished. */
static inline __attribute__((always_inline)) AMX void amx_block(const uint8_t *x, ptrdiff_t b0, int two, ptrdiff_t kp, const int8_t *wp,
                                                                ptrdiff_t rb, int32_t *sums, const tessera_int8_output *o) {
    const uint8_t *x0 = x + b0 * kp, *x1 = x0 + 16 * kp;
    const int8_t *w0 = wp + rb * kp * 16, *w1 = w0 + kp * 16;
    _tile_zero(0); _tile_zero(1);
    if (two) { _tile_zero(2); _tile_zero(3); }
    for (ptrdiff_t k = 0; k < kp; k += 64) {
        _tile_loadd(4, x0 + k, kp);
        _tile_loadd(6, w0 + 16 * k, 64);
        _tile_loadd(7, w1 + 16 * k, 64);
        _tile_dpbusd(0, 4, 6);
        _tile_dpbusd(1, 4, 7);
        if (two) {
            _tile_loadd(5, x1 + k, kp);
            _tile_dpbusd(2, 5, 6);
            _tile_dpbusd(3, 5, 7);
        }
    }
    _tile_stored(0, sums, 128);
    _tile_stored(1, sums + 16, 128);
    if (two) { _tile_stored(2, sums + 512, 128); _tile_stored(3, sums + 528, 128); }
    outputs16 p0 = outputs_at(o, 16 * rb), p1 = outputs_at(o, 16 * rb + 16);
    for (int i = 0; i < (two ? 32 : 16); i++) {
        finish16_vnni(_mm512_load_si512(sums + 32 * i), p0, b0 + i, 16 * rb, o);
        finish16_vnni(_mm512_load_si512(sums + 32 * i + 16), p1, b0 + i, 16 * rb + 16, o);
    }
}

/* 32 activation rows (16 for a last odd block) by pairs of weight blocks. Weights that stay in
   L2 go under each chunk of rows in turn, so the chunk's codes are read from L1; larger ones
   go pair by pair over all the rows, so that they are read from memory once per call. The rows
   past the last 16 and depths that are not a multiple of 64 run the VNNI code. Exact int32
   sums either way. */
static AMX void int8_gemm_amx(const uint8_t *x, ptrdiff_t batch, ptrdiff_t kp, const int8_t *wp, ptrdiff_t blocks,
                              const tessera_int8_output *output) {
    const tessera_int8_output copy = *output, *o = &copy;   /* see int8_gemm_vnni_rows */
    ptrdiff_t full = kp % 64 == 0 ? batch / 16 * 16 : 0;
    if (full > 0) {
        amx_config config = {.palette = 1};
        for (int t = 0; t < 8; t++) { config.colsb[t] = 64; config.rows[t] = 16; }
        _tile_loadconfig(&config);
        int32_t sums[32 * 32] __attribute__((aligned(64)));
        if (blocks * 16 * kp <= AMX_CACHED_WEIGHT_BYTES) {
            for (ptrdiff_t b0 = 0; b0 < full; b0 += 32)
                for (ptrdiff_t rb = 0; rb < blocks; rb += 2) amx_block(x, b0, full - b0 >= 32, kp, wp, rb, sums, o);
        } else {
            for (ptrdiff_t rb = 0; rb < blocks; rb += 2)
                for (ptrdiff_t b0 = 0; b0 < full; b0 += 32) amx_block(x, b0, full - b0 >= 32, kp, wp, rb, sums, o);
        }
        _tile_release();
    }
    if (full < batch) int8_gemm_vnni_rows(x, full, batch, kp, wp, blocks, o);
}

const tessera_int8_kernels tessera_int8_kernels_amx = { quantize_u8_vnni, int8_gemm_amx, 64, 16, first_nonfinite_vnni };

#define VBMI __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512vbmi")))

/* nb (<= 8) activation rows, from row b0, by 16-row block rb: for each window of 64 depths, the
   rows' codes stay in registers and each pair's positions pick every row's activations with
   one vpermb. */
static inline __attribute__((always_inline)) VBMI void sparse_tile(int nb, const uint8_t *x, ptrdiff_t b0, ptrdiff_t kp,
                                                                   const uint8_t *positions, const int8_t *codes, ptrdiff_t pairs,
                                                                   ptrdiff_t rb, const tessera_int8_output *o) {
    const uint8_t *xs = x + b0 * kp, *pos = positions + rb * pairs * 64;
    const int8_t *w = codes + rb * pairs * 64;
    __m512i s[8], window[8];
    for (int b = 0; b < nb; b++) s[b] = _mm512_setzero_si512();
    for (ptrdiff_t c = 0; 8 * c < pairs; c++) {
        for (int b = 0; b < nb; b++) window[b] = _mm512_loadu_si512(xs + b * kp + 64 * c);
        ptrdiff_t last = pairs - 8 * c < 8 ? pairs : 8 * c + 8;
        for (ptrdiff_t p = 8 * c; p < last; p++) {
            __m512i ps = _mm512_loadu_si512(pos + 64 * p), ws = _mm512_loadu_si512(w + 64 * p);
            for (int b = 0; b < nb; b++) s[b] = _mm512_dpbusd_epi32(s[b], _mm512_permutexvar_epi8(ps, window[b]), ws);
        }
    }
    outputs16 p = outputs_at(o, 16 * rb);
    for (int b = 0; b < nb; b++) finish16_vnni(s[b], p, b0 + b, 16 * rb, o);
}

VBMI void tessera_int8_sparse24_gemm_vbmi(const uint8_t *x, ptrdiff_t batch, ptrdiff_t kp, const uint8_t *positions,
                                          const int8_t *codes, ptrdiff_t pairs, ptrdiff_t blocks, const tessera_int8_output *output) {
    const tessera_int8_output copy = *output, *o = &copy;   /* see int8_gemm_vnni_rows */
    for (ptrdiff_t b0 = 0; b0 < batch; b0 += 8) {
        ptrdiff_t nb = batch - b0 < 8 ? batch - b0 : 8;
        for (ptrdiff_t rb = 0; rb < blocks; rb++) BY_ROW_COUNT(nb, sparse_tile, x, b0, kp, positions, codes, pairs, rb, o);
    }
}
#endif
