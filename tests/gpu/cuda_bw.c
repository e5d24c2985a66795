/* cuda_bw.c - measured device-to-device copy bandwidth of cuda:N (bytes read
 * plus written per second, median of 20 copies of 1 GiB), the ceiling that
 * tests/gpu/run.sh compares `caravan bench` generation GB/s against.
 * Prints one grep-able line: device=cuda:N d2d_gb_s=X. Needs a GPU. */
#include <stdio.h>
#include <stdlib.h>

#include "kernels/cuda/backend_cuda.h"

int main(int argc, char **argv)
{
    int dev = argc > 1 ? atoi(argv[1]) : 0;
    double bps = 0;
    cv_err e = {0};
    if (backend_cuda_copy_bandwidth(dev, (size_t)1 << 30, 20, &bps, &e)) {
        fprintf(stderr, "cuda_bw: %s\n", e.msg);
        return 1;
    }
    printf("device=cuda:%d d2d_gb_s=%.1f\n", dev, bps / 1e9);
    return 0;
}
