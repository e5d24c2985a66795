/* test_group_gpu.c - the per-rank device spec of a worker group
 * (group_gpu_device_pick, worker/group_gpu.h): cpu, cuda:N, cuda:local and
 * per-rank lists that mix CPU and GPU ranks, and the errors for a list of
 * the wrong length or a bad element. Pure string logic: no GPU, no mpirun. */
#include <stdio.h>
#include <string.h>

#include "testutil.h"
#include "worker/group_gpu.h"

static void want(const char *spec, int rank, int size, int local, const char *dev)
{
    char out[32] = "?";
    cv_err e = {0};
    cv_status st = group_gpu_device_pick(spec, rank, size, local, out, sizeof out, &e);
    TU_CHECK(st == CV_OK && !strcmp(out, dev), "'%s' rank %d/%d local %d: got %s (%s), want %s",
             spec ? spec : "(null)", rank, size, local, st ? "error" : out, st ? e.msg : "", dev);
}

static void want_err(const char *spec, int rank, int size, const char *needle)
{
    char out[32];
    cv_err e = {0};
    cv_status st = group_gpu_device_pick(spec, rank, size, 0, out, sizeof out, &e);
    TU_CHECK(st == CV_EINVAL && strstr(e.msg, needle), "'%s' rank %d/%d: status %d msg '%s', "
             "want CV_EINVAL naming '%s'", spec, rank, size, (int)st, e.msg, needle);
}

int main(void)
{
    want(NULL, 0, 1, 0, "cpu");
    want("", 3, 4, 1, "cpu");
    want("cpu", 1, 2, 1, "cpu");
    want("cuda:0", 1, 2, 1, "cuda:0");
    want("cuda:7", 0, 8, 0, "cuda:7");
    want("cuda:local", 5, 8, 1, "cuda:1");
    want("cuda:local", 0, 1, 0, "cuda:0");
    want("cuda:0,cpu", 0, 2, 0, "cuda:0");
    want("cuda:0,cpu", 1, 2, 1, "cpu");
    want("cpu,cuda:1,cuda:local", 2, 3, 2, "cuda:2");
    want("cuda:1,cuda:0,,cpu", 2, 4, 0, "cpu"); /* empty element: the CPU */
    want_err("cuda:0,cpu", 0, 3, "lists 2 devices for a group of 3");
    want_err("cuda:0,gpu:1", 1, 2, "'gpu:1' (rank 1)");
    want_err("cuda:", 0, 1, "is not cpu, cuda:N or cuda:local");
    want_err("cuda:1x", 0, 1, "is not cpu");
    want_err("cuda:-1", 0, 1, "is not cpu");
    TU_CHECK(group_gpu_index("cuda:3") == 3 && group_gpu_index("cpu") == -1 &&
                 group_gpu_index("cuda:x") == -1 && group_gpu_index(NULL) == -1,
             "group_gpu_index");
    return tu_finish("test_group_gpu");
}
