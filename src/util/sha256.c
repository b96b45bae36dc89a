/* SHA-256 over nettle: the journal hashes with the same library as the ciphers. */
#include <stdio.h>

#include <nettle/sha2.h>
/* nettle's names for its own functions, undone so that qimg's can be defined */
#undef sha256_init
#undef sha256_update
#undef sha256_digest

#include "util/sha256.h"

_Static_assert(sizeof(struct sha256_ctx) <= sizeof(((struct sha256 *)0)->ctx),
               "struct sha256 too small for nettle's context");

void sha256_init(struct sha256 *c)
{
    nettle_sha256_init((struct sha256_ctx *)c->ctx);
}

void sha256_update(struct sha256 *c, const void *data, size_t len)
{
    nettle_sha256_update((struct sha256_ctx *)c->ctx, len, data);
}

void sha256_final(struct sha256 *c, uint8_t out[32])
{
    nettle_sha256_digest((struct sha256_ctx *)c->ctx, 32, out);
}

void sha256_hex(const uint8_t d[32], char out[65])
{
    for (int i = 0; i < 32; i++)
        snprintf(out + i * 2, 3, "%02x", d[i]);
}
