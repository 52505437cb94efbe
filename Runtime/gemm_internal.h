/*
 * gemm_internal.h — pieces of gemm.c shared with conv.c (not part of the public runtime).
 *
 * The micro-kernel computes one MR x NR tile of C from a packed A micro-panel
 * (kc x MR, k-major: a[p*MR + r]) and a packed B micro-panel (kc x NR, k-major:
 * b[p*NR + j]). conv.c packs B straight from the zero-padded input image (its "im2col"
 * is the packing step), so only the kernel and the blocking constants are shared.
 */
#ifndef SSD_GEMM_INTERNAL_H
#define SSD_GEMM_INTERNAL_H

#include <stddef.h>

/* The micro-kernel's ISA is chosen when the runtime is compiled: AVX-512F (gemm_avx512.c),
 * else AVX2 + FMA (gemm.c), else portable C (gemm.c). NR is 3 vectors of that ISA (the
 * portable kernel keeps the AVX2 shape); it is a multiple of 24, hence of the 8-lane
 * groups of the Winograd and statistics passes. */
#if defined(__AVX512F__)
#define SSD_UKERNEL_AVX512 1
#define SSD_UKERNEL_ISA "avx512"
#define SSD_NR 48          /* columns of the register tile (3 zmm vectors of pixels) */
#elif defined(__AVX2__) && defined(__FMA__)
#define SSD_UKERNEL_ISA "avx2"
#define SSD_NR 24          /* columns of the register tile (3 ymm vectors of pixels) */
#else
#define SSD_UKERNEL_ISA "portable"
#define SSD_NR 24
#endif
#define SSD_MR 4           /* rows of the register tile (output channels in a conv) */
#define SSD_KC_MAX 256     /* longest reduction block: kc x NR B panel = 24 KB (L1); 48 KB
                            * with AVX-512 (128 measured no faster there) */

#if defined(__GNUC__) || defined(__clang__)
#define SSD_ALIGN64 __attribute__((aligned(64)))
#else
#define SSD_ALIGN64
#endif

/* Width of the reduction blocks for a reduction of length K: K is cut into
 * ceil(K / SSD_KC_MAX) nearly equal blocks. Depends on K only, so the summation order of
 * every output element is independent of the thread count. */
int ssd__kc_block(int K);

/* One MR x NR tile:
 *   t = alpha * (a * b)                         (alpha == 1 skips the multiply)
 *   if cin:  t += beta * cin                    (beta == 1 is a plain add)
 *   if bias: t += bias[r] for row r
 *   if relu: t = t < 0 ? 0 : t                  (NaN is kept)
 *   cout = t
 * cin and cout have row strides ldi and ldo and may alias. All MR x NR entries are read
 * and written: callers route partial tiles through a local MR x NR buffer. */
void ssd__ukernel(int kc, const float *a, const float *b, float alpha,
                  const float *cin, ptrdiff_t ldi, float beta,
                  float *cout, ptrdiff_t ldo, const float *bias, int relu);

/* Same, with B not packed: row p of the B micro-panel is the NR floats at b + boff[p]
 * (conv.c: rows of the implicit im2col matrix are slices of the padded image). */
void ssd__ukernel_rows(int kc, const float *a, const float *b, const int *boff, float alpha,
                       const float *cin, ptrdiff_t ldi, float beta,
                       float *cout, ptrdiff_t ldo, const float *bias, int relu);

#ifdef SSD_UKERNEL_AVX512
/* AVX-512 only: two MR x NR tiles stacked, c (8 x NR, row stride ldc) = a * b, where rows
 * 0-3 come from the A micro-panel a0 and rows 4-7 from a1 (the Winograd products of
 * winograd.c). Each element is summed in the order ssd__ukernel uses, so the two agree bit
 * for bit. */
void ssd__ukernel8(int kc, const float *a0, const float *a1, const float *b, float *c,
                   ptrdiff_t ldc);

/* AVX-512 only: ssd__bw_tile with 6 x rows, out[r*6 + s] (conv.c's backward-weight). */
void ssd__bw_tile6(const float *const d[4], const float *const x[6], int n, int nseg,
                   size_t dseg, size_t xseg, float out[24]);
#endif

/* The dot-product tile of the backward-weight reductions (conv.c, winograd.c), where the
 * sum runs over pixels rather than over a GEMM's K:
 *   out[r*3 + s] = sum over nseg segments and q < n of d_r[q] * x_s[q]
 * (segment m of d_r / x_s starts dseg / xseg floats after segment m-1; n a multiple of 8).
 * Each ISA keeps its own vector-lane partial sums; the order depends on n and nseg only. */
void ssd__bw_tile(const float *d0, const float *d1, const float *d2, const float *d3,
                  const float *x0, const float *x1, const float *x2, int n, int nseg,
                  size_t dseg, size_t xseg, float out[12]);

#endif
