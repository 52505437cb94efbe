/*
 * threads.c — the thread count used by the runtime's OpenMP kernels.
 *
 * omp_set_num_threads() only changes the calling thread's ICV, so a model driven from
 * several host threads (or a thread other than the one that called ssd_set_num_threads)
 * would silently fall back to the OpenMP default. We therefore also keep the requested
 * count in a process-wide atomic, and the kernels of this runtime pass
 * num_threads(ssd_get_num_threads()) explicitly on every parallel region.
 */
#define _POSIX_C_SOURCE 200112L /* posix_memalign */
#include "ssd_runtime.h"

#include <omp.h>
#include <stdatomic.h>
#include <stdlib.h>

static atomic_int g_num_threads; /* 0 = not set: use the OpenMP default */

void ssd_set_num_threads(int n)
{
    if (n <= 0) return;
    atomic_store(&g_num_threads, n);
    omp_set_num_threads(n);
}

int ssd_get_num_threads(void)
{
    if (omp_in_parallel()) return 1;
    int n = atomic_load(&g_num_threads);
    return n > 0 ? n : omp_get_max_threads();
}

void *ssd_thread_workspace(size_t bytes)
{
    static void *buffer;
    static size_t capacity;
    if (bytes <= capacity) return buffer;
    void *grown = NULL;
    if (posix_memalign(&grown, 64, bytes) != 0) return NULL;
    free(buffer);
    buffer = grown;
    capacity = bytes;
    return buffer;
}

int ssd_by_image_enabled(void)
{
    static atomic_int state = -1; /* SSDC_BY_IMAGE=0 in the environment turns the route off */
    int v = atomic_load(&state);
    if (v < 0) {
        const char *e = getenv("SSDC_BY_IMAGE");
        v = !(e && e[0] == '0' && e[1] == 0);
        atomic_store(&state, v);
    }
    return v;
}
