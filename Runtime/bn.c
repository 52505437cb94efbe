/*
 * bn.c — batch normalisation over (N, H, W) per channel, NCHW float32.
 *
 * Reductions (statistics, dgamma, dbeta) run per channel on one thread (parallel over
 * channels), in double, with 8 fixed lanes (lane = pixel index mod 8) combined in a fixed
 * order: bit-identical for any thread count, and accurate for the 32 x 256 x 256 = 2M
 * values per channel of TinySSD's first layers.
 *
 * All four functions are memory-bound (the largest activation is 134 MB at batch 32), so
 * each makes the minimum number of passes (stats: 1 read; apply: 1 read + 1 write;
 * backward: 2 reads of x, y, dy + 1 write; ssd_bn_relu_backward recomputes the ReLU mask
 * from x, so 2 reads of x and dy + 1 write) and, for tensors larger than the last-level
 * cache, writes its output with non-temporal stores (no read-for-ownership of the
 * destination: ~1.5x faster on this machine). The elementwise passes use per-channel
 * float coefficients (y = x * scale + shift with one FMA, like PyTorch's CPU kernel); the
 * vector body and the scalar tails compute exactly the same expression (explicit FMAs).
 */
#include "ssd_runtime.h"

#include <math.h>
#include <omp.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define SSD_BN_AVX2 1
#endif

/* Outputs at least this large are streamed past the cache. */
#define STREAM_BYTES ((size_t)16 << 20)

/* ReLU that keeps NaN (and -0), like _mm256_max_ps(0, v). */
static inline float relu1(float v) { return v < 0.0f ? 0.0f : v; }

static inline double lanes_sum(const double l[8])
{
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

#ifdef SSD_BN_AVX2
static inline __m256d lo_pd(__m256 v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
static inline __m256d hi_pd(__m256 v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }
#endif

/* s[l] += x, q[l] += x*x over one plane, lane l = i mod 8. */
static void stats_plane(const float *p, int n, double s[8], double q[8])
{
    int i = 0;
#ifdef SSD_BN_AVX2
    __m256d s0 = _mm256_loadu_pd(s), s1 = _mm256_loadu_pd(s + 4);
    __m256d q0 = _mm256_loadu_pd(q), q1 = _mm256_loadu_pd(q + 4);
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(p + i);
        const __m256d a = lo_pd(v), b = hi_pd(v);
        s0 = _mm256_add_pd(s0, a);
        s1 = _mm256_add_pd(s1, b);
        q0 = _mm256_fmadd_pd(a, a, q0);
        q1 = _mm256_fmadd_pd(b, b, q1);
    }
    _mm256_storeu_pd(s, s0);
    _mm256_storeu_pd(s + 4, s1);
    _mm256_storeu_pd(q, q0);
    _mm256_storeu_pd(q + 4, q1);
#endif
    for (; i < n; ++i) {
        const double v = p[i];
        s[i & 7] += v;
        q[i & 7] = fma(v, v, q[i & 7]);
    }
}

void ssd_bn_stats(int N, int C, int HW, const float *x, float *mean, float *var)
{
    double sums[2 * C]; /* sum of x, then of x*x, per channel */
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int c = 0; c < C; ++c) {
        double s[8] = {0, 0, 0, 0, 0, 0, 0, 0}, q[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int n = 0; n < N; ++n) stats_plane(x + ((size_t)n * C + c) * HW, HW, s, q);
        sums[c] = lanes_sum(s);
        sums[C + c] = lanes_sum(q);
    }
    ssd_bn_sync_sums(C, sums, 0); /* sync-bn: the global batch's sums (collective.c) */
    const double count = (double)ssd_bn_sync_count((int64_t)N * HW);
    for (int c = 0; c < C; ++c) {
        const double m = count > 0 ? sums[c] / count : 0.0;
        double v = count > 0 ? sums[C + c] / count - m * m : 0.0;
        if (v < 0.0) v = 0.0;
        mean[c] = (float)m;
        var[c] = (float)v;
    }
}

/* y[i] = fma(x[i], scale, shift), optionally ReLU; stream: non-temporal stores. */
static void affine_plane(const float *x, float *y, int n, float scale, float shift, int relu,
                         int stream)
{
    int i = 0;
#ifdef SSD_BN_AVX2
    if (stream)
        for (; i < n && ((uintptr_t)(y + i) & 31) != 0; ++i) {
            const float t = fmaf(x[i], scale, shift);
            y[i] = relu ? relu1(t) : t;
        }
    const __m256 vs = _mm256_set1_ps(scale), vb = _mm256_set1_ps(shift);
    const __m256 z = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
        __m256 t = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), vs, vb);
        if (relu) t = _mm256_max_ps(z, t);
        if (stream) _mm256_stream_ps(y + i, t);
        else _mm256_storeu_ps(y + i, t);
    }
#else
    (void)stream;
#endif
    for (; i < n; ++i) {
        const float t = fmaf(x[i], scale, shift);
        y[i] = relu ? relu1(t) : t;
    }
}

void ssd_bn_apply(int N, int C, int HW, const float *x, const float *mean, const float *var,
                  const float *gamma, const float *beta, float eps, int relu, float *y)
{
    const int stream = (size_t)N * C * HW * sizeof(float) >= STREAM_BYTES;
#pragma omp parallel num_threads(ssd_get_num_threads())
    {
#pragma omp for schedule(static)
        for (int nc = 0; nc < N * C; ++nc) {
            const int c = nc % C;
            const double inv = 1.0 / sqrt((double)var[c] + (double)eps);
            const float scale = (float)((double)gamma[c] * inv);
            const float shift = (float)((double)beta[c] - (double)mean[c] * scale);
            affine_plane(x + (size_t)nc * HW, y + (size_t)nc * HW, HW, scale, shift, relu, stream);
        }
#ifdef SSD_BN_AVX2
        if (stream) _mm_sfence();
#endif
    }
}

void ssd_bn_update_running(int C, const float *mean, const float *var, int64_t count,
                           float momentum, float *running_mean, float *running_var)
{
    count = ssd_bn_sync_count(count); /* sync-bn: the global batch's count */
    const double unbias = count > 1 ? (double)count / (double)(count - 1) : 1.0;
    const double m = momentum;
    for (int c = 0; c < C; ++c) {
        running_mean[c] = (float)((1.0 - m) * running_mean[c] + m * mean[c]);
        running_var[c] = (float)((1.0 - m) * running_var[c] + m * var[c] * unbias);
    }
}

/* The ReLU mask of a backward: from the ReLU's output y (y > 0), or, with y == NULL and
 * relu set, recomputed from the BN input as ssd_bn_apply formed y: fma(x, scale, shift) > 0
 * (the same bits, so the same mask); neither: no mask. NaN masks to 0. */
typedef struct {
    const float *y;
    int relu;
    float scale, shift;
} bn_mask_t;

/* Masked dy at i. */
static inline float masked(const bn_mask_t *m, const float *x, const float *dy, int i)
{
    if (m->y) return !(m->y[i] > 0.0f) ? 0.0f : dy[i];
    if (m->relu) return !(fmaf(x[i], m->scale, m->shift) > 0.0f) ? 0.0f : dy[i];
    return dy[i];
}

#ifdef SSD_BN_AVX2
/* The same for the 8 floats at i. */
static inline __m256 masked8(const bn_mask_t *m, const float *x, const float *dy, int i)
{
    const __m256 d = _mm256_loadu_ps(dy + i), z = _mm256_setzero_ps();
    if (m->y) return _mm256_and_ps(d, _mm256_cmp_ps(_mm256_loadu_ps(m->y + i), z, _CMP_GT_OQ));
    if (m->relu) {
        const __m256 t = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_set1_ps(m->scale),
                                         _mm256_set1_ps(m->shift));
        return _mm256_and_ps(d, _mm256_cmp_ps(t, z, _CMP_GT_OQ));
    }
    return d;
}
#endif

/* sd[l] += dy', sx[l] += dy' * (x - mean) over one plane, in double. */
static void backward_sums_plane(const float *x, const bn_mask_t *mk, const float *dy, int n,
                                double mean, double sd[8], double sx[8])
{
    int i = 0;
#ifdef SSD_BN_AVX2
    __m256d d0 = _mm256_loadu_pd(sd), d1 = _mm256_loadu_pd(sd + 4);
    __m256d x0 = _mm256_loadu_pd(sx), x1 = _mm256_loadu_pd(sx + 4);
    const __m256d vm = _mm256_set1_pd(mean);
    for (; i + 8 <= n; i += 8) {
        const __m256 d = masked8(mk, x, dy, i);
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256d da = lo_pd(d), db = hi_pd(d);
        d0 = _mm256_add_pd(d0, da);
        d1 = _mm256_add_pd(d1, db);
        x0 = _mm256_fmadd_pd(da, _mm256_sub_pd(lo_pd(v), vm), x0);
        x1 = _mm256_fmadd_pd(db, _mm256_sub_pd(hi_pd(v), vm), x1);
    }
    _mm256_storeu_pd(sd, d0);
    _mm256_storeu_pd(sd + 4, d1);
    _mm256_storeu_pd(sx, x0);
    _mm256_storeu_pd(sx + 4, x1);
#endif
    for (; i < n; ++i) {
        const double d = masked(mk, x, dy, i);
        sd[i & 7] += d;
        sx[i & 7] = fma(d, (double)x[i] - mean, sx[i & 7]);
    }
}

/* dx = a*dy' - b - s*(x - mean) over one plane. */
static void backward_dx_plane(const float *x, const bn_mask_t *mk, const float *dy, float *dx,
                              int n, float mean, float a, float b, float s, int stream)
{
    int i = 0;
#ifdef SSD_BN_AVX2
    if (stream)
        for (; i < n && ((uintptr_t)(dx + i) & 31) != 0; ++i)
            dx[i] = fmaf(-s, x[i] - mean, fmaf(a, masked(mk, x, dy, i), -b));
    const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b), vs = _mm256_set1_ps(s);
    const __m256 vm = _mm256_set1_ps(mean);
    for (; i + 8 <= n; i += 8) {
        const __m256 d = masked8(mk, x, dy, i);
        __m256 t = _mm256_fmsub_ps(va, d, vb);
        t = _mm256_fnmadd_ps(vs, _mm256_sub_ps(_mm256_loadu_ps(x + i), vm), t);
        if (stream) _mm256_stream_ps(dx + i, t);
        else _mm256_storeu_ps(dx + i, t);
    }
#else
    (void)stream;
#endif
    for (; i < n; ++i) dx[i] = fmaf(-s, x[i] - mean, fmaf(a, masked(mk, x, dy, i), -b));
}

/* The mask of channel c: from y, or (beta given) recomputed with ssd_bn_apply's coefficients. */
static bn_mask_t mask_of(int c, const float *y, const float *mean, const float *var,
                         const float *gamma, const float *beta, float eps)
{
    bn_mask_t m = {y, 0, 0.0f, 0.0f};
    if (!y && beta) {
        const double inv = 1.0 / sqrt((double)var[c] + (double)eps);
        m.relu = 1;
        m.scale = (float)((double)gamma[c] * inv);
        m.shift = (float)((double)beta[c] - (double)mean[c] * m.scale);
    }
    return m;
}

static void bn_backward(int N, int C, int HW, const float *x, const float *mean, const float *var,
                        const float *gamma, const float *beta, float eps, const float *y,
                        const float *dy, float *dx, float *dgamma, float *dbeta);

void ssd_bn_backward(int N, int C, int HW, const float *x, const float *mean, const float *var,
                     const float *gamma, float eps, const float *y, const float *dy,
                     float *dx, float *dgamma, float *dbeta)
{
    bn_backward(N, C, HW, x, mean, var, gamma, NULL, eps, y, dy, dx, dgamma, dbeta);
}

void ssd_bn_relu_backward(int N, int C, int HW, const float *x, const float *mean,
                          const float *var, const float *gamma, const float *beta, float eps,
                          const float *dy, float *dx, float *dgamma, float *dbeta)
{
    bn_backward(N, C, HW, x, mean, var, gamma, beta, eps, NULL, dy, dx, dgamma, dbeta);
}

static void bn_backward(int N, int C, int HW, const float *x, const float *mean, const float *var,
                        const float *gamma, const float *beta, float eps, const float *y,
                        const float *dy, float *dx, float *dgamma, float *dbeta)
{
    const int stream = (size_t)N * C * HW * sizeof(float) >= STREAM_BYTES;
    double sums[2 * C]; /* sum of dy', then of dy' * (x - mean), per channel */
#pragma omp parallel for schedule(static) num_threads(ssd_get_num_threads())
    for (int c = 0; c < C; ++c) {
        double sd[8] = {0, 0, 0, 0, 0, 0, 0, 0}, sx[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int n = 0; n < N; ++n) {
            const size_t off = ((size_t)n * C + c) * HW;
            const bn_mask_t mk = mask_of(c, y ? y + off : NULL, mean, var, gamma, beta, eps);
            backward_sums_plane(x + off, &mk, dy + off, HW, mean[c], sd, sx);
        }
        sums[c] = lanes_sum(sd);
        sums[C + c] = lanes_sum(sx);
        dbeta[c] = (float)sums[c];
        dgamma[c] = (float)(sums[C + c] * (1.0 / sqrt((double)var[c] + (double)eps)));
    }
    ssd_bn_sync_sums(C, sums, 1); /* sync-bn: the global batch's sums (collective.c) */
    const double count = (double)ssd_bn_sync_count((int64_t)N * HW);
#pragma omp parallel num_threads(ssd_get_num_threads())
    {
#pragma omp for schedule(static)
        for (int c = 0; c < C; ++c) {
            const double inv = 1.0 / sqrt((double)var[c] + (double)eps);
            const double db = sums[c], dg = sums[C + c] * inv;
            /* dx = gamma*inv * (dy' - db/M - xhat*dg/M),  xhat = (x - mean)*inv
             *    = a*dy' - b - s*(x - mean) */
            const double ad = (double)gamma[c] * inv;
            const float a = (float)ad;
            const float b = count > 0 ? (float)(ad * db / count) : 0.0f;
            const float s = count > 0 ? (float)(ad * dg * inv / count) : 0.0f;
            for (int n = 0; n < N; ++n) {
                const size_t off = ((size_t)n * C + c) * HW;
                const bn_mask_t mk = mask_of(c, y ? y + off : NULL, mean, var, gamma, beta, eps);
                backward_dx_plane(x + off, &mk, dy + off, dx + off, HW, mean[c], a, b, s, stream);
            }
        }
#ifdef SSD_BN_AVX2
        if (stream) _mm_sfence();
#endif
    }
}
