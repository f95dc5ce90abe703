/* The instruction sets the kernels may use here: the CPU's cpuid flags, with the OS's consent
   (xgetbv) to save the wide registers, which __builtin_cpu_supports checks too. */
#include "tessera_kernels.h"

int tessera_cpu_features(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    int features = 0;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) features |= TESSERA_CPU_AVX2_FMA;
    if ((features & TESSERA_CPU_AVX2_FMA) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        features |= TESSERA_CPU_AVX512;
    if ((features & TESSERA_CPU_AVX512) && __builtin_cpu_supports("avx512vnni")) features |= TESSERA_CPU_AVX512_VNNI;
    if ((features & TESSERA_CPU_AVX512) && __builtin_cpu_supports("avx512vbmi")) features |= TESSERA_CPU_AVX512_VBMI;
    return features;
#else
    return 0;
#endif
}
