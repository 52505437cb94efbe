/*
 * detect.c — row softmax and d2l's multibox_detection (SPEC section 6).
 *
 * Choices that are not obvious from the header:
 *  - Box decoding and IoU are float32 and follow the operation order of d2l's PyTorch code
 *    (offset_inverse, box_center_to_corner, box_iou) with FP contraction off, so that IoU
 *    ties and threshold comparisons come out as they do in PyTorch.
 *  - conf/class of an anchor: the first maximum over classes 1..ncls-1 (torch.max returns the
 *    first maximal index); class ids are 0-based among the non-background classes. If
 *    ncls < 2 there is no foreground class: conf = 0, class 0 (then turned to -1 by
 *    pos_threshold as any low-confidence row).
 *  - Ordering: d2l uses torch.argsort(descending=True), which is not stable. We use a stable
 *    merge sort by descending conf, ties broken by the lower anchor index, so the output is
 *    fully determined.
 *  - NMS: walking that order, a candidate is kept iff its IoU with every box kept so far is
 *    <= nms_threshold. This is exactly d2l's while loop (which drops the boxes with
 *    IoU > threshold w.r.t. the current head; a NaN IoU also fails `iou <= threshold` and is
 *    dropped). Cost O(A * kept); anchor areas are precomputed.
 *  - Scratch: ssd_detection_scratch_floats(A) floats PER IMAGE; ssd_multibox_detection reads
 *    N times that (image n uses the n-th slice), so that images can run in parallel.
 *    Part of the scratch holds int32 indices (same size as float).
 */
#include "ssd_runtime.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

_Static_assert(sizeof(int32_t) == sizeof(float), "int32 indices share float scratch");

/* ---- softmax -------------------------------------------------------------------------- */

/* y may equal x (in place). Sum accumulated in double. */
void ssd_softmax_rows(int rows, int cols, const float *x, float *y)
{
    if (rows <= 0 || cols <= 0) return;
#pragma omp parallel for schedule(static) if ((int64_t)rows * cols >= 65536)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        float *yr = y + (size_t)r * cols;
        float m = xr[0];
        for (int j = 1; j < cols; j++)
            if (xr[j] > m) m = xr[j];
        double s = 0.0;
        for (int j = 0; j < cols; j++) {
            float e = expf(xr[j] - m);
            yr[j] = e;
            s += e;
        }
        double inv = 1.0 / s;
        for (int j = 0; j < cols; j++) yr[j] = (float)(yr[j] * inv);
    }
}

/* ---- stable sort by descending key ---------------------------------------------------- */

/* Sorts idx[0..n) so that key[idx[.]] is non-increasing; equal keys keep their input order
 * (bottom-up merge sort, tmp has n slots). */
static void sort_desc_stable(const float *key, int32_t *idx, int32_t *tmp, int n)
{
    int32_t *src = idx, *dst = tmp;
    for (int width = 1; width < n; width *= 2) {
        for (int lo = 0; lo < n; lo += 2 * width) {
            int mid = lo + width < n ? lo + width : n;
            int hi = lo + 2 * width < n ? lo + 2 * width : n;
            int i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                /* take the right element only if strictly larger: stability */
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

/* ---- detection ------------------------------------------------------------------------ */

#define DET_FLOATS_PER_ANCHOR 10 /* conf, 4 box, area, cls, order, tmp/flag, keep */

size_t ssd_detection_scratch_floats(int A)
{
    return A > 0 ? (size_t)DET_FLOATS_PER_ANCHOR * (size_t)A : 0;
}

/* IoU as d2l's box_iou: intersection clamped at 0, union = (area1 + area2) - inter. */
static inline float iou_f(const float *b1, float area1, const float *b2, float area2)
{
    float ulx = b1[0] > b2[0] ? b1[0] : b2[0];
    float uly = b1[1] > b2[1] ? b1[1] : b2[1];
    float lrx = b1[2] < b2[2] ? b1[2] : b2[2];
    float lry = b1[3] < b2[3] ? b1[3] : b2[3];
    float iw = lrx - ulx, ih = lry - uly;
    if (iw < 0.0f) iw = 0.0f;
    if (ih < 0.0f) ih = 0.0f;
    float inter = iw * ih;
    float uni = (area1 + area2) - inter;
    return inter / uni;
}

static void detect_one(int A, int ncls, const float *probs, const float *off,
                       const float *anchors, float nms_threshold, float pos_threshold,
                       float *out, float *s)
{
    float *conf = s;
    float *boxes = s + (size_t)A;
    float *area = s + (size_t)5 * A;
    int32_t *cls = (int32_t *)(s + (size_t)6 * A);
    int32_t *order = (int32_t *)(s + (size_t)7 * A);
    int32_t *tmp = (int32_t *)(s + (size_t)8 * A);  /* merge buffer, then kept flags */
    int32_t *keep = (int32_t *)(s + (size_t)9 * A);

    for (int a = 0; a < A; a++) {
        const float *p = probs + (size_t)a * ncls;
        float best = 0.0f;
        int bc = 0;
        if (ncls >= 2) {
            best = p[1];
            for (int c = 2; c < ncls; c++)
                if (p[c] > best) { best = p[c]; bc = c - 1; }
        }
        conf[a] = best;
        cls[a] = bc;

        /* offset_inverse */
        const float *an = anchors + (size_t)4 * a;
        const float *o = off + (size_t)4 * a;
        float acx = (an[0] + an[2]) / 2.0f, acy = (an[1] + an[3]) / 2.0f;
        float aw = an[2] - an[0], ah = an[3] - an[1];
        float cx = (o[0] * aw) / 10.0f + acx;
        float cy = (o[1] * ah) / 10.0f + acy;
        float w = expf(o[2] / 5.0f) * aw;
        float h = expf(o[3] / 5.0f) * ah;
        float *b = boxes + (size_t)4 * a;
        b[0] = cx - 0.5f * w;
        b[1] = cy - 0.5f * h;
        b[2] = cx + 0.5f * w;
        b[3] = cy + 0.5f * h;
        area[a] = (b[2] - b[0]) * (b[3] - b[1]);
        order[a] = a;
    }

    sort_desc_stable(conf, order, tmp, A);

    int32_t *kept = tmp;
    memset(kept, 0, (size_t)A * sizeof(int32_t));
    int nkeep = 0;
    for (int t = 0; t < A; t++) {
        int j = order[t];
        const float *bj = boxes + (size_t)4 * j;
        float aj = area[j];
        int ok = 1;
        for (int q = 0; q < nkeep; q++) {
            int k = keep[q];
            if (!(iou_f(boxes + (size_t)4 * k, area[k], bj, aj) <= nms_threshold)) {
                ok = 0;
                break;
            }
        }
        if (ok) {
            keep[nkeep++] = j;
            kept[j] = 1;
        }
    }

    /* rows: kept anchors in NMS order, then the others in ascending anchor index */
    int r = 0;
    for (int t = 0; t < A; t++) {
        int j;
        int c;
        if (t < nkeep) {
            j = keep[t];
            c = cls[j];
        } else {
            while (kept[r]) r++;
            j = r++;
            c = -1;
        }
        float cf = conf[j];
        if (cf < pos_threshold) {
            c = -1;
            cf = 1.0f - cf;
        }
        float *row = out + (size_t)6 * t;
        const float *b = boxes + (size_t)4 * j;
        row[0] = (float)c;
        row[1] = cf;
        row[2] = b[0];
        row[3] = b[1];
        row[4] = b[2];
        row[5] = b[3];
    }
}

/* scratch: N * ssd_detection_scratch_floats(A) floats (one slice per image). */
void ssd_multibox_detection(int N, int A, int ncls, const float *probs, const float *bbox_preds,
                            const float *anchors, float nms_threshold, float pos_threshold,
                            float *out, float *scratch)
{
    if (N <= 0 || A <= 0) return;
    size_t per = ssd_detection_scratch_floats(A);
#pragma omp parallel for schedule(dynamic, 1) if (N > 1)
    for (int n = 0; n < N; n++) {
        detect_one(A, ncls, probs + (size_t)n * A * ncls, bbox_preds + (size_t)n * 4 * A,
                   anchors, nms_threshold, pos_threshold, out + (size_t)n * 6 * A,
                   scratch + (size_t)n * per);
    }
}
