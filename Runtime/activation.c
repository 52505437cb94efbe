/*
 * activation.c — ReLU6, sigmoid, hard-swish and hard-sigmoid, forward and backward, with
 * PyTorch's formulas (the same float operations in the same order as its CPU kernels) and
 * its gradient values at the kinks (see ssd_runtime.h). Elementwise over a flat array:
 * each element is computed alone, so any split over threads gives the same result.
 */
#include "ops_internal.h"

#include <math.h>
#include <omp.h>

void ssd_relu6_forward(int64_t n, const float *x, float *y)
{
#pragma omp parallel for schedule(static) if (n >= SSD_OPS_PARALLEL_MIN) \
    num_threads(ssd_get_num_threads())
    for (int64_t i = 0; i < n; ++i) y[i] = ssd__act(x[i], SSD_ACT_RELU6);
}

/* hardtanh_backward(0, 6): the gradient is 0 at exactly 0 and 6. */
void ssd_relu6_backward(int64_t n, const float *x, const float *dy, float *dx)
{
#pragma omp parallel for schedule(static) if (n >= SSD_OPS_PARALLEL_MIN) \
    num_threads(ssd_get_num_threads())
    for (int64_t i = 0; i < n; ++i) dx[i] = (x[i] <= 0.0f || x[i] >= 6.0f) ? 0.0f : dy[i];
}

void ssd_sigmoid_forward(int64_t n, const float *x, float *y)
{
#pragma omp parallel for schedule(static) if (n >= SSD_OPS_PARALLEL_MIN) \
    num_threads(ssd_get_num_threads())
    for (int64_t i = 0; i < n; ++i) y[i] = 1.0f / (1.0f + expf(-x[i]));
}

void ssd_sigmoid_backward(int64_t n, const float *y, const float *dy, float *dx)
{
#pragma omp parallel for schedule(static) if (n >= SSD_OPS_PARALLEL_MIN) \
    num_threads(ssd_get_num_threads())
    for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * (1.0f - y[i]) * y[i];
}

/* min(max(v + 3, 0), 6), NaN passing through. */
static inline float relu6_shift3(float v) { return ssd__act(v + 3.0f, SSD_ACT_RELU6); }

void ssd_hardswish_forward(int64_t n, const float *x, float *y)
{
#pragma omp parallel for schedule(static) if (n >= SSD_OPS_PARALLEL_MIN) \
    num_threads(ssd_get_num_threads())
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * relu6_shift3(x[i]) / 6.0f;
}

/* 0 below -3, dy * (x/3 + 1/2) on [-3, 3] (both ends included), dy above 3. */
void ssd_hardswish_backward(int64_t n, const float *x, const float *dy, float *dx)
{
#pragma omp parallel for schedule(static) if (n >= SSD_OPS_PARALLEL_MIN) \
    num_threads(ssd_get_num_threads())
    for (int64_t i = 0; i < n; ++i) {
        const float v = x[i];
        dx[i] = v < -3.0f ? 0.0f : (v <= 3.0f ? dy[i] * (v / 3.0f + 0.5f) : dy[i]);
    }
}

void ssd_hardsigmoid_forward(int64_t n, const float *x, float *y)
{
#pragma omp parallel for schedule(static) if (n >= SSD_OPS_PARALLEL_MIN) \
    num_threads(ssd_get_num_threads())
    for (int64_t i = 0; i < n; ++i) y[i] = relu6_shift3(x[i]) / 6.0f;
}

/* dy / 6 strictly inside (-3, 3), else 0. */
void ssd_hardsigmoid_backward(int64_t n, const float *x, const float *dy, float *dx)
{
#pragma omp parallel for schedule(static) if (n >= SSD_OPS_PARALLEL_MIN) \
    num_threads(ssd_get_num_threads())
    for (int64_t i = 0; i < n; ++i)
        dx[i] = (x[i] > -3.0f && x[i] < 3.0f) ? dy[i] * (1.0f / 6.0f) : 0.0f;
}
