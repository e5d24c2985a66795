/* gemv_k56_avx2.c - AVX2 decode of Q5_K and Q6_K weights for 1..a few tokens,
 * read straight from the weights (no unpack pass). Placeholder: returns 0 so
 * that matmul_avx2.c's unpack + tile path computes these types until the
 * direct kernels land. */
#include "../../core/dtype.h"
#include "cpu_kernels.h"

int cpu_avx2_gemv_k56_max(int type)
{
    (void)type;
    return 0;
}

int cpu_avx2_gemv_k56(const cpu_gemm_args *a)
{
    (void)a;
    return 0;
}
