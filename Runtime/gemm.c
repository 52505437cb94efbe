/*
 * gemm.c — single-precision GEMM (C = alpha * op(A) * op(B) + beta * C, row-major).
 *
 * Structure (GotoBLAS / BLIS style, tuned for a 2-core Zen 3 with AVX2 + FMA:
 * 32 KB L1d and 512 KB L2 per core, 16 ymm registers):
 *
 *   for ic0 in M step MC (256 rows)                       A block 256 x 256 = 256 KB -> L2
 *     for pc in K step kc (<= 256, see ssd__kc_block)
 *       pack A[ic0:ic0+MC, pc:pc+kc] into MR-row micro-panels      (shared, all threads)
 *       barrier
 *       parallel over tasks = (B column micro-panel, group of A micro-panels):
 *         pack the kc x NR B micro-panel into a per-thread stack buffer (24 KB -> L1)
 *         for each A micro-panel of the group: 4 x 24 register-tiled micro-kernel
 *       barrier
 *
 * Micro-kernel 4 x 24: 12 accumulators + 3 B vectors + 1 broadcast A value = 16 ymm.
 * (Built with AVX-512F, the kernel is gemm_avx512.c's 4 x 48 on zmm registers instead, and
 * NR = 48 everywhere below: same blocking, B micro-panel 48 KB.)
 * Per k step it does 12 FMAs for 3 vector loads + 4 broadcasts. MR = 4 (rather than the
 * classic 6 x 16) divides every channel count of TinySSD (8, 16, 32, 64, 128), which is
 * the M of the convolution GEMMs, so no rows are wasted there.
 *
 * Threads only split independent tiles of C; the K loop of every C element runs in the
 * same order whatever the thread count (kc depends on K only), so results are
 * bit-identical for any number of threads.
 *
 * Packing: op(B) rows are copied (N) or transposed 8 x 8 with AVX shuffles (T) into the
 * micro-panel; op(A) columns likewise with 4 x 4 transposes. Edge tiles (M % 4, N % 24)
 * are packed with zeros and computed into a local 4 x 24 tile, then copied.
 *
 * Buffers: the B micro-panel lives on each thread's stack (24 KB). The shared A block
 * (256 KB) is a static array, since the contract forbids allocation; the sgemm body is a
 * named critical section so concurrent callers cannot share it. (conv.c does not use it:
 * it packs its weights into the caller's scratch and feeds ssd__ukernel_rows with rows of
 * the padded image directly.)
 */
#include "ssd_runtime.h"
#include "gemm_internal.h"

#include <omp.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define SSD_GEMM_AVX2 1
#endif

#define SSD_MC 256

const char *ssd_runtime_isa(void) { return SSD_UKERNEL_ISA; }

int ssd__kc_block(int K)
{
    if (K <= SSD_KC_MAX) return K < 1 ? 1 : K;
    int nb = (K + SSD_KC_MAX - 1) / SSD_KC_MAX;
    return (K + nb - 1) / nb;
}

/* ---- micro-kernel ---------------------------------------------------------------------- */

#if defined(SSD_UKERNEL_AVX512)
/* ssd__ukernel and ssd__ukernel_rows are in gemm_avx512.c. */
#elif defined(SSD_GEMM_AVX2)

static inline void store_row(__m256 x0, __m256 x1, __m256 x2, float alpha, const float *ci,
                             float beta, float *co, const float *bias, int relu)
{
    if (alpha != 1.0f) {
        const __m256 va = _mm256_set1_ps(alpha);
        x0 = _mm256_mul_ps(va, x0);
        x1 = _mm256_mul_ps(va, x1);
        x2 = _mm256_mul_ps(va, x2);
    }
    if (ci) {
        if (beta == 1.0f) {
            x0 = _mm256_add_ps(x0, _mm256_loadu_ps(ci));
            x1 = _mm256_add_ps(x1, _mm256_loadu_ps(ci + 8));
            x2 = _mm256_add_ps(x2, _mm256_loadu_ps(ci + 16));
        } else {
            const __m256 vb = _mm256_set1_ps(beta);
            x0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci), x0);
            x1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci + 8), x1);
            x2 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci + 16), x2);
        }
    }
    if (bias) {
        const __m256 vb = _mm256_set1_ps(*bias);
        x0 = _mm256_add_ps(x0, vb);
        x1 = _mm256_add_ps(x1, vb);
        x2 = _mm256_add_ps(x2, vb);
    }
    if (relu) {
        /* max(0, x) returns x when x is NaN (second operand), like x < 0 ? 0 : x. */
        const __m256 z = _mm256_setzero_ps();
        x0 = _mm256_max_ps(z, x0);
        x1 = _mm256_max_ps(z, x1);
        x2 = _mm256_max_ps(z, x2);
    }
    _mm256_storeu_ps(co, x0);
    _mm256_storeu_ps(co + 8, x1);
    _mm256_storeu_ps(co + 16, x2);
}

void ssd__ukernel(int kc, const float *a, const float *b, float alpha,
                  const float *cin, ptrdiff_t ldi, float beta,
                  float *cout, ptrdiff_t ldo, const float *bias, int relu)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps(), c02 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps(), c12 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps(), c22 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps(), c32 = _mm256_setzero_ps();

    for (int p = 0; p < kc; ++p) {
        const __m256 b0 = _mm256_loadu_ps(b);
        const __m256 b1 = _mm256_loadu_ps(b + 8);
        const __m256 b2 = _mm256_loadu_ps(b + 16);
        __m256 av = _mm256_broadcast_ss(a);
        c00 = _mm256_fmadd_ps(av, b0, c00);
        c01 = _mm256_fmadd_ps(av, b1, c01);
        c02 = _mm256_fmadd_ps(av, b2, c02);
        av = _mm256_broadcast_ss(a + 1);
        c10 = _mm256_fmadd_ps(av, b0, c10);
        c11 = _mm256_fmadd_ps(av, b1, c11);
        c12 = _mm256_fmadd_ps(av, b2, c12);
        av = _mm256_broadcast_ss(a + 2);
        c20 = _mm256_fmadd_ps(av, b0, c20);
        c21 = _mm256_fmadd_ps(av, b1, c21);
        c22 = _mm256_fmadd_ps(av, b2, c22);
        av = _mm256_broadcast_ss(a + 3);
        c30 = _mm256_fmadd_ps(av, b0, c30);
        c31 = _mm256_fmadd_ps(av, b1, c31);
        c32 = _mm256_fmadd_ps(av, b2, c32);
        a += SSD_MR;
        b += SSD_NR;
    }

    store_row(c00, c01, c02, alpha, cin, beta, cout, bias, relu);
    store_row(c10, c11, c12, alpha, cin ? cin + ldi : NULL, beta, cout + ldo,
              bias ? bias + 1 : NULL, relu);
    store_row(c20, c21, c22, alpha, cin ? cin + 2 * ldi : NULL, beta, cout + 2 * ldo,
              bias ? bias + 2 : NULL, relu);
    store_row(c30, c31, c32, alpha, cin ? cin + 3 * ldi : NULL, beta, cout + 3 * ldo,
              bias ? bias + 3 : NULL, relu);
}

void ssd__ukernel_rows(int kc, const float *a, const float *b, const int *boff, float alpha,
                       const float *cin, ptrdiff_t ldi, float beta,
                       float *cout, ptrdiff_t ldo, const float *bias, int relu)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps(), c02 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps(), c12 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps(), c22 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps(), c32 = _mm256_setzero_ps();

    for (int p = 0; p < kc; ++p) {
        const float *bp = b + boff[p];
        const __m256 b0 = _mm256_loadu_ps(bp);
        const __m256 b1 = _mm256_loadu_ps(bp + 8);
        const __m256 b2 = _mm256_loadu_ps(bp + 16);
        __m256 av = _mm256_broadcast_ss(a);
        c00 = _mm256_fmadd_ps(av, b0, c00);
        c01 = _mm256_fmadd_ps(av, b1, c01);
        c02 = _mm256_fmadd_ps(av, b2, c02);
        av = _mm256_broadcast_ss(a + 1);
        c10 = _mm256_fmadd_ps(av, b0, c10);
        c11 = _mm256_fmadd_ps(av, b1, c11);
        c12 = _mm256_fmadd_ps(av, b2, c12);
        av = _mm256_broadcast_ss(a + 2);
        c20 = _mm256_fmadd_ps(av, b0, c20);
        c21 = _mm256_fmadd_ps(av, b1, c21);
        c22 = _mm256_fmadd_ps(av, b2, c22);
        av = _mm256_broadcast_ss(a + 3);
        c30 = _mm256_fmadd_ps(av, b0, c30);
        c31 = _mm256_fmadd_ps(av, b1, c31);
        c32 = _mm256_fmadd_ps(av, b2, c32);
        a += SSD_MR;
    }

    store_row(c00, c01, c02, alpha, cin, beta, cout, bias, relu);
    store_row(c10, c11, c12, alpha, cin ? cin + ldi : NULL, beta, cout + ldo,
              bias ? bias + 1 : NULL, relu);
    store_row(c20, c21, c22, alpha, cin ? cin + 2 * ldi : NULL, beta, cout + 2 * ldo,
              bias ? bias + 2 : NULL, relu);
    store_row(c30, c31, c32, alpha, cin ? cin + 3 * ldi : NULL, beta, cout + 3 * ldo,
              bias ? bias + 3 : NULL, relu);
}

static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

void ssd__bw_tile(const float *d0, const float *d1, const float *d2, const float *d3,
                  const float *x0, const float *x1, const float *x2, int n, int nseg,
                  size_t dseg, size_t xseg, float out[12])
{
    __m256 a00 = _mm256_setzero_ps(), a01 = _mm256_setzero_ps(), a02 = _mm256_setzero_ps();
    __m256 a10 = _mm256_setzero_ps(), a11 = _mm256_setzero_ps(), a12 = _mm256_setzero_ps();
    __m256 a20 = _mm256_setzero_ps(), a21 = _mm256_setzero_ps(), a22 = _mm256_setzero_ps();
    __m256 a30 = _mm256_setzero_ps(), a31 = _mm256_setzero_ps(), a32 = _mm256_setzero_ps();
    for (int m = 0; m < nseg; ++m) {
        for (int q = 0; q < n; q += 8) {
            const __m256 v0 = _mm256_loadu_ps(x0 + q);
            const __m256 v1 = _mm256_loadu_ps(x1 + q);
            const __m256 v2 = _mm256_loadu_ps(x2 + q);
            __m256 d = _mm256_loadu_ps(d0 + q);
            a00 = _mm256_fmadd_ps(d, v0, a00);
            a01 = _mm256_fmadd_ps(d, v1, a01);
            a02 = _mm256_fmadd_ps(d, v2, a02);
            d = _mm256_loadu_ps(d1 + q);
            a10 = _mm256_fmadd_ps(d, v0, a10);
            a11 = _mm256_fmadd_ps(d, v1, a11);
            a12 = _mm256_fmadd_ps(d, v2, a12);
            d = _mm256_loadu_ps(d2 + q);
            a20 = _mm256_fmadd_ps(d, v0, a20);
            a21 = _mm256_fmadd_ps(d, v1, a21);
            a22 = _mm256_fmadd_ps(d, v2, a22);
            d = _mm256_loadu_ps(d3 + q);
            a30 = _mm256_fmadd_ps(d, v0, a30);
            a31 = _mm256_fmadd_ps(d, v1, a31);
            a32 = _mm256_fmadd_ps(d, v2, a32);
        }
        d0 += dseg; d1 += dseg; d2 += dseg; d3 += dseg;
        x0 += xseg; x1 += xseg; x2 += xseg;
    }
    out[0] = hsum8(a00); out[1] = hsum8(a01); out[2] = hsum8(a02);
    out[3] = hsum8(a10); out[4] = hsum8(a11); out[5] = hsum8(a12);
    out[6] = hsum8(a20); out[7] = hsum8(a21); out[8] = hsum8(a22);
    out[9] = hsum8(a30); out[10] = hsum8(a31); out[11] = hsum8(a32);
}

#else /* portable fallback: same arithmetic, left to the auto-vectoriser */

void ssd__ukernel(int kc, const float *a, const float *b, float alpha,
                  const float *cin, ptrdiff_t ldi, float beta,
                  float *cout, ptrdiff_t ldo, const float *bias, int relu)
{
    float acc[SSD_MR][SSD_NR];
    for (int r = 0; r < SSD_MR; ++r)
        for (int j = 0; j < SSD_NR; ++j) acc[r][j] = 0.0f;
    for (int p = 0; p < kc; ++p) {
        for (int r = 0; r < SSD_MR; ++r) {
            const float av = a[r];
            for (int j = 0; j < SSD_NR; ++j) acc[r][j] += av * b[j];
        }
        a += SSD_MR;
        b += SSD_NR;
    }
    for (int r = 0; r < SSD_MR; ++r) {
        for (int j = 0; j < SSD_NR; ++j) {
            float t = acc[r][j];
            if (alpha != 1.0f) t = alpha * t;
            if (cin) t = beta == 1.0f ? t + cin[r * ldi + j] : t + beta * cin[r * ldi + j];
            if (bias) t += bias[r];
            if (relu) t = t < 0.0f ? 0.0f : t;
            cout[r * ldo + j] = t;
        }
    }
}

void ssd__ukernel_rows(int kc, const float *a, const float *b, const int *boff, float alpha,
                       const float *cin, ptrdiff_t ldi, float beta,
                       float *cout, ptrdiff_t ldo, const float *bias, int relu)
{
    float acc[SSD_MR][SSD_NR];
    for (int r = 0; r < SSD_MR; ++r)
        for (int j = 0; j < SSD_NR; ++j) acc[r][j] = 0.0f;
    for (int p = 0; p < kc; ++p) {
        const float *bp = b + boff[p];
        for (int r = 0; r < SSD_MR; ++r) {
            const float av = a[r];
            for (int j = 0; j < SSD_NR; ++j) acc[r][j] += av * bp[j];
        }
        a += SSD_MR;
    }
    for (int r = 0; r < SSD_MR; ++r) {
        for (int j = 0; j < SSD_NR; ++j) {
            float t = acc[r][j];
            if (alpha != 1.0f) t = alpha * t;
            if (cin) t = beta == 1.0f ? t + cin[r * ldi + j] : t + beta * cin[r * ldi + j];
            if (bias) t += bias[r];
            if (relu) t = t < 0.0f ? 0.0f : t;
            cout[r * ldo + j] = t;
        }
    }
}

void ssd__bw_tile(const float *d0, const float *d1, const float *d2, const float *d3,
                  const float *x0, const float *x1, const float *x2, int n, int nseg,
                  size_t dseg, size_t xseg, float out[12])
{
    const float *d[4] = {d0, d1, d2, d3};
    const float *x[3] = {x0, x1, x2};
    for (int r = 0; r < 4; ++r) {
        for (int s = 0; s < 3; ++s) {
            float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (int m = 0; m < nseg; ++m) {
                const float *dm = d[r] + m * dseg, *xm = x[s] + m * xseg;
                for (int q = 0; q < n; q += 8)
                    for (int l = 0; l < 8; ++l) lane[l] += dm[q + l] * xm[q + l];
            }
            out[r * 3 + s] = ((lane[0] + lane[4]) + (lane[2] + lane[6])) +
                             ((lane[1] + lane[5]) + (lane[3] + lane[7]));
        }
    }
}

#endif

/* ---- packing --------------------------------------------------------------------------- */

#ifdef SSD_GEMM_AVX2
/* 8 x 8 transpose: rows s[r*lds .. +8) -> d[c*ldd + r]. */
static inline void transpose8(const float *s, size_t lds, float *d, size_t ldd)
{
    __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + lds);
    __m256 r2 = _mm256_loadu_ps(s + 2 * lds), r3 = _mm256_loadu_ps(s + 3 * lds);
    __m256 r4 = _mm256_loadu_ps(s + 4 * lds), r5 = _mm256_loadu_ps(s + 5 * lds);
    __m256 r6 = _mm256_loadu_ps(s + 6 * lds), r7 = _mm256_loadu_ps(s + 7 * lds);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    _mm256_storeu_ps(d, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(d + ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(d + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(d + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(d + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(d + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(d + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(d + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/* 4 x 4 transpose: rows s[r*lds .. +4) -> d[c*4 + r] (16 contiguous floats). */
static inline void transpose4(const float *s, size_t lds, float *d)
{
    __m128 r0 = _mm_loadu_ps(s), r1 = _mm_loadu_ps(s + lds);
    __m128 r2 = _mm_loadu_ps(s + 2 * lds), r3 = _mm_loadu_ps(s + 3 * lds);
    _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
    _mm_storeu_ps(d, r0);
    _mm_storeu_ps(d + 4, r1);
    _mm_storeu_ps(d + 8, r2);
    _mm_storeu_ps(d + 12, r3);
}
#endif

/* MR rows [i0, i0+mr) of op(A), columns [p0, p0+kc) -> dst[p*MR + r]; missing rows are 0. */
static void pack_a(int transA, const float *A, int lda, int i0, int mr, int p0, int kc,
                   float *restrict dst)
{
    if (!transA) {
        int p = 0;
#ifdef SSD_GEMM_AVX2
        if (mr == SSD_MR)
            for (; p + 4 <= kc; p += 4)
                transpose4(A + (size_t)i0 * lda + p0 + p, (size_t)lda, dst + p * SSD_MR);
#endif
        for (int r = 0; r < SSD_MR; ++r) {
            const float *s = A + (size_t)(i0 + r) * lda + p0;
            for (int q = p; q < kc; ++q) dst[q * SSD_MR + r] = r < mr ? s[q] : 0.0f;
        }
    } else {
        for (int p = 0; p < kc; ++p) {
            const float *s = A + (size_t)(p0 + p) * lda + i0;
            for (int r = 0; r < SSD_MR; ++r) dst[p * SSD_MR + r] = r < mr ? s[r] : 0.0f;
        }
    }
}

/* Rows [p0, p0+kc) of op(B), NR columns from j0 (nr valid) -> dst[p*NR + j]. */
static void pack_b(int transB, const float *B, int ldb, int p0, int kc, int j0, int nr,
                   float *restrict dst)
{
    if (!transB) {
        for (int p = 0; p < kc; ++p) {
            const float *s = B + (size_t)(p0 + p) * ldb + j0;
            float *d = dst + p * SSD_NR;
            if (nr == SSD_NR) {
                memcpy(d, s, SSD_NR * sizeof(float));
            } else {
                for (int j = 0; j < nr; ++j) d[j] = s[j];
                for (int j = nr; j < SSD_NR; ++j) d[j] = 0.0f;
            }
        }
    } else {
        /* B is stored N x K: column j of op(B) is row j0+j of B, contiguous in p. */
        int p = 0;
#ifdef SSD_GEMM_AVX2
        if (nr == SSD_NR)
            for (; p + 8 <= kc; p += 8)
                for (int j = 0; j < SSD_NR; j += 8)
                    transpose8(B + (size_t)(j0 + j) * ldb + p0 + p, (size_t)ldb,
                               dst + p * SSD_NR + j, SSD_NR);
#endif
        for (int j = 0; j < SSD_NR; ++j) {
            const float *s = B + (size_t)(j0 + j) * ldb + p0;
            for (int q = p; q < kc; ++q) dst[q * SSD_NR + j] = j < nr ? s[q] : 0.0f;
        }
    }
}

/* ---- driver ---------------------------------------------------------------------------- */

typedef struct {
    int transA, transB, M, N, K;
    float alpha, beta;
    const float *A, *B;
    int lda, ldb, ldc;
    float *C;
} sgemm_args;

static float g_packa[SSD_MC * SSD_KC_MAX] SSD_ALIGN64;

/* Run by every thread of the team. */
static void sgemm_team(const sgemm_args *g)
{
    const int nt = omp_get_num_threads();
    const int M = g->M, N = g->N, K = g->K;
    const int kcb = ssd__kc_block(K);
    const int npan = (N + SSD_NR - 1) / SSD_NR;
    float bbuf[SSD_KC_MAX * SSD_NR] SSD_ALIGN64;
    float tmp[SSD_MR * SSD_NR] SSD_ALIGN64;

    for (int ic0 = 0; ic0 < M; ic0 += SSD_MC) {
        const int mc = M - ic0 < SSD_MC ? M - ic0 : SSD_MC;
        const int nrp = (mc + SSD_MR - 1) / SSD_MR;
        /* Few B panels (narrow C): also split the A micro-panels into groups so that
         * every thread gets work. The split does not change any arithmetic. */
        int ng = 1;
        if (npan < 4 * nt) {
            ng = (4 * nt + npan - 1) / npan;
            if (ng > nrp) ng = nrp;
        }
        const int rpg = (nrp + ng - 1) / ng;
        ng = (nrp + rpg - 1) / rpg;

        for (int pc = 0; pc < K; pc += kcb) {
            const int kc = K - pc < kcb ? K - pc : kcb;

#pragma omp for schedule(static)
            for (int ip = 0; ip < nrp; ++ip) {
                const int i = ic0 + ip * SSD_MR;
                const int mr = M - i < SSD_MR ? M - i : SSD_MR;
                pack_a(g->transA, g->A, g->lda, i, mr, pc, kc, g_packa + (size_t)ip * SSD_MR * kc);
            }

#pragma omp for schedule(dynamic, 1)
            for (int task = 0; task < npan * ng; ++task) {
                const int jp = task / ng, grp = task % ng;
                const int j0 = jp * SSD_NR;
                const int nr = N - j0 < SSD_NR ? N - j0 : SSD_NR;
                pack_b(g->transB, g->B, g->ldb, pc, kc, j0, nr, bbuf);
                const int ip_end = (grp + 1) * rpg < nrp ? (grp + 1) * rpg : nrp;
                for (int ip = grp * rpg; ip < ip_end; ++ip) {
                    const int i = ic0 + ip * SSD_MR;
                    const int mr = M - i < SSD_MR ? M - i : SSD_MR;
                    const float *ap = g_packa + (size_t)ip * SSD_MR * kc;
                    float *c = g->C + (size_t)i * g->ldc + j0;
                    /* First K block applies beta (beta == 0: C is not read). */
                    const int read_c = pc > 0 || g->beta != 0.0f;
                    const float be = pc > 0 ? 1.0f : g->beta;
                    if (mr == SSD_MR && nr == SSD_NR) {
                        ssd__ukernel(kc, ap, bbuf, g->alpha, read_c ? c : NULL, g->ldc, be,
                                     c, g->ldc, NULL, 0);
                    } else {
                        ssd__ukernel(kc, ap, bbuf, 1.0f, NULL, 0, 0.0f, tmp, SSD_NR, NULL, 0);
                        for (int r = 0; r < mr; ++r) {
                            for (int j = 0; j < nr; ++j) {
                                float t = tmp[r * SSD_NR + j];
                                if (g->alpha != 1.0f) t = g->alpha * t;
                                float *cp = c + (size_t)r * g->ldc + j;
                                if (read_c) t = be == 1.0f ? t + *cp : t + be * *cp;
                                *cp = t;
                            }
                        }
                    }
                }
            }
        }
    }
}

void ssd_sgemm(int transA, int transB, int M, int N, int K, float alpha,
               const float *A, int lda, const float *B, int ldb, float beta,
               float *C, int ldc)
{
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) {
        for (int i = 0; i < M; ++i) {
            float *c = C + (size_t)i * ldc;
            for (int j = 0; j < N; ++j) c[j] = beta == 0.0f ? 0.0f : beta * c[j];
        }
        return;
    }
    sgemm_args g = {transA, transB, M, N, K, alpha, beta, A, B, lda, ldb, ldc, C};

    /* Tiny products are not worth waking the team. */
    int nt = ssd_get_num_threads();
    if ((double)M * N * K < 32768.0) nt = 1;

#pragma omp critical(ssd_sgemm_packa)
    {
#pragma omp parallel num_threads(nt)
        sgemm_team(&g);
    }
}
