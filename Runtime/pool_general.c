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

/* Whether v replaces the running max m: greater, or NaN (a NaN, once taken, stays). */
static inline int replaces(float v, float m) { return v > m || v != v; }

/* The first max of a window (row-major; greater or NaN replaces), as an offset in the
 * plane; -1 for a window with no input element. Branch-free selects: which element wins
 * is data, not control flow. */
static inline long window_argmax(const float *p, int W, window_t r)
{
    if (r.h0 >= r.h1 || r.w0 >= r.w1) return -1;
    long idx = (long)r.h0 * W + r.w0;
    float m = p[idx];
    for (int h = r.h0; h < r.h1; ++h)
        for (int w = r.w0; w < r.w1; ++w) {
            const long i = (long)h * W + w;
            const float v = p[i];
            const int take = replaces(v, m);
            m = take ? v : m;
            idx = take ? i : idx;
        }
    return idx;
}

/* Input rows a max pool's forward keeps the column maxima of on its stack. */
#define POOL_ROW_MAX 4096

/* One plane's max pool: for each output row, the max of each input column over the
 * window's rows (contiguous, vectorisable), then of each window's columns. The value is
 * the window's max, or NaN if it holds one, in any order of taking the elements. */
static void maxpool_plane(const ssd_pool_t *g, const float *p, float *yp)
{
    float colmax[POOL_ROW_MAX];
    for (int oh = 0; oh < g->OH; ++oh) {
        const window_t rows = window(g, oh, 0);
        float *yr = yp + (size_t)oh * g->OW;
        if (rows.h0 >= rows.h1) {
            for (int ow = 0; ow < g->OW; ++ow) yr[ow] = -INFINITY;
            continue;
        }
        memcpy(colmax, p + (size_t)rows.h0 * g->W, (size_t)g->W * sizeof(float));
        for (int h = rows.h0 + 1; h < rows.h1; ++h) {
            const float *xr = p + (size_t)h * g->W;
            for (int w = 0; w < g->W; ++w) colmax[w] = replaces(xr[w], colmax[w]) ? xr[w] : colmax[w];
        }
        for (int ow = 0; ow < g->OW; ++ow) {
            const window_t r = window(g, oh, ow);
            float m = -INFINITY;
            if (r.w0 < r.w1) {
                m = colmax[r.w0];
                for (int w = r.w0 + 1; w < r.w1; ++w) m = replaces(colmax[w], m) ? colmax[w] : m;
            }
            yr[ow] = m;
        }
    }
}

void ssd_maxpool_forward(const ssd_pool_t *g, const float *x, float *y)
{
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int nc = 0; nc < g->N * g->C; ++nc) {
        const float *p = x + (size_t)nc * g->H * g->W;
        float *yp = y + (size_t)nc * g->OH * g->OW;
        if (g->W <= POOL_ROW_MAX) {
            maxpool_plane(g, p, yp);
            continue;
        }
        for (int oh = 0; oh < g->OH; ++oh)
            for (int ow = 0; ow < g->OW; ++ow) {
                const long i = window_argmax(p, g->W, window(g, oh, ow));
                yp[(size_t)oh * g->OW + ow] = i >= 0 ? p[i] : -INFINITY;
            }
    }
}

/* The argmax (window_argmax) of every window of output row oh, into idx. The columns
 * whose window lies wholly inside the row are a loop over ow without branches, which the
 * compiler vectorises; the others go through window_argmax. */
static void row_argmax(const ssd_pool_t *g, const float *p, int oh, long *idx)
{
    const window_t rows = window(g, oh, 0);
    int lo, hi; /* ow whose columns [ow*sw - pw, +kw) lie in [0, W) */
    ssd__valid_range(g->OW, g->sw, -g->pw, g->W - g->kw + 1, &lo, &hi);
    if (rows.h0 >= rows.h1) lo = hi = 0;
    for (int ow = 0; ow < lo; ++ow) idx[ow] = window_argmax(p, g->W, window(g, oh, ow));
    for (int ow = lo; ow < hi; ++ow) {
        const int w0 = ow * g->sw - g->pw;
        int best = rows.h0 * g->W + w0;
        float m = p[best];
        for (int h = rows.h0; h < rows.h1; ++h)
            for (int j = 0; j < g->kw; ++j) {
                const int i = h * g->W + w0 + j;
                const float v = p[i];
                const int take = replaces(v, m);
                m = take ? v : m;
                best = take ? i : best;
            }
        idx[ow] = best;
    }
    for (int ow = hi > lo ? hi : lo; ow < g->OW; ++ow) idx[ow] = window_argmax(p, g->W, window(g, oh, ow));
}

void ssd_maxpool_backward(const ssd_pool_t *g, const float *x, const float *dy, float *dx)
{
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int nc = 0; nc < g->N * g->C; ++nc) {
        const float *p = x + (size_t)nc * g->H * g->W;
        const float *dp = dy + (size_t)nc * g->OH * g->OW;
        float *gp = dx + (size_t)nc * g->H * g->W;
        long idx[POOL_ROW_MAX];
        const int rows_fit = g->OW <= POOL_ROW_MAX && (size_t)g->H * g->W < (size_t)1 << 31;
        memset(gp, 0, (size_t)g->H * g->W * sizeof(float));
        for (int oh = 0; oh < g->OH; ++oh) {
            const float *dr = dp + (size_t)oh * g->OW;
            if (rows_fit) {
                row_argmax(g, p, oh, idx);
                for (int ow = 0; ow < g->OW; ++ow)
                    if (idx[ow] >= 0) gp[idx[ow]] += dr[ow];
                continue;
            }
            for (int ow = 0; ow < g->OW; ++ow) {
                const long i = window_argmax(p, g->W, window(g, oh, ow));
                if (i >= 0) gp[i] += dr[ow];
            }
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
