/*
 * resize.c — nearest upsampling by integer factors (feature-pyramid heads), NCHW float32.
 * Parallel over (image, channel) planes; backward sums each block in row-major order on
 * one thread, so results do not depend on the thread count.
 */
#include "ops_internal.h"

#include <omp.h>

void ssd_upsample_nearest_forward(int N, int C, int H, int W, int sh, int sw, const float *x,
                                  float *y)
{
    const int OW = W * sw;
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int nc = 0; nc < N * C; ++nc) {
        const float *xp = x + (size_t)nc * H * W;
        float *yp = y + (size_t)nc * H * sh * OW;
        for (int h = 0; h < H; ++h) {
            float *row = yp + (size_t)h * sh * OW;
            const float *xr = xp + (size_t)h * W;
            for (int ow = 0; ow < OW; ++ow) row[ow] = xr[ow / sw];
            for (int r = 1; r < sh; ++r)
                for (int ow = 0; ow < OW; ++ow) row[(size_t)r * OW + ow] = row[ow];
        }
    }
}

void ssd_upsample_nearest_backward(int N, int C, int H, int W, int sh, int sw, const float *dy,
                                   float *dx)
{
    const int OW = W * sw;
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int nc = 0; nc < N * C; ++nc) {
        const float *dp = dy + (size_t)nc * H * sh * OW;
        float *gp = dx + (size_t)nc * H * W;
        for (int h = 0; h < H; ++h)
            for (int w = 0; w < W; ++w) {
                const float *blk = dp + (size_t)h * sh * OW + (size_t)w * sw;
                float s = 0.0f;
                for (int r = 0; r < sh; ++r)
                    for (int q = 0; q < sw; ++q) s += blk[(size_t)r * OW + q];
                gp[(size_t)h * W + w] = s;
            }
    }
}
