/*
 * ssd_runtime.h — the hand-written C runtime that every model compiled by ssdc links.
 *
 * The emitted model.c generates the cheap elementwise / layout loops itself and calls
 * these functions for the heavy or irregular work: GEMM-based convolutions, batch-norm
 * reductions, pooling, and the SSD-specific ops (detection with NMS, anchor labelling,
 * losses, SGD).
 *
 * Conventions
 *  - Plain C11 + OpenMP. Tensors are float32, row-major, NCHW for images and feature maps.
 *  - Functions never allocate, print or exit. Work memory is passed in as `scratch`, with a
 *    matching *_scratch_floats() query so the compiler's memory planner can reserve it.
 *  - Results do not depend on thread timing: parallel loops split independent outputs,
 *    never a reduction across threads, so the same inputs give bit-identical outputs for a
 *    given thread count (and, where cheap, for any thread count).
 *  - Convolutions are square-kernel 2-D: weight layout OIHW (O, C, k, k), symmetric padding.
 */
#ifndef SSD_RUNTIME_H
#define SSD_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- threads -------------------------------------------------------------------------- */

/* Sets the OpenMP thread count used by every kernel (n <= 0 leaves the default). */
void ssd_set_num_threads(int n);
/* Inside an active OpenMP parallel region (one image per thread, see the generated
 * *_by_image routes) this is 1: the kernels then run serially on the calling thread. */
int ssd_get_num_threads(void);

/* A 64-byte-aligned buffer of at least `bytes`, kept by the runtime between calls (grown,
 * never shrunk) for the generated code's per-thread workspaces. NULL if memory runs out.
 * One host thread at a time. */
void *ssd_thread_workspace(size_t bytes);

/* Whether eval programs may run one image per thread (the generated *_by_image routes):
 * 1 unless SSDC_BY_IMAGE=0 is in the environment (read once), to compare with the batched route. */
int ssd_by_image_enabled(void);

/* The instruction set of the GEMM micro-kernel this runtime was built with: "avx512" (4 x 48),
 * "avx2" (4 x 24) or "portable" (plain C), chosen at build time from the compiler's target. */
const char *ssd_runtime_isa(void);

/* ---- GEMM ----------------------------------------------------------------------------- */

/* C = alpha * op(A) * op(B) + beta * C, row-major. op(A) is M x K, op(B) is K x N.
 * transA != 0 means A is stored K x M (lda is its row stride); likewise transB.
 * beta == 0 overwrites C without reading it (NaNs in C are not propagated). */
void ssd_sgemm(int transA, int transB, int M, int N, int K, float alpha,
               const float *A, int lda, const float *B, int ldb, float beta,
               float *C, int ldc);

/* ---- convolution ---------------------------------------------------------------------- */

/* Geometry of one conv: input N x C x H x W, output N x O x OH x OW,
 * OH = (H + 2*pad - k) / stride + 1 (likewise OW). */
typedef struct {
    int N, C, H, W;   /* input */
    int O, k, stride, pad;
    int OH, OW;       /* output, filled by ssd_conv2d_geometry */
    /* Optional weights prepared by ssd_conv2d_prepare (NULL and 0 from ssd_conv2d_geometry):
     * prepared_floats floats at prepared, which the forward passes read instead of
     * transforming the weights on every call. */
    float *prepared;
    size_t prepared_floats;
} ssd_conv2d_t;

ssd_conv2d_t ssd_conv2d_geometry(int N, int C, int H, int W, int O, int k, int stride, int pad);

/* Weights prepared once for the forward of many calls (inference with fixed weights): the
 * Winograd transform of w, for the 3x3 stride-1 convs whose shape that path takes (at some
 * batch size). ssd_conv2d_prepared_floats: the floats it needs (0: nothing to prepare for
 * g). ssd_conv2d_prepare: writes them into g->prepared if g->prepared_floats holds them, and
 * says whether it did. The forward passes (ssd_conv2d_forward, _strided, _pool) then use
 * them where their Winograd path runs, with the same results as from w; call it again
 * whenever w changes, since they cannot tell. */
size_t ssd_conv2d_prepared_floats(const ssd_conv2d_t *g);
int ssd_conv2d_prepare(const ssd_conv2d_t *g, const float *w);

/* Floats of scratch the three conv functions need for this geometry (one size fits all),
 * at the thread count in effect (ssd_set_num_threads): the Winograd path keeps a block of
 * work per thread, so query again after raising the thread count. */
size_t ssd_conv2d_scratch_floats(const ssd_conv2d_t *g);

/* y = conv(x, w) + b; b may be NULL. If relu != 0, y = max(y, 0) (epilogue). */
void ssd_conv2d_forward(const ssd_conv2d_t *g, const float *x, const float *w, const float *b,
                        float *y, int relu, float *scratch);

/* Where a forward writes its output: element (n, o, p), p = oh*OW + ow, goes to
 * y[n*image + o*channel + p*pixel]. ssd_conv2d_nchw gives the plain NCHW layout
 * (O*OH*OW, OH*OW, 1); channels-last into a row of a wider buffer, as the SSD heads write
 * into their concatenated predictions, is (row, 1, O). */
typedef struct {
    size_t image, channel, pixel;
} ssd_conv2d_out_t;

ssd_conv2d_out_t ssd_conv2d_nchw(const ssd_conv2d_t *g);

/* ssd_conv2d_forward writing in the layout *ld (elements outside it are not touched). */
void ssd_conv2d_forward_strided(const ssd_conv2d_t *g, const float *x, const float *w,
                                const float *b, float *y, const ssd_conv2d_out_t *ld, int relu,
                                float *scratch);

/* Two convolutions of the same input and geometry as one (a scale's class and box heads):
 * g->O = O1 + O2 output channels; channels [0, O1) are conv(x, w1) + b1 written to y1 in
 * layout *ld1, channels [O1, O) are conv(x, w2) + b2 written to y2 in *ld2. Each output is
 * bit for bit what ssd_conv2d_forward_strided gives for its own conv. b1, b2 may be NULL.
 * Scratch: ssd_conv2d_pair_scratch_floats(g) floats. */
size_t ssd_conv2d_pair_scratch_floats(const ssd_conv2d_t *g);
void ssd_conv2d_forward_pair(const ssd_conv2d_t *g, int O1, const float *x, const float *w1,
                             const float *b1, float *y1, const ssd_conv2d_out_t *ld1,
                             const float *w2, const float *b2, float *y2,
                             const ssd_conv2d_out_t *ld2, float *scratch);

/* The backward of a pair (O = O1 + O2 channels in g): dx = conv_transpose(dy1, w1) +
 * conv_transpose(dy2, w2) in one pass (dx may be NULL: not computed), and dw1, db1, dw2, db2
 * as ssd_conv2d_backward_weight gives them for each conv (db1, db2 may be NULL). dy1, dy2
 * are NCHW. Scratch: ssd_conv2d_pair_backward_scratch_floats(g) floats. */
size_t ssd_conv2d_pair_backward_scratch_floats(const ssd_conv2d_t *g);
void ssd_conv2d_backward_pair(const ssd_conv2d_t *g, int O1, const float *x, const float *w1,
                              const float *dy1, float *dw1, float *db1, const float *w2,
                              const float *dy2, float *dw2, float *db2, float *dx,
                              float *scratch);

/* y = 2x2 max pool (ssd_maxpool2_forward) of conv(x, w) + b (then ReLU if relu != 0),
 * N x O x OH/2 x OW/2, bit for bit what ssd_conv2d_forward followed by ssd_maxpool2_forward
 * give, without the full-size output ever being written (where the Winograd path runs,
 * the pool is taken on each 2x2 output tile in registers; otherwise one image at a time
 * through scratch). Scratch: ssd_conv2d_pool_scratch_floats(g) floats. */
size_t ssd_conv2d_pool_scratch_floats(const ssd_conv2d_t *g);
void ssd_conv2d_forward_pool(const ssd_conv2d_t *g, const float *x, const float *w,
                             const float *b, float *y, int relu, float *scratch);

/* dx = conv_transpose(dy, w) (overwrites dx). */
void ssd_conv2d_backward_data(const ssd_conv2d_t *g, const float *dy, const float *w,
                              float *dx, float *scratch);

/* dw = sum_n dy_n (*) x_n (overwrites dw); db (may be NULL) = sum over N, OH, OW of dy. */
void ssd_conv2d_backward_weight(const ssd_conv2d_t *g, const float *x, const float *dy,
                                float *dw, float *db, float *scratch);

/* ---- batch norm (per channel over N, H, W; HW = H*W) ----------------------------------- */

/* Batch mean and biased variance of each channel (accumulated in double). */
void ssd_bn_stats(int N, int C, int HW, const float *x, float *mean, float *var);

/* y = gamma * (x - mean) / sqrt(var + eps) + beta, then ReLU if relu != 0.
 * Used with batch statistics in training and running statistics in evaluation. */
void ssd_bn_apply(int N, int C, int HW, const float *x, const float *mean, const float *var,
                  const float *gamma, const float *beta, float eps, int relu, float *y);

/* running = (1 - momentum) * running + momentum * batch, running_var from the unbiased
 * variance var * count / (count - 1) (count = N*H*W; count == 1 keeps var as is). */
void ssd_bn_update_running(int C, const float *mean, const float *var, int64_t count,
                           float momentum, float *running_mean, float *running_var);

/* Backward of training-mode BN (batch statistics), optionally through a ReLU that followed
 * it: if y != NULL, dy is masked by (y > 0) first. Writes dx, dgamma, dbeta (overwrite). */
void ssd_bn_backward(int N, int C, int HW, const float *x, const float *mean, const float *var,
                     const float *gamma, float eps, const float *y, const float *dy,
                     float *dx, float *dgamma, float *dbeta);

/* The same through the ReLU, without reading its output: the mask y > 0 is recomputed from
 * x with the coefficients ssd_bn_apply and ssd_bn_apply_relu_maxpool2 use (so the same bits
 * as ssd_bn_backward(..., y, ...) with their y; one tensor fewer read, twice). */
void ssd_bn_relu_backward(int N, int C, int HW, const float *x, const float *mean,
                          const float *var, const float *gamma, const float *beta, float eps,
                          const float *dy, float *dx, float *dgamma, float *dbeta);

/* ---- pooling -------------------------------------------------------------------------- */

/* 2x2 max pool, stride 2 (H, W even or odd; the last odd row/column is dropped, as
 * PyTorch's MaxPool2d(2)). y is N x C x H/2 x W/2. */
void ssd_maxpool2_forward(int N, int C, int H, int W, const float *x, float *y);
/* dx (N x C x H x W, overwritten): dy routed to the first max of each window
 * (row-major order within the window, as PyTorch). */
void ssd_maxpool2_backward(int N, int C, int H, int W, const float *x, const float *dy,
                           float *dx);

/* Global max over H x W: y is N x C. */
void ssd_global_maxpool_forward(int N, int C, int HW, const float *x, float *y);
void ssd_global_maxpool_backward(int N, int C, int HW, const float *x, const float *dy,
                                 float *dx);

/* ---- SSD ops -------------------------------------------------------------------------- */

/* Softmax over the last axis of a rows x cols matrix (numerically stable; y may equal x). */
void ssd_softmax_rows(int rows, int cols, const float *x, float *y);

/* d2l's multibox_detection for a batch (SPEC section 6).
 * probs: N x A x ncls (ncls = q+1, class 0 = background), bbox_preds: N x 4A offsets,
 * anchors: A x 4 corners. out: N x A x 6 rows [class, conf, xmin, ymin, xmax, ymax].
 * NMS order: stable sort by descending conf, ties -> lower anchor index first.
 * scratch: ssd_detection_scratch_floats(A) is the size for ONE image; the function reads
 * N * ssd_detection_scratch_floats(A) floats (one slice per image, images run in parallel). */
size_t ssd_detection_scratch_floats(int A);
void ssd_multibox_detection(int N, int A, int ncls, const float *probs, const float *bbox_preds,
                            const float *anchors, float nms_threshold, float pos_threshold,
                            float *out, float *scratch);

/* d2l's multibox_target (SPEC section 3) for a batch. labels: N x G x 5 rows
 * [class, xmin, ymin, xmax, ymax] (class < 0 = padding row, ignored).
 * Outputs: bbox_labels N x 4A, bbox_masks N x 4A, cls_labels N x A (as float: 0 background,
 * c+1 for class c). scratch: ssd_target_scratch_floats(A, G) is the size for ONE image; the
 * function reads N * ssd_target_scratch_floats(A, G) floats (one slice per image). */
size_t ssd_target_scratch_floats(int A, int G);
void ssd_multibox_target(int N, int A, int G, const float *anchors, const float *labels,
                         float iou_threshold, float *bbox_labels, float *bbox_masks,
                         float *cls_labels, float *scratch);

/* Loss settings (SPEC sections 4 and 7). The defaults reproduce the chapter:
 * cross-entropy + L1, weights 1, no mining. */
typedef struct {
    int   focal;          /* 0: cross-entropy, 1: focal loss */
    float focal_gamma;    /* default 2 */
    float focal_alpha;    /* default 0.25 */
    int   smooth_l1;      /* 0: L1, 1: smooth L1 */
    float sigma;          /* smooth L1 sigma, default 1 */
    float cls_weight;     /* default 1 */
    float bbox_weight;    /* default 1 */
    float negative_mining_ratio; /* <= 0: off; else keep the hardest negatives, up to
                                    ratio * positives per image */
} ssd_loss_config_t;

ssd_loss_config_t ssd_loss_config_default(void);

/* Per-example loss and its gradient with respect to cls_preds (N x A x ncls) and
 * bbox_preds (N x 4A) of the batch-mean loss (d loss.mean / d preds).
 * per_example: N. Metrics over the batch, to be summed over an epoch:
 *   metrics[0] = number of anchors whose argmax class equals the label,
 *   metrics[1] = number of anchors,
 *   metrics[2] = sum |(bbox_labels - bbox_preds) * mask|,
 *   metrics[3] = number of bbox label entries (N * 4A).
 * metrics (may be NULL) are overwritten with this batch's values, not accumulated.
 * Hard negative mining with no positive in an image keeps no anchor: class loss 0 there.
 * scratch: ssd_loss_scratch_floats(N, A, ncls) (already covers all N images).
 * Gradient pointers may be NULL (no grad); cfg == NULL means ssd_loss_config_default(). */
size_t ssd_loss_scratch_floats(int N, int A, int ncls);
void ssd_multibox_loss(const ssd_loss_config_t *cfg, int N, int A, int ncls,
                       const float *cls_preds, const float *bbox_preds,
                       const float *cls_labels, const float *bbox_labels,
                       const float *bbox_masks, float *per_example,
                       float *dcls_preds, float *dbbox_preds, double *metrics,
                       float *scratch);

/* SGD as torch.optim.SGD(lr, weight_decay): p -= lr * (g + wd * p). */
void ssd_sgd_update(int64_t n, float *p, const float *g, float lr, float wd);

/* ---- fused kernels (fused.c) ------------------------------------------------------------ */

/* One pass of BN -> ReLU -> MaxPool2d(2) (inference or training with given statistics):
 * y = relu(gamma * (x - mean) / sqrt(var + eps) + beta), N x C x H x W, written in full
 * unless y == NULL; pooled (N x C x H/2 x W/2) = 2x2 / stride-2 max pool of y (PyTorch
 * floor semantics, first max / NaN wins as ssd_maxpool2_forward). Bit-identical to
 * ssd_bn_apply(..., relu = 1, y) followed by ssd_maxpool2_forward(y, pooled). */
void ssd_bn_apply_relu_maxpool2(int N, int C, int H, int W, const float *x, const float *mean,
                                const float *var, const float *gamma, const float *beta,
                                float eps, float *y, float *pooled);

/* Backward of [BN (batch statistics) -> ReLU -> MaxPool2d(2)] in one kernel. x is the BN
 * input, y = relu(BN(x)) the pooled tensor (N x C x H x W), dpooled the gradient of the
 * pooled output (N x C x H/2 x W/2). The gradient of y (dpooled routed to the first max of
 * each window of y, as ssd_maxpool2_backward) is masked by y > 0 and back-propagated
 * through BN as ssd_bn_backward, without being stored. Writes dx, dgamma, dbeta
 * (overwrite); bit-identical to ssd_maxpool2_backward + ssd_bn_backward(..., y, ...). */
void ssd_maxpool2_bn_relu_backward(int N, int C, int H, int W, const float *x,
                                   const float *mean, const float *var, const float *gamma,
                                   float eps, const float *y, const float *dpooled, float *dx,
                                   float *dgamma, float *dbeta);

/* The same without reading y: each pair of its rows is recomputed from x with the
 * coefficients ssd_bn_apply_relu_maxpool2 formed it with (beta is BN's shift), so the same
 * bits, and one tensor fewer read, twice. */
void ssd_maxpool2_bn_relu_backward_x(int N, int C, int H, int W, const float *x,
                                     const float *mean, const float *var, const float *gamma,
                                     const float *beta, float eps, const float *dpooled,
                                     float *dx, float *dgamma, float *dbeta);

/* ---- the SSD-family op vocabulary (conv_general.c, dwconv.c, pool_general.c, activation.c,
 * resize.c, l2norm.c, eltwise.c) ---------------------------------------------------------------
 * All NCHW float32, any batch N. Every function overwrites its outputs unless it says
 * "accumulates". Reductions over the batch or pixels (weight, bias and scale gradients) run
 * in a fixed order that depends on the shape only: results are the same for any thread count. */

/* Activation applied in a kernel's epilogue (after the bias). */
enum { SSD_ACT_NONE = 0, SSD_ACT_RELU = 1, SSD_ACT_RELU6 = 2 };

/* General 2-D convolution (PyTorch's Conv2d): kernel kh x kw, stride (sh, sw), zero padding
 * (ph, pw) on both sides, dilation (dh, dw), `groups` groups (C and O divisible by groups).
 * Weight layout (O, C/groups, kh, kw); bias (O) or NULL.
 * OH = (H + 2*ph - dh*(kh-1) - 1) / sh + 1 (floor), likewise OW. */
typedef struct {
    int N, C, H, W;
    int O, kh, kw, sh, sw, ph, pw, dh, dw, groups;
    int OH, OW;       /* filled by ssd_convg_geometry */
} ssd_convg_t;

ssd_convg_t ssd_convg_geometry(int N, int C, int H, int W, int O, int kh, int kw, int sh,
                               int sw, int ph, int pw, int dh, int dw, int groups);

/* Floats of scratch each of the three ssd_convg_* functions needs (one image's im2col of
 * one group: (C/groups)*kh*kw x OH*OW; 0 for a 1x1 / stride 1 / no padding conv, which reads
 * x directly). Independent of N and of the thread count. */
size_t ssd_convg_scratch_floats(const ssd_convg_t *g);

/* y = act(conv(x, w) + b); act is SSD_ACT_*. */
void ssd_convg_forward(const ssd_convg_t *g, const float *x, const float *w, const float *b,
                       float *y, int act, float *scratch);
/* dx = conv_transpose(dy, w). */
void ssd_convg_backward_data(const ssd_convg_t *g, const float *dy, const float *w, float *dx,
                             float *scratch);
/* dw = sum over images of dy (*) x (images in order); db (may be NULL) = sum of dy over
 * N, OH, OW per channel (double accumulation). */
void ssd_convg_backward_weight(const ssd_convg_t *g, const float *x, const float *dy,
                               float *dw, float *db, float *scratch);

/* Depthwise convolution by a direct kernel (no GEMM, no scratch): the ssd_convg_t geometry
 * with groups == C == O (weight (C, 1, kh, kw)); any kernel, stride, padding and dilation,
 * with 3x3 at stride 1 or 2 the case it is written for. ssd_dwconv_applies(g) says whether
 * a geometry is depthwise. Each output sums its taps in row-major tap order, then adds b. */
int ssd_dwconv_applies(const ssd_convg_t *g);
void ssd_dwconv_forward(const ssd_convg_t *g, const float *x, const float *w, const float *b,
                        float *y, int act);
void ssd_dwconv_backward_data(const ssd_convg_t *g, const float *dy, const float *w, float *dx);
/* dw (C, 1, kh, kw) and db (may be NULL), summed over N and OH x OW per channel. */
void ssd_dwconv_backward_weight(const ssd_convg_t *g, const float *x, const float *dy,
                                float *dw, float *db);

/* Pooling with PyTorch's MaxPool2d / AvgPool2d semantics: kernel kh x kw, stride (sh, sw),
 * implicit padding (ph, pw) (PyTorch requires ph <= kh/2, pw <= kw/2), ceil_mode.
 * Output size per axis (ssd_pool_out_size):
 *   out = floor_or_ceil((in + 2*pad - k) / stride) + 1,
 *   and with ceil_mode, out -= 1 if (out - 1) * stride >= in + pad
 *   (the last window must start inside the input or the left padding).
 * Max: padding never wins; an element replaces the running max if it is greater or NaN, so
 * the first max (row-major in the window) wins ties and NaN propagates; backward routes dy
 * to that element (recomputed from x), accumulating where windows overlap.
 * Average: window [h0, h0 + kh) clipped to [-ph, H + ph), divisor = its area if
 * count_include_pad, else the area of its part inside the input. */
int ssd_pool_out_size(int in, int k, int stride, int pad, int ceil_mode);

typedef struct {
    int N, C, H, W;
    int kh, kw, sh, sw, ph, pw, ceil_mode;
    int OH, OW;       /* filled by ssd_pool_geometry */
} ssd_pool_t;

ssd_pool_t ssd_pool_geometry(int N, int C, int H, int W, int kh, int kw, int sh, int sw, int ph,
                             int pw, int ceil_mode);
void ssd_maxpool_forward(const ssd_pool_t *g, const float *x, float *y);
void ssd_maxpool_backward(const ssd_pool_t *g, const float *x, const float *dy, float *dx);
void ssd_avgpool_forward(const ssd_pool_t *g, int count_include_pad, const float *x, float *y);
void ssd_avgpool_backward(const ssd_pool_t *g, int count_include_pad, const float *dy,
                          float *dx);

/* Global average over H x W (y is N x C; sum in double); backward dx = dy / HW. */
void ssd_global_avgpool_forward(int N, int C, int HW, const float *x, float *y);
void ssd_global_avgpool_backward(int N, int C, int HW, const float *dy, float *dx);

/* Activations, elementwise over n floats (y may equal x; dx may equal dy), PyTorch's
 * definitions and gradient values at the kinks:
 *   relu6(x)       = min(max(x, 0), 6);     backward reads x: dy where 0 < x < 6, else 0
 *   sigmoid(x)     = 1 / (1 + exp(-x));     backward reads y: dy * y * (1 - y)
 *   hardswish(x)   = x * min(max(x+3, 0), 6) / 6;
 *                                           backward reads x: 0 for x < -3,
 *                                           dy * (x/3 + 1/2) for -3 <= x <= 3, dy for x > 3
 *   hardsigmoid(x) = min(max(x+3, 0), 6) / 6;
 *                                           backward reads x: dy / 6 where -3 < x < 3, else 0 */
void ssd_relu6_forward(int64_t n, const float *x, float *y);
void ssd_relu6_backward(int64_t n, const float *x, const float *dy, float *dx);
void ssd_sigmoid_forward(int64_t n, const float *x, float *y);
void ssd_sigmoid_backward(int64_t n, const float *y, const float *dy, float *dx);
void ssd_hardswish_forward(int64_t n, const float *x, float *y);
void ssd_hardswish_backward(int64_t n, const float *x, const float *dy, float *dx);
void ssd_hardsigmoid_forward(int64_t n, const float *x, float *y);
void ssd_hardsigmoid_backward(int64_t n, const float *x, const float *dy, float *dx);

/* Nearest upsample by integer factors: y (N x C x H*sh x W*sw), y[.., i, j] = x[.., i/sh, j/sw];
 * backward dx (N x C x H x W) = sum of dy over each sh x sw block (row-major order). */
void ssd_upsample_nearest_forward(int N, int C, int H, int W, int sh, int sw, const float *x,
                                  float *y);
void ssd_upsample_nearest_backward(int N, int C, int H, int W, int sh, int sw, const float *dy,
                                   float *dx);

/* L2Norm over channels with a per-channel scale (SSD300's conv4_3, as ssd.pytorch):
 * d = sqrt(sum_c x[c]^2) + eps per pixel, y[c] = x[c] / d * weight[c] (eps = 1e-10 there).
 * Backward: dx[c] = dy[c]*weight[c] / d - x[c] * (sum_k dy[k]*weight[k]*x[k]) / (d^2 * r),
 * r = d - eps (the second term is 0 at a pixel whose x is all zero; PyTorch gives NaN there);
 * dweight[c] = sum over N and pixels of dy[c] * x[c] / d (double, fixed order).
 * dx may be NULL. Scratch: ssd_l2norm_scratch_floats(N, HW) floats. */
void ssd_l2norm_forward(int N, int C, int HW, const float *x, const float *weight, float eps,
                        float *y);
size_t ssd_l2norm_scratch_floats(int N, int HW);
void ssd_l2norm_backward(int N, int C, int HW, const float *x, const float *weight, float eps,
                         const float *dy, float *dx, float *dweight, float *scratch);

/* Per-example standardisation over all D = C*H*W values of each example (PyTorch's
 * F.layer_norm(x, x.shape[1:], eps=eps) without weights): y = (x - mean) / sqrt(var + eps),
 * var biased. Backward: dx = r * (dy - mean(dy) - y * mean(dy * y)), r = 1 / sqrt(var + eps).
 * Sums in double, fixed order (the same bits at any thread count). Scratch (both):
 * ssd_standardize_scratch_floats(N, D) floats, 8-byte aligned. */
size_t ssd_standardize_scratch_floats(int N, int64_t D);
void ssd_standardize_forward(int N, int64_t D, const float *x, float eps, float *y, float *scratch);
void ssd_standardize_backward(int N, int64_t D, const float *x, float eps, const float *dy,
                              float *dx, float *scratch);

/* Elementwise: y = act(a + b) over n floats (y may equal a or b; act is SSD_ACT_*), and
 * y += x (gradient accumulation). */
void ssd_add_forward(int64_t n, const float *a, const float *b, float *y, int act);
void ssd_add_accumulate(int64_t n, const float *x, float *y);

/* Per-channel multiply y[n, c, p] = x[n, c, p] * s[c] (per_example == 0: s is (C), a
 * parameter) or * s[n, c] (per_example != 0: s is (N, C), squeeze-excite); y may equal x.
 * Backward: dx = dy * s (dx may be NULL); ds (may be NULL) = sum over pixels of dy * x, and
 * over the batch too when s is (C) (double, fixed order). */
void ssd_channel_mul_forward(int N, int C, int HW, const float *x, const float *s,
                             int per_example, float *y);
void ssd_channel_mul_backward(int N, int C, int HW, const float *x, const float *s,
                              int per_example, const float *dy, float *dx, float *ds);

/* ---- data-parallel runs (collective.c) --------------------------------------------------- */

/* Reductions across the processes of a data-parallel run, set by the driver from its MPI
 * shim (none in one process: every function below is then a no-op). sum_floats: data =
 * sum over ranks of weight_r * data_r; sum_doubles: data = sum over ranks of data_r. Both
 * sum in rank order, so results do not depend on timing. */
typedef void (*ssd_sum_floats_fn)(float *data, int64_t n, float weight);
typedef void (*ssd_sum_doubles_fn)(double *data, int64_t n);

/* Sets the reductions (NULL: one process); sync_batch_norm != 0 makes BatchNorm use the
 * statistics and backward sums of the global batch (SyncBatchNorm). */
void ssd_set_collectives(ssd_sum_floats_fn floats, ssd_sum_doubles_fn doubles, int sync_batch_norm);

/* This rank's examples in the next step, and the global batch's. */
void ssd_set_batch_share(int64_t local, int64_t global);

/* Called by the train step before SGD: g (n floats, the gradients of this rank's
 * batch-mean loss) becomes the gradient of the global batch-mean loss, on every rank. */
void ssd_allreduce_gradients(int64_t n, float *g);

/* sync-bn: whether it is on; the global element count of a channel whose local count is
 * `count`; and the reduction of per-channel sums (sums[0..2C): two sums per channel):
 * statistics are summed as they are (weighted == 0); backward sums of dy, which carry
 * this rank's loss scale, are weighted by the rank's share, summed, and scaled back
 * (weighted != 0). */
int ssd_bn_sync_active(void);
int64_t ssd_bn_sync_count(int64_t count);
void ssd_bn_sync_sums(int C, double *sums, int weighted);

#ifdef __cplusplus
}
#endif
#endif
