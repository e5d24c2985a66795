/* mmv2_q.cu - instantiations of the v2 matrix-vector kernel for the 32-element
 * integer weight types (int8 activations, __dp4a), the dispatcher of all
 * integer types (K types: mmv2_qk.cu, compiled in parallel) and the
 * activation quantizer. */
#include "cuda_mmv2.cuh"

mmv2_q_fn mmv2_get_q(int type, int nt, int u)
{
    switch (type) {
    case DT_Q8_0: return mmv2_pick_q<DT_Q8_0>(nt, u);
    case DT_Q4_0: return mmv2_pick_q<DT_Q4_0>(nt, u);
    case DT_Q4_1: return mmv2_pick_q<DT_Q4_1>(nt, u);
    case DT_Q5_0: return mmv2_pick_q<DT_Q5_0>(nt, u);
    case DT_Q5_1: return mmv2_pick_q<DT_Q5_1>(nt, u);
    default: return mmv2_get_qk(type, nt, u);
    }
}

bool mmv2_quantize(cuda_backend *cb, uint8_t *xq, size_t xq_pitch, const float *x, int64_t ldx,
                   int64_t ne0, int64_t n_tok)
{
    int64_t n = (ne0 / 32) * n_tok;
    k_mmv2_quant<<<grid1(n, 128), 128, 0, cb->stream>>>(xq, xq_pitch, x, ldx, ne0, n_tok);
    return !CB_LAUNCHED(cb, "matmul (v2 activation quantization)");
}
