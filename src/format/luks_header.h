/* LUKS version 1 header (592 bytes, big-endian; cryptsetup's on-disk format 1.2.1): decode
 * and validate in the order of qemu 7.2's qcrypto_block_luks_open() with the NO_IO flag
 * (load, check_header, parse_header), with its messages in err->qemu_msg. No key is needed:
 * everything qemu-img info shows about a LUKS volume is in this header. */
#ifndef QIMG_FORMAT_LUKS_HEADER_H
#define QIMG_FORMAT_LUKS_HEADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "format/fmt_error.h"

#define LUKS_HEADER_LEN    592u
#define LUKS_NUM_SLOTS     8
#define LUKS_STRIPES       4000u
#define LUKS_SECTOR        512u
#define LUKS_SLOT_DISABLED 0x0000DEADu
#define LUKS_SLOT_ENABLED  0x00AC71F3u
#define LUKS_DIGEST_LEN    20
#define LUKS_SALT_LEN      32

enum {
    LUKS_OFF_MAGIC = 0, LUKS_OFF_VERSION = 6, LUKS_OFF_CIPHER_NAME = 8,
    LUKS_OFF_CIPHER_MODE = 40, LUKS_OFF_HASH_SPEC = 72, LUKS_OFF_PAYLOAD = 104,
    LUKS_OFF_KEY_BYTES = 108, LUKS_OFF_MK_DIGEST = 112, LUKS_OFF_MK_SALT = 132,
    LUKS_OFF_MK_ITERS = 164, LUKS_OFF_UUID = 168,
    LUKS_OFF_SLOTS = 208, LUKS_SLOT_LEN = 48,
    /* within a slot */
    LUKS_SLOT_OFF_ACTIVE = 0, LUKS_SLOT_OFF_ITERS = 4, LUKS_SLOT_OFF_SALT = 8,
    LUKS_SLOT_OFF_KEY_OFFSET = 40,
    LUKS_SLOT_OFF_STRIPES = 44,
};

struct luks_slot {
    uint32_t active;            /* LUKS_SLOT_ENABLED or LUKS_SLOT_DISABLED once validated */
    uint32_t iterations;
    uint8_t salt[LUKS_SALT_LEN];
    uint32_t key_offset_sector;
    uint32_t stripes;
};

struct luks_header {
    uint16_t version;
    char cipher_name[33], cipher_mode[33], hash_spec[33];  /* NUL-terminated (validated) */
    uint32_t payload_offset_sector;
    uint32_t key_bytes;
    uint8_t mk_digest[LUKS_DIGEST_LEN];
    uint8_t mk_salt[LUKS_SALT_LEN];
    uint32_t master_key_iterations;
    char uuid[41];              /* up to the first NUL, as qemu's g_strndup */
    struct luks_slot slots[LUKS_NUM_SLOTS];

    /* parsed, as qemu's QAPI enum names (static strings) */
    const char *cipher_alg;     /* "aes-256" */
    const char *cipher_mode_name; /* "xts" */
    const char *ivgen_alg;      /* "plain64" */
    const char *ivgen_hash_alg; /* only with essiv, else NULL */
    const char *hash_alg;       /* "sha256" */
    uint64_t payload_offset;    /* bytes */
};

/* qemu's qcrypto_block_luks_has_format(): magic and version 1 in the first 8 bytes. */
bool luks_probe(const uint8_t *buf, size_t len);

/* buf: the header's bytes, zero-padded past EOF by the caller (qemu's reads do that);
 * at least LUKS_HEADER_LEN. Returns 0 or -EINVAL with err filled. */
int luks_header_decode(const uint8_t *buf, size_t len, struct luks_header *h,
                       struct fmt_error *err);

/* The inverse of the decode (qemu's qcrypto_block_luks_store_header): the 592 bytes of a
 * decoded header, every stored byte kept (string bytes after the NUL included), so that a
 * decode, a slot change and an encode alter only that slot's fields. */
void luks_header_encode(const struct luks_header *h, uint8_t buf[LUKS_HEADER_LEN]);

#endif
