/*
 * winograd4.c — 3x3, stride-1, pad-1 convolution by Winograd's F(4x4, 3x3), for maps whose
 * rows hold whole groups of eight 4-wide tiles (W a multiple of 32, H of 4). winograd.c
 * sends its forward here on such maps when the weights were prepared for inference
 * (ssd__winograd_prepare; the contract is in winograd_internal.h), and keeps F(2x2, 3x3)
 * for everything else: this rounding is about 20 times F(2x2)'s, which training's
 * gradients cannot afford.
 *
 * Each 4x4 block of the output comes from the 6x6 input patch around it with 36
 * multiplies per (input, output channel) pair instead of 144 (F(2x2): 16 per 2x2 block,
 * so 64 per 4x4), Y = A^T [ sum_c (G g_c G^T) .* (B^T d_c B) ] A, with the interpolation
 * points 0, 1, -1, 2, -2:
 *
 *   B^T = | 4  0 -5  0  1  0 |   G = |  1/4     0     0  |   A^T = | 1  1  1  1  1  0 |
 *         | 0 -4 -4  1  1  0 |       | -1/6  -1/6  -1/6  |         | 0  1 -1  2 -2  0 |
 *         | 0  4 -4 -1  1  0 |       | -1/6   1/6  -1/6  |         | 0  1  1  4  4  0 |
 *         | 0 -2 -1  2  1  0 |       |  1/24  1/12  1/6  |         | 0  1 -1  8 -8  1 |
 *         | 0  2 -1 -2  1  0 |       |  1/24 -1/12  1/6  |
 *         | 0  4  0 -5  0  1 |       |  0     0     1    |
 *
 * The products become 36 GEMMs M_xi (out x tiles) = U_xi (out x in) V_xi (in x tiles) on
 * gemm.c's micro-kernel, as in winograd.c, with two differences of scale: the transformed
 * input of a block (36 x in x tiles) is larger, so a block is one or a few NR-tile panels,
 * and its output channels are taken `mc` at a time (the 36 products of those channels, then
 * their output transform), so V and the M rows in flight stay near L2.
 *
 * Transforms work on 8 tiles of one tile row (the 8 lanes of an AVX vector). The 6 x 34
 * input patch of a group is read in place, or through a zero-padded copy at the borders.
 * Each row of it is split into the columns 4l + j of tile l by an in-lane 4 x 4 transpose,
 * which leaves the tiles in the lane order 0 2 4 6 1 3 5 7; V, and so M, keep that order,
 * and the output transform's transpose (the same shuffles) undoes it. The portable build
 * uses the tiles' own order and the same arithmetic without fused multiply-adds.
 *
 * The transforms amplify rounding more than F(2x2)'s (the constants reach 8 and 1/24);
 * the kernel tests bound the difference from a double reference as for the other paths.
 */
#include "ssd_runtime.h"
#include "gemm_internal.h"
#include "winograd_internal.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define W4_AVX2 1
#endif

#define W4_LANES 8           /* tiles per transform group */
#define W4_BUDGET 49152      /* floats of V + M rows per block aimed at (192 KB) */
#define W4_PANELS_MAX 4      /* most NR-tile panels per block */

static inline size_t round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }

int ssd__wg4_applies(int Cs, int M, int H, int W)
{
    /* Measured on TinySSD's layers (AVX2, 2 threads, conv + folded BN + ReLU (+ pool)), F(2x2)
     * -> F(4x4): batch 1, 16 -> 16 at 256 x 256 2.30 -> 1.72 ms, 32 -> 32 at 128 x 128 1.49
     * -> 1.14, 64 -> 64 at 64 x 64 1.16 -> 1.06, 128 -> 128 at 32 x 32 1.20 -> 1.16; batch 32
     * (an image per thread) 57.5 -> 39.8, 40.9 -> 28.7, 33.7 -> 27.1, 33.8 -> 27.0 ms. Wider
     * layers were not measured. */
    return H >= 4 && H % 4 == 0 && W > 0 && W % (4 * W4_LANES) == 0 && Cs <= 128 && M <= 128;
}

typedef struct {
    int Cs, M, H, W;
    int tw, T;         /* tiles per row, tiles per image */
    int nb, nblk;      /* tiles per block (a multiple of NR), blocks per image */
    int Mpad, mc;      /* output channels padded to MR; output channels per pass */
} w4_plan_t;

static w4_plan_t w4_plan(int Cs, int M, int H, int W)
{
    w4_plan_t p;
    p.Cs = Cs;
    p.M = M;
    p.H = H;
    p.W = W;
    p.tw = W / 4;
    p.T = (H / 4) * p.tw;
    p.Mpad = (int)round_up((size_t)M, SSD_MR);
    const int mc0 = p.Mpad < 32 ? p.Mpad : 32;
    int panels = W4_BUDGET / (36 * SSD_NR * (Cs + mc0));
    if (panels < 1) panels = 1;
    if (panels > W4_PANELS_MAX) panels = W4_PANELS_MAX;
    const int need = (p.T + SSD_NR - 1) / SSD_NR;
    if (panels > need) panels = need;
    p.nb = panels * SSD_NR;
    p.nblk = (p.T + p.nb - 1) / p.nb;
    /* the output channels that fit beside V, in equal passes of a multiple of MR */
    long fit = ((long)W4_BUDGET - 36L * p.nb * Cs) / (36L * p.nb);
    if (fit < SSD_MR) fit = SSD_MR;
    if (fit > p.Mpad) fit = p.Mpad;
    const int passes = (p.Mpad + (int)fit - 1) / (int)fit;
    p.mc = (int)round_up((size_t)((p.Mpad + passes - 1) / passes), SSD_MR);
    return p;
}

static size_t w4_thread_floats(const w4_plan_t *p)
{
    return (size_t)36 * p->nb * ((size_t)p->Cs + p->mc);
}

size_t ssd__wg4_scratch_floats(int Cs, int M, int H, int W)
{
    const w4_plan_t p = w4_plan(Cs, M, H, W);
    return (size_t)ssd_get_num_threads() * w4_thread_floats(&p) + 16;
}

size_t ssd__wg4_prepared_floats(int Cs, int M)
{
    return (size_t)36 * round_up((size_t)M, SSD_MR) * Cs;
}

/* U_xi packed for the micro-kernel, as winograd.c packs its 16: U + xi*Mpad*Cs + ir*Cs +
 * c*MR + r (row m = ir + r), from w (M x Cs x 3 x 3; rows past M are zeros). G g G^T is
 * computed in double and rounded once. Runs inside a parallel region (an omp for). */
static void transform_weights(int Cs, int M, const float *w, float *U)
{
    static const double G[6][3] = {
        {1.0 / 4, 0, 0},
        {-1.0 / 6, -1.0 / 6, -1.0 / 6},
        {-1.0 / 6, 1.0 / 6, -1.0 / 6},
        {1.0 / 24, 1.0 / 12, 1.0 / 6},
        {1.0 / 24, -1.0 / 12, 1.0 / 6},
        {0, 0, 1},
    };
    const int Mpad = (int)round_up((size_t)M, SSD_MR);
    const size_t plane = (size_t)Mpad * Cs;
#pragma omp for schedule(static)
    for (int ir = 0; ir < Mpad; ir += SSD_MR) {
        for (int c = 0; c < Cs; ++c) {
            float u[36][SSD_MR];
            for (int r = 0; r < SSD_MR; ++r) {
                const float *s = ir + r < M ? w + ((size_t)(ir + r) * Cs + c) * 9 : NULL;
                double g[9];
                for (int t = 0; t < 9; ++t) g[t] = s ? s[t] : 0.0;
                double t6[6][3]; /* G g */
                for (int i = 0; i < 6; ++i)
                    for (int j = 0; j < 3; ++j)
                        t6[i][j] = G[i][0] * g[j] + G[i][1] * g[3 + j] + G[i][2] * g[6 + j];
                for (int i = 0; i < 6; ++i) /* (G g) G^T */
                    for (int j = 0; j < 6; ++j)
                        u[i * 6 + j][r] =
                            (float)(t6[i][0] * G[j][0] + t6[i][1] * G[j][1] + t6[i][2] * G[j][2]);
            }
            float *dst = U + (size_t)ir * Cs + (size_t)c * SSD_MR;
            for (int xi = 0; xi < 36; ++xi)
                for (int r = 0; r < SSD_MR; ++r) dst[xi * plane + r] = u[xi][r];
        }
    }
}

void ssd__wg4_prepare(int Cs, int M, const float *w, float *U)
{
#pragma omp parallel num_threads(ssd_get_num_threads())
    transform_weights(Cs, M, w, U);
}

/* ---- transforms of 8 tiles --------------------------------------------------------------- */

#ifdef W4_AVX2
typedef __m256 vec;
#define VADD _mm256_add_ps
#define VSUB _mm256_sub_ps
/* a + k b, and a - k b */
#define VFMA(a, k, b) _mm256_fmadd_ps(_mm256_set1_ps(k), b, a)
#define VFNMA(a, k, b) _mm256_fnmadd_ps(_mm256_set1_ps(k), b, a)

/* The in-lane 4 x 4 transpose: the 128-bit halves of a, b, c, d as the rows of two 4 x 4
 * matrices (low halves, high halves), each transposed; o[j] holds column j. */
static inline void transpose4(vec a, vec b, vec c, vec d, vec o[4])
{
    const vec t0 = _mm256_unpacklo_ps(a, b), t1 = _mm256_unpackhi_ps(a, b);
    const vec t2 = _mm256_unpacklo_ps(c, d), t3 = _mm256_unpackhi_ps(c, d);
    o[0] = _mm256_shuffle_ps(t0, t2, 0x44);
    o[1] = _mm256_shuffle_ps(t0, t2, 0xEE);
    o[2] = _mm256_shuffle_ps(t1, t3, 0x44);
    o[3] = _mm256_shuffle_ps(t1, t3, 0xEE);
}
#else
typedef struct { float v[W4_LANES]; } vec;
static inline vec vadd(vec a, vec b) { for (int l = 0; l < W4_LANES; ++l) a.v[l] += b.v[l]; return a; }
static inline vec vsub(vec a, vec b) { for (int l = 0; l < W4_LANES; ++l) a.v[l] -= b.v[l]; return a; }
static inline vec vfma(vec a, float k, vec b) { for (int l = 0; l < W4_LANES; ++l) a.v[l] += k * b.v[l]; return a; }
static inline vec vfnma(vec a, float k, vec b) { for (int l = 0; l < W4_LANES; ++l) a.v[l] -= k * b.v[l]; return a; }
#define VADD vadd
#define VSUB vsub
#define VFMA vfma
#define VFNMA vfnma
#endif

/* One B^T (6 values -> 6), in place. */
static inline void bt6(vec d[6])
{
    const vec s = VSUB(d[4], d[2]);           /* d4 - d2 */
    const vec e = VSUB(d[3], d[1]);           /* d3 - d1 */
    const vec p = VADD(d[3], d[4]);           /* d3 + d4 */
    const vec q = VADD(d[1], d[2]);           /* d1 + d2 */
    const vec n = VSUB(d[4], d[3]);           /* d4 - d3 */
    const vec m = VSUB(d[1], d[2]);           /* d1 - d2 */
    const vec r0 = VFMA(VFNMA(d[4], 5.0f, d[2]), 4.0f, d[0]);
    const vec r5 = VFMA(VFNMA(d[5], 5.0f, d[3]), 4.0f, d[1]);
    d[0] = r0;
    d[1] = VFNMA(p, 4.0f, q);
    d[2] = VFMA(n, 4.0f, m);
    d[3] = VFMA(s, 2.0f, e);
    d[4] = VFNMA(s, 2.0f, e);
    d[5] = r5;
}

/* One A^T (6 values -> 4). */
static inline void at6(const vec m[6], vec y[4])
{
    const vec p = VADD(m[1], m[2]), n = VSUB(m[1], m[2]);
    const vec P = VADD(m[3], m[4]), Q = VSUB(m[3], m[4]);
    y[0] = VADD(VADD(m[0], p), P);
    y[1] = VFMA(n, 2.0f, Q);
    y[2] = VFMA(p, 4.0f, P);
    y[3] = VADD(VFMA(n, 8.0f, Q), m[5]);
}

/* Input transform of the 8 tiles (ty, tx0 .. tx0+7) of channel plane x (H x W) into
 * V[xi*vstride + lane], xi = 6i + j. */
static void input_group(const float *x, int H, int W, int ty, int tx0, float *V, size_t vstride)
{
    /* rows 4ty-1 .. 4ty+4, columns 4tx0-1 .. 4tx0+32: in place, or through a zero-padded
     * copy at the left and right borders; rows outside are zeros */
    enum { COLS = 4 * W4_LANES + 2 };
    static const float zeros[COLS + 2];
    const int r0 = 4 * ty - 1, c0 = 4 * tx0 - 1;
    float pad[6][COLS + 2];
    vec h[6][6]; /* h[i][j]: row i of the patch times B (tiles in lane order) */
    for (int i = 0; i < 6; ++i) {
        const int r = r0 + i;
        const float *p;
        if (r < 0 || r >= H) {
            p = zeros;
        } else if (c0 >= 0 && c0 + COLS <= W) {
            p = x + (size_t)r * W + c0;
        } else {
            const int lo = c0 < 0 ? -c0 : 0;
            const int hi = c0 + COLS > W ? W - c0 : COLS;
            memset(pad[i], 0, sizeof pad[i]);
            memcpy(pad[i] + lo, x + (size_t)r * W + c0 + lo, (size_t)(hi - lo) * sizeof(float));
            p = pad[i];
        }
#ifdef W4_AVX2
        /* columns 4l + j (j < 4) of the tiles, in lane order 0 2 4 6 1 3 5 7; columns
         * 4l + 4 and 4l + 5 are columns 0 and 1 of the next tile: lanes 4-7 then 1-3 of
         * those, and p[32], p[33] for the last tile */
        transpose4(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8), _mm256_loadu_ps(p + 16),
                   _mm256_loadu_ps(p + 24), h[i]);
        const __m256i next = _mm256_setr_epi32(4, 5, 6, 7, 1, 2, 3, 0);
        h[i][4] = _mm256_blend_ps(_mm256_permutevar8x32_ps(h[i][0], next),
                                  _mm256_broadcast_ss(p + 32), 0x80);
        h[i][5] = _mm256_blend_ps(_mm256_permutevar8x32_ps(h[i][1], next),
                                  _mm256_broadcast_ss(p + 33), 0x80);
#else
        for (int j = 0; j < 6; ++j)
            for (int l = 0; l < W4_LANES; ++l) h[i][j].v[l] = p[4 * l + j];
#endif
        bt6(h[i]);
    }
    for (int j = 0; j < 6; ++j) {
        vec col[6];
        for (int i = 0; i < 6; ++i) col[i] = h[i][j];
        bt6(col);
        for (int i = 0; i < 6; ++i) {
#ifdef W4_AVX2
            _mm256_storeu_ps(V + (size_t)(i * 6 + j) * vstride, col[i]);
#else
            memcpy(V + (size_t)(i * 6 + j) * vstride, col[i].v, sizeof col[i].v);
#endif
        }
    }
}

/* pool.c's rule: v replaces the max so far if v > max or v is NaN. */
#ifdef W4_AVX2
static inline vec pool_take(vec v, vec cur)
{
    return _mm256_blendv_ps(cur, v, _mm256_or_ps(_mm256_cmp_ps(v, cur, _CMP_GT_OQ),
                                                 _mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
}
#else
static inline vec pool_take(vec v, vec cur)
{
    for (int l = 0; l < W4_LANES; ++l)
        if (v.v[l] > cur.v[l] || v.v[l] != v.v[l]) cur.v[l] = v.v[l];
    return cur;
}
#endif

/* The lane of tile l in a group (the order the input transform leaves). */
static inline int lane_of(int l)
{
#ifdef W4_AVX2
    return (l & 1) ? 4 + l / 2 : l / 2;
#else
    return l;
#endif
}

/* Output transform of 8 tiles of one output channel: m[xi*mstride + lane] -> the 4 x 32
 * outputs at y (pixel (r, c) at y[(r*W + c)*ldp]), plus bias, then ReLU. pool != 0: the
 * 2x2 max pool of them instead, the 2 x 16 pooled pixels (row stride W/2). */
static void output_group(const float *m, size_t mstride, float bias, int relu, float *y, int W,
                         size_t ldp, int pool)
{
    vec z[4][6]; /* A^T M, column by column */
    for (int j = 0; j < 6; ++j) {
        vec col[6], t[4];
        for (int i = 0; i < 6; ++i) {
#ifdef W4_AVX2
            col[i] = _mm256_loadu_ps(m + (size_t)(i * 6 + j) * mstride);
#else
            memcpy(col[i].v, m + (size_t)(i * 6 + j) * mstride, sizeof col[i].v);
#endif
        }
        at6(col, t);
        for (int a = 0; a < 4; ++a) z[a][j] = t[a];
    }
    vec Y[4][4];
    for (int a = 0; a < 4; ++a) {
        at6(z[a], Y[a]);
        for (int b = 0; b < 4; ++b) {
#ifdef W4_AVX2
            vec v = _mm256_add_ps(Y[a][b], _mm256_set1_ps(bias));
            if (relu) v = _mm256_max_ps(_mm256_setzero_ps(), v); /* keeps NaN */
#else
            vec v = Y[a][b];
            for (int l = 0; l < W4_LANES; ++l) {
                v.v[l] += bias;
                if (relu && v.v[l] < 0.0f) v.v[l] = 0.0f;
            }
#endif
            Y[a][b] = v;
        }
    }
    if (pool) {
        const int PW = W / 2;
        for (int pr = 0; pr < 2; ++pr) {
            vec q[2];
            for (int pc = 0; pc < 2; ++pc) {
                const vec *r0 = Y[2 * pr], *r1 = Y[2 * pr + 1];
                q[pc] = pool_take(r1[2 * pc + 1],
                                  pool_take(r1[2 * pc], pool_take(r0[2 * pc + 1], r0[2 * pc])));
            }
            float *yr = y + (size_t)pr * PW * ldp;
#ifdef W4_AVX2
            if (ldp == 1) { /* tile l's two pixels at 2l, 2l + 1 */
                const __m256 lo = _mm256_unpacklo_ps(q[0], q[1]), hi = _mm256_unpackhi_ps(q[0], q[1]);
                _mm256_storeu_ps(yr, _mm256_castpd_ps(_mm256_permute4x64_pd(
                                         _mm256_castps_pd(lo), _MM_SHUFFLE(3, 1, 2, 0))));
                _mm256_storeu_ps(yr + 8, _mm256_castpd_ps(_mm256_permute4x64_pd(
                                             _mm256_castps_pd(hi), _MM_SHUFFLE(3, 1, 2, 0))));
                continue;
            }
            float v0[W4_LANES], v1[W4_LANES];
            _mm256_storeu_ps(v0, q[0]);
            _mm256_storeu_ps(v1, q[1]);
#else
            const float *v0 = q[0].v, *v1 = q[1].v;
#endif
            for (int l = 0; l < W4_LANES; ++l) {
                yr[(size_t)(2 * l) * ldp] = v0[lane_of(l)];
                yr[(size_t)(2 * l + 1) * ldp] = v1[lane_of(l)];
            }
        }
        return;
    }
    for (int a = 0; a < 4; ++a) {
        float *yr = y + (size_t)a * W * ldp;
#ifdef W4_AVX2
        if (ldp == 1) { /* the transpose puts tiles 2k, 2k + 1 in vector k */
            vec o[4];
            transpose4(Y[a][0], Y[a][1], Y[a][2], Y[a][3], o);
            for (int k = 0; k < 4; ++k) _mm256_storeu_ps(yr + 8 * k, o[k]);
            continue;
        }
        float v[4][W4_LANES];
        for (int b = 0; b < 4; ++b) _mm256_storeu_ps(v[b], Y[a][b]);
#else
        float v[4][W4_LANES];
        for (int b = 0; b < 4; ++b) memcpy(v[b], Y[a][b].v, sizeof v[b]);
#endif
        for (int l = 0; l < W4_LANES; ++l)
            for (int b = 0; b < 4; ++b) yr[(size_t)(4 * l + b) * ldp] = v[b][lane_of(l)];
    }
}

/* ---- the convolution --------------------------------------------------------------------- */

/* One block: tiles [t0, t0 + nb) of one image, output channels [mlo, mhi) (whole passes).
 * V: 36 x (nb/NR panels) x Cs x NR (packed B panels); Mb: 36 x mc x nb. */
static void w4_block(const w4_plan_t *p, const float *src, const float *U, const float *bias,
                     int relu, int pool, float *y, size_t ldc, size_t ldp, int t0, int mlo,
                     int mhi, float *V, float *Mb)
{
    const int Cs = p->Cs, nb = p->nb, Mpad = p->Mpad, mc = p->mc;
    const int npan = nb / SSD_NR;
    const size_t HW = (size_t)p->H * p->W;
    const size_t vxi = (size_t)npan * Cs * SSD_NR; /* floats per xi in V */

    for (int c = 0; c < Cs; ++c) {
        for (int gq = 0; gq < nb; gq += W4_LANES) {
            const int t = t0 + gq;
            const int pan = gq / SSD_NR, lane0 = gq % SSD_NR;
            float *v = V + ((size_t)pan * Cs + c) * SSD_NR + lane0;
            if (t >= p->T) {
                for (int xi = 0; xi < 36; ++xi)
                    memset(v + (size_t)xi * vxi, 0, W4_LANES * sizeof(float));
                continue;
            }
            input_group(src + (size_t)c * HW, p->H, p->W, t / p->tw, t % p->tw, v, vxi);
        }
    }

    const size_t mxi = (size_t)mc * nb;
    for (int m0 = mlo; m0 < mhi; m0 += mc) {
        const int m1 = m0 + mc < Mpad ? m0 + mc : Mpad;
        for (int xi = 0; xi < 36; ++xi) {
            const float *u = U + (size_t)xi * Mpad * Cs;
            const float *v = V + (size_t)xi * vxi;
            float *mo = Mb + (size_t)xi * mxi;
            for (int pan = 0; pan < npan; ++pan) {
                const float *vp = v + (size_t)pan * Cs * SSD_NR;
                float *mp = mo + (size_t)pan * SSD_NR;
                int ir = m0;
#ifdef SSD_UKERNEL_AVX512
                for (; ir + 2 * SSD_MR <= m1; ir += 2 * SSD_MR)
                    ssd__ukernel8(Cs, u + (size_t)ir * Cs, u + (size_t)(ir + SSD_MR) * Cs, vp,
                                  mp + (size_t)(ir - m0) * nb, nb);
#endif
                for (; ir < m1; ir += SSD_MR)
                    ssd__ukernel(Cs, u + (size_t)ir * Cs, vp, 1.0f, NULL, 0, 1.0f,
                                 mp + (size_t)(ir - m0) * nb, nb, NULL, 0);
            }
        }
        const int mend = m1 < p->M ? m1 : p->M;
        for (int gq = 0; gq < nb && t0 + gq < p->T; gq += W4_LANES) {
            const int t = t0 + gq, ty = t / p->tw, tx = t % p->tw;
            const size_t at = pool ? (size_t)(2 * ty) * (p->W / 2) + 2 * tx
                                   : (size_t)(4 * ty) * p->W + 4 * tx;
            for (int m = m0; m < mend; ++m)
                output_group(Mb + (size_t)(m - m0) * nb + gq, mxi, bias ? bias[m] : 0.0f, relu,
                             y + (size_t)m * ldc + at * ldp, p->W, ldp, pool);
        }
    }
}

void ssd__wg4_conv(int N, int Cs, int H, int W, int M, const float *src, const float *U,
                   const float *bias, int relu, int pool, float *y, size_t ldn, size_t ldc,
                   size_t ldp, float *scratch)
{
    const w4_plan_t p = w4_plan(Cs, M, H, W);
    float *per_thread = scratch;
    const size_t tf = w4_thread_floats(&p);
    const int nth = ssd_get_num_threads(), nblocks = N * p.nblk;
    /* Too few blocks to keep every thread busy (a small map at batch 1): the output
     * channels' passes are shared out too, each share transforming the block's input again.
     * Every output channel is computed the same way whatever the share, so the bits do not
     * depend on the thread count. */
    const int passes = (p.Mpad + p.mc - 1) / p.mc;
    int shares = nblocks >= 2 * nth ? 1 : (2 * nth + nblocks - 1) / nblocks;
    if (shares > passes) shares = passes;
    const int ntask = nblocks * shares;
#pragma omp parallel num_threads(nth)
    {
        float *V = per_thread + (size_t)omp_get_thread_num() * tf;
        float *Mb = V + (size_t)36 * p.nb * Cs;
#pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < ntask; ++task) {
            const int b = task / shares, sh = task % shares;
            const int n = b / p.nblk, blk = b % p.nblk;
            const int mlo = passes * sh / shares * p.mc, mhi = passes * (sh + 1) / shares * p.mc;
            w4_block(&p, src + (size_t)n * Cs * H * W, U, bias, relu, pool,
                     y + (size_t)n * ldn, ldc, ldp, blk * p.nb, mlo, mhi, V, Mb);
        }
    }
}
