/* matmul_avx512.c - AVX-512 kernels (placeholder until written: every type
 * falls back to the AVX2 kernels). */
#include "cpu_kernels.h"

cpu_kernel cpu_kernel_avx512(int type)
{
    cpu_kernel k = {CPU_ACT_F32, 0, 0};
    (void)type;
    return k;
}
