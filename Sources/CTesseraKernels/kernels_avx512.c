/* The float32 kernels for AVX-512 (Skylake-SP and later): one 16-float zmm register per vector. */
#include "tessera_kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

#pragma clang fp contract(off)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma"))), apply_to = function)
#define SUFFIX _avx512
#define TESSERA_MASKED_VECTORS 1   /* partial vectors load and store under a mask */
#define PRODUCT_ROWS 4   /* rows sharing b's loads in `product`: their accumulators fit the registers */
#include "kernels_body.h"
#pragma clang attribute pop
#endif
