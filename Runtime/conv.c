/*
 * conv.c — 2-D convolution (NCHW, OIHW weights): forward, backward-data, backward-weight.
 *
 * Fast path (stride 1 — every conv of TinySSD): "flat" implicit GEMM on a zero-padded
 * copy of one image. With the input padded to Hp x Wp and stored contiguously, output
 * pixel (oh, ow) and kernel tap t = (c, i, j) read xp[c*Hp*Wp + i*Wp + j + (oh*Wp + ow)].
 * So if outputs are indexed on the padded-width grid, q = oh*Wp + ow, the im2col matrix is
 * B[t][q] = xp[off(t) + q]: every row is a contiguous slice of xp. It is never built, not
 * even as packed panels: the 4 x NR micro-kernel of gemm.c (ssd__ukernel_rows; NR = 24, or
 * 48 with AVX-512) loads its NR-pixel B rows straight from xp through a per-thread table of the K tap offsets. (A
 * packed copy was measured: no faster, since B is used by only M/4 kernel calls.) The k-1
 * grid columns with ow >= OW are computed and dropped (2/258 of the work at 256 x 256).
 *   - scratch: the padded image and the weights packed in 4-row panels, per image;
 *   - the reduction is cut into blocks of <= 256 taps; on the last block the bias + ReLU
 *     epilogue is applied to the tile in registers and stored straight into y (tiles that
 *     straddle an output row go through a small stack buffer and are scattered);
 *   - backward-data of a stride-1 conv is the same flat conv of dy padded by k-1-pad with
 *     the weights transposed (O <-> C) and flipped, so it reuses the forward code;
 *   - parallel over (24-pixel panel, group of output channels) tasks of one image, in
 *     dynamic chunks of consecutive panels; with few panels (small maps) the channels are
 *     split into more groups. No reduction across threads: results are independent of
 *     the thread count.
 *
 * Backward-weight (stride 1) reduces over pixels, so it has its own kernel: a tile of
 * 4 output channels x 3 taps keeps 12 vector accumulators over q (ssd__bw_tile of the
 * micro-kernel's ISA, gemm_internal.h: 16 pixels per vector with AVX-512, else 8; with
 * AVX-512 a 4 x 6 tile, ssd__bw_tile6), reading dy and the padded x directly, in chunks of ~1024 pixels.
 * Large maps whose width is whole 8-pixel steps go by bands of rows (backward_weight_bands):
 * 16 fixed ranges of the batch's bands, each with its own partial dw and db added in range
 * order; a band's padded input is copied once and all of dw's tiles run over it while it is
 * in cache. Other maps re-lay dy on the padded-width grid (zeros in the dropped columns),
 * tiny ones G images at a time so that a chunk is still ~1024 pixels; a task owns a block
 * of 4 channels x a group of tap tiles for all chunks, so no two threads touch the same dw
 * element. Either way the result depends on the shape only, not on the thread count.
 *
 * 3x3 pad-1 layers with enough channels and pixels (ssd__winograd_applies) go to
 * winograd.c instead, for forward and backward-data; a pair of convs (two destinations)
 * and the statistics forward always use the flat path.
 *
 * General path (stride > 1, or backward-data with pad > k-1): explicit im2col of one image
 * into scratch + ssd_sgemm (+ col2im for backward-data). Slower, but any k/stride/pad.
 * A strided conv with few input channels (a network's stem, 3 -> 8 channels 7x7 stride 2)
 * runs its forward and weight gradient by conv_direct.c instead (strided_direct).
 *
 * Scratch is bounded per image (never per batch): see ssd_conv2d_scratch_floats.
 */
#include "ssd_runtime.h"
#include "gemm_internal.h"
#include "ops_internal.h"
#include "winograd_internal.h"

#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define SSD_CONV_AVX2 1
#endif

#define SLACK 64        /* zeroed floats after a padded image: panel copies overrun by < NR */
#define ROWS_MAX 128    /* output channels per task (T tile = 128 x NR floats on the stack) */
#define BW_QCHUNK 1024  /* pixels per backward-weight chunk (multiple of 8) */
#define BW_ALIGN 16     /* dy rows of backward-weight start at multiples of 16 floats (64 B) */
#define BW_GMAX 64      /* most images grouped by backward-weight on tiny maps */
#define OFF_TABLE 1280  /* row offsets of the flat forward kept per thread (K <= 1280) */

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }
static inline size_t round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }

ssd_conv2d_t ssd_conv2d_geometry(int N, int C, int H, int W, int O, int k, int stride, int pad)
{
    ssd_conv2d_t g;
    g.N = N; g.C = C; g.H = H; g.W = W;
    g.O = O; g.k = k; g.stride = stride; g.pad = pad;
    g.OH = (H + 2 * pad - k) / stride + 1;
    g.OW = (W + 2 * pad - k) / stride + 1;
    g.prepared = NULL;
    g.prepared_floats = 0;
    return g;
}

size_t ssd_conv2d_prepared_floats(const ssd_conv2d_t *g)
{
    return ssd__winograd_prepared_floats(g);
}

/* The prepared Winograd weights of g's forward, or NULL (none, or too few floats). */
static const float *prepared_winograd(const ssd_conv2d_t *g)
{
    const size_t need = ssd__winograd_prepared_floats(g);
    return need && g->prepared && g->prepared_floats >= need ? g->prepared : NULL;
}

int ssd_conv2d_prepare(const ssd_conv2d_t *g, const float *w)
{
    if (!prepared_winograd(g)) return 0;
    ssd__winograd_prepare(g, w, g->prepared);
    return 1;
}

/* The flat path addresses the padded image with int offsets. */
static int fits_int(size_t channels, size_t h, size_t w)
{
    return channels * h * w + SLACK < (size_t)INT_MAX;
}

static int fast_forward(const ssd_conv2d_t *g)
{
    return g->stride == 1 && fits_int(g->C, g->H + 2 * g->pad, g->W + 2 * g->pad);
}

static int fast_backward_data(const ssd_conv2d_t *g)
{
    const int pp = g->k - 1 - g->pad;
    return g->stride == 1 && pp >= 0 && fits_int(g->O, g->OH + 2 * pp, g->OW + 2 * pp);
}

static int fast_backward_weight(const ssd_conv2d_t *g) { return g->stride == 1; }

/* Whether a strided conv goes to conv_direct.c (few input channels), with its geometry
 * there in *cg. Stride-1 convs keep the flat path. */
static int strided_direct(const ssd_conv2d_t *g, ssd_convg_t *cg)
{
    if (g->stride == 1) return 0;
    *cg = ssd_convg_geometry(g->N, g->C, g->H, g->W, g->O, g->k, g->k, g->stride, g->stride,
                             g->pad, g->pad, 1, 1, 1);
    return ssd__convd_applies(cg);
}
static size_t bw_scratch_floats(const ssd_conv2d_t *g);
static int empty_output(const ssd_conv2d_t *g) { return g->OH <= 0 || g->OW <= 0; }

size_t ssd_conv2d_scratch_floats(const ssd_conv2d_t *g)
{
    if (empty_output(g)) return 0;
    const size_t C = g->C, O = g->O, k = g->k, p = g->pad;
    const size_t K = C * k * k;
    const size_t Hp = g->H + 2 * p, Wp = g->W + 2 * p;
    const size_t col = K * (size_t)g->OH * g->OW; /* general path: one image of im2col */
    size_t need = 0, s;

    s = fast_forward(g) ? round_up(O, SSD_MR) * K + C * Hp * Wp + SLACK
                        : col + O * (size_t)g->OH * g->OW;
    if (s > need) need = s;

    if (fast_backward_data(g)) {
        const size_t pp = k - 1 - p;
        s = round_up(C, SSD_MR) * O * k * k + O * (g->OH + 2 * pp) * (g->OW + 2 * pp) + SLACK;
    } else {
        s = col;
    }
    if (s > need) need = s;

    if (fast_backward_weight(g)) {
        s = bw_scratch_floats(g);
    } else {
        s = col;
    }
    if (s > need) need = s;

    ssd_convg_t cg;
    if (strided_direct(g, &cg)) {
        s = ssd__convd_scratch_floats(&cg);
        if (s > need) need = s;
    }

    /* forward, backward-data and backward-weight by winograd.c */
    if (ssd__winograd_applies(g, 0)) {
        s = ssd__winograd_scratch_floats(g->C, g->O, g->H, g->W);
        if (s > need) need = s;
    }
    if (ssd__winograd_applies(g, 1)) {
        s = ssd__winograd_scratch_floats(g->O, g->C, g->OH, g->OW);
        if (s > need) need = s;
    }
    if (ssd__winograd_bw_applies(g)) {
        s = ssd__winograd_bw_scratch_floats(g->N, g->C, g->H, g->W, g->O);
        if (s > need) need = s;
    }
    return need;
}

/* Where a convolution's output goes: rows (output channels) [0, split) to y[0] in layout
 * ld[0], rows [split, M) to y[1] in ld[1] (as rows 0, 1, ... there). One destination:
 * split = M, y[1] = NULL. */
typedef struct {
    float *y[2];
    ssd_conv2d_out_t ld[2];
    int split;
} conv_dst_t;

static conv_dst_t one_dst(float *y, ssd_conv2d_out_t ld, int M)
{
    conv_dst_t d = {{y, NULL}, {ld, ld}, M};
    return d;
}

/* ---- flat stride-1 convolution (forward and backward-data) ------------------------------ */

typedef struct {
    int M;            /* output channels (rows of the GEMM) */
    int Cs, Hp, Wp;   /* channels and padded size of the source image */
    int k;
    int OH, OW;       /* output size: Hp - k + 1, Wp - k + 1 */
    int K, kcb;       /* reduction length Cs*k*k and its block width */
    int Q, npan;      /* flat output positions (OH-1)*Wp + OW and 24-wide panels */
    const float *apack;
    size_t ldc, ldp;  /* output (m, p) of an image at y[m*ldc + p*ldp] (p = oh*OW + ow) */
    int split;        /* rows m >= split go to the second destination instead: */
    size_t ldc2, ldp2; /* y2[(m - split)*ldc2 + p*ldp2] */
    const float *bias;
    int relu;
} flat_t;

/* Packs the M x K weight matrix of the flat conv into K blocks of MR-row micro-panels:
 * block starting at pc holds panel ir at apack[pc*Mpad + ir*kc + p*MR + r].
 * transposed == 0: A[m][t] = w[m*K + t]                       (forward, w is M x K)
 * transposed == 1: A[c][(o,i,j)] = w[o][c][k-1-i][k-1-j]      (backward-data) */
static void pack_weights(const float *w, int M, int K, int kcb, int transposed, int Cw, int k,
                         float *apack)
{
    const int Mpad = (int)round_up((size_t)M, SSD_MR);
    const int kk = k * k;
    const int nblk = (K + kcb - 1) / kcb;
#pragma omp for schedule(static)
    for (int task = 0; task < nblk * (Mpad / SSD_MR); ++task) {
        const int blk = task / (Mpad / SSD_MR), ir = task % (Mpad / SSD_MR) * SSD_MR;
        const int pc = blk * kcb, kc = imin(kcb, K - pc);
        float *dst = apack + (size_t)pc * Mpad + (size_t)ir * kc;
        for (int p = 0; p < kc; ++p) {
            const int t = pc + p;
            for (int r = 0; r < SSD_MR; ++r) {
                const int m = ir + r;
                float v = 0.0f;
                if (m < M) {
                    if (!transposed) {
                        v = w[(size_t)m * K + t];
                    } else {
                        const int o = t / kk, i = t % kk / k, j = t % k;
                        v = w[(((size_t)o * Cw + m) * k + (k - 1 - i)) * k + (k - 1 - j)];
                    }
                }
                dst[p * SSD_MR + r] = v;
            }
        }
    }
}

/* Copies one N-slice image (Cs x H x W) into the interior of the zeroed padded buffer. */
static void pad_image(const float *x, int Cs, int H, int W, int pad, int Hp, int Wp, float *xp)
{
#pragma omp for schedule(static)
    for (int row = 0; row < Cs * H; ++row) {
        const int c = row / H, h = row % H;
        memcpy(xp + ((size_t)c * Hp + h + pad) * Wp + pad, x + (size_t)row * W,
               (size_t)W * sizeof(float));
    }
}

/* One task: 24 flat output positions (panel jp) x output channels [r0, r1). */
static void fill_offsets(const flat_t *f, int pc, int kc, int *boff)
{
    const int k = f->k, kk = f->k * f->k;
    const size_t HpWp = (size_t)f->Hp * f->Wp;
    int c = pc / kk, i = pc % kk / k, j = pc % k;
    for (int p = 0; p < kc; ++p) {
        boff[p] = (int)(c * HpWp + (size_t)i * f->Wp + j);
        if (++j == k) { j = 0; if (++i == k) { i = 0; ++c; } }
    }
}

/* boff: offsets of all K rows (table_full) or room for one K block. */
static void flat_panel(const flat_t *f, const float *src, float *y, float *y2, int jp, int r0,
                       int r1, int *boff, int table_full, float *T)
{
    const int Wp = f->Wp, OW = f->OW;
    const size_t ldc = f->ldc;
    const int Mpad = (int)round_up((size_t)f->M, SSD_MR);
    const int q0 = jp * SSD_NR;

    /* Where the 24 positions land in y (-1: dropped column or past the end). */
    int map[SSD_NR];
    int row = q0 / Wp, col = q0 % Wp;
    /* one contiguous run inside one output row, in a channel-major layout; a block of MR
     * rows is stored straight from registers if it is also whole and in the first
     * destination (ir + MR <= min(M, split)) */
    const int direct = col + SSD_NR <= OW && f->ldp == 1;
    const int direct_rows = imin(f->M, f->split);
    const size_t ybase = (size_t)row * OW + col;
    if (!direct || direct_rows % SSD_MR != 0 || direct_rows < f->M) { /* some rows scatter */
        for (int jj = 0; jj < SSD_NR; ++jj) {
            map[jj] = (q0 + jj < f->Q && col < OW) ? row * OW + col : -1;
            if (++col == Wp) { col = 0; ++row; }
        }
    }

    for (int pc = 0; pc < f->K; pc += f->kcb) {
        const int kc = imin(f->kcb, f->K - pc);
        const int first = pc == 0, last = pc + kc >= f->K;

        /* Row t of the implicit im2col matrix is src + boff[t]. */
        const int *bo = boff + pc;
        if (!table_full) {
            fill_offsets(f, pc, kc, boff);
            bo = boff;
        }
        const float *bq = src + q0;

        for (int ir = r0; ir < r1; ir += SSD_MR) {
            const float *a = f->apack + (size_t)pc * Mpad + (size_t)ir * kc;
            float *t = T + (size_t)(ir - r0) * SSD_NR;
            const float *cin = first ? NULL : t;
            if (last && direct && ir + SSD_MR <= direct_rows) {
                ssd__ukernel_rows(kc, a, bq, bo, 1.0f, cin, SSD_NR, 1.0f, y + ir * ldc + ybase,
                                  ldc, f->bias ? f->bias + ir : NULL, f->relu);
            } else {
                ssd__ukernel_rows(kc, a, bq, bo, 1.0f, cin, SSD_NR, 1.0f, t, SSD_NR, NULL, 0);
            }
        }
    }

    /* Rows that went through T: bias, ReLU and scatter into y. */
    for (int m = r0; m < r1 && m < f->M; ++m) {
        if (direct && (m - m % SSD_MR) + SSD_MR <= direct_rows) continue;
        const float *t = T + (size_t)(m - r0) * SSD_NR;
        const float bv = f->bias ? f->bias[m] : 0.0f;
        const int second = m >= f->split;
        float *ym = second ? y2 + (size_t)(m - f->split) * f->ldc2 : y + (size_t)m * ldc;
        const size_t ldp = second ? f->ldp2 : f->ldp;
        for (int jj = 0; jj < SSD_NR; ++jj) {
            if (map[jj] < 0) continue;
            float v = t[jj];
            if (f->bias) v += bv;
            if (f->relu) v = v < 0.0f ? 0.0f : v;
            ym[(size_t)map[jj] * ldp] = v;
        }
    }
}

/* All panels of one image, split over the team as (panel, channel group) tasks. */
static void flat_image(const flat_t *f, const float *src, float *y, float *y2)
{
    const int nt = omp_get_num_threads();
    const int Mpad = (int)round_up((size_t)f->M, SSD_MR);
    /* Channel groups: at most ROWS_MAX rows; more groups when there are few panels. */
    const int nunits = f->npan;
    int ng = (Mpad + ROWS_MAX - 1) / ROWS_MAX;
    if (nunits * ng < 4 * nt) {
        ng = (4 * nt + nunits - 1) / nunits;
        if (ng > Mpad / SSD_MR) ng = Mpad / SSD_MR;
    }
    const int rows = (int)round_up((size_t)((Mpad + ng - 1) / ng), SSD_MR);
    ng = (Mpad + rows - 1) / rows;

    int boff[OFF_TABLE];
    float T[ROWS_MAX * SSD_NR] SSD_ALIGN64;
    const int table_full = f->K <= OFF_TABLE;
    if (table_full) fill_offsets(f, 0, f->K, boff);

    /* Dynamic chunks of consecutive tasks: neighbouring panels share input rows, and a
     * thread slowed down by something else on the machine does not stall the image. */
    const int ntask = f->npan * ng;
    const int chunk = imin(64, imax(1, ntask / (16 * nt)));
#pragma omp for schedule(dynamic, chunk)
    for (int task = 0; task < ntask; ++task) {
        const int jp = task / ng, grp = task % ng;
        const int r0 = grp * rows, r1 = imin(r0 + rows, Mpad);
        flat_panel(f, src, y, y2, jp, r0, r1, boff, table_full, T);
    }
}

/* Forward (transposed == 0) or backward-data (transposed == 1) of a stride-1 conv.
 * src: N images of Cs x Hs x Ws, padded by `pad`; out: N images of M x OH x OW. */
static void flat_setup(flat_t *f, int Cs, int Hs, int Ws, int pad, int M, int k)
{
    f->M = M;
    f->Cs = Cs;
    f->Hp = Hs + 2 * pad;
    f->Wp = Ws + 2 * pad;
    f->k = k;
    f->OH = f->Hp - k + 1;
    f->OW = f->Wp - k + 1;
    f->K = Cs * k * k;
    f->kcb = ssd__kc_block(f->K);
    f->Q = (f->OH - 1) * f->Wp + f->OW;
    f->npan = (f->Q + SSD_NR - 1) / SSD_NR;
}

static void flat_conv(int N, int Cs, int Hs, int Ws, int pad, int M, int k, const float *src,
                      const float *w, int transposed, int Cw, const float *bias, int relu,
                      const conv_dst_t *dst, float *scratch)
{
    flat_t f;
    flat_setup(&f, Cs, Hs, Ws, pad, M, k);
    f.ldc = dst->ld[0].channel;
    f.ldp = dst->ld[0].pixel;
    f.split = dst->split;
    f.ldc2 = dst->ld[1].channel;
    f.ldp2 = dst->ld[1].pixel;
    f.bias = bias;
    f.relu = relu;

    const size_t Mpad = round_up((size_t)M, SSD_MR);
    float *apack = scratch;
    float *xp = scratch + Mpad * f.K;
    const size_t xp_len = (size_t)Cs * f.Hp * f.Wp + SLACK;
    f.apack = apack;

#pragma omp parallel num_threads(ssd_get_num_threads())
    {
        pack_weights(w, M, f.K, f.kcb, transposed, Cw, k, apack);
        if (pad > 0) {
#pragma omp for schedule(static)
            for (size_t i = 0; i < xp_len; ++i) xp[i] = 0.0f;
        } else {
#pragma omp single
            memset(xp + xp_len - SLACK, 0, SLACK * sizeof(float));
        }
        for (int n = 0; n < N; ++n) {
            const float *s = src + (size_t)n * Cs * Hs * Ws;
            if (pad > 0) {
                pad_image(s, Cs, Hs, Ws, pad, f.Hp, f.Wp, xp);
            } else {
#pragma omp for schedule(static)
                for (int c = 0; c < Cs; ++c)
                    memcpy(xp + (size_t)c * Hs * Ws, s + (size_t)c * Hs * Ws,
                           (size_t)Hs * Ws * sizeof(float));
            }
            flat_image(&f, xp, dst->y[0] + (size_t)n * dst->ld[0].image,
                       dst->y[1] ? dst->y[1] + (size_t)n * dst->ld[1].image : NULL);
        }
    }
}

/* ---- general path: im2col / col2im + sgemm -------------------------------------------- */

static void im2col(const ssd_conv2d_t *g, const float *x, float *col)
{
    const int k = g->k, kk = k * k, OHOW = g->OH * g->OW;
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int t = 0; t < g->C * kk; ++t) {
        const int c = t / kk, i = t % kk / k, j = t % k;
        float *dst = col + (size_t)t * OHOW;
        for (int oh = 0; oh < g->OH; ++oh) {
            const int ih = oh * g->stride + i - g->pad;
            for (int ow = 0; ow < g->OW; ++ow) {
                const int iw = ow * g->stride + j - g->pad;
                dst[oh * g->OW + ow] = (ih >= 0 && ih < g->H && iw >= 0 && iw < g->W)
                                           ? x[((size_t)c * g->H + ih) * g->W + iw]
                                           : 0.0f;
            }
        }
    }
}

/* dx (one image) = col2im(dcol); each thread owns whole input channels. */
static void col2im(const ssd_conv2d_t *g, const float *dcol, float *dx)
{
    const int k = g->k, kk = k * k, OHOW = g->OH * g->OW;
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int c = 0; c < g->C; ++c) {
        float *d = dx + (size_t)c * g->H * g->W;
        memset(d, 0, (size_t)g->H * g->W * sizeof(float));
        for (int ij = 0; ij < kk; ++ij) {
            const int i = ij / k, j = ij % k;
            const float *s = dcol + ((size_t)c * kk + ij) * OHOW;
            for (int oh = 0; oh < g->OH; ++oh) {
                const int ih = oh * g->stride + i - g->pad;
                if (ih < 0 || ih >= g->H) continue;
                for (int ow = 0; ow < g->OW; ++ow) {
                    const int iw = ow * g->stride + j - g->pad;
                    if (iw >= 0 && iw < g->W) d[(size_t)ih * g->W + iw] += s[oh * g->OW + ow];
                }
            }
        }
    }
}

/* ---- forward ---------------------------------------------------------------------------- */

ssd_conv2d_out_t ssd_conv2d_nchw(const ssd_conv2d_t *g)
{
    const size_t OHOW = (size_t)g->OH * g->OW;
    ssd_conv2d_out_t ld = {(size_t)g->O * OHOW, OHOW, 1};
    return ld;
}

void ssd_conv2d_forward(const ssd_conv2d_t *g, const float *x, const float *w, const float *b,
                        float *y, int relu, float *scratch)
{
    const ssd_conv2d_out_t ld = ssd_conv2d_nchw(g);
    ssd_conv2d_forward_strided(g, x, w, b, y, &ld, relu, scratch);
}

/* Forward into one or two destinations (conv_dst_t). */
static void forward_dst(const ssd_conv2d_t *g, const float *x, const float *w, const float *b,
                        const conv_dst_t *dst, int relu, float *scratch)
{
    if (empty_output(g) || g->N <= 0 || g->O <= 0) return;
    const int OHOW = g->OH * g->OW;
    /* (a pair of convs, two destinations, always runs the direct conv below) */
    if (dst->split >= g->O && ssd__winograd_applies(g, 0)) {
        ssd__winograd_conv(g->N, g->C, g->H, g->W, g->O, x, w, prepared_winograd(g), 0, b, relu,
                           0, dst->y[0], dst->ld[0].image, dst->ld[0].channel, dst->ld[0].pixel,
                           scratch);
        return;
    }
    if (g->C > 0 && g->k > 0 && fast_forward(g)) {
        flat_conv(g->N, g->C, g->H, g->W, g->pad, g->O, g->k, x, w, 0, g->C, b, relu, dst,
                  scratch);
        return;
    }
    const ssd_conv2d_out_t nchw = ssd_conv2d_nchw(g);
    ssd_convg_t cg;
    if (dst->split >= g->O && dst->ld[0].image == nchw.image && dst->ld[0].channel == nchw.channel &&
        dst->ld[0].pixel == nchw.pixel && strided_direct(g, &cg)) {
        ssd__convd_forward(&cg, x, w, b, dst->y[0], relu ? SSD_ACT_RELU : SSD_ACT_NONE, scratch);
        return;
    }
    /* im2col + SGEMM into the scratch after the columns (or, with an empty reduction, just
     * the bias), then bias, ReLU and placement */
    const int K = g->C * g->k * g->k;
    float *col = scratch, *yt = scratch + (size_t)K * OHOW;
    for (int n = 0; n < g->N; ++n) {
        if (K > 0) {
            im2col(g, x + (size_t)n * g->C * g->H * g->W, col);
            ssd_sgemm(0, 0, g->O, OHOW, K, 1.0f, w, K, col, OHOW, 0.0f, yt, OHOW);
        }
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
        for (int o = 0; o < g->O; ++o) {
            const int d = o >= dst->split, r = d ? o - dst->split : o;
            const ssd_conv2d_out_t *ld = &dst->ld[d];
            float *yo = dst->y[d] + (size_t)n * ld->image + (size_t)r * ld->channel;
            const float bv = b ? b[o] : 0.0f;
            for (int q = 0; q < OHOW; ++q) {
                float v = K > 0 ? yt[(size_t)o * OHOW + q] : 0.0f;
                if (b) v += bv;
                if (relu) v = v < 0.0f ? 0.0f : v;
                yo[(size_t)q * ld->pixel] = v;
            }
        }
    }
}

void ssd_conv2d_forward_strided(const ssd_conv2d_t *g, const float *x, const float *w,
                                const float *b, float *y, const ssd_conv2d_out_t *ld, int relu,
                                float *scratch)
{
    const conv_dst_t dst = one_dst(y, *ld, g->O);
    forward_dst(g, x, w, b, &dst, relu, scratch);
}

size_t ssd_conv2d_pool_scratch_floats(const ssd_conv2d_t *g)
{
    if (ssd__winograd_applies(g, 0)) return ssd_conv2d_scratch_floats(g);
    ssd_conv2d_t g1 = *g;
    g1.N = 1;
    return ssd_conv2d_scratch_floats(&g1) + (size_t)g->O * g->OH * g->OW;
}

void ssd_conv2d_forward_pool(const ssd_conv2d_t *g, const float *x, const float *w,
                             const float *b, float *y, int relu, float *scratch)
{
    if (empty_output(g) || g->N <= 0 || g->O <= 0) return;
    const int PH = g->OH / 2, PW = g->OW / 2;
    const size_t pooled = (size_t)PH * PW;
    if (ssd__winograd_applies(g, 0)) { /* pooled in the output transform */
        ssd__winograd_conv(g->N, g->C, g->H, g->W, g->O, x, w, prepared_winograd(g), 0, b, relu,
                           1, y, (size_t)g->O * pooled, pooled, 1, scratch);
        return;
    }
    /* one image at a time through scratch (the same arithmetic as the whole batch) */
    ssd_conv2d_t g1 = *g;
    g1.N = 1;
    float *full = scratch, *rest = scratch + (size_t)g->O * g->OH * g->OW;
    for (int n = 0; n < g->N; ++n) {
        ssd_conv2d_forward(&g1, x + (size_t)n * g->C * g->H * g->W, w, b, full, relu, rest);
        ssd_maxpool2_forward(1, g->O, g->OH, g->OW, full, y + (size_t)n * g->O * pooled);
    }
}

size_t ssd_conv2d_pair_scratch_floats(const ssd_conv2d_t *g)
{
    return (size_t)g->O * ((size_t)g->C * g->k * g->k + 1) + ssd_conv2d_scratch_floats(g);
}

void ssd_conv2d_forward_pair(const ssd_conv2d_t *g, int O1, const float *x, const float *w1,
                             const float *b1, float *y1, const ssd_conv2d_out_t *ld1,
                             const float *w2, const float *b2, float *y2,
                             const ssd_conv2d_out_t *ld2, float *scratch)
{
    /* the two weight matrices (and biases, zeros for a missing one) one after the other */
    const size_t K = (size_t)g->C * g->k * g->k, O2 = (size_t)(g->O - O1);
    float *w = scratch, *b = scratch + (size_t)g->O * K;
    memcpy(w, w1, (size_t)O1 * K * sizeof(float));
    memcpy(w + (size_t)O1 * K, w2, O2 * K * sizeof(float));
    for (int o = 0; o < g->O; ++o) {
        const float *bs = o < O1 ? b1 : b2;
        b[o] = bs ? bs[o < O1 ? o : o - O1] : 0.0f;
    }
    const conv_dst_t dst = {{y1, y2}, {*ld1, *ld2}, O1};
    forward_dst(g, x, w, b1 || b2 ? b : NULL, &dst, 0, scratch + (size_t)g->O * (K + 1));
}

size_t ssd_conv2d_pair_backward_scratch_floats(const ssd_conv2d_t *g)
{
    const size_t K = (size_t)g->C * g->k * g->k;
    const size_t ylen = (size_t)g->N * g->O * g->OH * g->OW;
    return (size_t)g->O * (2 * K + 1) + ylen + ssd_conv2d_scratch_floats(g);
}

void ssd_conv2d_backward_pair(const ssd_conv2d_t *g, int O1, const float *x, const float *w1,
                              const float *dy1, float *dw1, float *db1, const float *w2,
                              const float *dy2, float *dw2, float *db2, float *dx,
                              float *scratch)
{
    /* Both convs as one of O = O1 + O2 channels: weights and output gradients side by side
     * (per image: the O1 channels of dy1, then the O2 of dy2), one backward-data, one
     * backward-weight, then the weight and bias gradients split back. */
    const size_t K = (size_t)g->C * g->k * g->k, O2 = (size_t)(g->O - O1);
    const size_t OHOW = (size_t)g->OH * g->OW;
    float *w = scratch, *dw = w + (size_t)g->O * K, *db = dw + (size_t)g->O * K;
    float *dy = db + g->O, *rest = dy + (size_t)g->N * g->O * OHOW;
    memcpy(w, w1, (size_t)O1 * K * sizeof(float));
    memcpy(w + (size_t)O1 * K, w2, O2 * K * sizeof(float));
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int n = 0; n < g->N; ++n) {
        float *d = dy + (size_t)n * g->O * OHOW;
        memcpy(d, dy1 + (size_t)n * O1 * OHOW, (size_t)O1 * OHOW * sizeof(float));
        memcpy(d + (size_t)O1 * OHOW, dy2 + (size_t)n * O2 * OHOW, O2 * OHOW * sizeof(float));
    }
    if (dx) ssd_conv2d_backward_data(g, dy, w, dx, rest);
    ssd_conv2d_backward_weight(g, x, dy, dw, db1 || db2 ? db : NULL, rest);
    memcpy(dw1, dw, (size_t)O1 * K * sizeof(float));
    memcpy(dw2, dw + (size_t)O1 * K, O2 * K * sizeof(float));
    if (db1) memcpy(db1, db, (size_t)O1 * sizeof(float));
    if (db2) memcpy(db2, db + O1, O2 * sizeof(float));
}

/* ---- backward-data ---------------------------------------------------------------------- */

void ssd_conv2d_backward_data(const ssd_conv2d_t *g, const float *dy, const float *w,
                              float *dx, float *scratch)
{
    const size_t xlen = (size_t)g->N * g->C * g->H * g->W;
    if (empty_output(g) || g->O <= 0 || g->k <= 0) {
        memset(dx, 0, xlen * sizeof(float));
        return;
    }
    if (g->N <= 0 || g->C <= 0) return;
    if (ssd__winograd_applies(g, 1)) {
        const size_t HW = (size_t)g->H * g->W;
        ssd__winograd_conv(g->N, g->O, g->OH, g->OW, g->C, dy, w, NULL, 1, NULL, 0, 0, dx,
                           (size_t)g->C * HW, HW, 1, scratch);
        return;
    }
    if (fast_backward_data(g)) {
        /* dx = flat conv of dy (O channels, OH x OW) padded by k-1-pad, weights flipped. */
        const size_t HW = (size_t)g->H * g->W;
        const ssd_conv2d_out_t ld = {(size_t)g->C * HW, HW, 1};
        const conv_dst_t dst = one_dst(dx, ld, g->C);
        flat_conv(g->N, g->O, g->OH, g->OW, g->k - 1 - g->pad, g->C, g->k, dy, w, 1, g->C,
                  NULL, 0, &dst, scratch);
        return;
    }
    const int K = g->C * g->k * g->k, OHOW = g->OH * g->OW;
    for (int n = 0; n < g->N; ++n) {
        ssd_sgemm(1, 0, K, OHOW, g->O, 1.0f, w, K, dy + (size_t)n * g->O * OHOW, OHOW, 0.0f,
                  scratch, OHOW);
        col2im(g, scratch, dx + (size_t)n * g->C * g->H * g->W);
    }
}

/* ---- backward-weight -------------------------------------------------------------------- */

/* db[o] = sum over n and pixels of dy, in double, one thread per channel. */
static void bias_grad(const ssd_conv2d_t *g, const float *dy, float *db)
{
    const size_t OHOW = (size_t)g->OH * g->OW;
#pragma omp for schedule(static)
    for (int o = 0; o < g->O; ++o) {
        double s = 0.0;
        for (int n = 0; n < g->N; ++n) {
            const float *d = dy + ((size_t)n * g->O + o) * OHOW;
            double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            size_t q = 0;
            for (; q + 8 <= OHOW; q += 8)
                for (int l = 0; l < 8; ++l) lane[l] += d[q + l];
            for (; q < OHOW; ++q) lane[0] += d[q];
            s += ((lane[0] + lane[1]) + (lane[2] + lane[3])) +
                 ((lane[4] + lane[5]) + (lane[6] + lane[7]));
        }
        db[o] = (float)s;
    }
}


/* Blocking of the stride-1 backward-weight reduction over pixels, from the shape only:
 * large maps are cut into nearly equal chunks of <= BW_QCHUNK pixels; small maps are
 * grouped, G images at a time, so that each tile still reduces ~BW_QCHUNK pixels between
 * two horizontal sums. */
typedef struct {
    int Hp, Wp, Q, Qv;  /* padded input, flat positions, rounded up to 8 */
    int G;              /* images per group (padded copies held in scratch) */
    int qchunk;         /* pixels per chunk (multiple of 8) */
    /* Band mode (large maps whose rows are whole 8-pixel steps, and a small enough dw):
     * nband bands of `band` rows per image, the batch's bands cut into `parts` fixed
     * ranges, each with its own partial dw; 0 parts: the chunks above instead. */
    int band, nband, parts;
} bw_plan_t;

#define BW_PARTS 16        /* band ranges of the backward-weight, each with a partial dw */
#define BW_PART_FLOATS (1 << 20) /* most floats of all partial dw together (4 MB) */

static bw_plan_t bw_plan(const ssd_conv2d_t *g)
{
    bw_plan_t b;
    b.Hp = g->H + 2 * g->pad;
    b.Wp = g->W + 2 * g->pad;
    b.Q = (g->OH - 1) * b.Wp + g->OW;
    b.Qv = (int)round_up((size_t)b.Q, BW_ALIGN);
    /* (G does not depend on N, so neither does the scratch size.) */
    b.G = b.Qv >= BW_QCHUNK ? 1 : BW_QCHUNK / b.Qv;
    if (b.G > BW_GMAX) b.G = BW_GMAX;
    const int nch = (b.Qv + BW_QCHUNK - 1) / BW_QCHUNK;
    b.qchunk = (int)round_up((size_t)((b.Qv + nch - 1) / nch), BW_ALIGN);
    b.nband = (g->OH * g->OW + BW_QCHUNK - 1) / BW_QCHUNK;
    b.band = (g->OH + b.nband - 1) / b.nband;
    b.nband = (g->OH + b.band - 1) / b.band;
    const size_t dwn = (size_t)g->O * g->C * g->k * g->k, units = (size_t)g->N * b.nband;
    size_t parts = dwn ? BW_PART_FLOATS / dwn : 0;
    if (parts > BW_PARTS) parts = BW_PARTS;
    if (parts > units) parts = units;
    /* (the shape alone decides, so the summation order never depends on the threads) */
    b.parts = b.G == 1 && g->OW % 8 == 0 && parts >= 4 ? (int)parts : 0;
    return b;
}

/* Floats of one band of the padded input: C planes of band + k - 1 rows of Wp. */
static size_t bw_band_floats(const ssd_conv2d_t *g, const bw_plan_t *b)
{
    return round_up((size_t)g->C * (b->band + g->k - 1) * b->Wp + SLACK, BW_ALIGN);
}

static size_t bw_scratch_floats(const ssd_conv2d_t *g)
{
    const bw_plan_t b = bw_plan(g);
    const size_t taps = (size_t)g->C * g->k * g->k;
    const size_t offs = (taps + 1) * (sizeof(size_t) / sizeof(float)); /* (+1: alignment) */
    if (b.parts) /* partial dw (floats) and db (doubles) per range, band buffers, offsets */
        return round_up((size_t)b.parts * g->O * (taps + 2) + 2, BW_ALIGN) +
               (size_t)ssd_get_num_threads() * bw_band_floats(g, &b) + offs;
    const size_t xp = round_up((size_t)b.G * g->C * b.Hp * b.Wp + SLACK, BW_ALIGN);
    const size_t dq = round_up((size_t)b.G * g->O * b.Qv + SLACK, BW_ALIGN);
    return xp + dq + offs;
}

/* Taps per backward-weight tile: 6 with AVX-512 (ssd__bw_tile6, 24 accumulators), else 3
 * (ssd__bw_tile, 12). */
#ifdef SSD_UKERNEL_AVX512
#define BW_TAPS 6
#else
#define BW_TAPS 3
#endif

/* What the tap tiles of one chunk need: the taps' offsets in the padded input, and where
 * their sums go (dw, or a partial dw). */
typedef struct {
    int K, O;
    const size_t *xoff; /* K offsets */
    float *dw;
} bw_taps_t;

/* dw[o0 .. o0+3][taps of tiles tt0 .. tt1-1] += the tiles' sums over one chunk: pixels
 * d[r] (n per segment, nseg segments dseg apart) against the input at x + the tap's offset
 * (segments xseg apart). Rows past O and taps past K are computed on clamped copies and
 * not stored. */
static void bw_tiles(const bw_taps_t *bt, int o0, int tt0, int tt1, const float *const d[4],
                     const float *x, int n, int nseg, size_t dseg, size_t xseg)
{
    const int K = bt->K, O = bt->O;
    for (int tt = tt0; tt < tt1; ++tt) {
        const int t0 = tt * BW_TAPS;
        const float *xs[BW_TAPS];
        for (int s = 0; s < BW_TAPS; ++s) xs[s] = x + bt->xoff[imin(t0 + s, K - 1)];
        float out[4 * BW_TAPS];
#if BW_TAPS == 6
        ssd__bw_tile6(d, xs, n, nseg, dseg, xseg, out);
#else
        ssd__bw_tile(d[0], d[1], d[2], d[3], xs[0], xs[1], xs[2], n, nseg, dseg, xseg, out);
#endif
        for (int r = 0; r < 4 && o0 + r < O; ++r)
            for (int s = 0; s < BW_TAPS && t0 + s < K; ++s)
                bt->dw[(size_t)(o0 + r) * K + t0 + s] += out[r * BW_TAPS + s];
    }
}

/* The offsets of the K = C*k*k taps in a padded input of `plane` floats per channel and rows
 * of Wp (no divisions in the tile loop), written at the first size_t-aligned place at or
 * after `at` (the scratch holds K + 1 size_t there). */
static const size_t *tap_offsets(const ssd_conv2d_t *g, size_t plane, int Wp, float *at)
{
    const int k = g->k, kk = k * k, K = g->C * kk;
    const uintptr_t a = (uintptr_t)at;
    size_t *off = (size_t *)((a + sizeof(size_t) - 1) / sizeof(size_t) * sizeof(size_t));
    for (int t = 0; t < K; ++t) off[t] = (size_t)(t / kk) * plane + (size_t)(t % kk / k) * Wp + t % k;
    return off;
}

/* Band mode of backward_weight_flat: a task takes one of b->parts fixed ranges of the
 * batch's (image, band) units and, band by band, copies the band's rows of the padded input
 * into its thread's buffer and runs every tile of dw over the band (dy read where it is,
 * each row one segment), into the range's own partial dw, and sums the band's dy into its
 * partial db (in double, while those rows are in cache); the partials are then added in
 * range order. A band's input and dy stay in the core's caches while all of dw's tiles
 * read them, and the result depends on the shape only. */
static void backward_weight_bands(const ssd_conv2d_t *g, const bw_plan_t *b, const float *x,
                                  const float *dy, float *dw, float *db, float *scratch)
{
    const int C = g->C, O = g->O, k = g->k, kk = k * k, pad = g->pad;
    const int H = g->H, W = g->W, OH = g->OH, OW = g->OW, Wp = b->Wp;
    const int K = C * kk, TT = (K + BW_TAPS - 1) / BW_TAPS;
    const int rows = b->band + k - 1;          /* padded input rows of a band */
    const size_t plane = (size_t)rows * Wp;    /* one channel of the band buffer */
    const size_t dwn = (size_t)O * K, units = (size_t)g->N * b->nband;
    const size_t per = (units + b->parts - 1) / b->parts;
    float *part = scratch;
    float *bufs = part + round_up((size_t)b->parts * (dwn + 2 * (size_t)O) + 2, BW_ALIGN);
    /* the partial db, after the partial dw: 8-byte aligned */
    const uintptr_t pdb0 = (uintptr_t)(part + (size_t)b->parts * dwn);
    double *pdb = (double *)((pdb0 + sizeof(double) - 1) / sizeof(double) * sizeof(double));
    const size_t bf = bw_band_floats(g, b);
    const size_t *xoff = tap_offsets(g, plane, Wp, bufs + (size_t)ssd_get_num_threads() * bf);

#pragma omp parallel num_threads(ssd_get_num_threads())
    {
        float *xb = bufs + (size_t)omp_get_thread_num() * bf;
#pragma omp for schedule(dynamic, 1)
        for (int pi = 0; pi < b->parts; ++pi) {
            float *pd = part + (size_t)pi * dwn;
            double *pb = pdb + (size_t)pi * O;
            memset(pd, 0, dwn * sizeof(float));
            for (int o = 0; o < O; ++o) pb[o] = 0.0;
            const bw_taps_t bt = {K, O, xoff, pd};
            const size_t u1 = (size_t)(pi + 1) * per < units ? (size_t)(pi + 1) * per : units;
            for (size_t u = (size_t)pi * per; u < u1; ++u) {
                const int n = (int)(u / b->nband), oh0 = (int)(u % b->nband) * b->band;
                const int nr = imin(b->band, OH - oh0);
                /* rows oh0 - pad .. of the input, zero outside it and in the padding columns */
                for (int c = 0; c < C; ++c)
                    for (int r = 0; r < nr + k - 1; ++r) {
                        float *dst = xb + (size_t)c * plane + (size_t)r * Wp;
                        const int h = oh0 - pad + r;
                        if (h < 0 || h >= H) {
                            memset(dst, 0, (size_t)Wp * sizeof(float));
                            continue;
                        }
                        memset(dst, 0, (size_t)pad * sizeof(float));
                        memcpy(dst + pad, x + (((size_t)n * C + c) * H + h) * W, (size_t)W * sizeof(float));
                        memset(dst + pad + W, 0, (size_t)(Wp - pad - W) * sizeof(float));
                    }
                const float *dyn = dy + (size_t)n * O * OH * OW;
                for (int o0 = 0; o0 < O; o0 += 4) {
                    const float *d[4];
                    for (int r = 0; r < 4; ++r)
                        d[r] = dyn + ((size_t)imin(o0 + r, O - 1) * OH + oh0) * OW;
                    bw_tiles(&bt, o0, 0, TT, d, xb, OW, nr, (size_t)OW, (size_t)Wp);
                    if (db)
                        for (int r = 0; r < 4 && o0 + r < O; ++r) {
                            double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                            for (size_t q = 0; q < (size_t)nr * OW; q += 8) /* (OW % 8 == 0) */
                                for (int l = 0; l < 8; ++l) lane[l] += d[r][q + l];
                            pb[o0 + r] += ((lane[0] + lane[1]) + (lane[2] + lane[3])) +
                                          ((lane[4] + lane[5]) + (lane[6] + lane[7]));
                        }
                }
            }
        }
        /* partials added in range order */
#pragma omp for schedule(static)
        for (size_t i = 0; i < dwn; ++i) {
            float sum = part[i];
            for (int pi = 1; pi < b->parts; ++pi) sum += part[(size_t)pi * dwn + i];
            dw[i] = sum;
        }
        if (db) {
#pragma omp for schedule(static)
            for (int o = 0; o < O; ++o) {
                double sum = 0.0;
                for (int pi = 0; pi < b->parts; ++pi) sum += pdb[(size_t)pi * O + o];
                db[o] = (float)sum;
            }
        }
    }
}

static void backward_weight_flat(const ssd_conv2d_t *g, const float *x, const float *dy,
                                 float *dw, float *db, float *scratch)
{
    const bw_plan_t b = bw_plan(g);
    if (b.parts) {
        backward_weight_bands(g, &b, x, dy, dw, db, scratch);
        return;
    }
    const int C = g->C, O = g->O, k = g->k, kk = k * k, pad = g->pad;
    const int OH = g->OH;
    const int K = C * kk;
    const int Wp = b.Wp, Qv = b.Qv, G = b.G;
    const size_t HpWp = (size_t)b.Hp * b.Wp;
    const size_t xseg = (size_t)C * HpWp, dseg = (size_t)O * Qv;
    float *xp = scratch;                        /* G padded images (+ slack) */
    /* G x O rows of Qv: dy on the padded grid, rows 64-byte aligned if scratch is */
    float *dq = scratch + round_up(G * xseg + SLACK, BW_ALIGN);
    const size_t *xoff = tap_offsets(g, HpWp, Wp, dq + round_up((size_t)G * dseg + SLACK, BW_ALIGN));
    const bw_taps_t bt = {K, O, xoff, dw};

    /* dw is cut into tiles of 4 channels x BW_TAPS taps; a task owns one channel block and
     * a group of tap tiles and runs all pixel chunks of the image group for them, so no two
     * threads ever touch the same dw element and tasks can be scheduled dynamically. */
    const int O4 = (O + 3) / 4, TT = (K + BW_TAPS - 1) / BW_TAPS;

#pragma omp parallel num_threads(ssd_get_num_threads())
    {
        const int nt = omp_get_num_threads();
        int TG = (4 * nt + O4 - 1) / O4; /* tap groups: >= 4 tasks per thread if possible */
        if (TG > TT) TG = TT;
        const int tpg = (TT + TG - 1) / TG; /* tap tiles per group */
        TG = (TT + tpg - 1) / tpg;

        /* Zero once: the padding of xp and the dropped columns / tail of dq stay zero. */
        const int gmax = imin(G, g->N); /* images of the largest group actually used */
#pragma omp for schedule(static)
        for (size_t i = 0; i < gmax * xseg + SLACK; ++i) xp[i] = 0.0f;
#pragma omp for schedule(static)
        for (size_t i = 0; i < gmax * dseg + SLACK; ++i) dq[i] = 0.0f;
#pragma omp for schedule(static)
        for (size_t i = 0; i < (size_t)O * K; ++i) dw[i] = 0.0f;
        if (db) bias_grad(g, dy, db);

        for (int n0 = 0; n0 < g->N; n0 += G) {
            const int gc = imin(G, g->N - n0);
            pad_image(x + (size_t)n0 * C * g->H * g->W, gc * C, g->H, g->W, pad, b.Hp, Wp, xp);
#pragma omp for schedule(static)
            for (int row = 0; row < gc * O * OH; ++row) {
                const int img = row / (O * OH), o = row / OH % O, oh = row % OH;
                memcpy(dq + img * dseg + (size_t)o * Qv + (size_t)oh * Wp,
                       dy + ((size_t)n0 * O * OH + row) * g->OW, (size_t)g->OW * sizeof(float));
            }
            /* (implicit barrier: the group is in place) */

#pragma omp for schedule(dynamic, 1)
            for (int task = 0; task < O4 * TG; ++task) {
                const int o0 = task / TG * 4;
                const int tt0 = task % TG * tpg, tt1 = imin(tt0 + tpg, TT);
                for (int q0 = 0; q0 < Qv; q0 += b.qchunk) {
                    const float *d[4];
                    for (int r = 0; r < 4; ++r)
                        d[r] = dq + (size_t)imin(o0 + r, O - 1) * Qv + q0;
                    bw_tiles(&bt, o0, tt0, tt1, d, xp + q0, imin(b.qchunk, Qv - q0), gc, dseg,
                             xseg);
                }
            }
            /* (implicit barrier: the group's buffers can be overwritten) */
        }
    }
}

void ssd_conv2d_backward_weight(const ssd_conv2d_t *g, const float *x, const float *dy,
                                float *dw, float *db, float *scratch)
{
    const int K = g->C * g->k * g->k;
    ssd_convg_t cg;
    if (empty_output(g) || g->N <= 0 || K <= 0) {
        if (K > 0) memset(dw, 0, (size_t)g->O * K * sizeof(float));
        if (db && (empty_output(g) || g->N <= 0)) {
            memset(db, 0, (size_t)g->O * sizeof(float));
        } else if (db) {
#pragma omp parallel num_threads(ssd_get_num_threads())
            bias_grad(g, dy, db);
        }
        return;
    }
    if (ssd__winograd_bw_applies(g)) {
        ssd__winograd_backward_weight(g->N, g->C, g->H, g->W, g->O, x, dy, dw, scratch);
    } else if (fast_backward_weight(g)) {
        backward_weight_flat(g, x, dy, dw, db, scratch); /* (db in the same pass) */
        return;
    } else if (strided_direct(g, &cg)) {
        ssd__convd_backward_weight(&cg, x, dy, dw, scratch);
    } else {
        const int OHOW = g->OH * g->OW;
        for (int n = 0; n < g->N; ++n) {
            im2col(g, x + (size_t)n * g->C * g->H * g->W, scratch);
            ssd_sgemm(0, 1, g->O, K, OHOW, 1.0f, dy + (size_t)n * g->O * OHOW, OHOW, scratch,
                      OHOW, n == 0 ? 0.0f : 1.0f, dw, K);
        }
    }
    if (db) {
#pragma omp parallel num_threads(ssd_get_num_threads())
        bias_grad(g, dy, db);
    }
}
