#ifndef TESSERA_KERNELS_H
#define TESSERA_KERNELS_H

/* Hot float32 kernels in one variant per instruction set, chosen at run time from the CPU's
   features (as MLAS does), so that a plain `swift build` runs AVX2 or AVX-512 code. Every
   variant computes exactly what TesseraRuntime's portable Swift kernels compute: the same
   fused multiply-adds in the same order, so results do not depend on the variant. */

#include <stddef.h>
#include <stdint.h>

/* Row stride, in entries, of a decoded 2:4 panel: two kept values for each of 64 groups. */
#define TESSERA_SPARSE_PANEL_STRIDE 128

/* out[i][b] = (accumulate ? out[i][b] : 0) + Σ_k w[i·wr + k·ks] · xt[k·ldx + b] for 8 rows i and 32
   (or 16) columns b. */
typedef void (*tessera_tile_fn)(const float *w, ptrdiff_t wr, ptrdiff_t ks, ptrdiff_t depth, const float *xt,
                                ptrdiff_t ldx, float *out, ptrdiff_t ldo, int accumulate);
/* The same over packed panels (wr 1, ks 8) with each depth's activations at x + rows[k]: a
   convolution's columns read in place from its padded input planes, one row per channel and tap. */
typedef void (*tessera_indirect_tile_fn)(const float *w, ptrdiff_t depth, const float *x, const ptrdiff_t *rows, float *out,
                                         ptrdiff_t ldo, int accumulate);
/* Σ a[k]·b[k] over n values. */
typedef float (*tessera_dot_fn)(const float *a, const float *b, ptrdiff_t n);
/* out[i] = Σ_k x[k] · values[k·rows + i] for i < width (`values` at the first output). */
typedef void (*tessera_columns_fn)(const float *x, const float *values, ptrdiff_t rows, ptrdiff_t depth,
                                   float *out, ptrdiff_t width);
/* `columns` over int8 codes (scales applied by the caller). */
typedef void (*tessera_columns_int8_fn)(const float *x, const int8_t *codes, ptrdiff_t rows, ptrdiff_t depth,
                                        float *out, ptrdiff_t width);
/* target[t] = source[t·step] for t < count (a stride-2 convolution's input rows split by column
   phase). */
typedef void (*tessera_strided_copy_fn)(const float *source, ptrdiff_t step, float *target, ptrdiff_t count);
/* c = a · b for row-major a [m, k], b [k, n]. */
typedef void (*tessera_product_fn)(const float *a, const float *b, float *c, ptrdiff_t m, ptrdiff_t k, ptrdiff_t n);

/* 8 rows x 32 (or 16) columns of yᵀ from a decoded 2:4 panel: row i's kept value j,
   v[i·STRIDE + j], multiplies the activation vectors at xt + off[i·STRIDE + j]. */
typedef void (*tessera_sparse_tile_fn)(const float *v, const int32_t *off, ptrdiff_t count, const float *xt,
                                       float *out, ptrdiff_t ldo);
/* out[0 ..< width] = (adding ? out : 0) + Σ_{i in [lo, hi)} values[i] · xt[depth[i]·ld ..< +width],
   width 16, 32 or 64: one CSR row's sums over a depth block, two entries at a time. */
typedef void (*tessera_csr_row_fn)(ptrdiff_t width, ptrdiff_t lo, ptrdiff_t hi, const uint8_t *depth, const float *values,
                                   const float *xt, ptrdiff_t ld, float *out, int adding);

/* Elementwise float32 arithmetic with one operand broadcast: for every o < outer, m < middle,
   j < inner, out[e] = full[e] OP part[m] (or part[m] OP full[e] when part_first), e being
   (o·middle + m)·inner + j. Same shapes are outer 1, inner 1; a scalar is middle 1. */
enum { TESSERA_ADD, TESSERA_SUB, TESSERA_MUL, TESSERA_DIV };
typedef void (*tessera_binary_fn)(int op, const float *full, const float *part, float *out, ptrdiff_t outer,
                                  ptrdiff_t middle, ptrdiff_t inner, int part_first);

/* y[i] = f(x[i]) for Tessera's float32 exp, erf, sigmoid and tanh (y may be x). The same arithmetic
   as PortableKernels' scalar versions, so every variant gives the same bits. */
enum { TESSERA_EXP, TESSERA_ERF, TESSERA_SIGMOID, TESSERA_TANH };
typedef void (*tessera_unary_fn)(int op, const float *x, float *y, ptrdiff_t n);

/* Softmax (log 0) or LogSoftmax (log 1) of `rows` contiguous rows of n floats into y (which may
   be x): m = the row's maximum, e = exp(x − m) by `unary`'s exp, their sum over 16 lanes
   (full vectors, then the lanes in order, then the rest in order), then e / sum or
   x − m − logf(sum): ReductionOps.softmaxRows' arithmetic. */
typedef void (*tessera_softmax_fn)(const float *x, float *y, ptrdiff_t rows, ptrdiff_t n, int log);

/* Attention's scores: each of `rows` rows of n floats becomes t = x / divisor, then t + mask
   (mask + t when mask_first), the mask's k-th value mask[k · mask_step] (step 1, or 0 for one
   value per row); y's row holds t, then `softmax` (log 0) runs on it in place: the Div, Add and
   Softmax nodes fused (Fusion.maskedSoftmax's arithmetic). */
typedef void (*tessera_masked_softmax_fn)(const float *x, float *y, ptrdiff_t rows, ptrdiff_t n, float divisor,
                                          const float *mask, ptrdiff_t mask_step, int mask_first);

/* LayerNormalization of `rows` contiguous rows of n floats into y, statistics in float64:
   sums over 8 lanes (full groups of 8, the lanes in order from 0, then the rest in order),
   mean = Σx / n, inverse = 1 / sqrt(Σ(x − mean)² / n + epsilon), then
   y = float((x − mean) · inverse) · gamma[k] (+ beta[k] when beta is given), and each row's mean
   and inverse as floats: ReductionOps.layerNormRows' arithmetic. */
typedef void (*tessera_layernorm_fn)(const float *x, float *y, ptrdiff_t rows, ptrdiff_t n, const float *gamma,
                                     const float *beta, double epsilon, float *means, float *inverses);

/* y[i] = ((erf(x[i] / a) + b) · x[i]) · c, erf as `unary` computes it (y may be x): the exact
   GELU's Div, Erf, Add, Mul, Mul nodes fused (Fusion.gelu's arithmetic). */
typedef void (*tessera_gelu_fn)(const float *x, float *y, ptrdiff_t n, float a, float b, float c);

/* y[i] = x[i] · sigmoid(x[i]), sigmoid as `unary` computes it: SiLU's Sigmoid and Mul nodes fused. */
typedef void (*tessera_silu_fn)(const float *x, float *y, ptrdiff_t n);

/* What a fused Conv applies to a run of its float32 outputs, in place, each step optional and
   in the nodes' order (Fusion.ConvEpilogue's arithmetic):
   - with `source`, each value starts as initial + source[i] (a Conv's bias plus its product,
     read from the GEMM's buffer) instead of as v[i];
   - BatchNormalization: float((double)v · scale + shift);
   - `steps` Adds, Subs, Muls and Divs by per-channel constants (`ops[s]`, plus
     TESSERA_STEP_CONSTANT_FIRST when the constant is the node's first operand, and this
     channel's `constants[s]`), at most TESSERA_EPILOGUE_MAX_STEPS: a bias the Conv was exported
     without, a batch normalization exported as Sub, Mul, Add;
   - an Add of the `residual` run (first or second operand as in its node);
   - an activation as the ops compute it with Swift's min(a, b) = b < a ? b : a and
     max(a, b) = b >= a ? b : a: Relu max(v, 0); HardSwish v · max(0, min(1, (1 / 6) · v + 0.5));
     LeakyRelu v >= 0 ? v : alpha · v; HardSigmoid max(0, min(1, alpha · v + beta));
     Clip min(max(v, alpha), beta); SiLU v · sigmoid(v), sigmoid as `unary` computes it; GELU
     ((erf(v / alpha) + beta) · v) · gamma, as `gelu` computes it. */
enum { TESSERA_IDENTITY, TESSERA_RELU, TESSERA_HARDSWISH, TESSERA_LEAKYRELU, TESSERA_HARDSIGMOID, TESSERA_CLIP, TESSERA_SILU,
       TESSERA_GELU };
enum { TESSERA_STEP_ADD, TESSERA_STEP_SUB, TESSERA_STEP_MUL, TESSERA_STEP_DIV, TESSERA_STEP_CONSTANT_FIRST = 4 };
#define TESSERA_EPILOGUE_MAX_STEPS 8
typedef struct {
    const float *source;
    float initial;
    int normalize;
    double scale, shift;
    int steps;
    const int *ops;
    const float *constants;
    const float *residual;
    int residual_first;
    int activation;
    float alpha, beta, gamma;
} tessera_epilogue;
typedef void (*tessera_epilogue_fn)(float *v, ptrdiff_t n, const tessera_epilogue *e);

/* One plane of a 2-D depthwise convolution: out[oy][ox] starts as `bias` and adds
   w[ky][kx] · in[oy·sy + ky·dy − py][ox·sx + kx·dx − px] for each tap in order (ky, then kx),
   a multiply then an add, with zeros outside the input: the portable `ConvolutionOps.direct`'s
   arithmetic. `padded` holds the plane with its zeros, rows wide enough for whole vectors:
   tessera_depthwise_scratch floats, zero wherever the plane is not copied (the caller zeroes
   them once; calls with the same geometry leave them so). */
typedef void (*tessera_depthwise_fn)(const float *in, ptrdiff_t h, ptrdiff_t w, const float *weights, ptrdiff_t kh,
                                     ptrdiff_t kw, ptrdiff_t sy, ptrdiff_t sx, ptrdiff_t dy, ptrdiff_t dx, ptrdiff_t py,
                                     ptrdiff_t px, float bias, float *out, ptrdiff_t oh, ptrdiff_t ow, float *padded);

/* One plane of a 2-D MaxPool: out[oy][ox] is the first in-range tap's input, replaced by each
   later tap's (ky, then kx) that is greater; −∞ where no tap is in range. `seen` holds ow floats
   (scratch). */
typedef void (*tessera_maxpool_fn)(const float *in, ptrdiff_t h, ptrdiff_t w, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t sy,
                                   ptrdiff_t sx, ptrdiff_t dy, ptrdiff_t dx, ptrdiff_t py, ptrdiff_t px, float *out,
                                   ptrdiff_t oh, ptrdiff_t ow, float *seen);

/* The row stride and size of a depthwise plane's padded copy. */
static inline ptrdiff_t tessera_depthwise_stride(ptrdiff_t ow, ptrdiff_t kw, ptrdiff_t sx, ptrdiff_t dx) {
    return (ow + 15) / 16 * 16 * sx + (kw - 1) * dx + 16;
}
static inline ptrdiff_t tessera_depthwise_scratch(ptrdiff_t oh, ptrdiff_t ow, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t sy, ptrdiff_t sx,
                                                  ptrdiff_t dy, ptrdiff_t dx) {
    return ((oh - 1) * sy + (kh - 1) * dy + 1) * tessera_depthwise_stride(ow, kw, sx, dx) + 16;
}

typedef struct {
    tessera_tile_fn tile8x32;
    tessera_tile_fn tile8x16;
    tessera_indirect_tile_fn tile8x32_indirect;
    tessera_indirect_tile_fn tile8x16_indirect;
    tessera_dot_fn dot;
    tessera_columns_fn columns;
    tessera_columns_int8_fn columns_int8;
    tessera_product_fn product;
    tessera_sparse_tile_fn sparse_tile8x32;
    tessera_sparse_tile_fn sparse_tile8x16;
    tessera_csr_row_fn csr_row;
    tessera_binary_fn binary;
    tessera_unary_fn unary;
    tessera_depthwise_fn depthwise;
    tessera_maxpool_fn maxpool;
    tessera_softmax_fn softmax;
    tessera_masked_softmax_fn masked_softmax;
    tessera_layernorm_fn layernorm;
    tessera_gelu_fn gelu;
    tessera_silu_fn silu;
    tessera_epilogue_fn epilogue;
    tessera_strided_copy_fn strided_copy;
} tessera_kernels;

/* The instruction sets this CPU (and its OS, for the wide registers) supports. */
enum {
    TESSERA_CPU_AVX2_FMA = 1,
    TESSERA_CPU_AVX512 = 2,        /* F, BW, DQ and VL */
    TESSERA_CPU_AVX512_VNNI = 4,   /* with AVX512 */
    TESSERA_CPU_AVX512_VBMI = 8,   /* with AVX512 */
    TESSERA_CPU_AMX_INT8 = 16,     /* AMX tiles with int8 products, with AVX512 VNNI and the OS's consent */
};
int tessera_cpu_features(void);

#if defined(__x86_64__)
extern const tessera_kernels tessera_kernels_avx2;
extern const tessera_kernels tessera_kernels_avx512;
#endif

/* The W8A8 GEMM ("integer path"), in two steps, with a portable variant, one for AVX-512
   VNNI and one for AMX tiles (its quantize is VNNI's), all computing the same bits:
   - quantize: x[0 ..< n] to uint8 codes as ONNX DynamicQuantizeLinear does (range
     [min(0, min x), max(0, max x)] over 255 steps, rounding half to even), with its scale and
     zero point;
   - gemm: the sums Σ_k x[b·kp + k] · w[r][k], exact in int32, for b < batch and r < 16·blocks,
     each finished as `tessera_int8_output` says while it is in registers or cache; x holds kp
     codes per row (kp a multiple of 4, zero-padded) and wp the int8 codes packed 16 rows at a
     time: wp[(rb·kp/4 + k4)·64 + 4·j + t] = w[16·rb + j][4·k4 + t]; blocks must be even; the AMX
     variant runs tiles of 16 rows by 64 depths where kp is a multiple of 64, and VNNI's code
     for other depths and the rows past the last 16;
   - rows_per_call: the activation rows a caller should quantize and hand to gemm at a time
     (its scratch: rows_per_call·kp codes);
   - dense_rows: from this many activation rows, where the depth is a multiple of 64, a 2:4
     weight's batch runs faster through gemm on all its codes (pruned ones as zeros) than
     through the 2:4 GEMM on kept codes below: AMX multiplies 16 rows by 64 depths per
     instruction. 0: never;
   - first_nonfinite: `tessera_first_nonfinite` (below), the check made before quantizing. */
typedef void (*tessera_quantize_u8_fn)(const float *x, ptrdiff_t n, uint8_t *codes, float *scale, int32_t *zero_point);

/* A GEMM's outputs: out[b·ldy + r] = row_scales[r] · scales[b] · (sum − zero_points[b] ·
   row_sums[r]) for r < outputs (the sums of padding rows past it are dropped), the difference
   exact in int32 (it fits while depth <= 65536), then + bias[r] when bias is given (an Add
   node's sum, fused). Per output: row_sums, row_scales, bias; per activation row: zero_points,
   scales. */
typedef struct {
    const int32_t *row_sums;
    const float *row_scales;
    const float *bias;
    const int32_t *zero_points;
    const float *scales;
    float *out;
    ptrdiff_t ldy;
    ptrdiff_t outputs;
} tessera_int8_output;

typedef void (*tessera_int8_gemm_fn)(const uint8_t *x, ptrdiff_t batch, ptrdiff_t kp, const int8_t *wp,
                                     ptrdiff_t blocks, const tessera_int8_output *out);
typedef struct {
    tessera_quantize_u8_fn quantize;
    tessera_int8_gemm_fn gemm;
    ptrdiff_t rows_per_call;
    ptrdiff_t dense_rows;
    ptrdiff_t (*first_nonfinite)(const float *x, ptrdiff_t n);
} tessera_int8_kernels;
extern const tessera_int8_kernels tessera_int8_kernels_portable;
#if defined(__x86_64__)
extern const tessera_int8_kernels tessera_int8_kernels_vnni;
extern const tessera_int8_kernels tessera_int8_kernels_amx;
#endif

/* The W8A8 GEMM of a 2:4 weight on its kept codes only: `gemm`'s outputs, from the same exact
   sums. Depths go by pairs of 2:4 groups (8 depths); for 16-row block rb, pair p, row j
   and t < 4, entry e = (rb·pairs + p)·64 + 4j + t holds codes[e], the row's t-th kept code in
   the pair (the first group's two, then the second's), and positions[e], that code's depth
   minus 64·(p / 8): its place in the 64 depths of the pair's window. x holds kp codes per
   batch row, kp a multiple of 64 covering every window (zeros past the depth). The VBMI variant
   picks each row's activations from a window with one vpermb per 16 rows and pair, so a
   vpdpbusd sums kept codes only (dense `gemm` multiplies the pruned zeros too). */
typedef void (*tessera_int8_sparse24_gemm_fn)(const uint8_t *x, ptrdiff_t batch, ptrdiff_t kp, const uint8_t *positions,
                                              const int8_t *codes, ptrdiff_t pairs, ptrdiff_t blocks,
                                              const tessera_int8_output *out);
void tessera_int8_sparse24_gemm_portable(const uint8_t *x, ptrdiff_t batch, ptrdiff_t kp, const uint8_t *positions,
                                         const int8_t *codes, ptrdiff_t pairs, ptrdiff_t blocks, const tessera_int8_output *out);
#if defined(__x86_64__)
void tessera_int8_sparse24_gemm_vbmi(const uint8_t *x, ptrdiff_t batch, ptrdiff_t kp, const uint8_t *positions,
                                     const int8_t *codes, ptrdiff_t pairs, ptrdiff_t blocks, const tessera_int8_output *out);
#endif

/* The index of the first infinity or NaN in x[0 ..< n], or n when all are finite (quantized
   activations must be: DynamicQuantizeLinear's range ignores a NaN). A bit test that
   vectorizes in any build; the VNNI and AMX kernels' is the same test 16 lanes wide. */
ptrdiff_t tessera_first_nonfinite(const float *x, ptrdiff_t n);

/* Keeps freed memory in the process for reuse (glibc: large blocks from the heap, not mmap, and
   no trimming below 512 MB), instead of returning it to the kernel and faulting it back in. */
void tessera_keep_freed_memory(void);

/* Runs fn(context, part) for every part in [0, parts) on up to `threads` threads: the caller and
   workers of a process-wide pool that spin about 100 µs after a job before they sleep
   (thread_pool.c). Returns when every part has run. A caller inside a part, or one that finds
   the pool busy with another caller's job, runs the parts itself, in order. */
typedef void (*tessera_part_fn)(void *context, ptrdiff_t part);
void tessera_parallel_parts(ptrdiff_t parts, ptrdiff_t threads, tessera_part_fn fn, void *context);

/* Asks for the cache line holding `address` to be brought into L2 ahead of its use. A hint:
   it never faults, whatever the address. (Swift cannot call the builtin itself.) */
static inline __attribute__((always_inline)) void tessera_prefetch(const void *address) {
    __builtin_prefetch(address, 0, 2);
}

#endif
