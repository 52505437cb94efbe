/*
 * pool.c — 2x2/stride-2 max pooling and global max pooling, NCHW float32.
 *
 * PyTorch semantics: output H/2 x W/2 (an odd last row/column is dropped); the window is
 * scanned in row-major order and an element replaces the current max if it is greater or
 * NaN (so the first max wins ties, and NaN propagates), starting from -inf at the first
 * element. Backward recomputes that argmax from x (no index tensor to store) and routes
 * dy there; everything else in dx is zero. Parallel over (n, c) planes: memory-bound,
 * independent outputs.
 */
#include "ssd_runtime.h"

#include <math.h>
#include <omp.h>
#include <string.h>

/* Index (0..3 as row-major in the window) of the max of a, b, c, d. */
static inline int argmax4(float a, float b, float c, float d)
{
    const float v[4] = {a, b, c, d};
    float m = -INFINITY;
    int idx = 0;
    for (int i = 0; i < 4; ++i) {
        if (v[i] > m || isnan(v[i])) {
            m = v[i];
            idx = i;
        }
    }
    return idx;
}

static inline float max4(float a, float b, float c, float d)
{
    const float v[4] = {a, b, c, d};
    return v[argmax4(a, b, c, d)];
}

void ssd_maxpool2_forward(int N, int C, int H, int W, const float *x, float *y)
{
    const int OH = H / 2, OW = W / 2;
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int nc = 0; nc < N * C; ++nc) {
        const float *xp = x + (size_t)nc * H * W;
        float *yp = y + (size_t)nc * OH * OW;
        for (int oh = 0; oh < OH; ++oh) {
            const float *r0 = xp + (size_t)(2 * oh) * W, *r1 = r0 + W;
            for (int ow = 0; ow < OW; ++ow)
                yp[oh * OW + ow] = max4(r0[2 * ow], r0[2 * ow + 1], r1[2 * ow], r1[2 * ow + 1]);
        }
    }
}

void ssd_maxpool2_backward(int N, int C, int H, int W, const float *x, const float *dy,
                           float *dx)
{
    const int OH = H / 2, OW = W / 2;
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int nc = 0; nc < N * C; ++nc) {
        const float *xp = x + (size_t)nc * H * W;
        const float *dp = dy + (size_t)nc * OH * OW;
        float *gp = dx + (size_t)nc * H * W;
        memset(gp, 0, (size_t)H * W * sizeof(float));
        for (int oh = 0; oh < OH; ++oh) {
            const float *r0 = xp + (size_t)(2 * oh) * W, *r1 = r0 + W;
            float *g0 = gp + (size_t)(2 * oh) * W, *g1 = g0 + W;
            for (int ow = 0; ow < OW; ++ow) {
                const int a = argmax4(r0[2 * ow], r0[2 * ow + 1], r1[2 * ow], r1[2 * ow + 1]);
                float *g = a < 2 ? g0 : g1;
                g[2 * ow + (a & 1)] = dp[oh * OW + ow];
            }
        }
    }
}

/* First max of p[0..n) (NaN wins, as above). */
static inline int argmax_n(const float *p, int n)
{
    float m = -INFINITY;
    int idx = 0;
    for (int i = 0; i < n; ++i) {
        if (p[i] > m || isnan(p[i])) {
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
