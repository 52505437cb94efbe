/*
 * ops_internal.h — helpers shared by the SSD-family op kernels (conv_general.c, conv_direct.c,
 * dwconv.c, pool_general.c, eltwise.c). Not part of the runtime's API.
 */
#ifndef SSD_OPS_INTERNAL_H
#define SSD_OPS_INTERNAL_H

#include "ssd_runtime.h"

/* Elementwise loops shorter than this run on one thread (a parallel region costs more). */
#define SSD_OPS_PARALLEL_MIN ((int64_t)1 << 15)

/* The epilogue activation SSD_ACT_*. Comparisons written so NaN passes through, as
 * PyTorch's relu / hardtanh do. */
static inline float ssd__act(float v, int act)
{
    if (act == SSD_ACT_RELU) return v < 0.0f ? 0.0f : v;
    if (act == SSD_ACT_RELU6) return v < 0.0f ? 0.0f : (v > 6.0f ? 6.0f : v);
    return v;
}

/* floor(a / b) for b > 0 and any sign of a. */
static inline int ssd__floordiv(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

/* The outputs o in [*lo, *hi) of n_out whose input index o*stride + off lies in [0, n_in)
 * (an empty range has *lo >= *hi). Lets the inner loops run without bounds checks. */
static inline void ssd__valid_range(int n_out, int stride, int off, int n_in, int *lo, int *hi)
{
    int l = off >= 0 ? 0 : (-off + stride - 1) / stride;
    int h = ssd__floordiv(n_in - 1 - off, stride) + 1;
    if (h > n_out) h = n_out;
    if (h < 0) h = 0;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* conv_direct.c: the direct forward and weight gradient of convs with few input channels,
 * used by conv_general.c where ssd__convd_applies(g) (scratch: ssd__convd_scratch_floats). */
int ssd__convd_applies(const ssd_convg_t *g);
size_t ssd__convd_scratch_floats(const ssd_convg_t *g);
void ssd__convd_forward(const ssd_convg_t *g, const float *x, const float *w, const float *b,
                        float *y, int act, float *scratch);
void ssd__convd_backward_weight(const ssd_convg_t *g, const float *x, const float *dy,
                                float *dw, float *scratch);

#endif
