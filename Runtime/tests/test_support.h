/*
 * test_support.h — the bookkeeping the runtime's C test programs share: a pass/fail line per
 * check and a seedable xorshift generator. A program may define TEST_RNG_SEED before
 * including this to draw a different sequence.
 */
#ifndef SSD_TEST_SUPPORT_H
#define SSD_TEST_SUPPORT_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

#ifndef TEST_RNG_SEED
#define TEST_RNG_SEED 0x9E3779B97F4A7C15ull
#endif

static int g_pass, g_fail;

/* Prints "ok  " or "FAIL" and the formatted description, and counts the check. */
static void report(int ok, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s ", ok ? "ok  " : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    if (ok) ++g_pass; else ++g_fail;
}

static uint64_t g_rng = TEST_RNG_SEED;

static inline float frand(void) /* uniform in [-1, 1) */
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((g_rng >> 40) * (1.0 / 8388608.0) - 1.0);
}

#endif
