/* backend.c - backend factory: parses "cpu" / "cuda:N" and calls the constructor. */
#include "backend.h"

#include <stdlib.h>
#include <string.h>

cv_status backend_create(const backend_config *cfg, backend **out, cv_err *e)
{
    const char *dev = (cfg && cfg->device) ? cfg->device : "cpu";
    if (!strcmp(dev, "cpu"))
        return backend_cpu_create(cfg ? cfg->n_threads : 0, cfg ? cfg->cpu_level : NULL, out, e);
    if (!strncmp(dev, "cuda", 4)) {
        int idx = 0;
        if (dev[4] == ':') {
            char *end;
            long v = strtol(dev + 5, &end, 10);
            if (*end || v < 0 || v > 1024)
                return cv_err_set(e, CV_EINVAL, "bad device '%s' (expected cuda:N)", dev);
            idx = (int)v;
        } else if (dev[4]) {
            return cv_err_set(e, CV_EINVAL, "bad device '%s' (expected cpu or cuda:N)", dev);
        }
        return backend_cuda_create(idx, out, e);
    }
    return cv_err_set(e, CV_EINVAL, "unknown device '%s' (expected cpu or cuda:N)", dev);
}

void backend_destroy(backend *be)
{
    if (be)
        be->ops->destroy(be);
}
