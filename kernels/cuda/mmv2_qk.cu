/* mmv2_qk.cu - instantiations of the v2 matrix-vector kernel for the K-quant
 * types (int8 activations, __dp4a); mmv2_get_q (mmv2_q.cu) dispatches here. */
#include "cuda_mmv2.cuh"

mmv2_q_fn mmv2_get_qk(int type, int nt, int u)
{
    switch (type) {
    case DT_Q2_K: return mmv2_pick_q<DT_Q2_K>(nt, u);
    case DT_Q3_K: return mmv2_pick_q<DT_Q3_K>(nt, u);
    case DT_Q4_K: return mmv2_pick_q<DT_Q4_K>(nt, u);
    case DT_Q5_K: return mmv2_pick_q<DT_Q5_K>(nt, u);
    case DT_Q6_K: return mmv2_pick_q<DT_Q6_K>(nt, u);
    default: return NULL;
    }
}
