/*
 * omp.h for bundles built without OpenMP (make OPENMP=0): the few OpenMP calls the runtime
 * and model.c make, answered for a single thread. The Makefile puts this folder on the
 * include path only then; a compiler not given -fopenmp ignores the #pragma omp lines, so
 * every parallel loop runs on the calling thread.
 */
#ifndef SSDC_NOOMP_OMP_H
#define SSDC_NOOMP_OMP_H

#include <time.h>

static inline int omp_get_num_threads(void) { return 1; }
static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
static inline void omp_set_num_threads(int n) { (void)n; }
static inline int omp_in_parallel(void) { return 0; }

/* Wall-clock seconds (model.c times kernels with it when profiling is on). */
static inline double omp_get_wtime(void)
{
    struct timespec t;
    timespec_get(&t, TIME_UTC);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#endif
