/*
 * winograd_internal.h — the F(2x2, 3x3) convolution of winograd.c, used by conv.c for the
 * 3x3 stride-1 pad-1 layers where it pays (not part of the public runtime).
 */
#ifndef SSD_WINOGRAD_INTERNAL_H
#define SSD_WINOGRAD_INTERNAL_H

#include "ssd_runtime.h"

#include <stddef.h>

/* Whether the forward of g (backward_data == 0) or its backward-data (1) runs here. */
int ssd__winograd_applies(const ssd_conv2d_t *g, int backward_data);

/* Turns the path on or off for the whole process (tests; else SSDC_WINOGRAD=0 in the
 * environment turns it off). */
void ssd__winograd_enable(int on);
int ssd__winograd_enabled(void);

/* Scratch for ssd__winograd_conv with these sizes (for the current thread count). */
size_t ssd__winograd_scratch_floats(int Cs, int M, int H, int W);

/* y = conv3x3(src, w) + bias, then ReLU if relu != 0; src is N x Cs x H x W, the output
 * M x H x W per image, element (n, m, p) at y[n*ldn + m*ldc + p*ldp] (p = row*W + col).
 * pool != 0: then a 2x2 max pool (pool.c's rule), so the output is M x H/2 x W/2 per
 * image (p = row*(W/2) + col). transposed == 0: w is M x Cs x 3 x 3 (forward);
 * transposed == 1: w is Cs x M x 3 x 3 and is used flipped (backward-data of that conv).
 * bias may be NULL. prepared: NULL, or w transformed by ssd__winograd_prepare (then w is
 * not read; forward only). */
void ssd__winograd_conv(int N, int Cs, int H, int W, int M, const float *src, const float *w,
                        const float *prepared, int transposed, const float *bias, int relu,
                        int pool, float *y, size_t ldn, size_t ldc, size_t ldp, float *scratch);

/* The forward's weights transformed once (ssd_conv2d_prepare): the floats g's forward can
 * use (0 where its geometry or channels never take this path, whatever the batch), and
 * the transform of w (M x Cs x 3 x 3) into U. ssd__winograd_conv with prepared = U then
 * skips its own transform (forward only: transposed == 0), with the same results. */
size_t ssd__winograd_prepared_floats(const ssd_conv2d_t *g);
void ssd__winograd_prepare(const ssd_conv2d_t *g, const float *w, float *U);

/* F(4x4, 3x3) (winograd4.c): where ssd__wg4_applies (H a multiple of 4, W of 32, at most
 * 128 channels each side) and SSDC_WINOGRAD is not 2, weights are prepared for it
 * (ssd__wg4_prepare: U of 36 planes, ssd__wg4_prepared_floats) and ssd__winograd_conv runs
 * ssd__wg4_conv when given them; without prepared weights (training, backward-data) it runs
 * F(2x2), whose rounding stays that of the direct conv. ssd__wg4_conv is the forward of
 * ssd__winograd_conv's contract with U in place of w, and scratch of
 * ssd__wg4_scratch_floats. */
int ssd__wg4_applies(int Cs, int M, int H, int W);
size_t ssd__wg4_scratch_floats(int Cs, int M, int H, int W);
size_t ssd__wg4_prepared_floats(int Cs, int M);
void ssd__wg4_prepare(int Cs, int M, const float *w, float *U);
void ssd__wg4_conv(int N, int Cs, int H, int W, int M, const float *src, const float *U,
                   const float *bias, int relu, int pool, float *y, size_t ldn, size_t ldc,
                   size_t ldp, float *scratch);

/* Backward-weight by F(3x3, 2x2): whether it runs here for g, its scratch, and dw
 * (O x C x 3 x 3, overwritten) from x (N x C x H x W) and dy (N x O x H x W). */
int ssd__winograd_bw_applies(const ssd_conv2d_t *g);
size_t ssd__winograd_bw_scratch_floats(int N, int C, int H, int W, int O);
void ssd__winograd_backward_weight(int N, int C, int H, int W, int O, const float *x,
                                   const float *dy, float *dw, float *scratch);

/* The 16-lane transforms of winograd_avx512.c, built with AVX-512F only (winograd.c uses
 * them on maps whose tile rows hold whole groups of 16 tiles, and its 8-lane ones else).
 * ssd__wg_input16: the input transform of the 16 tiles (ty, tx0 .. tx0+15) of channel plane
 * x (H x W, zero outside) into V[xi*vstride + lane], as winograd.c's input_group does for 8.
 * ssd__wg_output16: the output transform of 16 tiles, as winograd.c's output_group does for
 * 8; stream (NCHW, no pool, y 64-byte aligned, W a multiple of 16): non-temporal stores, for
 * outputs larger than the caches (the caller fences). ssd__wg_dy16: the backward-weight's
 * transform A dy A^T of 16 tiles of one gradient plane, as dy_group does for 8. */
#if defined(__AVX512F__)
#define SSD_WG_AVX512 1
void ssd__wg_input16(const float *x, int H, int W, int ty, int tx0, float *V, size_t vstride);
void ssd__wg_output16(const float *m, size_t mstride, float bias, int relu, float *y, int W,
                      size_t ldp, int pool, int stream);
void ssd__wg_dy16(const float *dy, int W, int ty, int tx0, float *D, size_t dstride);
#endif

#endif
