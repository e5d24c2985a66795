/* cpu_features.c - which SIMD level this CPU (and OS) supports: CPUID leaf 1
 * and 7 feature bits, checked against XCR0 (xgetbv) so that registers the OS
 * does not save on context switch are never used. Also the level names. */
#include <string.h>

#include "matmul.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static unsigned long long cpu_xgetbv0(void)
{
    unsigned eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

static cpu_features cpu_features_probe(void)
{
    cpu_features f = {0};
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return f;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
    unsigned long long xcr0 = osxsave ? cpu_xgetbv0() : 0;
    int os_ymm = (xcr0 & 0x6) == 0x6;    /* SSE + AVX state */
    int os_zmm = (xcr0 & 0xe6) == 0xe6;  /* + opmask, ZMM_Hi256, Hi16_ZMM */
    unsigned b7 = 0, c7 = 0, d7 = 0, a71 = 0;
    if (__get_cpuid_max(0, NULL) >= 7) {
        __cpuid_count(7, 0, a, b7, c7, d7);
        unsigned bb, cc, dd;
        __cpuid_count(7, 1, a71, bb, cc, dd);
    }
    int avx2 = (b7 >> 5) & 1, bmi2 = (b7 >> 8) & 1;
    f.avx2 = os_ymm && avx && avx2 && fma && f16c && bmi2;
    f.avx512f = os_zmm && ((b7 >> 16) & 1);
    f.avx512bw = f.avx512f && ((b7 >> 30) & 1);
    f.avx512vl = f.avx512f && ((b7 >> 31) & 1);
    f.avx512dq = f.avx512f && ((b7 >> 17) & 1);
    f.avx512vnni = f.avx512f && ((c7 >> 11) & 1);
    f.avx512bf16 = f.avx512f && ((a71 >> 5) & 1);
    f.avx_vnni = os_ymm && ((a71 >> 4) & 1);
    return f;
}
#else
static cpu_features cpu_features_probe(void)
{
    cpu_features f = {0};
    return f;
}
#endif

const cpu_features *cpu_features_get(void)
{
    static cpu_features f;
    static int done;
    if (!done) { /* idempotent: a racing second probe writes the same values */
        f = cpu_features_probe();
        done = 1;
    }
    return &f;
}

cpu_level cpu_level_detect(void)
{
    const cpu_features *f = cpu_features_get();
    /* The AVX-512 kernels are compiled with F/BW/VL/DQ/VNNI (BF16 is checked
     * separately at run time), so all of those are required. */
    if (f->avx2 && f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq && f->avx512vnni)
        return CPU_AVX512;
    if (f->avx2)
        return CPU_AVX2;
    return CPU_SCALAR;
}

int cpu_level_parse(const char *s)
{
    if (!s)
        return -1;
    if (!strcmp(s, "scalar"))
        return CPU_SCALAR;
    if (!strcmp(s, "avx2"))
        return CPU_AVX2;
    if (!strcmp(s, "avx512"))
        return CPU_AVX512;
    return -1;
}

const char *cpu_level_name(cpu_level l)
{
    switch (l) {
    case CPU_SCALAR: return "scalar";
    case CPU_AVX2: return "avx2";
    case CPU_AVX512: return "avx512";
    }
    return "unknown";
}
