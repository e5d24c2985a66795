/* gemv_a45_avx2.c - AVX2 one-token decode of Q4_1, Q5_0 and Q5_1 weights,
 * several rows at a time, read straight from the weights. Placeholder:
 * returns 0 so that gemv_avx2.c's generic family-A kernel computes these
 * types until the direct kernels land. */
#include "../../core/dtype.h"
#include "cpu_kernels.h"

int cpu_avx2_gemv_a45(const cpu_gemm_args *a)
{
    (void)a;
    return 0;
}
