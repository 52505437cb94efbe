/*
 * bundle.h — run the exported model from C: open it with its weights, detect objects in
 * one image at a time.
 *
 * The model's input size and class count are in bundle_config.h (SSDC_BUNDLE_HEIGHT,
 * SSDC_BUNDLE_WIDTH, SSDC_BUNDLE_CLASSES), and so is the number of detection rows the
 * model gives per image (SSDC_BUNDLE_ROWS, one per anchor).
 */
#ifndef SSDC_BUNDLE_H
#define SSDC_BUNDLE_H

#include <stddef.h>

#include "bundle_config.h"

typedef struct ssdc_bundle ssdc_bundle;

/*
 * Allocates the model's memory and loads its weights from `weights_path` (weights.bin:
 * the parameters as raw little-endian float32). In a bundle exported with
 * --embed-weights, a NULL path takes the weights compiled into the library.
 * Returns NULL on failure, with the reason in `error` (if not NULL, `error_size` bytes).
 */
ssdc_bundle *ssdc_bundle_open(const char *weights_path, char *error, size_t error_size);

void ssdc_bundle_close(ssdc_bundle *b);

/* Threads used by the next calls (ignored in a build without OpenMP). */
void ssdc_bundle_set_threads(int n);

/*
 * Runs the model on one image: `chw` holds 3 x SSDC_BUNDLE_HEIGHT x SSDC_BUNDLE_WIDTH
 * floats, the planes R, G, B of pixel values 0..255. Writes up to `max_rows` detection
 * rows of 6 floats to `rows`: class, score, xmin, ymin, xmax, ymax, the box corners as
 * fractions (0..1) of the image's width and height. Rows whose class is -1 were removed
 * by non-maximum suppression or are background. Returns the number of rows written, or
 * -1 if the model failed.
 */
int ssdc_bundle_detect(ssdc_bundle *b, const float *chw, float *rows, int max_rows);

#endif
