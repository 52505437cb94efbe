/*
 * cimageio: a small C shim over libpng and libjpeg for ssdc's SSDIO module.
 *
 * Why a shim: both libraries report fatal errors by longjmp-ing out of the
 * failing call (libpng) or by calling exit() (libjpeg's default handler).
 * Neither may cross into Swift frames. Every function here installs its own
 * setjmp point, catches the library's error, and returns a status code plus a
 * human-readable message instead. No function here prints, exits or aborts.
 *
 * Pixel format everywhere: 8-bit RGB, interleaved, row-major, no row padding
 * (row stride = width * 3 bytes).
 */
#ifndef CIMAGEIO_H
#define CIMAGEIO_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes returned by every function. */
typedef enum {
    CIMAGEIO_OK = 0,
    CIMAGEIO_ERR_IO = 1,          /* file could not be opened / read / written */
    CIMAGEIO_ERR_NOT_FORMAT = 2,  /* data does not start with the format's signature */
    CIMAGEIO_ERR_CORRUPT = 3,     /* the library rejected the data (corrupt or truncated) */
    CIMAGEIO_ERR_UNSUPPORTED = 4, /* valid file, but a variant we do not convert (e.g. CMYK JPEG) */
    CIMAGEIO_ERR_NOMEM = 5,       /* allocation failed or image too large to address */
    CIMAGEIO_ERR_ARGUMENT = 6     /* caller passed invalid arguments */
} cimageio_status;

/* Recommended size of the caller's error-message buffer. Messages longer than
 * the buffer are truncated; the buffer is always NUL-terminated. */
#define CIMAGEIO_ERRMSG_CAPACITY 256

/* A decoded image. `pixels` is malloc'ed by the shim (width*height*3 bytes);
 * release it with cimageio_free(). */
typedef struct {
    unsigned char *pixels;
    int width;
    int height;
} cimageio_image;

/* True (1) if the bytes start with the PNG / JPEG signature. */
int cimageio_is_png(const unsigned char *data, size_t size);
int cimageio_is_jpeg(const unsigned char *data, size_t size);

/* Decode a PNG held in memory to 8-bit RGB. Any bit depth and colour type is
 * accepted: palettes and grayscale are expanded, 16-bit samples keep their
 * high byte, alpha (and tRNS transparency) is dropped, interlacing is undone.
 * Gamma is not applied (stored values are returned as-is). */
cimageio_status cimageio_decode_png_memory(const unsigned char *data, size_t size,
                                           cimageio_image *out,
                                           char *errmsg, size_t errcap);

/* Decode a baseline or progressive JPEG held in memory to 8-bit RGB.
 * Grayscale JPEGs are expanded to RGB. A file that ends early is an error
 * (libjpeg would otherwise silently pad it with gray). CMYK/YCCK JPEGs are
 * reported as CIMAGEIO_ERR_UNSUPPORTED. EXIF orientation is not applied
 * (pixels come out in stored order, as with libjpeg, Pillow and torchvision
 * defaults). */
cimageio_status cimageio_decode_jpeg_memory(const unsigned char *data, size_t size,
                                            cimageio_image *out,
                                            char *errmsg, size_t errcap);

/* File-path variants: read the whole file, then decode as above. */
cimageio_status cimageio_decode_png_file(const char *path, cimageio_image *out,
                                         char *errmsg, size_t errcap);
cimageio_status cimageio_decode_jpeg_file(const char *path, cimageio_image *out,
                                          char *errmsg, size_t errcap);

/* Encode 8-bit RGB (width*height*3 bytes) as a PNG into a malloc'ed buffer.
 * On success *out_data / *out_size describe the buffer; free it with
 * cimageio_free(). Output is deterministic for identical input. */
cimageio_status cimageio_encode_png_memory(const unsigned char *rgb, int width, int height,
                                           unsigned char **out_data, size_t *out_size,
                                           char *errmsg, size_t errcap);

/* Encode straight to a file (not atomic; SSDIO itself encodes to memory and
 * writes through a temporary file). */
cimageio_status cimageio_encode_png_file(const unsigned char *rgb, int width, int height,
                                         const char *path,
                                         char *errmsg, size_t errcap);

/* Release a buffer returned by this shim. NULL is allowed. */
void cimageio_free(void *ptr);

#ifdef __cplusplus
}
#endif

#endif /* CIMAGEIO_H */
