/*
 * optim.c — parameter updates. SGD as torch.optim.SGD(lr, weight_decay), no momentum:
 * p -= lr * (g + wd * p). Elementwise and memory-bound: one parallel loop (only for
 * sizes where waking the team pays off).
 */
#include "ssd_runtime.h"

#include <omp.h>

void ssd_sgd_update(int64_t n, float *p, const float *g, float lr, float wd)
{
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads()) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) {
        const float d = g[i] + wd * p[i];
        p[i] = p[i] - lr * d;
    }
}
