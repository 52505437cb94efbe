/*
 * standardize.c — per-example standardisation: each example's values (all its channels and
 * pixels, D of them) shifted to mean 0 and scaled to variance 1,
 *
 *     y = (x - mean) / sqrt(var + eps),   var the biased variance (PyTorch's
 *     F.layer_norm(x, x.shape[1:], eps=eps), no affine weights).
 *
 * At a network's input it makes the model see an image and the same image at another
 * exposure (every value times a factor, plus a shift) as the same input.
 *
 * Sums are in double over fixed chunks of CHUNK values, added in chunk order, so the
 * results do not depend on the thread count; the chunks of all examples are shared out
 * among the threads (a batch of one still uses them all).
 */
#include "ops_internal.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>

#define CHUNK 8192

/* Per example n: s[2n] = mean, s[2n+1] = 1 / sqrt(var + eps). part: 2 * N * chunks doubles. */
static void moments(int N, int64_t D, const float *x, float eps, double *part, double *s)
{
    const int64_t nc = (D + CHUNK - 1) / CHUNK;
#pragma omp parallel num_threads(ssd_get_num_threads())
    {
#pragma omp for schedule(static)
        for (int64_t t = 0; t < (int64_t)N * nc; ++t) {
            const int64_t n = t / nc, i0 = t % nc * CHUNK, i1 = i0 + CHUNK < D ? i0 + CHUNK : D;
            const float *xn = x + n * D;
            double sum = 0.0;
            for (int64_t i = i0; i < i1; ++i) sum += xn[i];
            part[2 * t] = sum;
        }
#pragma omp single
        for (int n = 0; n < N; ++n) {
            double sum = 0.0;
            for (int64_t c = 0; c < nc; ++c) sum += part[2 * (n * nc + c)];
            s[2 * n] = sum / (double)D;
        }
#pragma omp for schedule(static)
        for (int64_t t = 0; t < (int64_t)N * nc; ++t) {
            const int64_t n = t / nc, i0 = t % nc * CHUNK, i1 = i0 + CHUNK < D ? i0 + CHUNK : D;
            const float *xn = x + n * D;
            const double m = s[2 * n];
            double ss = 0.0;
            for (int64_t i = i0; i < i1; ++i) ss += ((double)xn[i] - m) * ((double)xn[i] - m);
            part[2 * t + 1] = ss;
        }
#pragma omp single
        for (int n = 0; n < N; ++n) {
            double ss = 0.0;
            for (int64_t c = 0; c < nc; ++c) ss += part[2 * (n * nc + c) + 1];
            s[2 * n + 1] = 1.0 / sqrt(ss / (double)D + (double)eps);
        }
    }
}

size_t ssd_standardize_scratch_floats(int N, int64_t D)
{
    const int64_t nc = (D + CHUNK - 1) / CHUNK;
    return (size_t)(4 * (int64_t)N * nc + 8 * (int64_t)N + 4); /* doubles: part, s and g */
}

void ssd_standardize_forward(int N, int64_t D, const float *x, float eps, float *y, float *scratch)
{
    if (N <= 0 || D <= 0) return;
    const int64_t nc = (D + CHUNK - 1) / CHUNK;
    double *part = (double *)scratch, *s = part + 2 * (int64_t)N * nc;
    moments(N, D, x, eps, part, s);
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int64_t t = 0; t < (int64_t)N * nc; ++t) {
        const int64_t n = t / nc, i0 = t % nc * CHUNK, i1 = i0 + CHUNK < D ? i0 + CHUNK : D;
        const float m = (float)s[2 * n], r = (float)s[2 * n + 1];
        const float *xn = x + n * D;
        float *yn = y + n * D;
        for (int64_t i = i0; i < i1; ++i) yn[i] = (xn[i] - m) * r;
    }
}

/* dx = r * (dy - mean(dy) - y * mean(dy * y)), y = (x - mean) * r. */
void ssd_standardize_backward(int N, int64_t D, const float *x, float eps, const float *dy,
                              float *dx, float *scratch)
{
    if (N <= 0 || D <= 0) return;
    const int64_t nc = (D + CHUNK - 1) / CHUNK;
    double *part = (double *)scratch, *s = part + 2 * (int64_t)N * nc;
    moments(N, D, x, eps, part, s);
    double *g = s + 2 * (int64_t)N; /* per example: mean(dy), mean(dy * y) */
#pragma omp parallel num_threads(ssd_get_num_threads())
    {
#pragma omp for schedule(static)
        for (int64_t t = 0; t < (int64_t)N * nc; ++t) {
            const int64_t n = t / nc, i0 = t % nc * CHUNK, i1 = i0 + CHUNK < D ? i0 + CHUNK : D;
            const double m = s[2 * n], r = s[2 * n + 1];
            const float *xn = x + n * D, *dyn = dy + n * D;
            double a = 0.0, b = 0.0;
            for (int64_t i = i0; i < i1; ++i) {
                a += dyn[i];
                b += (double)dyn[i] * (((double)xn[i] - m) * r);
            }
            part[2 * t] = a;
            part[2 * t + 1] = b;
        }
#pragma omp single
        for (int n = 0; n < N; ++n) {
            double a = 0.0, b = 0.0;
            for (int64_t c = 0; c < nc; ++c) {
                a += part[2 * (n * nc + c)];
                b += part[2 * (n * nc + c) + 1];
            }
            g[2 * n] = a / (double)D;
            g[2 * n + 1] = b / (double)D;
        }
#pragma omp for schedule(static)
        for (int64_t t = 0; t < (int64_t)N * nc; ++t) {
            const int64_t n = t / nc, i0 = t % nc * CHUNK, i1 = i0 + CHUNK < D ? i0 + CHUNK : D;
            const float m = (float)s[2 * n], r = (float)s[2 * n + 1];
            const float ga = (float)g[2 * n], gb = (float)g[2 * n + 1];
            const float *xn = x + n * D, *dyn = dy + n * D;
            float *dxn = dx + n * D;
            for (int64_t i = i0; i < i1; ++i) dxn[i] = r * (dyn[i] - ga - (xn[i] - m) * r * gb);
        }
    }
}
