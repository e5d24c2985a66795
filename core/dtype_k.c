/* dtype_k.c - scalar reference kernels for every weight type (stub: filled next). */
#include "core/dtype.h"

#include <string.h>

void dequantize_row(int type, const void *w, float *out, int64_t n)
{
    memset(out, 0, (size_t)n * sizeof *out);
}
float dot_row(int type, const void *w, const float *x, int64_t n)
{
    return 0.0f;
}
bool quantize_row(int type, const float *x, void *w, int64_t n)
{
    return false;
}
int dtype_vec_dot_type(int type)
{
    return DT_F32;
}
void quantize_row_q8_0(const float *x, void *out, int64_t n)
{
}
void quantize_row_q8_k(const float *x, void *out, int64_t n)
{
}
float vec_dot_q8(int type, const void *w, const void *xq, int64_t n)
{
    return 0.0f;
}
