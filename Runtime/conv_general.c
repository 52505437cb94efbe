/*
 * conv_general.c — PyTorch's Conv2d in full: any kernel kh x kw, stride, padding, dilation
 * and groups, NCHW float32 (see ssd_runtime.h, "the SSD-family op vocabulary").
 *
 * Per image and group: im2col of the group's input channels into scratch, then one
 * ssd_sgemm (forward: W_g * col; backward-data: W_g^T * dy_g then col2im; backward-weight:
 * dy_g * col^T accumulated over the images in order). A 1x1 conv with stride 1 and no
 * padding is already a matrix (Cg x H*W), so it skips im2col and needs no scratch.
 * ssd_sgemm is bit-identical for any thread count and the other loops split independent
 * outputs (im2col rows, col2im input channels, bias-gradient channels), so the results
 * are too. The depthwise case has its own direct kernel (dwconv.c); the compiler picks.
 * Convs with few input channels (a stem) run their forward and weight gradient directly
 * (conv_direct.c); this file picks, from the geometry alone.
 */
#include "ops_internal.h"

#include <omp.h>
#include <string.h>

ssd_convg_t ssd_convg_geometry(int N, int C, int H, int W, int O, int kh, int kw, int sh,
                               int sw, int ph, int pw, int dh, int dw, int groups)
{
    ssd_convg_t g = {N, C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw, groups, 0, 0};
    g.OH = ssd__floordiv(H + 2 * ph - dh * (kh - 1) - 1, sh) + 1;
    g.OW = ssd__floordiv(W + 2 * pw - dw * (kw - 1) - 1, sw) + 1;
    if (g.OH < 0) g.OH = 0;
    if (g.OW < 0) g.OW = 0;
    return g;
}

/* A conv whose input already is its im2col matrix. */
static int pointwise(const ssd_convg_t *g)
{
    return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0;
}

/* Rows of the im2col matrix of one group: (C/groups) * kh * kw. */
static int group_taps(const ssd_convg_t *g) { return g->C / g->groups * g->kh * g->kw; }

size_t ssd_convg_scratch_floats(const ssd_convg_t *g)
{
    if (pointwise(g)) return 0;
    const size_t col = (size_t)group_taps(g) * g->OH * g->OW;
    if (!ssd__convd_applies(g)) return col;
    const size_t direct = ssd__convd_scratch_floats(g);
    return direct > col ? direct : col;
}

/* col (Kg x OH*OW) = im2col of one group's input xg (Cg x H x W). */
static void im2col(const ssd_convg_t *g, const float *xg, float *col)
{
    const int kk = g->kh * g->kw, OW = g->OW, OHOW = g->OH * g->OW;
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int t = 0; t < group_taps(g); ++t) {
        const int c = t / kk, i = t % kk / g->kw, j = t % g->kw;
        const int off = j * g->dw - g->pw;
        int lo, hi;
        ssd__valid_range(OW, g->sw, off, g->W, &lo, &hi);
        float *dst = col + (size_t)t * OHOW;
        for (int oh = 0; oh < g->OH; ++oh) {
            const int ih = oh * g->sh + i * g->dh - g->ph;
            float *d = dst + (size_t)oh * OW;
            if (ih < 0 || ih >= g->H || lo >= hi) {
                memset(d, 0, (size_t)OW * sizeof(float));
                continue;
            }
            const float *xr = xg + ((size_t)c * g->H + ih) * g->W;
            for (int ow = 0; ow < lo; ++ow) d[ow] = 0.0f;
            for (int ow = lo; ow < hi; ++ow) d[ow] = xr[ow * g->sw + off];
            for (int ow = hi; ow < OW; ++ow) d[ow] = 0.0f;
        }
    }
}

/* dxg (Cg x H x W, overwritten) = col2im(col); each thread owns whole input channels and
 * adds the taps in a fixed order. */
static void col2im(const ssd_convg_t *g, const float *col, float *dxg)
{
    const int kk = g->kh * g->kw, OW = g->OW, OHOW = g->OH * g->OW;
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int c = 0; c < g->C / g->groups; ++c) {
        float *d = dxg + (size_t)c * g->H * g->W;
        memset(d, 0, (size_t)g->H * g->W * sizeof(float));
        for (int ij = 0; ij < kk; ++ij) {
            const int i = ij / g->kw, j = ij % g->kw, off = j * g->dw - g->pw;
            int lo, hi;
            ssd__valid_range(OW, g->sw, off, g->W, &lo, &hi);
            const float *s = col + ((size_t)c * kk + ij) * OHOW;
            for (int oh = 0; oh < g->OH; ++oh) {
                const int ih = oh * g->sh + i * g->dh - g->ph;
                if (ih < 0 || ih >= g->H) continue;
                float *dr = d + (size_t)ih * g->W;
                const float *sr = s + (size_t)oh * OW;
                for (int ow = lo; ow < hi; ++ow) dr[ow * g->sw + off] += sr[ow];
            }
        }
    }
}

/* Bias and activation over one image's output (O x OHOW). */
static void epilogue(const ssd_convg_t *g, const float *b, int act, float *yn)
{
    if (!b && act == SSD_ACT_NONE) return;
    const int OHOW = g->OH * g->OW;
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int o = 0; o < g->O; ++o) {
        float *yo = yn + (size_t)o * OHOW;
        const float bv = b ? b[o] : 0.0f;
        for (int q = 0; q < OHOW; ++q) yo[q] = ssd__act(yo[q] + bv, act);
    }
}

void ssd_convg_forward(const ssd_convg_t *g, const float *x, const float *w, const float *b,
                       float *y, int act, float *scratch)
{
    const int G = g->groups, Cg = g->C / G, Og = g->O / G, Kg = group_taps(g);
    const int OHOW = g->OH * g->OW, HW = g->H * g->W;
    if (OHOW <= 0 || g->O <= 0) return;
    if (ssd__convd_applies(g)) {
        ssd__convd_forward(g, x, w, b, y, act, scratch);
        return;
    }
    for (int n = 0; n < g->N; ++n) {
        float *yn = y + (size_t)n * g->O * OHOW;
        for (int gi = 0; gi < G; ++gi) {
            const float *xg = x + ((size_t)n * g->C + (size_t)gi * Cg) * HW;
            float *yg = yn + (size_t)gi * Og * OHOW;
            if (Kg <= 0) {
                memset(yg, 0, (size_t)Og * OHOW * sizeof(float));
                continue;
            }
            const float *col = xg;
            if (!pointwise(g)) {
                im2col(g, xg, scratch);
                col = scratch;
            }
            ssd_sgemm(0, 0, Og, OHOW, Kg, 1.0f, w + (size_t)gi * Og * Kg, Kg, col, OHOW, 0.0f,
                      yg, OHOW);
        }
        epilogue(g, b, act, yn);
    }
}

void ssd_convg_backward_data(const ssd_convg_t *g, const float *dy, const float *w, float *dx,
                             float *scratch)
{
    const int G = g->groups, Cg = g->C / G, Og = g->O / G, Kg = group_taps(g);
    const int OHOW = g->OH * g->OW, HW = g->H * g->W;
    if (Kg <= 0 || HW <= 0) return;
    for (int n = 0; n < g->N; ++n) {
        for (int gi = 0; gi < G; ++gi) {
            float *dxg = dx + ((size_t)n * g->C + (size_t)gi * Cg) * HW;
            if (OHOW <= 0 || Og <= 0) {
                memset(dxg, 0, (size_t)Cg * HW * sizeof(float));
                continue;
            }
            const float *dyg = dy + ((size_t)n * g->O + (size_t)gi * Og) * OHOW;
            const float *wg = w + (size_t)gi * Og * Kg;
            if (pointwise(g)) {
                ssd_sgemm(1, 0, Kg, OHOW, Og, 1.0f, wg, Kg, dyg, OHOW, 0.0f, dxg, OHOW);
            } else {
                ssd_sgemm(1, 0, Kg, OHOW, Og, 1.0f, wg, Kg, dyg, OHOW, 0.0f, scratch, OHOW);
                col2im(g, scratch, dxg);
            }
        }
    }
}

/* db[o] = sum over images (in order) of the sum over pixels of dy, in double. */
static void bias_grad(const ssd_convg_t *g, const float *dy, float *db)
{
    const int OHOW = g->OH * g->OW;
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int o = 0; o < g->O; ++o) {
        double s = 0.0;
        for (int n = 0; n < g->N; ++n) {
            const float *p = dy + ((size_t)n * g->O + o) * OHOW;
            for (int q = 0; q < OHOW; ++q) s += p[q];
        }
        db[o] = (float)s;
    }
}

void ssd_convg_backward_weight(const ssd_convg_t *g, const float *x, const float *dy,
                               float *dw, float *db, float *scratch)
{
    const int G = g->groups, Cg = g->C / G, Og = g->O / G, Kg = group_taps(g);
    const int OHOW = g->OH * g->OW, HW = g->H * g->W;
    if (db) bias_grad(g, dy, db);
    if (Kg <= 0 || g->O <= 0) return;
    if (g->N <= 0 || OHOW <= 0) {
        memset(dw, 0, (size_t)g->O * Kg * sizeof(float));
        return;
    }
    if (ssd__convd_applies(g)) {
        ssd__convd_backward_weight(g, x, dy, dw, scratch);
        return;
    }
    for (int n = 0; n < g->N; ++n) {
        for (int gi = 0; gi < G; ++gi) {
            const float *xg = x + ((size_t)n * g->C + (size_t)gi * Cg) * HW;
            const float *dyg = dy + ((size_t)n * g->O + (size_t)gi * Og) * OHOW;
            const float *col = xg;
            if (!pointwise(g)) {
                im2col(g, xg, scratch);
                col = scratch;
            }
            ssd_sgemm(0, 1, Og, Kg, OHOW, 1.0f, dyg, OHOW, col, OHOW, n == 0 ? 0.0f : 1.0f,
                      dw + (size_t)gi * Og * Kg, Kg);
        }
    }
}
