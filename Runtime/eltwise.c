/*
 * eltwise.c — elementwise add (residual connections) and per-channel multiply (L2Norm's
 * scale, squeeze-excite), NCHW float32. Elementwise results are computed alone; the scale
 * gradient is summed per output in double, in a fixed order, on one thread: results do not
 * depend on the thread count.
 */
#include "ops_internal.h"

#include <omp.h>

/* One loop per activation, so that each vectorises. */
void ssd_add_forward(int64_t n, const float *a, const float *b, float *y, int act)
{
#pragma omp parallel num_threads(ssd_get_num_threads()) if (n >= SSD_OPS_PARALLEL_MIN)
    {
        if (act == SSD_ACT_RELU) {
#pragma omp for schedule(static)
            for (int64_t i = 0; i < n; ++i) y[i] = ssd__act(a[i] + b[i], SSD_ACT_RELU);
        } else if (act == SSD_ACT_RELU6) {
#pragma omp for schedule(static)
            for (int64_t i = 0; i < n; ++i) y[i] = ssd__act(a[i] + b[i], SSD_ACT_RELU6);
        } else {
#pragma omp for schedule(static)
            for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
        }
    }
}

void ssd_add_accumulate(int64_t n, const float *x, float *y)
{
#pragma omp parallel for schedule(static) if (n >= SSD_OPS_PARALLEL_MIN) \
    num_threads(ssd_get_num_threads())
    for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

/* The scale of plane nc = n*C + c. */
static inline float scale_of(const float *s, int per_example, int C, int nc)
{
    return per_example ? s[nc] : s[nc % C];
}

void ssd_channel_mul_forward(int N, int C, int HW, const float *x, const float *s,
                             int per_example, float *y)
{
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int nc = 0; nc < N * C; ++nc) {
        const float v = scale_of(s, per_example, C, nc);
        const float *xp = x + (size_t)nc * HW;
        float *yp = y + (size_t)nc * HW;
        for (int p = 0; p < HW; ++p) yp[p] = xp[p] * v;
    }
}

static double plane_dot(const float *a, const float *b, int HW)
{
    double s = 0.0;
    for (int p = 0; p < HW; ++p) s += (double)a[p] * b[p];
    return s;
}

void ssd_channel_mul_backward(int N, int C, int HW, const float *x, const float *s,
                              int per_example, const float *dy, float *dx, float *ds)
{
#pragma omp parallel num_threads(ssd_get_num_threads())
    {
        if (dx) {
#pragma omp for schedule(static)
            for (int nc = 0; nc < N * C; ++nc) {
                const float v = scale_of(s, per_example, C, nc);
                const float *gp = dy + (size_t)nc * HW;
                float *op = dx + (size_t)nc * HW;
                for (int p = 0; p < HW; ++p) op[p] = gp[p] * v;
            }
        }
        if (ds && per_example) {
#pragma omp for schedule(static)
            for (int nc = 0; nc < N * C; ++nc)
                ds[nc] = (float)plane_dot(dy + (size_t)nc * HW, x + (size_t)nc * HW, HW);
        } else if (ds) {
#pragma omp for schedule(static)
            for (int c = 0; c < C; ++c) {
                double acc = 0.0;
                for (int n = 0; n < N; ++n) {
                    const size_t off = ((size_t)n * C + c) * HW;
                    acc += plane_dot(dy + off, x + off, HW);
                }
                ds[c] = (float)acc;
            }
        }
    }
}
