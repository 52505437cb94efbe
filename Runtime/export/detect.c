/*
 * detect.c — finds objects in pictures with the exported model.
 *
 *   ./detect [--weights weights.bin] [--threshold 0.9] [--threads N] [--raw] IMAGE...
 *
 * Reads each IMAGE (binary PPM, or PNG when built with PNG=1), resizes it to the model's
 * input as `ssdc run --predict` does (bilinear, pixel centres aligned), and prints one line
 * per detection with a score at or above the threshold: class, score and the box in the
 * image's own pixels, clipped to the image (as `ssdc run --predict` clips them). --raw
 * prints instead every detection row of the model, as it is (class, score, xmin, ymin, xmax,
 * ymax as fractions), to compare with `ssdc run --forward`.
 */
#include "bundle.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if SSDC_DETECT_PNG
#include <png.h>
#endif

typedef struct {
    int width, height;
    unsigned char *rgb; /* width * height * 3, rows top to bottom */
} image;

/* Skips white space and # comments between the fields of a PPM header. */
static void skip_ppm_space(FILE *f)
{
    int c;
    while ((c = fgetc(f)) != EOF) {
        if (c == '#') {
            while ((c = fgetc(f)) != EOF && c != '\n') {}
        } else if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            ungetc(c, f);
            return;
        }
    }
}

static int read_ppm_number(FILE *f, int *value)
{
    skip_ppm_space(f);
    return fscanf(f, "%d", value) == 1;
}

/* A binary PPM (P6) with 8-bit samples. */
static int read_ppm(const char *path, image *img)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "error: %s: cannot open the image\n", path);
        return 0;
    }
    int maxval = 0, ok = fgetc(f) == 'P' && fgetc(f) == '6' && read_ppm_number(f, &img->width)
        && read_ppm_number(f, &img->height) && read_ppm_number(f, &maxval);
    if (!ok || img->width <= 0 || img->height <= 0 || maxval != 255 || img->width > 16384 || img->height > 16384) {
        fprintf(stderr, "error: %s: not a binary PPM (P6) with 8-bit samples of at most 16384x16384 pixels\n", path);
        fclose(f);
        return 0;
    }
    fgetc(f); /* the single white space character after maxval */
    size_t bytes = (size_t)img->width * (size_t)img->height * 3;
    img->rgb = malloc(bytes);
    ok = img->rgb && fread(img->rgb, 1, bytes, f) == bytes;
    fclose(f);
    if (!ok) fprintf(stderr, "error: %s: the PPM's pixel data is truncated\n", path);
    return ok;
}

#if SSDC_DETECT_PNG
/* Any PNG, converted to 8-bit RGB by libpng's simplified API. */
static int read_png(const char *path, image *img)
{
    png_image p;
    memset(&p, 0, sizeof p);
    p.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&p, path)) {
        fprintf(stderr, "error: %s: cannot read the PNG: %s\n", path, p.message);
        return 0;
    }
    p.format = PNG_FORMAT_RGB;
    img->width = (int)p.width;
    img->height = (int)p.height;
    img->rgb = malloc(PNG_IMAGE_SIZE(p));
    if (!img->rgb || !png_image_finish_read(&p, NULL, img->rgb, 0, NULL)) {
        fprintf(stderr, "error: %s: cannot decode the PNG: %s\n", path, img->rgb ? p.message : "out of memory");
        png_image_free(&p);
        return 0;
    }
    return 1;
}
#endif

static int read_image(const char *path, image *img)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "error: %s: cannot open the image\n", path);
        return 0;
    }
    unsigned char sig[2] = {0, 0};
    size_t got = fread(sig, 1, 2, f);
    fclose(f);
    if (got == 2 && sig[0] == 'P' && sig[1] == '6') return read_ppm(path, img);
#if SSDC_DETECT_PNG
    if (got == 2 && sig[0] == 0x89 && sig[1] == 'P') return read_png(path, img);
    fprintf(stderr, "error: %s: not a PNG or binary PPM (P6) image\n", path);
#else
    fprintf(stderr, "error: %s: not a binary PPM (P6) image (this detect was built with PNG=0)\n", path);
#endif
    return 0;
}

/* For output index i: the two source indices to blend and the weight of the second, with
 * pixel centres aligned (the arithmetic of ssdc's RGBImage.resized, so pictures resize to
 * the same bytes). */
static void linear_tap(int i, int out_size, int in_size, int *i0, int *i1, float *w)
{
    double scale = (double)in_size / (double)out_size;
    double source = ((double)i + 0.5) * scale - 0.5;
    if (source < 0) source = 0;
    *i0 = (int)source < in_size - 1 ? (int)source : in_size - 1;
    *i1 = *i0 + 1 < in_size - 1 ? *i0 + 1 : in_size - 1;
    *w = (float)(source - (double)*i0);
}

/* The image at the model's input size, as 3 planes (R, G, B) of floats 0..255. */
static void to_model_input(const image *img, float *chw)
{
    const int H = SSDC_BUNDLE_HEIGHT, W = SSDC_BUNDLE_WIDTH, plane = H * W;
    const int same = img->width == W && img->height == H;
    for (int oy = 0; oy < H; oy++) {
        int y0 = oy, y1 = oy, x0, x1;
        float wy = 0, wx;
        if (!same) linear_tap(oy, H, img->height, &y0, &y1, &wy);
        const unsigned char *row0 = img->rgb + (size_t)y0 * img->width * 3;
        const unsigned char *row1 = img->rgb + (size_t)y1 * img->width * 3;
        for (int ox = 0; ox < W; ox++) {
            for (int c = 0; c < 3; c++) {
                float v;
                if (same) {
                    v = row0[ox * 3 + c];
                } else {
                    linear_tap(ox, W, img->width, &x0, &x1, &wx);
                    float p00 = row0[x0 * 3 + c], p01 = row0[x1 * 3 + c];
                    float p10 = row1[x0 * 3 + c], p11 = row1[x1 * 3 + c];
                    float top = p00 + (p01 - p00) * wx;
                    float bottom = p10 + (p11 - p10) * wx;
                    float blended = top + (bottom - top) * wy;
                    v = floorf(blended + 0.5f);
                    v = v < 0 ? 0 : v > 255 ? 255 : v;
                }
                chw[c * plane + oy * W + ox] = v;
            }
        }
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: detect [--weights weights.bin] [--threshold 0.9] [--threads N] [--raw] IMAGE...\n"
                    "  IMAGE: a binary PPM (P6)%s; the model takes %dx%d (HxW) pictures, others are resized.\n",
            SSDC_DETECT_PNG ? " or a PNG" : "", SSDC_BUNDLE_HEIGHT, SSDC_BUNDLE_WIDTH);
}

int main(int argc, char **argv)
{
    const char *weights = SSDC_BUNDLE_EMBEDDED_WEIGHTS ? NULL : "weights.bin";
    float threshold = 0.9f;
    int raw = 0, first_image = argc;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--weights") && i + 1 < argc) {
            weights = argv[++i];
        } else if (!strcmp(argv[i], "--threshold") && i + 1 < argc) {
            char *end;
            threshold = strtof(argv[++i], &end);
            if (*end || !(threshold >= 0 && threshold <= 1)) {
                fprintf(stderr, "error: --threshold %s: must be a number between 0 and 1\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            int n = atoi(argv[++i]);
            if (n < 1) {
                fprintf(stderr, "error: --threads %s: must be a whole number of at least 1\n", argv[i]);
                return 2;
            }
            ssdc_bundle_set_threads(n);
        } else if (!strcmp(argv[i], "--raw")) {
            raw = 1;
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            fprintf(stderr, "error: unknown option %s\n", argv[i]);
            usage();
            return 2;
        } else {
            first_image = i;
            break;
        }
    }
    if (first_image >= argc) {
        usage();
        return 2;
    }
    char error[512];
    ssdc_bundle *model = ssdc_bundle_open(weights, error, sizeof error);
    if (!model) {
        fprintf(stderr, "error: %s\n", error);
        return 1;
    }
    float *chw = malloc(sizeof(float) * 3 * SSDC_BUNDLE_HEIGHT * SSDC_BUNDLE_WIDTH);
    float *rows = malloc(sizeof(float) * 6 * SSDC_BUNDLE_ROWS);
    int failed = !chw || !rows;
    for (int i = first_image; i < argc && chw && rows; i++) {
        image img = {0, 0, NULL};
        if (!read_image(argv[i], &img)) {
            free(img.rgb);
            failed = 1;
            continue;
        }
        to_model_input(&img, chw);
        int n = ssdc_bundle_detect(model, chw, rows, SSDC_BUNDLE_ROWS);
        if (n < 0) {
            fprintf(stderr, "error: %s: the model failed\n", argv[i]);
            failed = 1;
        }
        for (int r = 0; r < n; r++) {
            const float *d = rows + 6 * r;
            if (raw) {
                printf("%d %.9g %.9g %.9g %.9g %.9g\n", (int)d[0], d[1], d[2], d[3], d[4], d[5]);
            } else if (d[0] >= 0 && d[1] >= threshold) {
                const float sx = (float)img.width, sy = (float)img.height;
                float b[4];
                for (int k = 0; k < 4; k++) b[k] = d[2 + k] < 0 ? 0 : d[2 + k] > 1 ? 1 : d[2 + k];
                printf("%s: class %d score %.6f box %.2f %.2f %.2f %.2f px\n", argv[i], (int)d[0], d[1],
                       b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy);
            }
        }
        free(img.rgb);
    }
    free(chw);
    free(rows);
    ssdc_bundle_close(model);
    return failed ? 1 : 0;
}
