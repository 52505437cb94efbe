/*
 * l2norm.c — L2 normalisation over channels with a learned per-channel scale (SSD300's
 * conv4_3 L2Norm, as ssd.pytorch: y = x / (sqrt(sum_c x^2) + eps) * weight[c]), NCHW.
 *
 * The norm is per pixel across channels, so the work is cut into (image, block of PIX
 * pixels) tasks: the sums over channels are kept for the block (channel-outer loops over
 * contiguous pixels, which vectorise) and the planes are streamed once per pass. The
 * weight gradient is a sum over images and pixels per channel: backward stores each
 * pixel's d in scratch and a second loop, parallel over channels, sums dy * x / d in
 * double in image-then-pixel order, so results do not depend on the thread count.
 */
#include "ops_internal.h"

#include <math.h>
#include <omp.h>

#define PIX 256

/* d[p] = sqrt(sum_c x[c, p]^2) + eps for the np pixels of a block at xb (plane stride HW). */
static void block_norm(const float *xb, int C, int HW, int np, float eps, float *d)
{
    float ss[PIX];
    for (int p = 0; p < np; ++p) ss[p] = 0.0f;
    for (int c = 0; c < C; ++c) {
        const float *xc = xb + (size_t)c * HW;
        for (int p = 0; p < np; ++p) ss[p] += xc[p] * xc[p];
    }
    for (int p = 0; p < np; ++p) d[p] = sqrtf(ss[p]) + eps;
}

void ssd_l2norm_forward(int N, int C, int HW, const float *x, const float *weight, float eps,
                        float *y)
{
    const int nb = (HW + PIX - 1) / PIX;
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int task = 0; task < N * nb; ++task) {
        const int n = task / nb, p0 = task % nb * PIX;
        const int np = HW - p0 < PIX ? HW - p0 : PIX;
        const size_t base = (size_t)n * C * HW + p0;
        float d[PIX];
        block_norm(x + base, C, HW, np, eps, d);
        for (int c = 0; c < C; ++c) {
            const float *xc = x + base + (size_t)c * HW;
            float *yc = y + base + (size_t)c * HW;
            const float wc = weight[c];
            for (int p = 0; p < np; ++p) yc[p] = xc[p] / d[p] * wc;
        }
    }
}

size_t ssd_l2norm_scratch_floats(int N, int HW) { return (size_t)N * HW; }

void ssd_l2norm_backward(int N, int C, int HW, const float *x, const float *weight, float eps,
                         const float *dy, float *dx, float *dweight, float *scratch)
{
    const int nb = (HW + PIX - 1) / PIX;
#pragma omp parallel num_threads(ssd_get_num_threads())
    {
#pragma omp for schedule(static)
        for (int task = 0; task < N * nb; ++task) {
            const int n = task / nb, p0 = task % nb * PIX;
            const int np = HW - p0 < PIX ? HW - p0 : PIX;
            const size_t base = (size_t)n * C * HW + p0;
            float *d = scratch + (size_t)n * HW + p0;
            block_norm(x + base, C, HW, np, eps, d);
            if (!dx) continue;
            /* dot[p] = sum_c dy*weight*x; then dx = dy*weight/d - x * dot / (d^2 r) */
            float dot[PIX], coef[PIX];
            for (int p = 0; p < np; ++p) dot[p] = 0.0f;
            for (int c = 0; c < C; ++c) {
                const float *xc = x + base + (size_t)c * HW, *gc = dy + base + (size_t)c * HW;
                const float wc = weight[c];
                for (int p = 0; p < np; ++p) dot[p] += gc[p] * wc * xc[p];
            }
            for (int p = 0; p < np; ++p) {
                const float r = d[p] - eps;
                coef[p] = r > 0.0f ? dot[p] / (d[p] * d[p] * r) : 0.0f;
            }
            for (int c = 0; c < C; ++c) {
                const float *xc = x + base + (size_t)c * HW, *gc = dy + base + (size_t)c * HW;
                float *oc = dx + base + (size_t)c * HW;
                const float wc = weight[c];
                for (int p = 0; p < np; ++p) oc[p] = gc[p] * wc / d[p] - xc[p] * coef[p];
            }
        }
        /* (implicit barrier: every pixel's d is in scratch) */
        if (dweight) {
#pragma omp for schedule(static)
            for (int c = 0; c < C; ++c) {
                double s = 0.0;
                for (int n = 0; n < N; ++n) {
                    const size_t off = ((size_t)n * C + c) * HW;
                    const float *d = scratch + (size_t)n * HW;
                    for (int p = 0; p < HW; ++p) s += (double)dy[off + p] * (x[off + p] / d[p]);
                }
                dweight[c] = (float)s;
            }
        }
    }
}
