/*
 * dwconv.c — depthwise convolution (groups == C == O) by a direct kernel, NCHW float32.
 *
 * A depthwise 3x3 does 9 multiply-adds per output element, so it is bound by memory, not
 * arithmetic: im2col + GEMM would multiply the traffic by 9 for nothing. Here each output
 * row is built in place from whole input rows: for each tap (i, j) whose input row exists,
 * y_row[lo:hi] += w[i][j] * x_row[lo*s + off : ...] over the columns [lo, hi) where the tap
 * lands inside the image (no bounds checks in the inner loop, which clang vectorises; rows
 * stay in L1). Backward-data is the same loop with the roles of x and y exchanged (a
 * scatter-add into a dx row); backward-weight takes dot products of dy rows with x rows.
 *
 * Parallel over (image, channel) planes (forward, backward-data) or channels (weight and
 * bias gradients, each summed over images and rows in order, in double): results do not
 * depend on the thread count.
 */
#include "ops_internal.h"

#include <omp.h>
#include <string.h>

int ssd_dwconv_applies(const ssd_convg_t *g)
{
    return g->groups == g->C && g->O == g->C && g->groups >= 1;
}

void ssd_dwconv_forward(const ssd_convg_t *g, const float *x, const float *w, const float *b,
                        float *y, int act)
{
    const int C = g->C, H = g->H, W = g->W, OH = g->OH, OW = g->OW, kh = g->kh, kw = g->kw;
    const int sw = g->sw;
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int nc = 0; nc < g->N * C; ++nc) {
        const int c = nc % C;
        const float *xp = x + (size_t)nc * H * W;
        const float *wc = w + (size_t)c * kh * kw;
        float *yp = y + (size_t)nc * OH * OW;
        const float bv = b ? b[c] : 0.0f;
        for (int oh = 0; oh < OH; ++oh) {
            float *restrict yr = yp + (size_t)oh * OW;
            memset(yr, 0, (size_t)OW * sizeof(float));
            for (int i = 0; i < kh; ++i) {
                const int ih = oh * g->sh + i * g->dh - g->ph;
                if (ih < 0 || ih >= H) continue;
                for (int j = 0; j < kw; ++j) {
                    const int off = j * g->dw - g->pw;
                    int lo, hi;
                    ssd__valid_range(OW, sw, off, W, &lo, &hi);
                    const float *restrict xr = xp + (size_t)ih * W;
                    const float wv = wc[i * kw + j];
                    if (sw == 1) {
                        for (int ow = lo; ow < hi; ++ow) yr[ow] += wv * xr[ow + off];
                    } else {
                        for (int ow = lo; ow < hi; ++ow) yr[ow] += wv * xr[ow * sw + off];
                    }
                }
            }
            for (int ow = 0; ow < OW; ++ow) yr[ow] = ssd__act(yr[ow] + bv, act);
        }
    }
}

void ssd_dwconv_backward_data(const ssd_convg_t *g, const float *dy, const float *w, float *dx)
{
    const int C = g->C, H = g->H, W = g->W, OH = g->OH, OW = g->OW, kh = g->kh, kw = g->kw;
    const int sw = g->sw;
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int nc = 0; nc < g->N * C; ++nc) {
        const int c = nc % C;
        const float *dp = dy + (size_t)nc * OH * OW;
        const float *wc = w + (size_t)c * kh * kw;
        float *gp = dx + (size_t)nc * H * W;
        memset(gp, 0, (size_t)H * W * sizeof(float));
        for (int oh = 0; oh < OH; ++oh) {
            const float *restrict dr = dp + (size_t)oh * OW;
            for (int i = 0; i < kh; ++i) {
                const int ih = oh * g->sh + i * g->dh - g->ph;
                if (ih < 0 || ih >= H) continue;
                for (int j = 0; j < kw; ++j) {
                    const int off = j * g->dw - g->pw;
                    int lo, hi;
                    ssd__valid_range(OW, sw, off, W, &lo, &hi);
                    float *restrict gr = gp + (size_t)ih * W;
                    const float wv = wc[i * kw + j];
                    if (sw == 1) {
                        for (int ow = lo; ow < hi; ++ow) gr[ow + off] += wv * dr[ow];
                    } else {
                        for (int ow = lo; ow < hi; ++ow) gr[ow * sw + off] += wv * dr[ow];
                    }
                }
            }
        }
    }
}

/* sum over ow in [lo, hi) of d[ow] * x[ow*s + off], one row, in 8 lanes (ow mod 8) added
 * in a fixed order: vectorisable without reassociation, same result on every run. */
static float row_dot(const float *d, const float *x, int s, int off, int lo, int hi)
{
    float l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int ow = lo;
    for (; ow + 8 <= hi; ow += 8)
        for (int k = 0; k < 8; ++k) l[k] += d[ow + k] * x[(ow + k) * s + off];
    for (; ow < hi; ++ow) l[ow & 7] += d[ow] * x[ow * s + off];
    return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

void ssd_dwconv_backward_weight(const ssd_convg_t *g, const float *x, const float *dy,
                                float *dw, float *db)
{
    const int C = g->C, H = g->H, W = g->W, OH = g->OH, OW = g->OW, kh = g->kh, kw = g->kw;
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int c = 0; c < C; ++c) {
        for (int t = 0; t < kh * kw; ++t) {
            const int i = t / kw, j = t % kw, off = j * g->dw - g->pw;
            int lo, hi;
            ssd__valid_range(OW, g->sw, off, W, &lo, &hi);
            double acc = 0.0;
            for (int n = 0; n < g->N; ++n) {
                const float *xp = x + ((size_t)n * C + c) * H * W;
                const float *dp = dy + ((size_t)n * C + c) * OH * OW;
                for (int oh = 0; oh < OH; ++oh) {
                    const int ih = oh * g->sh + i * g->dh - g->ph;
                    if (ih < 0 || ih >= H) continue;
                    acc += row_dot(dp + (size_t)oh * OW, xp + (size_t)ih * W, g->sw, off, lo, hi);
                }
            }
            dw[(size_t)c * kh * kw + t] = (float)acc;
        }
        if (db) {
            double s = 0.0;
            for (int n = 0; n < g->N; ++n) {
                const float *dp = dy + ((size_t)n * C + c) * OH * OW;
                for (int q = 0; q < OH * OW; ++q) s += dp[q];
            }
            db[c] = (float)s;
        }
    }
}
