/*
 * bundle.c — the C API of bundle.h over the generated model (model.h): the caller-owned
 * regions the model asks for, the weights, and the `infer` program at batch 1.
 */
#include "bundle.h"
#include "model.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if SSDC_BUNDLE_EMBEDDED_WEIGHTS
/* weights.c: the parameters' float32 bit patterns. */
extern const uint32_t ssdc_bundle_weight_bits[SSDC_PARAMS_FLOATS];
#endif

struct ssdc_bundle {
    float *params;  /* SSDC_PARAMS_REGION_FLOATS: parameters and BN state, then training state */
    char *fixed;    /* SSDC_INFER_FIXED_BYTES */
    char *batched;  /* SSDC_INFER_BATCHED_BYTES for one image */
    float *scratch; /* ssdc_infer_scratch_floats(1) */
};

/* Zeroed memory aligned to 64 bytes, as the runtime's vector loops expect. */
static void *region(size_t bytes)
{
    size_t size = (bytes + 63) / 64 * 64;
    if (size == 0) size = 64;
    void *p = aligned_alloc(64, size);
    if (p) memset(p, 0, size);
    return p;
}

static void fail(char *error, size_t error_size, const char *what, const char *path)
{
    if (error && error_size > 0) snprintf(error, error_size, "%s%s%s", path ? path : "", path ? ": " : "", what);
}

static int little_endian_host(void)
{
    const uint32_t one = 1;
    unsigned char first;
    memcpy(&first, &one, 1);
    return first == 1;
}

/* Reads weights.bin, which must hold exactly the model's parameters. */
static int read_weights(float *params, const char *path, char *error, size_t error_size)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fail(error, error_size, "cannot open the weights file", path);
        return 0;
    }
    const size_t count = SSDC_PARAMS_FLOATS;
    size_t got = fread(params, sizeof(float), count, f);
    int extra = fgetc(f) != EOF;
    fclose(f);
    if (got != count || extra) {
        char what[160];
        snprintf(what, sizeof what, "the weights file must hold %zu float32 values (%zu bytes) for this model",
                 count, count * sizeof(float));
        fail(error, error_size, what, path);
        return 0;
    }
    if (!little_endian_host()) {
        unsigned char *b = (unsigned char *)params;
        for (size_t i = 0; i < count; i++, b += 4) {
            unsigned char t0 = b[0], t1 = b[1];
            b[0] = b[3]; b[1] = b[2]; b[2] = t1; b[3] = t0;
        }
    }
    return 1;
}

ssdc_bundle *ssdc_bundle_open(const char *weights_path, char *error, size_t error_size)
{
    if (!weights_path && !SSDC_BUNDLE_EMBEDDED_WEIGHTS) {
        fail(error, error_size, "no weights file given, and this bundle has no weights compiled in", NULL);
        return NULL;
    }
    ssdc_bundle *b = calloc(1, sizeof *b);
    if (!b) {
        fail(error, error_size, "out of memory", NULL);
        return NULL;
    }
    b->params = region((size_t)SSDC_PARAMS_REGION_FLOATS * sizeof(float));
    b->fixed = region(SSDC_INFER_FIXED_BYTES);
    b->batched = region(SSDC_INFER_BATCHED_BYTES);
    b->scratch = region(ssdc_infer_scratch_floats(1) * sizeof(float));
    if (!b->params || !b->fixed || !b->batched || !b->scratch) {
        ssdc_bundle_close(b);
        fail(error, error_size, "out of memory for the model's workspaces", NULL);
        return NULL;
    }
    if (weights_path) {
        if (!read_weights(b->params, weights_path, error, error_size)) {
            ssdc_bundle_close(b);
            return NULL;
        }
    } else {
#if SSDC_BUNDLE_EMBEDDED_WEIGHTS
        memcpy(b->params, ssdc_bundle_weight_bits, sizeof ssdc_bundle_weight_bits);
#endif
    }
    ssdc_params_changed(); /* (this bundle's regions may reuse a closed one's addresses) */
    return b;
}

void ssdc_bundle_close(ssdc_bundle *b)
{
    if (!b) return;
    free(b->params);
    free(b->fixed);
    free(b->batched);
    free(b->scratch);
    free(b);
}

void ssdc_bundle_set_threads(int n) { ssdc_set_threads(n); }

int ssdc_bundle_detect(ssdc_bundle *b, const float *chw, float *rows, int max_rows)
{
    if (!b || !chw || (!rows && max_rows > 0)) return -1;
    memcpy(b->batched + SSDC_INFER_IN_X, chw, sizeof(float) * 3 * SSDC_BUNDLE_HEIGHT * SSDC_BUNDLE_WIDTH);
    if (ssdc_infer(1, b->params, b->fixed, b->batched, b->scratch) != 0) return -1;
    int n = max_rows < SSDC_BUNDLE_ROWS ? max_rows : SSDC_BUNDLE_ROWS;
    if (n < 0) n = 0;
    if (n > 0) memcpy(rows, b->batched + SSDC_INFER_OUT_DETECTION, sizeof(float) * 6 * (size_t)n);
    return n;
}
