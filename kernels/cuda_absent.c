/* cuda_absent.c - the cuda backend constructor when caravan is built without CUDA. */
#include "backend.h"

cv_status backend_cuda_create(int device, backend **out, cv_err *e)
{
    (void)device;
    *out = NULL;
    return cv_err_set(e, CV_EUNSUPPORTED,
                      "this caravan was built without CUDA (no toolkit found at configure time); "
                      "use --device cpu or rebuild on a machine with nvcc");
}
