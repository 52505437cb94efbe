/*
 * gemm_avx512.c — the AVX-512 micro-kernels (ssd__ukernel, ssd__ukernel_rows, ssd__bw_tile;
 * the contracts are in gemm_internal.h). Compiled only when the library is built with
 * AVX-512F available (e.g. -march=native on a CPU that has it); otherwise gemm.c provides
 * the AVX2 or the portable kernels, and this file is empty.
 *
 * Tile 4 x 48: the AVX2 kernel's shape at twice the width. 12 zmm accumulators + 3 B
 * vectors + 1 broadcast A value; per k step 3 vector loads + 4 broadcasts feed 12 FMAs.
 * MR stays 4 so that the channel counts of TinySSD still fill whole tiles; NR = 48 (set in
 * gemm_internal.h) is a multiple of 24 and of 8, which the packing and the Winograd and
 * statistics passes (8-lane groups) rely on.
 */
#include "gemm_internal.h"

#ifdef SSD_UKERNEL_AVX512

#include <immintrin.h>

/* Epilogue of one row (see ssd__ukernel): alpha, beta * cin, bias, ReLU, store. */
static inline void store_row(__m512 x0, __m512 x1, __m512 x2, float alpha, const float *ci,
                             float beta, float *co, const float *bias, int relu)
{
    if (alpha != 1.0f) {
        const __m512 va = _mm512_set1_ps(alpha);
        x0 = _mm512_mul_ps(va, x0);
        x1 = _mm512_mul_ps(va, x1);
        x2 = _mm512_mul_ps(va, x2);
    }
    if (ci) {
        if (beta == 1.0f) {
            x0 = _mm512_add_ps(x0, _mm512_loadu_ps(ci));
            x1 = _mm512_add_ps(x1, _mm512_loadu_ps(ci + 16));
            x2 = _mm512_add_ps(x2, _mm512_loadu_ps(ci + 32));
        } else {
            const __m512 vb = _mm512_set1_ps(beta);
            x0 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci), x0);
            x1 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci + 16), x1);
            x2 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci + 32), x2);
        }
    }
    if (bias) {
        const __m512 vb = _mm512_set1_ps(*bias);
        x0 = _mm512_add_ps(x0, vb);
        x1 = _mm512_add_ps(x1, vb);
        x2 = _mm512_add_ps(x2, vb);
    }
    if (relu) {
        /* max(0, x) returns x when x is NaN (second operand), like x < 0 ? 0 : x. */
        const __m512 z = _mm512_setzero_ps();
        x0 = _mm512_max_ps(z, x0);
        x1 = _mm512_max_ps(z, x1);
        x2 = _mm512_max_ps(z, x2);
    }
    _mm512_storeu_ps(co, x0);
    _mm512_storeu_ps(co + 16, x1);
    _mm512_storeu_ps(co + 32, x2);
}

/* The 4 x 48 tile's accumulators: c<row><vector>. */
#define ACC_ZERO                                                                             \
    __m512 c00 = _mm512_setzero_ps(), c01 = _mm512_setzero_ps(), c02 = _mm512_setzero_ps();  \
    __m512 c10 = _mm512_setzero_ps(), c11 = _mm512_setzero_ps(), c12 = _mm512_setzero_ps();  \
    __m512 c20 = _mm512_setzero_ps(), c21 = _mm512_setzero_ps(), c22 = _mm512_setzero_ps();  \
    __m512 c30 = _mm512_setzero_ps(), c31 = _mm512_setzero_ps(), c32 = _mm512_setzero_ps()

/* One k step: the 48 floats at bp times the 4 floats at a, added to the accumulators. */
#define ACC_STEP(bp, a)                                                                      \
    do {                                                                                     \
        const __m512 b0 = _mm512_loadu_ps(bp);                                               \
        const __m512 b1 = _mm512_loadu_ps((bp) + 16);                                        \
        const __m512 b2 = _mm512_loadu_ps((bp) + 32);                                        \
        __m512 av = _mm512_set1_ps((a)[0]);                                                  \
        c00 = _mm512_fmadd_ps(av, b0, c00);                                                  \
        c01 = _mm512_fmadd_ps(av, b1, c01);                                                  \
        c02 = _mm512_fmadd_ps(av, b2, c02);                                                  \
        av = _mm512_set1_ps((a)[1]);                                                         \
        c10 = _mm512_fmadd_ps(av, b0, c10);                                                  \
        c11 = _mm512_fmadd_ps(av, b1, c11);                                                  \
        c12 = _mm512_fmadd_ps(av, b2, c12);                                                  \
        av = _mm512_set1_ps((a)[2]);                                                         \
        c20 = _mm512_fmadd_ps(av, b0, c20);                                                  \
        c21 = _mm512_fmadd_ps(av, b1, c21);                                                  \
        c22 = _mm512_fmadd_ps(av, b2, c22);                                                  \
        av = _mm512_set1_ps((a)[3]);                                                         \
        c30 = _mm512_fmadd_ps(av, b0, c30);                                                  \
        c31 = _mm512_fmadd_ps(av, b1, c31);                                                  \
        c32 = _mm512_fmadd_ps(av, b2, c32);                                                  \
    } while (0)

/* The epilogue of all four rows. */
#define ACC_STORE                                                                            \
    do {                                                                                     \
        store_row(c00, c01, c02, alpha, cin, beta, cout, bias, relu);                        \
        store_row(c10, c11, c12, alpha, cin ? cin + ldi : NULL, beta, cout + ldo,            \
                  bias ? bias + 1 : NULL, relu);                                             \
        store_row(c20, c21, c22, alpha, cin ? cin + 2 * ldi : NULL, beta, cout + 2 * ldo,    \
                  bias ? bias + 2 : NULL, relu);                                             \
        store_row(c30, c31, c32, alpha, cin ? cin + 3 * ldi : NULL, beta, cout + 3 * ldo,    \
                  bias ? bias + 3 : NULL, relu);                                             \
    } while (0)

void ssd__ukernel(int kc, const float *a, const float *b, float alpha,
                  const float *cin, ptrdiff_t ldi, float beta,
                  float *cout, ptrdiff_t ldo, const float *bias, int relu)
{
    ACC_ZERO;
    for (int p = 0; p < kc; ++p) {
        ACC_STEP(b, a);
        a += SSD_MR;
        b += SSD_NR;
    }
    ACC_STORE;
}

void ssd__ukernel_rows(int kc, const float *a, const float *b, const int *boff, float alpha,
                       const float *cin, ptrdiff_t ldi, float beta,
                       float *cout, ptrdiff_t ldo, const float *bias, int relu)
{
    ACC_ZERO;
    for (int p = 0; p < kc; ++p) {
        const float *bp = b + boff[p];
        ACC_STEP(bp, a);
        a += SSD_MR;
    }
    ACC_STORE;
}

/* ---- 8 x 48 tile of the Winograd products (contract in gemm_internal.h) ---------------------
 * Two MR-row micro-panels at once: 24 zmm accumulators + 3 B vectors + 1 broadcast; per k
 * step 3 loads + 8 broadcasts feed 24 FMAs, and a B micro-panel is read once for 8 rows
 * instead of twice. Each element's sum runs over k in the same order as in ssd__ukernel. */
void ssd__ukernel8(int kc, const float *a0, const float *a1, const float *b, float *c,
                   ptrdiff_t ldc)
{
    __m512 acc[8][3];
    for (int r = 0; r < 8; ++r) acc[r][0] = acc[r][1] = acc[r][2] = _mm512_setzero_ps();
    for (int p = 0; p < kc; ++p) {
        const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
        const __m512 b2 = _mm512_loadu_ps(b + 32);
        for (int r = 0; r < 8; ++r) {
            const __m512 av = _mm512_set1_ps(r < 4 ? a0[r] : a1[r - 4]);
            acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
            acc[r][2] = _mm512_fmadd_ps(av, b2, acc[r][2]);
        }
        a0 += SSD_MR;
        a1 += SSD_MR;
        b += SSD_NR;
    }
    for (int r = 0; r < 8; ++r) {
        _mm512_storeu_ps(c + r * ldc, acc[r][0]);
        _mm512_storeu_ps(c + r * ldc + 16, acc[r][1]);
        _mm512_storeu_ps(c + r * ldc + 32, acc[r][2]);
    }
}

/* ---- backward-weight dot-product tile (contract in gemm_internal.h) ------------------------
 * The 4 x 3 tile of the AVX2 kernel on 16 pixels per vector: 12 zmm accumulators, per
 * 16 pixels 3 + 4 vector loads feed 12 FMAs. A segment length that is an odd multiple of 8
 * ends with one step on the low 8 lanes (masked loads: nothing past the end is read). */

static inline float hsum16(__m512 v) { return _mm512_reduce_add_ps(v); }

void ssd__bw_tile(const float *d0, const float *d1, const float *d2, const float *d3,
                  const float *x0, const float *x1, const float *x2, int n, int nseg,
                  size_t dseg, size_t xseg, float out[12])
{
    __m512 a00 = _mm512_setzero_ps(), a01 = _mm512_setzero_ps(), a02 = _mm512_setzero_ps();
    __m512 a10 = _mm512_setzero_ps(), a11 = _mm512_setzero_ps(), a12 = _mm512_setzero_ps();
    __m512 a20 = _mm512_setzero_ps(), a21 = _mm512_setzero_ps(), a22 = _mm512_setzero_ps();
    __m512 a30 = _mm512_setzero_ps(), a31 = _mm512_setzero_ps(), a32 = _mm512_setzero_ps();
    const __mmask16 lo8 = 0x00ff;
#define BW_STEP(LOAD)                                                                        \
    do {                                                                                     \
        const __m512 v0 = LOAD(x0 + q), v1 = LOAD(x1 + q), v2 = LOAD(x2 + q);                \
        __m512 d = LOAD(d0 + q);                                                             \
        a00 = _mm512_fmadd_ps(d, v0, a00);                                                   \
        a01 = _mm512_fmadd_ps(d, v1, a01);                                                   \
        a02 = _mm512_fmadd_ps(d, v2, a02);                                                   \
        d = LOAD(d1 + q);                                                                    \
        a10 = _mm512_fmadd_ps(d, v0, a10);                                                   \
        a11 = _mm512_fmadd_ps(d, v1, a11);                                                   \
        a12 = _mm512_fmadd_ps(d, v2, a12);                                                   \
        d = LOAD(d2 + q);                                                                    \
        a20 = _mm512_fmadd_ps(d, v0, a20);                                                   \
        a21 = _mm512_fmadd_ps(d, v1, a21);                                                   \
        a22 = _mm512_fmadd_ps(d, v2, a22);                                                   \
        d = LOAD(d3 + q);                                                                    \
        a30 = _mm512_fmadd_ps(d, v0, a30);                                                   \
        a31 = _mm512_fmadd_ps(d, v1, a31);                                                   \
        a32 = _mm512_fmadd_ps(d, v2, a32);                                                   \
    } while (0)
#define LOAD16(p) _mm512_loadu_ps(p)
#define LOAD8(p) _mm512_maskz_loadu_ps(lo8, p)
    for (int m = 0; m < nseg; ++m) {
        int q = 0;
        for (; q + 16 <= n; q += 16) BW_STEP(LOAD16);
        if (q < n) BW_STEP(LOAD8);
        d0 += dseg; d1 += dseg; d2 += dseg; d3 += dseg;
        x0 += xseg; x1 += xseg; x2 += xseg;
    }
#undef LOAD8
#undef LOAD16
#undef BW_STEP
    out[0] = hsum16(a00); out[1] = hsum16(a01); out[2] = hsum16(a02);
    out[3] = hsum16(a10); out[4] = hsum16(a11); out[5] = hsum16(a12);
    out[6] = hsum16(a20); out[7] = hsum16(a21); out[8] = hsum16(a22);
    out[9] = hsum16(a30); out[10] = hsum16(a31); out[11] = hsum16(a32);
}

/* ---- 4 x 6 backward-weight tile (contract in gemm_internal.h) -------------------------------
 * Twice the taps of ssd__bw_tile: 24 zmm accumulators; per 16 pixels 6 + 4 vector loads feed
 * 24 FMAs (7 feed 12 in the 4 x 3 tile). Lane sums are reduced as in ssd__bw_tile. */
void ssd__bw_tile6(const float *const d[4], const float *const x[6], int n, int nseg,
                   size_t dseg, size_t xseg, float out[24])
{
    /* named accumulators (an array of them is not kept in registers by every compiler) */
    __m512 a00, a01, a02, a03, a04, a05, a10, a11, a12, a13, a14, a15;
    __m512 a20, a21, a22, a23, a24, a25, a30, a31, a32, a33, a34, a35;
    a00 = a01 = a02 = a03 = a04 = a05 = a10 = a11 = a12 = a13 = a14 = a15 = _mm512_setzero_ps();
    a20 = a21 = a22 = a23 = a24 = a25 = a30 = a31 = a32 = a33 = a34 = a35 = _mm512_setzero_ps();
    const float *d0 = d[0], *d1 = d[1], *d2 = d[2], *d3 = d[3];
    const float *x0 = x[0], *x1 = x[1], *x2 = x[2], *x3 = x[3], *x4 = x[4], *x5 = x[5];
    const __mmask16 lo8 = 0x00ff;
#define BW6_STEP(LOAD)                                                                       \
    do {                                                                                     \
        const __m512 v0 = LOAD(x0 + q), v1 = LOAD(x1 + q), v2 = LOAD(x2 + q);                \
        const __m512 v3 = LOAD(x3 + q), v4 = LOAD(x4 + q), v5 = LOAD(x5 + q);                \
        __m512 dv;                                                                           \
        dv = LOAD(d0 + q);                                                                   \
        a00 = _mm512_fmadd_ps(dv, v0, a00);                                                  \
        a01 = _mm512_fmadd_ps(dv, v1, a01);                                                  \
        a02 = _mm512_fmadd_ps(dv, v2, a02);                                                  \
        a03 = _mm512_fmadd_ps(dv, v3, a03);                                                  \
        a04 = _mm512_fmadd_ps(dv, v4, a04);                                                  \
        a05 = _mm512_fmadd_ps(dv, v5, a05);                                                  \
        dv = LOAD(d1 + q);                                                                   \
        a10 = _mm512_fmadd_ps(dv, v0, a10);                                                  \
        a11 = _mm512_fmadd_ps(dv, v1, a11);                                                  \
        a12 = _mm512_fmadd_ps(dv, v2, a12);                                                  \
        a13 = _mm512_fmadd_ps(dv, v3, a13);                                                  \
        a14 = _mm512_fmadd_ps(dv, v4, a14);                                                  \
        a15 = _mm512_fmadd_ps(dv, v5, a15);                                                  \
        dv = LOAD(d2 + q);                                                                   \
        a20 = _mm512_fmadd_ps(dv, v0, a20);                                                  \
        a21 = _mm512_fmadd_ps(dv, v1, a21);                                                  \
        a22 = _mm512_fmadd_ps(dv, v2, a22);                                                  \
        a23 = _mm512_fmadd_ps(dv, v3, a23);                                                  \
        a24 = _mm512_fmadd_ps(dv, v4, a24);                                                  \
        a25 = _mm512_fmadd_ps(dv, v5, a25);                                                  \
        dv = LOAD(d3 + q);                                                                   \
        a30 = _mm512_fmadd_ps(dv, v0, a30);                                                  \
        a31 = _mm512_fmadd_ps(dv, v1, a31);                                                  \
        a32 = _mm512_fmadd_ps(dv, v2, a32);                                                  \
        a33 = _mm512_fmadd_ps(dv, v3, a33);                                                  \
        a34 = _mm512_fmadd_ps(dv, v4, a34);                                                  \
        a35 = _mm512_fmadd_ps(dv, v5, a35);                                                  \
    } while (0)
#define LOAD16(p) _mm512_loadu_ps(p)
#define LOAD8(p) _mm512_maskz_loadu_ps(lo8, p)
    for (int m = 0; m < nseg; ++m) {
        int q = 0;
        for (; q + 16 <= n; q += 16) BW6_STEP(LOAD16);
        if (q < n) BW6_STEP(LOAD8);
        d0 += dseg; d1 += dseg; d2 += dseg; d3 += dseg;
        x0 += xseg; x1 += xseg; x2 += xseg; x3 += xseg; x4 += xseg; x5 += xseg;
    }
#undef LOAD8
#undef LOAD16
#undef BW6_STEP
    out[0] = hsum16(a00);
    out[1] = hsum16(a01);
    out[2] = hsum16(a02);
    out[3] = hsum16(a03);
    out[4] = hsum16(a04);
    out[5] = hsum16(a05);
    out[6] = hsum16(a10);
    out[7] = hsum16(a11);
    out[8] = hsum16(a12);
    out[9] = hsum16(a13);
    out[10] = hsum16(a14);
    out[11] = hsum16(a15);
    out[12] = hsum16(a20);
    out[13] = hsum16(a21);
    out[14] = hsum16(a22);
    out[15] = hsum16(a23);
    out[16] = hsum16(a24);
    out[17] = hsum16(a25);
    out[18] = hsum16(a30);
    out[19] = hsum16(a31);
    out[20] = hsum16(a32);
    out[21] = hsum16(a33);
    out[22] = hsum16(a34);
    out[23] = hsum16(a35);
}

#endif
