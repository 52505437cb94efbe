/*
 * winograd.c — 3x3, stride-1, pad-1 convolution by Winograd's minimal filtering F(2x2, 3x3).
 *
 * Each 2x2 block ("tile") of the output is computed from the 4x4 input patch around it
 * with 16 multiplies per (input, output channel) pair instead of 36:
 *
 *     Y = A^T [ sum_c (G g_c G^T) .* (B^T d_c B) ] A
 *
 *   B^T = | 1  0 -1  0 |     G = | 1    0    0  |     A^T = | 1  1  1  0 |
 *         | 0  1  1  0 |         | 1/2  1/2  1/2 |           | 0  1 -1 -1 |
 *         | 0 -1  1  0 |         | 1/2 -1/2  1/2 |
 *         | 0  1  0 -1 |         | 0    0    1  |
 *
 * The sum over input channels is, for each of the 16 positions xi of the 4x4 transform, a
 * matrix product M_xi (out x tiles) = U_xi (out x in) * V_xi (in x tiles), so the multiply
 * count of the convolution falls by 36/16 = 2.25 and the work becomes 16 GEMMs with a
 * reduction as long as the number of input channels. They run on gemm.c's 4 x NR
 * micro-kernel (NR = 24, or 48 with AVX-512):
 *
 *   - U = G g G^T for every (out, in) pair, packed per xi into 4-row micro-panels (once
 *     per call, shared by the team);
 *   - a task is one image's block of `nb` consecutive tiles (raster order, a multiple of
 *     24); it transforms the input patches of the block straight into packed B panels
 *     (V_xi, in x 24), runs the 16 products into its M block, then applies A^T . A with
 *     bias and ReLU and writes the 2x2 outputs (or, for ssd_conv2d_forward_pool, the max
 *     of each tile: a 2x2 pool). V and M stay in the thread's own scratch,
 *     sized to stay near L2; nothing is shared between tasks, so results do not depend on
 *     the thread count;
 *   - input transform and output transform handle 8 tiles of one tile row at a time (the
 *     8 lanes of an AVX vector: AVX2 code, with a plain C version of the same arithmetic
 *     for other targets), or 16 with AVX-512 where the tile rows hold whole groups of 16
 *     (winograd_avx512.c, the same arithmetic); the 4 x 18 input patch of an 8-tile group
 *     is read in place, or through a zero-padded copy at the borders (the 16-tile groups
 *     use masked loads instead).
 *
 * Backward-data of the same conv is the same computation on dy with the weights flipped
 * and in/out swapped (U from w[o][c][2-i][2-j], as row c, column o).
 *
 * Rounding differs from the direct convolution (the transforms add and subtract inputs
 * before the multiply); tests bound the difference.
 *
 * With weights prepared for inference, layers of up to 128 channels on maps of whole 4x4-tile groups run
 * F(4x4, 3x3) instead (winograd4.c; ssd__wg4_applies gives the rule).
 */
#include "ssd_runtime.h"
#include "gemm_internal.h"
#include "winograd_internal.h"

#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define WG_AVX2 1

/* The even / odd elements of the 16 floats u, v (u first), in order. */
static inline __m256 even8(__m256 u, __m256 v)
{
    const __m256 t = _mm256_shuffle_ps(u, v, _MM_SHUFFLE(2, 0, 2, 0));
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), _MM_SHUFFLE(3, 1, 2, 0)));
}

static inline __m256 odd8(__m256 u, __m256 v)
{
    const __m256 t = _mm256_shuffle_ps(u, v, _MM_SHUFFLE(3, 1, 3, 1));
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), _MM_SHUFFLE(3, 1, 2, 0)));
}
#endif

#define WG_LANES 8          /* tiles per transform group */
#define WG_BUDGET 65536     /* floats of V + M per block aimed at (256 KB) */
#define WG_PANELS_MAX 8     /* most NR-tile panels per block */
#define WG_STREAM_BYTES ((size_t)16 << 20) /* outputs at least this large are streamed */

static inline size_t round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }

/* SSDC_WINOGRAD=0 in the environment turns this path off (to compare with the direct
 * convolution), SSDC_WINOGRAD=2 keeps it to F(2x2, 3x3) (to compare with F(4x4, 3x3) of
 * winograd4.c); read once, unless ssd__winograd_enable has turned the path on or off. The
 * choice of F(4x4) is fixed for the process, as prepared weights depend on it. */
static int g_state = -1, g_tiles4 = -1;

static void read_env(void)
{
    const char *v = getenv("SSDC_WINOGRAD");
    if (g_state < 0) g_state = !(v && strcmp(v, "0") == 0);
    if (g_tiles4 < 0) g_tiles4 = !(v && strcmp(v, "2") == 0);
}

static int enabled(void)
{
    if (g_state < 0) read_env();
    return g_state;
}

/* Whether prepared weights of a conv Cs -> M on an H x W map (same size in and out) are
 * for F(4x4, 3x3). */
static int tiles4(int Cs, int M, int H, int W)
{
    if (g_tiles4 < 0) read_env();
    return g_tiles4 && ssd__wg4_applies(Cs, M, H, W);
}

void ssd__winograd_enable(int on) { g_state = on != 0; }
int ssd__winograd_enabled(void) { return enabled(); }

/* The geometry both algorithms need: 3x3, stride 1, pad 1 (so the output has the input's
 * size), whole 8-tile groups along a row (OW a multiple of 16, OH even). */
static int wg_geometry(const ssd_conv2d_t *g)
{
    return g->k == 3 && g->stride == 1 && g->pad == 1 && g->OW % 16 == 0 && g->OH % 2 == 0 &&
           g->OH >= 2;
}

/* That geometry, at least min_pixels output pixels over the batch, and the path not
 * turned off. */
static int wg_shape(const ssd_conv2d_t *g, long min_pixels)
{
    return enabled() && wg_geometry(g) && g->N > 0 && (long)g->N * g->OH * g->OW >= min_pixels;
}

/* The forward's channel rule, apart from the batch (see ssd__winograd_applies). */
static int wg_forward_channels(const ssd_conv2d_t *g)
{
    return (g->C < g->O ? g->C : g->O) >= 16;
}

int ssd__winograd_applies(const ssd_conv2d_t *g, int backward_data)
{
    /* At least 16 channels on each side: below that the transforms cost more than the
     * multiplies save. Backward-data also needs 32 on one side (16 -> 16 at 256 x 256,
     * batch 32: forward 1.1-1.3x the direct conv, backward-data 0.98x; 16 -> 32 at
     * 128 x 128: 1.3-1.4x both ways).
     * The weights are transformed on every call, which the pixels of the call must pay
     * for: at 256 output pixels (a 16 x 16 map at batch 1) it still does (128 -> 128:
     * 0.86 ms against 1.15 ms, 1 thread); smaller maps fail the shape test anyway. */
    const int hi = g->C < g->O ? g->O : g->C;
    return wg_shape(g, 256) && wg_forward_channels(g) && (!backward_data || hi >= 32);
}

size_t ssd__winograd_prepared_floats(const ssd_conv2d_t *g)
{
    if (!wg_geometry(g) || !wg_forward_channels(g)) return 0;
    if (tiles4(g->C, g->O, g->OH, g->OW)) return ssd__wg4_prepared_floats(g->C, g->O);
    return (size_t)16 * round_up((size_t)g->O, SSD_MR) * g->C;
}

typedef struct {
    int Cs, M, H, W;   /* source channels, output channels, map size (same in and out) */
    int tw, T;         /* tiles per row, tiles per image */
    int nb, nblk;      /* tiles per block (multiple of 24), blocks per image */
    int Mpad;
} wg_plan_t;

static wg_plan_t wg_plan(int Cs, int M, int H, int W)
{
    wg_plan_t p;
    p.Cs = Cs;
    p.M = M;
    p.H = H;
    p.W = W;
    p.tw = W / 2;
    p.T = (H / 2) * p.tw;
    p.Mpad = (int)round_up((size_t)M, SSD_MR);
    int panels = WG_BUDGET / (16 * SSD_NR * (Cs + p.Mpad));
    if (panels < 1) panels = 1;
    if (panels > WG_PANELS_MAX) panels = WG_PANELS_MAX;
    const int need = (p.T + SSD_NR - 1) / SSD_NR;
    if (panels > need) panels = need;
    p.nb = panels * SSD_NR;
    p.nblk = (p.T + p.nb - 1) / p.nb;
    return p;
}

static size_t wg_thread_floats(const wg_plan_t *p)
{
    return (size_t)16 * p->nb * ((size_t)p->Cs + p->Mpad);
}

size_t ssd__winograd_scratch_floats(int Cs, int M, int H, int W)
{
    const wg_plan_t p = wg_plan(Cs, M, H, W);
    const size_t u = (size_t)16 * p.Mpad * Cs;
    const size_t s = u + (size_t)ssd_get_num_threads() * wg_thread_floats(&p) + 16;
    if (!tiles4(Cs, M, H, W)) return s;
    const size_t s4 = ssd__wg4_scratch_floats(Cs, M, H, W); /* (with prepared weights) */
    return s4 > s ? s4 : s;
}

/* U_xi packed for the micro-kernel: U + xi*Mpad*Cs + ir*Cs + c*MR + r (row m = ir + r).
 * A task is one block of MR rows: for each input channel it writes MR consecutive floats
 * in each of the 16 planes. Runs inside a parallel region (an omp for). */
static void transform_weights(int Cs, int M, const float *w, int transposed, float *U)
{
    const int Mpad = (int)round_up((size_t)M, SSD_MR);
    const size_t plane = (size_t)Mpad * Cs;
#pragma omp for schedule(static)
    for (int ir = 0; ir < Mpad; ir += SSD_MR) {
        for (int c = 0; c < Cs; ++c) {
            float u[16][SSD_MR];
            for (int r = 0; r < SSD_MR; ++r) {
                const int m = ir + r;
                float g[9];
                if (m >= M) {
                    for (int t = 0; t < 9; ++t) g[t] = 0.0f;
                } else if (!transposed) { /* forward: w is M x Cs x 3 x 3 */
                    const float *s = w + ((size_t)m * Cs + c) * 9;
                    for (int t = 0; t < 9; ++t) g[t] = s[t];
                } else { /* backward-data: w is Cs x M x 3 x 3, flipped */
                    const float *s = w + ((size_t)c * M + m) * 9;
                    for (int t = 0; t < 9; ++t) g[t] = s[8 - t];
                }
                float t[4][3]; /* G g */
                for (int j = 0; j < 3; ++j) {
                    t[0][j] = g[j];
                    t[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
                    t[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
                    t[3][j] = g[6 + j];
                }
                for (int i = 0; i < 4; ++i) { /* (G g) G^T */
                    u[i * 4 + 0][r] = t[i][0];
                    u[i * 4 + 1][r] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
                    u[i * 4 + 2][r] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
                    u[i * 4 + 3][r] = t[i][2];
                }
            }
            float *dst = U + (size_t)ir * Cs + (size_t)c * SSD_MR;
            for (int xi = 0; xi < 16; ++xi)
                for (int r = 0; r < SSD_MR; ++r) dst[xi * plane + r] = u[xi][r];
        }
    }
}

/* Input transform of the 8 tiles (ty, tx0 .. tx0+7) of channel plane x (H x W) into
 * V[xi*vstride + lane]. */
static void input_group(const float *x, int H, int W, int ty, int tx0, float *V, size_t vstride)
{
    /* rows 2ty-1 .. 2ty+2, columns 2tx0-1 .. 2tx0+16: in place, or through a zero-padded
     * copy of the row at the left and right borders; rows outside are zeros */
    static const float zeros[2 * WG_LANES + 2];
    const int r0 = 2 * ty - 1, c0 = 2 * tx0 - 1;
    float pad[4][2 * WG_LANES + 2];
    const float *row[4];
    for (int i = 0; i < 4; ++i) {
        const int r = r0 + i;
        if (r < 0 || r >= H) {
            row[i] = zeros;
        } else if (c0 >= 0 && c0 + 2 * WG_LANES + 1 < W) {
            row[i] = x + (size_t)r * W + c0;
        } else {
            const int lo = c0 < 0 ? -c0 : 0;
            const int hi = c0 + 2 * WG_LANES + 2 > W ? W - c0 : 2 * WG_LANES + 2;
            memset(pad[i], 0, sizeof pad[i]);
            memcpy(pad[i] + lo, x + (size_t)r * W + c0 + lo, (size_t)(hi - lo) * sizeof(float));
            row[i] = pad[i];
        }
    }
#ifdef WG_AVX2
    /* lane l of tile row i: p[2l .. 2l+3] = e0, o0, e1, o1 (even/odd columns, and the
     * same one pair to the right) */
    __m256 cb[4][4];
    for (int i = 0; i < 4; ++i) {
        const float *p = row[i];
        const __m256 a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8);
        const __m256 a2 = _mm256_loadu_ps(p + 2), b2 = _mm256_loadu_ps(p + 10);
        const __m256 e0 = even8(a, b), o0 = odd8(a, b);
        const __m256 e1 = even8(a2, b2), o1 = odd8(a2, b2);
        cb[i][0] = _mm256_sub_ps(e0, e1);
        cb[i][1] = _mm256_add_ps(o0, e1);
        cb[i][2] = _mm256_sub_ps(e1, o0);
        cb[i][3] = _mm256_sub_ps(o0, o1);
    }
    for (int j = 0; j < 4; ++j) {
        _mm256_storeu_ps(V + (size_t)(0 * 4 + j) * vstride, _mm256_sub_ps(cb[0][j], cb[2][j]));
        _mm256_storeu_ps(V + (size_t)(1 * 4 + j) * vstride, _mm256_add_ps(cb[1][j], cb[2][j]));
        _mm256_storeu_ps(V + (size_t)(2 * 4 + j) * vstride, _mm256_sub_ps(cb[2][j], cb[1][j]));
        _mm256_storeu_ps(V + (size_t)(3 * 4 + j) * vstride, _mm256_sub_ps(cb[1][j], cb[3][j]));
    }
#else
    /* columns: d B, per row (tile lane l uses p[2l .. 2l+3]) */
    float cb[4][4][WG_LANES];
    for (int i = 0; i < 4; ++i) {
        const float *p = row[i];
        for (int l = 0; l < WG_LANES; ++l) {
            const float e0 = p[2 * l], o0 = p[2 * l + 1], e1 = p[2 * l + 2], o1 = p[2 * l + 3];
            cb[i][0][l] = e0 - e1;
            cb[i][1][l] = o0 + e1;
            cb[i][2][l] = e1 - o0;
            cb[i][3][l] = o0 - o1;
        }
    }
    /* rows: B^T (d B) */
    for (int j = 0; j < 4; ++j) {
        float *v0 = V + (size_t)(0 * 4 + j) * vstride, *v1 = V + (size_t)(1 * 4 + j) * vstride;
        float *v2 = V + (size_t)(2 * 4 + j) * vstride, *v3 = V + (size_t)(3 * 4 + j) * vstride;
        for (int l = 0; l < WG_LANES; ++l) {
            v0[l] = cb[0][j][l] - cb[2][j][l];
            v1[l] = cb[1][j][l] + cb[2][j][l];
            v2[l] = cb[2][j][l] - cb[1][j][l];
            v3[l] = cb[1][j][l] - cb[3][j][l];
        }
    }
#endif
}

/* The 2x2 max pool's rule (pool.c): v replaces the max so far m if v > m or v is NaN,
 * taking the window's values in the order (0,0), (0,1), (1,0), (1,1). */
#ifndef WG_AVX2
static inline float pool_takes(float v, float m) { return (v > m || v != v) ? v : m; }
#endif

/* Output transform of 8 tiles of one output channel: m[xi*mstride + lane] -> the 2 x 16
 * outputs at y (pixel (r, c) at y[(r*W + c)*ldp]), plus bias, then ReLU. pool != 0: the
 * max of each tile's 2x2 outputs instead, the 8 pooled pixels at y[l*ldp]. */
static void output_group(const float *m, size_t mstride, float bias, int relu, float *y, int W,
                         size_t ldp, int pool)
{
#ifdef WG_AVX2
    __m256 s0[4], s1[4];
    for (int j = 0; j < 4; ++j) {
        const __m256 m0 = _mm256_loadu_ps(m + (size_t)(0 * 4 + j) * mstride);
        const __m256 m1 = _mm256_loadu_ps(m + (size_t)(1 * 4 + j) * mstride);
        const __m256 m2 = _mm256_loadu_ps(m + (size_t)(2 * 4 + j) * mstride);
        const __m256 m3 = _mm256_loadu_ps(m + (size_t)(3 * 4 + j) * mstride);
        s0[j] = _mm256_add_ps(_mm256_add_ps(m0, m1), m2);
        s1[j] = _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3);
    }
    const __m256 vb = _mm256_set1_ps(bias);
    __m256 a = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(s0[0], s0[1]), s0[2]), vb);
    __m256 b = _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(s0[1], s0[2]), s0[3]), vb);
    __m256 c = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(s1[0], s1[1]), s1[2]), vb);
    __m256 d = _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(s1[1], s1[2]), s1[3]), vb);
    if (relu) { /* max(0, v) keeps NaN, like v < 0 ? 0 : v */
        const __m256 z = _mm256_setzero_ps();
        a = _mm256_max_ps(z, a);
        b = _mm256_max_ps(z, b);
        c = _mm256_max_ps(z, c);
        d = _mm256_max_ps(z, d);
    }
    if (pool) {
#define WG_TAKE(v, cur) _mm256_blendv_ps(cur, v, _mm256_or_ps(_mm256_cmp_ps(v, cur, _CMP_GT_OQ), \
                                                             _mm256_cmp_ps(v, v, _CMP_UNORD_Q)))
        __m256 mx = WG_TAKE(b, a);
        mx = WG_TAKE(c, mx);
        mx = WG_TAKE(d, mx);
#undef WG_TAKE
        if (ldp == 1) {
            _mm256_storeu_ps(y, mx);
        } else {
            float v[WG_LANES];
            _mm256_storeu_ps(v, mx);
            for (int l = 0; l < WG_LANES; ++l) y[(size_t)l * ldp] = v[l];
        }
        return;
    }
    if (ldp != 1) { /* a strided layout (channels-last): scatter */
        float va[WG_LANES], vb2[WG_LANES], vc[WG_LANES], vd[WG_LANES];
        _mm256_storeu_ps(va, a);
        _mm256_storeu_ps(vb2, b);
        _mm256_storeu_ps(vc, c);
        _mm256_storeu_ps(vd, d);
        for (int l = 0; l < WG_LANES; ++l) {
            y[(size_t)(2 * l) * ldp] = va[l];
            y[(size_t)(2 * l + 1) * ldp] = vb2[l];
            y[((size_t)W + 2 * l) * ldp] = vc[l];
            y[((size_t)W + 2 * l + 1) * ldp] = vd[l];
        }
        return;
    }
    /* interleave: row 0 is a0 b0 a1 b1 ..., row 1 is c0 d0 c1 d1 ... */
    const __m256 ablo = _mm256_unpacklo_ps(a, b), abhi = _mm256_unpackhi_ps(a, b);
    const __m256 cdlo = _mm256_unpacklo_ps(c, d), cdhi = _mm256_unpackhi_ps(c, d);
    _mm256_storeu_ps(y, _mm256_permute2f128_ps(ablo, abhi, 0x20));
    _mm256_storeu_ps(y + 8, _mm256_permute2f128_ps(ablo, abhi, 0x31));
    _mm256_storeu_ps(y + W, _mm256_permute2f128_ps(cdlo, cdhi, 0x20));
    _mm256_storeu_ps(y + W + 8, _mm256_permute2f128_ps(cdlo, cdhi, 0x31));
#else
    float s0[4][WG_LANES], s1[4][WG_LANES];
    for (int j = 0; j < 4; ++j) {
        const float *m0 = m + (size_t)(0 * 4 + j) * mstride, *m1 = m + (size_t)(1 * 4 + j) * mstride;
        const float *m2 = m + (size_t)(2 * 4 + j) * mstride, *m3 = m + (size_t)(3 * 4 + j) * mstride;
        for (int l = 0; l < WG_LANES; ++l) {
            s0[j][l] = m0[l] + m1[l] + m2[l];
            s1[j][l] = m1[l] - m2[l] - m3[l];
        }
    }
    float *y0 = y, *y1 = y + (size_t)W * ldp;
    for (int l = 0; l < WG_LANES; ++l) {
        float a = s0[0][l] + s0[1][l] + s0[2][l] + bias;
        float b = s0[1][l] - s0[2][l] - s0[3][l] + bias;
        float c = s1[0][l] + s1[1][l] + s1[2][l] + bias;
        float d = s1[1][l] - s1[2][l] - s1[3][l] + bias;
        if (relu) {
            a = a < 0.0f ? 0.0f : a;
            b = b < 0.0f ? 0.0f : b;
            c = c < 0.0f ? 0.0f : c;
            d = d < 0.0f ? 0.0f : d;
        }
        if (pool) {
            y[(size_t)l * ldp] = pool_takes(d, pool_takes(c, pool_takes(b, a)));
            continue;
        }
        y0[(size_t)(2 * l) * ldp] = a;
        y0[(size_t)(2 * l + 1) * ldp] = b;
        y1[(size_t)(2 * l) * ldp] = c;
        y1[(size_t)(2 * l + 1) * ldp] = d;
    }
#endif
}

/* Tiles per transform group: 16 (winograd_avx512.c) where the build has AVX-512 and each
 * tile row holds whole groups of 16, else 8. */
static inline int wg_lanes(const wg_plan_t *p)
{
#ifdef SSD_WG_AVX512
    if (p->tw % 16 == 0) return 16;
#endif
    (void)p;
    return WG_LANES;
}

/* One block: tiles [t0, t0 + nb) of one image. V: 16 x (nb/24 panels) x Cs x 24 (packed B
 * panels); Mb: 16 x Mpad x nb. */
static void wg_block(const wg_plan_t *p, const float *src, const float *U, const float *bias,
                     int relu, int pool, int stream, float *y, size_t ldc, size_t ldp, int t0,
                     float *V, float *Mb)
{
    const int Cs = p->Cs, nb = p->nb, Mpad = p->Mpad;
    const int npan = nb / SSD_NR;
    const size_t HW = (size_t)p->H * p->W;
    const size_t vxi = (size_t)npan * Cs * SSD_NR; /* floats per xi in V */

    /* input transform, group by group (a group never straddles a tile row: tw is a
     * multiple of the group's lanes; a panel holds whole groups: NR is a multiple of 48) */
    const int lanes = wg_lanes(p);
#ifndef SSD_WG_AVX512
    (void)stream; /* (only the 16-tile output transform streams) */
#endif
    for (int c = 0; c < Cs; ++c) { /* channel by channel: the rows of a plane stream in */
        for (int gq = 0; gq < nb; gq += lanes) {
            const int t = t0 + gq;
            const int pan = gq / SSD_NR, lane0 = gq % SSD_NR;
            float *v = V + ((size_t)pan * Cs + c) * SSD_NR + lane0;
            if (t >= p->T) {
                for (int xi = 0; xi < 16; ++xi)
                    memset(v + (size_t)xi * vxi, 0, (size_t)lanes * sizeof(float));
                continue;
            }
#ifdef SSD_WG_AVX512
            if (lanes == 16) {
                ssd__wg_input16(src + (size_t)c * HW, p->H, p->W, t / p->tw, t % p->tw, v, vxi);
                continue;
            }
#endif
            input_group(src + (size_t)c * HW, p->H, p->W, t / p->tw, t % p->tw, v, vxi);
        }
    }

    /* 16 products M_xi = U_xi V_xi */
    for (int xi = 0; xi < 16; ++xi) {
        const float *u = U + (size_t)xi * Mpad * Cs;
        const float *v = V + (size_t)xi * vxi;
        float *mo = Mb + (size_t)xi * Mpad * nb;
        for (int pan = 0; pan < npan; ++pan) {
            const float *vp = v + (size_t)pan * Cs * SSD_NR;
            float *mp = mo + (size_t)pan * SSD_NR;
            int ir = 0;
#ifdef SSD_UKERNEL_AVX512
            for (; ir + 2 * SSD_MR <= Mpad; ir += 2 * SSD_MR)
                ssd__ukernel8(Cs, u + (size_t)ir * Cs, u + (size_t)(ir + SSD_MR) * Cs, vp,
                              mp + (size_t)ir * nb, nb);
#endif
            for (; ir < Mpad; ir += SSD_MR)
                ssd__ukernel(Cs, u + (size_t)ir * Cs, vp, 1.0f, NULL, 0, 1.0f,
                             mp + (size_t)ir * nb, nb, NULL, 0);
        }
    }

    /* output transform */
    const size_t mxi = (size_t)Mpad * nb;
    for (int gq = 0; gq < nb && t0 + gq < p->T; gq += lanes) {
        const int t = t0 + gq, ty = t / p->tw, tx = t % p->tw;
        for (int m = 0; m < p->M; ++m) {
            const float *mm = Mb + (size_t)m * nb + gq;
            const float bm = bias ? bias[m] : 0.0f;
            float *ym = y + (size_t)m * ldc +
                        (pool ? (size_t)ty * (p->W / 2) + tx : (size_t)(2 * ty) * p->W + 2 * tx) * ldp;
#ifdef SSD_WG_AVX512
            if (lanes == 16) {
                ssd__wg_output16(mm, mxi, bm, relu, ym, p->W, ldp, pool, stream);
                continue;
            }
#endif
            output_group(mm, mxi, bm, relu, ym, p->W, ldp, pool);
        }
    }
}

void ssd__winograd_prepare(const ssd_conv2d_t *g, const float *w, float *U)
{
    if (tiles4(g->C, g->O, g->OH, g->OW)) {
        ssd__wg4_prepare(g->C, g->O, w, U);
        return;
    }
#pragma omp parallel num_threads(ssd_get_num_threads())
    transform_weights(g->C, g->O, w, 0, U);
}

void ssd__winograd_conv(int N, int Cs, int H, int W, int M, const float *src, const float *w,
                        const float *prepared, int transposed, const float *bias, int relu,
                        int pool, float *y, size_t ldn, size_t ldc, size_t ldp, float *scratch)
{
    if (prepared && !transposed && tiles4(Cs, M, H, W)) {
        ssd__wg4_conv(N, Cs, H, W, M, src, prepared, bias, relu, pool, y, ldn, ldc, ldp,
                      scratch);
        return;
    }
    const wg_plan_t p = wg_plan(Cs, M, H, W);
    const float *U = prepared ? prepared : scratch;
    float *per_thread = scratch + (size_t)16 * p.Mpad * Cs;
    const size_t tf = wg_thread_floats(&p);
    const int nth = ssd_get_num_threads(), ntask = N * p.nblk;
    /* Full-size NCHW outputs larger than the caches are streamed past them (no read for
     * ownership) where the 16-tile transform writes whole aligned rows. */
    int stream = 0;
#ifdef SSD_WG_AVX512
    stream = !pool && ldp == 1 && wg_lanes(&p) == 16 && W % 16 == 0 && ldc == (size_t)H * W &&
             ldn % 16 == 0 && ((uintptr_t)y & 63) == 0 &&
             (size_t)N * M * H * W * sizeof(float) >= WG_STREAM_BYTES;
#endif
#pragma omp parallel num_threads(nth)
    {
        if (!prepared) transform_weights(Cs, M, w, transposed, scratch);
        float *V = per_thread + (size_t)omp_get_thread_num() * tf;
        float *Mb = V + (size_t)16 * p.nb * Cs;
#pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < ntask; ++task) {
            const int n = task / p.nblk, blk = task % p.nblk;
            wg_block(&p, src + (size_t)n * Cs * H * W, U, bias, relu, pool, stream,
                     y + (size_t)n * ldn, ldc, ldp, blk * p.nb, V, Mb);
        }
#ifdef SSD_WG_AVX512
        if (stream) _mm_sfence();
#endif
    }
}

/* ---- backward-weight ---------------------------------------------------------------------
 *
 * dw[o][c] (3 x 3) = sum over images and tiles of the correlation of the tile's 4 x 4 input
 * patch d with its 2 x 2 output gradient: F(3x3, 2x2), the transpose of the forward's
 * algorithm, with the same 16 positions:
 *
 *     dw = G^T [ sum_tiles (A dy A^T) .* (B^T d B) ] G
 *
 * (B^T d B is the forward's input transform; A and G are the forward's matrices.) For each
 * position xi the sum over tiles is P_xi (out x in) = DY_xi (out x tiles) * V_xi^T, a
 * product whose reduction runs over tiles, so it uses ssd__bw_tile, the 4 x 3 dot-product tile (12
 * vector accumulators over contiguous tiles) rather than the GEMM micro-kernel. The
 * batch's tiles are cut into 16 fixed ranges, each a task with its own partial sums of P
 * (its tiles transformed ~4 MB at a time into the thread's scratch); the partials are
 * added in range order, so the result does not depend on the thread count, and a thread
 * slowed down by the machine just takes fewer ranges.
 */

#define WG_BW_BUDGET (1 << 20) /* floats of transformed input + gradient per pass (4 MB) */
#define WG_BW_TASKS 16         /* tile ranges, each with its own partial sums */

int ssd__winograd_bw_applies(const ssd_conv2d_t *g)
{
    /* The transforms cost in proportion to C + O per tile, the products to C * O, which
     * must be large enough beside them: C*O/(C+O) >= 17 (measured at batch 32 against the
     * direct kernel, 1 thread: 32 -> 64 at 64 x 64, ratio 21.3, 1.4x; 128 -> 128, 64,
     * 1.5x; but 32 -> 32 at 128 x 128, ratio 16, 0.9x). */
    return wg_shape(g, 1024) && g->C >= 16 && g->O >= 8 &&
           (long)g->C * g->O >= 17L * (g->C + g->O);
}

/* The batch's tiles ((image, tile) order) are cut into ntask ranges of a multiple of
 * `lanes` tiles (the transform groups: 16 with AVX-512 where a tile row holds whole groups
 * of 16, else 8), from the shape only; each range is transformed nt tiles at a time. */
typedef struct {
    size_t total, per, nt;
    int ntask, lanes;
} bw_wplan_t;

static bw_wplan_t bw_wplan(int N, int C, int H, int W, int O)
{
    bw_wplan_t b;
    b.lanes = WG_LANES;
#ifdef SSD_WG_AVX512
    if ((W / 2) % 16 == 0) b.lanes = 16;
#endif
    const size_t L = (size_t)b.lanes;
    b.total = (size_t)N * (H / 2) * (W / 2);
    const size_t groups = b.total / L;
    b.ntask = groups < WG_BW_TASKS ? (int)groups : WG_BW_TASKS;
    if (b.ntask < 1) b.ntask = 1;
    b.per = (groups + b.ntask - 1) / b.ntask * L;
    b.ntask = (int)((b.total + b.per - 1) / b.per);
    size_t nt = WG_BW_BUDGET / (16 * ((size_t)C + O)) / L * L;
    if (nt < 64) nt = 64;
    if (nt > b.per) nt = b.per;
    b.nt = nt;
    return b;
}

size_t ssd__winograd_bw_scratch_floats(int N, int C, int H, int W, int O)
{
    const bw_wplan_t b = bw_wplan(N, C, H, W, O);
    return (size_t)(b.ntask + 1) * 16 * O * C +
           (size_t)ssd_get_num_threads() * 16 * b.nt * ((size_t)C + O) + 16;
}

/* The transform A dy A^T of the 8 tiles (ty, tx0 .. tx0+7) of one gradient plane (W wide)
 * into D[xi*dstride + lane]. */
static void dy_group(const float *dy, int W, int ty, int tx0, float *D, size_t dstride)
{
    const float *r0 = dy + (size_t)(2 * ty) * W + 2 * tx0, *r1 = r0 + W;
#ifdef WG_AVX2
    const __m256 a0 = _mm256_loadu_ps(r0), b0 = _mm256_loadu_ps(r0 + 8);
    const __m256 a1 = _mm256_loadu_ps(r1), b1 = _mm256_loadu_ps(r1 + 8);
    const __m256 e0 = even8(a0, b0), o0 = odd8(a0, b0);
    const __m256 e1 = even8(a1, b1), o1 = odd8(a1, b1);
    const __m256 z = _mm256_setzero_ps();
    /* rows: A dy = (row0, row0 + row1, row0 - row1, -row1), for the even and odd columns */
    const __m256 te[4] = {e0, _mm256_add_ps(e0, e1), _mm256_sub_ps(e0, e1), _mm256_sub_ps(z, e1)};
    const __m256 to[4] = {o0, _mm256_add_ps(o0, o1), _mm256_sub_ps(o0, o1), _mm256_sub_ps(z, o1)};
    for (int i = 0; i < 4; ++i) { /* columns: (.) A^T = (e, e + o, e - o, -o) */
        _mm256_storeu_ps(D + (size_t)(i * 4 + 0) * dstride, te[i]);
        _mm256_storeu_ps(D + (size_t)(i * 4 + 1) * dstride, _mm256_add_ps(te[i], to[i]));
        _mm256_storeu_ps(D + (size_t)(i * 4 + 2) * dstride, _mm256_sub_ps(te[i], to[i]));
        _mm256_storeu_ps(D + (size_t)(i * 4 + 3) * dstride, _mm256_sub_ps(z, to[i]));
    }
#else
    for (int l = 0; l < WG_LANES; ++l) {
        const float e0 = r0[2 * l], o0 = r0[2 * l + 1], e1 = r1[2 * l], o1 = r1[2 * l + 1];
        const float te[4] = {e0, e0 + e1, e0 - e1, 0.0f - e1};
        const float to[4] = {o0, o0 + o1, o0 - o1, 0.0f - o1};
        for (int i = 0; i < 4; ++i) {
            D[(size_t)(i * 4 + 0) * dstride + l] = te[i];
            D[(size_t)(i * 4 + 1) * dstride + l] = te[i] + to[i];
            D[(size_t)(i * 4 + 2) * dstride + l] = te[i] - to[i];
            D[(size_t)(i * 4 + 3) * dstride + l] = 0.0f - to[i];
        }
    }
#endif
}

/* dw partial sums of one tile range: Pk (16 x O x C) = sum over its tiles, nt at a time
 * through V (16 x C x nt) and D (16 x O x nt). */
static void bw_range(int C, int H, int W, int O, const float *x, const float *dy, size_t u0,
                     size_t u1, size_t nt, int lanes, float *V, float *D, float *Pk)
{
    const int tw = W / 2, T = (H / 2) * tw;
    const size_t HW = (size_t)H * W;
    for (size_t v0 = u0; v0 < u1; v0 += nt) {
        const size_t n = u1 - v0 < nt ? u1 - v0 : nt; /* (a multiple of lanes) */
        for (int c = 0; c < C + O; ++c) {
            const int grad = c >= C, ch = grad ? c - C : c, nc = grad ? O : C;
            float *dst = (grad ? D : V) + (size_t)ch * n;
            size_t u = v0;
            int img = (int)(u / T), t = (int)(u % T), ty = t / tw, tx = t % tw;
            for (size_t q = 0; q < n; q += (size_t)lanes) {
                const float *plane = grad ? dy + ((size_t)img * O + ch) * HW
                                          : x + ((size_t)img * C + ch) * HW;
#ifdef SSD_WG_AVX512
                if (lanes == 16) {
                    if (grad)
                        ssd__wg_dy16(plane, W, ty, tx, dst + q, (size_t)nc * n);
                    else
                        ssd__wg_input16(plane, H, W, ty, tx, dst + q, (size_t)nc * n);
                } else
#endif
                if (grad)
                    dy_group(plane, W, ty, tx, dst + q, (size_t)nc * n);
                else
                    input_group(plane, H, W, ty, tx, dst + q, (size_t)nc * n);
                if ((tx += lanes) == tw) {
                    tx = 0;
                    if (++ty == H / 2) { ty = 0; ++img; }
                }
            }
        }
        const int first = v0 == u0;
        for (int xi = 0; xi < 16; ++xi) {
            const float *dx = D + (size_t)xi * O * n, *vx = V + (size_t)xi * C * n;
            float *px = Pk + (size_t)xi * O * C;
            for (int o0 = 0; o0 < O; o0 += 4) {
                const float *dr[4];
                for (int r = 0; r < 4; ++r) dr[r] = dx + (size_t)(o0 + r < O ? o0 + r : O - 1) * n;
                for (int c0 = 0; c0 < C; c0 += 3) {
                    const float *vr[3];
                    for (int s = 0; s < 3; ++s) vr[s] = vx + (size_t)(c0 + s < C ? c0 + s : C - 1) * n;
                    float out[12];
                    ssd__bw_tile(dr[0], dr[1], dr[2], dr[3], vr[0], vr[1], vr[2], (int)n, 1, 0, 0,
                                 out);
                    for (int r = 0; r < 4 && o0 + r < O; ++r)
                        for (int s = 0; s < 3 && c0 + s < C; ++s) {
                            float *pp = px + (size_t)(o0 + r) * C + c0 + s;
                            *pp = first ? out[r * 3 + s] : *pp + out[r * 3 + s];
                        }
                }
            }
        }
    }
}

void ssd__winograd_backward_weight(int N, int C, int H, int W, int O, const float *x,
                                   const float *dy, float *dw, float *scratch)
{
    const bw_wplan_t b = bw_wplan(N, C, H, W, O);
    const size_t pl = (size_t)16 * O * C;
    float *P = scratch;                            /* 16 x O x C: the sum of the partials */
    float *part = P + pl;                          /* ntask x 16 x O x C */
    float *bufs = part + (size_t)b.ntask * pl;     /* per thread: V and D */
    const size_t tf = 16 * b.nt * ((size_t)C + O);
#pragma omp parallel num_threads(ssd_get_num_threads())
    {
        float *V = bufs + (size_t)omp_get_thread_num() * tf;
        float *D = V + 16 * b.nt * (size_t)C;
        /* ranges are independent: a thread slowed down by the machine takes fewer */
#pragma omp for schedule(dynamic, 1)
        for (int k = 0; k < b.ntask; ++k) {
            const size_t u0 = (size_t)k * b.per;
            const size_t u1 = u0 + b.per < b.total ? u0 + b.per : b.total;
            bw_range(C, H, W, O, x, dy, u0, u1, b.nt, b.lanes, V, D, part + (size_t)k * pl);
        }
        /* partials added in range order */
#pragma omp for schedule(static)
        for (size_t i = 0; i < pl; ++i) {
            float s = part[i];
            for (int k = 1; k < b.ntask; ++k) s += part[(size_t)k * pl + i];
            P[i] = s;
        }
    }
    /* dw = G^T P G for every (o, c) */
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int oc = 0; oc < O * C; ++oc) {
        float p[4][4], q[3][4];
        for (int xi = 0; xi < 16; ++xi) p[xi / 4][xi % 4] = P[(size_t)xi * O * C + oc];
        for (int j = 0; j < 4; ++j) {
            q[0][j] = p[0][j] + 0.5f * (p[1][j] + p[2][j]);
            q[1][j] = 0.5f * (p[1][j] - p[2][j]);
            q[2][j] = 0.5f * (p[1][j] + p[2][j]) + p[3][j];
        }
        float *d = dw + (size_t)oc * 9;
        for (int i = 0; i < 3; ++i) {
            d[i * 3 + 0] = q[i][0] + 0.5f * (q[i][1] + q[i][2]);
            d[i * 3 + 1] = 0.5f * (q[i][1] - q[i][2]);
            d[i * 3 + 2] = 0.5f * (q[i][1] + q[i][2]) + q[i][3];
        }
    }
}
