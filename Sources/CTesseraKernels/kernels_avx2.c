/* The float32 kernels for AVX2 with FMA (Haswell and later): 16-float vectors are two ymm registers. */
#include "tessera_kernels.h"

#if defined(__x86_64__)

#pragma clang fp contract(off)
/* The 16-float vectors pass by value only between this file's static functions, which agree on
   how (two ymm registers); no function of the kernel table takes or returns one. */
#pragma clang diagnostic ignored "-Wpsabi"
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#define SUFFIX _avx2
#define PRODUCT_ROWS 2   /* rows sharing b's loads in `product`: their accumulators fit the registers */
#include "kernels_body.h"
#pragma clang attribute pop
#endif
