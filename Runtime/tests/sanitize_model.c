/*
 * sanitize_model.c — runs a model compiled by `ssdc compile` once through each of its
 * programs (forward_train, infer, train_step, eval_step) on deterministic pseudo-random
 * images and boxes, for scripts/sanitize.sh, which builds it with AddressSanitizer and
 * UndefinedBehaviorSanitizer together with the emitted model.c and the runtime's sources.
 *
 *   ./sanitize_model MODEL_DIR/model.h
 *
 * The sanitizers catch out-of-bounds accesses and undefined behaviour; this driver checks
 * what they cannot: every output of every program is finite, and the train step changed
 * the parameters and left them finite. Each region is allocated at exactly the size
 * model.h declares (no rounding up), so an access one past a region's end is reported.
 *
 * Parameter offsets and output shapes are read from model.h's own comments, so the
 * driver fits any model, not only TinySSD. Exit status 0 when everything is finite,
 * 1 otherwise (with one line per problem).
 */
#define _POSIX_C_SOURCE 200112L /* posix_memalign */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { BATCH = 2, MAX_ENTRIES = 512, MAX_DIMS = 8 };

/* One "#define SSDC_..." line of model.h that describes a tensor. */
typedef struct {
    char name[128];
    long offset;
    long dims[MAX_DIMS]; /* -1 stands for the batch size N */
    int rank;
    int is_f64; /* dtype F64/f64 (only the metrics) */
    int is_i64; /* dtype I64 (num_batches_tracked, stored as a float) */
    char region[16]; /* "batched", "fixed", "constant", or "" for parameters */
} entry;

static entry g_entries[MAX_ENTRIES];
static int g_count;
static int g_failures;

static void fail(const char *what, const char *problem)
{
    printf("FAIL %s: %s\n", what, problem);
    ++g_failures;
}

/* xorshift64: deterministic inputs everywhere. */
static uint64_t g_rng = 0x2545F4914F6CDD1Dull;

static double unit(void) /* uniform in [0, 1) */
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / 9007199254740992.0;
}

/* Exactly `bytes` bytes (at least 1), 64-byte aligned, zeroed, as the Swift runtime's Region. */
static void *region(size_t bytes)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 1) != 0) {
        fprintf(stderr, "out of memory (%zu bytes)\n", bytes);
        exit(2);
    }
    memset(p, 0, bytes ? bytes : 1);
    return p;
}

/* Parses "[16, 3, 3, 3]" or "[N,344,2]" into dims. */
static int parse_dims(const char *text, long *dims)
{
    int rank = 0;
    const char *p = strchr(text, '[');
    if (!p) return -1;
    ++p;
    while (*p && *p != ']' && rank < MAX_DIMS) {
        while (*p == ' ' || *p == ',') ++p;
        if (*p == ']') break;
        if (*p == 'N') { dims[rank++] = -1; ++p; continue; }
        char *end;
        long d = strtol(p, &end, 10);
        if (end == p) return -1;
        dims[rank++] = d;
        p = end;
    }
    return rank;
}

/* Reads the parameter and program-buffer lines of model.h:
 *   #define SSDC_PARAM_BLK_0_0_0_WEIGHT 0 /+ [16, 3, 3, 3] F32 +/
 *   #define SSDC_INFER_OUT_PROBS 8256 /+ batched, f32[N,344,2] +/ */
static void read_header(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) { fprintf(stderr, "cannot open %s\n", path); exit(2); }
    char line[512];
    while (fgets(line, sizeof line, f)) {
        char name[128];
        long offset;
        int used = 0;
        if (sscanf(line, "#define SSDC_%127s %ld /* %n", name, &offset, &used) < 2 || used == 0) continue;
        if (g_count == MAX_ENTRIES) { fprintf(stderr, "model.h lists more than %d tensors\n", MAX_ENTRIES); exit(2); }
        entry *e = &g_entries[g_count];
        memset(e, 0, sizeof *e);
        snprintf(e->name, sizeof e->name, "%s", name);
        e->offset = offset;
        const char *rest = line + used;
        if (strncmp(name, "PARAM_", 6) != 0) {
            const char *comma = strchr(rest, ',');
            if (!comma) continue; /* e.g. SSDC_GRADS_OFFSET: not a tensor */
            snprintf(e->region, sizeof e->region, "%.*s", (int)(comma - rest), rest);
        }
        e->rank = parse_dims(rest, e->dims);
        if (e->rank < 0) continue;
        e->is_f64 = strstr(rest, "f64[") != NULL || strstr(rest, "] F64") != NULL;
        e->is_i64 = strstr(rest, "] I64") != NULL;
        ++g_count;
    }
    fclose(f);
}

static long element_count(const entry *e, long n)
{
    long count = 1;
    for (int i = 0; i < e->rank; ++i) count *= e->dims[i] < 0 ? n : e->dims[i];
    return count;
}

static int has_suffix(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* PyTorch's defaults: conv weights and biases uniform in +-1/sqrt(fan_in), batch norm
 * weight 1, bias 0, running mean 0, running variance 1, num_batches_tracked 0. */
static void init_parameters(float *P)
{
    for (int i = 0; i < g_count; ++i) {
        const entry *e = &g_entries[i];
        if (strncmp(e->name, "PARAM_", 6) != 0) continue;
        long count = element_count(e, 1);
        float *p = P + e->offset;
        float fill = 0.0f;
        int random = 0;
        double bound = 0.0;
        if (has_suffix(e->name, "_RUNNING_VAR")) {
            fill = 1.0f;
        } else if (e->is_i64 || has_suffix(e->name, "_RUNNING_MEAN")) {
            fill = 0.0f;
        } else if (e->rank >= 2) { /* conv weight [O, C, kh, kw] */
            random = 1;
            bound = 1.0 / sqrt((double)(count / e->dims[0]));
        } else if (has_suffix(e->name, "_BIAS")) {
            random = 1;
            bound = 0.05;
        } else { /* batch norm weight */
            fill = 1.0f;
        }
        for (long k = 0; k < count; ++k) p[k] = random ? (float)((2.0 * unit() - 1.0) * bound) : fill;
    }
}

/* Every output of `program` (its model.h prefix, e.g. "TRAIN_STEP_") must be finite. */
static void check_outputs(const char *program, long n, const char *F, const char *B)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%sOUT_", program);
    for (int i = 0; i < g_count; ++i) {
        const entry *e = &g_entries[i];
        if (strncmp(e->name, prefix, strlen(prefix)) != 0 || strcmp(e->region, "constant") == 0) continue;
        const char *base = strcmp(e->region, "batched") == 0 ? B + e->offset * n : F + e->offset;
        long count = element_count(e, n);
        for (long k = 0; k < count; ++k) {
            double v = e->is_f64 ? ((const double *)base)[k] : ((const float *)base)[k];
            if (!isfinite(v)) {
                fail(e->name, "non-finite value");
                break;
            }
        }
    }
}

/* Pixel values 0..255. */
static void fill_inputs(const char *program, long n, char *B)
{
    char x_name[64];
    snprintf(x_name, sizeof x_name, "%sIN_X", program);
    for (int i = 0; i < g_count; ++i) {
        const entry *e = &g_entries[i];
        if (strcmp(e->name, x_name) != 0) continue;
        float *dst = (float *)(B + e->offset * n);
        long count = element_count(e, n);
        for (long k = 0; k < count; ++k) dst[k] = (float)floor(256.0 * unit());
    }
}

/* LABEL_ROWS rows per image: one box with label 0 inside the unit square, then padding
 * (class -1), so the steps see both kinds of row. */
enum { LABEL_ROWS = 2 };
static float *make_labels(long n)
{
    float *y = region(sizeof(float) * 5 * LABEL_ROWS * n);
    for (long i = 0; i < n; ++i) {
        float *row = y + 5 * LABEL_ROWS * i;
        double x0 = 0.6 * unit(), y0 = 0.6 * unit();
        row[0] = 0.0f;
        row[1] = (float)x0;
        row[2] = (float)y0;
        row[3] = (float)(x0 + 0.1 + 0.3 * unit());
        row[4] = (float)(y0 + 0.1 + 0.3 * unit());
        for (int r = 1; r < LABEL_ROWS; ++r) row[5 * r] = -1.0f;
    }
    return y;
}

typedef int (*program_fn)(int64_t, float *, char *, char *, float *);
typedef size_t (*scratch_fn)(int64_t);
typedef int (*step_fn)(int64_t, int64_t, const float *, float *, char *, char *, float *);
typedef size_t (*step_scratch_fn)(int64_t, int64_t);

/* Runs one program on fresh, exactly sized regions; a step (`step` set) also gets labels. */
static void run_any(const char *program, program_fn fn, scratch_fn scratch, step_fn step, step_scratch_fn step_scratch,
                    size_t fixed, size_t batched, float *P)
{
    char *F = region(fixed);
    char *B = region(batched * BATCH);
    float *S = region((step ? step_scratch(BATCH, LABEL_ROWS) : scratch(BATCH)) * sizeof(float));
    float *Y = step ? make_labels(BATCH) : NULL;
    fill_inputs(program, BATCH, B);
    int status = step ? step(BATCH, LABEL_ROWS, Y, P, F, B, S) : fn(BATCH, P, F, B, S);
    if (status != 0) fail(program, "entry point returned an error");
    else check_outputs(program, BATCH, F, B);
    printf("ran %s (N=%d)\n", program, BATCH);
    free(F);
    free(B);
    free(S);
    free(Y);
}

static void run(const char *program, program_fn fn, scratch_fn scratch, size_t fixed, size_t batched, float *P)
{
    run_any(program, fn, scratch, NULL, NULL, fixed, batched, P);
}

static void run_step(const char *program, step_fn fn, step_scratch_fn scratch, size_t fixed, size_t batched, float *P)
{
    run_any(program, NULL, NULL, fn, scratch, fixed, batched, P);
}

int main(int argc, char **argv)
{
    if (argc != 2) { fprintf(stderr, "usage: %s MODEL_DIR/model.h\n", argv[0]); return 2; }
    read_header(argv[1]);
    float *P = region(SSDC_PARAMS_REGION_FLOATS * sizeof(float));
    init_parameters(P);
    P[SSDC_HYPER_OFFSET] = 0.01f;
    P[SSDC_HYPER_OFFSET + 1] = 5e-4f;

    run("FORWARD_TRAIN_", ssdc_forward_train, ssdc_forward_train_scratch_floats,
        SSDC_FORWARD_TRAIN_FIXED_BYTES, SSDC_FORWARD_TRAIN_BATCHED_BYTES, P);
    run("INFER_", ssdc_infer, ssdc_infer_scratch_floats, SSDC_INFER_FIXED_BYTES, SSDC_INFER_BATCHED_BYTES, P);
    run_step("EVAL_STEP_", ssdc_eval_step, ssdc_eval_step_scratch_floats, SSDC_EVAL_STEP_FIXED_BYTES,
        SSDC_EVAL_STEP_BATCHED_BYTES, P);

    float *before = region(SSDC_PARAMS_FLOATS * sizeof(float));
    memcpy(before, P, SSDC_PARAMS_FLOATS * sizeof(float));
    run_step("TRAIN_STEP_", ssdc_train_step, ssdc_train_step_scratch_floats, SSDC_TRAIN_STEP_FIXED_BYTES,
        SSDC_TRAIN_STEP_BATCHED_BYTES, P);
    long changed = 0;
    for (long k = 0; k < SSDC_PARAMS_FLOATS; ++k) {
        if (!isfinite(P[k]) || !isfinite(P[SSDC_GRADS_OFFSET + k])) {
            fail("train step", "non-finite parameter or gradient");
            break;
        }
        changed += P[k] != before[k];
    }
    if (changed == 0) fail("train step", "no parameter changed");
    printf("train step changed %ld of %d parameter floats\n", changed, SSDC_PARAMS_FLOATS);
    free(before);
    free(P);

    printf("%s\n", g_failures ? "sanitize_model: FAILED" : "sanitize_model: all outputs finite");
    return g_failures ? 1 : 0;
}
