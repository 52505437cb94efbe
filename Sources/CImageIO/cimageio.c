/*
 * cimageio.c: PNG/JPEG decode and PNG encode for SSDIO.
 *
 * Error-handling model (the reason this file exists):
 *   - libpng: we pass our own error callback that copies the message into the
 *     caller's buffer and longjmps to png_jmpbuf(), which we set with setjmp()
 *     in the same C function that owns all resources. Warnings are swallowed
 *     (libpng's default would print them to stderr).
 *   - libjpeg: the default error_exit calls exit(). We replace it with one that
 *     formats the message into the caller's buffer and longjmps to a jmp_buf
 *     we own. Warnings are not printed; a "premature end of file" warning is
 *     promoted to an error because libjpeg would otherwise return an image
 *     silently padded with gray.
 * No longjmp ever leaves this file: each public function is the setjmp point.
 *
 * Locals that are modified after setjmp() and read after a longjmp() are
 * declared volatile, as the C standard requires for their values to survive.
 */
#include "cimageio.h"

#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>
/* jpeglib.h needs size_t and FILE declared first (stdio.h above). */
#include <jpeglib.h>
#include <jerror.h>

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

/* printf into the caller's message buffer; tolerates NULL / zero capacity. */
static void set_msg(char *buf, size_t cap, const char *fmt, ...) {
    if (buf == NULL || cap == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
}

static void clear_out(cimageio_image *out, char *errmsg, size_t errcap) {
    if (out != NULL) {
        out->pixels = NULL;
        out->width = 0;
        out->height = 0;
    }
    if (errmsg != NULL && errcap > 0) errmsg[0] = '\0';
}

/* width*height*3 without overflow; also keeps dimensions within int range so
 * the Swift side can use Int32 safely. Returns 0 on overflow. */
static size_t rgb_buffer_size(unsigned long width, unsigned long height) {
    if (width == 0 || height == 0) return 0;
    if (width > INT_MAX || height > INT_MAX) return 0;
    if (width > SIZE_MAX / 3 / height) return 0;
    return (size_t)width * (size_t)height * 3;
}

/* Largest image decoded: 64 megapixels (e.g. 8192x8192), far above any photo ssdc trains on
 * or annotates. A header is only a claim: without this, a few hundred bytes claiming
 * 65000x16000 pixels (found by scripts/fuzz.sh) make libjpeg allocate gigabytes. */
#define CIMAGEIO_MAX_PIXELS ((unsigned long)1 << 26)

static int too_many_pixels(unsigned long width, unsigned long height, char *errmsg, size_t errcap) {
    if (width == 0 || height <= CIMAGEIO_MAX_PIXELS / width) return 0;
    set_msg(errmsg, errcap, "image is %lux%lu, more than the limit of %lu pixels", width, height,
            CIMAGEIO_MAX_PIXELS);
    return 1;
}

int cimageio_is_png(const unsigned char *data, size_t size) {
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    return data != NULL && size >= 8 && memcmp(data, sig, 8) == 0;
}

int cimageio_is_jpeg(const unsigned char *data, size_t size) {
    /* SOI marker followed by the start of another marker. */
    return data != NULL && size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF;
}

void cimageio_free(void *ptr) { free(ptr); }

/* Reads a whole file into a malloc'ed buffer. */
static cimageio_status read_whole_file(const char *path, unsigned char **out_data, size_t *out_size,
                                       char *errmsg, size_t errcap) {
    *out_data = NULL;
    *out_size = 0;
    if (path == NULL) {
        set_msg(errmsg, errcap, "no path given");
        return CIMAGEIO_ERR_ARGUMENT;
    }
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        set_msg(errmsg, errcap, "cannot open: %s", strerror(errno));
        return CIMAGEIO_ERR_IO;
    }
    size_t cap = 1 << 16, size = 0;
    unsigned char *buf = malloc(cap);
    if (buf == NULL) {
        fclose(f);
        set_msg(errmsg, errcap, "out of memory");
        return CIMAGEIO_ERR_NOMEM;
    }
    for (;;) {
        if (size == cap) {
            if (cap > SIZE_MAX / 2) {
                free(buf);
                fclose(f);
                set_msg(errmsg, errcap, "file too large");
                return CIMAGEIO_ERR_NOMEM;
            }
            unsigned char *bigger = realloc(buf, cap * 2);
            if (bigger == NULL) {
                free(buf);
                fclose(f);
                set_msg(errmsg, errcap, "out of memory");
                return CIMAGEIO_ERR_NOMEM;
            }
            buf = bigger;
            cap *= 2;
        }
        size_t n = fread(buf + size, 1, cap - size, f);
        size += n;
        if (n == 0) break;
    }
    int failed = ferror(f);
    int saved_errno = errno;
    fclose(f);
    if (failed) {
        free(buf);
        set_msg(errmsg, errcap, "read error: %s", strerror(saved_errno));
        return CIMAGEIO_ERR_IO;
    }
    *out_data = buf;
    *out_size = size;
    return CIMAGEIO_OK;
}

/* ------------------------------------------------------------------------ */
/* PNG                                                                       */
/* ------------------------------------------------------------------------ */

typedef struct {
    char *msg;
    size_t cap;
} png_err_sink;

/* libpng error callback: record the message and jump back to our setjmp.
 * It must not return (libpng would then print and longjmp on its own). */
static void png_error_cb(png_structp png, png_const_charp message) {
    png_err_sink *sink = (png_err_sink *)png_get_error_ptr(png);
    if (sink != NULL) set_msg(sink->msg, sink->cap, "%s", message ? message : "libpng error");
    png_longjmp(png, 1);
}

/* libpng warnings (e.g. an unknown ancillary chunk) are harmless; stay quiet. */
static void png_warning_cb(png_structp png, png_const_charp message) {
    (void)png;
    (void)message;
}

typedef struct {
    const unsigned char *data;
    size_t size;
    size_t pos;
} png_mem_reader;

static void png_read_cb(png_structp png, png_bytep dest, size_t length) {
    png_mem_reader *r = (png_mem_reader *)png_get_io_ptr(png);
    if (length > r->size - r->pos) {
        png_error(png, "unexpected end of data (truncated PNG)");
    }
    memcpy(dest, r->data + r->pos, length);
    r->pos += length;
}

cimageio_status cimageio_decode_png_memory(const unsigned char *data, size_t size,
                                           cimageio_image *out,
                                           char *errmsg, size_t errcap) {
    clear_out(out, errmsg, errcap);
    if (data == NULL || out == NULL) {
        set_msg(errmsg, errcap, "invalid arguments");
        return CIMAGEIO_ERR_ARGUMENT;
    }
    if (!cimageio_is_png(data, size)) {
        set_msg(errmsg, errcap, "missing PNG signature");
        return CIMAGEIO_ERR_NOT_FORMAT;
    }

    png_err_sink sink = {errmsg, errcap};
    png_mem_reader reader = {data, size, 0};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &sink, png_error_cb, png_warning_cb);
    if (png == NULL) {
        set_msg(errmsg, errcap, "out of memory (png_create_read_struct)");
        return CIMAGEIO_ERR_NOMEM;
    }
    png_infop info = png_create_info_struct(png);
    if (info == NULL) {
        png_destroy_read_struct(&png, NULL, NULL);
        set_msg(errmsg, errcap, "out of memory (png_create_info_struct)");
        return CIMAGEIO_ERR_NOMEM;
    }

    unsigned char *volatile pixels = NULL;
    png_bytep *volatile rows = NULL;
    /* What a longjmp means; changed only for the few non-corruption failures. */
    volatile cimageio_status failure = CIMAGEIO_ERR_CORRUPT;

    if (setjmp(png_jmpbuf(png))) {
        free(pixels);
        free(rows);
        png_destroy_read_struct(&png, &info, NULL);
        return failure;
    }

    png_set_read_fn(png, &reader, png_read_cb);
    png_read_info(png, info);

    png_uint_32 width = 0, height = 0;
    int bit_depth = 0, color_type = 0;
    png_get_IHDR(png, info, &width, &height, &bit_depth, &color_type, NULL, NULL, NULL);
    if (too_many_pixels(width, height, errmsg, errcap)) {
        png_destroy_read_struct(&png, &info, NULL);
        return CIMAGEIO_ERR_UNSUPPORTED;
    }

    /* Normalise every PNG flavour to 8-bit RGB. */
    if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (bit_depth == 16) png_set_strip_16(png); /* keep the high byte, as most decoders do */
    /* palette_to_rgb also turns tRNS into an alpha channel, so strip alpha
     * whenever the image has alpha or transparency information. */
    if ((color_type & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS)) {
        png_set_strip_alpha(png);
    }
    if (color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_GRAY_ALPHA) {
        png_set_gray_to_rgb(png);
    }
    (void)png_set_interlace_handling(png);
    png_read_update_info(png, info);

    if (png_get_channels(png, info) != 3 || png_get_bit_depth(png, info) != 8) {
        failure = CIMAGEIO_ERR_UNSUPPORTED;
        png_error(png, "could not convert PNG to 8-bit RGB");
    }
    size_t total = rgb_buffer_size(width, height);
    size_t stride = (size_t)width * 3;
    if (total == 0 || png_get_rowbytes(png, info) != stride) {
        failure = CIMAGEIO_ERR_NOMEM;
        png_error(png, "image dimensions too large");
    }
    pixels = malloc(total);
    rows = malloc(sizeof(png_bytep) * height);
    if (pixels == NULL || rows == NULL) {
        failure = CIMAGEIO_ERR_NOMEM;
        png_error(png, "out of memory for pixel buffer");
    }
    for (png_uint_32 y = 0; y < height; y++) rows[y] = pixels + (size_t)y * stride;

    png_read_image(png, rows);
    /* We deliberately skip png_read_end(): all pixel data has been read and
     * checked by now; trailing chunks (text, IEND) do not affect the pixels. */

    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    out->pixels = pixels;
    out->width = (int)width;
    out->height = (int)height;
    return CIMAGEIO_OK;
}

cimageio_status cimageio_decode_png_file(const char *path, cimageio_image *out,
                                         char *errmsg, size_t errcap) {
    clear_out(out, errmsg, errcap);
    unsigned char *data = NULL;
    size_t size = 0;
    cimageio_status st = read_whole_file(path, &data, &size, errmsg, errcap);
    if (st != CIMAGEIO_OK) return st;
    st = cimageio_decode_png_memory(data, size, out, errmsg, errcap);
    free(data);
    return st;
}

typedef struct {
    unsigned char *data;
    size_t size;
    size_t cap;
} png_mem_writer;

static void png_write_cb(png_structp png, png_bytep src, size_t length) {
    png_mem_writer *w = (png_mem_writer *)png_get_io_ptr(png);
    if (length > SIZE_MAX - w->size) png_error(png, "PNG output too large");
    if (w->size + length > w->cap) {
        size_t cap = w->cap ? w->cap : 4096;
        while (cap < w->size + length) {
            if (cap > SIZE_MAX / 2) png_error(png, "PNG output too large");
            cap *= 2;
        }
        unsigned char *bigger = realloc(w->data, cap);
        if (bigger == NULL) png_error(png, "out of memory for PNG output");
        w->data = bigger;
        w->cap = cap;
    }
    memcpy(w->data + w->size, src, length);
    w->size += length;
}

static void png_flush_cb(png_structp png) { (void)png; }

cimageio_status cimageio_encode_png_memory(const unsigned char *rgb, int width, int height,
                                           unsigned char **out_data, size_t *out_size,
                                           char *errmsg, size_t errcap) {
    if (errmsg != NULL && errcap > 0) errmsg[0] = '\0';
    if (out_data != NULL) *out_data = NULL;
    if (out_size != NULL) *out_size = 0;
    if (rgb == NULL || out_data == NULL || out_size == NULL || width <= 0 || height <= 0) {
        set_msg(errmsg, errcap, "invalid arguments (width %d, height %d)", width, height);
        return CIMAGEIO_ERR_ARGUMENT;
    }
    if (rgb_buffer_size((unsigned long)width, (unsigned long)height) == 0) {
        set_msg(errmsg, errcap, "image dimensions too large");
        return CIMAGEIO_ERR_NOMEM;
    }

    png_err_sink sink = {errmsg, errcap};
    /* The writer lives in memory (not a register) because callbacks update it
     * through a pointer; that is why it need not be volatile. */
    png_mem_writer writer = {NULL, 0, 0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &sink, png_error_cb, png_warning_cb);
    if (png == NULL) {
        set_msg(errmsg, errcap, "out of memory (png_create_write_struct)");
        return CIMAGEIO_ERR_NOMEM;
    }
    png_infop info = png_create_info_struct(png);
    if (info == NULL) {
        png_destroy_write_struct(&png, NULL);
        set_msg(errmsg, errcap, "out of memory (png_create_info_struct)");
        return CIMAGEIO_ERR_NOMEM;
    }
    png_bytep *volatile rows = NULL;

    if (setjmp(png_jmpbuf(png))) {
        free(rows);
        free(writer.data);
        png_destroy_write_struct(&png, &info);
        /* Encoding cannot meet corrupt input; failures are resource problems. */
        return CIMAGEIO_ERR_NOMEM;
    }

    png_set_write_fn(png, &writer, png_write_cb, png_flush_cb);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    rows = malloc(sizeof(png_bytep) * (size_t)height);
    if (rows == NULL) png_error(png, "out of memory");
    size_t stride = (size_t)width * 3;
    /* libpng takes non-const row pointers but does not modify them when no
     * write transformations are set, so casting away const is safe. */
    for (int y = 0; y < height; y++) rows[y] = (png_bytep)(rgb + (size_t)y * stride);

    png_write_info(png, info);
    png_write_image(png, rows);
    png_write_end(png, NULL);

    free(rows);
    png_destroy_write_struct(&png, &info);
    *out_data = writer.data;
    *out_size = writer.size;
    return CIMAGEIO_OK;
}

cimageio_status cimageio_encode_png_file(const unsigned char *rgb, int width, int height,
                                         const char *path,
                                         char *errmsg, size_t errcap) {
    if (path == NULL) {
        set_msg(errmsg, errcap, "no path given");
        return CIMAGEIO_ERR_ARGUMENT;
    }
    unsigned char *data = NULL;
    size_t size = 0;
    cimageio_status st = cimageio_encode_png_memory(rgb, width, height, &data, &size, errmsg, errcap);
    if (st != CIMAGEIO_OK) return st;
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        set_msg(errmsg, errcap, "cannot create: %s", strerror(errno));
        free(data);
        return CIMAGEIO_ERR_IO;
    }
    size_t written = fwrite(data, 1, size, f);
    int saved_errno = errno;
    int close_failed = fclose(f);
    free(data);
    if (written != size || close_failed != 0) {
        set_msg(errmsg, errcap, "write error: %s", strerror(saved_errno));
        return CIMAGEIO_ERR_IO;
    }
    return CIMAGEIO_OK;
}

/* ------------------------------------------------------------------------ */
/* JPEG                                                                      */
/* ------------------------------------------------------------------------ */

typedef struct {
    struct jpeg_error_mgr pub; /* must be first: libjpeg sees only this part */
    jmp_buf jump;
    char *msg;
    size_t cap;
} jpeg_err_sink;

/* Replaces libjpeg's error_exit (which would call exit()). */
static void jpeg_error_exit_cb(j_common_ptr cinfo) {
    jpeg_err_sink *sink = (jpeg_err_sink *)cinfo->err;
    char buffer[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, buffer);
    set_msg(sink->msg, sink->cap, "%s", buffer);
    longjmp(sink->jump, 1);
}

/* Replaces emit_message: never print; promote "premature end of file" to an
 * error because a truncated file is not an image we should train on. */
static void jpeg_emit_message_cb(j_common_ptr cinfo, int msg_level) {
    if (msg_level < 0) {
        if (cinfo->err->msg_code == JWRN_JPEG_EOF) {
            jpeg_error_exit_cb(cinfo);
        }
        cinfo->err->num_warnings++;
    }
}

static void jpeg_output_message_cb(j_common_ptr cinfo) { (void)cinfo; }

cimageio_status cimageio_decode_jpeg_memory(const unsigned char *data, size_t size,
                                            cimageio_image *out,
                                            char *errmsg, size_t errcap) {
    clear_out(out, errmsg, errcap);
    if (data == NULL || out == NULL) {
        set_msg(errmsg, errcap, "invalid arguments");
        return CIMAGEIO_ERR_ARGUMENT;
    }
    if (!cimageio_is_jpeg(data, size)) {
        set_msg(errmsg, errcap, "missing JPEG signature");
        return CIMAGEIO_ERR_NOT_FORMAT;
    }
    if (size > ULONG_MAX) {
        set_msg(errmsg, errcap, "JPEG data too large");
        return CIMAGEIO_ERR_NOMEM;
    }

    struct jpeg_decompress_struct cinfo;
    jpeg_err_sink sink;
    memset(&cinfo, 0, sizeof cinfo);
    cinfo.err = jpeg_std_error(&sink.pub);
    sink.pub.error_exit = jpeg_error_exit_cb;
    sink.pub.emit_message = jpeg_emit_message_cb;
    sink.pub.output_message = jpeg_output_message_cb;
    sink.msg = errmsg;
    sink.cap = errcap;

    unsigned char *volatile pixels = NULL;
    volatile cimageio_status failure = CIMAGEIO_ERR_CORRUPT;

    if (setjmp(sink.jump)) {
        jpeg_destroy_decompress(&cinfo);
        free(pixels);
        return failure;
    }

    jpeg_create_decompress(&cinfo);
    /* Some libjpeg versions declare the buffer non-const; it is only read. */
    jpeg_mem_src(&cinfo, (unsigned char *)data, (unsigned long)size);
    (void)jpeg_read_header(&cinfo, TRUE);

    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        failure = CIMAGEIO_ERR_UNSUPPORTED;
        set_msg(errmsg, errcap, "CMYK/YCCK JPEGs are not supported (only RGB/YCbCr/grayscale)");
        longjmp(sink.jump, 1);
    }
    if (too_many_pixels(cinfo.image_width, cinfo.image_height, errmsg, errcap)) {
        jpeg_destroy_decompress(&cinfo);
        return CIMAGEIO_ERR_UNSUPPORTED;
    }
    cinfo.out_color_space = JCS_RGB; /* grayscale is expanded by libjpeg */
    (void)jpeg_start_decompress(&cinfo);

    if (cinfo.output_components != 3) {
        failure = CIMAGEIO_ERR_UNSUPPORTED;
        set_msg(errmsg, errcap, "could not convert JPEG to RGB (%d components)", cinfo.output_components);
        longjmp(sink.jump, 1);
    }
    size_t total = rgb_buffer_size(cinfo.output_width, cinfo.output_height);
    if (total == 0) {
        failure = CIMAGEIO_ERR_NOMEM;
        set_msg(errmsg, errcap, "image dimensions too large");
        longjmp(sink.jump, 1);
    }
    pixels = malloc(total);
    if (pixels == NULL) {
        failure = CIMAGEIO_ERR_NOMEM;
        set_msg(errmsg, errcap, "out of memory for pixel buffer");
        longjmp(sink.jump, 1);
    }
    size_t stride = (size_t)cinfo.output_width * 3;
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = pixels + (size_t)cinfo.output_scanline * stride;
        (void)jpeg_read_scanlines(&cinfo, &row, 1);
    }
    (void)jpeg_finish_decompress(&cinfo);

    out->pixels = pixels;
    out->width = (int)cinfo.output_width;
    out->height = (int)cinfo.output_height;
    jpeg_destroy_decompress(&cinfo);
    return CIMAGEIO_OK;
}

cimageio_status cimageio_decode_jpeg_file(const char *path, cimageio_image *out,
                                          char *errmsg, size_t errcap) {
    clear_out(out, errmsg, errcap);
    unsigned char *data = NULL;
    size_t size = 0;
    cimageio_status st = read_whole_file(path, &data, &size, errmsg, errcap);
    if (st != CIMAGEIO_OK) return st;
    st = cimageio_decode_jpeg_memory(data, size, out, errmsg, errcap);
    free(data);
    return st;
}
