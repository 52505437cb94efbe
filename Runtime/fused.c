/*
 * fused.c — fused memory-bound kernels around TinySSD's down-sampling blocks
 * (conv -> BN -> ReLU -> MaxPool2d(2)):
 *
 *  - ssd_bn_apply_relu_maxpool2: BN apply + ReLU + 2x2 max pool in one pass. Each thread
 *    takes whole (n, c) planes, two rows at a time: the 4 vectors of y are computed with
 *    the same FMA as ssd_bn_apply, de-interleaved in registers and pooled with the window
 *    rule of pool.c. y is stored directly, or, for large tensors, staged in an L1 buffer and
 *    streamed out (non-temporal stores for the whole cache lines of each row, ordinary
 *    stores for the partial lines at its ends: one line never gets both kinds, which is
 *    very slow). Saves the re-read of y (~1/3 of the traffic of the two calls).
 *
 *  - ssd_maxpool2_bn_relu_backward: per channel (parallel over channels, like
 *    ssd_bn_backward), two passes over the channel's planes; in both, the gradient of y is
 *    recomputed row by row into a small L1 buffer from y and dpooled (argmax of the window
 *    as ssd_maxpool2_backward, then the y > 0 mask) instead of being stored full-size. The
 *    sums use the lanes of bn.c (lane = plane index mod 8, double, same FMA), walked in the
 *    same increasing index order, and dx the same expression: bit-identical results. As
 *    there, all channels' sums come first, then (after the sync-bn hook) all dx.
 */
#include "ssd_runtime.h"

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define SSD_FUSED_AVX2 1
#endif

#ifndef STREAM_BYTES
#define STREAM_BYTES ((size_t)16 << 20) /* as bn.c: outputs this large bypass the cache */
#endif
#define ROWBUF 2048                     /* floats of the row gradient buffer (even) */

static inline float relu1(float v) { return v < 0.0f ? 0.0f : v; }
static inline int takes(float v, float m) { return v > m || v != v; }

#ifdef SSD_FUSED_AVX2
static inline __m256 takes8(__m256 v, __m256 m)
{
    return _mm256_or_ps(_mm256_cmp_ps(v, m, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
}

/* Even / odd elements of lo:hi (16 consecutive floats), in order. */
static inline void deinterleave2(__m256 lo, __m256 hi, __m256 *even, __m256 *odd)
{
    *even = _mm256_castpd_ps(_mm256_permute4x64_pd(
        _mm256_castps_pd(_mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0))), 0xD8));
    *odd = _mm256_castpd_ps(_mm256_permute4x64_pd(
        _mm256_castps_pd(_mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1))), 0xD8));
}

static inline void interleave_store(float *p, __m256 even, __m256 odd)
{
    const __m256 a = _mm256_unpacklo_ps(even, odd);
    const __m256 b = _mm256_unpackhi_ps(even, odd);
    _mm256_storeu_ps(p, _mm256_permute2f128_ps(a, b, 0x20));
    _mm256_storeu_ps(p + 8, _mm256_permute2f128_ps(a, b, 0x31));
}

static inline __m256d lo_pd(__m256 v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
static inline __m256d hi_pd(__m256 v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }
#endif

/* ---- BN apply + ReLU + max pool ---------------------------------------------------------- */

#ifdef SSD_FUSED_AVX2
/* dst[0..cnt) = src[0..cnt), cnt < 16, with ordinary stores that stay inside [0, cnt)
 * (overlapping vectors; AVX2 masked stores are very slow on some CPUs). */
static inline void copy_small(float *dst, const float *src, int cnt)
{
    if (cnt >= 8) {
        _mm256_storeu_ps(dst, _mm256_loadu_ps(src));
        _mm256_storeu_ps(dst + cnt - 8, _mm256_loadu_ps(src + cnt - 8));
    } else if (cnt >= 4) {
        _mm_storeu_ps(dst, _mm_loadu_ps(src));
        _mm_storeu_ps(dst + cnt - 4, _mm_loadu_ps(src + cnt - 4));
    } else {
        for (int j = 0; j < cnt; ++j) dst[j] = src[j];
    }
}
#endif

/* dst[0..n) = src[0..n), with non-temporal stores for the whole 64-byte lines inside
 * dst[0..n) and ordinary (masked) stores for the partial lines at both ends. A line is
 * thus either streamed or stored normally, never both, also across neighbouring rows
 * (mixing them in one line forces a slow write-back). */
static void stream_copy(float *dst, const float *src, int n)
{
    int j = 0;
#ifdef SSD_FUSED_AVX2
    int head = (int)(((64 - ((uintptr_t)dst & 63)) & 63) / sizeof(float));
    if ((uintptr_t)dst % sizeof(float) == 0 && head + 16 <= n) {
        copy_small(dst, src, head);
        for (j = head; j + 16 <= n; j += 16) {
            _mm256_stream_ps(dst + j, _mm256_loadu_ps(src + j));
            _mm256_stream_ps(dst + j + 8, _mm256_loadu_ps(src + j + 8));
        }
        copy_small(dst + j, src + j, n - j);
        return;
    }
#endif
    for (; j < n; ++j) dst[j] = src[j];
}

/* One (n, c) plane, a pair of rows and a segment of <= ROWBUF columns at a time. When
 * streaming, the segment's y goes to the L1 buffer buf (2 x ROWBUF) and is then copied out
 * with non-temporal stores (so that unaligned rows stream too). */
static void bnrp_plane(const float *x, float *y, float *p, int H, int W, float scale,
                       float shift, int stream, float *buf)
{
    const int OH = H / 2, OW = W / 2;
    for (int oh = 0; oh < OH; ++oh) {
        for (int j0 = 0; j0 < W; j0 += ROWBUF) {
            const int n = W - j0 < ROWBUF ? W - j0 : ROWBUF;
            const float *x0 = x + (size_t)(2 * oh) * W + j0, *x1 = x0 + W;
            float *y0 = NULL, *y1 = NULL;
            if (y) {
                y0 = stream ? buf : y + (size_t)(2 * oh) * W + j0;
                y1 = stream ? buf + ROWBUF : y0 + W;
            }
            float *pr = p + (size_t)oh * OW + j0 / 2;
            const int nw = n / 2;
            int k = 0;
#ifdef SSD_FUSED_AVX2
            const __m256 vs = _mm256_set1_ps(scale), vb = _mm256_set1_ps(shift);
            const __m256 z = _mm256_setzero_ps();
            for (; k + 8 <= nw; k += 8) {
                const int j = 2 * k;
                const __m256 t0 =
                    _mm256_max_ps(z, _mm256_fmadd_ps(_mm256_loadu_ps(x0 + j), vs, vb));
                const __m256 t1 =
                    _mm256_max_ps(z, _mm256_fmadd_ps(_mm256_loadu_ps(x0 + j + 8), vs, vb));
                const __m256 t2 =
                    _mm256_max_ps(z, _mm256_fmadd_ps(_mm256_loadu_ps(x1 + j), vs, vb));
                const __m256 t3 =
                    _mm256_max_ps(z, _mm256_fmadd_ps(_mm256_loadu_ps(x1 + j + 8), vs, vb));
                if (y) {
                    _mm256_storeu_ps(y0 + j, t0);
                    _mm256_storeu_ps(y0 + j + 8, t1);
                    _mm256_storeu_ps(y1 + j, t2);
                    _mm256_storeu_ps(y1 + j + 8, t3);
                }
                __m256 a, b, c, d;
                deinterleave2(t0, t1, &a, &b);
                deinterleave2(t2, t3, &c, &d);
                __m256 m = a;
                m = _mm256_blendv_ps(m, b, takes8(b, m));
                m = _mm256_blendv_ps(m, c, takes8(c, m));
                m = _mm256_blendv_ps(m, d, takes8(d, m));
                _mm256_storeu_ps(pr + k, m);
            }
#endif
            for (; k < nw; ++k) {
                const int j = 2 * k;
                const float a = relu1(fmaf(x0[j], scale, shift));
                const float b = relu1(fmaf(x0[j + 1], scale, shift));
                const float c = relu1(fmaf(x1[j], scale, shift));
                const float d = relu1(fmaf(x1[j + 1], scale, shift));
                if (y) {
                    y0[j] = a; y0[j + 1] = b;
                    y1[j] = c; y1[j + 1] = d;
                }
                float m = a;
                m = takes(b, m) ? b : m;
                m = takes(c, m) ? c : m;
                m = takes(d, m) ? d : m;
                pr[k] = m;
            }
            if (y && (n & 1)) {
                y0[n - 1] = relu1(fmaf(x0[n - 1], scale, shift));
                y1[n - 1] = relu1(fmaf(x1[n - 1], scale, shift));
            }
            if (y && stream) {
                float *yd = y + (size_t)(2 * oh) * W + j0;
                stream_copy(yd, buf, n);
                stream_copy(yd + W, buf + ROWBUF, n);
            }
        }
    }
    if (y && (H & 1)) { /* the dropped last row: y only */
        const float *xr = x + (size_t)(H - 1) * W;
        float *yr = y + (size_t)(H - 1) * W;
        for (int j = 0; j < W; ++j) yr[j] = relu1(fmaf(xr[j], scale, shift));
    }
}

void ssd_bn_apply_relu_maxpool2(int N, int C, int H, int W, const float *x, const float *mean,
                                const float *var, const float *gamma, const float *beta,
                                float eps, float *y, float *pooled)
{
    const size_t HW = (size_t)H * W, OHOW = (size_t)(H / 2) * (W / 2);
    const int stream = y && (size_t)N * C * HW * sizeof(float) >= STREAM_BYTES;
#pragma omp parallel num_threads(ssd_get_num_threads())
    {
        float buf[2 * ROWBUF + 16] __attribute__((aligned(64))); /* + over-read */
#pragma omp for schedule(static)
        for (int nc = 0; nc < N * C; ++nc) {
            const int c = nc % C;
            /* the coefficients of ssd_bn_apply */
            const double inv = 1.0 / sqrt((double)var[c] + (double)eps);
            const float scale = (float)((double)gamma[c] * inv);
            const float shift = (float)((double)beta[c] - (double)mean[c] * scale);
            bnrp_plane(x + (size_t)nc * HW, y ? y + (size_t)nc * HW : NULL,
                       pooled + (size_t)nc * OHOW, H, W, scale, shift, stream, buf);
        }
#ifdef SSD_FUSED_AVX2
        if (stream) _mm_sfence();
#endif
    }
}

/* ---- max pool + ReLU + BN backward ------------------------------------------------------- */

/* Gradient of y at columns [j0, j0 + n) (j0 even) of both rows of pair oh (rows y0, y1):
 * dpooled routed to the first max of each window, as ssd_maxpool2_backward, then masked by
 * y > 0 (a NaN y masks to 0), into g0 / g1. The odd last column (if any) gets 0. */
static void grad_pair(const float *y0, const float *y1, const float *dp, int j0, int n,
                      float *g0, float *g1)
{
    const int nw = n / 2, w0 = j0 / 2;
    int k = 0;
#ifdef SSD_FUSED_AVX2
    const __m256 z = _mm256_setzero_ps();
    for (; k + 8 <= nw; k += 8) {
        const int j = j0 + 2 * k;
        __m256 a, b, c, d;
        deinterleave2(_mm256_loadu_ps(y0 + j), _mm256_loadu_ps(y0 + j + 8), &a, &b);
        deinterleave2(_mm256_loadu_ps(y1 + j), _mm256_loadu_ps(y1 + j + 8), &c, &d);
        __m256 m = a;
        const __m256 tb = takes8(b, m);
        m = _mm256_blendv_ps(m, b, tb);
        const __m256 tc = takes8(c, m);
        m = _mm256_blendv_ps(m, c, tc);
        const __m256 td = takes8(d, m);
        const __m256 gv = _mm256_loadu_ps(dp + w0 + k);
        /* the argmax gets gv: d if td, else c if tc, else b if tb, else a */
        const __m256 gd = _mm256_and_ps(td, gv);
        const __m256 gc = _mm256_andnot_ps(td, _mm256_and_ps(tc, gv));
        const __m256 tcd = _mm256_or_ps(tc, td);
        const __m256 gb = _mm256_andnot_ps(tcd, _mm256_and_ps(tb, gv));
        const __m256 ga = _mm256_andnot_ps(_mm256_or_ps(tcd, tb), gv);
        interleave_store(g0 + 2 * k, _mm256_and_ps(ga, _mm256_cmp_ps(a, z, _CMP_GT_OQ)),
                         _mm256_and_ps(gb, _mm256_cmp_ps(b, z, _CMP_GT_OQ)));
        interleave_store(g1 + 2 * k, _mm256_and_ps(gc, _mm256_cmp_ps(c, z, _CMP_GT_OQ)),
                         _mm256_and_ps(gd, _mm256_cmp_ps(d, z, _CMP_GT_OQ)));
    }
#endif
    for (; k < nw; ++k) {
        const int j = j0 + 2 * k;
        const float a = y0[j], b = y0[j + 1], c = y1[j], d = y1[j + 1];
        float m = a;
        int idx = 0;
        if (takes(b, m)) { m = b; idx = 1; }
        if (takes(c, m)) { m = c; idx = 2; }
        if (takes(d, m)) { m = d; idx = 3; }
        const float gv = dp[w0 + k];
        g0[2 * k] = idx == 0 && a > 0.0f ? gv : 0.0f;
        g0[2 * k + 1] = idx == 1 && b > 0.0f ? gv : 0.0f;
        g1[2 * k] = idx == 2 && c > 0.0f ? gv : 0.0f;
        g1[2 * k + 1] = idx == 3 && d > 0.0f ? gv : 0.0f;
    }
    if (n & 1) g0[n - 1] = g1[n - 1] = 0.0f;
}

/* bn.c's backward sums over plane indices [i0, i0 + n): g is the (masked) gradient of y at
 * those indices, x the plane; lane = plane index mod 8. */
static void sums_seg(const float *x, const float *g, size_t i0, int n, double mean,
                     double sd[8], double sx[8])
{
    int j = 0;
    for (; j < n && ((i0 + j) & 7) != 0; ++j) {
        const double d = g[j];
        sd[(i0 + j) & 7] += d;
        sx[(i0 + j) & 7] = fma(d, (double)x[i0 + j] - mean, sx[(i0 + j) & 7]);
    }
#ifdef SSD_FUSED_AVX2
    __m256d d0 = _mm256_loadu_pd(sd), d1 = _mm256_loadu_pd(sd + 4);
    __m256d x0 = _mm256_loadu_pd(sx), x1 = _mm256_loadu_pd(sx + 4);
    const __m256d vm = _mm256_set1_pd(mean);
    for (; j + 8 <= n; j += 8) {
        const __m256 d = _mm256_loadu_ps(g + j);
        const __m256 v = _mm256_loadu_ps(x + i0 + j);
        const __m256d da = lo_pd(d), db = hi_pd(d);
        d0 = _mm256_add_pd(d0, da);
        d1 = _mm256_add_pd(d1, db);
        x0 = _mm256_fmadd_pd(da, _mm256_sub_pd(lo_pd(v), vm), x0);
        x1 = _mm256_fmadd_pd(db, _mm256_sub_pd(hi_pd(v), vm), x1);
    }
    _mm256_storeu_pd(sd, d0);
    _mm256_storeu_pd(sd + 4, d1);
    _mm256_storeu_pd(sx, x0);
    _mm256_storeu_pd(sx + 4, x1);
#endif
    for (; j < n; ++j) {
        const double d = g[j];
        sd[(i0 + j) & 7] += d;
        sx[(i0 + j) & 7] = fma(d, (double)x[i0 + j] - mean, sx[(i0 + j) & 7]);
    }
}

/* dx = a*g - b - s*(x - mean) at plane indices [i0, i0 + n) (bn.c's expression). When
 * streaming, the values are formed in g (in place) and then streamed out. */
static void dx_seg(const float *x, float *g, float *dx, size_t i0, int n, float mean,
                   float a, float b, float s, int stream)
{
    x += i0;
    dx += i0;
    float *out = stream ? g : dx;
    int j = 0;
#ifdef SSD_FUSED_AVX2
    const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b), vs = _mm256_set1_ps(s);
    const __m256 vm = _mm256_set1_ps(mean);
    for (; j + 8 <= n; j += 8) {
        __m256 t = _mm256_fmsub_ps(va, _mm256_loadu_ps(g + j), vb);
        t = _mm256_fnmadd_ps(vs, _mm256_sub_ps(_mm256_loadu_ps(x + j), vm), t);
        _mm256_storeu_ps(out + j, t);
    }
#endif
    for (; j < n; ++j) out[j] = fmaf(-s, x[j] - mean, fmaf(a, g[j], -b));
    if (stream) stream_copy(dx, g, n);
}

/* Runs over every row of one plane in order: the gradient of y into g (zeros for a dropped
 * odd last row), then sums (dx == NULL) or dx. g holds 2 * ROWBUF floats: rows up to ROWBUF
 * long take both rows of a pair from one grad_pair call; longer rows are cut into segments
 * and each row recomputes its pair's segment (the row order of the sums is kept). */
static void plane_pass(int H, int W, const float *x, const float *y, const float *dp,
                       double mean, double sd[8], double sx[8], float *dx, float fm, float a,
                       float b, float s, int stream, float *g, const float *coef, float *yb)
{
    const int OW = W / 2;
    float *g1 = g + ROWBUF;
    for (int h = 0; h < H; ++h) {
        const int oh = h / 2, par = h & 1;
        for (int j0 = 0; j0 < W; j0 += ROWBUF) {
            const int n = W - j0 < ROWBUF ? W - j0 : ROWBUF;
            float *gr = par ? g1 : g;
            if (oh >= H / 2) {
                memset(g, 0, (size_t)n * sizeof(float));
                gr = g;
            } else if (par == 0 || W > ROWBUF) {
                if (y) {
                    const float *y0 = y + (size_t)(2 * oh) * W;
                    grad_pair(y0 + j0, y0 + W + j0, dp + (size_t)oh * OW + j0 / 2, 0, n, g, g1);
                } else { /* y recomputed from x as the forward formed it */
                    const float *x0 = x + (size_t)(2 * oh) * W + j0;
                    for (int j = 0; j < n; ++j) {
                        yb[j] = relu1(fmaf(x0[j], coef[0], coef[1]));
                        yb[ROWBUF + j] = relu1(fmaf(x0[W + j], coef[0], coef[1]));
                    }
                    grad_pair(yb, yb + ROWBUF, dp + (size_t)oh * OW + j0 / 2, 0, n, g, g1);
                }
            } /* else: the second row of the pair is already in g1 */
            const size_t i0 = (size_t)h * W + j0;
            if (dx) dx_seg(x, gr, dx, i0, n, fm, a, b, s, stream);
            else sums_seg(x, gr, i0, n, mean, sd, sx);
        }
    }
}

static void maxpool2_bn_relu_backward(int N, int C, int H, int W, const float *x,
                                      const float *mean, const float *var, const float *gamma,
                                      const float *beta, float eps, const float *y,
                                      const float *dpooled, float *dx, float *dgamma,
                                      float *dbeta);

void ssd_maxpool2_bn_relu_backward(int N, int C, int H, int W, const float *x,
                                   const float *mean, const float *var, const float *gamma,
                                   float eps, const float *y, const float *dpooled, float *dx,
                                   float *dgamma, float *dbeta)
{
    maxpool2_bn_relu_backward(N, C, H, W, x, mean, var, gamma, NULL, eps, y, dpooled, dx,
                              dgamma, dbeta);
}

void ssd_maxpool2_bn_relu_backward_x(int N, int C, int H, int W, const float *x,
                                     const float *mean, const float *var, const float *gamma,
                                     const float *beta, float eps, const float *dpooled,
                                     float *dx, float *dgamma, float *dbeta)
{
    maxpool2_bn_relu_backward(N, C, H, W, x, mean, var, gamma, beta, eps, NULL, dpooled, dx,
                              dgamma, dbeta);
}

/* The coefficients of ssd_bn_apply for channel c (y = relu(fma(x, scale, shift))). */
static void coef_of(int c, const float *mean, const float *var, const float *gamma,
                    const float *beta, float eps, float coef[2])
{
    const double inv = 1.0 / sqrt((double)var[c] + (double)eps);
    coef[0] = (float)((double)gamma[c] * inv);
    coef[1] = (float)((double)beta[c] - (double)mean[c] * coef[0]);
}

static void maxpool2_bn_relu_backward(int N, int C, int H, int W, const float *x,
                                      const float *mean, const float *var, const float *gamma,
                                      const float *beta, float eps, const float *y,
                                      const float *dpooled, float *dx, float *dgamma,
                                      float *dbeta)
{
    const size_t HW = (size_t)H * W, OHOW = (size_t)(H / 2) * (W / 2);
    const int stream = (size_t)N * C * HW * sizeof(float) >= STREAM_BYTES;
    double sums[2 * C]; /* as ssd_bn_backward: sum of dy', then of dy' * (x - mean) */
#pragma omp parallel num_threads(ssd_get_num_threads())
    {
        float g[2 * ROWBUF + 16] __attribute__((aligned(64))); /* + over-read */
        float yb[2 * ROWBUF + 16] __attribute__((aligned(64))); /* y recomputed (y == NULL) */
#pragma omp for schedule(static)
        for (int c = 0; c < C; ++c) {
            double sd[8] = {0, 0, 0, 0, 0, 0, 0, 0}, sx[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            float coef[2] = {0, 0};
            if (!y) coef_of(c, mean, var, gamma, beta, eps, coef);
            for (int n = 0; n < N; ++n) {
                const size_t off = ((size_t)n * C + c) * HW;
                plane_pass(H, W, x + off, y ? y + off : NULL, dpooled + ((size_t)n * C + c) * OHOW,
                           mean[c], sd, sx, NULL, 0, 0, 0, 0, 0, g, coef, yb);
            }
            /* from here on exactly ssd_bn_backward */
            sums[c] = ((sd[0] + sd[1]) + (sd[2] + sd[3])) + ((sd[4] + sd[5]) + (sd[6] + sd[7]));
            sums[C + c] = ((sx[0] + sx[1]) + (sx[2] + sx[3])) + ((sx[4] + sx[5]) + (sx[6] + sx[7]));
            dbeta[c] = (float)sums[c];
            dgamma[c] = (float)(sums[C + c] * (1.0 / sqrt((double)var[c] + (double)eps)));
        }
    }
    ssd_bn_sync_sums(C, sums, 1); /* sync-bn: the global batch's sums (collective.c) */
    const double count = (double)ssd_bn_sync_count((int64_t)N * (int64_t)HW);
#pragma omp parallel num_threads(ssd_get_num_threads())
    {
        float g[2 * ROWBUF + 16] __attribute__((aligned(64))); /* + over-read */
        float yb[2 * ROWBUF + 16] __attribute__((aligned(64))); /* y recomputed (y == NULL) */
#pragma omp for schedule(static)
        for (int c = 0; c < C; ++c) {
            float coef[2] = {0, 0};
            if (!y) coef_of(c, mean, var, gamma, beta, eps, coef);
            const double inv = 1.0 / sqrt((double)var[c] + (double)eps);
            const double db = sums[c], dg = sums[C + c] * inv;
            const double ad = (double)gamma[c] * inv;
            const float a = (float)ad;
            const float b = count > 0 ? (float)(ad * db / count) : 0.0f;
            const float s = count > 0 ? (float)(ad * dg * inv / count) : 0.0f;
            for (int n = 0; n < N; ++n) {
                const size_t off = ((size_t)n * C + c) * HW;
                plane_pass(H, W, x + off, y ? y + off : NULL, dpooled + ((size_t)n * C + c) * OHOW,
                           0, NULL, NULL, dx + off, mean[c], a, b, s, stream, g, coef, yb);
            }
        }
#ifdef SSD_FUSED_AVX2
        if (stream) _mm_sfence();
#endif
    }
}

