/*
 * conv_direct.c — direct convolution for convs with few input channels (a network's stem:
 * 3 image channels, 7x7, stride 2), NCHW float32. conv_general.c calls it for the forward
 * and the weight gradient when ssd__convd_applies says so; the data gradient stays on
 * im2col + GEMM (a stem's input is the image, which needs none).
 *
 * Why not im2col + GEMM here: with C = 3 and a 7x7 kernel the GEMM is M = O = 8 rows by
 * K = 147 by the whole output map, so the column matrix is 147 rows of 16384 floats per
 * 128x128 image (9.6 MB, written once and read once, far outside the caches) and the
 * micro-kernel's tile is mostly idle for 8 rows.
 *
 * The layout that makes a direct loop vector-friendly at any stride: the zero-padded input
 * of one image is split by stride phase into sh x sw planes, plane (a, b) holding the
 * padded pixels (sh*u + a, sw*v + b). Tap (c, i, j) of output row oh then reads one
 * contiguous row of plane ((i*dh) % sh, (j*dw) % sw), shifted by ((i*dh)/sh, (j*dw)/sw),
 * and a tile of SSD_DC_TW output pixels x 8 output channels stays in vector registers:
 * one load and 8 multiply-adds per tap. The planes of one image are about C*(H+2p)*(W+2p)
 * floats (0.8 MB for 3 x 262 x 262), built once per image and kept in cache.
 *
 * Orders: each output is summed by one thread, taps in (c, i, j) order; the weight gradient
 * of each (o, tap) is summed per image in float lanes over the rows, then added in double,
 * images in order. Neither depends on the thread count.
 */
#include "ops_internal.h"

#include <omp.h>
#include <string.h>

/* Output pixels per tile: one vector register of the ISA the library is built for. */
#if defined(__AVX512F__)
#define SSD_DC_TW 16
#elif defined(__AVX__)
#define SSD_DC_TW 8
#else
#define SSD_DC_TW 4
#endif
/* Output channels per block (accumulators per tile). */
#define SSD_DC_OB 8
/* Tiles the forward computes at once: two with AVX-512's 32 registers (16 accumulators,
 * each broadcast weight used twice), one with AVX's 16. */
#if defined(__AVX512F__)
#define SSD_DC_TILES 2
#else
#define SSD_DC_TILES 1
#endif
#define SSD_DC_STEP (SSD_DC_TW * SSD_DC_TILES)

typedef float dc_vec __attribute__((vector_size(SSD_DC_TW * sizeof(float))));

static inline dc_vec dc_load(const float *p)
{
    dc_vec v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Few input channels (measured on AVX-512: at 3 and 8 channels the direct loops beat
 * im2col + GEMM by 1.3-6x, at 32 they lose), a real kernel window, and rows of at least
 * one whole tile on every ISA. The same geometry picks the same algorithm everywhere. */
int ssd__convd_applies(const ssd_convg_t *g)
{
    return g->groups == 1 && g->C <= 8 && g->kh * g->kw > 1 && g->OW >= 16 && g->OH > 0 &&
           g->O > 0;
}

/* The phase planes' geometry: rows Hq and row length Wq of each of the sh*sw*C planes. */
typedef struct {
    int Hq, Wq, OWt; /* OWt: OW rounded up to whole forward steps (SSD_DC_STEP) */
    size_t plane;     /* floats of one (a, b, c) plane */
} dc_planes;

static dc_planes planes_of(const ssd_convg_t *g)
{
    dc_planes p;
    p.OWt = (g->OW + SSD_DC_STEP - 1) / SSD_DC_STEP * SSD_DC_STEP;
    p.Hq = g->OH + (g->kh - 1) * g->dh / g->sh;
    p.Wq = p.OWt + (g->kw - 1) * g->dw / g->sw;
    p.plane = (size_t)p.Hq * p.Wq;
    return p;
}

static int taps_of(const ssd_convg_t *g) { return g->C * g->kh * g->kw; }
static int blocks_of(const ssd_convg_t *g) { return (g->O + SSD_DC_OB - 1) / SSD_DC_OB; }

/* Scratch, in this order: the planes; the weights packed by block (tap-major, 8 channels
 * per tap, zeros past O); the weight gradient's running float sums per (block, tap): 8
 * vectors of lanes, then 8 tail sums; the taps' offsets (tap_offsets); the weight
 * gradient's double sums. Vectors are loaded and stored unaligned (dc_load, memcpy). */
size_t ssd__convd_scratch_floats(const ssd_convg_t *g)
{
    const dc_planes p = planes_of(g);
    const size_t pairs = (size_t)blocks_of(g) * taps_of(g);
    return (size_t)g->sh * g->sw * g->C * p.plane + pairs * SSD_DC_OB * (SSD_DC_TW + 1) + pairs * SSD_DC_OB +
           taps_of(g) + 2 * (size_t)g->O * taps_of(g) + 2;
}

/* The parts of the scratch (see ssd__convd_scratch_floats). */
typedef struct {
    float *planes, *packed, *part, *tail;
    int *off;
    double *sum;
} dc_scratch;

static dc_scratch scratch_of(const ssd_convg_t *g, const dc_planes *p, float *scratch)
{
    const size_t pairs = (size_t)blocks_of(g) * taps_of(g);
    dc_scratch s;
    s.planes = scratch;
    s.packed = s.planes + (size_t)g->sh * g->sw * g->C * p->plane;
    s.part = s.packed + pairs * SSD_DC_OB;
    s.tail = s.part + pairs * SSD_DC_OB * SSD_DC_TW;
    s.off = (int *)(void *)(s.tail + pairs * SSD_DC_OB);
    float *after = (float *)(void *)(s.off + taps_of(g));
    s.sum = (double *)(void *)(after + ((uintptr_t)after % sizeof(double) ? 1 : 0));
    return s;
}

/* The phase planes of one image xn (C x H x W) into `planes`. */
static void build_planes(const ssd_convg_t *g, const dc_planes *p, const float *xn, float *planes)
{
    const int rows = g->sh * g->sw * g->C * p->Hq;
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int r = 0; r < rows; ++r) {
        const int u = r % p->Hq, abc = r / p->Hq, c = abc % g->C, ab = abc / g->C;
        const int a = ab / g->sw, b = ab % g->sw;
        float *dst = planes + (size_t)abc * p->plane + (size_t)u * p->Wq;
        const int ih = u * g->sh + a - g->ph;
        int lo, hi;
        ssd__valid_range(p->Wq, g->sw, b - g->pw, g->W, &lo, &hi);
        if (ih < 0 || ih >= g->H || lo >= hi) {
            memset(dst, 0, (size_t)p->Wq * sizeof(float));
            continue;
        }
        const float *xr = xn + ((size_t)c * g->H + ih) * g->W + b - g->pw;
        for (int v = 0; v < lo; ++v) dst[v] = 0.0f;
        if (g->sw == 1) { /* constant strides, so the copy vectorises */
            for (int v = lo; v < hi; ++v) dst[v] = xr[v];
        } else if (g->sw == 2) {
            for (int v = lo; v < hi; ++v) dst[v] = xr[2 * v];
        } else {
            for (int v = lo; v < hi; ++v) dst[v] = xr[v * g->sw];
        }
        for (int v = hi; v < p->Wq; ++v) dst[v] = 0.0f;
    }
}

/* off[t] = where tap t = (c, i, j) reads output row 0, column 0 in the planes: row oh of
 * the tap starts at planes + off[t] + oh * Wq. */
static void tap_offsets(const ssd_convg_t *g, const dc_planes *p, int *off)
{
    const int kk = g->kh * g->kw;
    for (int t = 0; t < taps_of(g); ++t) {
        const int c = t / kk, i = t % kk / g->kw, j = t % g->kw;
        const int a = i * g->dh % g->sh, b = j * g->dw % g->sw;
        const int du = i * g->dh / g->sh, dv = j * g->dw / g->sw;
        off[t] = (int)(((size_t)(a * g->sw + b) * g->C + c) * p->plane + (size_t)du * p->Wq + dv);
    }
}

/* wp[block][tap][8] = w[block*8 + k][tap], zeros past O. */
static void pack_weights(const ssd_convg_t *g, const float *w, float *wp)
{
    const int K = taps_of(g);
    for (int blk = 0; blk < blocks_of(g); ++blk)
        for (int t = 0; t < K; ++t)
            for (int k = 0; k < SSD_DC_OB; ++k) {
                const int o = blk * SSD_DC_OB + k;
                wp[((size_t)blk * K + t) * SSD_DC_OB + k] = o < g->O ? w[(size_t)o * K + t] : 0.0f;
            }
}

/* out[k][q] = sum over taps t of wb[t][k] * xrow[off[t] + q], for SSD_DC_STEP pixels q:
 * SSD_DC_TILES x 8 accumulators in registers. */
static void forward_step(const float *xrow, const int *off, const float *wb, int K,
                         float out[SSD_DC_OB][SSD_DC_STEP])
{
    dc_vec acc[SSD_DC_TILES][SSD_DC_OB];
    for (int u = 0; u < SSD_DC_TILES; ++u)
        for (int k = 0; k < SSD_DC_OB; ++k) acc[u][k] = (dc_vec){0};
    for (int t = 0; t < K; ++t) {
        const float *wt = wb + (size_t)t * SSD_DC_OB;
        for (int u = 0; u < SSD_DC_TILES; ++u) {
            const dc_vec xv = dc_load(xrow + off[t] + u * SSD_DC_TW);
            for (int k = 0; k < SSD_DC_OB; ++k) acc[u][k] += wt[k] * xv;
        }
    }
    for (int u = 0; u < SSD_DC_TILES; ++u)
        for (int k = 0; k < SSD_DC_OB; ++k) memcpy(&out[k][u * SSD_DC_TW], &acc[u][k], sizeof acc[u][k]);
}

void ssd__convd_forward(const ssd_convg_t *g, const float *x, const float *w, const float *b,
                        float *y, int act, float *scratch)
{
    const dc_planes p = planes_of(g);
    const int K = taps_of(g), B = blocks_of(g), OHOW = g->OH * g->OW;
    const dc_scratch s = scratch_of(g, &p, scratch);
    float *planes = s.planes, *wp = s.packed;
    const int *off = s.off;
    pack_weights(g, w, wp);
    tap_offsets(g, &p, s.off);
    for (int n = 0; n < g->N; ++n) {
        build_planes(g, &p, x + (size_t)n * g->C * g->H * g->W, planes);
        float *yn = y + (size_t)n * g->O * OHOW;
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
        for (int row = 0; row < B * g->OH; ++row) {
            const int blk = row / g->OH, oh = row % g->OH;
            const float *wb = wp + (size_t)blk * K * SSD_DC_OB;
            for (int ow0 = 0; ow0 < p.OWt; ow0 += SSD_DC_STEP) {
                float out[SSD_DC_OB][SSD_DC_STEP];
                forward_step(planes + (size_t)oh * p.Wq + ow0, off, wb, K, out);
                const int width = g->OW - ow0 < SSD_DC_STEP ? g->OW - ow0 : SSD_DC_STEP;
                for (int k = 0; k < SSD_DC_OB; ++k) {
                    const int o = blk * SSD_DC_OB + k;
                    if (o >= g->O) break;
                    const float bv = b ? b[o] : 0.0f;
                    float *yr = yn + (size_t)o * OHOW + (size_t)oh * g->OW + ow0;
                    for (int q = 0; q < width; ++q) yr[q] = ssd__act(out[k][q] + bv, act);
                }
            }
        }
    }
}

/* The whole tiles of output rows [oh0, oh1) of a full block of dy (8 channels at dyb),
 * packed as [row][tile][channel][lane] so that one tile's 8 vectors are contiguous. */
static void pack_band(const ssd_convg_t *g, const float *dyb, int oh0, int oh1, float *pk)
{
    const int OHOW = g->OH * g->OW, full = g->OW / SSD_DC_TW * SSD_DC_TW;
    for (int oh = oh0; oh < oh1; ++oh)
        for (int ow0 = 0; ow0 < full; ow0 += SSD_DC_TW)
            for (int k = 0; k < SSD_DC_OB; ++k, pk += SSD_DC_TW)
                memcpy(pk, dyb + (size_t)k * OHOW + (size_t)oh * g->OW + ow0, SSD_DC_TW * sizeof(float));
}

/* acc (8 vectors of lanes) += the products of a packed band of dy (pk, rows [oh0, oh1)
 * of a full block) with the whole tiles of the tap's rows (xr: row 0). Its own function so
 * that the accumulators, indexed by constants only, stay in registers. */
static void weight_rows_packed(const ssd_convg_t *g, const dc_planes *p, const float *xr,
                               const float *pk, int oh0, int oh1, float *acc)
{
    const int full = g->OW / SSD_DC_TW * SSD_DC_TW;
    dc_vec a[SSD_DC_OB];
    for (int k = 0; k < SSD_DC_OB; ++k) a[k] = dc_load(acc + k * SSD_DC_TW);
    for (int oh = oh0; oh < oh1; ++oh) {
        const float *x = xr + (size_t)oh * p->Wq;
        for (int ow0 = 0; ow0 < full; ow0 += SSD_DC_TW, pk += SSD_DC_OB * SSD_DC_TW) {
            const dc_vec xv = dc_load(x + ow0);
            for (int k = 0; k < SSD_DC_OB; ++k) a[k] += dc_load(pk + k * SSD_DC_TW) * xv;
        }
    }
    for (int k = 0; k < SSD_DC_OB; ++k) memcpy(acc + k * SSD_DC_TW, &a[k], sizeof a[k]);
}

/* Adds the products of output rows [oh0, oh1) of dy (block of ob <= 8 channels at dyb;
 * for a full block also packed in pk by pack_band, or pk NULL) with the tap's rows (xr:
 * row 0) to the lanes acc, and those of the columns past the last whole tile to tail. */
static void weight_rows(const ssd_convg_t *g, const dc_planes *p, const float *xr,
                        const float *dyb, const float *pk, int ob, int oh0, int oh1, float *acc,
                        float *tail)
{
    const int OHOW = g->OH * g->OW, full = g->OW / SSD_DC_TW * SSD_DC_TW;
    if (pk) weight_rows_packed(g, p, xr, pk, oh0, oh1, acc);
    for (int oh = oh0; oh < oh1; ++oh) {
        const float *x = xr + (size_t)oh * p->Wq, *d = dyb + (size_t)oh * g->OW;
        if (!pk) {
            for (int ow0 = 0; ow0 < full; ow0 += SSD_DC_TW)
                for (int k = 0; k < ob; ++k)
                    for (int q = 0; q < SSD_DC_TW; ++q)
                        acc[k * SSD_DC_TW + q] += d[(size_t)k * OHOW + ow0 + q] * x[ow0 + q];
        }
        for (int k = 0; k < ob; ++k)
            for (int ow = full; ow < g->OW; ++ow) tail[k] += d[(size_t)k * OHOW + ow] * x[ow];
    }
}

/* Floats of a thread's packed band of dy (pack_band), on its stack. */
#define SSD_DC_BAND_FLOATS 4096

/* dw[o][tap] = sum over images and pixels of dy[o] * the tap's input. Each thread owns a
 * fixed range of (block, tap) pairs and walks the rows in bands small enough that the band
 * of dy (8 channels, packed) stays in L1 while every tap of the range reads it; the running
 * sums of a pair wait in scratch between bands. */
void ssd__convd_backward_weight(const ssd_convg_t *g, const float *x, const float *dy,
                                float *dw, float *scratch)
{
    const dc_planes p = planes_of(g);
    const int K = taps_of(g), B = blocks_of(g), OHOW = g->OH * g->OW;
    const dc_scratch s = scratch_of(g, &p, scratch);
    double *sum = s.sum;
    tap_offsets(g, &p, s.off);
    memset(sum, 0, (size_t)g->O * K * sizeof(double));
    /* rows per band: 8 channels of dy's whole tiles in SSD_DC_BAND_FLOATS, if one row fits */
    const int rowFloats = SSD_DC_OB * (g->OW / SSD_DC_TW * SSD_DC_TW);
    const int band = rowFloats > 0 && rowFloats <= SSD_DC_BAND_FLOATS ? SSD_DC_BAND_FLOATS / rowFloats : 1;
    const int packs = rowFloats > 0 && rowFloats <= SSD_DC_BAND_FLOATS;
    for (int n = 0; n < g->N; ++n) {
        build_planes(g, &p, x + (size_t)n * g->C * g->H * g->W, s.planes);
        const float *dyn = dy + (size_t)n * g->O * OHOW;
#pragma omp parallel num_threads(ssd_get_num_threads())
        {
            const int nt = omp_get_num_threads(), id = omp_get_thread_num();
            const int lo = (int)((int64_t)B * K * id / nt), hi = (int)((int64_t)B * K * (id + 1) / nt);
            if (hi > lo) {
                memset(s.part + (size_t)lo * SSD_DC_OB * SSD_DC_TW, 0,
                       (size_t)(hi - lo) * SSD_DC_OB * SSD_DC_TW * sizeof(float));
                memset(s.tail + (size_t)lo * SSD_DC_OB, 0, (size_t)(hi - lo) * SSD_DC_OB * sizeof(float));
            }
            float pk[SSD_DC_BAND_FLOATS];
            for (int oh0 = 0; oh0 < g->OH; oh0 += band) {
                const int oh1 = oh0 + band < g->OH ? oh0 + band : g->OH;
                int packed = -1; /* the block pk holds */
                for (int bt = lo; bt < hi; ++bt) {
                    const int blk = bt / K, t = bt % K, o0 = blk * SSD_DC_OB;
                    const int ob = g->O - o0 < SSD_DC_OB ? g->O - o0 : SSD_DC_OB;
                    const int usePack = packs && ob == SSD_DC_OB;
                    if (usePack && packed != blk) {
                        pack_band(g, dyn + (size_t)o0 * OHOW, oh0, oh1, pk);
                        packed = blk;
                    }
                    weight_rows(g, &p, s.planes + s.off[t], dyn + (size_t)o0 * OHOW,
                                usePack ? pk : NULL, ob, oh0, oh1,
                                s.part + (size_t)bt * SSD_DC_OB * SSD_DC_TW,
                                s.tail + (size_t)bt * SSD_DC_OB);
                }
            }
            for (int bt = lo; bt < hi; ++bt) {
                const int blk = bt / K, t = bt % K, o0 = blk * SSD_DC_OB;
                const int ob = g->O - o0 < SSD_DC_OB ? g->O - o0 : SSD_DC_OB;
                const float *acc = s.part + (size_t)bt * SSD_DC_OB * SSD_DC_TW;
                for (int k = 0; k < ob; ++k) {
                    float v = s.tail[(size_t)bt * SSD_DC_OB + k];
                    for (int q = 0; q < SSD_DC_TW; ++q) v += acc[k * SSD_DC_TW + q];
                    sum[(size_t)(o0 + k) * K + t] += v;
                }
            }
        }
    }
    for (size_t q = 0; q < (size_t)g->O * K; ++q) dw[q] = (float)sum[q];
}
