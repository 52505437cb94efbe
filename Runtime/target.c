/*
 * target.c — d2l's multibox_target / assign_anchor_to_bbox (SPEC section 3).
 *
 * Choices that are not obvious from the header:
 *  - Padding: a label row whose class is not >= 0 (negative or NaN) takes part in nothing:
 *    it is not a column of the IoU matrix J and does not count in the G rounds of step 3.
 *    The remaining rows keep their relative order, so tie rules refer to the original row
 *    order. An image with no valid row gets all-background labels.
 *  - Step 2 (threshold): per anchor, the first maximum over boxes (lowest box index), as
 *    torch.max(dim=1); assigned if that IoU >= iou_threshold.
 *  - Step 3: G' rounds (G' = valid rows); each takes the largest entry of J, first in
 *    row-major (anchor-major) order as torch.argmax, then sets its row and column to -1.
 *    Done by a plain scan: O(G'^2 * A), trivial for the small G of detection labels.
 *  - IoU and offsets are float32 in d2l's operation order with FP contraction off, so ties
 *    and the >= 0.5 test come out as in PyTorch. Class label = trunc(class) + 1 as d2l's
 *    .long() + 1. Unassigned anchors get offsets 0 and masks 0.
 *  - Scratch: ssd_target_scratch_floats(A, G) floats PER IMAGE; ssd_multibox_target reads
 *    N times that (image n uses the n-th slice) and runs images in parallel.
 */
#include "ssd_runtime.h"

#include <math.h>
#include <stdint.h>

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

_Static_assert(sizeof(int32_t) == sizeof(float), "int32 indices share float scratch");

size_t ssd_target_scratch_floats(int A, int G)
{
    if (A <= 0) return 0;
    if (G < 0) G = 0;
    /* J (A x G) + anchor map (A) + valid row list (G) */
    return (size_t)A * (size_t)G + (size_t)A + (size_t)G;
}

static void target_one(int A, int G, const float *anchors, const float *lab,
                       float iou_threshold, float *bbox_labels, float *bbox_masks,
                       float *cls_labels, float *s)
{
    int32_t *valid = (int32_t *)s;
    int32_t *map = (int32_t *)(s + (size_t)G);
    float *J = s + (size_t)G + (size_t)A;

    int Gv = 0;
    for (int g = 0; g < G; g++)
        if (lab[(size_t)5 * g] >= 0.0f) valid[Gv++] = g;

    for (int a = 0; a < A; a++) map[a] = -1;

    if (Gv > 0) {
        /* 1. IoU matrix, box_iou(anchors, ground_truth) */
        for (int a = 0; a < A; a++) {
            const float *an = anchors + (size_t)4 * a;
            float area_a = (an[2] - an[0]) * (an[3] - an[1]);
            float *Ja = J + (size_t)a * Gv;
            for (int b = 0; b < Gv; b++) {
                const float *gb = lab + (size_t)5 * valid[b] + 1;
                float area_g = (gb[2] - gb[0]) * (gb[3] - gb[1]);
                float ulx = an[0] > gb[0] ? an[0] : gb[0];
                float uly = an[1] > gb[1] ? an[1] : gb[1];
                float lrx = an[2] < gb[2] ? an[2] : gb[2];
                float lry = an[3] < gb[3] ? an[3] : gb[3];
                float iw = lrx - ulx, ih = lry - uly;
                if (iw < 0.0f) iw = 0.0f;
                if (ih < 0.0f) ih = 0.0f;
                float inter = iw * ih;
                float uni = (area_a + area_g) - inter;
                Ja[b] = inter / uni;
            }
        }

        /* 2. best box per anchor (first max), kept if >= threshold */
        for (int a = 0; a < A; a++) {
            const float *Ja = J + (size_t)a * Gv;
            float best = Ja[0];
            int bi = 0;
            for (int b = 1; b < Gv; b++)
                if (Ja[b] > best) { best = Ja[b]; bi = b; }
            if (best >= iou_threshold) map[a] = bi;
        }

        /* 3. G' rounds of global argmax (first in row-major order) */
        size_t total = (size_t)A * Gv;
        for (int it = 0; it < Gv; it++) {
            size_t bestpos = 0;
            float best = J[0];
            for (size_t p = 1; p < total; p++)
                if (J[p] > best) { best = J[p]; bestpos = p; }
            int a = (int)(bestpos / (size_t)Gv);
            int b = (int)(bestpos % (size_t)Gv);
            map[a] = b;
            for (int aa = 0; aa < A; aa++) J[(size_t)aa * Gv + b] = -1.0f;
            for (int bb = 0; bb < Gv; bb++) J[(size_t)a * Gv + bb] = -1.0f;
        }
    }

    /* 4. labels, masks, offsets */
    for (int a = 0; a < A; a++) {
        float *bl = bbox_labels + (size_t)4 * a;
        float *bm = bbox_masks + (size_t)4 * a;
        int m = map[a];
        if (m < 0) {
            cls_labels[a] = 0.0f;
            for (int k = 0; k < 4; k++) { bl[k] = 0.0f; bm[k] = 0.0f; }
            continue;
        }
        const float *row = lab + (size_t)5 * valid[m];
        const float *gb = row + 1;
        const float *an = anchors + (size_t)4 * a;
        cls_labels[a] = (float)((int64_t)row[0] + 1);
        float acx = (an[0] + an[2]) / 2.0f, acy = (an[1] + an[3]) / 2.0f;
        float aw = an[2] - an[0], ah = an[3] - an[1];
        float bcx = (gb[0] + gb[2]) / 2.0f, bcy = (gb[1] + gb[3]) / 2.0f;
        float bw = gb[2] - gb[0], bh = gb[3] - gb[1];
        const float eps = 1e-6f;
        bl[0] = (10.0f * (bcx - acx)) / aw;
        bl[1] = (10.0f * (bcy - acy)) / ah;
        bl[2] = 5.0f * logf(eps + bw / aw);
        bl[3] = 5.0f * logf(eps + bh / ah);
        for (int k = 0; k < 4; k++) bm[k] = 1.0f;
    }
}

/* scratch: N * ssd_target_scratch_floats(A, G) floats (one slice per image). */
void ssd_multibox_target(int N, int A, int G, const float *anchors, const float *labels,
                         float iou_threshold, float *bbox_labels, float *bbox_masks,
                         float *cls_labels, float *scratch)
{
    if (N <= 0 || A <= 0) return;
    if (G < 0) G = 0;
    size_t per = ssd_target_scratch_floats(A, G);
#pragma omp parallel for schedule(static) if (N > 1)
    for (int n = 0; n < N; n++) {
        target_one(A, G, anchors, labels + (size_t)n * G * 5, iou_threshold,
                   bbox_labels + (size_t)n * 4 * A, bbox_masks + (size_t)n * 4 * A,
                   cls_labels + (size_t)n * A, scratch + (size_t)n * per);
    }
}
