/*
 * threads.c — the thread count used by the runtime's OpenMP kernels.
 *
 * omp_set_num_threads() only changes the calling thread's ICV, so a model driven from
 * several host threads (or a thread other than the one that called ssd_set_num_threads)
 * would silently fall back to the OpenMP default. We therefore also keep the requested
 * count in a process-wide atomic, and the kernels of this runtime pass
 * num_threads(ssd_get_num_threads()) explicitly on every parallel region.
 */
#include "ssd_runtime.h"

#include <omp.h>
#include <stdatomic.h>

static atomic_int g_num_threads; /* 0 = not set: use the OpenMP default */

void ssd_set_num_threads(int n)
{
    if (n <= 0) return;
    atomic_store(&g_num_threads, n);
    omp_set_num_threads(n);
}

int ssd_get_num_threads(void)
{
    int n = atomic_load(&g_num_threads);
    return n > 0 ? n : omp_get_max_threads();
}
