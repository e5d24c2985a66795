/* mmv2_f.cu - instantiations of the v2 matrix-vector kernel for the float
 * weight types (coalesced 16-byte chunks, several rows per warp). */
#include "cuda_mmv2.cuh"

mmv2_f_fn mmv2_get_f(int type, int nt, int u)
{
    switch (type) {
    case DT_F32: return mmv2_pick_f<DT_F32>(nt, u);
    case DT_F16: return mmv2_pick_f<DT_F16>(nt, u);
    case DT_BF16: return mmv2_pick_f<DT_BF16>(nt, u);
    default: return NULL;
    }
}
