/* backend_cuda.h - extras of the CUDA backend beyond kernels/backend.h, for
 * code built with CARAVAN_HAVE_CUDA (tests, bench). Plain C: no CUDA types.
 * The constructor itself, backend_cuda_create, is declared in backend.h. */
#pragma once
#include <stddef.h>

#include "../../core/status.h"
#include "../backend.h"

/* First device error of a cuda backend (ops are void: errors are sticky and
 * logged with file:line); CV_OK for a healthy or non-cuda backend. */
cv_status backend_cuda_status(backend *be, cv_err *e);

/* Measured device-to-device copy bandwidth of `device` in bytes/s, counting
 * bytes read plus bytes written: median of `reps` copies of n_bytes. */
cv_status backend_cuda_copy_bandwidth(int device, size_t n_bytes, int reps, double *bps, cv_err *e);

/* The CUDA device index of a cuda backend; -1 for any other backend. */
int backend_cuda_device(backend *be);
