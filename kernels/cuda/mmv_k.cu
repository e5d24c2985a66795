/* mmv_k.cu - instantiations of the matrix-vector kernel for the K-quant types. */
#include "cuda_mmv.cuh"

mmv_fn mmv_get_k(int type, int nt)
{
    switch (type) {
    case DT_Q2_K: return mmv_pick<DT_Q2_K>(nt);
    case DT_Q3_K: return mmv_pick<DT_Q3_K>(nt);
    case DT_Q4_K: return mmv_pick<DT_Q4_K>(nt);
    case DT_Q5_K: return mmv_pick<DT_Q5_K>(nt);
    case DT_Q6_K: return mmv_pick<DT_Q6_K>(nt);
    default: return NULL;
    }
}
