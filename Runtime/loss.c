/*
 * loss.c — SSD training loss, its gradient and the seed's metrics (SPEC sections 4 and 7).
 *
 * per_example[n] = cls_weight * cls_loss_n + bbox_weight * bbox_loss_n
 *   cls_loss_n  = mean over anchors (or over the kept anchors when mining) of CE, or of focal
 *                 -alpha * (1 - p_j)^gamma * log p_j  (p_j = softmax prob of the label class)
 *   bbox_loss_n = mean over 4A of L(d), d = pred*mask - label*mask (float, as PyTorch),
 *                 L = |d| or smooth L1 f(d) = (sigma*d)^2/2 if |d| < 1/sigma^2 else
 *                 |d| - 0.5/sigma^2.
 * Gradients are those of mean_n per_example[n] (so they carry a 1/N).
 *
 * Choices that are not obvious from the header:
 *  - Per-anchor math (log-softmax with max subtraction, focal weights) is done in double;
 *    sums are in double; results are rounded to float at the end.
 *  - L1 subgradient sign(d) with sign(0) = 0 (PyTorch's L1Loss backward), times mask.
 *    Smooth L1 gradient: sigma^2 * d if |d| < 1/sigma^2 else sign(d).
 *  - Focal gradient w.r.t. logit k: c * (p_k - [k == j]),
 *    c = alpha * ((1-p_j)^gamma - gamma * (1-p_j)^(gamma-1) * p_j * log p_j); 1-p_j is
 *    computed as -expm1(log p_j) for accuracy; the second term is 0 when 1-p_j == 0.
 *  - A label outside [0, ncls) (not expected from ssd_multibox_target) makes that anchor
 *    contribute nothing (zero loss and gradient, still counted in the denominator A when
 *    not mining; never a positive or a negative when mining).
 *  - Hard negative mining (ratio > 0), per image: positives = label >= 1, negatives =
 *    label == 0. Negatives are ranked by their background CE loss -log p_0 (stored as float;
 *    ties: lower anchor index first, stable sort), and the first
 *    K = min(#negatives, (int)(ratio * #positives)) (truncation, as MXNet) are kept.
 *    cls_loss_n = mean over positives + kept negatives; other anchors get zero gradient.
 *    With no positives K = 0: nothing is kept, cls_loss_n = 0 and zero class gradient
 *    (MXNet's MultiBoxTarget with minimum_negative_samples = 0).
 *  - Metrics are OVERWRITTEN with this batch's values (the caller sums them over an epoch).
 *    metrics[0]: argmax (first max, like torch.argmax) of the logits, as float, == label.
 *    metrics[2]: sum of |(label - pred) * mask| computed in float per element, summed in
 *    double.
 *  - Parallel over images; each image is computed by one thread and the per-image partial
 *    sums are reduced serially in image order, so results are bit-identical for any thread
 *    count.
 *  - Scratch: ssd_loss_scratch_floats(N, A, ncls) = N * (3A + 4) floats (the 4 hold two
 *    doubles per image, copied with memcpy, so no alignment is required).
 */
#include "ssd_runtime.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

_Static_assert(sizeof(int32_t) == sizeof(float), "int32 indices share float scratch");

ssd_loss_config_t ssd_loss_config_default(void)
{
    ssd_loss_config_t c;
    c.focal = 0;
    c.focal_gamma = 2.0f;
    c.focal_alpha = 0.25f;
    c.smooth_l1 = 0;
    c.sigma = 1.0f;
    c.cls_weight = 1.0f;
    c.bbox_weight = 1.0f;
    c.negative_mining_ratio = 0.0f;
    return c;
}

#define LOSS_FLOATS_PER_ANCHOR 3
#define LOSS_FLOATS_PER_IMAGE 4

static size_t loss_per_image(int A)
{
    return (size_t)LOSS_FLOATS_PER_ANCHOR * (size_t)(A > 0 ? A : 0) + LOSS_FLOATS_PER_IMAGE;
}

size_t ssd_loss_scratch_floats(int N, int A, int ncls)
{
    (void)ncls;
    if (N <= 0) return 0;
    return (size_t)N * loss_per_image(A);
}

/* Stable sort of idx[0..n) by descending key[idx[.]] (merge sort, tmp has n slots). */
static void sort_desc_stable(const float *key, int32_t *idx, int32_t *tmp, int n)
{
    int32_t *src = idx, *dst = tmp;
    for (int width = 1; width < n; width *= 2) {
        for (int lo = 0; lo < n; lo += 2 * width) {
            int mid = lo + width < n ? lo + width : n;
            int hi = lo + 2 * width < n ? lo + 2 * width : n;
            int i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                if (key[src[j]] > key[src[i]]) dst[k++] = src[j++];
                else dst[k++] = src[i++];
            }
            while (i < mid) dst[k++] = src[i++];
            while (j < hi) dst[k++] = src[j++];
        }
        int32_t *t = src; src = dst; dst = t;
    }
    if (src != idx) memcpy(idx, src, (size_t)n * sizeof(int32_t));
}

/* label as class index, or -1 if outside [0, ncls) */
static inline int label_index(float l, int ncls)
{
    if (!(l >= 0.0f) || !(l < (float)ncls)) return -1;
    return (int)l;
}

/* log-sum-exp of x[0..ncls) in double */
static inline double lse_row(const float *x, int ncls)
{
    double m = x[0];
    for (int k = 1; k < ncls; k++)
        if (x[k] > m) m = x[k];
    double s = 0.0;
    for (int k = 0; k < ncls; k++) s += exp((double)x[k] - m);
    return m + log(s);
}

/* Class loss of one anchor with label j; if g != NULL writes scale * d loss / d x. */
static inline double anchor_cls(const ssd_loss_config_t *cfg, const float *x, int ncls, int j,
                                double scale, float *g)
{
    double lse = lse_row(x, ncls);
    double logp = (double)x[j] - lse;
    double loss, c;
    if (!cfg->focal) {
        loss = -logp;
        c = 1.0;
    } else {
        double gam = cfg->focal_gamma, alpha = cfg->focal_alpha;
        double p = exp(logp);
        double q = -expm1(logp); /* 1 - p */
        double qg = pow(q, gam);
        loss = -alpha * qg * logp;
        double t2 = q > 0.0 ? gam * pow(q, gam - 1.0) * p * logp : 0.0;
        c = alpha * (qg - t2);
    }
    if (g) {
        double cs = c * scale;
        for (int k = 0; k < ncls; k++) {
            double pk = exp((double)x[k] - lse);
            g[k] = (float)(cs * (pk - (k == j ? 1.0 : 0.0)));
        }
    }
    return loss;
}

static void loss_one(const ssd_loss_config_t *cfg, int N, int A, int ncls, const float *cls,
                     const float *bbox, const float *labels, const float *blab,
                     const float *bmask, float *per_example, float *dcls, float *dbbox,
                     float *s)
{
    const double invN = 1.0 / (double)N;
    float *key = s;
    int32_t *idx = (int32_t *)(s + (size_t)A);
    int32_t *tmp = (int32_t *)(s + (size_t)2 * A);
    float *partial = s + (size_t)3 * A;

    /* ---- metrics: argmax accuracy and masked abs error ---- */
    double correct = 0.0;
    for (int a = 0; a < A; a++) {
        const float *x = cls + (size_t)a * ncls;
        int am = 0;
        float bm = x[0];
        for (int k = 1; k < ncls; k++)
            if (x[k] > bm) { bm = x[k]; am = k; }
        if ((float)am == labels[a]) correct += 1.0;
    }
    double abssum = 0.0;
    for (int i = 0; i < 4 * A; i++) abssum += fabsf((blab[i] - bbox[i]) * bmask[i]);

    /* ---- class loss ---- */
    double cls_sum = 0.0;
    if (cfg->negative_mining_ratio > 0.0f) {
        int npos = 0, nneg = 0;
        for (int a = 0; a < A; a++) {
            int j = label_index(labels[a], ncls);
            if (j == 0) {
                const float *x = cls + (size_t)a * ncls;
                key[a] = (float)(lse_row(x, ncls) - (double)x[0]);
                idx[nneg++] = a;
            } else if (j > 0) {
                npos++;
            }
        }
        double kd = (double)cfg->negative_mining_ratio * (double)npos;
        int K = kd >= (double)nneg ? nneg : (int)kd;
        sort_desc_stable(key, idx, tmp, nneg);
        /* reuse key as "kept negative" flag */
        for (int t = 0; t < nneg; t++) key[idx[t]] = t < K ? 1.0f : 0.0f;
        int nkept = npos + K;
        double scale = nkept > 0 ? (double)cfg->cls_weight * invN / (double)nkept : 0.0;
        for (int a = 0; a < A; a++) {
            const float *x = cls + (size_t)a * ncls;
            float *g = dcls ? dcls + (size_t)a * ncls : NULL;
            int j = label_index(labels[a], ncls);
            int keep = j > 0 || (j == 0 && key[a] != 0.0f);
            if (keep) {
                cls_sum += anchor_cls(cfg, x, ncls, j, scale, g);
            } else if (g) {
                for (int k = 0; k < ncls; k++) g[k] = 0.0f;
            }
        }
        if (nkept > 0) cls_sum /= (double)nkept;
    } else {
        double scale = (double)cfg->cls_weight * invN / (double)A;
        for (int a = 0; a < A; a++) {
            const float *x = cls + (size_t)a * ncls;
            float *g = dcls ? dcls + (size_t)a * ncls : NULL;
            int j = label_index(labels[a], ncls);
            if (j >= 0) {
                cls_sum += anchor_cls(cfg, x, ncls, j, scale, g);
            } else if (g) {
                for (int k = 0; k < ncls; k++) g[k] = 0.0f;
            }
        }
        cls_sum /= (double)A;
    }

    /* ---- offset loss ---- */
    double bsum = 0.0;
    const double bscale = (double)cfg->bbox_weight * invN / (4.0 * (double)A);
    const double sig2 = (double)cfg->sigma * (double)cfg->sigma;
    const double lim = 1.0 / sig2;
    for (int i = 0; i < 4 * A; i++) {
        float m = bmask[i];
        float d = bbox[i] * m - blab[i] * m;
        double dd = d, ad = fabs(dd);
        double sgn = dd > 0.0 ? 1.0 : (dd < 0.0 ? -1.0 : 0.0);
        double f, fp;
        if (cfg->smooth_l1 && ad < lim) {
            f = 0.5 * sig2 * dd * dd;
            fp = sig2 * dd;
        } else if (cfg->smooth_l1) {
            f = ad - 0.5 / sig2;
            fp = sgn;
        } else {
            f = ad;
            fp = sgn;
        }
        bsum += f;
        if (dbbox) dbbox[i] = (float)(fp * (double)m * bscale);
    }
    bsum /= 4.0 * (double)A;

    *per_example = (float)((double)cfg->cls_weight * cls_sum + (double)cfg->bbox_weight * bsum);
    memcpy(partial, &correct, sizeof(double));
    memcpy(partial + 2, &abssum, sizeof(double));
}

void ssd_multibox_loss(const ssd_loss_config_t *cfg, int N, int A, int ncls,
                       const float *cls_preds, const float *bbox_preds,
                       const float *cls_labels, const float *bbox_labels,
                       const float *bbox_masks, float *per_example,
                       float *dcls_preds, float *dbbox_preds, double *metrics,
                       float *scratch)
{
    ssd_loss_config_t def = ssd_loss_config_default();
    if (!cfg) cfg = &def;
    if (metrics) metrics[0] = metrics[1] = metrics[2] = metrics[3] = 0.0;
    if (N <= 0 || A <= 0 || ncls <= 0) return;
    size_t per = loss_per_image(A);
#pragma omp parallel for schedule(static) if (N > 1)
    for (int n = 0; n < N; n++) {
        loss_one(cfg, N, A, ncls, cls_preds + (size_t)n * A * ncls, bbox_preds + (size_t)n * 4 * A,
                 cls_labels + (size_t)n * A, bbox_labels + (size_t)n * 4 * A,
                 bbox_masks + (size_t)n * 4 * A, per_example + n,
                 dcls_preds ? dcls_preds + (size_t)n * A * ncls : NULL,
                 dbbox_preds ? dbbox_preds + (size_t)n * 4 * A : NULL,
                 scratch + (size_t)n * per);
    }
    if (metrics) {
        double correct = 0.0, abssum = 0.0;
        for (int n = 0; n < N; n++) {
            const float *partial = scratch + (size_t)n * per + (size_t)3 * A;
            double c, s;
            memcpy(&c, partial, sizeof(double));
            memcpy(&s, partial + 2, sizeof(double));
            correct += c;
            abssum += s;
        }
        metrics[0] = correct;
        metrics[1] = (double)N * (double)A;
        metrics[2] = abssum;
        metrics[3] = (double)N * 4.0 * (double)A;
    }
}
