/* SHA-256 (FIPS 180-4), for the repair journal's image identity: nettle's (see sha256.c),
 * behind qimg's small interface. */
#ifndef QIMG_UTIL_SHA256_H
#define QIMG_UTIL_SHA256_H

#include <stddef.h>
#include <stdint.h>

/* Room for nettle's struct sha256_ctx (checked in sha256.c); nettle's header is kept out
 * of here because it #defines sha256_init and sha256_update to its own names. */
struct sha256 {
    uint64_t ctx[16];
};

void sha256_init(struct sha256 *c);
void sha256_update(struct sha256 *c, const void *data, size_t len);
void sha256_final(struct sha256 *c, uint8_t out[32]);
/* Lowercase hex of a digest into out[65]. */
void sha256_hex(const uint8_t d[32], char out[65]);

#endif
