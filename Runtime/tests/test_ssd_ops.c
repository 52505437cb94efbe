/*
 * test_ssd_ops.c — tests of the SSD ops of the runtime (detect.c, target.c, loss.c).
 *
 * Each op is compared with a slow reference written here in double precision that follows
 * d2l's PyTorch code literally (box_iou on whole matrices, assign_anchor_to_bbox with its
 * torch.max / argmax loop, nms with argsort + while loop, multibox_detection with its
 * "unique" trick), on crafted cases and on random cases. Random boxes are on a 1/16 grid so
 * that IoU ties and threshold hits are exact in float and double alike. Gradients of the
 * loss are checked against central finite differences of the double reference loss.
 * A few numbers of the d2l book's own examples, produced by d2l 1.0.3 + PyTorch, are
 * hard-coded. Detection is also compared bit for bit with a literal float32 version of
 * itself (naive_detection: no grid, no radix sort, no AVX2) on large random, tied and
 * hostile (NaN/inf/-0) cases; build without AVX2 (-march=x86-64) to check the scalar path.
 *
 * Build: clang -std=c11 -O2 -march=native -fopenmp -Wall -Wextra -I Runtime Runtime/detect.c
 *        Runtime/target.c Runtime/loss.c Runtime/threads.c Runtime/tests/test_ssd_ops.c -lm
 *        -o /tmp/test_ssd_ops
 * Output: one line per check, then "N passed, M failed"; exit status 1 if M > 0.
 */
#include "ssd_runtime.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "test_support.h"

/* ---- harness (report, g_rng: test_support.h) ----------------------------------------- */

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}
#define NEWF(n) ((float *)xmalloc(sizeof(float) * (size_t)(n)))
#define NEWD(n) ((double *)xmalloc(sizeof(double) * (size_t)(n)))
#define NEWI(n) ((int *)xmalloc(sizeof(int) * (size_t)(n)))

static double urand(void) /* [0, 1) */
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) * (1.0 / 9007199254740992.0);
}
static int irand(int n) { return (int)(urand() * n); }
static double nrand(void) { return 2.0 * urand() - 1.0; }

static double now_sec(void)
{
#ifdef _OPENMP
    return omp_get_wtime();
#else
    return (double)clock() / CLOCKS_PER_SEC;
#endif
}

static void set_threads(int n)
{
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

/* max |a - b| / (1 + |b|) */
static double max_rel_err(const float *a, const double *b, int n)
{
    double m = 0.0;
    for (int i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]) / (1.0 + fabs(b[i]));
        if (!(e <= m)) m = e;
    }
    return m;
}

/* random box on the 1/16 grid with positive width and height */
static void grid_box(float *b)
{
    int x1 = irand(15), y1 = irand(15);
    int x2 = x1 + 1 + irand(16 - x1 - 1 + 1);
    int y2 = y1 + 1 + irand(16 - y1 - 1 + 1);
    if (x2 > 16) x2 = 16;
    if (y2 > 16) y2 = 16;
    b[0] = x1 / 16.0f;
    b[1] = y1 / 16.0f;
    b[2] = x2 / 16.0f;
    b[3] = y2 / 16.0f;
}

/* ---- references (double, following d2l's code) ----------------------------------------- */

/* d2l.box_iou: out is n1 x n2 */
static void ref_box_iou(const double *b1, int n1, const double *b2, int n2, double *out)
{
    for (int i = 0; i < n1; i++) {
        const double *p = b1 + 4 * i;
        double a1 = (p[2] - p[0]) * (p[3] - p[1]);
        for (int j = 0; j < n2; j++) {
            const double *q = b2 + 4 * j;
            double a2 = (q[2] - q[0]) * (q[3] - q[1]);
            double ulx = fmax(p[0], q[0]), uly = fmax(p[1], q[1]);
            double lrx = fmin(p[2], q[2]), lry = fmin(p[3], q[3]);
            double iw = fmax(lrx - ulx, 0.0), ih = fmax(lry - uly, 0.0);
            double inter = iw * ih;
            out[(size_t)i * n2 + j] = inter / (a1 + a2 - inter);
        }
    }
}

/* d2l.assign_anchor_to_bbox */
static void ref_assign(const double *gt, int ng, const double *anchors, int na, double thr,
                       int *map)
{
    double *jac = NEWD((size_t)na * (ng ? ng : 1));
    ref_box_iou(anchors, na, gt, ng, jac);
    for (int a = 0; a < na; a++) map[a] = -1;
    if (ng > 0) {
        /* max_ious, indices = torch.max(jaccard, dim=1) */
        for (int a = 0; a < na; a++) {
            int idx = 0;
            for (int b = 1; b < ng; b++)
                if (jac[(size_t)a * ng + b] > jac[(size_t)a * ng + idx]) idx = b;
            if (jac[(size_t)a * ng + idx] >= thr) map[a] = idx;
        }
    }
    for (int it = 0; it < ng; it++) {
        size_t max_idx = 0; /* torch.argmax(jaccard) */
        for (size_t p = 1; p < (size_t)na * ng; p++)
            if (jac[p] > jac[max_idx]) max_idx = p;
        int box_idx = (int)(max_idx % (size_t)ng);
        int anc_idx = (int)(max_idx / (size_t)ng);
        map[anc_idx] = box_idx;
        for (int a = 0; a < na; a++) jac[(size_t)a * ng + box_idx] = -1.0;
        for (int b = 0; b < ng; b++) jac[(size_t)anc_idx * ng + b] = -1.0;
    }
    free(jac);
}

/* d2l.multibox_target, with padding rows (class < 0) removed first */
static void ref_target(int N, int A, int G, const float *anchors, const float *labels,
                       double thr, double *bl, double *bm, double *cl)
{
    double *anc = NEWD(4 * A);
    for (int i = 0; i < 4 * A; i++) anc[i] = anchors[i];
    double *gt = NEWD(4 * (G ? G : 1));
    double *gcls = NEWD(G ? G : 1);
    int *map = NEWI(A);
    for (int n = 0; n < N; n++) {
        const float *lab = labels + (size_t)n * G * 5;
        int ng = 0;
        for (int g = 0; g < G; g++) {
            if (!(lab[5 * g] >= 0)) continue;
            gcls[ng] = lab[5 * g];
            for (int k = 0; k < 4; k++) gt[4 * ng + k] = lab[5 * g + 1 + k];
            ng++;
        }
        ref_assign(gt, ng, anc, A, thr, map);
        for (int a = 0; a < A; a++) {
            double *o = bl + ((size_t)n * A + a) * 4;
            double *m = bm + ((size_t)n * A + a) * 4;
            int b = map[a];
            double mask = b >= 0 ? 1.0 : 0.0;
            cl[(size_t)n * A + a] = b >= 0 ? (double)((long)gcls[b] + 1) : 0.0;
            double bb[4] = {0, 0, 0, 0}; /* assigned_bb initialised with zeros */
            if (b >= 0)
                for (int k = 0; k < 4; k++) bb[k] = gt[4 * b + k];
            const double *an = anc + 4 * a;
            double acx = (an[0] + an[2]) / 2, acy = (an[1] + an[3]) / 2;
            double aw = an[2] - an[0], ah = an[3] - an[1];
            double bcx = (bb[0] + bb[2]) / 2, bcy = (bb[1] + bb[3]) / 2;
            double bw = bb[2] - bb[0], bh = bb[3] - bb[1];
            o[0] = 10 * (bcx - acx) / aw * mask;
            o[1] = 10 * (bcy - acy) / ah * mask;
            o[2] = 5 * log(1e-6 + bw / aw) * mask;
            o[3] = 5 * log(1e-6 + bh / ah) * mask;
            for (int k = 0; k < 4; k++) m[k] = mask;
        }
    }
    free(anc);
    free(gt);
    free(gcls);
    free(map);
}

/* d2l.nms: B = argsort(scores, descending) (a stable one here), then the while loop */
static int ref_nms(const double *boxes, const double *scores, int n, double thr, int *keep)
{
    int *B = NEWI(n), *B2 = NEWI(n);
    for (int i = 0; i < n; i++) { /* stable insertion sort, descending */
        int j = i;
        while (j > 0 && scores[B[j - 1]] < scores[i]) {
            B[j] = B[j - 1];
            j--;
        }
        B[j] = i;
    }
    int nb = n, nk = 0;
    double *iou = NEWD(n);
    double *rest = NEWD(4 * (size_t)n);
    while (nb > 0) {
        int i = B[0];
        keep[nk++] = i;
        if (nb == 1) break;
        for (int t = 1; t < nb; t++)
            for (int k = 0; k < 4; k++) rest[4 * (t - 1) + k] = boxes[4 * B[t] + k];
        ref_box_iou(boxes + 4 * i, 1, rest, nb - 1, iou);
        int m = 0;
        for (int t = 0; t < nb - 1; t++)
            if (iou[t] <= thr) B2[m++] = B[t + 1];
        memcpy(B, B2, sizeof(int) * (size_t)m);
        nb = m;
    }
    free(B);
    free(B2);
    free(iou);
    free(rest);
    return nk;
}

/* d2l.multibox_detection; probs laid out N x A x ncls as in the runtime */
static void ref_detection(int N, int A, int ncls, const float *probs, const float *offs,
                          const float *anchors, double nms_thr, double pos_thr, double *out)
{
    double *conf = NEWD(A), *bb = NEWD(4 * A);
    int *cid = NEWI(A), *keep = NEWI(A), *counts = NEWI(A), *sorted = NEWI(A);
    for (int n = 0; n < N; n++) {
        for (int a = 0; a < A; a++) { /* conf, class_id = torch.max(cls_prob[1:], 0) */
            const float *p = probs + ((size_t)n * A + a) * ncls;
            int c = 1;
            for (int k = 2; k < ncls; k++)
                if (p[k] > p[c]) c = k;
            conf[a] = p[c];
            cid[a] = c - 1;
            /* offset_inverse */
            const float *an = anchors + 4 * a;
            const float *o = offs + ((size_t)n * A + a) * 4;
            double acx = ((double)an[0] + an[2]) / 2, acy = ((double)an[1] + an[3]) / 2;
            double aw = (double)an[2] - an[0], ah = (double)an[3] - an[1];
            double cx = o[0] * aw / 10 + acx, cy = o[1] * ah / 10 + acy;
            double w = exp(o[2] / 5.0) * aw, h = exp(o[3] / 5.0) * ah;
            bb[4 * a + 0] = cx - 0.5 * w;
            bb[4 * a + 1] = cy - 0.5 * h;
            bb[4 * a + 2] = cx + 0.5 * w;
            bb[4 * a + 3] = cy + 0.5 * h;
        }
        int nk = ref_nms(bb, conf, A, nms_thr, keep);
        /* combined = cat(keep, all_idx); uniques, counts = unique(return_counts) */
        for (int a = 0; a < A; a++) counts[a] = 1;
        for (int t = 0; t < nk; t++) counts[keep[t]]++;
        int m = 0;
        for (int t = 0; t < nk; t++) sorted[m++] = keep[t];
        for (int a = 0; a < A; a++)
            if (counts[a] == 1) {
                sorted[m++] = a;
                cid[a] = -1; /* class_id[non_keep] = -1 */
            }
        for (int t = 0; t < A; t++) {
            int a = sorted[t];
            double c = cid[a], cf = conf[a];
            if (cf < pos_thr) {
                c = -1;
                cf = 1 - cf;
            }
            double *row = out + ((size_t)n * A + t) * 6;
            row[0] = c;
            row[1] = cf;
            for (int k = 0; k < 4; k++) row[2 + k] = bb[4 * a + k];
        }
    }
    free(conf);
    free(bb);
    free(cid);
    free(keep);
    free(counts);
    free(sorted);
}

/* The loss, straight from the definitions. Returns the batch mean; per_ex may be NULL. */
static double ref_loss(const ssd_loss_config_t *cfg, int N, int A, int ncls, const double *cls,
                       const double *bbox, const float *labels, const float *blab,
                       const float *bmask, double *per_ex)
{
    double *l = NEWD(A), *bg = NEWD(A), *logp = NEWD(ncls);
    int *sel = NEWI(A);
    double total = 0.0;
    for (int n = 0; n < N; n++) {
        for (int a = 0; a < A; a++) {
            const double *x = cls + ((size_t)n * A + a) * ncls;
            double m = x[0];
            for (int k = 1; k < ncls; k++) m = fmax(m, x[k]);
            double s = 0;
            for (int k = 0; k < ncls; k++) s += exp(x[k] - m);
            for (int k = 0; k < ncls; k++) logp[k] = x[k] - m - log(s);
            int j = (int)labels[(size_t)n * A + a];
            if (cfg->focal) {
                double p = exp(logp[j]);
                l[a] = -cfg->focal_alpha * pow(1 - p, cfg->focal_gamma) * logp[j];
            } else {
                l[a] = -logp[j];
            }
            bg[a] = -logp[0];
        }
        double closs = 0.0;
        if (cfg->negative_mining_ratio > 0) {
            int npos = 0, nneg = 0;
            for (int a = 0; a < A; a++) {
                sel[a] = 0;
                if (labels[(size_t)n * A + a] > 0) {
                    npos++;
                    sel[a] = 1;
                } else {
                    nneg++;
                }
            }
            int K = (int)floor(cfg->negative_mining_ratio * (double)npos);
            if (K > nneg) K = nneg;
            for (int t = 0; t < K; t++) { /* pick the hardest unselected negative */
                int best = -1;
                for (int a = 0; a < A; a++)
                    if (labels[(size_t)n * A + a] == 0 && !sel[a] && (best < 0 || bg[a] > bg[best]))
                        best = a;
                sel[best] = 1;
            }
            int nk = npos + K;
            for (int a = 0; a < A; a++)
                if (sel[a]) closs += l[a];
            closs = nk > 0 ? closs / nk : 0.0;
        } else {
            for (int a = 0; a < A; a++) closs += l[a];
            closs /= A;
        }
        double bloss = 0.0;
        for (int i = 0; i < 4 * A; i++) {
            size_t q = (size_t)n * 4 * A + i;
            double d = fabs(bbox[q] * bmask[q] - (double)blab[q] * bmask[q]);
            if (cfg->smooth_l1) {
                double s2 = (double)cfg->sigma * cfg->sigma;
                bloss += d < 1.0 / s2 ? s2 * d * d / 2 : d - 0.5 / s2;
            } else {
                bloss += d;
            }
        }
        bloss /= 4.0 * A;
        double e = cfg->cls_weight * closs + cfg->bbox_weight * bloss;
        if (per_ex) per_ex[n] = e;
        total += e;
    }
    free(l);
    free(bg);
    free(logp);
    free(sel);
    return total / N;
}

/* ---- softmax ---------------------------------------------------------------------------- */

static void test_softmax(void)
{
    enum { R = 300, C = 5 };
    float *x = NEWF(R * C), *y = NEWF(R * C);
    for (int i = 0; i < R * C; i++) x[i] = (float)(8 * nrand());
    x[0] = 1000.0f; x[1] = 999.0f; x[2] = -1000.0f; x[3] = 0.0f; x[4] = 1000.0f;
    ssd_softmax_rows(R, C, x, y);
    double err = 0.0, sumerr = 0.0;
    for (int r = 0; r < R; r++) {
        double m = -INFINITY, s = 0, rs = 0;
        for (int c = 0; c < C; c++) m = fmax(m, x[r * C + c]);
        for (int c = 0; c < C; c++) s += exp((double)x[r * C + c] - m);
        for (int c = 0; c < C; c++) {
            double ref = exp((double)x[r * C + c] - m) / s;
            err = fmax(err, fabs(y[r * C + c] - ref));
            rs += y[r * C + c];
        }
        sumerr = fmax(sumerr, fabs(rs - 1));
    }
    report(err < 1e-6 && sumerr < 1e-5, "softmax_rows matches double softmax (max err %.2e, row-sum err %.2e, incl. logits +-1000)", err, sumerr);
    float *z = NEWF(R * C);
    memcpy(z, x, sizeof(float) * R * C);
    ssd_softmax_rows(R, C, z, z);
    report(memcmp(z, y, sizeof(float) * R * C) == 0, "softmax_rows in place gives the same bits");
    free(x); free(y); free(z);
}

/* ---- target ----------------------------------------------------------------------------- */

/* runs ssd_multibox_target and the reference, compares; returns 1 if all equal */
static int target_vs_ref(int N, int A, int G, const float *anchors, const float *labels,
                         float *cl_out, double *offerr)
{
    float *bl = NEWF(N * 4 * A), *bm = NEWF(N * 4 * A), *cl = NEWF(N * A);
    float *scr = NEWF(N * ssd_target_scratch_floats(A, G) + 1);
    double *rbl = NEWD(N * 4 * A), *rbm = NEWD(N * 4 * A), *rcl = NEWD(N * A);
    ssd_multibox_target(N, A, G, anchors, labels, 0.5f, bl, bm, cl, scr);
    ref_target(N, A, G, anchors, labels, 0.5, rbl, rbm, rcl);
    int ok = 1;
    for (int i = 0; i < N * A; i++) ok &= (cl[i] == rcl[i]);
    for (int i = 0; i < N * 4 * A; i++) ok &= (bm[i] == rbm[i]);
    double e = max_rel_err(bl, rbl, N * 4 * A);
    if (offerr) *offerr = e;
    ok &= e < 2e-5;
    if (cl_out) memcpy(cl_out, cl, sizeof(float) * N * A);
    free(bl); free(bm); free(cl); free(scr); free(rbl); free(rbm); free(rcl);
    return ok;
}

static void test_target(void)
{
    /* d2l's book example (sec. anchor boxes), numbers from d2l 1.0.3 + PyTorch */
    {
        const float gt[] = {0, 0.1f, 0.08f, 0.52f, 0.92f, 1, 0.55f, 0.2f, 0.9f, 0.88f};
        const float anc[] = {0, 0.1f, 0.2f, 0.3f, 0.15f, 0.2f, 0.4f, 0.4f, 0.63f, 0.05f, 0.88f, 0.98f,
                             0.66f, 0.45f, 0.8f, 0.8f, 0.57f, 0.3f, 0.92f, 0.9f};
        const double t_off[] = {0, 0, 0, 0, 1.3999998569488525, 9.999999046325684,
                                2.5939714908599854, 7.175424098968506, -1.1999988555908203,
                                0.26881757378578186, 1.6823639869689941, -1.5654518604278564,
                                0, 0, 0, 0, -0.5714280009269714, -1.0000001192092896,
                                4.17232331528794e-06, 0.6258203983306885};
        const float t_mask[] = {0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1};
        const float t_cls[] = {0, 1, 2, 0, 2};
        float bl[20], bm[20], cl[5], scr[64];
        ssd_multibox_target(1, 5, 2, anc, gt, 0.5f, bl, bm, cl, scr);
        double e = 0;
        int exact = 1;
        for (int i = 0; i < 20; i++) {
            e = fmax(e, fabs(bl[i] - t_off[i]) / (1 + fabs(t_off[i])));
            exact &= (bl[i] == (float)t_off[i]);
        }
        report(memcmp(cl, t_cls, sizeof cl) == 0 && memcmp(bm, t_mask, sizeof bm) == 0 && e < 1e-6,
              "target: d2l book example matches PyTorch (classes, masks; offsets max rel err %.1e, bit-identical: %s)",
              e, exact ? "yes" : "no");
        report(target_vs_ref(1, 5, 2, anc, gt, NULL, NULL), "target: book example matches the double reference");
    }
    /* IoU ties. a0 and a1 have IoU 1/3 with box 0 (step 3 must take a0, the first in
     * row-major order); a2 has IoU 0.5 (exactly) with boxes 1 and 2 -> step 2 picks box 1;
     * a3 = box 2 exactly (IoU 1) and a4 = box 1 exactly. */
    {
        const float anc[] = {0, 0, 0.5f, 0.5f, /* a0 */ 0.5f, 0, 1, 0.5f, /* a1 */
                             0, 0.5f, 0.5f, 1, /* a2 */ 0, 0.75f, 0.5f, 1, /* a3 */
                             0, 0.5f, 0.5f, 0.75f /* a4 */, 0.75f, 0.75f, 1, 1 /* a5 */};
        const float lab[] = {3, 0.25f, 0, 0.75f, 0.5f, 5, 0, 0.5f, 0.5f, 0.75f, 7, 0, 0.75f, 0.5f, 1};
        float cl[6];
        int ok = target_vs_ref(1, 6, 3, anc, lab, cl, NULL);
        const float expect[] = {4, 0, 6, 8, 6, 0};
        report(ok && memcmp(cl, expect, sizeof cl) == 0,
              "target: IoU ties (equal IoU for two anchors -> lower anchor; IoU exactly 0.5 accepted, first box of a tie) cls = [%g %g %g %g %g %g]",
              cl[0], cl[1], cl[2], cl[3], cl[4], cl[5]);
    }
    /* an anchor that is the best for two boxes: a0 has IoU 0.8 with box 0 and 0.9 with
     * box 1; box 0 must then get its next best anchor a1 (IoU 0.405 < 0.5). */
    {
        const float anc[] = {0, 0, 0.5f, 0.5f, /* a0 */ 0.125f, 0, 0.625f, 0.25f, /* a1 */
                             0.75f, 0.75f, 1, 1 /* a2 */};
        const float lab[] = {0, 0, 0, 0.5f, 0.4f,  /* IoU(a0) = 0.2 / 0.25 = 0.8 */
                             1, 0, 0, 0.45f, 0.5f}; /* IoU(a0) = 0.225 / 0.25 = 0.9 */
        float cl[3];
        int ok = target_vs_ref(1, 3, 2, anc, lab, cl, NULL);
        /* IoU(a0, b1) = 0.225/0.25 = 0.9 > IoU(a0, b0) = 0.2/0.25 = 0.8: step 3 gives a0 to
         * box 1 first, then box 0 goes to its best remaining anchor a1. */
        report(ok && cl[0] == 2 && cl[1] == 1 && cl[2] == 0,
              "target: anchor best for two boxes -> the other box takes its next best anchor (cls = [%g %g %g])",
              cl[0], cl[1], cl[2]);
    }
    /* boxes with no anchor above 0.5, and a box overlapping no anchor at all */
    {
        const float anc[] = {0, 0, 0.25f, 0.25f, 0.5f, 0.5f, 1, 1, 0.5f, 0, 1, 0.25f, 0, 0.5f, 0.25f, 1};
        const float lab[] = {2, 0.125f, 0.125f, 0.375f, 0.375f, /* IoU 1/7 with a0 */
                             0, 0.25f, 0.25f, 0.3125f, 0.3125f, /* overlaps no anchor */
                             1, 0.5f, 0.5f, 0.75f, 0.75f /* IoU 0.25 with a1 */};
        float cl[4];
        int ok = target_vs_ref(1, 4, 3, anc, lab, cl, NULL);
        /* rounds: (a1,b2)=0.25 -> a1; then (a0,b0)=1/7 -> a0; then column b1 is all 0 except
         * discarded rows, so torch.argmax picks the first remaining row: a2 -> box 1. */
        report(ok && cl[0] == 3 && cl[1] == 2 && cl[2] == 1 && cl[3] == 0,
              "target: boxes below threshold still get their best anchor; a box touching no anchor takes the first free row as in d2l (cls = [%g %g %g %g])",
              cl[0], cl[1], cl[2], cl[3]);
    }
    /* padding rows are ignored (a padding row that matches anchor 1 exactly, in the middle) */
    {
        const float anc[] = {0, 0, 0.5f, 0.5f, 0.5f, 0.5f, 1, 1, 0, 0.5f, 0.5f, 1};
        const float lab[] = {0, 0, 0, 0.5f, 0.5f, -1, 0.5f, 0.5f, 1, 1, 4, 0, 0.5f, 0.5f, 1,
                             -1, 0, 0, 0, 0};
        float cl[3];
        int ok = target_vs_ref(1, 3, 4, anc, lab, cl, NULL);
        report(ok && cl[0] == 1 && cl[1] == 0 && cl[2] == 5,
              "target: padding rows (class -1) take part in nothing (cls = [%g %g %g])", cl[0], cl[1], cl[2]);
        const float pad[] = {-1, 0, 0, 0.5f, 0.5f, -1, 0, 0, 1, 1};
        float bl[12], bm[12], c2[3], scr[64];
        ssd_multibox_target(1, 3, 2, anc, pad, 0.5f, bl, bm, c2, scr);
        int z = 1;
        for (int i = 0; i < 12; i++) z &= bl[i] == 0 && bm[i] == 0;
        for (int i = 0; i < 3; i++) z &= c2[i] == 0;
        report(z, "target: image with only padding rows is all background");
    }
    /* random cases on the 1/16 grid: several images, padding, ties */
    {
        enum { N = 5, A = 240, G = 6 };
        float *anc = NEWF(4 * A), *lab = NEWF(N * G * 5);
        int ok = 1;
        double worst = 0;
        for (int rep = 0; rep < 20; rep++) {
            for (int a = 0; a < A; a++) grid_box(anc + 4 * a);
            for (int i = 0; i < N * G; i++) {
                lab[5 * i] = urand() < 0.25 ? -1.0f : (float)irand(3);
                grid_box(lab + 5 * i + 1);
            }
            double e;
            ok &= target_vs_ref(N, A, G, anc, lab, NULL, &e);
            worst = fmax(worst, e);
        }
        report(ok, "target: 20 random batches (5 images, 240 grid anchors, 6 rows with padding) match the reference (offset err %.1e)", worst);
        /* thread count does not change the result */
        float *bl1 = NEWF(N * 4 * A), *bm1 = NEWF(N * 4 * A), *cl1 = NEWF(N * A);
        float *bl2 = NEWF(N * 4 * A), *bm2 = NEWF(N * 4 * A), *cl2 = NEWF(N * A);
        float *scr = NEWF(N * ssd_target_scratch_floats(A, G));
        set_threads(1);
        ssd_multibox_target(N, A, G, anc, lab, 0.5f, bl1, bm1, cl1, scr);
        set_threads(4);
        ssd_multibox_target(N, A, G, anc, lab, 0.5f, bl2, bm2, cl2, scr);
        report(!memcmp(bl1, bl2, sizeof(float) * N * 4 * A) && !memcmp(bm1, bm2, sizeof(float) * N * 4 * A) &&
                  !memcmp(cl1, cl2, sizeof(float) * N * A),
              "target: bit-identical with 1 and 4 threads");
        free(anc); free(lab); free(bl1); free(bm1); free(cl1); free(bl2); free(bm2); free(cl2); free(scr);
    }
}

/* ---- detection -------------------------------------------------------------------------- */

static int det_vs_ref(int N, int A, int ncls, const float *probs, const float *offs,
                      const float *anc, float nms_thr, float pos_thr, float *out_c,
                      double *boxerr)
{
    float *out = NEWF(N * A * 6), *scr = NEWF(N * ssd_detection_scratch_floats(A));
    double *ref = NEWD(N * A * 6);
    ssd_multibox_detection(N, A, ncls, probs, offs, anc, nms_thr, pos_thr, out, scr);
    ref_detection(N, A, ncls, probs, offs, anc, nms_thr, pos_thr, ref);
    int ok = 1;
    double e = 0;
    for (int r = 0; r < N * A; r++) {
        ok &= out[6 * r] == ref[6 * r];
        ok &= fabs(out[6 * r + 1] - ref[6 * r + 1]) < 1e-6;
        for (int k = 2; k < 6; k++) e = fmax(e, fabs(out[6 * r + k] - ref[6 * r + k]));
    }
    ok &= e < 1e-5;
    if (boxerr) *boxerr = e;
    if (out_c) memcpy(out_c, out, sizeof(float) * N * A * 6);
    free(out); free(scr); free(ref);
    return ok;
}

/* SPEC section 2 anchors for a 256x256 input (A = 5444) */
static int make_anchors(float *anc)
{
    const double sizes[5][2] = {{0.2, 0.272}, {0.37, 0.447}, {0.54, 0.619}, {0.71, 0.79}, {0.88, 0.961}};
    const double ratios[3] = {1, 2, 0.5};
    const int fm[5] = {32, 16, 8, 4, 1};
    int n = 0;
    for (int s = 0; s < 5; s++)
        for (int y = 0; y < fm[s]; y++)
            for (int x = 0; x < fm[s]; x++) {
                double cx = (x + 0.5) / fm[s], cy = (y + 0.5) / fm[s];
                double wh[4][2] = {{sizes[s][0], sizes[s][0]}, {sizes[s][1], sizes[s][1]},
                                   {sizes[s][0] * sqrt(ratios[1]), sizes[s][0] / sqrt(ratios[1])},
                                   {sizes[s][0] * sqrt(ratios[2]), sizes[s][0] / sqrt(ratios[2])}};
                for (int k = 0; k < 4; k++) {
                    anc[4 * n + 0] = (float)(cx - wh[k][0] / 2);
                    anc[4 * n + 1] = (float)(cy - wh[k][1] / 2);
                    anc[4 * n + 2] = (float)(cx + wh[k][0] / 2);
                    anc[4 * n + 3] = (float)(cy + wh[k][1] / 2);
                    n++;
                }
            }
    return n;
}

/* ---- detection: literal float32 reimplementation ------------------------------------------ */

/* The runtime's detection without any of its speed-ups (grids, blocks, radix sort, AVX2):
 * decode, stable merge sort by descending conf, NMS of every candidate against every kept box
 * in keep order, rows. Same float32 expressions as the runtime (and d2l), FP contraction
 * off, so the two must agree bit for bit. */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif
static float naive_iou(const float *b1, float a1, const float *b2, float a2)
{
    float ulx = b1[0] > b2[0] ? b1[0] : b2[0];
    float uly = b1[1] > b2[1] ? b1[1] : b2[1];
    float lrx = b1[2] < b2[2] ? b1[2] : b2[2];
    float lry = b1[3] < b2[3] ? b1[3] : b2[3];
    float iw = lrx - ulx, ih = lry - uly;
    if (iw < 0.0f) iw = 0.0f;
    if (ih < 0.0f) ih = 0.0f;
    float inter = iw * ih;
    float uni = (a1 + a2) - inter;
    return inter / uni;
}

static void naive_detection(int N, int A, int ncls, const float *probs, const float *offs,
                            const float *anchors, float nms_thr, float pos_thr, float *out,
                            long *nkept)
{
    float *conf = NEWF(A), *box = NEWF(4 * A), *area = NEWF(A);
    int *cls = NEWI(A), *order = NEWI(A), *tmp = NEWI(A), *keep = NEWI(A), *kept = NEWI(A);
    for (int n = 0; n < N; n++) {
        const float *pr = probs + (size_t)n * A * ncls, *of = offs + (size_t)n * 4 * A;
        for (int a = 0; a < A; a++) {
            const float *p = pr + (size_t)a * ncls;
            float best = 0.0f;
            int bc = 0;
            if (ncls >= 2) {
                best = p[1];
                for (int c = 2; c < ncls; c++)
                    if (p[c] > best) { best = p[c]; bc = c - 1; }
            }
            conf[a] = best;
            cls[a] = bc;
            const float *an = anchors + 4 * a, *o = of + 4 * a;
            float acx = (an[0] + an[2]) / 2.0f, acy = (an[1] + an[3]) / 2.0f;
            float aw = an[2] - an[0], ah = an[3] - an[1];
            float cx = (o[0] * aw) / 10.0f + acx, cy = (o[1] * ah) / 10.0f + acy;
            float w = expf(o[2] / 5.0f) * aw, h = expf(o[3] / 5.0f) * ah;
            float *b = box + 4 * a;
            b[0] = cx - 0.5f * w;
            b[1] = cy - 0.5f * h;
            b[2] = cx + 0.5f * w;
            b[3] = cy + 0.5f * h;
            area[a] = (b[2] - b[0]) * (b[3] - b[1]);
            order[a] = a;
        }
        /* bottom-up merge sort, right element first only if strictly larger */
        int *src = order, *dst = tmp;
        for (int width = 1; width < A; width *= 2) {
            for (int lo = 0; lo < A; lo += 2 * width) {
                int mid = lo + width < A ? lo + width : A, hi = lo + 2 * width < A ? lo + 2 * width : A;
                int i = lo, j = mid, k = lo;
                while (i < mid && j < hi) dst[k++] = conf[src[j]] > conf[src[i]] ? src[j++] : src[i++];
                while (i < mid) dst[k++] = src[i++];
                while (j < hi) dst[k++] = src[j++];
            }
            int *t = src; src = dst; dst = t;
        }
        int nk = 0;
        for (int a = 0; a < A; a++) kept[a] = 0;
        for (int t = 0; t < A; t++) {
            int j = src[t], ok = 1;
            for (int q = 0; q < nk && ok; q++)
                if (!(naive_iou(box + 4 * keep[q], area[keep[q]], box + 4 * j, area[j]) <= nms_thr)) ok = 0;
            if (ok) { keep[nk++] = j; kept[j] = 1; }
        }
        if (nkept) *nkept += nk;
        for (int t = 0, r = 0; t < A; t++) {
            int j, c;
            if (t < nk) { j = keep[t]; c = cls[j]; }
            else { while (kept[r]) r++; j = r++; c = -1; }
            float cf = conf[j];
            if (cf < pos_thr) { c = -1; cf = 1.0f - cf; }
            float *row = out + ((size_t)n * A + t) * 6;
            row[0] = (float)c;
            row[1] = cf;
            memcpy(row + 2, box + 4 * j, 4 * sizeof(float));
        }
    }
    free(conf); free(box); free(area); free(cls); free(order); free(tmp); free(keep); free(kept);
}
#ifdef __clang__
#pragma STDC FP_CONTRACT DEFAULT
#endif

/* runtime vs naive_detection, bit for bit (memcmp of the rows); adds the number of boxes kept
 * by NMS to *nkept */
static int det_vs_naive(int N, int A, int ncls, const float *probs, const float *offs,
                        const float *anc, float nms_thr, float pos_thr, long *nkept)
{
    float *out = NEWF((size_t)N * A * 6), *ref = NEWF((size_t)N * A * 6);
    float *scr = NEWF((size_t)N * ssd_detection_scratch_floats(A));
    memset(out, 0xA5, sizeof(float) * (size_t)N * A * 6);
    ssd_multibox_detection(N, A, ncls, probs, offs, anc, nms_thr, pos_thr, out, scr);
    naive_detection(N, A, ncls, probs, offs, anc, nms_thr, pos_thr, ref, nkept);
    int same = memcmp(out, ref, sizeof(float) * (size_t)N * A * 6) == 0;
    free(out); free(ref); free(scr);
    return same;
}

/* one random image set for det_vs_naive: kind 0 test-like (random logits and offsets), 1
 * trained-like (mostly background, a few objects with many overlapping confident boxes),
 * 2 grid (anchors on a 1/64 grid, zero offsets, conf k/16: exact IoU and conf ties), 3
 * hostile (NaN, +-inf, -0, huge offsets, empty and inverted anchors) */
static void det_random_case(int kind, int N, int A, int ncls, const float *anc_in, float *anc,
                            float *probs, float *offs)
{
    memcpy(anc, anc_in, sizeof(float) * 4 * (size_t)A);
    for (size_t i = 0; i < (size_t)N * A; i++) {
        float *p = probs + i * ncls;
        double s = 0;
        for (int c = 0; c < ncls; c++) {
            double l = kind == 1 ? (c == 0 ? 6 + 2 * nrand() : 2 * nrand()) : 2 * nrand() - (c > 0);
            p[c] = (float)exp(l);
            s += p[c];
        }
        for (int c = 0; c < ncls; c++) p[c] = (float)(p[c] / s);
        if (kind == 2)
            for (int c = 1; c < ncls; c++) p[c] = irand(16) / 16.0f;
    }
    for (size_t i = 0; i < (size_t)N * 4 * A; i++) offs[i] = kind == 2 ? 0.0f : (float)((kind == 1 ? 0.5 : 0.8) * nrand());
    if (kind == 1) { /* objects: boost a few clusters of anchors */
        for (int n = 0; n < N; n++)
            for (int o = 0; o < 3; o++) {
                double cx = urand(), cy = urand();
                for (int a = 0; a < A; a++) {
                    const float *b = anc + 4 * a;
                    double dx = (b[0] + b[2]) / 2 - cx, dy = (b[1] + b[3]) / 2 - cy;
                    if (dx * dx + dy * dy < 0.01) {
                        float *p = probs + ((size_t)n * A + a) * ncls;
                        p[1] = (float)(0.5 + 0.5 * urand());
                        p[0] = 1 - p[1];
                        for (int c = 2; c < ncls; c++) p[c] = 0;
                    }
                }
            }
    }
    if (kind == 2)
        for (int i = 0; i < 4 * A; i++) anc[i] = roundf(anc[i] * 64) / 64;
    if (kind == 3) {
        const float special[] = {NAN, INFINITY, -INFINITY, -0.0f, 0.0f, 1e30f, -1e30f, 3e38f, -3e38f, 400.0f, -400.0f};
        const int ns = (int)(sizeof special / sizeof special[0]);
        for (int k = 0; k < A / 50 + 1; k++) {
            int a = irand(A), n = irand(N);
            switch (irand(5)) {
            case 0: probs[((size_t)n * A + a) * ncls + 1 + irand(ncls - 1)] = special[irand(5)]; break;
            case 1: offs[((size_t)n * A + a) * 4 + irand(4)] = special[irand(ns)]; break;
            case 2: anc[4 * a + 2] = anc[4 * a]; break;                       /* empty */
            case 3: { float t = anc[4 * a]; anc[4 * a] = anc[4 * a + 2]; anc[4 * a + 2] = t; } break;
            default: anc[4 * a + irand(4)] = special[irand(ns)]; break;
            }
        }
    }
}

static void test_detection(void)
{
    /* d2l's book example (sec. NMS), numbers from d2l 1.0.3 + PyTorch */
    {
        const float anc[] = {0.1f, 0.08f, 0.52f, 0.92f, 0.08f, 0.2f, 0.56f, 0.95f,
                             0.15f, 0.3f, 0.62f, 0.91f, 0.55f, 0.2f, 0.9f, 0.88f};
        const float probs[] = {0, 0.9f, 0.1f, 0, 0.8f, 0.2f, 0, 0.7f, 0.3f, 0, 0.1f, 0.9f};
        float offs[16] = {0};
        const double t[] = {0.0, 0.8999999761581421, 0.10000000894069672, 0.07999998331069946, 0.5199999809265137, 0.9200000166893005,
                            1.0, 0.8999999761581421, 0.5500000715255737, 0.20000001788139343, 0.8999999761581421, 0.8799999952316284,
                            -1.0, 0.800000011920929, 0.07999998331069946, 0.19999998807907104, 0.5600000023841858, 0.949999988079071,
                            -1.0, 0.699999988079071, 0.14999999105930328, 0.30000001192092896, 0.6200000047683716, 0.9100000262260437};
        float out[24], *scr = NEWF(ssd_detection_scratch_floats(4));
        ssd_multibox_detection(1, 4, 3, probs, offs, anc, 0.5f, 0.009999999f, out, scr);
        free(scr);
        int exact = 1;
        double e = 0;
        for (int i = 0; i < 24; i++) {
            exact &= out[i] == (float)t[i];
            e = fmax(e, fabs(out[i] - t[i]));
        }
        report(e < 1e-6, "detection: d2l book example matches PyTorch (max err %.1e, bit-identical: %s)", e, exact ? "yes" : "no");
        report(det_vs_ref(1, 4, 3, probs, offs, anc, 0.5f, 0.009999999f, NULL, NULL), "detection: book example matches the double reference");
    }
    /* overlapping boxes, IoU exactly 0.5 (kept) vs just above (dropped), conf ties */
    {
        const float anc[] = {0, 0, 0.5f, 0.5f,       /* a0 */
                             0, 0, 0.5f, 0.25f,      /* a1: IoU(a0) = 0.5 exactly -> kept */
                             0.0625f, 0, 0.5f, 0.5f, /* a2: IoU(a0) = 0.875 -> dropped */
                             0.5f, 0.5f, 1, 1,       /* a3 */
                             0.5f, 0.5f, 1, 1,       /* a4 = a3, same conf: a3 first */
                             0.5f, 0, 1, 0.5f};      /* a5: low conf, no overlap */
        const float probs[] = {0.1f, 0.9f, 0.2f, 0.8f, 0.05f, 0.95f, 0.3f, 0.7f, 0.3f, 0.7f, 0.995f, 0.005f};
        float offs[24] = {0};
        float out[36];
        int ok = det_vs_ref(1, 6, 2, probs, offs, anc, 0.5f, 0.009999999f, out, NULL);
        /* order by conf: a2 .95, a0 .9 (IoU(a2,a0)=.875 -> drop), a1 .8 (IoU(a2,a1)=
         * 0.4375*0.25/(0.21875+0.125-0.109375)=0.4667 keep), a3 .7, a4 .7 drop, a5 .005 keep */
        int order[6] = {2, 1, 3, 5, 0, 4};
        float cls[6] = {0, 0, 0, -1, -1, -1};
        float conf[6] = {0.95f, 0.8f, 0.7f, 1 - 0.005f, 0.9f, 0.7f};
        for (int t = 0; t < 6; t++) {
            ok &= out[6 * t] == cls[t] && out[6 * t + 1] == conf[t];
            ok &= memcmp(out + 6 * t + 2, anc + 4 * order[t], 16) == 0;
        }
        report(ok, "detection: overlapping boxes suppressed, IoU = 0.5 kept, equal conf -> lower anchor first, low conf -> class -1, conf 1-conf");
    }
    {
        /* same with a0 > a2: IoU(a0, a1) = 0.5 exactly is not > 0.5, so a1 survives */
        const float anc[] = {0, 0, 0.5f, 0.5f, 0, 0, 0.5f, 0.25f};
        const float probs[] = {0.1f, 0.9f, 0.2f, 0.8f};
        float offs[8] = {0}, out[12];
        int ok = det_vs_ref(1, 2, 2, probs, offs, anc, 0.5f, 0.009999999f, out, NULL);
        report(ok && out[0] == 0 && out[6] == 0, "detection: IoU exactly at nms_threshold is not suppressed");
        ok = det_vs_ref(1, 2, 2, probs, offs, anc, 0.49f, 0.009999999f, out, NULL);
        report(ok && out[0] == 0 && out[6] == -1, "detection: ... and is suppressed with threshold 0.49");
    }
    /* several classes: first max among non-background classes */
    {
        const float anc[] = {0, 0, 0.25f, 0.25f, 0.5f, 0.5f, 0.75f, 0.75f, 0, 0.5f, 0.25f, 0.75f};
        const float probs[] = {0.1f, 0.2f, 0.35f, 0.35f, /* tie classes 1 and 2 -> id 1 */
                               0.7f, 0.1f, 0.1f, 0.1f,   /* tie of all three -> id 0 */
                               0.05f, 0.05f, 0.1f, 0.8f};
        float offs[12] = {0}, out[18];
        int ok = det_vs_ref(1, 3, 4, probs, offs, anc, 0.5f, 0.009999999f, out, NULL);
        report(ok && out[0] == 2 && out[1] == 0.8f && out[6] == 1 && out[7] == 0.35f && out[12] == 0 && out[13] == 0.1f,
              "detection: multi-class conf/class = first max over non-background classes");
    }
    /* all background and the pos_threshold */
    {
        enum { A = 40 };
        float anc[4 * A], probs[2 * A], offs[4 * A], out[6 * A];
        for (int a = 0; a < A; a++) {
            grid_box(anc + 4 * a);
            probs[2 * a + 1] = (float)(0.009 * urand());
            probs[2 * a] = 1 - probs[2 * a + 1];
        }
        for (int i = 0; i < 4 * A; i++) offs[i] = (float)(0.5 * nrand());
        int ok = det_vs_ref(1, A, 2, probs, offs, anc, 0.5f, 0.009999999f, out, NULL);
        for (int a = 0; a < A; a++) ok &= out[6 * a] == -1 && out[6 * a + 1] > 0.99f;
        report(ok, "detection: all-background image -> every row class -1 with conf 1 - p");
        for (int a = 0; a < A; a++) {
            probs[2 * a + 1] = (float)(irand(16) / 16.0);
            probs[2 * a] = 1 - probs[2 * a + 1];
        }
        float out2[6 * A];
        ok = det_vs_ref(1, A, 2, probs, offs, anc, 0.5f, 0.009999999f, out, NULL);
        ok &= det_vs_ref(1, A, 2, probs, offs, anc, 0.5f, 0.5f, out2, NULL);
        int differs = 0, rule = 1;
        for (int t = 0; t < A; t++) {
            /* same order and boxes; rows with conf < 0.5 become (-1, 1 - conf). The probs
             * are k/16, k < 16, so a shown conf of 1 means an original conf of 0. */
            rule &= memcmp(out + 6 * t + 2, out2 + 6 * t + 2, 16) == 0;
            float c = out[6 * t], p = out[6 * t + 1];
            float porig = p == 1.0f ? 0.0f : p;
            if (porig < 0.5f) {
                differs += c >= 0;
                rule &= out2[6 * t] == -1 && out2[6 * t + 1] == 1 - porig;
            } else {
                rule &= out2[6 * t] == c && out2[6 * t + 1] == p;
            }
        }
        report(ok && rule && differs > 0, "detection: pos_threshold 0.5 turns %d kept rows with conf < 0.5 into class -1, conf 1-conf", differs);
    }
    /* random grid cases, zero offsets, conf ties; several images */
    {
        enum { N = 3, A = 300 };
        float *anc = NEWF(4 * A), *probs = NEWF(N * A * 3), *offs = NEWF(N * 4 * A);
        int ok = 1;
        for (int rep = 0; rep < 10; rep++) {
            for (int a = 0; a < A; a++) grid_box(anc + 4 * a);
            for (int i = 0; i < N * A; i++) {
                float p1 = irand(12) / 32.0f, p2 = irand(12) / 32.0f;
                probs[3 * i + 1] = p1;
                probs[3 * i + 2] = p2;
                probs[3 * i] = 1 - p1 - p2;
            }
            memset(offs, 0, sizeof(float) * N * 4 * A);
            ok &= det_vs_ref(N, A, 3, probs, offs, anc, 0.5f, 0.009999999f, NULL, NULL);
        }
        report(ok, "detection: 10 random batches (3 images, 300 grid boxes, many exact conf/IoU ties) match the reference");
        /* random offsets and probabilities */
        ok = 1;
        double worst = 0;
        for (int rep = 0; rep < 10; rep++) {
            for (int a = 0; a < A; a++) grid_box(anc + 4 * a);
            for (int i = 0; i < N * A; i++) {
                double x1 = 3 * nrand(), x2 = 3 * nrand(), s = 1 + exp(x1) + exp(x2);
                probs[3 * i] = (float)(1 / s);
                probs[3 * i + 1] = (float)(exp(x1) / s);
                probs[3 * i + 2] = (float)(exp(x2) / s);
            }
            for (int i = 0; i < N * 4 * A; i++) offs[i] = (float)(2 * nrand());
            double e;
            ok &= det_vs_ref(N, A, 3, probs, offs, anc, 0.5f, 0.009999999f, NULL, &e);
            worst = fmax(worst, e);
        }
        report(ok, "detection: 10 random batches with offsets match the reference (box err %.1e)", worst);
        free(anc); free(probs); free(offs);
    }
    /* full-size: A = 5444 TinySSD anchors, 8 images; speed, NMS invariants, thread count */
    {
        enum { N = 8 };
        float *anc = NEWF(4 * 5444);
        int A = make_anchors(anc);
        float *logits = NEWF(N * A * 2), *probs = NEWF(N * A * 2), *offs = NEWF(N * 4 * A);
        for (int i = 0; i < N * A; i++) {
            logits[2 * i] = (float)(2 * nrand());
            logits[2 * i + 1] = (float)(2 * nrand() - 1);
        }
        ssd_softmax_rows(N * A, 2, logits, probs);
        for (int i = 0; i < N * 4 * A; i++) offs[i] = (float)(0.8 * nrand());
        float *out = NEWF(N * A * 6), *out1 = NEWF(N * A * 6);
        float *scr = NEWF(N * ssd_detection_scratch_floats(A));
        set_threads(4);
        ssd_multibox_detection(N, A, 2, probs, offs, anc, 0.5f, 0.009999999f, out, scr); /* warm-up */
        double t0 = now_sec();
        ssd_multibox_detection(N, A, 2, probs, offs, anc, 0.5f, 0.009999999f, out, scr);
        double dt = now_sec() - t0;
        set_threads(1);
        double t1 = now_sec();
        ssd_multibox_detection(N, A, 2, probs, offs, anc, 0.5f, 0.009999999f, out1, scr);
        double dt1 = now_sec() - t1;
        set_threads(4);
        report(A == 5444 && memcmp(out, out1, sizeof(float) * N * A * 6) == 0,
              "detection: A = %d, 8 images: bit-identical with 4 and 1 threads", A);
        /* invariants, checked in double with a margin */
        int ok = 1, nkept_total = 0;
        for (int n = 0; n < N && ok; n++) {
            const float *o = out + (size_t)n * A * 6;
            double bx[4], by[4];
            int nk = 0;
            while (nk < A && o[6 * nk] >= 0) nk++;
            nkept_total += nk;
            for (int t = 1; t < nk; t++) ok &= o[6 * t + 1] <= o[6 * (t - 1) + 1];
            for (int t = 0; t < nk && ok; t++)
                for (int u = 0; u < t; u++) {
                    for (int k = 0; k < 4; k++) { bx[k] = o[6 * t + 2 + k]; by[k] = o[6 * u + 2 + k]; }
                    double iou;
                    ref_box_iou(bx, 1, by, 1, &iou);
                    if (iou > 0.5 + 1e-5) { ok = 0; break; }
                }
        }
        report(ok && nkept_total > 0, "detection: A = 5444: kept rows (%d over 8 images) in non-increasing conf with pairwise IoU <= 0.5", nkept_total);
        report(dt < 1.0, "detection: A = 5444, 8 images in %.1f ms (4 threads), %.1f ms (1 thread)", dt * 1e3, dt1 * 1e3);
        /* compare one full-size image with the literal reference (positions on the grid so
         * float and double agree: zero offsets and anchors on a 1/64 grid) */
        for (int i = 0; i < 4 * A; i++) anc[i] = roundf(anc[i] * 64) / 64;
        memset(offs, 0, sizeof(float) * 4 * A);
        double t2 = now_sec();
        int okr = det_vs_ref(1, A, 2, probs, offs, anc, 0.5f, 0.009999999f, NULL, NULL);
        report(okr, "detection: A = 5444 image on a 1/64 grid matches the reference (%.0f ms with the reference)", (now_sec() - t2) * 1e3);
        free(anc); free(logits); free(probs); free(offs); free(out); free(out1); free(scr);
    }
    /* the fast paths (radix sort, step-1 grid, bounding-box blocks, AVX2) against the literal
     * float32 reimplementation, bit for bit, on large and on odd cases */
    {
        enum { NMAX = 4, CMAX = 4 };
        float *tiny = NEWF(4 * 5444);
        const int A = make_anchors(tiny);
        float *anc = NEWF(4 * A), *probs = NEWF(NMAX * A * CMAX), *offs = NEWF(NMAX * 4 * A);
        long kept = 0;
        int ok = 1, images = 0;
        /* A = 5444: random, trained-like, grid with exact ties; 2 and 3 classes */
        for (int kind = 0; kind < 3; kind++)
            for (int ncls = 2; ncls <= 3; ncls++) {
                det_random_case(kind, 3, A, ncls, tiny, anc, probs, offs);
                ok &= det_vs_naive(3, A, ncls, probs, offs, anc, 0.5f, 0.009999999f, &kept);
                images += 3;
            }
        report(ok, "detection: A = %d, %d images (random, trained-like, 1/64 grid with conf/IoU ties; 2 and 3 classes): bit-identical to the literal float32 version (%ld boxes kept)", A, images, kept);
        /* thresholds */
        const float nms[] = {0.3f, 0.7f, 0.0f, 1.0f, -0.25f, NAN, 0.5f, 0.5f};
        const float pos[] = {0.01f, 0.5f, 0.01f, 0.0f, 0.01f, 0.01f, 1.0f, -1.0f};
        int okt = 1;
        kept = 0;
        for (int k = 0; k < 8; k++) {
            det_random_case(k & 1 ? 2 : 0, 2, A, 2, tiny, anc, probs, offs);
            okt &= det_vs_naive(2, A, 2, probs, offs, anc, nms[k], pos[k], &kept);
        }
        report(okt, "detection: A = %d, nms_threshold 0.3, 0.7, 0, 1, -0.25, NaN, pos_threshold 0..1: bit-identical (%ld boxes kept)", A, kept);
        /* NaN / inf / -0 conf and boxes, empty and inverted anchors */
        int okh = 1;
        kept = 0;
        for (int rep = 0; rep < 6; rep++) {
            det_random_case(3, 2, A, 2 + rep % 3, tiny, anc, probs, offs);
            okh &= det_vs_naive(2, A, 2 + rep % 3, probs, offs, anc, rep == 5 ? 0.0f : 0.5f, 0.009999999f, &kept);
        }
        report(okh, "detection: A = %d with NaN/inf/-0 probs, offsets and anchors, empty and inverted anchors: bit-identical (%ld boxes kept)", A, kept);
        /* odd sizes (no grid below 64 anchors, vector tails) on clustered boxes (the array
         * "tiny" is reused for these anchors, then refilled with TinySSD's) */
        const int sizes[] = {1, 2, 3, 7, 8, 9, 63, 64, 65, 100, 1001, 5443};
        int oks = 1;
        for (int k = 0; k < (int)(sizeof sizes / sizeof sizes[0]); k++)
            for (int kind = 0; kind < 4; kind++) {
                int a = sizes[k];
                for (int i = 0; i < a; i++) { /* around 5 centres: many overlaps */
                    double cx = 0.2 + 0.15 * (i % 5) + 0.05 * nrand(), cy = 0.5 + 0.05 * nrand();
                    double w = 0.1 + 0.2 * urand(), h = 0.1 + 0.2 * urand();
                    tiny[4 * i] = (float)(cx - w / 2); tiny[4 * i + 1] = (float)(cy - h / 2);
                    tiny[4 * i + 2] = (float)(cx + w / 2); tiny[4 * i + 3] = (float)(cy + h / 2);
                }
                det_random_case(kind, 2, a, 2, tiny, anc, probs, offs);
                oks &= det_vs_naive(2, a, 2, probs, offs, anc, 0.5f, 0.009999999f, NULL);
            }
        report(oks, "detection: A = 1..5443 (12 sizes x 4 kinds, clustered boxes): bit-identical");
        /* several threads */
        make_anchors(tiny);
        det_random_case(0, NMAX, A, 2, tiny, anc, probs, offs);
        set_threads(2);
        int okp = det_vs_naive(NMAX, A, 2, probs, offs, anc, 0.5f, 0.009999999f, NULL);
        set_threads(4);
        report(okp, "detection: %d images on 2 threads: bit-identical", NMAX);
        free(tiny); free(anc); free(probs); free(offs);
    }
    /* crafted corner cases: A = 100 boxes of side 1/32 on a 10 x 10 grid of pitch 1/16
     * (disjoint, exact in float), so that the step-1 grid exists and most pairs are far
     * apart: a suppression must then come from the full scan */
    {
        enum { A = 100 };
        float anc[4 * A], probs[2 * A], offs[4 * A], out[6 * A];
        float *scr = NEWF(ssd_detection_scratch_floats(A));
        memset(offs, 0, sizeof offs);
        for (int a = 0; a < A; a++) {
            float x = (a % 10) / 16.0f, y = (a / 10) / 16.0f;
            anc[4 * a] = x; anc[4 * a + 1] = y; anc[4 * a + 2] = x + 0.03125f; anc[4 * a + 3] = y + 0.03125f;
            probs[2 * a + 1] = (float)(0.1 + 0.8 * urand());
            probs[2 * a] = 1 - probs[2 * a + 1];
        }
        int ok = det_vs_naive(1, A, 2, probs, offs, anc, 0.5f, 0.009999999f, NULL);
        ssd_multibox_detection(1, A, 2, probs, offs, anc, 0.5f, 0.009999999f, out, scr);
        int nk = 0;
        while (nk < A && out[6 * nk] >= 0) nk++;
        report(ok && nk == A, "detection: 100 disjoint boxes: all kept, bit-identical");
        /* zero-area boxes: 0 / 0 = NaN IoU even when disjoint, so only the first is kept */
        float za[4 * A];
        memcpy(za, anc, sizeof za);
        for (int a = 0; a < A; a++) za[4 * a + 2] = za[4 * a];
        ok = det_vs_naive(1, A, 2, probs, offs, za, 0.5f, 0.009999999f, NULL);
        ssd_multibox_detection(1, A, 2, probs, offs, za, 0.5f, 0.009999999f, out, scr);
        report(ok && out[0] >= 0 && out[6] == -1, "detection: zero-area disjoint boxes (IoU 0/0 = NaN): only the first kept, bit-identical");
        /* an x-inverted box with minus the area of a disjoint kept box: union 0, IoU NaN */
        float inv[4 * A];
        memcpy(inv, anc, sizeof inv);
        float t = inv[4 * 99]; inv[4 * 99] = inv[4 * 99 + 2]; inv[4 * 99 + 2] = t;
        probs[1] = 0.99f; probs[0] = 0.01f;
        probs[2 * 99 + 1] = 0.98f; probs[2 * 99] = 0.02f;
        ok = det_vs_naive(1, A, 2, probs, offs, inv, 0.5f, 0.009999999f, NULL);
        ssd_multibox_detection(1, A, 2, probs, offs, inv, 0.5f, 0.009999999f, out, scr);
        report(ok && out[0] >= 0 && out[6] == 0 && out[6 * 99] == -1 && out[6 * 99 + 2] == inv[4 * 99],
              "detection: a box whose area is minus that of a disjoint kept box (union 0): suppressed, bit-identical");
        /* conf -0 and +0 tie: lower anchor first */
        probs[2 * 3 + 1] = -0.0f; probs[2 * 7 + 1] = 0.0f; probs[2 * 5 + 1] = -0.0f;
        ok = det_vs_naive(1, A, 2, probs, offs, anc, 0.5f, -1.0f, NULL);
        ssd_multibox_detection(1, A, 2, probs, offs, anc, 0.5f, -1.0f, out, scr);
        report(ok && out[6 * 97 + 2] == anc[4 * 3] && out[6 * 98 + 2] == anc[4 * 5] && out[6 * 99 + 2] == anc[4 * 7],
              "detection: conf -0 and +0 are a tie (lower anchor first), bit-identical");
        /* a NaN conf: the order of the merge sort */
        probs[2 * 11 + 1] = NAN;
        report(det_vs_naive(1, A, 2, probs, offs, anc, 0.5f, 0.009999999f, NULL), "detection: a NaN conf: bit-identical");
        free(scr);
    }
}

/* ---- loss ------------------------------------------------------------------------------- */

typedef struct {
    int N, A, ncls;
    float *cls, *bbox, *lab, *blab, *bmask;
} lcase;

static lcase lcase_new(int N, int A, int ncls)
{
    lcase c = {N, A, ncls, NEWF(N * A * ncls), NEWF(N * 4 * A), NEWF(N * A), NEWF(N * 4 * A), NEWF(N * 4 * A)};
    return c;
}
static void lcase_free(lcase *c)
{
    free(c->cls); free(c->bbox); free(c->lab); free(c->blab); free(c->bmask);
}

/* random case: labels with about 1/4 positives, offsets away from L1 kinks */
static void lcase_random(lcase *c, int npos_min)
{
    for (int i = 0; i < c->N * c->A * c->ncls; i++) c->cls[i] = (float)(3 * nrand());
    for (int n = 0; n < c->N; n++)
        for (int a = 0; a < c->A; a++) {
            int pos = a < npos_min || urand() < 0.25;
            size_t q = (size_t)n * c->A + a;
            c->lab[q] = pos ? (float)(1 + irand(c->ncls - 1)) : 0.0f;
            for (int k = 0; k < 4; k++) {
                c->bmask[4 * q + k] = pos ? 1.0f : 0.0f;
                c->blab[4 * q + k] = pos ? (float)(2 * nrand()) : 0.0f;
                float d;
                do {
                    c->bbox[4 * q + k] = (float)(2 * nrand());
                    d = fabsf(c->bbox[4 * q + k] - c->blab[4 * q + k]);
                } while (pos && (d < 0.02f || fabsf(d - 1.0f) < 0.02f || fabsf(d - 0.25f) < 0.02f));
            }
        }
}

/* compares loss values with the reference and gradients with central differences of it */
static void loss_check(const char *name, const ssd_loss_config_t *cfg, lcase *c)
{
    int N = c->N, A = c->A, C = c->ncls;
    float *pe = NEWF(N), *dc = NEWF(N * A * C), *db = NEWF(N * 4 * A);
    float *scr = NEWF(ssd_loss_scratch_floats(N, A, C));
    double met[4];
    ssd_multibox_loss(cfg, N, A, C, c->cls, c->bbox, c->lab, c->blab, c->bmask, pe, dc, db, met, scr);
    double *x = NEWD(N * A * C), *b = NEWD(N * 4 * A), *rpe = NEWD(N);
    for (int i = 0; i < N * A * C; i++) x[i] = c->cls[i];
    for (int i = 0; i < N * 4 * A; i++) b[i] = c->bbox[i];
    ref_loss(cfg, N, A, C, x, b, c->lab, c->blab, c->bmask, rpe);
    double ve = max_rel_err(pe, rpe, N);
    int unkept = 0; /* anchors with zero class gradient (mining drops them) */
    for (int i = 0; i < N * A; i++) {
        int z = 1;
        for (int k = 0; k < C; k++) z &= dc[(size_t)i * C + k] == 0;
        unkept += z;
    }
    const double h = 1e-5;
    double ge = 0, gabs = 0, gmax = 0; /* worst relative error, worst abs error, max |grad| */
    for (int i = 0; i < N * A * C; i++) {
        double s = x[i];
        x[i] = s + h;
        double lp = ref_loss(cfg, N, A, C, x, b, c->lab, c->blab, c->bmask, NULL);
        x[i] = s - h;
        double lm = ref_loss(cfg, N, A, C, x, b, c->lab, c->blab, c->bmask, NULL);
        x[i] = s;
        double fd = (lp - lm) / (2 * h);
        ge = fmax(ge, fabs(dc[i] - fd) / (1e-3 + fabs(fd)));
        gabs = fmax(gabs, fabs(dc[i] - fd));
        gmax = fmax(gmax, fabs(fd));
    }
    for (int i = 0; i < N * 4 * A; i++) {
        double s = b[i];
        b[i] = s + h;
        double lp = ref_loss(cfg, N, A, C, x, b, c->lab, c->blab, c->bmask, NULL);
        b[i] = s - h;
        double lm = ref_loss(cfg, N, A, C, x, b, c->lab, c->blab, c->bmask, NULL);
        b[i] = s;
        double fd = (lp - lm) / (2 * h);
        ge = fmax(ge, fabs(db[i] - fd) / (1e-3 + fabs(fd)));
        gabs = fmax(gabs, fabs(db[i] - fd));
        gmax = fmax(gmax, fabs(fd));
    }
    report(ve < 1e-6 && ge < 1e-4 && gmax > 1e-3 && (cfg->negative_mining_ratio > 0) == (unkept > 0),
          "loss %s: values vs reference (rel err %.1e); gradients vs central differences (rel err %.1e, abs err %.1e, max |grad| %.1e; %d of %d anchors unkept)",
          name, ve, ge, gabs, gmax, unkept, N * A);
    free(pe); free(dc); free(db); free(scr); free(x); free(b); free(rpe);
}

static void test_loss(void)
{
    ssd_loss_config_t def = ssd_loss_config_default();
    report(def.focal == 0 && def.focal_gamma == 2 && def.focal_alpha == 0.25f && def.smooth_l1 == 0 &&
              def.sigma == 1 && def.cls_weight == 1 && def.bbox_weight == 1 && def.negative_mining_ratio <= 0,
          "loss: default config = CE + L1, weights 1, no mining (gamma 2, alpha 0.25, sigma 1)");

    /* hand-computed tiny case: N = 1, A = 2, 2 classes */
    {
        float cls[4] = {0, 0, (float)log(3.0), 0}; /* a0: p = 1/2; a1: p(1) = 1/4 */
        float lab[2] = {0, 1};
        float bbox[8] = {0, 0, 0, 0, 1, -2, 0.5f, 0};
        float blab[8] = {0, 0, 0, 0, 0.5f, 0, 0, 1};
        float mask[8] = {0, 0, 0, 0, 1, 1, 1, 1};
        float pe[1], dc[4], db[8], scr[64];
        double met[4];
        ssd_multibox_loss(&def, 1, 2, 2, cls, bbox, lab, blab, mask, pe, dc, db, met, scr);
        double expect = (log(2.0) + log(4.0)) / 2 + (0.5 + 2 + 0.5 + 1) / 8;
        double gexp[4] = {-0.25, 0.25, 0.375, -0.375};
        double bexp[8] = {0, 0, 0, 0, 0.125, -0.125, 0.125, -0.125};
        int ok = fabs(pe[0] - expect) < 1e-6;
        for (int i = 0; i < 4; i++) ok &= fabs(dc[i] - gexp[i]) < 1e-7;
        for (int i = 0; i < 8; i++) ok &= fabs(db[i] - bexp[i]) < 1e-7;
        report(ok, "loss: hand example CE + L1 = %.6f (expected %.6f), gradients by hand", pe[0], expect);
        /* argmax of a0 is 0 (tie -> first), label 0: correct; a1 argmax 0 != 1 */
        report(met[0] == 1 && met[1] == 2 && fabs(met[2] - 4.0) < 1e-7 && met[3] == 8,
              "loss: metrics by hand (correct %g of %g, abs sum %g of %g entries; argmax tie -> class 0)", met[0], met[1], met[2], met[3]);
        /* smooth L1, sigma 1: |d| = .5, 2, .5, 1 -> .125 + 1.5 + .125 + .5 */
        ssd_loss_config_t s = def;
        s.smooth_l1 = 1;
        s.cls_weight = 2;
        s.bbox_weight = 0.5f;
        ssd_multibox_loss(&s, 1, 2, 2, cls, bbox, lab, blab, mask, pe, dc, db, met, scr);
        double e2 = 2 * (log(2.0) + log(4.0)) / 2 + 0.5 * (0.125 + 1.5 + 0.125 + 0.5) / 8;
        double bexp2[8] = {0, 0, 0, 0, 0.5 * 0.5 / 8, -0.5 / 8, 0.5 * 0.5 / 8, -0.5 / 8};
        ok = fabs(pe[0] - e2) < 1e-6;
        for (int i = 0; i < 8; i++) ok &= fabs(db[i] - bexp2[i]) < 1e-7;
        for (int i = 0; i < 4; i++) ok &= fabs(dc[i] - 2 * gexp[i]) < 1e-7;
        report(ok, "loss: hand example smooth L1 (sigma 1, |d| = 1 on the linear side) with weights 2 / 0.5 = %.6f (expected %.6f)", pe[0], e2);
        /* focal: a0 p = 1/2: -.25 * .25 * log .5; a1 p = 1/4: -.25 * .5625 * log .25 */
        ssd_loss_config_t f = def;
        f.focal = 1;
        ssd_multibox_loss(&f, 1, 2, 2, cls, bbox, lab, blab, mask, pe, NULL, NULL, NULL, scr);
        double e3 = (0.25 * 0.25 * log(2.0) + 0.25 * 0.5625 * log(4.0)) / 2 + 4.0 / 8;
        report(fabs(pe[0] - e3) < 1e-6, "loss: hand example focal (alpha .25, gamma 2) = %.6f (expected %.6f), NULL grads and metrics", pe[0], e3);
        /* L1 with d = 0 on a masked entry: subgradient 0 */
        float bbox0[8] = {0, 0, 0, 0, 0.5f, 0, 0, 1};
        ssd_multibox_loss(&def, 1, 2, 2, cls, bbox0, lab, blab, mask, pe, dc, db, met, scr);
        ok = 1;
        for (int i = 0; i < 8; i++) ok &= db[i] == 0;
        report(ok && fabs(pe[0] - (log(2.0) + log(4.0)) / 2) < 1e-6 && met[2] == 0, "loss: L1 subgradient at d = 0 is 0");
    }

    /* random cases: values and finite-difference gradients */
    {
        lcase c = lcase_new(3, 12, 3);
        lcase_random(&c, 1);
        ssd_loss_config_t cfg = def;
        loss_check("CE + L1", &cfg, &c);
        cfg.smooth_l1 = 1;
        loss_check("CE + smooth L1 (sigma 1)", &cfg, &c);
        cfg.sigma = 2;
        loss_check("CE + smooth L1 (sigma 2)", &cfg, &c);
        cfg = def;
        cfg.focal = 1;
        loss_check("focal (2, .25) + L1", &cfg, &c);
        cfg.focal_gamma = 0.5f;
        cfg.focal_alpha = 0.7f;
        cfg.cls_weight = 0.3f;
        cfg.bbox_weight = 3;
        loss_check("focal (0.5, .7) + L1, weights .3 / 3", &cfg, &c);
        cfg = def;
        cfg.negative_mining_ratio = 1;
        loss_check("CE + L1, mining ratio 1", &cfg, &c);
        cfg.focal = 1;
        cfg.smooth_l1 = 1;
        cfg.negative_mining_ratio = 1.5f;
        loss_check("focal + smooth L1, mining ratio 1.5", &cfg, &c);
        lcase_free(&c);
    }

    /* mining picks the right negatives */
    {
        enum { A = 8 };
        /* anchor 2 is positive; the negatives' background logit x0 sets -log p0 */
        float x0[A] = {1.0f, 0.5f, 0, -1.0f, 2.0f, -1.0f, -0.5f, 3.0f};
        float cls[2 * A], lab[A], bbox[4 * A], blab[4 * A], mask[4 * A];
        for (int a = 0; a < A; a++) {
            cls[2 * a] = x0[a];
            cls[2 * a + 1] = 0;
            lab[a] = a == 2 ? 1.0f : 0.0f;
        }
        memset(bbox, 0, sizeof bbox);
        memset(blab, 0, sizeof blab);
        memset(mask, 0, sizeof mask);
        ssd_loss_config_t cfg = def;
        cfg.negative_mining_ratio = 3;
        float pe[1], dc[2 * A], db[4 * A], scr[256];
        ssd_multibox_loss(&cfg, 1, A, 2, cls, bbox, lab, blab, mask, pe, dc, db, NULL, scr);
        /* hardest negatives: smallest x0: a3 (-1), a5 (-1, tie -> a3 first), a6 (-0.5) */
        int expect_kept[A] = {0, 0, 1, 1, 0, 1, 1, 0};
        int ok = 1;
        double l = 0;
        for (int a = 0; a < A; a++) {
            int nz = dc[2 * a] != 0 || dc[2 * a + 1] != 0;
            ok &= nz == expect_kept[a];
            if (expect_kept[a]) l += log(1 + exp(a == 2 ? (double)x0[a] : -(double)x0[a]));
        }
        ok &= fabs(pe[0] - l / 4) < 1e-6;
        report(ok, "loss: mining ratio 3 with 1 positive keeps the 3 negatives of largest -log p0 (anchors 3, 5, 6), loss = mean over 4 kept");
        cfg.negative_mining_ratio = 1.5f; /* K = trunc(1.5) = 1 -> a3 only (tie with a5 -> lower index) */
        ssd_multibox_loss(&cfg, 1, A, 2, cls, bbox, lab, blab, mask, pe, dc, db, NULL, scr);
        ok = 1;
        for (int a = 0; a < A; a++) ok &= (dc[2 * a] != 0) == (a == 2 || a == 3);
        ok &= fabs(pe[0] - (log(1 + exp(0.0)) + log(1 + exp(1.0))) / 2) < 1e-6;
        report(ok, "loss: mining ratio 1.5 -> K = 1, tie between equal negatives -> lower anchor index");
        cfg.negative_mining_ratio = 100; /* K limited by the number of negatives: all kept */
        ssd_multibox_loss(&cfg, 1, A, 2, cls, bbox, lab, blab, mask, pe, dc, db, NULL, scr);
        float pe2[1];
        ssd_multibox_loss(&def, 1, A, 2, cls, bbox, lab, blab, mask, pe2, NULL, NULL, NULL, scr);
        report(fabsf(pe[0] - pe2[0]) < 1e-6f, "loss: mining ratio 100 keeps every negative (= no mining)");
        /* no positives: nothing kept, class loss 0, class gradient 0; bbox part remains */
        lab[2] = 0;
        bbox[0] = 0.5f;
        mask[0] = 1;
        cfg.negative_mining_ratio = 3;
        ssd_multibox_loss(&cfg, 1, A, 2, cls, bbox, lab, blab, mask, pe, dc, db, NULL, scr);
        ok = fabs(pe[0] - 0.5 / (4 * A)) < 1e-7;
        for (int i = 0; i < 2 * A; i++) ok &= dc[i] == 0;
        report(ok, "loss: mining with no positive keeps no anchor (class loss 0, zero class gradient)");
    }

    /* batch: metrics, determinism across thread counts */
    {
        lcase c = lcase_new(6, 500, 2);
        lcase_random(&c, 1);
        int N = c.N, A = c.A;
        float *pe1 = NEWF(N), *pe2 = NEWF(N), *dc1 = NEWF(N * A * 2), *dc2 = NEWF(N * A * 2);
        float *db1 = NEWF(N * 4 * A), *db2 = NEWF(N * 4 * A);
        float *scr = NEWF(ssd_loss_scratch_floats(N, A, 2));
        double m1[4], m2[4];
        ssd_loss_config_t cfg = def;
        cfg.negative_mining_ratio = 3;
        set_threads(1);
        ssd_multibox_loss(&cfg, N, A, 2, c.cls, c.bbox, c.lab, c.blab, c.bmask, pe1, dc1, db1, m1, scr);
        set_threads(4);
        ssd_multibox_loss(&cfg, N, A, 2, c.cls, c.bbox, c.lab, c.blab, c.bmask, pe2, dc2, db2, m2, scr);
        report(!memcmp(pe1, pe2, sizeof(float) * N) && !memcmp(dc1, dc2, sizeof(float) * N * A * 2) &&
                  !memcmp(db1, db2, sizeof(float) * N * 4 * A) && !memcmp(m1, m2, sizeof m1),
              "loss: bit-identical results with 1 and 4 threads (6 images, mining)");
        double corr = 0, abss = 0;
        for (int i = 0; i < N * A; i++) {
            int am = c.cls[2 * i + 1] > c.cls[2 * i] ? 1 : 0;
            corr += am == (int)c.lab[i];
        }
        for (int i = 0; i < N * 4 * A; i++) abss += fabs(((double)c.blab[i] - c.bbox[i]) * c.bmask[i]);
        report(m1[0] == corr && m1[1] == N * A && fabs(m1[2] - abss) < 1e-4 && m1[3] == 4.0 * N * A,
              "loss: batch metrics (correct %g / %g, abs sum %.4f / %g)", m1[0], m1[1], m1[2], m1[3]);
        free(pe1); free(pe2); free(dc1); free(dc2); free(db1); free(db2); free(scr);
        lcase_free(&c);
    }
}

int main(void)
{
    test_softmax();
    test_target();
    test_detection();
    test_loss();
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail > 0 ? 1 : 0;
}
