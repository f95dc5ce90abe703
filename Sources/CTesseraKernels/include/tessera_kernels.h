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

/* out[i][b] += Σ_k w[i + k·ks] · xt[k·ldx + b] for 8 rows i and 32 (or 16) columns b. */
typedef void (*tessera_tile_fn)(const float *w, ptrdiff_t ks, ptrdiff_t depth, const float *xt,
                                ptrdiff_t ldx, float *out, ptrdiff_t ldo);
/* Σ a[k]·b[k] over n values. */
typedef float (*tessera_dot_fn)(const float *a, const float *b, ptrdiff_t n);
/* out[i] = Σ_k x[k] · values[k·rows + i] for i < width (`values` at the first output). */
typedef void (*tessera_columns_fn)(const float *x, const float *values, ptrdiff_t rows, ptrdiff_t depth,
                                   float *out, ptrdiff_t width);
/* `columns` over int8 codes (scales applied by the caller). */
typedef void (*tessera_columns_int8_fn)(const float *x, const int8_t *codes, ptrdiff_t rows, ptrdiff_t depth,
                                        float *out, ptrdiff_t width);
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

typedef struct {
    tessera_tile_fn tile8x32;
    tessera_tile_fn tile8x16;
    tessera_dot_fn dot;
    tessera_columns_fn columns;
    tessera_columns_int8_fn columns_int8;
    tessera_product_fn product;
    tessera_sparse_tile_fn sparse_tile8x32;
    tessera_sparse_tile_fn sparse_tile8x16;
    tessera_csr_row_fn csr_row;
} tessera_kernels;

/* The instruction sets this CPU (and its OS, for the wide registers) supports. */
enum {
    TESSERA_CPU_AVX2_FMA = 1,
    TESSERA_CPU_AVX512 = 2,   /* F, BW, DQ and VL */
};
int tessera_cpu_features(void);

#if defined(__x86_64__)
extern const tessera_kernels tessera_kernels_avx2;
extern const tessera_kernels tessera_kernels_avx512;
#endif

/* Asks for the cache line holding `address` to be brought into L2 ahead of its use. A hint:
   it never faults, whatever the address. (Swift cannot call the builtin itself.) */
static inline __attribute__((always_inline)) void tessera_prefetch(const void *address) {
    __builtin_prefetch(address, 0, 2);
}

#endif
