/*
 * test_ops.c — checks the SSD-family op kernels (conv_general.c, dwconv.c, pool_general.c,
 * activation.c, resize.c, l2norm.c, standardize.c, eltwise.c) against slow references written plainly here
 * in double precision, the backward kernels also against central finite differences of those
 * references (small cases), the kinks of the activations against PyTorch's values, and the
 * reductions for bit-identical results at 1, 2 and 3 threads.
 *
 *   ./test_ops    one line per check, then "N passed, M failed" (exit status 1 on failure)
 *
 * Float results are compared with the double reference relative to the natural scale of
 * float rounding for each output: the sum of the absolute values of its terms where the
 * output is a sum, else |ref| with a small floor.
 */
#include "ops_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- bookkeeping ------------------------------------------------------------------------ */

#define TEST_RNG_SEED 0x2545F4914F6CDD1Dull
#include "test_support.h"

static void *xalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) { fprintf(stderr, "out of memory\n"); exit(2); }
    return p;
}

static float *falloc(size_t n) { return xalloc(n * sizeof(float)); }

static double *dzeros(size_t n)
{
    double *p = xalloc(n * sizeof(double));
    for (size_t i = 0; i < n; ++i) p[i] = 0.0;
    return p;
}

/* n floats uniform in [-a, a) */
static float *frandom(size_t n, float a)
{
    float *p = falloc(n);
    for (size_t i = 0; i < n; ++i) p[i] = a * frand();
    return p;
}

static double *to_double(const float *p, size_t n)
{
    double *d = xalloc(n * sizeof(double));
    for (size_t i = 0; i < n; ++i) d[i] = p[i];
    return d;
}

/* Output buffers start as NaN: an element the kernel forgets shows up. */
static float *fnan(size_t n)
{
    float *p = falloc(n);
    for (size_t i = 0; i < n; ++i) p[i] = NAN;
    return p;
}

/* max over i of |got - ref| / (scale_i + floor), scale_i = scale[i] or |ref[i]| (scale NULL) */
static double err(const float *got, const double *ref, const double *scale, size_t n,
                  double floor_)
{
    double worst = 0.0;
    for (size_t i = 0; i < n; ++i) {
        const double s = scale ? scale[i] : fabs(ref[i]);
        const double e = fabs((double)got[i] - ref[i]) / (s + floor_);
        if (!(e <= worst)) worst = e; /* NaN fails */
    }
    return worst;
}

static int same_bits(const float *a, const float *b, size_t n)
{
    return memcmp(a, b, n * sizeof(float)) == 0;
}

/* Finite differences: g[i] = (L(p + h e_i) - L(p - h e_i)) / 2h for the n entries of p. */
typedef double (*loss_fn)(void *ctx);

static void fd_grad(loss_fn L, void *ctx, double *p, size_t n, double h, double *g)
{
    for (size_t i = 0; i < n; ++i) {
        const double v = p[i];
        p[i] = v + h;
        const double lp = L(ctx);
        p[i] = v - h;
        const double lm = L(ctx);
        p[i] = v;
        g[i] = (lp - lm) / (2.0 * h);
    }
}

/* sum r[i] * y[i]: the scalar whose gradient with respect to y is r */
static double dot(const double *r, const double *y, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; ++i) s += r[i] * y[i];
    return s;
}

static double act_ref(double v, int act)
{
    if (act == SSD_ACT_RELU) return v < 0 ? 0 : v;
    if (act == SSD_ACT_RELU6) return v < 0 ? 0 : (v > 6 ? 6 : v);
    return v;
}

/* ---- convolution references -------------------------------------------------------------- */

static size_t conv_xn(const ssd_convg_t *g) { return (size_t)g->N * g->C * g->H * g->W; }
static size_t conv_yn(const ssd_convg_t *g) { return (size_t)g->N * g->O * g->OH * g->OW; }
static size_t conv_wn(const ssd_convg_t *g)
{
    return (size_t)g->O * (g->C / g->groups) * g->kh * g->kw;
}

/* Calls f(n, o, oh, ow, xi, wi) for every term x[xi] * w[wi] of every output, in plain loops. */
#define FOR_CONV_TERMS(g, BODY)                                                                \
    for (int n = 0; n < (g)->N; ++n)                                                           \
        for (int o = 0; o < (g)->O; ++o)                                                       \
            for (int oh = 0; oh < (g)->OH; ++oh)                                               \
                for (int ow = 0; ow < (g)->OW; ++ow) {                                         \
                    const int Cg = (g)->C / (g)->groups, Og = (g)->O / (g)->groups;            \
                    const size_t yi = (((size_t)n * (g)->O + o) * (g)->OH + oh) * (g)->OW + ow; \
                    for (int cl = 0; cl < Cg; ++cl)                                            \
                        for (int i = 0; i < (g)->kh; ++i)                                      \
                            for (int j = 0; j < (g)->kw; ++j) {                                \
                                const int ih = oh * (g)->sh + i * (g)->dh - (g)->ph;           \
                                const int iw = ow * (g)->sw + j * (g)->dw - (g)->pw;           \
                                if (ih < 0 || ih >= (g)->H || iw < 0 || iw >= (g)->W) continue; \
                                const int c = o / Og * Cg + cl;                                \
                                const size_t xi =                                              \
                                    (((size_t)n * (g)->C + c) * (g)->H + ih) * (g)->W + iw;    \
                                const size_t wi = (((size_t)o * Cg + cl) * (g)->kh + i) * (g)->kw + j; \
                                BODY                                                           \
                            }                                                                  \
                    (void)yi;                                                                  \
                }

/* y = act(conv(x, w) + b) and the sum of |terms| per output (scale may be NULL). */
static void ref_conv(const ssd_convg_t *g, const double *x, const double *w, const double *b,
                     int act, double *y, double *scale)
{
    const size_t ny = conv_yn(g);
    for (size_t i = 0; i < ny; ++i) {
        const int o = (int)(i / ((size_t)g->OH * g->OW) % g->O);
        y[i] = b ? b[o] : 0.0;
        if (scale) scale[i] = fabs(y[i]);
    }
    FOR_CONV_TERMS(g, {
        y[yi] += x[xi] * w[wi];
        if (scale) scale[yi] += fabs(x[xi] * w[wi]);
    })
    for (size_t i = 0; i < ny; ++i) y[i] = act_ref(y[i], act);
}

/* dx, dw, db of sum(dy * conv(x, w) + b) and their scales */
static void ref_conv_backward(const ssd_convg_t *g, const double *x, const double *w,
                              const double *dy, double *dx, double *dxs, double *dw, double *dws,
                              double *db, double *dbs)
{
    FOR_CONV_TERMS(g, {
        dx[xi] += w[wi] * dy[yi];
        dxs[xi] += fabs(w[wi] * dy[yi]);
        dw[wi] += x[xi] * dy[yi];
        dws[wi] += fabs(x[xi] * dy[yi]);
    })
    for (size_t i = 0; i < conv_yn(g); ++i) {
        const int o = (int)(i / ((size_t)g->OH * g->OW) % g->O);
        db[o] += dy[i];
        dbs[o] += fabs(dy[i]);
    }
}

typedef struct {
    const ssd_convg_t *g;
    double *x, *w, *b, *r, *y;
} conv_ctx;

static double conv_loss(void *p)
{
    conv_ctx *c = p;
    ref_conv(c->g, c->x, c->w, c->b, SSD_ACT_NONE, c->y, NULL);
    return dot(c->r, c->y, conv_yn(c->g));
}

typedef struct {
    int N, C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw, groups, bias, act;
} conv_case;

static ssd_convg_t geometry_of(conv_case k)
{
    return ssd_convg_geometry(k.N, k.C, k.H, k.W, k.O, k.kh, k.kw, k.sh, k.sw, k.ph, k.pw, k.dh,
                              k.dw, k.groups);
}

/* Runs the general kernels (depthwise: the direct ones too) on one case against the
 * reference; with fd != 0 also against finite differences. */
static void test_conv_case(conv_case k, int fd)
{
    const ssd_convg_t g = geometry_of(k);
    const size_t nx = conv_xn(&g), ny = conv_yn(&g), nw = conv_wn(&g);
    float *x = frandom(nx, 1.0f), *w = frandom(nw, 1.0f), *b = k.bias ? frandom(g.O, 1.0f) : NULL;
    float *dy = frandom(ny, 1.0f);
    double *xd = to_double(x, nx), *wd = to_double(w, nw), *bd = b ? to_double(b, g.O) : NULL;
    double *dyd = to_double(dy, ny);
    double *yr = dzeros(ny), *ys = dzeros(ny);
    ref_conv(&g, xd, wd, bd, k.act, yr, ys);
    double *dxr = dzeros(nx), *dxs = dzeros(nx), *dwr = dzeros(nw), *dws = dzeros(nw);
    double *dbr = dzeros(g.O), *dbs = dzeros(g.O);
    ref_conv_backward(&g, xd, wd, dyd, dxr, dxs, dwr, dws, dbr, dbs);

    char name[160];
    snprintf(name, sizeof name, "N%d C%d %dx%d O%d k%dx%d s%d,%d p%d,%d d%d,%d g%d%s act%d -> %dx%d",
             k.N, k.C, k.H, k.W, k.O, k.kh, k.kw, k.sh, k.sw, k.ph, k.pw, k.dh, k.dw, k.groups,
             k.bias ? " bias" : "", k.act, g.OH, g.OW);

    const size_t ns = ssd_convg_scratch_floats(&g);
    float *scratch = fnan(ns);
    float *y = fnan(ny), *dx = fnan(nx), *dw = fnan(nw), *db = fnan(g.O);
    ssd_convg_forward(&g, x, w, b, y, k.act, scratch);
    report(err(y, yr, ys, ny, 1e-6) < 2e-5, "convg forward %s: err %.2e", name,
           err(y, yr, ys, ny, 1e-6));
    ssd_convg_backward_data(&g, dy, w, dx, scratch);
    report(err(dx, dxr, dxs, nx, 1e-6) < 2e-5, "convg backward-data %s: err %.2e", name,
           err(dx, dxr, dxs, nx, 1e-6));
    ssd_convg_backward_weight(&g, x, dy, dw, db, scratch);
    report(err(dw, dwr, dws, nw, 1e-6) < 2e-5 && err(db, dbr, dbs, g.O, 1e-6) < 2e-5,
           "convg backward-weight %s: err dw %.2e db %.2e", name, err(dw, dwr, dws, nw, 1e-6),
           err(db, dbr, dbs, g.O, 1e-6));

    if (ssd_dwconv_applies(&g)) {
        float *y2 = fnan(ny), *dx2 = fnan(nx), *dw2 = fnan(nw), *db2 = fnan(g.O);
        ssd_dwconv_forward(&g, x, w, b, y2, k.act);
        report(err(y2, yr, ys, ny, 1e-6) < 2e-5, "dwconv forward %s: err %.2e", name,
               err(y2, yr, ys, ny, 1e-6));
        ssd_dwconv_backward_data(&g, dy, w, dx2);
        report(err(dx2, dxr, dxs, nx, 1e-6) < 2e-5, "dwconv backward-data %s: err %.2e", name,
               err(dx2, dxr, dxs, nx, 1e-6));
        ssd_dwconv_backward_weight(&g, x, dy, dw2, db2);
        report(err(dw2, dwr, dws, nw, 1e-6) < 2e-5 && err(db2, dbr, dbs, g.O, 1e-6) < 2e-5,
               "dwconv backward-weight %s: err dw %.2e db %.2e", name,
               err(dw2, dwr, dws, nw, 1e-6), err(db2, dbr, dbs, g.O, 1e-6));
        /* the weight gradient is a reduction over the batch: same bits at 1 and 3 threads */
        const int before = ssd_get_num_threads();
        float *dw3 = fnan(nw), *db3 = fnan(g.O);
        ssd_set_num_threads(1);
        ssd_dwconv_backward_weight(&g, x, dy, dw2, db2);
        ssd_set_num_threads(3);
        ssd_dwconv_backward_weight(&g, x, dy, dw3, db3);
        ssd_set_num_threads(before);
        report(same_bits(dw2, dw3, nw) && same_bits(db2, db3, g.O),
               "dwconv backward-weight %s: same bits at 1 and 3 threads", name);
        free(dw3); free(db3);
        free(y2); free(dx2); free(dw2); free(db2);
    }

    if (fd) {
        /* the gradients of sum(r * conv(x, w) + b) by finite differences of the reference */
        double *r = dyd, *yy = dzeros(ny);
        conv_ctx c = {&g, xd, wd, bd ? bd : dzeros(g.O), r, yy};
        double *gx = dzeros(nx), *gw = dzeros(nw), *gb = dzeros(g.O);
        fd_grad(conv_loss, &c, xd, nx, 1e-3, gx);
        fd_grad(conv_loss, &c, wd, nw, 1e-3, gw);
        fd_grad(conv_loss, &c, c.b, g.O, 1e-3, gb);
        report(err(dx, gx, NULL, nx, 1e-2) < 1e-4 && err(dw, gw, NULL, nw, 1e-2) < 1e-4 &&
                   err(db, gb, NULL, g.O, 1e-2) < 1e-4,
               "convg backward %s vs finite differences: err dx %.2e dw %.2e db %.2e", name,
               err(dx, gx, NULL, nx, 1e-2), err(dw, gw, NULL, nw, 1e-2),
               err(db, gb, NULL, g.O, 1e-2));
        if (!bd) free(c.b);
        free(yy); free(gx); free(gw); free(gb);
    }

    /* the weight gradient sums over the images: same bits at 1 and 3 threads */
    {
        const int before = ssd_get_num_threads();
        float *dw1 = fnan(nw), *db1 = fnan(g.O);
        ssd_set_num_threads(1);
        ssd_convg_backward_weight(&g, x, dy, dw1, db1, scratch);
        ssd_set_num_threads(3);
        ssd_convg_backward_weight(&g, x, dy, dw, db, scratch);
        ssd_set_num_threads(before);
        report(same_bits(dw, dw1, nw) && same_bits(db, db1, g.O),
               "convg backward-weight %s: same bits at 1 and 3 threads", name);
        free(dw1); free(db1);
    }

    free(x); free(w); free(b); free(dy); free(xd); free(wd); free(bd); free(dyd);
    free(yr); free(ys); free(dxr); free(dxs); free(dwr); free(dws); free(dbr); free(dbs);
    free(scratch); free(y); free(dx); free(dw); free(db);
}

static void test_conv(void)
{
    static const conv_case cases[] = {
        /* N  C   H   W   O  kh kw sh sw ph pw dh dw  G bias act */
        {3, 4, 7, 9, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, SSD_ACT_NONE},
        {2, 6, 11, 8, 4, 3, 2, 2, 2, 1, 0, 1, 1, 2, 1, SSD_ACT_RELU},   /* groups 2, 3x2 */
        {3, 5, 9, 10, 7, 3, 3, 1, 1, 2, 2, 2, 2, 1, 0, SSD_ACT_NONE},   /* dilation 2 */
        {2, 4, 9, 9, 4, 3, 3, 1, 1, 6, 6, 6, 6, 1, 1, SSD_ACT_RELU},    /* SSD300 conv6 */
        {3, 8, 5, 6, 10, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, SSD_ACT_RELU6},  /* pointwise */
        {2, 8, 6, 5, 4, 1, 1, 2, 2, 0, 0, 1, 1, 2, 0, SSD_ACT_NONE},    /* 1x1, stride 2 */
        {1, 3, 13, 11, 5, 5, 3, 3, 2, 2, 1, 1, 2, 1, 1, SSD_ACT_NONE},  /* odd everything */
        {2, 6, 4, 3, 6, 3, 3, 2, 1, 1, 1, 1, 1, 3, 1, SSD_ACT_NONE},    /* groups 3 */
        /* depthwise (groups == C == O): the direct kernel as well */
        {3, 5, 9, 11, 5, 3, 3, 1, 1, 1, 1, 1, 1, 5, 1, SSD_ACT_RELU6},
        {2, 4, 10, 7, 4, 3, 3, 2, 2, 1, 1, 1, 1, 4, 1, SSD_ACT_RELU},
        {3, 3, 8, 9, 3, 3, 3, 1, 1, 2, 2, 2, 2, 3, 0, SSD_ACT_NONE},     /* dilation 2 */
        {2, 6, 7, 8, 6, 3, 3, 2, 2, 0, 0, 1, 1, 6, 1, SSD_ACT_NONE},     /* no padding */
        {1, 4, 5, 5, 4, 3, 3, 2, 2, 2, 2, 2, 2, 4, 1, SSD_ACT_RELU6},    /* s2, d2 */
        {2, 3, 1, 1, 3, 3, 3, 1, 1, 1, 1, 1, 1, 3, 1, SSD_ACT_NONE},     /* 1x1 map */
        {2, 4, 9, 6, 4, 5, 5, 1, 1, 2, 2, 1, 1, 4, 0, SSD_ACT_NONE},     /* 5x5 */
        {3, 2, 20, 19, 2, 3, 3, 2, 2, 1, 1, 1, 1, 2, 1, SSD_ACT_RELU6},  /* odd, wider */
        {2, 4, 9, 10, 4, 3, 3, 2, 1, 2, 1, 2, 1, 4, 1, SSD_ACT_NONE},    /* sh != sw, dh != dw */
        {2, 3, 8, 11, 3, 3, 3, 1, 2, 1, 3, 1, 3, 3, 0, SSD_ACT_RELU},    /* and the other way */
        /* few input channels: the direct kernel (conv_direct.c) for forward and weights */
        {2, 3, 37, 35, 10, 7, 7, 2, 2, 3, 3, 1, 1, 1, 1, SSD_ACT_RELU},  /* a stem, O % 8 != 0 */
        {1, 2, 12, 40, 8, 3, 3, 1, 1, 2, 2, 2, 2, 1, 0, SSD_ACT_NONE},   /* dilated, 40 wide */
        {2, 4, 16, 50, 5, 3, 5, 3, 2, 1, 2, 1, 1, 1, 1, SSD_ACT_RELU6},  /* stride 3 x 2 */
        {1, 3, 9, 70, 16, 2, 2, 2, 2, 0, 0, 1, 1, 1, 1, SSD_ACT_NONE},   /* 2x2 s2, two blocks */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) test_conv_case(cases[i], 0);
    {
        const ssd_convg_t stem = ssd_convg_geometry(32, 3, 256, 256, 8, 7, 7, 2, 2, 3, 3, 1, 1, 1);
        const ssd_convg_t wide = ssd_convg_geometry(32, 16, 64, 64, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1);
        const ssd_convg_t narrow = ssd_convg_geometry(32, 3, 20, 20, 8, 3, 3, 2, 2, 1, 1, 1, 1, 1);
        report(ssd__convd_applies(&stem) && !ssd__convd_applies(&wide) && !ssd__convd_applies(&narrow),
               "convg: a 3-channel stem takes the direct kernel; a 16-channel conv and a "
               "10-pixel-wide output the GEMM");
    }
    /* finite differences on small cases: plain, grouped + strided, depthwise dilated */
    const conv_case small[] = {
        {2, 2, 5, 4, 3, 3, 2, 1, 2, 1, 1, 2, 1, 1, 1, SSD_ACT_NONE},
        {1, 4, 5, 6, 2, 3, 3, 2, 2, 1, 1, 1, 1, 2, 1, SSD_ACT_NONE},
        {2, 3, 6, 5, 3, 3, 3, 1, 1, 2, 2, 2, 2, 3, 1, SSD_ACT_NONE},
        {2, 2, 7, 6, 2, 3, 3, 2, 1, 1, 2, 1, 2, 2, 1, SSD_ACT_NONE},
        {2, 3, 9, 36, 9, 5, 5, 2, 2, 2, 2, 1, 1, 1, 1, SSD_ACT_NONE},    /* direct */
    };
    for (size_t i = 0; i < sizeof small / sizeof small[0]; ++i) test_conv_case(small[i], 1);

    /* the output size rule: PyTorch's floor((H + 2p - d(k-1) - 1) / s) + 1 */
    const ssd_convg_t a = ssd_convg_geometry(1, 3, 300, 300, 8, 3, 3, 2, 2, 1, 1, 1, 1, 1);
    const ssd_convg_t b = ssd_convg_geometry(1, 8, 19, 19, 8, 3, 3, 1, 1, 6, 6, 6, 6, 1);
    const ssd_convg_t c = ssd_convg_geometry(1, 8, 5, 5, 8, 3, 3, 1, 1, 0, 0, 1, 1, 1);
    report(a.OH == 150 && a.OW == 150 && b.OH == 19 && c.OH == 3,
           "convg output sizes: 300 s2 -> %d, 19 d6 p6 -> %d, 5 k3 p0 -> %d", a.OH, b.OH, c.OH);
}

/* ---- pooling ----------------------------------------------------------------------------- */

typedef struct {
    int N, C, H, W, kh, kw, sh, sw, ph, pw, ceil_mode;
} pool_case;

/* Output size by PyTorch's rule, written out separately from the kernel's. */
static int ref_pool_size(int in, int k, int s, int p, int ceil_mode)
{
    const double q = (double)(in + 2 * p - k) / s;
    int out = (int)(ceil_mode ? ceil(q) : floor(q)) + 1;
    if (ceil_mode && (out - 1) * s >= in + p) out -= 1;
    return out;
}

/* Max pool: the first of the greatest in-input elements of each window (its flat index). */
static long ref_argmax(const double *p, int H, int W, int h0, int w0, int kh, int kw)
{
    long best = -1;
    for (int h = h0; h < h0 + kh; ++h)
        for (int w = w0; w < w0 + kw; ++w) {
            if (h < 0 || h >= H || w < 0 || w >= W) continue;
            if (best < 0 || p[(size_t)h * W + w] > p[best]) best = (long)h * W + w;
        }
    return best;
}

/* Average: the window clipped to the padded input [-p, in + p) for count_include_pad. */
static int ref_divisor(int H, int W, int ph, int pw, int h0, int w0, int kh, int kw, int cip)
{
    int cnt = 0;
    for (int h = h0; h < h0 + kh; ++h)
        for (int w = w0; w < w0 + kw; ++w) {
            const int in = h >= 0 && h < H && w >= 0 && w < W;
            const int padded = h >= -ph && h < H + ph && w >= -pw && w < W + pw;
            cnt += cip ? padded : in;
        }
    return cnt;
}

/* forward (max if avg < 0, else average with count_include_pad = avg) and dx of sum(dy * y) */
static void ref_pool(pool_case k, int OH, int OW, int avg, const double *x, const double *dy,
                     double *y, double *dx)
{
    const size_t HW = (size_t)k.H * k.W;
    for (size_t i = 0; i < (size_t)k.N * k.C * HW; ++i) dx[i] = 0.0;
    for (int nc = 0; nc < k.N * k.C; ++nc)
        for (int oh = 0; oh < OH; ++oh)
            for (int ow = 0; ow < OW; ++ow) {
                const int h0 = oh * k.sh - k.ph, w0 = ow * k.sw - k.pw;
                const double *p = x + nc * HW;
                const size_t yi = ((size_t)nc * OH + oh) * OW + ow;
                if (avg < 0) {
                    const long a = ref_argmax(p, k.H, k.W, h0, w0, k.kh, k.kw);
                    y[yi] = p[a];
                    dx[nc * HW + a] += dy[yi];
                } else {
                    const int d = ref_divisor(k.H, k.W, k.ph, k.pw, h0, w0, k.kh, k.kw, avg);
                    double s = 0.0;
                    for (int h = h0; h < h0 + k.kh; ++h)
                        for (int w = w0; w < w0 + k.kw; ++w)
                            if (h >= 0 && h < k.H && w >= 0 && w < k.W) s += p[(size_t)h * k.W + w];
                    y[yi] = s / d;
                    for (int h = h0; h < h0 + k.kh; ++h)
                        for (int w = w0; w < w0 + k.kw; ++w)
                            if (h >= 0 && h < k.H && w >= 0 && w < k.W)
                                dx[nc * HW + (size_t)h * k.W + w] += dy[yi] / d;
                }
            }
}

typedef struct {
    pool_case k;
    int OH, OW, avg;
    double *x, *r, *y, *dx;
} pool_ctx;

static double pool_loss(void *p)
{
    pool_ctx *c = p;
    ref_pool(c->k, c->OH, c->OW, c->avg, c->x, c->r, c->y, c->dx);
    return dot(c->r, c->y, (size_t)c->k.N * c->k.C * c->OH * c->OW);
}

static void test_pool_case(pool_case k, int fd)
{
    const ssd_pool_t g = ssd_pool_geometry(k.N, k.C, k.H, k.W, k.kh, k.kw, k.sh, k.sw, k.ph, k.pw,
                                           k.ceil_mode);
    const int OH = ref_pool_size(k.H, k.kh, k.sh, k.ph, k.ceil_mode);
    const int OW = ref_pool_size(k.W, k.kw, k.sw, k.pw, k.ceil_mode);
    char name[128];
    snprintf(name, sizeof name, "N%d C%d %dx%d k%dx%d s%d,%d p%d,%d%s -> %dx%d", k.N, k.C, k.H,
             k.W, k.kh, k.kw, k.sh, k.sw, k.ph, k.pw, k.ceil_mode ? " ceil" : "", OH, OW);
    report(g.OH == OH && g.OW == OW, "pool geometry %s: kernel says %dx%d", name, g.OH, g.OW);
    if (g.OH != OH || g.OW != OW) return;
    const size_t nx = (size_t)k.N * k.C * k.H * k.W, ny = (size_t)k.N * k.C * OH * OW;
    float *x = frandom(nx, 1.0f), *dy = frandom(ny, 1.0f);
    double *xd = to_double(x, nx), *dyd = to_double(dy, ny);
    double *yr = dzeros(ny), *dxr = dzeros(nx);
    float *y = fnan(ny), *dx = fnan(nx);
    for (int avg = -1; avg <= 1; ++avg) {
        const char *kind = avg < 0 ? "max" : avg ? "avg (count_include_pad)" : "avg";
        ref_pool(k, OH, OW, avg, xd, dyd, yr, dxr);
        if (avg < 0) {
            ssd_maxpool_forward(&g, x, y);
            ssd_maxpool_backward(&g, x, dy, dx);
        } else {
            ssd_avgpool_forward(&g, avg, x, y);
            ssd_avgpool_backward(&g, avg, dy, dx);
        }
        /* (inputs and dy are O(1): an averaged sum that cancels is compared absolutely) */
        report(err(y, yr, NULL, ny, 1.0) < 1e-6 && err(dx, dxr, NULL, nx, 1.0) < 1e-6,
               "%s pool %s: err y %.2e dx %.2e", kind, name, err(y, yr, NULL, ny, 1.0),
               err(dx, dxr, NULL, nx, 1.0));
        if (fd) {
            double *gx = dzeros(nx), *yy = dzeros(ny), *dd = dzeros(nx);
            pool_ctx c = {k, OH, OW, avg, xd, dyd, yy, dd};
            /* piecewise linear: a tiny step is exact unless two elements tie within it */
            fd_grad(pool_loss, &c, xd, nx, 1e-7, gx);
            report(err(dx, gx, NULL, nx, 1e-2) < 1e-4,
                   "%s pool %s backward vs finite differences: err %.2e", kind, name,
                   err(dx, gx, NULL, nx, 1e-2));
            free(gx); free(yy); free(dd);
        }
    }
    free(x); free(dy); free(xd); free(dyd); free(yr); free(dxr); free(y); free(dx);
}

static void test_pool(void)
{
    static const pool_case cases[] = {
        /* N  C   H   W kh kw sh sw ph pw ceil */
        {3, 2, 9, 7, 2, 2, 2, 2, 0, 0, 0},
        {3, 2, 9, 7, 2, 2, 2, 2, 0, 0, 1},    /* ceil: the odd last row / column kept */
        {2, 3, 75, 38, 2, 2, 2, 2, 0, 0, 1},  /* SSD300: 75 -> 38 */
        {2, 3, 19, 19, 3, 3, 1, 1, 1, 1, 0},  /* SSD300 pool5 */
        {2, 2, 5, 5, 2, 2, 2, 2, 1, 1, 1},    /* ceil: last window would start in the padding */
        {2, 2, 6, 7, 3, 3, 2, 2, 1, 1, 1},
        {3, 2, 6, 8, 3, 2, 2, 3, 1, 1, 1},    /* non-square kernel and stride */
        {1, 4, 10, 9, 3, 3, 3, 2, 1, 0, 1},
        {2, 2, 7, 7, 3, 3, 2, 2, 1, 1, 0},    /* overlapping windows */
        {1, 2, 4, 4, 5, 5, 1, 1, 2, 2, 0},    /* kernel bigger than the map */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) test_pool_case(cases[i], i % 3 == 0);
    /* PyTorch's sizes, written out */
    report(ssd_pool_out_size(75, 2, 2, 0, 1) == 38 && ssd_pool_out_size(75, 2, 2, 0, 0) == 37 &&
               ssd_pool_out_size(5, 2, 2, 1, 1) == 3 && ssd_pool_out_size(6, 3, 2, 0, 1) == 3 &&
               ssd_pool_out_size(6, 3, 2, 0, 0) == 2 && ssd_pool_out_size(19, 3, 1, 1, 0) == 19 &&
               ssd_pool_out_size(3, 3, 2, 1, 1) == 2 && ssd_pool_out_size(1, 2, 2, 0, 0) == 0,
           "pool output sizes: 75 -> 38 (ceil) / 37, 5 p1 ceil -> 3, 6 k3 s2 -> 3 (ceil) / 2, ...");

    /* max: the first max wins ties (dy goes there only), NaN propagates */
    {
        const ssd_pool_t g = ssd_pool_geometry(1, 1, 2, 3, 2, 2, 1, 1, 0, 0, 0);
        const float x[6] = {1, 5, 5, 5, 2, NAN};
        const float dy[2] = {10, 20};
        float y[2], dx[6];
        ssd_maxpool_forward(&g, x, y);
        ssd_maxpool_backward(&g, x, dy, dx);
        report(y[0] == 5 && isnan(y[1]) && dx[1] == 10 && dx[3] == 0 && dx[5] == 20 &&
                   dx[0] == 0 && dx[2] == 0,
               "max pool: ties go to the first max, NaN wins");
    }
    /* global average */
    {
        const int N = 3, C = 5, HW = 37;
        float *x = frandom((size_t)N * C * HW, 1.0f), *dy = frandom((size_t)N * C, 1.0f);
        float *y = fnan((size_t)N * C), *dx = fnan((size_t)N * C * HW);
        double *yr = dzeros((size_t)N * C), *dxr = dzeros((size_t)N * C * HW);
        for (int nc = 0; nc < N * C; ++nc) {
            for (int p = 0; p < HW; ++p) yr[nc] += x[(size_t)nc * HW + p] / (double)HW;
            for (int p = 0; p < HW; ++p) dxr[(size_t)nc * HW + p] = dy[nc] / (double)HW;
        }
        ssd_global_avgpool_forward(N, C, HW, x, y);
        ssd_global_avgpool_backward(N, C, HW, dy, dx);
        report(err(y, yr, NULL, (size_t)N * C, 1e-3) < 1e-5 &&
                   err(dx, dxr, NULL, (size_t)N * C * HW, 1e-3) < 1e-5,
               "global average pool N3 C5 HW37: err y %.2e dx %.2e", err(y, yr, NULL, (size_t)N * C, 1e-3),
               err(dx, dxr, NULL, (size_t)N * C * HW, 1e-3));
        free(x); free(dy); free(y); free(dx); free(yr); free(dxr);
    }
}

/* ---- activations ------------------------------------------------------------------------- */

enum { RELU6, SIGMOID, HARDSWISH, HARDSIGMOID };
static const char *act_names[] = {"relu6", "sigmoid", "hardswish", "hardsigmoid"};

static double ref_act(int a, double x)
{
    switch (a) {
    case RELU6: return x < 0 ? 0 : (x > 6 ? 6 : x);
    case SIGMOID: return 1.0 / (1.0 + exp(-x));
    case HARDSWISH: return x * (x < -3 ? 0 : (x > 3 ? 6 : x + 3)) / 6.0;
    default: return (x < -3 ? 0 : (x > 3 ? 6 : x + 3)) / 6.0;
    }
}

static void run_act(int a, int64_t n, const float *x, float *y)
{
    if (a == RELU6) ssd_relu6_forward(n, x, y);
    else if (a == SIGMOID) ssd_sigmoid_forward(n, x, y);
    else if (a == HARDSWISH) ssd_hardswish_forward(n, x, y);
    else ssd_hardsigmoid_forward(n, x, y);
}

/* the backward reads y for sigmoid, x for the others */
static void run_act_backward(int a, int64_t n, const float *x, const float *y, const float *dy,
                             float *dx)
{
    if (a == RELU6) ssd_relu6_backward(n, x, dy, dx);
    else if (a == SIGMOID) ssd_sigmoid_backward(n, y, dy, dx);
    else if (a == HARDSWISH) ssd_hardswish_backward(n, x, dy, dx);
    else ssd_hardsigmoid_backward(n, x, dy, dx);
}

static void test_activations(void)
{
    /* 70000 elements: above the size where the loops go parallel */
    const int64_t n = 70001;
    float *x = frandom((size_t)n, 8.0f), *dy = frandom((size_t)n, 1.0f);
    float *y = fnan((size_t)n), *dx = fnan((size_t)n);
    double *yr = dzeros((size_t)n), *gr = dzeros((size_t)n), *dys = to_double(dy, (size_t)n);
    /* dx is compared on the scale of dy: the float formulas cancel where the derivative is
     * near 0 (1 - y for y near 1, x/3 + 1/2 near -1.5), as PyTorch's do */
    for (int64_t i = 0; i < n; ++i) dys[i] = fabs(dys[i]);
    for (int a = RELU6; a <= HARDSIGMOID; ++a) {
        run_act(a, n, x, y);
        run_act_backward(a, n, x, y, dy, dx);
        /* reference gradient by central differences (no input lies within h of a kink) */
        const double h = 1e-6;
        int near_kink = 0;
        for (int64_t i = 0; i < n; ++i) {
            const double v = x[i];
            yr[i] = ref_act(a, v);
            gr[i] = dy[i] * (ref_act(a, v + h) - ref_act(a, v - h)) / (2 * h);
            near_kink += fabs(v) < 2 * h || fabs(v - 6) < 2 * h || fabs(fabs(v) - 3) < 2 * h;
        }
        report(!near_kink && err(y, yr, NULL, (size_t)n, 1e-6) < 1e-6 &&
                   err(dx, gr, dys, (size_t)n, 1e-12) < 1e-6,
               "%s: %lld values in [-8, 8): err y %.2e, dx vs finite differences %.2e",
               act_names[a], (long long)n, err(y, yr, NULL, (size_t)n, 1e-6),
               err(dx, gr, dys, (size_t)n, 1e-12));
        /* in place (y == x, dx == dy) gives the same */
        float *xi = falloc((size_t)n), *gi = falloc((size_t)n);
        memcpy(xi, x, (size_t)n * sizeof(float));
        run_act(a, n, xi, xi);
        memcpy(gi, dy, (size_t)n * sizeof(float));
        run_act_backward(a, n, x, y, gi, gi);
        report(same_bits(xi, y, (size_t)n) && same_bits(gi, dx, (size_t)n), "%s in place", act_names[a]);
        free(xi); free(gi);
    }
    /* PyTorch's values at the kinks, dy = 1 */
    {
        const float k[7] = {-3, 0, 3, 6, -3.5f, 7, 1.5f};
        const float one[7] = {1, 1, 1, 1, 1, 1, 1};
        float g6[7], gs[7], gh[7];
        ssd_relu6_backward(7, k, one, g6);
        ssd_hardswish_backward(7, k, one, gs);
        ssd_hardsigmoid_backward(7, k, one, gh);
        report(g6[1] == 0 && g6[3] == 0 && g6[2] == 1 && g6[0] == 0 && g6[5] == 0,
               "relu6 backward (hardtanh 0, 6): 0 at exactly 0 and 6, 1 inside");
        report(gs[0] == -0.5f && gs[2] == 1.5f && gs[4] == 0 && gs[5] == 1 && gs[1] == 0.5f &&
                   gs[6] == 1.0f,
               "hardswish backward: -0.5 at -3, 1.5 at 3 (x/3 + 1/2 on [-3, 3]), 0 / 1 outside");
        report(gh[0] == 0 && gh[2] == 0 && gh[1] == 1.0f / 6.0f && gh[4] == 0 && gh[5] == 0,
               "hardsigmoid backward: 0 at exactly -3 and 3, 1/6 inside");
    }
    free(x); free(dy); free(y); free(dx); free(yr); free(gr); free(dys);
}

/* ---- nearest upsample ------------------------------------------------------------------- */

static void test_upsample(void)
{
    static const int cases[][6] = {{3, 2, 5, 7, 2, 2}, {2, 3, 4, 3, 3, 2}, {1, 2, 1, 1, 4, 4},
                                   {2, 1, 3, 5, 1, 3}};
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; ++t) {
        const int N = cases[t][0], C = cases[t][1], H = cases[t][2], W = cases[t][3];
        const int sh = cases[t][4], sw = cases[t][5], OH = H * sh, OW = W * sw;
        const size_t nx = (size_t)N * C * H * W, ny = (size_t)N * C * OH * OW;
        float *x = frandom(nx, 1.0f), *dy = frandom(ny, 1.0f), *y = fnan(ny), *dx = fnan(nx);
        double *yr = dzeros(ny), *dxr = dzeros(nx), *dxs = dzeros(nx);
        for (int nc = 0; nc < N * C; ++nc)
            for (int i = 0; i < OH; ++i)
                for (int j = 0; j < OW; ++j) {
                    const size_t yi = ((size_t)nc * OH + i) * OW + j;
                    const size_t xi = ((size_t)nc * H + i / sh) * W + j / sw;
                    yr[yi] = x[xi];
                    dxr[xi] += dy[yi];
                    dxs[xi] += fabs(dy[yi]);
                }
        ssd_upsample_nearest_forward(N, C, H, W, sh, sw, x, y);
        ssd_upsample_nearest_backward(N, C, H, W, sh, sw, dy, dx);
        report(err(y, yr, NULL, ny, 1e-6) == 0 && err(dx, dxr, dxs, nx, 1e-6) < 1e-6,
               "nearest upsample N%d C%d %dx%d x(%d, %d): err dx %.2e", N, C, H, W, sh, sw,
               err(dx, dxr, dxs, nx, 1e-6));
        free(x); free(dy); free(y); free(dx); free(yr); free(dxr); free(dxs);
    }
}

/* ---- L2Norm ---------------------------------------------------------------------------- */

typedef struct {
    int N, C, HW;
    double eps, *x, *w, *r, *y;
} l2_ctx;

static void ref_l2norm(int N, int C, int HW, const double *x, const double *w, double eps,
                       double *y)
{
    for (int n = 0; n < N; ++n)
        for (int p = 0; p < HW; ++p) {
            double s = 0.0;
            for (int c = 0; c < C; ++c) s += x[((size_t)n * C + c) * HW + p] * x[((size_t)n * C + c) * HW + p];
            const double d = sqrt(s) + eps;
            for (int c = 0; c < C; ++c) {
                const size_t i = ((size_t)n * C + c) * HW + p;
                y[i] = x[i] / d * w[c];
            }
        }
}

static double l2_loss(void *p)
{
    l2_ctx *c = p;
    ref_l2norm(c->N, c->C, c->HW, c->x, c->w, c->eps, c->y);
    return dot(c->r, c->y, (size_t)c->N * c->C * c->HW);
}

static void test_l2norm(void)
{
    static const int cases[][3] = {{3, 7, 29}, {2, 16, 300}, {1, 5, 1}, {2, 3, 513}};
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; ++t) {
        const int N = cases[t][0], C = cases[t][1], HW = cases[t][2];
        const size_t n = (size_t)N * C * HW;
        const float eps = 1e-10f;
        float *x = frandom(n, 1.0f), *w = frandom((size_t)C, 20.0f), *dy = frandom(n, 1.0f);
        float *y = fnan(n), *dx = fnan(n), *dw = fnan((size_t)C);
        float *scratch = fnan(ssd_l2norm_scratch_floats(N, HW));
        ssd_l2norm_forward(N, C, HW, x, w, eps, y);
        ssd_l2norm_backward(N, C, HW, x, w, eps, dy, dx, dw, scratch);
        double *xd = to_double(x, n), *wd = to_double(w, (size_t)C), *dyd = to_double(dy, n);
        double *yr = dzeros(n), *yy = dzeros(n), *gx = dzeros(n), *gw = dzeros((size_t)C);
        ref_l2norm(N, C, HW, xd, wd, eps, yr);
        l2_ctx c = {N, C, HW, eps, xd, wd, dyd, yy};
        fd_grad(l2_loss, &c, xd, n, 1e-5, gx);
        fd_grad(l2_loss, &c, wd, (size_t)C, 1e-5, gw);
        /* dweight sums N*HW terms of size ~|dy x / d|: scale by that count */
        double *gws = dzeros((size_t)C);
        for (int k = 0; k < C; ++k) gws[k] = sqrt((double)N * HW) + fabs(gw[k]);
        report(err(y, yr, NULL, n, 1e-3) < 1e-5 && err(dx, gx, NULL, n, 1e-1) < 1e-4 &&
                   err(dw, gw, gws, (size_t)C, 0) < 1e-4,
               "l2norm N%d C%d HW%d: err y %.2e, vs finite differences dx %.2e dweight %.2e", N,
               C, HW, err(y, yr, NULL, n, 1e-3), err(dx, gx, NULL, n, 1e-1),
               err(dw, gw, gws, (size_t)C, 0));
        const int before = ssd_get_num_threads();
        float *dx1 = fnan(n), *dw1 = fnan((size_t)C);
        ssd_set_num_threads(1);
        ssd_l2norm_backward(N, C, HW, x, w, eps, dy, dx1, dw1, scratch);
        ssd_set_num_threads(3);
        ssd_l2norm_backward(N, C, HW, x, w, eps, dy, dx, dw, scratch);
        ssd_set_num_threads(before);
        report(same_bits(dx, dx1, n) && same_bits(dw, dw1, (size_t)C),
               "l2norm backward N%d C%d HW%d: same bits at 1 and 3 threads", N, C, HW);
        free(dx1); free(dw1); free(gws);
        free(x); free(w); free(dy); free(y); free(dx); free(dw); free(scratch);
        free(xd); free(wd); free(dyd); free(yr); free(yy); free(gx); free(gw);
    }
    /* an all-zero pixel: y = 0 and a finite gradient (dy * weight / eps) */
    {
        const float x[3] = {0, 0, 0}, w[3] = {1, 2, 3}, dy[3] = {1, 1, 1};
        float y[3], dx[3], dw[3], s[1];
        ssd_l2norm_forward(1, 3, 1, x, w, 1e-10f, y);
        ssd_l2norm_backward(1, 3, 1, x, w, 1e-10f, dy, dx, dw, s);
        report(y[0] == 0 && y[2] == 0 && isfinite(dx[0]) && isfinite(dx[2]) && dw[1] == 0,
               "l2norm at an all-zero pixel: y 0, dx finite (%g), dweight 0", dx[0]);
    }
}

/* ---- per-example standardisation ------------------------------------------------------------ */

typedef struct {
    int N;
    int64_t D;
    double eps, *x, *r, *y;
} std_ctx;

static void ref_standardize(int N, int64_t D, const double *x, double eps, double *y)
{
    for (int n = 0; n < N; ++n) {
        const double *xn = x + (size_t)n * D;
        double m = 0.0, v = 0.0;
        for (int64_t i = 0; i < D; ++i) m += xn[i];
        m /= (double)D;
        for (int64_t i = 0; i < D; ++i) v += (xn[i] - m) * (xn[i] - m);
        v /= (double)D;
        for (int64_t i = 0; i < D; ++i) y[(size_t)n * D + i] = (xn[i] - m) / sqrt(v + eps);
    }
}

static double std_loss(void *p)
{
    std_ctx *c = p;
    ref_standardize(c->N, c->D, c->x, c->eps, c->y);
    return dot(c->r, c->y, (size_t)c->N * c->D);
}

/* dx of sum(dy * y) in double, by the closed form (for cases too large for differences). */
static void ref_standardize_backward(int N, int64_t D, const double *x, double eps,
                                     const double *dy, double *dx)
{
    double *y = dzeros((size_t)N * D);
    ref_standardize(N, D, x, eps, y);
    for (int n = 0; n < N; ++n) {
        const size_t o = (size_t)n * D;
        double m = 0.0, v = 0.0, a = 0.0, b = 0.0;
        for (int64_t i = 0; i < D; ++i) m += x[o + i];
        m /= (double)D;
        for (int64_t i = 0; i < D; ++i) v += (x[o + i] - m) * (x[o + i] - m);
        const double r = 1.0 / sqrt(v / (double)D + eps);
        for (int64_t i = 0; i < D; ++i) { a += dy[o + i]; b += dy[o + i] * y[o + i]; }
        a /= (double)D;
        b /= (double)D;
        for (int64_t i = 0; i < D; ++i) dx[o + i] = r * (dy[o + i] - a - y[o + i] * b);
    }
    free(y);
}

static void test_standardize(void)
{
    /* (N, D): small ones against finite differences; one over several 8192-value chunks */
    static const int64_t cases[][2] = {{2, 37}, {1, 300}, {3, 5}, {2, 3 * 60 * 60}};
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; ++t) {
        const int N = (int)cases[t][0];
        const int64_t D = cases[t][1];
        const size_t n = (size_t)N * D;
        const float eps = 1e-5f;
        float *x = frandom(n, 100.0f), *dy = frandom(n, 1.0f), *y = fnan(n), *dx = fnan(n);
        for (size_t i = 0; i < n; ++i) x[i] += 120.0f; /* pixel-like: a large mean */
        float *scratch = fnan(ssd_standardize_scratch_floats(N, D));
        ssd_standardize_forward(N, D, x, eps, y, scratch);
        ssd_standardize_backward(N, D, x, eps, dy, dx, scratch);
        double *xd = to_double(x, n), *dyd = to_double(dy, n), *yr = dzeros(n), *gx = dzeros(n);
        ref_standardize(N, D, xd, eps, yr);
        const int fd = D < 1000;
        if (fd) {
            double *yy = dzeros(n);
            std_ctx c = {N, D, eps, xd, dyd, yy};
            fd_grad(std_loss, &c, xd, n, 1e-4, gx);
            free(yy);
        } else {
            ref_standardize_backward(N, D, xd, eps, dyd, gx);
        }
        /* y = (x - mean) / std is O(1); near 0 it keeps the rounding of x - mean (x ~ 120),
         * so its error is taken relative to max(|y|, 0.01) */
        const double ey = err(y, yr, NULL, n, 1e-2), edx = err(dx, gx, NULL, n, 1e-2);
        report(ey < 1e-5 && edx < 1e-3,
               "standardize N%d D%lld: err y %.2e, dx vs %s %.2e", N, (long long)D, ey,
               fd ? "finite differences" : "the double closed form", edx);
        const int before = ssd_get_num_threads();
        float *y1 = fnan(n), *dx1 = fnan(n);
        ssd_set_num_threads(1);
        ssd_standardize_forward(N, D, x, eps, y1, scratch);
        ssd_standardize_backward(N, D, x, eps, dy, dx1, scratch);
        ssd_set_num_threads(3);
        ssd_standardize_forward(N, D, x, eps, y, scratch);
        ssd_standardize_backward(N, D, x, eps, dy, dx, scratch);
        ssd_set_num_threads(before);
        report(same_bits(y, y1, n) && same_bits(dx, dx1, n),
               "standardize N%d D%lld: same bits at 1 and 3 threads", N, (long long)D);
        /* an image and the same image at half the exposure give the same output */
        float *xh = fnan(n), *yh = fnan(n);
        for (size_t i = 0; i < n; ++i) xh[i] = 0.5f * x[i];
        ssd_standardize_forward(N, D, xh, eps, yh, scratch);
        double dmax = 0.0;
        for (size_t i = 0; i < n; ++i) dmax = fmax(dmax, fabs((double)yh[i] - (double)y[i]));
        report(dmax < 1e-5, "standardize N%d D%lld: x and x/2 give the same y (max diff %.2e)", N,
               (long long)D, dmax);
        free(xh); free(yh); free(y1); free(dx1);
        free(x); free(dy); free(y); free(dx); free(scratch); free(xd); free(dyd); free(yr); free(gx);
    }
    /* a constant example: y = 0, dx = 0 (no NaN from the zero variance) */
    {
        const float x[4] = {3, 3, 3, 3}, dy[4] = {1, -2, 0.5f, 4};
        float y[4], dx[4], s[64];
        ssd_standardize_forward(1, 4, x, 1e-5f, y, s);
        ssd_standardize_backward(1, 4, x, 1e-5f, dy, dx, s);
        report(y[0] == 0 && y[3] == 0 && isfinite(dx[0]) && isfinite(dx[3]),
               "standardize of a constant example: y 0, dx finite (%g)", dx[1]);
    }
}

/* ---- add and per-channel multiply --------------------------------------------------------- */

static void test_eltwise(void)
{
    const int64_t n = 40003;
    float *a = frandom((size_t)n, 4.0f), *b = frandom((size_t)n, 4.0f), *y = fnan((size_t)n);
    for (int act = SSD_ACT_NONE; act <= SSD_ACT_RELU6; ++act) {
        ssd_add_forward(n, a, b, y, act);
        int ok = 1;
        for (int64_t i = 0; i < n; ++i) ok &= y[i] == (float)act_ref((double)(a[i] + b[i]), act);
        report(ok, "add (act %d) over %lld values", act, (long long)n);
    }
    memcpy(y, b, (size_t)n * sizeof(float));
    ssd_add_accumulate(n, a, y);
    int ok = 1;
    for (int64_t i = 0; i < n; ++i) ok &= y[i] == a[i] + b[i];
    report(ok, "add_accumulate over %lld values", (long long)n);
    free(a); free(b); free(y);

    static const int cases[][3] = {{3, 5, 37}, {2, 16, 1}, {1, 3, 300}};
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; ++t)
        for (int pe = 0; pe <= 1; ++pe) {
            const int N = cases[t][0], C = cases[t][1], HW = cases[t][2];
            const size_t nx = (size_t)N * C * HW, ns = pe ? (size_t)N * C : (size_t)C;
            float *x = frandom(nx, 1.0f), *s = frandom(ns, 2.0f), *dy = frandom(nx, 1.0f);
            float *yy = fnan(nx), *dx = fnan(nx), *ds = fnan(ns);
            double *yr = dzeros(nx), *dxr = dzeros(nx), *dsr = dzeros(ns), *dss = dzeros(ns);
            for (int nn = 0; nn < N; ++nn)
                for (int c = 0; c < C; ++c)
                    for (int p = 0; p < HW; ++p) {
                        const size_t i = ((size_t)nn * C + c) * HW + p;
                        const size_t si = pe ? (size_t)nn * C + c : (size_t)c;
                        yr[i] = (double)x[i] * s[si];
                        dxr[i] = (double)dy[i] * s[si];
                        dsr[si] += (double)dy[i] * x[i];
                        dss[si] += fabs((double)dy[i] * x[i]);
                    }
            ssd_channel_mul_forward(N, C, HW, x, s, pe, yy);
            ssd_channel_mul_backward(N, C, HW, x, s, pe, dy, dx, ds);
            report(err(yy, yr, NULL, nx, 1e-6) < 1e-6 && err(dx, dxr, NULL, nx, 1e-6) < 1e-6 &&
                       err(ds, dsr, dss, ns, 1e-6) < 1e-6,
                   "channel multiply N%d C%d HW%d, scale %s: err y %.2e dx %.2e ds %.2e", N, C, HW,
                   pe ? "(N, C)" : "(C)", err(yy, yr, NULL, nx, 1e-6), err(dx, dxr, NULL, nx, 1e-6),
                   err(ds, dsr, dss, ns, 1e-6));
            const int before = ssd_get_num_threads();
            float *ds1 = fnan(ns);
            ssd_set_num_threads(1);
            ssd_channel_mul_backward(N, C, HW, x, s, pe, dy, NULL, ds1);
            ssd_set_num_threads(3);
            ssd_channel_mul_backward(N, C, HW, x, s, pe, dy, NULL, ds);
            ssd_set_num_threads(before);
            report(same_bits(ds, ds1, ns), "channel multiply ds N%d C%d HW%d %s: same bits at 1 and 3 threads",
                   N, C, HW, pe ? "(N, C)" : "(C)");
            free(ds1);
            free(x); free(s); free(dy); free(yy); free(dx); free(ds);
            free(yr); free(dxr); free(dsr); free(dss);
        }
}

int main(void)
{
    test_conv();
    test_pool();
    test_activations();
    test_upsample();
    test_l2norm();
    test_standardize();
    test_eltwise();
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
