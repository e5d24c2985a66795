/* mmv_basic.cu - instantiations of the matrix-vector kernel for the float and 32-element block types. */
#include "cuda_mmv.cuh"

mmv_fn mmv_get_basic(int type, int nt)
{
    switch (type) {
    case DT_F32: return mmv_pick<DT_F32>(nt);
    case DT_F16: return mmv_pick<DT_F16>(nt);
    case DT_BF16: return mmv_pick<DT_BF16>(nt);
    case DT_Q8_0: return mmv_pick<DT_Q8_0>(nt);
    case DT_Q4_0: return mmv_pick<DT_Q4_0>(nt);
    case DT_Q4_1: return mmv_pick<DT_Q4_1>(nt);
    case DT_Q5_0: return mmv_pick<DT_Q5_0>(nt);
    case DT_Q5_1: return mmv_pick<DT_Q5_1>(nt);
    default: return NULL;
    }
}
