/*
 * pool_general.c — max and average pooling with PyTorch's semantics (any kernel, stride,
 * padding, ceil_mode, count_include_pad) and global average pooling, NCHW float32.
 * The rules are stated in ssd_runtime.h. Parallel over (image, channel) planes: each
 * plane's outputs (and, backward, its input gradients, accumulated window by window in
 * row-major order) belong to one thread, so results do not depend on the thread count.
 */
#include "ops_internal.h"

#include <math.h>
#include <omp.h>
#include <string.h>

int ssd_pool_out_size(int in, int k, int stride, int pad, int ceil_mode)
{
    const int span = in + 2 * pad - k + (ceil_mode ? stride - 1 : 0);
    int out = ssd__floordiv(span, stride) + 1;
    if (ceil_mode && out > 0 && (out - 1) * stride >= in + pad) --out;
    return out < 0 ? 0 : out;
}

ssd_pool_t ssd_pool_geometry(int N, int C, int H, int W, int kh, int kw, int sh, int sw, int ph,
                             int pw, int ceil_mode)
{
    ssd_pool_t g = {N, C, H, W, kh, kw, sh, sw, ph, pw, ceil_mode, 0, 0};
    g.OH = ssd_pool_out_size(H, kh, sh, ph, ceil_mode);
    g.OW = ssd_pool_out_size(W, kw, sw, pw, ceil_mode);
    return g;
}

/* One window: rows [h0, h1) and columns [w0, w1) inside the input, and the average's
 * divisor for both count_include_pad settings. */
typedef struct {
    int h0, h1, w0, w1;
    int area_pad, area_in;
} window_t;

static window_t window(const ssd_pool_t *g, int oh, int ow)
{
    window_t r;
    int hs = oh * g->sh - g->ph, ws = ow * g->sw - g->pw;
    int he = hs + g->kh, we = ws + g->kw;
    if (he > g->H + g->ph) he = g->H + g->ph;
    if (we > g->W + g->pw) we = g->W + g->pw;
    r.area_pad = (he - hs) * (we - ws);
    r.h0 = hs < 0 ? 0 : hs;
    r.w0 = ws < 0 ? 0 : ws;
    r.h1 = he > g->H ? g->H : he;
    r.w1 = we > g->W ? g->W : we;
    r.area_in = (r.h1 - r.h0) * (r.w1 - r.w0);
    return r;
}

/* The first max of a window (greater or NaN replaces), as an offset in the plane; -1 for
 * a window with no input element. */
static long window_argmax(const float *p, int W, window_t r)
{
    long idx = -1;
    float m = -INFINITY;
    for (int h = r.h0; h < r.h1; ++h)
        for (int w = r.w0; w < r.w1; ++w) {
            const float v = p[(size_t)h * W + w];
            if (idx < 0 || v > m || v != v) {
                m = v;
                idx = (long)h * W + w;
            }
        }
    return idx;
}

void ssd_maxpool_forward(const ssd_pool_t *g, const float *x, float *y)
{
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int nc = 0; nc < g->N * g->C; ++nc) {
        const float *p = x + (size_t)nc * g->H * g->W;
        float *yp = y + (size_t)nc * g->OH * g->OW;
        for (int oh = 0; oh < g->OH; ++oh)
            for (int ow = 0; ow < g->OW; ++ow) {
                const long i = window_argmax(p, g->W, window(g, oh, ow));
                yp[(size_t)oh * g->OW + ow] = i >= 0 ? p[i] : -INFINITY;
            }
    }
}

void ssd_maxpool_backward(const ssd_pool_t *g, const float *x, const float *dy, float *dx)
{
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int nc = 0; nc < g->N * g->C; ++nc) {
        const float *p = x + (size_t)nc * g->H * g->W;
        const float *dp = dy + (size_t)nc * g->OH * g->OW;
        float *gp = dx + (size_t)nc * g->H * g->W;
        memset(gp, 0, (size_t)g->H * g->W * sizeof(float));
        for (int oh = 0; oh < g->OH; ++oh)
            for (int ow = 0; ow < g->OW; ++ow) {
                const long i = window_argmax(p, g->W, window(g, oh, ow));
                if (i >= 0) gp[i] += dp[(size_t)oh * g->OW + ow];
            }
    }
}

static int divisor(window_t r, int count_include_pad)
{
    return count_include_pad ? r.area_pad : r.area_in;
}

void ssd_avgpool_forward(const ssd_pool_t *g, int count_include_pad, const float *x, float *y)
{
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int nc = 0; nc < g->N * g->C; ++nc) {
        const float *p = x + (size_t)nc * g->H * g->W;
        float *yp = y + (size_t)nc * g->OH * g->OW;
        for (int oh = 0; oh < g->OH; ++oh)
            for (int ow = 0; ow < g->OW; ++ow) {
                const window_t r = window(g, oh, ow);
                float s = 0.0f;
                for (int h = r.h0; h < r.h1; ++h)
                    for (int w = r.w0; w < r.w1; ++w) s += p[(size_t)h * g->W + w];
                const int d = divisor(r, count_include_pad);
                yp[(size_t)oh * g->OW + ow] = d > 0 ? s / (float)d : 0.0f;
            }
    }
}

void ssd_avgpool_backward(const ssd_pool_t *g, int count_include_pad, const float *dy,
                          float *dx)
{
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int nc = 0; nc < g->N * g->C; ++nc) {
        const float *dp = dy + (size_t)nc * g->OH * g->OW;
        float *gp = dx + (size_t)nc * g->H * g->W;
        memset(gp, 0, (size_t)g->H * g->W * sizeof(float));
        for (int oh = 0; oh < g->OH; ++oh)
            for (int ow = 0; ow < g->OW; ++ow) {
                const window_t r = window(g, oh, ow);
                const int d = divisor(r, count_include_pad);
                if (d <= 0) continue;
                const float v = dp[(size_t)oh * g->OW + ow] / (float)d;
                for (int h = r.h0; h < r.h1; ++h)
                    for (int w = r.w0; w < r.w1; ++w) gp[(size_t)h * g->W + w] += v;
            }
    }
}

void ssd_global_avgpool_forward(int N, int C, int HW, const float *x, float *y)
{
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int nc = 0; nc < N * C; ++nc) {
        const float *p = x + (size_t)nc * HW;
        double s = 0.0;
        for (int i = 0; i < HW; ++i) s += p[i];
        y[nc] = HW > 0 ? (float)(s / HW) : 0.0f;
    }
}

void ssd_global_avgpool_backward(int N, int C, int HW, const float *dy, float *dx)
{
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int nc = 0; nc < N * C; ++nc) {
        const float v = dy[nc] / (float)HW;
        float *g = dx + (size_t)nc * HW;
        for (int i = 0; i < HW; ++i) g[i] = v;
    }
}
