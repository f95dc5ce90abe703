/* The instruction sets the kernels may use here: the CPU's cpuid flags, with the OS's consent
   (xgetbv) to save the wide registers, which __builtin_cpu_supports checks too. AMX tiles need
   more: Linux hands each process the tile state only when asked (arch_prctl), once. */
#include "tessera_kernels.h"
#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#if defined(__x86_64__)
static int amx_permitted(void) {
#if defined(__linux__)
    enum { ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
#else
    return 0;
#endif
}
#endif

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
    if ((features & TESSERA_CPU_AVX512_VNNI) && __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-int8")
        && amx_permitted())
        features |= TESSERA_CPU_AMX_INT8;
    return features;
#else
    return 0;
#endif
}
