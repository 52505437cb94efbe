/* model.h — the ABI of the library ssdc built from graph "golden". Generated; do not edit.
 *
 * Memory is the caller's: P holds parameters and BN state (floats, offsets below),
 * F a fixed-size workspace, B a workspace of <PROGRAM>_BATCHED_BYTES per example
 * (buffer offsets there are per example: multiply by N), S scratch of
 * ssdc_<program>_scratch_floats(N) floats. Train and eval steps also take G, the label
 * rows per image, and Y. Entry points return 0, or 1 for a batch size (or G) below 1,
 * 2 for a NULL region. They never print or exit. */
#ifndef SSDC_MODEL_H
#define SSDC_MODEL_H
#include <stddef.h>
#include <stdint.h>

#define SSDC_ABI_VERSION 2
#define SSDC_PARAMS_FLOATS 1808
#define SSDC_GRADS_OFFSET 1808 /* gradients mirror the parameters from here */
#define SSDC_HYPER_OFFSET 3616 /* [0] learning rate, [1] weight decay */
#define SSDC_PARAMS_REGION_FLOATS 3632
#define SSDC_NUM_CLASSES 2

/* parameter offsets in P (floats), state_dict order */
#define SSDC_PARAM_BLK_0_0_WEIGHT 0 /* [4, 3, 3, 3] F32 */
#define SSDC_PARAM_BLK_0_0_BIAS 112 /* [4] F32 */
#define SSDC_PARAM_BLK_0_1_WEIGHT 128 /* [4] F32 */
#define SSDC_PARAM_BLK_0_1_BIAS 144 /* [4] F32 */
#define SSDC_PARAM_BLK_0_1_RUNNING_MEAN 160 /* [4] F32 */
#define SSDC_PARAM_BLK_0_1_RUNNING_VAR 176 /* [4] F32 */
#define SSDC_PARAM_BLK_0_1_NUM_BATCHES_TRACKED 192 /* [] I64 */
#define SSDC_PARAM_CLS_0_WEIGHT 208 /* [9, 4, 3, 3] F32 */
#define SSDC_PARAM_CLS_0_BIAS 544 /* [9] F32 */
#define SSDC_PARAM_BBOX_0_WEIGHT 560 /* [12, 4, 3, 3] F32 */
#define SSDC_PARAM_BBOX_0_BIAS 992 /* [12] F32 */
#define SSDC_PARAM_CLS_1_WEIGHT 1008 /* [9, 4, 3, 3] F32 */
#define SSDC_PARAM_CLS_1_BIAS 1344 /* [9] F32 */
#define SSDC_PARAM_BBOX_1_WEIGHT 1360 /* [12, 4, 3, 3] F32 */
#define SSDC_PARAM_BBOX_1_BIAS 1792 /* [12] F32 */

/* program forward_train */
#define SSDC_FORWARD_TRAIN_FIXED_BYTES 128
#define SSDC_FORWARD_TRAIN_BATCHED_BYTES 1792
#define SSDC_FORWARD_TRAIN_IN_X 1024 /* batched, f32[N,3,8,8] */
#define SSDC_FORWARD_TRAIN_OUT_ANCHORS 0 /* constant, f32[1,51,4] */
#define SSDC_FORWARD_TRAIN_OUT_CLS_PREDS 832 /* batched, f32[N,51,3] */
#define SSDC_FORWARD_TRAIN_OUT_BBOX_PREDS 0 /* batched, f32[N,204] */
int ssdc_forward_train(int64_t N, float *P, char *F, char *B, float *S);
size_t ssdc_forward_train_scratch_floats(int64_t N);

/* program infer */
#define SSDC_INFER_FIXED_BYTES 512
#define SSDC_INFER_BATCHED_BYTES 3392
#define SSDC_INFER_IN_X 0 /* batched, f32[N,3,8,8] */
#define SSDC_INFER_OUT_ANCHORS 0 /* constant, f32[1,51,4] */
#define SSDC_INFER_OUT_CLS_PREDS 2112 /* batched, f32[N,51,3] */
#define SSDC_INFER_OUT_BBOX_PREDS 1280 /* batched, f32[N,204] */
#define SSDC_INFER_OUT_PROBS 2752 /* batched, f32[N,51,3] */
#define SSDC_INFER_OUT_DETECTION 0 /* batched, f32[N,51,6] */
int ssdc_infer(int64_t N, float *P, char *F, char *B, float *S);
size_t ssdc_infer_scratch_floats(int64_t N);

/* program train_step */
#define SSDC_TRAIN_STEP_FIXED_BYTES 192
#define SSDC_TRAIN_STEP_BATCHED_BYTES 7936
#define SSDC_TRAIN_STEP_IN_X 4544 /* batched, f32[N,3,8,8] */
#define SSDC_TRAIN_STEP_OUT_ANCHORS 0 /* constant, f32[1,51,4] */
#define SSDC_TRAIN_STEP_OUT_CLS_PREDS 6080 /* batched, f32[N,51,3] */
#define SSDC_TRAIN_STEP_OUT_BBOX_PREDS 2048 /* batched, f32[N,204] */
#define SSDC_TRAIN_STEP_OUT_TARGET_BBOX_LABELS 2880 /* batched, f32[N,204] */
#define SSDC_TRAIN_STEP_OUT_TARGET_BBOX_MASKS 3712 /* batched, f32[N,204] */
#define SSDC_TRAIN_STEP_OUT_TARGET_CLS_LABELS 7616 /* batched, f32[N,51] */
#define SSDC_TRAIN_STEP_OUT_LOSS_PER_EXAMPLE 7872 /* batched, f32[N,1] */
#define SSDC_TRAIN_STEP_OUT_METRICS 0 /* fixed, f64[4] */
/* Y: the ground-truth rows, N x G x 5 floats (class, xmin, ymin, xmax, ymax; class -1 pads). */
int ssdc_train_step(int64_t N, int64_t G, const float *Y, float *P, char *F, char *B, float *S);
size_t ssdc_train_step_scratch_floats(int64_t N, int64_t G);

/* program eval_step */
#define SSDC_EVAL_STEP_FIXED_BYTES 576
#define SSDC_EVAL_STEP_BATCHED_BYTES 4928
#define SSDC_EVAL_STEP_IN_X 0 /* batched, f32[N,3,8,8] */
#define SSDC_EVAL_STEP_OUT_ANCHORS 0 /* constant, f32[1,51,4] */
#define SSDC_EVAL_STEP_OUT_CLS_PREDS 3328 /* batched, f32[N,51,3] */
#define SSDC_EVAL_STEP_OUT_BBOX_PREDS 0 /* batched, f32[N,204] */
#define SSDC_EVAL_STEP_OUT_TARGET_BBOX_LABELS 832 /* batched, f32[N,204] */
#define SSDC_EVAL_STEP_OUT_TARGET_BBOX_MASKS 1664 /* batched, f32[N,204] */
#define SSDC_EVAL_STEP_OUT_TARGET_CLS_LABELS 4608 /* batched, f32[N,51] */
#define SSDC_EVAL_STEP_OUT_LOSS_PER_EXAMPLE 4864 /* batched, f32[N,1] */
#define SSDC_EVAL_STEP_OUT_METRICS 448 /* fixed, f64[4] */
/* Y: the ground-truth rows, N x G x 5 floats (class, xmin, ymin, xmax, ymax; class -1 pads). */
int ssdc_eval_step(int64_t N, int64_t G, const float *Y, float *P, char *F, char *B, float *S);
size_t ssdc_eval_step_scratch_floats(int64_t N, int64_t G);

extern const float c_anchors[204];
void ssdc_set_threads(int n);
/* Call after writing into P (loading weights): caches derived from the parameters are
 * recomputed on the next call. */
void ssdc_params_changed(void);
void ssdc_set_profiling(int on);
double *ssdc_profile(const char *program);
int ssdc_abi_version(void);
/* The manifest (JSON): parameters, programs, buffers, as manifest.json. */
const char *ssdc_manifest(void);
#endif
