/*
 * fma_peak.c — the machine's float32 FMA peak, the bar that conv GFLOP/s are read against.
 *
 *   cc -O2 -march=native -fopenmp scripts/fma_peak.c -o fma_peak && ./fma_peak [THREADS]
 *
 * Each thread runs 12 independent chains of vector FMAs (enough to cover the FMA latency on
 * two ports) for a fixed count, and the best of 8 runs is reported as GFLOP/s (an FMA is 2
 * FLOPs). Measured for 256-bit (AVX2/FMA) vectors and, where the compiler targets it, for
 * 512-bit (AVX-512F) ones, the two alternating so that a busy spell of a shared machine
 * does not fall on one of them only. Prints one JSON object.
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#define CHAINS 12
#define ITERS 20000000L

#define RUN(VEC, SET1, FMA, ADD, STORE, LANES)                                                  \
    {                                                                                            \
        VEC acc[CHAINS];                                                                         \
        const VEC a = SET1(0.999999f), b = SET1(1e-7f);                                          \
        for (int c = 0; c < CHAINS; ++c) acc[c] = SET1((float)c);                                \
        for (long i = 0; i < ITERS; ++i)                                                         \
            for (int c = 0; c < CHAINS; ++c) acc[c] = FMA(acc[c], a, b);                        \
        VEC s = acc[0];                                                                          \
        for (int c = 1; c < CHAINS; ++c) s = ADD(s, acc[c]);                                     \
        float out[LANES];                                                                        \
        STORE(out, s);                                                                           \
        sink[omp_get_thread_num()] = out[0];                                                     \
    }

/* GFLOP/s of one run. */
static double once(int threads, int bits)
{
    float sink[256] = {0};
    const double t0 = omp_get_wtime();
#pragma omp parallel num_threads(threads)
    {
        if (bits == 256) {
            RUN(__m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, _mm256_storeu_ps, 8)
        }
#ifdef __AVX512F__
        else {
            RUN(__m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_storeu_ps, 16)
        }
#endif
    }
    const double dt = omp_get_wtime() - t0;
    if (sink[0] == 12345.0f) printf("#");  /* keep the results alive */
    return 2.0 * threads * (double)ITERS * CHAINS * (bits / 32) / dt / 1e9;
}

int main(int argc, char **argv)
{
    const int threads = argc > 1 ? atoi(argv[1]) : omp_get_max_threads();
    double best256 = 0.0, best512 = 0.0;
    for (int rep = 0; rep < 8; ++rep) {
        const double a = once(threads, 256);
        if (a > best256) best256 = a;
#ifdef __AVX512F__
        const double b = once(threads, 512);
        if (b > best512) best512 = b;
#endif
    }
    printf("{\"threads\": %d, \"avx2_fma_gflops\": %.1f", threads, best256);
#ifdef __AVX512F__
    printf(", \"avx512_fma_gflops\": %.1f", best512);
#else
    printf(", \"avx512_fma_gflops\": null");
#endif
    printf("}\n");
    return 0;
}
