/*
 * pool.c — 2x2/stride-2 max pooling and global max pooling, NCHW float32.
 *
 * PyTorch semantics: output H/2 x W/2 (an odd last row/column is dropped); the window is
 * scanned in row-major order and an element replaces the current max if it is greater or
 * NaN (so the first max wins ties, and NaN propagates), starting from -inf. Backward
 * recomputes that argmax from x (no index tensor to store) and routes dy there; every
 * other element of dx is zero, written in the same pass (dx is written exactly once).
 * The window logic is branch-free so that clang vectorises the 2x2 loops. Parallel over
 * (n, c) planes: memory-bound, independent outputs.
 */
#include "ssd_runtime.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define SSD_POOL_AVX2 1
#endif

/* The window rule, branch-free so that the loops below vectorise: v replaces the current
 * max m if v > m or v is NaN. Starting from -inf, the first element always becomes m
 * (it is > -inf, NaN, or -inf itself), so we start from it. */
static inline int takes(float v, float m) { return v > m || v != v; }

void ssd_maxpool2_forward(int N, int C, int H, int W, const float *x, float *y)
{
    const int OH = H / 2, OW = W / 2;
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int nc = 0; nc < N * C; ++nc) {
        const float *xp = x + (size_t)nc * H * W;
        float *yp = y + (size_t)nc * OH * OW;
        for (int oh = 0; oh < OH; ++oh) {
            const float *r0 = xp + (size_t)(2 * oh) * W, *r1 = r0 + W;
            float *yr = yp + (size_t)oh * OW;
            for (int ow = 0; ow < OW; ++ow) {
                const float a = r0[2 * ow], b = r0[2 * ow + 1];
                const float c = r1[2 * ow], d = r1[2 * ow + 1];
                float m = a;
                m = takes(b, m) ? b : m;
                m = takes(c, m) ? c : m;
                m = takes(d, m) ? d : m;
                yr[ow] = m;
            }
        }
    }
}

#ifdef SSD_POOL_AVX2
/* takes() on 8 lanes: all-ones where v > m or v is NaN. */
static inline __m256 takes8(__m256 v, __m256 m)
{
    return _mm256_or_ps(_mm256_cmp_ps(v, m, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
}

/* Even / odd columns of 16 consecutive floats, in order. */
static inline void deinterleave(const float *p, __m256 *even, __m256 *odd)
{
    const __m256 lo = _mm256_loadu_ps(p), hi = _mm256_loadu_ps(p + 8);
    /* within 128-bit lanes: [l0 l2 h0 h2 | l4 l6 h4 h6]; then reorder the 64-bit pairs */
    *even = _mm256_castpd_ps(_mm256_permute4x64_pd(
        _mm256_castps_pd(_mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0))), 0xD8));
    *odd = _mm256_castpd_ps(_mm256_permute4x64_pd(
        _mm256_castps_pd(_mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1))), 0xD8));
}

/* Inverse of deinterleave: stores e0 o0 e1 o1 ... to p[0..16). */
static inline void interleave_store(float *p, __m256 even, __m256 odd)
{
    const __m256 a = _mm256_unpacklo_ps(even, odd); /* e0 o0 e1 o1 | e4 o4 e5 o5 */
    const __m256 b = _mm256_unpackhi_ps(even, odd); /* e2 o2 e3 o3 | e6 o6 e7 o7 */
    _mm256_storeu_ps(p, _mm256_permute2f128_ps(a, b, 0x20));
    _mm256_storeu_ps(p + 8, _mm256_permute2f128_ps(a, b, 0x31));
}

/* 8 consecutive windows: same rule as the scalar loop, one-hot masks of the argmax. */
static void backward_8_windows(const float *r0, const float *r1, const float *dy, float *g0,
                               float *g1)
{
    __m256 a, b, c, d;
    deinterleave(r0, &a, &b);
    deinterleave(r1, &c, &d);
    __m256 m = a;
    const __m256 tb = takes8(b, m);
    m = _mm256_blendv_ps(m, b, tb);
    const __m256 tc = takes8(c, m);
    m = _mm256_blendv_ps(m, c, tc);
    const __m256 td = takes8(d, m);
    /* argmax 3 if td, else 2 if tc, else 1 if tb, else 0 */
    const __m256 w3 = td;
    const __m256 w2 = _mm256_andnot_ps(td, tc);
    const __m256 w1 = _mm256_andnot_ps(_mm256_or_ps(tc, td), tb);
    const __m256 w0 = _mm256_andnot_ps(_mm256_or_ps(tb, _mm256_or_ps(tc, td)),
                                       _mm256_castsi256_ps(_mm256_set1_epi32(-1)));
    const __m256 g = _mm256_loadu_ps(dy);
    interleave_store(g0, _mm256_and_ps(w0, g), _mm256_and_ps(w1, g));
    interleave_store(g1, _mm256_and_ps(w2, g), _mm256_and_ps(w3, g));
}
#endif

void ssd_maxpool2_backward(int N, int C, int H, int W, const float *x, const float *dy,
                           float *dx)
{
    const int OH = H / 2, OW = W / 2;
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int nc = 0; nc < N * C; ++nc) {
        const float *xp = x + (size_t)nc * H * W;
        const float *dp = dy + (size_t)nc * OH * OW;
        float *gp = dx + (size_t)nc * H * W;
        /* Every element of a window is written (dy or 0), so dx is written exactly once;
         * only a dropped odd last column / row needs explicit zeros. */
        for (int oh = 0; oh < OH; ++oh) {
            const float *r0 = xp + (size_t)(2 * oh) * W, *r1 = r0 + W;
            float *g0 = gp + (size_t)(2 * oh) * W, *g1 = g0 + W;
            const float *dr = dp + (size_t)oh * OW;
            int ow = 0;
#ifdef SSD_POOL_AVX2
            for (; ow + 8 <= OW; ow += 8)
                backward_8_windows(r0 + 2 * ow, r1 + 2 * ow, dr + ow, g0 + 2 * ow, g1 + 2 * ow);
#endif
            for (; ow < OW; ++ow) {
                const float a = r0[2 * ow], b = r0[2 * ow + 1];
                const float c = r1[2 * ow], d = r1[2 * ow + 1];
                float m = a;
                int idx = 0;
                if (takes(b, m)) { m = b; idx = 1; }
                if (takes(c, m)) { m = c; idx = 2; }
                if (takes(d, m)) { m = d; idx = 3; }
                const float gv = dr[ow];
                g0[2 * ow] = idx == 0 ? gv : 0.0f;
                g0[2 * ow + 1] = idx == 1 ? gv : 0.0f;
                g1[2 * ow] = idx == 2 ? gv : 0.0f;
                g1[2 * ow + 1] = idx == 3 ? gv : 0.0f;
            }
            if (W & 1) g0[W - 1] = g1[W - 1] = 0.0f;
        }
        if (H & 1) memset(gp + (size_t)(H - 1) * W, 0, (size_t)W * sizeof(float));
    }
}

/* First max of p[0..n) (NaN wins, as above). */
static inline int argmax_n(const float *p, int n)
{
    float m = -INFINITY;
    int idx = 0;
    for (int i = 0; i < n; ++i) {
        if (takes(p[i], m)) {
            m = p[i];
            idx = i;
        }
    }
    return idx;
}

void ssd_global_maxpool_forward(int N, int C, int HW, const float *x, float *y)
{
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int nc = 0; nc < N * C; ++nc) {
        const float *p = x + (size_t)nc * HW;
        y[nc] = HW > 0 ? p[argmax_n(p, HW)] : -INFINITY;
    }
}

void ssd_global_maxpool_backward(int N, int C, int HW, const float *x, const float *dy,
                                 float *dx)
{
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int nc = 0; nc < N * C; ++nc) {
        const float *p = x + (size_t)nc * HW;
        float *g = dx + (size_t)nc * HW;
        memset(g, 0, (size_t)HW * sizeof(float));
        if (HW > 0) g[argmax_n(p, HW)] = dy[nc];
    }
}
