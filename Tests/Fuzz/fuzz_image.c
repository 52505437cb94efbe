/*
 * fuzz_image.c — libFuzzer target for the PNG/JPEG decoders of Sources/CImageIO/cimageio.c
 * (what RGBImage.load and the data sets call). Built and run by scripts/fuzz.sh with
 * clang -fsanitize=fuzzer,address,undefined; not part of the Swift package.
 *
 * Every input goes to both decoders (each checks its own signature first). A decoder must
 * return a status and a NUL-terminated message, never crash; a decoded image must have a
 * positive size and exactly width*height*3 readable bytes (every byte is read, so ASan
 * reports a buffer that is too short), and must survive a PNG round trip unchanged.
 */
#include "cimageio.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check_message(const char *message)
{
    if (memchr(message, '\0', CIMAGEIO_ERRMSG_CAPACITY) == NULL) abort();
}

/* Encodes the decoded pixels as PNG and decodes them again: the same pixels must come back. */
static void check_round_trip(const cimageio_image *image)
{
    unsigned char *png = NULL;
    size_t size = 0;
    char message[CIMAGEIO_ERRMSG_CAPACITY];
    if (cimageio_encode_png_memory(image->pixels, image->width, image->height, &png, &size, message,
                                   sizeof message) != CIMAGEIO_OK) abort();
    cimageio_image again;
    if (cimageio_decode_png_memory(png, size, &again, message, sizeof message) != CIMAGEIO_OK) abort();
    size_t bytes = (size_t)image->width * (size_t)image->height * 3;
    if (again.width != image->width || again.height != image->height
        || memcmp(again.pixels, image->pixels, bytes) != 0) abort();
    cimageio_free(again.pixels);
    cimageio_free(png);
}

typedef cimageio_status (*decoder)(const unsigned char *, size_t, cimageio_image *, char *, size_t);

static void run(decoder decode, const uint8_t *data, size_t size)
{
    cimageio_image image;
    char message[CIMAGEIO_ERRMSG_CAPACITY];
    memset(message, 'x', sizeof message);
    cimageio_status status = decode(data, size, &image, message, sizeof message);
    check_message(message);
    if (status != CIMAGEIO_OK) {
        if (image.pixels != NULL) abort(); /* a failure hands out no buffer */
        return;
    }
    if (image.pixels == NULL || image.width <= 0 || image.height <= 0) abort();
    size_t bytes = (size_t)image.width * (size_t)image.height * 3;
    unsigned sum = 0;
    for (size_t i = 0; i < bytes; ++i) sum += image.pixels[i];
    if (sum == 0xFFFFFFFFu) abort(); /* keeps the reads */
    check_round_trip(&image);
    cimageio_free(image.pixels);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run(cimageio_decode_png_memory, data, size);
    run(cimageio_decode_jpeg_memory, data, size);
    return 0;
}
