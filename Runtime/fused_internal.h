/*
 * fused_internal.h — hooks of conv.c used by fused.c (not part of the public runtime).
 */
#ifndef SSD_FUSED_INTERNAL_H
#define SSD_FUSED_INTERNAL_H

#include "ssd_runtime.h"

/* Number of doubles of per-block output statistics the stride-1 fast path of the conv
 * forward produces for g (N * blocks * O * 2), or 0 if g does not take the fast path
 * (or has an empty output / reduction). */
size_t ssd__conv2d_stats_partials(const ssd_conv2d_t *g);

/* ssd_conv2d_forward(g, x, w, b, y, relu = 0, scratch) on the fast path that also writes
 * the per-block sums of y: part[((n*npb + pb)*O + o)*2 + {0, 1}] = sum and sum of squares
 * (double) of the outputs of channel o of image n whose flat positions fall in panel block
 * pb. Each partial's summation order depends on the geometry only. Returns npb, or 0 (and
 * does nothing) when ssd__conv2d_stats_partials(g) == 0. */
int ssd__conv2d_forward_partials(const ssd_conv2d_t *g, const float *x, const float *w,
                                 const float *b, float *y, float *scratch, double *part);

#endif
