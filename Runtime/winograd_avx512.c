/*
 * winograd_avx512.c — the input and output transforms of winograd.c's F(2x2, 3x3) for 16
 * tiles at a time, one per lane of a zmm register (the contracts are in
 * winograd_internal.h). Compiled only when the library is built with AVX-512F; otherwise
 * winograd.c runs its 8-lane AVX2 or portable transforms and this file is empty.
 *
 * The arithmetic is winograd.c's, operation for operation and in the same order, so a
 * tile gives the same bits whichever width transformed it; only the shuffles differ: the
 * even and odd columns of 32 consecutive floats are gathered with one two-source
 * permute each, and the 2 x 2 outputs of 16 tiles are interleaved back the same way.
 */
#include "winograd_internal.h"

#ifdef SSD_WG_AVX512

#include <immintrin.h>

/* Element i of the pair (u, v) for i < 16 is u[i], else v[i - 16]. */
static inline __m512 evens(__m512 u, __m512 v)
{
    const __m512i idx = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    return _mm512_permutex2var_ps(u, idx, v);
}

static inline __m512 odds(__m512 u, __m512 v)
{
    const __m512i idx = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    return _mm512_permutex2var_ps(u, idx, v);
}

/* The lanes l of a 16-float load at column `start` of a W-wide row with 0 <= start + l < W. */
static inline __mmask16 row_mask(int start, int W)
{
    const int lo = start < 0 ? -start : 0, hi = W - start < 16 ? W - start : 16;
    if (hi <= lo) return 0;
    return (__mmask16)(((1u << hi) - 1u) & ~((1u << lo) - 1u));
}

/* 16 floats of `row` from column start (start >= -1), zeros outside the row: masked
 * loads, and at start = -1 an expanding load into lanes 1..15, so no address before the
 * row is formed. */
static inline __m512 row_load(const float *row, int start, __mmask16 m)
{
    return start < 0 ? _mm512_maskz_expandloadu_ps(m, row) : _mm512_maskz_loadu_ps(m, row + start);
}

void ssd__wg_input16(const float *x, int H, int W, int ty, int tx0, float *V, size_t vstride)
{
    /* rows 2ty-1 .. 2ty+2, columns c0 = 2tx0-1 .. c0+33; rows outside the map are zeros */
    const int r0 = 2 * ty - 1, c0 = 2 * tx0 - 1;
    const __mmask16 ma = row_mask(c0, W), mb = row_mask(c0 + 16, W);
    const __mmask16 ma2 = row_mask(c0 + 2, W), mb2 = row_mask(c0 + 18, W);
    /* lane l of tile row i: p[2l .. 2l+3] = e0, o0, e1, o1 */
    __m512 cb[4][4];
    for (int i = 0; i < 4; ++i) {
        const int r = r0 + i;
        if (r < 0 || r >= H) {
            for (int j = 0; j < 4; ++j) cb[i][j] = _mm512_setzero_ps();
            continue;
        }
        const float *p = x + (size_t)r * W;
        const __m512 a = row_load(p, c0, ma), b = row_load(p, c0 + 16, mb);
        const __m512 a2 = row_load(p, c0 + 2, ma2), b2 = row_load(p, c0 + 18, mb2);
        const __m512 e0 = evens(a, b), o0 = odds(a, b);
        const __m512 e1 = evens(a2, b2), o1 = odds(a2, b2);
        cb[i][0] = _mm512_sub_ps(e0, e1);
        cb[i][1] = _mm512_add_ps(o0, e1);
        cb[i][2] = _mm512_sub_ps(e1, o0);
        cb[i][3] = _mm512_sub_ps(o0, o1);
    }
    for (int j = 0; j < 4; ++j) {
        _mm512_storeu_ps(V + (size_t)(0 * 4 + j) * vstride, _mm512_sub_ps(cb[0][j], cb[2][j]));
        _mm512_storeu_ps(V + (size_t)(1 * 4 + j) * vstride, _mm512_add_ps(cb[1][j], cb[2][j]));
        _mm512_storeu_ps(V + (size_t)(2 * 4 + j) * vstride, _mm512_sub_ps(cb[2][j], cb[1][j]));
        _mm512_storeu_ps(V + (size_t)(3 * 4 + j) * vstride, _mm512_sub_ps(cb[1][j], cb[3][j]));
    }
}

/* v replaces cur if v > cur or v is NaN (pool.c's rule). */
static inline __m512 pool_take(__m512 v, __m512 cur)
{
    const __mmask16 k = _mm512_cmp_ps_mask(v, cur, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    return _mm512_mask_blend_ps(k, cur, v);
}

void ssd__wg_output16(const float *m, size_t mstride, float bias, int relu, float *y, int W,
                      size_t ldp, int pool, int stream)
{
    __m512 s0[4], s1[4];
    for (int j = 0; j < 4; ++j) {
        const __m512 m0 = _mm512_loadu_ps(m + (size_t)(0 * 4 + j) * mstride);
        const __m512 m1 = _mm512_loadu_ps(m + (size_t)(1 * 4 + j) * mstride);
        const __m512 m2 = _mm512_loadu_ps(m + (size_t)(2 * 4 + j) * mstride);
        const __m512 m3 = _mm512_loadu_ps(m + (size_t)(3 * 4 + j) * mstride);
        s0[j] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
        s1[j] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
    }
    const __m512 vb = _mm512_set1_ps(bias);
    __m512 a = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(s0[0], s0[1]), s0[2]), vb);
    __m512 b = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(s0[1], s0[2]), s0[3]), vb);
    __m512 c = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(s1[0], s1[1]), s1[2]), vb);
    __m512 d = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(s1[1], s1[2]), s1[3]), vb);
    if (relu) { /* max(0, v) keeps NaN, like v < 0 ? 0 : v */
        const __m512 z = _mm512_setzero_ps();
        a = _mm512_max_ps(z, a);
        b = _mm512_max_ps(z, b);
        c = _mm512_max_ps(z, c);
        d = _mm512_max_ps(z, d);
    }
    if (pool) {
        const __m512 mx = pool_take(d, pool_take(c, pool_take(b, a)));
        if (ldp == 1) {
            _mm512_storeu_ps(y, mx);
        } else {
            float v[16];
            _mm512_storeu_ps(v, mx);
            for (int l = 0; l < 16; ++l) y[(size_t)l * ldp] = v[l];
        }
        return;
    }
    if (ldp != 1) { /* a strided layout (channels-last): scatter */
        float va[16], vb2[16], vc[16], vd[16];
        _mm512_storeu_ps(va, a);
        _mm512_storeu_ps(vb2, b);
        _mm512_storeu_ps(vc, c);
        _mm512_storeu_ps(vd, d);
        for (int l = 0; l < 16; ++l) {
            y[(size_t)(2 * l) * ldp] = va[l];
            y[(size_t)(2 * l + 1) * ldp] = vb2[l];
            y[((size_t)W + 2 * l) * ldp] = vc[l];
            y[((size_t)W + 2 * l + 1) * ldp] = vd[l];
        }
        return;
    }
    /* interleave: row 0 is a0 b0 a1 b1 ..., row 1 is c0 d0 c1 d1 ... */
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    if (stream) {
        _mm512_stream_ps(y, _mm512_permutex2var_ps(a, lo, b));
        _mm512_stream_ps(y + 16, _mm512_permutex2var_ps(a, hi, b));
        _mm512_stream_ps(y + W, _mm512_permutex2var_ps(c, lo, d));
        _mm512_stream_ps(y + W + 16, _mm512_permutex2var_ps(c, hi, d));
        return;
    }
    _mm512_storeu_ps(y, _mm512_permutex2var_ps(a, lo, b));
    _mm512_storeu_ps(y + 16, _mm512_permutex2var_ps(a, hi, b));
    _mm512_storeu_ps(y + W, _mm512_permutex2var_ps(c, lo, d));
    _mm512_storeu_ps(y + W + 16, _mm512_permutex2var_ps(c, hi, d));
}

void ssd__wg_dy16(const float *dy, int W, int ty, int tx0, float *D, size_t dstride)
{
    const float *r0 = dy + (size_t)(2 * ty) * W + 2 * tx0, *r1 = r0 + W;
    const __m512 a0 = _mm512_loadu_ps(r0), b0 = _mm512_loadu_ps(r0 + 16);
    const __m512 a1 = _mm512_loadu_ps(r1), b1 = _mm512_loadu_ps(r1 + 16);
    const __m512 e0 = evens(a0, b0), o0 = odds(a0, b0);
    const __m512 e1 = evens(a1, b1), o1 = odds(a1, b1);
    const __m512 z = _mm512_setzero_ps();
    /* rows: A dy = (row0, row0 + row1, row0 - row1, -row1), for the even and odd columns */
    const __m512 te[4] = {e0, _mm512_add_ps(e0, e1), _mm512_sub_ps(e0, e1), _mm512_sub_ps(z, e1)};
    const __m512 to[4] = {o0, _mm512_add_ps(o0, o1), _mm512_sub_ps(o0, o1), _mm512_sub_ps(z, o1)};
    for (int i = 0; i < 4; ++i) { /* columns: (.) A^T = (e, e + o, e - o, -o) */
        _mm512_storeu_ps(D + (size_t)(i * 4 + 0) * dstride, te[i]);
        _mm512_storeu_ps(D + (size_t)(i * 4 + 1) * dstride, _mm512_add_ps(te[i], to[i]));
        _mm512_storeu_ps(D + (size_t)(i * 4 + 2) * dstride, _mm512_sub_ps(te[i], to[i]));
        _mm512_storeu_ps(D + (size_t)(i * 4 + 3) * dstride, _mm512_sub_ps(z, to[i]));
    }
}

#endif
