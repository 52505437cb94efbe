/*
 * bn.c — batch normalisation over (N, H, W) per channel, NCHW float32.
 *
 * Every reduction is done per channel by one thread (parallel over channels), in double,
 * with 8 independent lane accumulators that the compiler can vectorise without
 * reassociating anything; the lanes are combined in a fixed order. So statistics and
 * gradients are bit-identical for any thread count, and accurate for M = N*H*W up to the
 * 32 x 256 x 256 = 2M values of TinySSD's first layer. The elementwise passes use
 * per-channel float coefficients (y = x * scale + shift, like PyTorch's CPU kernel).
 */
#include "ssd_runtime.h"

#include <math.h>
#include <omp.h>

/* ReLU that keeps NaN (and -0), like _mm256_max_ps(0, v) in the GEMM epilogue. */
static inline float relu1(float v) { return v < 0.0f ? 0.0f : v; }

static inline double lanes_sum(const double l[8])
{
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

void ssd_bn_stats(int N, int C, int HW, const float *x, float *mean, float *var)
{
    const double count = (double)N * HW;
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int c = 0; c < C; ++c) {
        double s[8] = {0, 0, 0, 0, 0, 0, 0, 0}, q[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int n = 0; n < N; ++n) {
            const float *p = x + ((size_t)n * C + c) * HW;
            int i = 0;
            for (; i + 8 <= HW; i += 8) {
                for (int l = 0; l < 8; ++l) {
                    const double v = p[i + l];
                    s[l] += v;
                    q[l] += v * v;
                }
            }
            for (; i < HW; ++i) {
                const double v = p[i];
                s[0] += v;
                q[0] += v * v;
            }
        }
        const double m = count > 0 ? lanes_sum(s) / count : 0.0;
        double v = count > 0 ? lanes_sum(q) / count - m * m : 0.0;
        if (v < 0.0) v = 0.0;
        mean[c] = (float)m;
        var[c] = (float)v;
    }
}

void ssd_bn_apply(int N, int C, int HW, const float *x, const float *mean, const float *var,
                  const float *gamma, const float *beta, float eps, int relu, float *y)
{
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int nc = 0; nc < N * C; ++nc) {
        const int c = nc % C;
        const double inv = 1.0 / sqrt((double)var[c] + (double)eps);
        const float scale = (float)((double)gamma[c] * inv);
        const float shift = (float)((double)beta[c] - (double)mean[c] * scale);
        const float *p = x + (size_t)nc * HW;
        float *o = y + (size_t)nc * HW;
        if (relu) {
            for (int i = 0; i < HW; ++i) o[i] = relu1(p[i] * scale + shift);
        } else {
            for (int i = 0; i < HW; ++i) o[i] = p[i] * scale + shift;
        }
    }
}

void ssd_bn_update_running(int C, const float *mean, const float *var, int64_t count,
                           float momentum, float *running_mean, float *running_var)
{
    const double unbias = count > 1 ? (double)count / (double)(count - 1) : 1.0;
    const double m = momentum;
    for (int c = 0; c < C; ++c) {
        running_mean[c] = (float)((1.0 - m) * running_mean[c] + m * mean[c]);
        running_var[c] = (float)((1.0 - m) * running_var[c] + m * var[c] * unbias);
    }
}

void ssd_bn_backward(int N, int C, int HW, const float *x, const float *mean, const float *var,
                     const float *gamma, float eps, const float *y, const float *dy,
                     float *dx, float *dgamma, float *dbeta)
{
    const double count = (double)N * HW;
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int c = 0; c < C; ++c) {
        const float mc = mean[c];
        const double inv = 1.0 / sqrt((double)var[c] + (double)eps);
        /* Sums of dy' and dy' * (x - mean), dy' = dy masked by y > 0 when y is given. */
        double sd[8] = {0, 0, 0, 0, 0, 0, 0, 0}, sx[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int n = 0; n < N; ++n) {
            const size_t off = ((size_t)n * C + c) * HW;
            const float *px = x + off, *pd = dy + off, *py = y ? y + off : NULL;
            int i = 0;
            for (; i + 8 <= HW; i += 8) {
                for (int l = 0; l < 8; ++l) {
                    const float d = (py && !(py[i + l] > 0.0f)) ? 0.0f : pd[i + l];
                    sd[l] += d;
                    sx[l] += (double)d * ((double)px[i + l] - mc);
                }
            }
            for (; i < HW; ++i) {
                const float d = (py && !(py[i] > 0.0f)) ? 0.0f : pd[i];
                sd[0] += d;
                sx[0] += (double)d * ((double)px[i] - mc);
            }
        }
        const double db = lanes_sum(sd);
        const double dg = lanes_sum(sx) * inv;
        dbeta[c] = (float)db;
        dgamma[c] = (float)dg;

        /* dx = gamma*inv * (dy' - db/M - xhat*dg/M),  xhat = (x - mean)*inv
         *    = a*dy' - b - s*(x - mean) */
        const double ad = (double)gamma[c] * inv;
        const float a = (float)ad;
        const float b = count > 0 ? (float)(ad * db / count) : 0.0f;
        const float s = count > 0 ? (float)(ad * dg * inv / count) : 0.0f;
        for (int n = 0; n < N; ++n) {
            const size_t off = ((size_t)n * C + c) * HW;
            const float *px = x + off, *pd = dy + off, *py = y ? y + off : NULL;
            float *o = dx + off;
            if (py) {
                for (int i = 0; i < HW; ++i) {
                    const float d = py[i] > 0.0f ? pd[i] : 0.0f;
                    o[i] = a * d - b - s * (px[i] - mc);
                }
            } else {
                for (int i = 0; i < HW; ++i) o[i] = a * pd[i] - b - s * (px[i] - mc);
            }
        }
    }
}
