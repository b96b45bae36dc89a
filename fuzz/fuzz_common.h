/* Shared helpers of the libFuzzer targets. Every target is also linked with replay_main.c
 * into a plain (gcc, no sanitizer) program that `make test` runs over corpus/regressions,
 * so each input that ever crashed stays replayed. */
#ifndef QIMG_FUZZ_COMMON_H
#define QIMG_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "format/be.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Optional (weak): run once before the first input, by libFuzzer and by replay_main. */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

/* Move into a fresh scratch directory holding the files the seed images name (backing
 * "base.qcow2", data file "df.raw"), so opening an image never depends on the caller's
 * working directory. */
void fuzz_enter_scratch_dir(void);

/* Abort (so libFuzzer records a crash) when an invariant the decoders promise fails. */
#define FUZZ_ASSERT(c)                                                                   \
    do {                                                                                 \
        if (!(c)) {                                                                      \
            fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", __FILE__, __LINE__, #c); \
            abort();                                                                     \
        }                                                                                \
    } while (0)

/* Header fields read without validation (zero past the end of the input). */
static inline uint64_t fz_be64(const uint8_t *d, size_t n, uint64_t off)
{
    return off + 8 <= n ? be64_get(d + off) : 0;
}

static inline uint32_t fz_be32(const uint8_t *d, size_t n, uint64_t off)
{
    return off + 4 <= n ? be32_get(d + off) : 0;
}

/* A cluster_bits in 9..21 derived from the header byte (any value maps somewhere). */
static inline uint32_t fz_cluster_bits(const uint8_t *d, size_t n)
{
    uint32_t cb = fz_be32(d, n, 20);
    return cb >= 9 && cb <= 21 ? cb : 9 + cb % 13;
}

#endif
