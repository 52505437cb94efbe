/*
 * test_kernels.c — checks the fast kernels of threads.c, gemm.c, conv.c, bn.c, pool.c and
 * optim.c against slow, obviously-correct references (double precision, naive loops), and
 * the backward passes against finite differences of the double references.
 *
 *   ./test_kernels         run the checks: the micro-kernel ISA ("micro-kernel: avx512, 4 x 48"),
 *                          one line per check, then "N passed, M failed"
 *                          (exit status 1 if anything failed)
 *   ./test_kernels bench   GFLOP/s of sgemm 1024^3 and of the TinySSD convolutions at
 *                          batch 32 (1 and 2 threads); not part of the test run
 *
 * Errors of float results are measured against the sum of absolute values of the terms
 * that make up each output (|err| <= tol * sum|terms|), which is the natural scale of
 * float rounding and still catches a single missing or extra term.
 */
#include "ssd_runtime.h"
#include "gemm_internal.h"
#include "winograd_internal.h"

#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- bookkeeping ------------------------------------------------------------------------ */

#include "test_support.h"

static float *falloc(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    if (!p) { fprintf(stderr, "out of memory\n"); exit(2); }
    return p;
}

static double *dalloc(size_t n)
{
    double *p = calloc(n ? n : 1, sizeof(double));
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

/* max over i of |got - ref| / (scale + tiny), scale = sum of |terms| of element i */
static double scaled_err(const float *got, const double *ref, const double *scale, size_t n)
{
    double worst = 0.0;
    for (size_t i = 0; i < n; ++i) {
        double e = fabs((double)got[i] - ref[i]) / (scale[i] + 1e-30);
        if (!(e <= worst)) worst = e; /* NaN -> NaN, fails any comparison */
    }
    return worst;
}

/* max relative error with an absolute floor */
static double rel_err(const float *got, const double *ref, size_t n, double floor_)
{
    double worst = 0.0;
    for (size_t i = 0; i < n; ++i) {
        double e = fabs((double)got[i] - ref[i]) / (fabs(ref[i]) + floor_);
        if (!(e <= worst)) worst = e;
    }
    return worst;
}

static int same_bits(const float *a, const float *b, size_t n)
{
    return memcmp(a, b, n * sizeof(float)) == 0;
}

/* Scratch with a guard zone after the advertised size, pre-filled with NaN so that any
 * dependence on its initial content shows up. */
#ifndef GUARD
#define GUARD 4096 /* (build with -DGUARD=0 under ASan to catch reads past the scratch) */
#endif
static float *scratch_alloc(size_t n)
{
    float *s = falloc(n + GUARD);
    fill_nan(s, n);
    for (size_t i = 0; i < GUARD; ++i) s[n + i] = 12345.0f;
    return s;
}

static int scratch_guard_ok(const float *s, size_t n)
{
    for (size_t i = 0; i < GUARD; ++i)
        if (s[n + i] != 12345.0f) return 0;
    return 1;
}

/* ---- references ------------------------------------------------------------------------- */

static void ref_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, const float *C0, int ldc, double *ref,
                     double *scale)
{
    for (int i = 0; i < M; ++i) {
        for (int j = 0; j < N; ++j) {
            double s = 0.0, a = 0.0;
            for (int k = 0; k < K; ++k) {
                double av = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                double bv = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                s += av * bv;
                a += fabs(av * bv);
            }
            double r = alpha * s, sc = fabs(alpha) * a;
            if (beta != 0.0f) {
                r += beta * (double)C0[(size_t)i * ldc + j];
                sc += fabs(beta * (double)C0[(size_t)i * ldc + j]);
            }
            ref[(size_t)i * N + j] = r;
            scale[(size_t)i * N + j] = sc + 1e-12;
        }
    }
}

/* y = conv(x, w) + b, in double; yabs = sum of |terms| */
static void ref_conv_forward(const ssd_conv2d_t *g, const double *x, const double *w,
                             const double *b, double *y, double *yabs)
{
    const int N = g->N, C = g->C, H = g->H, W = g->W, O = g->O, k = g->k;
    for (int n = 0; n < N; ++n)
        for (int o = 0; o < O; ++o)
            for (int oh = 0; oh < g->OH; ++oh)
                for (int ow = 0; ow < g->OW; ++ow) {
                    double s = b ? b[o] : 0.0, a = b ? fabs(b[o]) : 0.0;
                    for (int c = 0; c < C; ++c)
                        for (int i = 0; i < k; ++i)
                            for (int j = 0; j < k; ++j) {
                                int ih = oh * g->stride + i - g->pad;
                                int iw = ow * g->stride + j - g->pad;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                double t = w[((size_t)(o * C + c) * k + i) * k + j] *
                                           x[((size_t)(n * C + c) * H + ih) * W + iw];
                                s += t;
                                a += fabs(t);
                            }
                    size_t idx = ((size_t)(n * O + o) * g->OH + oh) * g->OW + ow;
                    y[idx] = s;
                    if (yabs) yabs[idx] = a;
                }
}

/* dx, dw, db of sum(y * dy) in double (direct scatter/gather loops) */
static void ref_conv_backward(const ssd_conv2d_t *g, const float *x, const float *w,
                              const float *dy, double *dx, double *dxabs, double *dw,
                              double *dwabs, double *db, double *dbabs)
{
    const int N = g->N, C = g->C, H = g->H, W = g->W, O = g->O, k = g->k;
    memset(dx, 0, sizeof(double) * N * C * H * W);
    memset(dxabs, 0, sizeof(double) * N * C * H * W);
    memset(dw, 0, sizeof(double) * O * C * k * k);
    memset(dwabs, 0, sizeof(double) * O * C * k * k);
    memset(db, 0, sizeof(double) * O);
    memset(dbabs, 0, sizeof(double) * O);
    for (int n = 0; n < N; ++n)
        for (int o = 0; o < O; ++o)
            for (int oh = 0; oh < g->OH; ++oh)
                for (int ow = 0; ow < g->OW; ++ow) {
                    double d = dy[((size_t)(n * O + o) * g->OH + oh) * g->OW + ow];
                    db[o] += d;
                    dbabs[o] += fabs(d);
                    for (int c = 0; c < C; ++c)
                        for (int i = 0; i < k; ++i)
                            for (int j = 0; j < k; ++j) {
                                int ih = oh * g->stride + i - g->pad;
                                int iw = ow * g->stride + j - g->pad;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                size_t xi = ((size_t)(n * C + c) * H + ih) * W + iw;
                                size_t wi = ((size_t)(o * C + c) * k + i) * k + j;
                                dx[xi] += w[wi] * d;
                                dxabs[xi] += fabs(w[wi] * d);
                                dw[wi] += x[xi] * d;
                                dwabs[wi] += fabs(x[xi] * d);
                            }
                }
}

/* Training-mode BN (+ optional ReLU) forward in double. */
static void ref_bn_forward(int N, int C, int HW, const double *x, const double *gamma,
                           const double *beta, double eps, int relu, double *y, double *mean,
                           double *var)
{
    const double M = (double)N * HW;
    for (int c = 0; c < C; ++c) {
        double s = 0.0;
        for (int n = 0; n < N; ++n)
            for (int i = 0; i < HW; ++i) s += x[((size_t)n * C + c) * HW + i];
        double m = s / M, v = 0.0;
        for (int n = 0; n < N; ++n)
            for (int i = 0; i < HW; ++i) {
                double d = x[((size_t)n * C + c) * HW + i] - m;
                v += d * d;
            }
        v /= M;
        if (mean) mean[c] = m;
        if (var) var[c] = v;
        for (int n = 0; n < N; ++n)
            for (int i = 0; i < HW; ++i) {
                size_t idx = ((size_t)n * C + c) * HW + i;
                double t = gamma[c] * (x[idx] - m) / sqrt(v + eps) + beta[c];
                y[idx] = relu && t < 0 ? 0.0 : t;
            }
    }
}

static double *to_double(const float *p, size_t n)
{
    double *d = dalloc(n);
    for (size_t i = 0; i < n; ++i) d[i] = p[i];
    return d;
}

/* ---- GEMM ------------------------------------------------------------------------------- */

static void test_gemm_case(int ta, int tb, int M, int N, int K, float alpha, float beta, int pad)
{
    const int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    const int arows = ta ? K : M, brows = tb ? N : K;
    float *A = frandom((size_t)arows * lda), *B = frandom((size_t)brows * ldb);
    float *C = frandom((size_t)M * ldc), *C0 = falloc((size_t)M * ldc);
    if (beta == 0.0f) fill_nan(C, (size_t)M * ldc); /* must not be read */
    memcpy(C0, C, sizeof(float) * M * ldc);
    double *ref = dalloc((size_t)M * N), *scale = dalloc((size_t)M * N);
    ref_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C0, ldc, ref, scale);
    ssd_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    float *got = falloc((size_t)M * N);
    for (int i = 0; i < M; ++i) memcpy(got + (size_t)i * N, C + (size_t)i * ldc, sizeof(float) * N);
    double err = scaled_err(got, ref, scale, (size_t)M * N);
    /* the padding columns of C must be untouched */
    int pad_ok = 1;
    for (int i = 0; i < M; ++i)
        for (int j = N; j < ldc; ++j)
            if (memcmp(&C[(size_t)i * ldc + j], &C0[(size_t)i * ldc + j], sizeof(float))) pad_ok = 0;
    report(err < 1e-5 && pad_ok, "sgemm %c%c M=%d N=%d K=%d alpha=%g beta=%g ld+%d: err %.2e",
           ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, beta, pad, err);
    free(A); free(B); free(C); free(C0); free(ref); free(scale); free(got);
}

/* The backward-weight dot-product tile of this build's ISA against double sums, for
 * segment lengths that are and are not whole vectors of it (8, 16 or 24 lanes past the
 * last whole one), one or several segments; the floats after each segment are NaN, so a
 * tile that read past n would fail. */
static void test_bw_tile(int n, int nseg)
{
    const size_t dseg = (size_t)n + 16, xseg = (size_t)n + 24;
    float *d = frandom(4 * nseg * dseg + 64), *x = frandom(3 * nseg * xseg + 64);
    for (int m = 0; m < 4 * nseg; ++m) fill_nan(d + m * dseg + n, dseg - n);
    for (int m = 0; m < 3 * nseg; ++m) fill_nan(x + m * xseg + n, xseg - n);
    /* row r of d / x: its segment m at base + (m * rows + r) * seg */
    float out[12];
    ssd__bw_tile(d, d + dseg, d + 2 * dseg, d + 3 * dseg, x, x + xseg, x + 2 * xseg, n, nseg,
                 4 * dseg, 3 * xseg, out);
    double worst = 0.0;
    for (int r = 0; r < 4; ++r)
        for (int c = 0; c < 3; ++c) {
            double ref = 0.0, scale = 0.0;
            for (int m = 0; m < nseg; ++m)
                for (int q = 0; q < n; ++q) {
                    const double t = (double)d[(m * 4 + r) * dseg + q] * x[(m * 3 + c) * xseg + q];
                    ref += t;
                    scale += fabs(t);
                }
            const double e = fabs(out[r * 3 + c] - ref) / (scale + 1e-30);
            if (!(e <= worst)) worst = e; /* (NaN makes it fail) */
        }
    report(worst <= 1e-6, "backward-weight tile n=%d nseg=%d (%s): max scaled err %.2e", n, nseg,
           SSD_UKERNEL_ISA, worst);
    free(d);
    free(x);
}

/* The 4 x 6 backward-weight tile (AVX-512 builds) against double sums. */
static void test_bw_tile6(int n, int nseg)
{
#ifdef SSD_UKERNEL_AVX512
    const size_t dseg = (size_t)n + 16, xseg = (size_t)n + 24;
    float *d = frandom(4 * nseg * dseg + 64), *x = frandom(6 * nseg * xseg + 64);
    for (int m = 0; m < 4 * nseg; ++m) fill_nan(d + m * dseg + n, dseg - n);
    for (int m = 0; m < 6 * nseg; ++m) fill_nan(x + m * xseg + n, xseg - n);
    const float *dr[4], *xr[6];
    for (int r = 0; r < 4; ++r) dr[r] = d + r * dseg;
    for (int c = 0; c < 6; ++c) xr[c] = x + c * xseg;
    float out[24];
    ssd__bw_tile6(dr, xr, n, nseg, 4 * dseg, 6 * xseg, out);
    double worst = 0.0;
    for (int r = 0; r < 4; ++r)
        for (int c = 0; c < 6; ++c) {
            double ref = 0.0, scale = 0.0;
            for (int m = 0; m < nseg; ++m)
                for (int q = 0; q < n; ++q) {
                    const double t = (double)d[(m * 4 + r) * dseg + q] * x[(m * 6 + c) * xseg + q];
                    ref += t;
                    scale += fabs(t);
                }
            const double e = fabs(out[r * 6 + c] - ref) / (scale + 1e-30);
            if (!(e <= worst)) worst = e;
        }
    report(worst <= 1e-6, "backward-weight 4 x 6 tile n=%d nseg=%d: max scaled err %.2e", n, nseg, worst);
    free(d);
    free(x);
#else
    printf("skip backward-weight 4 x 6 tile n=%d nseg=%d: AVX-512 not in this build\n", n, nseg);
#endif
}

/* The 8-row Winograd tile (AVX-512 builds) against two 4-row micro-kernel calls: the same
 * bits, since each element sums over k in the same order. */
static void test_ukernel8(int kc)
{
#ifdef SSD_UKERNEL_AVX512
    float *a = frandom((size_t)2 * SSD_MR * kc), *b = frandom((size_t)kc * SSD_NR);
    const ptrdiff_t ldc = SSD_NR + 5;
    float *c8 = falloc(8 * (size_t)ldc), *c4 = falloc(8 * (size_t)ldc);
    fill_nan(c8, 8 * (size_t)ldc);
    fill_nan(c4, 8 * (size_t)ldc);
    ssd__ukernel8(kc, a, a + (size_t)SSD_MR * kc, b, c8, ldc);
    ssd__ukernel(kc, a, b, 1.0f, NULL, 0, 1.0f, c4, ldc, NULL, 0);
    ssd__ukernel(kc, a + (size_t)SSD_MR * kc, b, 1.0f, NULL, 0, 1.0f, c4 + 4 * ldc, ldc, NULL, 0);
    int same = 1;
    for (int r = 0; r < 8; ++r) same &= same_bits(c8 + r * ldc, c4 + r * ldc, SSD_NR);
    report(same, "8 x %d Winograd tile kc=%d: bit for bit two 4-row micro-kernels", SSD_NR, kc);
    free(a); free(b); free(c8); free(c4);
#else
    printf("skip 8-row Winograd tile kc=%d: AVX-512 not in this build\n", kc);
#endif
}

static void test_gemm(void)
{
    static const int shapes[][3] = {
        {1, 1, 1},    {3, 5, 7},     {4, 24, 1},     {5, 25, 300},  {17, 49, 513},
        {64, 100, 27}, {263, 50, 40}, {16, 1000, 27}, {128, 97, 1152}, {7, 3, 2000},
        {300, 7, 5},  {33, 48, 256},  {8, 23, 257},
    };
    const int ns = sizeof shapes / sizeof shapes[0];
    for (int s = 0; s < ns; ++s)
        for (int ta = 0; ta < 2; ++ta)
            for (int tb = 0; tb < 2; ++tb) {
                const int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                test_gemm_case(ta, tb, M, N, K, 1.0f, 0.0f, 0);
                test_gemm_case(ta, tb, M, N, K, 1.0f, 1.0f, 3);
                if (s % 3 == 0) test_gemm_case(ta, tb, M, N, K, -0.7f, 0.5f, 1);
            }
    test_ukernel8(1);
    test_ukernel8(16);
    test_ukernel8(131);
    /* degenerate sizes */
    {
        float C[6] = {1, 2, 3, 4, 5, 6}, A[1] = {1}, B[1] = {1};
        ssd_sgemm(0, 0, 2, 3, 0, 1.0f, A, 1, B, 3, 2.0f, C, 3);
        report(C[0] == 2 && C[5] == 12, "sgemm K=0 scales C by beta");
        for (int i = 0; i < 6; ++i) C[i] = NAN;
        ssd_sgemm(0, 0, 2, 3, 0, 1.0f, A, 1, B, 3, 0.0f, C, 3);
        report(C[0] == 0 && C[5] == 0, "sgemm K=0 beta=0 zeroes C (NaN not propagated)");
    }
}

/* ---- convolution ------------------------------------------------------------------------ */

typedef struct { int N, C, H, W, O, k, s, p; } conv_shape;

static void test_conv_case(conv_shape cs, int with_bias, int relu)
{
    ssd_conv2d_t g = ssd_conv2d_geometry(cs.N, cs.C, cs.H, cs.W, cs.O, cs.k, cs.s, cs.p);
    char name[128];
    snprintf(name, sizeof name, "N=%d C=%d %dx%d O=%d k=%d s=%d p=%d%s%s", cs.N, cs.C, cs.H,
             cs.W, cs.O, cs.k, cs.s, cs.p, with_bias ? " bias" : "", relu ? " relu" : "");
    const size_t xn = (size_t)g.N * g.C * g.H * g.W, yn = (size_t)g.N * g.O * g.OH * g.OW;
    const size_t wn = (size_t)g.O * g.C * g.k * g.k;
    float *x = frandom(xn), *w = frandom(wn), *b = frandom(g.O), *dy = frandom(yn);
    double *xd = to_double(x, xn), *wd = to_double(w, wn), *bd = to_double(b, g.O);
    const size_t ns = ssd_conv2d_scratch_floats(&g);
    float *scratch = scratch_alloc(ns);

    /* forward */
    double *yr = dalloc(yn), *ya = dalloc(yn);
    ref_conv_forward(&g, xd, wd, with_bias ? bd : NULL, yr, ya);
    if (relu)
        for (size_t i = 0; i < yn; ++i) yr[i] = yr[i] < 0 ? 0 : yr[i];
    float *y = falloc(yn);
    fill_nan(y, yn);
    ssd_conv2d_forward(&g, x, w, with_bias ? b : NULL, y, relu, scratch);
    double e = scaled_err(y, yr, ya, yn);
    report(e < 1e-5 && scratch_guard_ok(scratch, ns), "conv forward %s: err %.2e", name, e);

    /* the same outputs written channels-last at offset 3 of rows of OHOW*O + 5 floats (the
     * SSD heads into their concatenation); everything else in the rows stays untouched */
    {
        const size_t OHOW = (size_t)g.OH * g.OW, row = OHOW * g.O + 5;
        const ssd_conv2d_out_t ld = {row, 1, (size_t)g.O};
        float *yc = falloc(3 + row * g.N);
        for (size_t i = 0; i < 3 + row * g.N; ++i) yc[i] = -7.0f;
        fill_nan(scratch, ns);
        ssd_conv2d_forward_strided(&g, x, w, with_bias ? b : NULL, yc + 3, &ld, relu, scratch);
        int same = 1, kept = yc[0] == -7.0f && yc[1] == -7.0f && yc[2] == -7.0f;
        for (int n = 0; n < g.N; ++n) {
            const float *r = yc + 3 + n * row;
            for (size_t o = 0; o < (size_t)g.O; ++o)
                for (size_t q = 0; q < OHOW; ++q)
                    same &= same_bits(&r[q * g.O + o], &y[(n * g.O + o) * OHOW + q], 1);
            for (size_t i = OHOW * g.O; i < row; ++i) kept &= r[i] == -7.0f;
        }
        report(same && kept && scratch_guard_ok(scratch, ns),
               "conv forward channels-last into rows %s: %s", name,
               same ? (kept ? "same bits as NCHW, rest untouched" : "wrote outside its slice")
                    : "differs from NCHW");
        free(yc);
    }

    /* as a pair: channels [0, O1) channels-last into one buffer, the rest NCHW into another,
     * from two weight matrices; each part must equal its conv alone */
    if (g.O >= 2 && !relu) {
        const int O1 = g.O / 3 + 1, O2 = g.O - O1;
        const size_t OHOW = (size_t)g.OH * g.OW, K = (size_t)g.C * g.k * g.k;
        ssd_conv2d_t g1 = g, g2 = g;
        g1.O = O1;
        g2.O = O2;
        /* (a pair always runs the direct conv, so its parts are compared with that) */
        const int winograd_was = ssd__winograd_enabled();
        ssd__winograd_enable(0);
        /* (first part channels-last, second NCHW; and the other way round below) */
        const ssd_conv2d_out_t ld1 = {OHOW * O1 + 2, 1, (size_t)O1}, ld2 = ssd_conv2d_nchw(&g2);
        const size_t n1 = ld1.image * g.N, n2 = OHOW * O2 * g.N;
        float *y1 = falloc(n1), *y2 = falloc(n2), *r1 = falloc(n1), *r2 = falloc(n2);
        for (size_t i = 0; i < n1; ++i) y1[i] = r1[i] = -7.0f;
        const size_t np = ssd_conv2d_pair_scratch_floats(&g);
        float *sp = scratch_alloc(np);
        ssd_conv2d_forward_pair(&g, O1, x, w, with_bias ? b : NULL, y1, &ld1, w + O1 * K,
                                with_bias ? b + O1 : NULL, y2, &ld2, sp);
        const size_t n1s = ssd_conv2d_scratch_floats(&g1), n2s = ssd_conv2d_scratch_floats(&g2);
        float *s1 = scratch_alloc(n1s > n2s ? n1s : n2s);
        ssd_conv2d_forward_strided(&g1, x, w, with_bias ? b : NULL, r1, &ld1, 0, s1);
        ssd_conv2d_forward(&g2, x, w + O1 * K, with_bias ? b + O1 : NULL, r2, 0, s1);
        report(same_bits(y1, r1, n1) && same_bits(y2, r2, n2) && scratch_guard_ok(sp, np),
               "conv forward pair %d + %d %s: each part bit for bit its conv alone", O1, O2,
               name);
        /* first part NCHW with a multiple of 4 channels (stored from registers), second
         * channels-last: its rows go through the scatter */
        if (g.O >= 5) {
            const int P1 = 4, P2 = g.O - 4;
            ssd_conv2d_t h1 = g, h2 = g;
            h1.O = P1;
            h2.O = P2;
            const ssd_conv2d_out_t m1 = ssd_conv2d_nchw(&h1), m2 = {OHOW * P2, 1, (size_t)P2};
            const size_t q1 = OHOW * P1 * g.N, q2 = OHOW * P2 * g.N;
            float *z1 = falloc(q1), *z2 = falloc(q2), *t1 = falloc(q1), *t2 = falloc(q2);
            fill_nan(sp, np);
            ssd_conv2d_forward_pair(&g, P1, x, w, with_bias ? b : NULL, z1, &m1, w + P1 * K,
                                    with_bias ? b + P1 : NULL, z2, &m2, sp);
            /* (scratch for all O channels covers any part of them) */
            ssd_conv2d_forward(&h1, x, w, with_bias ? b : NULL, t1, 0, scratch);
            ssd_conv2d_forward_strided(&h2, x, w + P1 * K, with_bias ? b + P1 : NULL, t2, &m2, 0,
                                       scratch);
            report(same_bits(z1, t1, q1) && same_bits(z2, t2, q2) && scratch_guard_ok(sp, np),
                   "conv forward pair %d (NCHW) + %d (channels-last) %s: each part its conv alone",
                   P1, P2, name);
            free(z1); free(z2); free(t1); free(t2);
        }
        free(y1); free(y2); free(r1); free(r2); free(sp); free(s1);
        ssd__winograd_enable(winograd_was);
    }

    /* backward (once per shape, with the bias-less/relu-less variant) */
    if (!with_bias && !relu) {
        double *dxr = dalloc(xn), *dxa = dalloc(xn), *dwr = dalloc(wn), *dwa = dalloc(wn);
        double *dbr = dalloc(g.O), *dba = dalloc(g.O);
        ref_conv_backward(&g, x, w, dy, dxr, dxa, dwr, dwa, dbr, dba);
        float *dx = falloc(xn), *dw = falloc(wn), *db = falloc(g.O);
        fill_nan(dx, xn);
        fill_nan(dw, wn);
        fill_nan(db, g.O);
        fill_nan(scratch, ns);
        ssd_conv2d_backward_data(&g, dy, w, dx, scratch);
        e = scaled_err(dx, dxr, dxa, xn);
        report(e < 1e-5 && scratch_guard_ok(scratch, ns), "conv backward-data %s: err %.2e",
               name, e);
        fill_nan(scratch, ns);
        ssd_conv2d_backward_weight(&g, x, dy, dw, db, scratch);
        e = scaled_err(dw, dwr, dwa, wn);
        double eb = scaled_err(db, dbr, dba, g.O);
        report(e < 1e-5 && eb < 1e-5 && scratch_guard_ok(scratch, ns),
               "conv backward-weight %s: err dw %.2e db %.2e", name, e, eb);
        fill_nan(dw, wn);
        ssd_conv2d_backward_weight(&g, x, dy, dw, NULL, scratch);
        e = scaled_err(dw, dwr, dwa, wn);
        report(e < 1e-5, "conv backward-weight %s db=NULL: err %.2e", name, e);

        /* as a pair: dy split after O1 channels; dx, dw and db against the reference; and,
         * on the direct path (where the pair and its parts always take the same kernel),
         * each conv's dw and db bit for bit what its own backward-weight gives */
        if (g.O >= 2) {
            const int O1 = g.O / 3 + 1, O2 = g.O - O1;
            const size_t OHOW = (size_t)g.OH * g.OW, K = (size_t)g.C * g.k * g.k;
            ssd_conv2d_t g1 = g, g2 = g;
            g1.O = O1;
            g2.O = O2;
            float *dy1 = falloc(OHOW * O1 * g.N), *dy2 = falloc(OHOW * O2 * g.N);
            for (int n = 0; n < g.N; ++n) {
                memcpy(dy1 + n * O1 * OHOW, dy + n * g.O * OHOW, O1 * OHOW * sizeof(float));
                memcpy(dy2 + n * O2 * OHOW, dy + (n * g.O + O1) * OHOW, O2 * OHOW * sizeof(float));
            }
            float *pw = falloc(wn), *pb = falloc(g.O), *rw = falloc(wn), *rb = falloc(g.O);
            const size_t np = ssd_conv2d_pair_backward_scratch_floats(&g);
            float *sp = scratch_alloc(np);
            fill_nan(dx, xn);
            ssd_conv2d_backward_pair(&g, O1, x, w, dy1, pw, pb, w + O1 * K, dy2, pw + O1 * K,
                                     pb + O1, dx, sp);
            const double ex = scaled_err(dx, dxr, dxa, xn);
            const double ew = scaled_err(pw, dwr, dwa, wn), eb2 = scaled_err(pb, dbr, dba, g.O);
            report(ex < 1e-5 && ew < 1e-5 && eb2 < 1e-5 && scratch_guard_ok(sp, np),
                   "conv backward pair %d + %d %s: err dx %.2e dw %.2e db %.2e", O1, O2, name,
                   ex, ew, eb2);
            const int winograd_was = ssd__winograd_enabled();
            ssd__winograd_enable(0);
            ssd_conv2d_backward_pair(&g, O1, x, w, dy1, pw, pb, w + O1 * K, dy2, pw + O1 * K,
                                     pb + O1, dx, sp);
            fill_nan(scratch, ns);
            ssd_conv2d_backward_weight(&g1, x, dy1, rw, rb, scratch);
            ssd_conv2d_backward_weight(&g2, x, dy2, rw + O1 * K, rb + O1, scratch);
            report(same_bits(pw, rw, wn) && same_bits(pb, rb, g.O) && scratch_guard_ok(sp, np),
                   "conv backward pair %d + %d %s, direct: dw and db bit for bit", O1, O2,
                   name);
            fill_nan(pw, wn);
            ssd_conv2d_backward_pair(&g, O1, x, w, dy1, pw, NULL, w + O1 * K, dy2, pw + O1 * K,
                                     NULL, NULL, sp);
            report(same_bits(pw, rw, wn), "conv backward pair %s without dx and db", name);
            ssd__winograd_enable(winograd_was);
            free(dy1); free(dy2); free(pw); free(pb); free(rw); free(rb); free(sp);
        }
        free(dxr); free(dxa); free(dwr); free(dwa); free(dbr); free(dba);
        free(dx); free(dw); free(db);
    }
    free(x); free(w); free(b); free(dy); free(xd); free(wd); free(bd);
    free(scratch); free(yr); free(ya); free(y);
}

/* conv + bias (+ ReLU) + 2x2 max pool in one call: bit for bit the two calls it replaces */
static void test_conv_pool(conv_shape cs, int relu)
{
    ssd_conv2d_t g = ssd_conv2d_geometry(cs.N, cs.C, cs.H, cs.W, cs.O, cs.k, cs.s, cs.p);
    const size_t xn = (size_t)g.N * g.C * g.H * g.W, yn = (size_t)g.N * g.O * g.OH * g.OW;
    const size_t pn = (size_t)g.N * g.O * (g.OH / 2) * (g.OW / 2);
    float *x = frandom(xn), *w = frandom((size_t)g.O * g.C * g.k * g.k), *b = frandom(g.O);
    const size_t ns = ssd_conv2d_scratch_floats(&g), np = ssd_conv2d_pool_scratch_floats(&g);
    float *s1 = scratch_alloc(ns), *s2 = scratch_alloc(np);
    float *y = falloc(yn), *pr = falloc(pn), *p = falloc(pn);
    ssd_conv2d_forward(&g, x, w, b, y, relu, s1);
    ssd_maxpool2_forward(g.N, g.O, g.OH, g.OW, y, pr);
    fill_nan(p, pn);
    ssd_conv2d_forward_pool(&g, x, w, b, p, relu, s2);
    report(same_bits(p, pr, pn) && scratch_guard_ok(s2, np),
           "conv + pool N=%d C=%d %dx%d O=%d%s (%s): bit for bit conv then pool", cs.N, cs.C,
           cs.H, cs.W, cs.O, relu ? " relu" : "",
           ssd__winograd_applies(&g, 0) ? "Winograd" : "direct");
    free(x); free(w); free(b); free(s1); free(s2); free(y); free(pr); free(p);
}

/* Weights prepared once (ssd_conv2d_prepare) give the forward and the fused pool the same
 * bits as the weights themselves; nothing is prepared where the path never runs or the
 * buffer is too small, and a batch below the Winograd threshold still reads w. */
static void test_prepared(conv_shape cs, int expect)
{
    ssd_conv2d_t g = ssd_conv2d_geometry(cs.N, cs.C, cs.H, cs.W, cs.O, cs.k, cs.s, cs.p);
    const size_t need = ssd_conv2d_prepared_floats(&g);
    const size_t xn = (size_t)g.N * g.C * g.H * g.W, yn = (size_t)g.N * g.O * g.OH * g.OW;
    const size_t pn = (size_t)g.N * g.O * (g.OH / 2) * (g.OW / 2);
    float *x = frandom(xn), *w = frandom((size_t)g.O * g.C * g.k * g.k), *b = frandom(g.O);
    const size_t ns = ssd_conv2d_pool_scratch_floats(&g) > ssd_conv2d_scratch_floats(&g)
                          ? ssd_conv2d_pool_scratch_floats(&g) : ssd_conv2d_scratch_floats(&g);
    float *sc = scratch_alloc(ns);
    float *y0 = falloc(yn), *y1 = falloc(yn), *p0 = falloc(pn), *p1 = falloc(pn);
    ssd_conv2d_forward(&g, x, w, b, y0, 1, sc);
    ssd_conv2d_forward_pool(&g, x, w, b, p0, 1, sc);
    if (!expect) {
        report(need == 0 && !ssd_conv2d_prepare(&g, w), "prepared weights N=%d C=%d %dx%d O=%d: none",
               cs.N, cs.C, cs.H, cs.W, cs.O);
    } else {
        float *u = falloc(need + 1);
        g.prepared = u;
        g.prepared_floats = need - 1; /* too small: refused, and the forward ignores it */
        fill_nan(u, need + 1);
        const int refused = !ssd_conv2d_prepare(&g, w);
        fill_nan(y1, yn);
        ssd_conv2d_forward(&g, x, w, b, y1, 1, sc);
        const int small_ok = refused && same_bits(y1, y0, yn);
        g.prepared_floats = need;
        const int done = ssd_conv2d_prepare(&g, w);
        /* w is not read once prepared, where the Winograd path runs */
        float *wn = falloc((size_t)g.O * g.C * 9);
        fill_nan(wn, (size_t)g.O * g.C * 9);
        const float *wf = ssd__winograd_applies(&g, 0) ? wn : w;
        fill_nan(y1, yn);
        ssd_conv2d_forward(&g, x, wf, b, y1, 1, sc);
        fill_nan(p1, pn);
        ssd_conv2d_forward_pool(&g, x, wf, b, p1, 1, sc);
        report(need == (size_t)16 * ((g.O + 3) / 4 * 4) * g.C && small_ok && done &&
                   same_bits(y1, y0, yn) && same_bits(p1, p0, pn) && scratch_guard_ok(sc, ns),
               "prepared weights N=%d C=%d %dx%d O=%d (%s): %zu floats, forward and pool bit for bit",
               cs.N, cs.C, cs.H, cs.W, cs.O, ssd__winograd_applies(&g, 0) ? "Winograd" : "direct", need);
        free(u); free(wn);
    }
    free(x); free(w); free(b); free(sc); free(y0); free(y1); free(p0); free(p1);
}

/* F(4x4, 3x3) (winograd4.c) with prepared weights, on the shapes that take it: 36 planes
 * prepared, w not read; the forward (bias, ReLU) against the double reference, with the
 * F(2x2) forward of the unprepared weights and its error beside it; the fused pool bit for
 * bit the pool of that forward; channels-last bit for bit NCHW; 1 and 3 threads alike. */
static void test_prepared4(conv_shape cs)
{
    ssd_conv2d_t g = ssd_conv2d_geometry(cs.N, cs.C, cs.H, cs.W, cs.O, 3, 1, 1);
    const int takes = ssd__wg4_applies(g.C, g.O, g.OH, g.OW);
    const size_t need = ssd_conv2d_prepared_floats(&g);
    const size_t xn = (size_t)g.N * g.C * g.H * g.W, yn = (size_t)g.N * g.O * g.OH * g.OW;
    const size_t pn = (size_t)g.N * g.O * (g.OH / 2) * (g.OW / 2), wn = (size_t)g.O * g.C * 9;
    float *x = frandom(xn), *w = frandom(wn), *b = frandom(g.O);
    double *xd = to_double(x, xn), *wd = to_double(w, wn), *bd = to_double(b, g.O);
    double *yr = dalloc(yn), *ya = dalloc(yn);
    ref_conv_forward(&g, xd, wd, bd, yr, ya);
    for (size_t i = 0; i < yn; ++i) yr[i] = yr[i] < 0 ? 0 : yr[i];
    const int saved = ssd_get_num_threads();
    ssd_set_num_threads(3); /* (scratch for the most threads used) */
    const size_t ns = ssd_conv2d_pool_scratch_floats(&g) > ssd_conv2d_scratch_floats(&g)
                          ? ssd_conv2d_pool_scratch_floats(&g) : ssd_conv2d_scratch_floats(&g);
    float *sc = scratch_alloc(ns);
    float *y2 = falloc(yn), *y4 = falloc(yn), *y1t = falloc(yn), *yp = falloc(pn), *p4 = falloc(pn);
    ssd_conv2d_forward(&g, x, w, b, y2, 1, sc); /* F(2x2), weights transformed in the call */
    float *u = falloc(need + 1), *wn_ = falloc(wn);
    g.prepared = u;
    g.prepared_floats = need;
    fill_nan(u, need + 1);
    const int done = ssd_conv2d_prepare(&g, w);
    fill_nan(wn_, wn); /* w is not read once prepared */
    fill_nan(y4, yn);
    ssd_conv2d_forward(&g, x, wn_, b, y4, 1, sc);
    fill_nan(p4, pn);
    ssd_conv2d_forward_pool(&g, x, wn_, b, p4, 1, sc);
    ssd_maxpool2_forward(g.N, g.O, g.OH, g.OW, y4, yp);
    ssd_set_num_threads(1);
    fill_nan(y1t, yn);
    ssd_conv2d_forward(&g, x, wn_, b, y1t, 1, sc);
    ssd_set_num_threads(saved);
    /* channels-last, at offset 3 of rows of OHOW*O + 5 floats */
    const size_t OHOW = (size_t)g.OH * g.OW, row = OHOW * g.O + 5;
    const ssd_conv2d_out_t ld = {row, 1, (size_t)g.O};
    float *yc = falloc(3 + row * g.N);
    fill_nan(yc, 3 + row * g.N);
    ssd_conv2d_forward_strided(&g, x, wn_, b, yc + 3, &ld, 1, sc);
    int cl = 1;
    for (int n = 0; n < g.N; ++n)
        for (size_t o = 0; o < (size_t)g.O; ++o)
            for (size_t q = 0; q < OHOW; ++q)
                cl &= same_bits(&yc[3 + n * row + q * g.O + o], &y4[(n * g.O + o) * OHOW + q], 1);
    const double e4 = scaled_err(y4, yr, ya, yn), e2 = scaled_err(y2, yr, ya, yn);
    report(takes && done && need == (size_t)36 * ((g.O + 3) / 4 * 4) * g.C && e4 < 1e-5 &&
               same_bits(p4, yp, pn) && same_bits(y1t, y4, yn) && cl && scratch_guard_ok(sc, ns),
           "F(4x4) prepared N=%d C=%d %dx%d O=%d: err %.2e (F(2x2) %.2e); pool, channels-last, "
           "1 and 3 threads bit for bit", cs.N, cs.C, cs.H, cs.W, cs.O, e4, e2);
    free(x); free(w); free(b); free(xd); free(wd); free(bd); free(yr); free(ya); free(sc);
    free(y2); free(y4); free(y1t); free(yp); free(p4); free(u); free(wn_); free(yc);
}

/* A Winograd forward whose output passes the streaming threshold (16 MB: 4 x 16 x 256 x 256
 * floats) gives the bits of the same images one at a time (4 MB each, stored normally). */
static void test_conv_streamed(void)
{
    const int N = 4, C = 16, H = 256, O = 16;
    ssd_conv2d_t g = ssd_conv2d_geometry(N, C, H, H, O, 3, 1, 1), g1 = g;
    g1.N = 1;
    const size_t xi = (size_t)C * H * H, yi = (size_t)O * H * H;
    float *x = frandom(N * xi), *w = frandom((size_t)O * C * 9), *b = frandom(O);
    const size_t ns = ssd_conv2d_scratch_floats(&g);
    float *sc = scratch_alloc(ns), *y1 = falloc(N * yi);
    float *y = aligned_alloc(64, N * yi * sizeof(float)); /* (the streamed stores need it) */
    if (!y) { fprintf(stderr, "out of memory\n"); exit(2); }
    fill_nan(y, N * yi);
    ssd_conv2d_forward(&g, x, w, b, y, 1, sc);
    for (int n = 0; n < N; ++n) ssd_conv2d_forward(&g1, x + n * xi, w, b, y1 + n * yi, 1, sc);
    report(same_bits(y, y1, N * yi) && scratch_guard_ok(sc, ns),
           "conv forward N=4 16x256x256 -> 16 (%s, %s): bit for bit one image at a time",
           ssd__winograd_applies(&g, 0) ? "Winograd" : "direct",
           ((uintptr_t)y & 63) == 0 ? "output 64-byte aligned" : "output unaligned");
    free(x); free(w); free(b); free(sc); free(y); free(y1);
}

static void test_conv(void)
{
    static const conv_shape shapes[] = {
        {2, 3, 9, 11, 5, 3, 1, 1},    /* odd sizes, M not a multiple of 4 */
        {1, 3, 32, 32, 16, 3, 1, 1},  /* first TinySSD layer, small */
        {2, 16, 13, 7, 8, 3, 1, 1},
        {3, 5, 10, 10, 6, 1, 1, 0},   /* 1x1 */
        {2, 4, 11, 9, 7, 3, 2, 1},    /* stride 2 */
        {2, 4, 12, 12, 6, 3, 1, 0},   /* pad 0 */
        {1, 3, 8, 8, 4, 5, 1, 2},     /* 5x5 */
        {2, 3, 9, 9, 5, 3, 2, 0},     /* stride 2, pad 0 */
        {1, 2, 7, 7, 3, 4, 3, 2},     /* even k, stride 3 */
        {2, 3, 40, 36, 10, 7, 2, 3},  /* a stem: strided, few channels: conv_direct.c */
        {1, 4, 30, 50, 8, 3, 2, 1},   /* the same, one full block of 8 */
        {2, 3, 37, 64, 17, 5, 3, 2},  /* stride 3, three blocks */
        {1, 2, 5, 5, 3, 3, 1, 3},     /* pad > k-1: general backward-data */
        {1, 128, 6, 6, 128, 3, 1, 1}, /* K = 1152: several K blocks */
        {1, 130, 5, 5, 132, 3, 1, 1}, /* > 128 output channels: channel groups */
        {2, 64, 4, 4, 8, 3, 1, 1},    /* predictor head on a 4x4 map */
        {2, 128, 1, 1, 8, 3, 1, 1},   /* 1x1 map, pad 1 */
        {1, 16, 40, 37, 16, 3, 1, 1},
        {2, 16, 64, 64, 32, 3, 1, 1},
        {1, 1, 3, 50, 1, 3, 1, 1},
        {2, 3, 2, 2, 4, 3, 1, 0},     /* empty output */
        {4, 3, 16, 16, 5, 3, 1, 1},   /* backward-weight image groups of 3 + 1 */
        {1, 150, 4, 4, 8, 3, 1, 1},   /* K = 1350: no per-thread offset table */
        {2, 0, 5, 5, 3, 3, 1, 1},     /* no input channels: y = bias */
        {2, 5, 47, 40, 7, 3, 1, 1},   /* backward-weight in row bands of 24 and 23 rows */
        /* F(2x2, 3x3) (winograd.c): forward and backward-data (>= 256 output pixels) */
        {6, 16, 6, 32, 33, 3, 1, 1},  /* 48 tiles per image, 33 channels out, 16 back */
        {1, 16, 16, 32, 16, 3, 1, 1}, /* 16 -> 16: forward only */
        {4, 40, 16, 16, 20, 3, 1, 1}, /* a partial last block */
        {32, 32, 2, 16, 36, 3, 1, 1}, /* one tile row per image */
        {1, 64, 24, 48, 70, 3, 1, 1}, /* several blocks and tile rows per block */
        {8, 64, 8, 16, 24, 3, 1, 1},  /* backward-weight too: a head's pair (64 -> 8 + 16) */
        {4, 40, 32, 64, 36, 3, 1, 1}, /* backward-weight in 3 chunks, C and O not 4k/3k */
    };
    const conv_shape prep[] = {
        {2, 16, 10, 64, 16, 3, 1, 1},  /* F(2x2) (height not 4k), 16-tile groups with AVX-512 */
        {1, 40, 16, 16, 20, 3, 1, 1},  /* 8-tile groups, O % 4 == 0 */
        {1, 136, 8, 32, 16, 3, 1, 1},  /* F(2x2): over 128 channels in */
        {3, 16, 6, 32, 18, 3, 1, 1},   /* O % 4 != 0 */
        {1, 16, 2, 16, 16, 3, 1, 1},   /* 32 pixels: too few for Winograd, w is read */
    };
    for (size_t i = 0; i < sizeof prep / sizeof prep[0]; ++i) test_prepared(prep[i], 1);
    const conv_shape prep4[] = {
        {1, 16, 32, 32, 16, 0, 0, 0},  /* one group per tile row: both borders in it */
        {2, 16, 16, 64, 16, 0, 0, 0},
        {3, 32, 8, 32, 18, 0, 0, 0},   /* O % 4 != 0 */
        {1, 24, 4, 96, 32, 0, 0, 0},   /* one tile row; 3 groups per row */
        {2, 16, 64, 64, 32, 0, 0, 0},  /* several blocks per image, a partial last one */
        {1, 32, 128, 128, 32, 0, 0, 0}, /* several passes of output channels */
        {1, 64, 8, 32, 72, 0, 0, 0},   /* one block: its passes shared out between threads */
        {2, 128, 8, 64, 128, 0, 0, 0}, /* the widest it takes */
    };
    for (size_t i = 0; i < sizeof prep4 / sizeof prep4[0]; ++i) test_prepared4(prep4[i]);
    test_prepared((conv_shape){2, 8, 16, 32, 16, 3, 1, 1}, 0);  /* 8 input channels */
    test_prepared((conv_shape){2, 16, 16, 20, 16, 3, 1, 1}, 0); /* OW % 16 != 0 */
    test_prepared((conv_shape){2, 16, 16, 32, 16, 3, 2, 1}, 0); /* stride 2 */
    test_conv_streamed();

    const int n = sizeof shapes / sizeof shapes[0];
    for (int s = 0; s < n; ++s) {
        test_conv_case(shapes[s], 0, 0);
        test_conv_case(shapes[s], 1, 1);
        if (s < 3) {
            test_conv_case(shapes[s], 1, 0);
            test_conv_case(shapes[s], 0, 1);
        }
    }
}


/* Finite differences of L = sum(R * conv(x, w, b)) in double vs the fast backward with
 * dy = R. L is linear in each of x, w, b, so central differences are exact up to
 * rounding: this checks the backward passes against the definition, not a second
 * hand-derived formula. */
static double conv_loss(const ssd_conv2d_t *g, const double *x, const double *w,
                        const double *b, const float *R, double *y)
{
    const size_t yn = (size_t)g->N * g->O * g->OH * g->OW;
    ref_conv_forward(g, x, w, b, y, NULL);
    double s = 0.0;
    for (size_t i = 0; i < yn; ++i) s += y[i] * R[i];
    return s;
}

static double fd_err(const float *got, const double *num, size_t n)
{
    double mean_abs = 0.0;
    for (size_t i = 0; i < n; ++i) mean_abs += fabs(num[i]);
    mean_abs = mean_abs / (double)n + 1e-12;
    return rel_err(got, num, n, mean_abs) ;
}

static void fd_gradient(double *v, size_t n, double h, double *num,
                        double (*loss)(void *), void *ctx)
{
    for (size_t i = 0; i < n; ++i) {
        const double s = v[i];
        v[i] = s + h;
        const double lp = loss(ctx);
        v[i] = s - h;
        const double lm = loss(ctx);
        v[i] = s;
        num[i] = (lp - lm) / (2.0 * h);
    }
}

typedef struct {
    const ssd_conv2d_t *g;
    double *x, *w, *b, *y;
    const float *R;
} conv_fd_ctx;

static double conv_fd_loss(void *p)
{
    conv_fd_ctx *c = p;
    return conv_loss(c->g, c->x, c->w, c->b, c->R, c->y);
}

static void test_conv_fd(conv_shape cs)
{
    ssd_conv2d_t g = ssd_conv2d_geometry(cs.N, cs.C, cs.H, cs.W, cs.O, cs.k, cs.s, cs.p);
    const size_t xn = (size_t)g.N * g.C * g.H * g.W, yn = (size_t)g.N * g.O * g.OH * g.OW;
    const size_t wn = (size_t)g.O * g.C * g.k * g.k;
    float *x = frandom(xn), *w = frandom(wn), *R = frandom(yn);
    conv_fd_ctx c = {&g, to_double(x, xn), to_double(w, wn), dalloc(g.O), dalloc(yn), R};
    double *nx = dalloc(xn), *nw = dalloc(wn), *nb = dalloc(g.O);
    fd_gradient(c.x, xn, 1e-3, nx, conv_fd_loss, &c);
    fd_gradient(c.w, wn, 1e-3, nw, conv_fd_loss, &c);
    fd_gradient(c.b, g.O, 1e-3, nb, conv_fd_loss, &c);

    float *scratch = scratch_alloc(ssd_conv2d_scratch_floats(&g));
    float *dx = falloc(xn), *dw = falloc(wn), *db = falloc(g.O);
    ssd_conv2d_backward_data(&g, R, w, dx, scratch);
    ssd_conv2d_backward_weight(&g, x, R, dw, db, scratch);
    double ex = fd_err(dx, nx, xn), ew = fd_err(dw, nw, wn), eb = fd_err(db, nb, g.O);
    report(ex < 1e-4 && ew < 1e-4 && eb < 1e-4,
           "conv finite differences N=%d C=%d %dx%d O=%d k=%d s=%d p=%d: dx %.1e dw %.1e db %.1e",
           cs.N, cs.C, cs.H, cs.W, cs.O, cs.k, cs.s, cs.p, ex, ew, eb);
    free(x); free(w); free(R); free(c.x); free(c.w); free(c.b); free(c.y);
    free(nx); free(nw); free(nb); free(scratch); free(dx); free(dw); free(db);
}

/* ---- batch norm ------------------------------------------------------------------------- */

static void test_bn_forward(int N, int C, int HW, float offset)
{
    const size_t n = (size_t)N * C * HW;
    float *x = frandom(n);
    for (size_t i = 0; i < n; ++i) x[i] = x[i] * 2.0f + offset;
    float *gamma = frandom(C), *beta = frandom(C);
    float *mean = falloc(C), *var = falloc(C);
    double *xd = to_double(x, n), *gd = to_double(gamma, C), *bd = to_double(beta, C);
    double *yr = dalloc(n), *mr = dalloc(C), *vr = dalloc(C);
    const float eps = 1e-5f;

    ssd_bn_stats(N, C, HW, x, mean, var);
    ref_bn_forward(N, C, HW, xd, gd, bd, eps, 0, yr, mr, vr);
    double em = 0.0, ev = rel_err(var, vr, C, 1e-12);
    for (int c = 0; c < C; ++c) { /* mean: relative to the spread of x */
        double e = fabs(mean[c] - mr[c]) / (sqrt(vr[c]) + fabs(mr[c]));
        if (!(e <= em)) em = e;
    }
    report(em < 1e-6 && ev < 1e-5, "bn stats N=%d C=%d HW=%d offset %g: mean %.1e var %.1e", N,
           C, HW, offset, em, ev);

    /* apply with the batch statistics (computed again in double from the float ones) */
    for (int relu = 0; relu < 2; ++relu) {
        float *y = falloc(n);
        ssd_bn_apply(N, C, HW, x, mean, var, gamma, beta, eps, relu, y);
        double *ya = dalloc(n), *sc = dalloc(n);
        for (int nn = 0; nn < N; ++nn)
            for (int c = 0; c < C; ++c)
                for (int i = 0; i < HW; ++i) {
                    size_t idx = ((size_t)nn * C + c) * HW + i;
                    double is = 1.0 / sqrt((double)var[c] + eps);
                    double t = gamma[c] * ((double)x[idx] - mean[c]) * is + beta[c];
                    ya[idx] = relu && t < 0 ? 0 : t;
                    sc[idx] = fabs(gamma[c] * (double)x[idx] * is) +
                              fabs(gamma[c] * (double)mean[c] * is) + fabs(beta[c]);
                }
        double e = scaled_err(y, ya, sc, n);
        report(e < 1e-6, "bn apply N=%d C=%d HW=%d relu=%d: err %.1e", N, C, HW, relu, e);
        free(y); free(ya); free(sc);
    }

    /* running statistics */
    float *rm = frandom(C), *rv = frandom(C), *rm0 = falloc(C), *rv0 = falloc(C);
    for (int c = 0; c < C; ++c) rv[c] = fabsf(rv[c]);
    memcpy(rm0, rm, sizeof(float) * C);
    memcpy(rv0, rv, sizeof(float) * C);
    const int64_t count = (int64_t)N * HW;
    ssd_bn_update_running(C, mean, var, count, 0.1f, rm, rv);
    double *rmr = dalloc(C), *rvr = dalloc(C);
    const double mom = 0.1f; /* (the float momentum passed, not the decimal 0.1: where the
                              * two terms cancel, the difference shows) */
    for (int c = 0; c < C; ++c) {
        double ub = count > 1 ? (double)count / (count - 1) : 1.0;
        rmr[c] = (1.0 - mom) * rm0[c] + mom * mean[c];
        rvr[c] = (1.0 - mom) * rv0[c] + mom * var[c] * ub;
    }
    double e1 = rel_err(rm, rmr, C, 1e-3), e2 = rel_err(rv, rvr, C, 1e-3);
    report(e1 < 1e-6 && e2 < 1e-6, "bn update running C=%d count=%lld: err %.1e %.1e", C,
           (long long)count, e1, e2);
    /* count == 1 keeps var as is */
    memcpy(rv, rv0, sizeof(float) * C);
    ssd_bn_update_running(C, mean, var, 1, 0.1f, rm, rv);
    for (int c = 0; c < C; ++c) rvr[c] = (1.0 - mom) * rv0[c] + mom * var[c];
    e2 = rel_err(rv, rvr, C, 1e-3);
    report(e2 < 1e-6, "bn update running count=1: err %.1e", e2);

    free(x); free(gamma); free(beta); free(mean); free(var); free(xd); free(gd); free(bd);
    free(yr); free(mr); free(vr); free(rm); free(rv); free(rm0); free(rv0); free(rmr); free(rvr);
}

/* Backward of training BN (+ReLU): analytic double reference and finite differences. */
typedef struct {
    int N, C, HW, relu;
    double *x, *gamma, *beta, *y;
    const float *R;
    double eps;
} bn_fd_ctx;

static double bn_fd_loss(void *p)
{
    bn_fd_ctx *c = p;
    const size_t n = (size_t)c->N * c->C * c->HW;
    ref_bn_forward(c->N, c->C, c->HW, c->x, c->gamma, c->beta, c->eps, c->relu, c->y, NULL,
                   NULL);
    double s = 0.0;
    for (size_t i = 0; i < n; ++i) s += c->y[i] * c->R[i];
    return s;
}

static void test_bn_backward(int N, int C, int HW, int relu, int fd)
{
    const size_t n = (size_t)N * C * HW;
    float *x = frandom(n), *gamma = frandom(C), *beta = frandom(C), *dy = frandom(n);
    for (int c = 0; c < C; ++c) gamma[c] += 1.5f;
    const float eps = 1e-5f;
    float *mean = falloc(C), *var = falloc(C), *y = falloc(n);
    ssd_bn_stats(N, C, HW, x, mean, var);
    ssd_bn_apply(N, C, HW, x, mean, var, gamma, beta, eps, relu, y);
    float *dx = falloc(n), *dg = falloc(C), *db = falloc(C);
    ssd_bn_backward(N, C, HW, x, mean, var, gamma, eps, relu ? y : NULL, dy, dx, dg, db);

    /* analytic reference in double from the formula of the contract */
    double *dxr = dalloc(n), *dgr = dalloc(C), *dbr = dalloc(C);
    const double M = (double)N * HW;
    for (int c = 0; c < C; ++c) {
        const double is = 1.0 / sqrt((double)var[c] + eps);
        double sb = 0.0, sg = 0.0;
        for (int nn = 0; nn < N; ++nn)
            for (int i = 0; i < HW; ++i) {
                size_t idx = ((size_t)nn * C + c) * HW + i;
                double d = (relu && !(y[idx] > 0)) ? 0.0 : dy[idx];
                sb += d;
                sg += d * ((double)x[idx] - mean[c]) * is;
            }
        dbr[c] = sb;
        dgr[c] = sg;
        for (int nn = 0; nn < N; ++nn)
            for (int i = 0; i < HW; ++i) {
                size_t idx = ((size_t)nn * C + c) * HW + i;
                double d = (relu && !(y[idx] > 0)) ? 0.0 : dy[idx];
                double xh = ((double)x[idx] - mean[c]) * is;
                dxr[idx] = gamma[c] * is * (d - sb / M - xh * sg / M);
            }
    }
    double ex = fd_err(dx, dxr, n), eg = fd_err(dg, dgr, C), eb = fd_err(db, dbr, C);
    report(ex < 1e-4 && eg < 1e-5 && eb < 1e-5,
           "bn backward N=%d C=%d HW=%d relu=%d vs formula: dx %.1e dgamma %.1e dbeta %.1e", N, C,
           HW, relu, ex, eg, eb);

    if (fd) {
        bn_fd_ctx c = {N, C, HW, relu, to_double(x, n), to_double(gamma, C), to_double(beta, C),
                       dalloc(n), dy, eps};
        double *nx = dalloc(n), *ng = dalloc(C), *nb = dalloc(C);
        fd_gradient(c.x, n, 1e-6, nx, bn_fd_loss, &c);
        fd_gradient(c.gamma, C, 1e-6, ng, bn_fd_loss, &c);
        fd_gradient(c.beta, C, 1e-6, nb, bn_fd_loss, &c);
        ex = fd_err(dx, nx, n);
        eg = fd_err(dg, ng, C);
        eb = fd_err(db, nb, C);
        report(ex < 1e-3 && eg < 1e-3 && eb < 1e-3,
               "bn finite differences N=%d C=%d HW=%d relu=%d: dx %.1e dgamma %.1e dbeta %.1e",
               N, C, HW, relu, ex, eg, eb);
        free(c.x); free(c.gamma); free(c.beta); free(c.y); free(nx); free(ng); free(nb);
    }
    free(x); free(gamma); free(beta); free(dy); free(mean); free(var); free(y);
    free(dx); free(dg); free(db); free(dxr); free(dgr); free(dbr);
}

/* ---- pooling ---------------------------------------------------------------------------- */

/* ties: values in {-2, -1, 0, 1}; nans: also some NaN and -inf (the first NaN of a window
 * does not win: a later NaN replaces it, as in PyTorch's `val > max || isnan(val)`). */
static void test_maxpool2(int N, int C, int H, int W, int ties, int nans)
{
    const size_t n = (size_t)N * C * H * W;
    const int OH = H / 2, OW = W / 2;
    const size_t m = (size_t)N * C * OH * OW;
    float *x = frandom(n), *dy = frandom(m);
    if (ties)
        for (size_t i = 0; i < n; ++i) x[i] = floorf(x[i] * 1.5f); /* values in {-2..1} */
    if (nans)
        for (size_t i = 0; i < n; ++i) {
            const float r = frand();
            if (r > 0.9f) x[i] = NAN;
            else if (r < -0.9f) x[i] = -INFINITY;
        }
    float *y = falloc(m), *dx = falloc(n);
    fill_nan(y, m);
    fill_nan(dx, n);
    ssd_maxpool2_forward(N, C, H, W, x, y);
    ssd_maxpool2_backward(N, C, H, W, x, dy, dx);
    float *yr = falloc(m), *dxr = falloc(n);
    memset(dxr, 0, n * sizeof(float));
    for (int p = 0; p < N * C; ++p)
        for (int oh = 0; oh < OH; ++oh)
            for (int ow = 0; ow < OW; ++ow) {
                size_t best = (size_t)p * H * W + (size_t)(2 * oh) * W + 2 * ow;
                for (int i = 0; i < 2; ++i)
                    for (int j = 0; j < 2; ++j) {
                        size_t idx = (size_t)p * H * W + (size_t)(2 * oh + i) * W + 2 * ow + j;
                        if (x[idx] > x[best] || isnan(x[idx])) best = idx;
                    }
                size_t o = ((size_t)p * OH + oh) * OW + ow;
                yr[o] = x[best];
                dxr[best] = dy[o];
            }
    report(same_bits(y, yr, m) && same_bits(dx, dxr, n),
           "maxpool2 N=%d C=%d %dx%d%s%s: forward and backward exact", N, C, H, W,
           ties ? " (ties)" : "", nans ? " (NaN, -inf)" : "");
    free(x); free(dy); free(y); free(dx); free(yr); free(dxr);
}

static void test_global_maxpool(int N, int C, int HW, int ties)
{
    const size_t n = (size_t)N * C * HW;
    float *x = frandom(n), *dy = frandom((size_t)N * C);
    if (ties)
        for (size_t i = 0; i < n; ++i) x[i] = floorf(x[i] * 1.5f);
    float *y = falloc((size_t)N * C), *dx = falloc(n);
    fill_nan(dx, n);
    ssd_global_maxpool_forward(N, C, HW, x, y);
    ssd_global_maxpool_backward(N, C, HW, x, dy, dx);
    float *yr = falloc((size_t)N * C), *dxr = falloc(n);
    memset(dxr, 0, n * sizeof(float));
    for (int p = 0; p < N * C; ++p) {
        size_t best = (size_t)p * HW;
        for (int i = 1; i < HW; ++i)
            if (x[(size_t)p * HW + i] > x[best] || isnan(x[(size_t)p * HW + i]))
                best = (size_t)p * HW + i;
        yr[p] = x[best];
        dxr[best] = dy[p];
    }
    report(same_bits(y, yr, (size_t)N * C) && same_bits(dx, dxr, n),
           "global maxpool N=%d C=%d HW=%d%s: forward and backward exact", N, C, HW,
           ties ? " (ties)" : "");
    free(x); free(dy); free(y); free(dx); free(yr); free(dxr);
}

/* ---- SGD -------------------------------------------------------------------------------- */

static void test_sgd(int64_t n, float lr, float wd)
{
    float *p = frandom((size_t)n), *g = frandom((size_t)n);
    double *r = dalloc((size_t)n), *sc = dalloc((size_t)n);
    for (int64_t i = 0; i < n; ++i) {
        r[i] = p[i] - (double)lr * (g[i] + (double)wd * p[i]);
        sc[i] = fabs(p[i]) + fabs((double)lr * g[i]) + fabs((double)lr * wd * p[i]);
    }
    ssd_sgd_update(n, p, g, lr, wd);
    double e = scaled_err(p, r, sc, (size_t)n);
    free(sc);
    report(e < 1e-6, "sgd n=%lld lr=%g wd=%g: err %.1e", (long long)n, lr, wd, e);
    free(p); free(g); free(r);
}

/* ---- determinism ------------------------------------------------------------------------ */

static void test_determinism(void)
{
    const int saved = ssd_get_num_threads();

    /* sgemm: two runs at 2 threads, and 1 thread vs 2 threads */
    {
        const int M = 301, N = 517, K = 700;
        float *A = frandom((size_t)M * K), *B = frandom((size_t)K * N);
        float *C1 = falloc((size_t)M * N), *C2 = falloc((size_t)M * N), *C3 = falloc((size_t)M * N);
        for (int ta = 0; ta < 2; ++ta) {
            const int tb = ta;
            ssd_set_num_threads(2);
            ssd_sgemm(ta, tb, M, N, K, 1.0f, A, ta ? M : K, B, tb ? K : N, 0.0f, C1, N);
            ssd_sgemm(ta, tb, M, N, K, 1.0f, A, ta ? M : K, B, tb ? K : N, 0.0f, C2, N);
            ssd_set_num_threads(1);
            ssd_sgemm(ta, tb, M, N, K, 1.0f, A, ta ? M : K, B, tb ? K : N, 0.0f, C3, N);
            report(same_bits(C1, C2, (size_t)M * N) && same_bits(C1, C3, (size_t)M * N),
                   "determinism sgemm %s M=%d N=%d K=%d: 2 threads twice, 1 vs 2 threads",
                   ta ? "TT" : "NN", M, N, K);
        }
        free(A); free(B); free(C1); free(C2); free(C3);
    }

    /* conv: all three directions, fast and general paths */
    static const conv_shape shapes[] = {{4, 16, 33, 35, 32, 3, 1, 1}, {3, 8, 17, 15, 12, 3, 2, 1},
                                        {4, 40, 16, 32, 48, 3, 1, 1}}; /* (the last: Winograd) */
    for (int s = 0; s < 3; ++s) {
        conv_shape cs = shapes[s];
        ssd_conv2d_t g = ssd_conv2d_geometry(cs.N, cs.C, cs.H, cs.W, cs.O, cs.k, cs.s, cs.p);
        const size_t xn = (size_t)g.N * g.C * g.H * g.W, yn = (size_t)g.N * g.O * g.OH * g.OW;
        const size_t wn = (size_t)g.O * g.C * g.k * g.k;
        float *x = frandom(xn), *w = frandom(wn), *b = frandom(g.O), *dy = frandom(yn);
        ssd_set_num_threads(2); /* (scratch for the most threads used below) */
        float *scratch = scratch_alloc(ssd_conv2d_scratch_floats(&g));
        float *out[3][3];
        const size_t len[3] = {yn, xn, wn + g.O};
        const int threads[3] = {2, 2, 1};
        for (int r = 0; r < 3; ++r) {
            ssd_set_num_threads(threads[r]);
            for (int d = 0; d < 3; ++d) out[r][d] = falloc(len[d]);
            ssd_conv2d_forward(&g, x, w, b, out[r][0], 1, scratch);
            ssd_conv2d_backward_data(&g, dy, w, out[r][1], scratch);
            ssd_conv2d_backward_weight(&g, x, dy, out[r][2], out[r][2] + wn, scratch);
        }
        static const char *dir[3] = {"forward", "backward-data", "backward-weight"};
        for (int d = 0; d < 3; ++d)
            report(same_bits(out[0][d], out[1][d], len[d]) && same_bits(out[0][d], out[2][d], len[d]),
                   "determinism conv %s N=%d C=%d %dx%d O=%d s=%d: 2 threads twice, 1 vs 2 threads",
                   dir[d], cs.N, cs.C, cs.H, cs.W, cs.O, cs.s);
        for (int r = 0; r < 3; ++r)
            for (int d = 0; d < 3; ++d) free(out[r][d]);
        free(x); free(w); free(b); free(dy); free(scratch);
    }

    /* batch norm */
    {
        const int N = 4, C = 16, HW = 999;
        const size_t n = (size_t)N * C * HW;
        float *x = frandom(n), *gm = frandom(C), *bt = frandom(C), *dy = frandom(n);
        float *res[2];
        for (int r = 0; r < 2; ++r) {
            ssd_set_num_threads(r == 0 ? 2 : 1);
            res[r] = falloc(2 * n + 4 * (size_t)C);
            float *mean = res[r] + 2 * n, *var = mean + C, *dg = var + C, *db = dg + C;
            ssd_bn_stats(N, C, HW, x, mean, var);
            ssd_bn_apply(N, C, HW, x, mean, var, gm, bt, 1e-5f, 1, res[r]);
            ssd_bn_backward(N, C, HW, x, mean, var, gm, 1e-5f, res[r], dy, res[r] + n, dg, db);
        }
        report(same_bits(res[0], res[1], 2 * n + 4 * (size_t)C),
               "determinism bn stats/apply/backward: 1 vs 2 threads");
        free(x); free(gm); free(bt); free(dy); free(res[0]); free(res[1]);
    }
    ssd_set_num_threads(saved);
}

static int iimax(int a, int b) { return a > b ? a : b; }

/* ---- accuracy at training scale -------------------------------------------------------- */

/* The reductions of a train step over N*H*W terms, at the size TinySSD trains (batch 32,
 * 256x256: 2M terms per channel), against double sums: backward-weight on sampled entries
 * (the reference costs 2M multiply-adds each), and the BN backward sums (dgamma, dbeta) over
 * whole channels. Inputs are shaped like a train step's: x non-negative with a large mean
 * (pixels, post-ReLU maps), dy zero-mean per channel (a BN's dx), so the sums cancel. The
 * bound is 3e-6 relative L2; a plain float32 running sum is ~3e-5 here, and PyTorch's
 * float32 conv backward-weight measured 2.7e-5 (16->16) and 3.1e-5 (3->16) on such data. */
static void test_training_scale_accuracy(int N, int C, int O, int H, float xscale)
{
    const size_t HW = (size_t)H * H, nx = (size_t)N * C * HW, ny = (size_t)N * O * HW;
    float *x = falloc(nx), *dy = falloc(ny);
    for (size_t i = 0; i < nx; ++i) x[i] = (frand() + 1.0f) * 0.5f * xscale;
    for (int o = 0; o < O; ++o) {
        double m = 0.0;
        for (int n = 0; n < N; ++n)
            for (size_t p = 0; p < HW; ++p) m += dy[((size_t)n * O + o) * HW + p] = frand();
        m /= (double)N * HW;
        for (int n = 0; n < N; ++n)
            for (size_t p = 0; p < HW; ++p) dy[((size_t)n * O + o) * HW + p] -= (float)m;
    }
    const ssd_conv2d_t g = ssd_conv2d_geometry(N, C, H, H, O, 3, 1, 1);
    float *scratch = scratch_alloc(ssd_conv2d_scratch_floats(&g));
    float *dw = falloc((size_t)O * C * 9), *db = falloc((size_t)O);
    ssd_conv2d_backward_weight(&g, x, dy, dw, db, scratch);

    double num = 0.0, den = 0.0, fnum = 0.0;
    for (int o = 0; o < O; o += 5)
        for (int c = 0; c < C; c += 3)
            for (int t = 0; t < 9; t += 4) {
                const int ky = t / 3 - 1, kx = t % 3 - 1;
                double r = 0.0;
                float plain = 0.0f;
                for (int n = 0; n < N; ++n)
                    for (int yy = iimax(0, -ky); yy < H - iimax(0, ky); ++yy) {
                        const float *d = dy + ((size_t)n * O + o) * HW + (size_t)yy * H;
                        const float *xs = x + ((size_t)n * C + c) * HW + (size_t)(yy + ky) * H + kx;
                        for (int xx = iimax(0, -kx); xx < H - iimax(0, kx); ++xx) {
                            r += (double)d[xx] * xs[xx];
                            plain += d[xx] * xs[xx];
                        }
                    }
                const double e = dw[(size_t)o * C * 9 + c * 9 + t] - r;
                num += e * e;
                den += r * r;
                fnum += (plain - r) * (plain - r);
            }
    const double bw = sqrt(num / den), plain = sqrt(fnum / den);
    report(bw <= 3e-6, "training-scale conv backward-weight %d->%d %dx%d, N=%d: rel L2 %.2e vs double "
           "(plain float32 sum %.2e)", C, O, H, H, N, bw, plain);

    /* BN backward of dy as the upstream gradient of BN(x) over the same maps. */
    float *mean = falloc((size_t)C), *var = falloc((size_t)C), *gamma = falloc((size_t)C);
    float *dgamma = falloc((size_t)C), *dbeta = falloc((size_t)C), *dx = falloc(nx);
    for (int c = 0; c < C; ++c) gamma[c] = 1.0f;
    ssd_bn_stats(N, C, (int)HW, x, mean, var);
    float *d2 = falloc(nx); /* dy's channels c mod O, as a C-channel gradient */
    for (int n = 0; n < N; ++n)
        for (int c = 0; c < C; ++c)
            memcpy(d2 + ((size_t)n * C + c) * HW, dy + ((size_t)n * O + c % O) * HW, HW * sizeof(float));
    ssd_bn_backward(N, C, (int)HW, x, mean, var, gamma, 1e-5f, NULL, d2, dx, dgamma, dbeta);
    double gnum = 0.0, gden = 0.0, bnum = 0.0;
    for (int c = 0; c < C; ++c) {
        double sd = 0.0, sx = 0.0, m = 0.0, q = 0.0;
        for (int n = 0; n < N; ++n)
            for (size_t p = 0; p < HW; ++p) m += x[((size_t)n * C + c) * HW + p];
        m /= (double)N * HW;
        for (int n = 0; n < N; ++n)
            for (size_t p = 0; p < HW; ++p) {
                const double v = x[((size_t)n * C + c) * HW + p] - m, d = d2[((size_t)n * C + c) * HW + p];
                q += v * v;
                sd += d;
                sx += d * v;
            }
        const double rg = sx / sqrt(q / ((double)N * HW) + 1e-5);
        gnum += (dgamma[c] - rg) * (dgamma[c] - rg);
        gden += rg * rg;
        bnum += (dbeta[c] - sd) * (dbeta[c] - sd);
    }
    /* dbeta of a zero-mean dy is ~0: measure it against dgamma's scale. */
    const double eg = sqrt(gnum / gden), eb = sqrt(bnum / gden);
    report(eg <= 3e-6 && eb <= 3e-6, "training-scale BN backward C=%d %dx%d, N=%d: dgamma rel L2 %.2e, "
           "dbeta %.2e (of dgamma's scale)", C, H, H, N, eg, eb);
    free(x); free(dy); free(d2); free(dx); free(scratch); free(dw); free(db);
    free(mean); free(var); free(gamma); free(dgamma); free(dbeta);
}

/* ---- bench ------------------------------------------------------------------------------ */

static double best_time(void (*fn)(void *), void *ctx, int reps)
{
    fn(ctx); /* warm-up */
    double best = 1e30;
    for (int r = 0; r < reps; ++r) {
        double t = omp_get_wtime();
        fn(ctx);
        t = omp_get_wtime() - t;
        if (t < best) best = t;
    }
    return best;
}

typedef struct {
    int ta, tb, n;
    float *A, *B, *C;
} gemm_bench;

static void run_gemm(void *p)
{
    gemm_bench *b = p;
    ssd_sgemm(b->ta, b->tb, b->n, b->n, b->n, 1.0f, b->A, b->n, b->B, b->n, 0.0f, b->C, b->n);
}

typedef struct {
    ssd_conv2d_t g;
    float *x, *w, *b, *y, *dy, *dx, *dw, *db, *scratch;
} conv_bench;

static void run_fwd(void *p)
{
    conv_bench *c = p;
    ssd_conv2d_forward(&c->g, c->x, c->w, c->b, c->y, 1, c->scratch);
}

static void run_bwd_data(void *p)
{
    conv_bench *c = p;
    ssd_conv2d_backward_data(&c->g, c->dy, c->w, c->dx, c->scratch);
}

static void run_bwd_weight(void *p)
{
    conv_bench *c = p;
    ssd_conv2d_backward_weight(&c->g, c->x, c->dy, c->dw, c->db, c->scratch);
}

static void bench(void)
{
    const int saved = ssd_get_num_threads();
    const int tcounts[2] = {1, 2};
    {
        const int n = 1024;
        gemm_bench b = {0, 0, n, frandom((size_t)n * n), frandom((size_t)n * n), falloc((size_t)n * n)};
        static const int tr[3][2] = {{0, 0}, {1, 0}, {0, 1}};
        for (int t = 0; t < 2; ++t) {
            ssd_set_num_threads(tcounts[t]);
            for (int v = 0; v < 3; ++v) {
                b.ta = tr[v][0];
                b.tb = tr[v][1];
                double s = best_time(run_gemm, &b, 5);
                printf("sgemm %c%c %d^3  threads=%d  %7.1f GFLOP/s\n", b.ta ? 'T' : 'N',
                       b.tb ? 'T' : 'N', n, tcounts[t], 2.0 * n * n * n / s * 1e-9);
                fflush(stdout);
            }
        }
        free(b.A); free(b.B); free(b.C);
    }
    static const int layers[][3] = {{3, 16, 256}, {16, 16, 256}, {16, 32, 128}, {32, 32, 128},
                                    {32, 64, 64}, {64, 64, 64},   {64, 128, 32}, {128, 128, 32},
                                    {128, 128, 16}};
    for (int l = 0; l < 9; ++l) {
        conv_bench c;
        c.g = ssd_conv2d_geometry(32, layers[l][0], layers[l][2], layers[l][2], layers[l][1], 3, 1, 1);
        const ssd_conv2d_t *g = &c.g;
        const size_t xn = (size_t)g->N * g->C * g->H * g->W, yn = (size_t)g->N * g->O * g->OH * g->OW;
        const size_t wn = (size_t)g->O * g->C * 9;
        c.x = frandom(xn); c.w = frandom(wn); c.b = frandom(g->O); c.dy = frandom(yn);
        c.y = falloc(yn); c.dx = falloc(xn); c.dw = falloc(wn); c.db = falloc(g->O);
        ssd_set_num_threads(tcounts[1]); /* (scratch for the most threads used) */
        c.scratch = scratch_alloc(ssd_conv2d_scratch_floats(g));
        const double flops = 2.0 * g->N * g->O * g->C * 9.0 * g->OH * g->OW;
        for (int t = 0; t < 2; ++t) {
            ssd_set_num_threads(tcounts[t]);
            double tf = best_time(run_fwd, &c, 2);
            double td = best_time(run_bwd_data, &c, 2);
            double tw = best_time(run_bwd_weight, &c, 2);
            printf("conv %3d->%-3d @%-3d N=32 threads=%d  forward %6.1f  backward-data %6.1f  "
                   "backward-weight %6.1f GFLOP/s  (%.1f/%.1f/%.1f ms)\n",
                   g->C, g->O, g->H, tcounts[t], flops / tf * 1e-9, flops / td * 1e-9,
                   flops / tw * 1e-9, tf * 1e3, td * 1e3, tw * 1e3);
            if (ssd__winograd_applies(g, 0) || ssd__winograd_applies(g, 1) ||
                ssd__winograd_bw_applies(g)) { /* the same with the direct conv */
                const int was = ssd__winograd_enabled();
                ssd__winograd_enable(0);
                tf = best_time(run_fwd, &c, 2);
                td = best_time(run_bwd_data, &c, 2);
                tw = best_time(run_bwd_weight, &c, 2);
                ssd__winograd_enable(was);
                printf("     (direct, no Winograd:             forward %6.1f  backward-data %6.1f  "
                       "backward-weight %6.1f GFLOP/s  (%.1f/%.1f/%.1f ms))\n",
                       flops / tf * 1e-9, flops / td * 1e-9, flops / tw * 1e-9, tf * 1e3,
                       td * 1e3, tw * 1e3);
            }
            fflush(stdout);
        }
        free(c.x); free(c.w); free(c.b); free(c.dy); free(c.y); free(c.dx); free(c.dw);
        free(c.db); free(c.scratch);
    }
    /* the memory-bound kernels around the first layers, for scale */
    {
        const int N = 32, C = 16, H = 256, W = 256, HW = H * W;
        const size_t n = (size_t)N * C * HW;
        float *x = frandom(n), *y = falloc(n), *dy = frandom(n), *dx = falloc(n);
        float mean[16], var[16], gm[16], bt[16], dg[16], db[16];
        for (int c = 0; c < C; ++c) { gm[c] = 1.0f; bt[c] = 0.1f; }
        for (int t = 0; t < 2; ++t) {
            ssd_set_num_threads(tcounts[t]);
            double best[5] = {1e30, 1e30, 1e30, 1e30, 1e30};
            for (int r = 0; r < 3; ++r) {
                double t0 = omp_get_wtime();
                ssd_bn_stats(N, C, HW, x, mean, var);
                double t1 = omp_get_wtime();
                ssd_bn_apply(N, C, HW, x, mean, var, gm, bt, 1e-5f, 1, y);
                double t2 = omp_get_wtime();
                ssd_bn_backward(N, C, HW, x, mean, var, gm, 1e-5f, y, dy, dx, dg, db);
                double t3 = omp_get_wtime();
                ssd_maxpool2_forward(N, C, H, W, x, y);
                double t4 = omp_get_wtime();
                ssd_maxpool2_backward(N, C, H, W, x, y, dx);
                double t5 = omp_get_wtime();
                const double d[5] = {t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4};
                for (int i = 0; i < 5; ++i) if (d[i] < best[i]) best[i] = d[i];
            }
            printf("16 x 256 x 256 N=32 threads=%d  bn stats %.1f ms  bn apply+relu %.1f ms  "
                   "bn backward %.1f ms  maxpool2 forward %.1f ms  backward %.1f ms\n",
                   tcounts[t], best[0] * 1e3, best[1] * 1e3, best[2] * 1e3, best[3] * 1e3,
                   best[4] * 1e3);
            fflush(stdout);
        }
        free(x); free(y); free(dy); free(dx);
    }
    ssd_set_num_threads(saved);
}

/* ---- main ------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    /* Which micro-kernel this build uses (the ISA the runtime was compiled for). */
    printf("micro-kernel: %s, %d x %d\n", SSD_UKERNEL_ISA, SSD_MR, SSD_NR);
    if (argc > 1 && strcmp(argv[1], "bench") == 0) {
        bench();
        return 0;
    }
    const double t0 = omp_get_wtime();

    {
        const int before = ssd_get_num_threads();
        ssd_set_num_threads(3);
        const int three = ssd_get_num_threads();
        ssd_set_num_threads(0); /* ignored */
        report(three == 3 && ssd_get_num_threads() == 3, "threads: set 3 -> get %d", three);
        ssd_set_num_threads(before);
    }

    test_gemm();
    for (int n = 8; n <= 72; n += 8) {
        test_bw_tile(n, 1);
        test_bw_tile(n, 3);
        test_bw_tile6(n, 1);
        test_bw_tile6(n, 3);
    }
    test_conv();
    {
        static const conv_shape pool_shapes[] = {
            {2, 16, 16, 32, 24, 3, 1, 1}, /* Winograd */
            {1, 32, 32, 16, 40, 3, 1, 1}, /* Winograd, 40 channels */
            {2, 3, 9, 11, 5, 3, 1, 1},    /* direct, odd sizes (floor) */
            {3, 64, 8, 8, 16, 3, 1, 1},   /* direct: an 8 x 8 map */
        };
        for (size_t i = 0; i < sizeof pool_shapes / sizeof pool_shapes[0]; ++i) {
            test_conv_pool(pool_shapes[i], 1);
            test_conv_pool(pool_shapes[i], 0);
        }
    }

    static const conv_shape fd_shapes[] = {
        {2, 3, 5, 6, 4, 3, 1, 1}, {1, 2, 7, 7, 3, 3, 2, 1}, {1, 2, 4, 5, 3, 1, 1, 0},
        {1, 2, 5, 4, 2, 3, 1, 0}, {1, 2, 4, 4, 2, 3, 1, 3},
    };
    for (size_t i = 0; i < sizeof fd_shapes / sizeof fd_shapes[0]; ++i) test_conv_fd(fd_shapes[i]);

    test_bn_forward(3, 5, 37, 0.0f);
    test_bn_forward(4, 16, 1000, 3.0f);
    test_bn_forward(1, 3, 1, 0.5f);
    test_bn_forward(2, 16, 131075, -1.0f); /* > 16 MB: streaming stores, unaligned planes */
    test_bn_backward(3, 5, 37, 0, 0);
    test_bn_backward(3, 5, 37, 1, 0);
    test_bn_backward(8, 32, 1024, 1, 0);
    test_bn_backward(2, 16, 131075, 1, 0); /* > 16 MB: streaming stores, unaligned planes */
    test_bn_backward(2, 3, 10, 0, 1);
    test_bn_backward(2, 3, 10, 1, 1);
    test_bn_backward(3, 2, 9, 1, 1);

    test_maxpool2(2, 3, 7, 9, 0, 0);
    test_maxpool2(2, 3, 8, 8, 1, 0);
    test_maxpool2(1, 2, 5, 6, 1, 0);
    test_maxpool2(1, 1, 1, 5, 0, 0);
    test_maxpool2(2, 3, 34, 37, 1, 0);
    test_maxpool2(2, 3, 35, 36, 1, 1);
    test_maxpool2(4, 16, 64, 64, 0, 0);
    test_global_maxpool(2, 3, 17, 0);
    test_global_maxpool(2, 5, 16, 1);
    test_global_maxpool(1, 2, 1, 0);

    test_sgd(1000, 0.2f, 5e-4f);
    test_sgd(200001, 0.05f, 0.0f);

    test_determinism();

    test_training_scale_accuracy(32, 16, 16, 256, 1.0f);   /* blk_0.0.3: the largest maps */
    test_training_scale_accuracy(32, 3, 16, 256, 255.0f);  /* blk_0.0.0 on 0..255 pixels */

    printf("(%.1f s)\n", omp_get_wtime() - t0);
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail > 0 ? 1 : 0;
}
