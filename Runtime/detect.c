/*
 * detect.c — row softmax and d2l's multibox_detection (SPEC section 6).
 *
 * What is computed (the speed-ups below change no output bit):
 *  - Box decoding and IoU are float32 and follow the operation order of d2l's PyTorch code
 *    (offset_inverse, box_center_to_corner, box_iou) with FP contraction off, so that IoU
 *    ties and threshold comparisons come out as they do in PyTorch. The test is
 *    `inter / union <= nms_threshold` with the division (inter <= thr * union would round
 *    differently); a NaN IoU fails it, as in d2l.
 *  - conf/class of an anchor: the first maximum over classes 1..ncls-1 (torch.max returns the
 *    first maximal index); class ids are 0-based among the non-background classes. If
 *    ncls < 2 there is no foreground class: conf = 0, class 0 (then turned to -1 by
 *    pos_threshold as any low-confidence row). The class is only needed for kept rows and is
 *    computed when they are written.
 *  - Ordering: d2l uses torch.argsort(descending=True), which is not stable. We sort stably
 *    by descending conf, ties broken by the lower anchor index, so the output is fully
 *    determined.
 *  - NMS: walking that order, a candidate is kept iff its IoU with every box kept so far is
 *    <= nms_threshold. This is exactly d2l's while loop (which drops the boxes with
 *    IoU > threshold w.r.t. the current head).
 *  - Scratch: ssd_detection_scratch_floats(A) floats PER IMAGE (12 A + a grid of at most
 *    144 x 81); ssd_multibox_detection reads N times that (image n uses the n-th slice), so
 *    that images can run in parallel. Parts of the scratch hold int32/uint32.
 *
 * How it is made fast. For TinySSD (A = 5444, ~500 boxes kept per image) the literal version
 * took ~2.4 ms per image on one core, 80 % of it in NMS: ~1M IoUs per image, mostly
 * suppressed candidates scanning the kept list until they met a box that suppresses them.
 * Now ~0.26 ms (decode 0.05 of which libm expf ~0.04, sort 0.04, NMS 0.15, rows 0.02).
 *  - Whether a candidate is kept is an AND over all kept boxes, so the order in which they
 *    are tested changes only the time, never the answer; nothing is skipped: a candidate is
 *    kept only after being tested against every kept box.
 *    Step 1 (a guess): each kept box is also copied into the cells of a G x G grid (G <= 12,
 *    over the range of the box centres) within reach of its centre, reach = 0.5 (1 - thr) /
 *    (1 + thr) of its size (a box of the same size shifted by more than (1 - thr) / (1 + thr)
 *    of it has IoU <= thr); up to 16 per cell. A candidate tests the boxes in the cell of its
 *    own centre: that finds a suppressing box for ~87 % of the candidates.
 *    Step 2: the others are tested against all kept boxes, stored as structure of arrays
 *    (x0[], y0[], x1[], y1[], area[]) and scanned 8 at a time with early exit.
 *    Step 1 runs for a batch of 32 candidates at once, against the boxes kept before the
 *    batch (a subset of those kept when the candidate's turn comes: if they suppress it, so
 *    do those), then step 2 walks the batch in order. Done one candidate at a time, the
 *    branches that wait for an IoU division and mispredict serialised the candidates and
 *    cost more than the IoUs themselves.
 *  - AVX2 (#if __AVX2__), 8 kept boxes per IoU: vmaxps(a, b) is exactly a > b ? a : b and
 *    vminps(a, b) a < b ? a : b (NaN and -0 included), sub/mul/add/div are IEEE, with the
 *    operands in the order of the scalar iou_f, and _CMP_NLE_UQ is !(<=): every lane equals
 *    iou_f's decision. Lanes past the kept count are not loaded (masked loads) or masked off.
 *    Box decoding does two anchors per vector in their [x0 y0 x1 y1] layout, each used lane
 *    with the scalar expression's operations and operand order; expf stays the libm call
 *    (in its own loop), since its result must stay libm's. Without AVX2 the same algorithm
 *    runs with the scalar iou_f and scalar decoding: the same results.
 *  - Sort: LSD radix sort (digits of 11, 11 and 10 bits) of the anchor indices by keys that
 *    order like the floats, descending (-0 made +0: `>` sees them equal). Stable and started
 *    from index order, so it equals the stable merge sort, which is still used if some conf
 *    is NaN (no order; its result then is what it always was).
 * Runtime/tests/test_ssd_ops.c compares this bit for bit with a literal float32 version
 * (random, trained-like, tied, hostile NaN/inf/-0 inputs, thresholds, sizes 1..5444).
 */
#include "ssd_runtime.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

_Static_assert(sizeof(int32_t) == sizeof(float), "int32 indices share float scratch");

/* ---- softmax -------------------------------------------------------------------------- */

/* y may equal x (in place). Sum accumulated in double. */
void ssd_softmax_rows(int rows, int cols, const float *x, float *y)
{
    if (rows <= 0 || cols <= 0) return;
#pragma omp parallel for schedule(static) if ((int64_t)rows * cols >= 65536) num_threads(ssd_get_num_threads())
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

/* ---- stable sorts by descending key --------------------------------------------------- */

/* Sorts idx[0..n) so that key[idx[.]] is non-increasing; equal keys keep their input order
 * (bottom-up merge sort, tmp has n slots). Used only when some key is NaN: it defines the
 * order the results have always had in that case. */
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

/* order[0..n) = 0..n-1 sorted by descending conf, ties by ascending index: for NaN-free conf
 * the same result as sort_desc_stable on the identity. LSD radix sort (digits of 11, 11 and
 * 10 bits; a pass whose digit is the same for all keys is skipped) of the indices on keys
 * that order like the floats, descending. key and tmp have n slots. Returns 0 (order
 * untouched) if some conf is NaN. */
static int radix_sort_desc(const float *conf, int32_t *order, uint32_t *key, int32_t *tmp, int n)
{
    uint32_t h0[2048], h1[2048], h2[1024];
    memset(h0, 0, sizeof h0);
    memset(h1, 0, sizeof h1);
    memset(h2, 0, sizeof h2);
    for (int i = 0; i < n; i++) {
        float c = conf[i];
        if (c != c) return 0;
        uint32_t u;
        memcpy(&u, &c, sizeof u);
        if ((u & 0x7FFFFFFFu) == 0) u = 0;              /* -0 == +0 */
        u = (u & 0x80000000u) ? ~u : (u | 0x80000000u); /* ascending unsigned order */
        u = ~u;                                          /* descending */
        key[i] = u;
        h0[u & 0x7FF]++;
        h1[(u >> 11) & 0x7FF]++;
        h2[u >> 22]++;
    }
    uint32_t *hs[3] = {h0, h1, h2};
    const int shift[3] = {0, 11, 22}, nb[3] = {2048, 2048, 1024};
    const int32_t *src = NULL; /* NULL: the identity */
    int32_t *bufs[2] = {order, tmp};
    int cur = 0;
    for (int p = 0; p < 3; p++) {
        uint32_t *h = hs[p];
        const uint32_t mask = (uint32_t)nb[p] - 1;
        if (h[(key[0] >> shift[p]) & mask] == (uint32_t)n) continue; /* one digit value */
        uint32_t sum = 0;
        for (int b = 0; b < nb[p]; b++) {
            uint32_t c = h[b];
            h[b] = sum;
            sum += c;
        }
        int32_t *dst = bufs[cur];
        if (src) {
            for (int i = 0; i < n; i++) {
                int32_t v = src[i];
                dst[h[(key[v] >> shift[p]) & mask]++] = v;
            }
        } else {
            for (int i = 0; i < n; i++) dst[h[(key[i] >> shift[p]) & mask]++] = i;
        }
        src = dst;
        cur ^= 1;
    }
    if (!src) {
        for (int i = 0; i < n; i++) order[i] = i;
    } else if (src != order) {
        memcpy(order, src, (size_t)n * sizeof(int32_t));
    }
    return 1;
}

/* ---- detection ------------------------------------------------------------------------ */

/* Step 1 grid (a lookup heuristic): G x G cells over the range of the box centres,
 * G = min(DET_GRID_MAX, floor(sqrt(A / 4))), none below 64 anchors. A cell holds copies of
 * up to DET_CELL_CAP kept boxes (as x0[CAP] y0[CAP] x1[CAP] y1[CAP] area[CAP]) plus a count. */
#define DET_GRID_MAX 12
#define DET_CELL_CAP 16
#define DET_CELL_FLOATS (5 * DET_CELL_CAP)
#define DET_MAX_CELLS 64  /* a kept box registered in more cells: only in its centre cell */
#define DET_REACH_SCALE 0.5f
#define DET_REACH_MIN 0.02f
#define DET_REACH_MAX 0.25f
#define DET_BATCH 32      /* candidates per batch of step 1 */

static int det_grid(int A)
{
    if (A < 64) return 0;
    int g = 1;
    while (g < DET_GRID_MAX && 4 * (g + 1) * (g + 1) <= A) g++;
    return g;
}

size_t ssd_detection_scratch_floats(int A)
{
    if (A <= 0) return 0;
    size_t g = (size_t)det_grid(A);
    /* conf, 4 box, order, keep, kept boxes 5: 12A; step 1 grid: count + cell per cell */
    return (size_t)12 * A + g * g * (1 + DET_CELL_FLOATS);
}

#if !defined(__AVX2__)
/* IoU as d2l's box_iou: intersection clamped at 0, union = (area1 + area2) - inter.
 * b1 = kept box, b2 = candidate (iou8_over does the same, operand for operand). */
static inline float iou_f(float b1x0, float b1y0, float b1x1, float b1y1, float area1,
                          float b2x0, float b2y0, float b2x1, float b2y1, float area2)
{
    float ulx = b1x0 > b2x0 ? b1x0 : b2x0;
    float uly = b1y0 > b2y0 ? b1y0 : b2y0;
    float lrx = b1x1 < b2x1 ? b1x1 : b2x1;
    float lry = b1y1 < b2y1 ? b1y1 : b2y1;
    float iw = lrx - ulx, ih = lry - uly;
    if (iw < 0.0f) iw = 0.0f;
    if (ih < 0.0f) ih = 0.0f;
    float inter = iw * ih;
    float uni = (area1 + area2) - inter;
    return inter / uni;
}

/* 1 iff one of the n boxes stored as x0[] y0[] x1[] y1[] area[] (stride st between the
 * arrays) has !(IoU(box, candidate) <= thr). */
static int group_suppresses_scalar(const float *g, size_t st, int n, float x0, float y0,
                                          float x1, float y1, float area, float thr)
{
    for (int q = 0; q < n; q++)
        if (!(iou_f(g[q], g[st + q], g[2 * st + q], g[3 * st + q], g[4 * st + q], x0, y0, x1, y1,
                    area) <= thr))
            return 1;
    return 0;
}
#endif

#if defined(__AVX2__)
/* the candidate, broadcast */
typedef struct {
    __m256 x0, y0, x1, y1, area, thr;
} cand8;

static inline cand8 cand8_make(float x0, float y0, float x1, float y1, float area, float thr)
{
    cand8 c = {_mm256_set1_ps(x0), _mm256_set1_ps(y0), _mm256_set1_ps(x1), _mm256_set1_ps(y1),
               _mm256_set1_ps(area), _mm256_set1_ps(thr)};
    return c;
}

/* lanes 0..n-1 (n <= 8) of 8 boxes stored as x0[] y0[] x1[] y1[] area[] (stride st): bit i of
 * the result is !(IoU(box i, candidate) <= thr). The same operations with the same operands
 * in the same order as iou_f: vmaxps(a, b) = a > b ? a : b and vminps(a, b) = a < b ? a : b
 * (NaN and -0 included), exact IEEE sub/mul/add/div, _CMP_NLE_UQ = !(<=). Lanes >= n are
 * not read (masked loads). */
static inline int iou8_over(const float *g, size_t st, int n, const cand8 *c)
{
    const __m256 z = _mm256_setzero_ps();
    __m256 kx0, ky0, kx1, ky1, ka;
    if (n >= 8) {
        kx0 = _mm256_loadu_ps(g);
        ky0 = _mm256_loadu_ps(g + st);
        kx1 = _mm256_loadu_ps(g + 2 * st);
        ky1 = _mm256_loadu_ps(g + 3 * st);
        ka = _mm256_loadu_ps(g + 4 * st);
    } else {
        const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        kx0 = _mm256_maskload_ps(g, m);
        ky0 = _mm256_maskload_ps(g + st, m);
        kx1 = _mm256_maskload_ps(g + 2 * st, m);
        ky1 = _mm256_maskload_ps(g + 3 * st, m);
        ka = _mm256_maskload_ps(g + 4 * st, m);
    }
    __m256 ulx = _mm256_max_ps(kx0, c->x0);
    __m256 uly = _mm256_max_ps(ky0, c->y0);
    __m256 lrx = _mm256_min_ps(kx1, c->x1);
    __m256 lry = _mm256_min_ps(ky1, c->y1);
    __m256 iw = _mm256_max_ps(z, _mm256_sub_ps(lrx, ulx)); /* 0 > iw ? 0 : iw */
    __m256 ih = _mm256_max_ps(z, _mm256_sub_ps(lry, uly));
    __m256 inter = _mm256_mul_ps(iw, ih);
    __m256 uni = _mm256_sub_ps(_mm256_add_ps(ka, c->area), inter);
    __m256 iou = _mm256_div_ps(inter, uni);
    int bits = _mm256_movemask_ps(_mm256_cmp_ps(iou, c->thr, _CMP_NLE_UQ));
    return n >= 8 ? bits : bits & ((1 << n) - 1);
}
#endif

/* grid index of coordinate v: floor((v - org) * scale) clamped to [0, G) (NaN -> 0) */
static inline int grid_index(float v, float org, float scale, int G)
{
    float g = (v - org) * scale;
    if (!(g >= 0.0f)) return 0;
    return g < (float)G ? (int)g : G - 1;
}

/* d2l's offset_inverse + box_center_to_corner for all anchors into boxes (A x 4 corners), and
 * the range of the box centres (NaN ignored; for the lookup grids only). */
static void decode_boxes(int A, const float *off, const float *anchors, float *boxes,
                         float range[4])
{
    float cmin = INFINITY, cmax = -INFINITY, rmin = INFINITY, rmax = -INFINITY;
    int a = 0;
#if defined(__AVX2__)
    /* two anchors per vector, in their layout [x0 y0 x1 y1 | x0 y0 x1 y1]; each lane that is
     * used computes the scalar expression below with the same operands in the same order.
     * expf stays the libm call (in a separate pass, so that no vector lives across it). */
    const int A2 = A & ~1;
    for (size_t k = 0; k < (size_t)4 * A2; k += 4) { /* boxes[k+2..3] = expf(o[k+2..3] / 5) */
        boxes[k + 2] = expf(off[k + 2] / 5.0f);
        boxes[k + 3] = expf(off[k + 3] / 5.0f);
    }
    const __m256 two = _mm256_set1_ps(2.0f), ten = _mm256_set1_ps(10.0f);
    const __m256 half = _mm256_set1_ps(0.5f);
    __m256 vmin = _mm256_set1_ps(INFINITY), vmax = _mm256_set1_ps(-INFINITY);
    for (; a < A2; a += 2) {
        __m256 an = _mm256_loadu_ps(anchors + (size_t)4 * a);
        __m256 o = _mm256_loadu_ps(off + (size_t)4 * a);
        __m256 sw = _mm256_permute_ps(an, _MM_SHUFFLE(1, 0, 3, 2));         /* x1 y1 x0 y0 */
        __m256 ac = _mm256_div_ps(_mm256_add_ps(an, sw), two);               /* 0,1: acx acy */
        __m256 d = _mm256_sub_ps(sw, an);                                    /* 0,1: aw ah */
        __m256 c = _mm256_add_ps(_mm256_div_ps(_mm256_mul_ps(o, d), ten), ac); /* 0,1: cx cy */
        __m256 dd = _mm256_permute_ps(d, _MM_SHUFFLE(1, 0, 3, 2));          /* 2,3: aw ah */
        __m256 e = _mm256_loadu_ps(boxes + (size_t)4 * a);                   /* 2,3: exps */
        __m256 hw = _mm256_mul_ps(half, _mm256_mul_ps(e, dd));               /* 2,3: .5w .5h */
        __m256 cc = _mm256_permute_ps(c, _MM_SHUFFLE(1, 0, 1, 0));          /* cx cy cx cy */
        __m256 hh = _mm256_permute_ps(hw, _MM_SHUFFLE(3, 2, 3, 2));         /* .5w .5h .5w .5h */
        __m256 b = _mm256_blend_ps(_mm256_sub_ps(cc, hh), _mm256_add_ps(cc, hh), 0xCC);
        _mm256_storeu_ps(boxes + (size_t)4 * a, b);
        vmin = _mm256_min_ps(c, vmin); /* c < vmin ? c : vmin: NaN ignored */
        vmax = _mm256_max_ps(c, vmax);
    }
    float mn[8], mx[8];
    _mm256_storeu_ps(mn, vmin);
    _mm256_storeu_ps(mx, vmax);
    cmin = mn[0] < mn[4] ? mn[0] : mn[4];
    cmax = mx[0] > mx[4] ? mx[0] : mx[4];
    rmin = mn[1] < mn[5] ? mn[1] : mn[5];
    rmax = mx[1] > mx[5] ? mx[1] : mx[5];
#endif
    for (; a < A; a++) {
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
        if (cx < cmin) cmin = cx;
        if (cx > cmax) cmax = cx;
        if (cy < rmin) rmin = cy;
        if (cy > rmax) rmax = cy;
    }
    range[0] = cmin;
    range[1] = cmax;
    range[2] = rmin;
    range[3] = rmax;
}

/* scale of a grid of g cells over [lo, hi]; 0 (everything in cell 0) if degenerate */
static inline float grid_scale(int g, float lo, float hi)
{
    float sc = hi > lo ? (float)g / (hi - lo) : 0.0f;
    return sc < INFINITY ? sc : 0.0f;
}

/* 1 iff one of the n kept boxes stored as x0[] y0[] x1[] y1[] area[] (stride st between
 * the arrays) has !(IoU(box, candidate) <= thr); stops at the first one (8 at a time). */
static int kept_suppress(const float *k, size_t st, int n, float x0, float y0, float x1,
                         float y1, float area, float thr)
{
#if defined(__AVX2__)
    const cand8 c = cand8_make(x0, y0, x1, y1, area, thr);
    for (int q = 0; q < n; q += 8)
        if (iou8_over(k + q, st, n - q, &c)) return 1;
    return 0;
#else
    return group_suppresses_scalar(k, st, n, x0, y0, x1, y1, area, thr);
#endif
}

static void detect_one(int A, int ncls, const float *probs, const float *off,
                       const float *anchors, float nms_threshold, float pos_threshold,
                       float *out, float *s)
{
    /* scratch (floats): conf A | boxes 4A | order A (after NMS: kept flags) | keep A |
     * kept boxes x0[A] y0[A] x1[A] y1[A] area[A] (before NMS: the sort's 2A slots) |
     * step 1 grid: counts G^2 | cells G^2 * DET_CELL_FLOATS */
    const int G = det_grid(A);
    float *conf = s;
    float *boxes = s + (size_t)A;
    int32_t *order = (int32_t *)(s + (size_t)5 * A);
    int32_t *keep = (int32_t *)(s + (size_t)6 * A);
    float *K = s + (size_t)7 * A;
    const size_t st = (size_t)A;
    int32_t *ccnt = (int32_t *)(s + (size_t)12 * A);
    float *cells = s + (size_t)12 * A + (size_t)G * G;

    if (ncls == 2) {
        for (int a = 0; a < A; a++) conf[a] = probs[2 * (size_t)a + 1];
    } else {
        for (int a = 0; a < A; a++) {
            const float *p = probs + (size_t)a * ncls;
            float best = 0.0f;
            if (ncls >= 2) {
                best = p[1];
                for (int c = 2; c < ncls; c++)
                    if (p[c] > best) best = p[c];
            }
            conf[a] = best;
        }
    }
    float range[4]; /* min cx, max cx, min cy, max cy */
    decode_boxes(A, off, anchors, boxes, range);
    float cmin = range[0] < INFINITY ? range[0] : 0.0f, rmin = range[2] < INFINITY ? range[2] : 0.0f;

    if (!radix_sort_desc(conf, order, (uint32_t *)K, (int32_t *)K + A, A)) {
        for (int a = 0; a < A; a++) order[a] = a;
        sort_desc_stable(conf, order, (int32_t *)K, A);
    }

    const float gsx = grid_scale(G, range[0], range[1]), gsy = grid_scale(G, range[2], range[3]);
    if (G > 0) {
        memset(ccnt, 0, (size_t)G * G * sizeof(int32_t));
        memset(cells, 0, (size_t)G * G * DET_CELL_FLOATS * sizeof(float)); /* no garbage lanes */
    }

    const float thr = nms_threshold;
    /* step 1 reach: two boxes of the same size shifted by d along x have IoU
     * (w - d) / (w + d) > thr iff d < w (1 - thr) / (1 + thr); a fraction of it */
    float reach = DET_REACH_SCALE * (1.0f - thr) / (1.0f + thr);
    if (!(reach >= DET_REACH_MIN)) reach = DET_REACH_MIN;
    if (!(reach <= DET_REACH_MAX)) reach = DET_REACH_MAX;
    int nkeep = 0;
    for (int t0 = 0; t0 < A; t0 += DET_BATCH) {
        const int nb = A - t0 < DET_BATCH ? A - t0 : DET_BATCH;
        float bx0[DET_BATCH], by0[DET_BATCH], bx1[DET_BATCH], by1[DET_BATCH], bar[DET_BATCH];
        int near[DET_BATCH];
        for (int i = 0; i < nb; i++) {
            const float *bj = boxes + (size_t)4 * order[t0 + i];
            bx0[i] = bj[0];
            by0[i] = bj[1];
            bx1[i] = bj[2];
            by1[i] = bj[3];
            bar[i] = (bj[2] - bj[0]) * (bj[3] - bj[1]); /* box area as in d2l */
            near[i] = 0;
        }
        /* step 1, for the whole batch against the boxes kept before it (so that no branch
         * waits for the IoU of the previous candidate): the kept boxes registered in the
         * cell of the candidate's centre */
        if (G > 0 && nkeep > 0) {
            for (int i = 0; i < nb; i++) {
                int c = grid_index(0.5f * (by0[i] + by1[i]), rmin, gsy, G) * G +
                        grid_index(0.5f * (bx0[i] + bx1[i]), cmin, gsx, G);
                const float *cell = cells + (size_t)c * DET_CELL_FLOATS;
#if defined(__AVX2__)
                const cand8 cd = cand8_make(bx0[i], by0[i], bx1[i], by1[i], bar[i], thr);
                int m = 0;
                for (int v = 0; v < DET_CELL_CAP; v += 8) { /* no branch on the count */
                    int lanes = ccnt[c] - v;
                    lanes = lanes < 0 ? 0 : lanes > 8 ? 8 : lanes;
                    m |= iou8_over(cell + v, DET_CELL_CAP, 8, &cd) & ((1 << lanes) - 1);
                }
                near[i] = m != 0;
#else
                near[i] = group_suppresses_scalar(cell, DET_CELL_CAP, ccnt[c], bx0[i], by0[i],
                                                  bx1[i], by1[i], bar[i], thr);
#endif
            }
        }
        /* step 2, in order: a candidate suppressed in step 1 is suppressed by a subset of the
         * boxes kept now; any other is tested against all boxes kept so far */
        for (int i = 0; i < nb; i++) {
            if (near[i]) continue;
            const float x0 = bx0[i], y0 = by0[i], x1 = bx1[i], y1 = by1[i], aj = bar[i];
            if (kept_suppress(K, st, nkeep, x0, y0, x1, y1, aj, thr)) continue;
            K[nkeep] = x0;
            K[st + nkeep] = y0;
            K[2 * st + nkeep] = x1;
            K[3 * st + nkeep] = y1;
            K[4 * st + nkeep] = aj;
            keep[nkeep++] = order[t0 + i];
            if (G > 0) {
                /* into the step 1 cells where a candidate that this box suppresses likely has
                 * its centre: centre +- reach * size (a full cell skips it) */
                const float mx = 0.5f * (x0 + x1), my = 0.5f * (y0 + y1);
                const float rx = reach * (x1 - x0), ry = reach * (y1 - y0);
                int gx0 = grid_index(mx - rx, cmin, gsx, G), gx1 = grid_index(mx + rx, cmin, gsx, G);
                int gy0 = grid_index(my - ry, rmin, gsy, G), gy1 = grid_index(my + ry, rmin, gsy, G);
                if (!(gx1 >= gx0 && gy1 >= gy0 && (gx1 - gx0 + 1) * (gy1 - gy0 + 1) <= DET_MAX_CELLS)) {
                    gx0 = gx1 = grid_index(mx, cmin, gsx, G);
                    gy0 = gy1 = grid_index(my, rmin, gsy, G);
                }
                for (int gy = gy0; gy <= gy1; gy++)
                    for (int gx = gx0; gx <= gx1; gx++) {
                        int c = gy * G + gx;
                        if (ccnt[c] >= DET_CELL_CAP) continue;
                        float *cell = cells + (size_t)c * DET_CELL_FLOATS;
                        int k = ccnt[c]++;
                        cell[k] = x0;
                        cell[DET_CELL_CAP + k] = y0;
                        cell[2 * DET_CELL_CAP + k] = x1;
                        cell[3 * DET_CELL_CAP + k] = y1;
                        cell[4 * DET_CELL_CAP + k] = aj;
                    }
            }
        }
    }

    /* kept flags (the order is no longer needed) */
    int32_t *kept = order;
    memset(kept, 0, (size_t)A * sizeof(int32_t));
    for (int t = 0; t < nkeep; t++) kept[keep[t]] = 1;

    /* rows: kept anchors in NMS order, then the others in ascending anchor index */
    int r = 0;
    for (int t = 0; t < A; t++) {
        int j;
        int c = -1;
        if (t < nkeep) {
            j = keep[t];
            c = 0; /* class: the first max over classes 1..ncls-1, as for conf */
            const float *p = probs + (size_t)j * ncls;
            if (ncls >= 2) {
                float best = p[1];
                for (int k = 2; k < ncls; k++)
                    if (p[k] > best) { best = p[k]; c = k - 1; }
            }
        } else {
            while (kept[r]) r++;
            j = r++;
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
#pragma omp parallel for schedule(dynamic, 1) if (N > 1) num_threads(ssd_get_num_threads())
    for (int n = 0; n < N; n++) {
        detect_one(A, ncls, probs + (size_t)n * A * ncls, bbox_preds + (size_t)n * 4 * A,
                   anchors, nms_threshold, pos_threshold, out + (size_t)n * 6 * A,
                   scratch + (size_t)n * per);
    }
}
