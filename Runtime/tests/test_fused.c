/*
 * test_fused.c — checks the fused kernels of fused.c against the unfused runtime calls
 * they replace (bit-identical where the arithmetic is the same), and that their results do
 * not depend on the thread count (1 vs 2 threads, bitwise).
 *
 *   ./test_fused         run the checks: one line per check, then "N passed, M failed"
 *                        (exit status 1 if anything failed)
 *   ./test_fused bench   fused vs unfused ms at batch 32 (1 and 2 threads)
 */
#include "ssd_runtime.h"

#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_support.h"

static float *falloc(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    if (!p) { fprintf(stderr, "out of memory\n"); exit(2); }
    return p;
}

static float *frandom(size_t n)
{
    float *p = falloc(n);
    for (size_t i = 0; i < n; ++i) p[i] = frand();
    return p;
}

static void fill_nan(float *p, size_t n)
{
    for (size_t i = 0; i < n; ++i) p[i] = NAN;
}

static int same(const float *a, const float *b, size_t n)
{
    return memcmp(a, b, n * sizeof(float)) == 0;
}

/* random BN parameters; var > 0 */
static void bn_params(int C, float *mean, float *var, float *gamma, float *beta)
{
    for (int c = 0; c < C; ++c) {
        mean[c] = 0.3f * frand();
        var[c] = 0.2f + 0.5f * (frand() + 1.0f);
        gamma[c] = 1.0f + 0.5f * frand();
        beta[c] = 0.2f * frand();
    }
}

/* ---- 1. BN apply + ReLU + max pool ------------------------------------------------------ */

static void test_bnrp(int N, int C, int H, int W, int special)
{
    const size_t n = (size_t)N * C * H * W, m = (size_t)N * C * (H / 2) * (W / 2);
    float *x = frandom(n);
    if (special) /* ties (also many exact zeros after the ReLU), NaN and infinities */
        for (size_t i = 0; i < n; ++i) {
            const float r = frand();
            x[i] = floorf(x[i] * 2.0f) * 0.25f;
            if (r > 0.95f) x[i] = NAN;
            else if (r < -0.95f) x[i] = r < -0.975f ? -INFINITY : INFINITY;
        }
    float *mean = falloc(C), *var = falloc(C), *gamma = falloc(C), *beta = falloc(C);
    bn_params(C, mean, var, gamma, beta);
    const float eps = 1e-5f;
    float *yr = falloc(n), *pr = falloc(m), *y = falloc(n), *p = falloc(m), *p2 = falloc(m);
    fill_nan(y, n);
    fill_nan(p, m);
    fill_nan(p2, m);
    ssd_bn_apply(N, C, H * W, x, mean, var, gamma, beta, eps, 1, yr);
    ssd_maxpool2_forward(N, C, H, W, yr, pr);
    const int saved = ssd_get_num_threads();
    ssd_set_num_threads(2);
    ssd_bn_apply_relu_maxpool2(N, C, H, W, x, mean, var, gamma, beta, eps, y, p);
    const int ok2 = same(y, yr, n) && same(p, pr, m);
    ssd_set_num_threads(1);
    fill_nan(y, n);
    ssd_bn_apply_relu_maxpool2(N, C, H, W, x, mean, var, gamma, beta, eps, y, p);
    const int ok1 = same(y, yr, n) && same(p, pr, m);
    ssd_bn_apply_relu_maxpool2(N, C, H, W, x, mean, var, gamma, beta, eps, NULL, p2);
    const int okn = same(p2, pr, m);
    ssd_set_num_threads(saved);
    report(ok1 && ok2 && okn,
           "bn_apply_relu_maxpool2 %dx%dx%dx%d%s: == bn_apply+maxpool2 (1 and 2 threads, y NULL)",
           N, C, H, W, special ? " ties/nan/inf" : "");
    free(x); free(mean); free(var); free(gamma); free(beta);
    free(yr); free(pr); free(y); free(p); free(p2);
}

/* ---- 2. max pool + ReLU + BN backward ---------------------------------------------------- */

static void test_pool_bn_backward(int N, int C, int H, int W, int ties)
{
    const size_t n = (size_t)N * C * H * W, m = (size_t)N * C * (H / 2) * (W / 2);
    float *x = frandom(n), *dp = frandom(m);
    if (ties)
        for (size_t i = 0; i < n; ++i) x[i] = floorf(x[i] * 2.0f) * 0.25f;
    float *mean = falloc(C), *var = falloc(C), *gamma = falloc(C), *beta = falloc(C);
    bn_params(C, mean, var, gamma, beta);
    ssd_bn_stats(N, C, H * W, x, mean, var);
    const float eps = 1e-5f;
    float *y = falloc(n), *dy = falloc(n), *dxr = falloc(n), *dx = falloc(n);
    float *dgr = falloc(C), *dbr = falloc(C), *dg = falloc(C), *db = falloc(C);
    ssd_bn_apply(N, C, H * W, x, mean, var, gamma, beta, eps, 1, y);
    ssd_maxpool2_backward(N, C, H, W, y, dp, dy);
    ssd_bn_backward(N, C, H * W, x, mean, var, gamma, eps, y, dy, dxr, dgr, dbr);
    const int saved = ssd_get_num_threads();
    int ok[2];
    for (int t = 1; t <= 2; ++t) {
        ssd_set_num_threads(t);
        fill_nan(dx, n);
        fill_nan(dg, C);
        fill_nan(db, C);
        ssd_maxpool2_bn_relu_backward(N, C, H, W, x, mean, var, gamma, eps, y, dp, dx, dg, db);
        ok[t - 1] = same(dx, dxr, n) && same(dg, dgr, C) && same(db, dbr, C);
    }
    /* y recomputed from x (the forward's own y, from the fused forward, is the same) */
    int okx = 1;
    {
        float *p = falloc(m), *yf = falloc(n);
        ssd_bn_apply_relu_maxpool2(N, C, H, W, x, mean, var, gamma, beta, eps, yf, p);
        okx = same(yf, y, n);
        for (int t = 1; t <= 2; ++t) {
            ssd_set_num_threads(t);
            fill_nan(dx, n);
            fill_nan(dg, C);
            fill_nan(db, C);
            ssd_maxpool2_bn_relu_backward_x(N, C, H, W, x, mean, var, gamma, beta, eps, dp, dx, dg, db);
            okx = okx && same(dx, dxr, n) && same(dg, dgr, C) && same(db, dbr, C);
        }
        /* ssd_bn_relu_backward: the plain ReLU + BN backward without y */
        float *dxb = falloc(n), *dgb = falloc(C), *dbb = falloc(C);
        ssd_bn_relu_backward(N, C, H * W, x, mean, var, gamma, beta, eps, dy, dxb, dgb, dbb);
        okx = okx && same(dxb, dxr, n) && same(dgb, dgr, C) && same(dbb, dbr, C);
        free(p); free(yf); free(dxb); free(dgb); free(dbb);
    }
    ssd_set_num_threads(saved);
    report(ok[0] && ok[1],
           "maxpool2_bn_relu_backward %dx%dx%dx%d%s: bitwise == maxpool2_backward+bn_backward "
           "(1 and 2 threads)", N, C, H, W, ties ? " ties" : "");
    report(okx,
           "maxpool2_bn_relu_backward_x and bn_relu_backward %dx%dx%dx%d%s (y recomputed from x): "
           "bitwise == with y", N, C, H, W, ties ? " ties" : "");
    free(x); free(dp); free(mean); free(var); free(gamma); free(beta);
    free(y); free(dy); free(dxr); free(dx); free(dgr); free(dbr); free(dg); free(db);
}

/* ---- 3. conv forward + statistics -------------------------------------------------------- */

/* ---- bench ------------------------------------------------------------------------------- */

#define REPS 5

static void bench(void)
{
    const int saved = ssd_get_num_threads();
    const float eps = 1e-5f;
    static const int pshape[][3] = {{16, 256, 256}, {32, 128, 128}, {64, 64, 64}};
    for (int s = 0; s < 3; ++s) {
        const int N = 32, C = pshape[s][0], H = pshape[s][1], W = pshape[s][2];
        const size_t n = (size_t)N * C * H * W, m = n / 4;
        float *x = frandom(n), *y = falloc(n), *p = falloc(m), *dp = frandom(m);
        float *dy = falloc(n), *dx = falloc(n);
        float *mean = falloc(C), *var = falloc(C), *gm = falloc(C), *bt = falloc(C);
        float *dg = falloc(C), *db = falloc(C);
        bn_params(C, mean, var, gm, bt);
        ssd_bn_stats(N, C, H * W, x, mean, var);
        for (int t = 1; t <= 2; ++t) {
            ssd_set_num_threads(t);
            double best[4] = {1e30, 1e30, 1e30, 1e30};
            for (int r = 0; r < REPS; ++r) {
                double t0 = omp_get_wtime();
                ssd_bn_apply(N, C, H * W, x, mean, var, gm, bt, eps, 1, y);
                ssd_maxpool2_forward(N, C, H, W, y, p);
                double t1 = omp_get_wtime();
                ssd_bn_apply_relu_maxpool2(N, C, H, W, x, mean, var, gm, bt, eps, y, p);
                double t2 = omp_get_wtime();
                ssd_maxpool2_backward(N, C, H, W, y, dp, dy);
                ssd_bn_backward(N, C, H * W, x, mean, var, gm, eps, y, dy, dx, dg, db);
                double t3 = omp_get_wtime();
                ssd_maxpool2_bn_relu_backward(N, C, H, W, x, mean, var, gm, eps, y, dp, dx, dg,
                                              db);
                double t4 = omp_get_wtime();
                const double d[4] = {t1 - t0, t2 - t1, t3 - t2, t4 - t3};
                for (int i = 0; i < 4; ++i) if (d[i] < best[i]) best[i] = d[i];
            }
            printf("N=32 C=%-3d %3dx%-3d threads=%d  bn+relu+pool fwd: unfused %7.1f ms  fused "
                   "%7.1f ms  |  bwd: unfused %7.1f ms  fused %7.1f ms\n",
                   C, H, W, t, best[0] * 1e3, best[1] * 1e3, best[2] * 1e3, best[3] * 1e3);
            fflush(stdout);
        }
        free(x); free(y); free(p); free(dp); free(dy); free(dx);
        free(mean); free(var); free(gm); free(bt); free(dg); free(db);
    }
    ssd_set_num_threads(saved);
}

/* ---- main -------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "bench") == 0) {
        bench();
        return 0;
    }
    const double t0 = omp_get_wtime();

    test_bnrp(2, 3, 7, 9, 0);
    test_bnrp(2, 3, 8, 8, 1);
    test_bnrp(1, 2, 5, 6, 1);
    test_bnrp(1, 1, 1, 5, 0);
    test_bnrp(2, 3, 34, 37, 1);
    test_bnrp(2, 3, 35, 36, 0);
    test_bnrp(3, 5, 64, 64, 1);
    test_bnrp(4, 16, 256, 256, 0); /* > 16 MB: streaming stores */
    test_bnrp(2, 16, 131, 257, 1); /* > 16 MB, unaligned odd rows */

    test_pool_bn_backward(2, 3, 7, 9, 0);
    test_pool_bn_backward(2, 3, 8, 8, 1);
    test_pool_bn_backward(1, 2, 5, 6, 0);
    test_pool_bn_backward(1, 1, 1, 5, 0);
    test_pool_bn_backward(2, 3, 34, 37, 1);
    test_pool_bn_backward(2, 3, 35, 36, 0);
    test_pool_bn_backward(3, 5, 64, 64, 1);
    test_pool_bn_backward(1, 2, 6, 4101, 0);     /* rows longer than the row buffer */
    test_pool_bn_backward(4, 16, 256, 256, 0);   /* > 16 MB: streaming stores */
    test_pool_bn_backward(2, 16, 131, 257, 1);   /* > 16 MB, unaligned odd rows */

    printf("(%.1f s)\n", omp_get_wtime() - t0);
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail > 0 ? 1 : 0;
}
