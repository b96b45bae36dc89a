/* LUKS1 key slots: unlocking the master key with a passphrase (qemu's
 * qcrypto_block_luks_find_key / load_key: PBKDF2 slot key, key material decrypted with the
 * volume's cipher, anti-forensic merge, master key digest check), and making a new
 * volume's header with one active slot (qcrypto_block_luks_create). */
#ifndef QIMG_CRYPTO_LUKS_KEY_H
#define QIMG_CRYPTO_LUKS_KEY_H

#include <stddef.h>
#include <stdint.h>

#include "format/luks_header.h"

/* Slot iteration counts above this are refused rather than computed for hours (qemu would
 * try; a header written by qemu or cryptsetup with their 2 s default stays far below). */
#define LUKS_MAX_ITERS (1u << 27)

/* Reads len bytes at off relative to the LUKS header's start; 0 or -errno (with *errmsg). */
typedef int (*luks_read_fn)(void *opaque, uint64_t off, void *buf, size_t len, char **errmsg);

/* 0 and the master key (h->key_bytes, malloc'd) in *mk, or -errno with *errmsg: qemu's
 * "Invalid password, cannot unlock any keyslot" (-EACCES) when no slot opens. */
int luks_unlock(const struct luks_header *h, luks_read_fn rd, void *opaque,
                const uint8_t *pass, size_t passlen, uint8_t **mk, char **errmsg);

/* The header region's I/O for key slot changes, offsets relative to the header's start:
 * read as above, write len bytes, flush (a barrier: earlier writes reach the disk before
 * later ones). Each 0 or -errno with *errmsg. */
struct luks_io {
    luks_read_fn read;
    int (*write)(void *opaque, uint64_t off, const void *buf, size_t len, char **errmsg);
    int (*flush)(void *opaque, char **errmsg);
    void *opaque;
};

/* qcrypto_block_luks_load_key for slot idx: 1 and the master key in mk[h->key_bytes] when
 * pass opens it, 0 when not (or the slot is inactive), -errno with *errmsg. */
int luks_slot_try(const struct luks_header *h, unsigned idx, luks_read_fn rd, void *opaque,
                  const uint8_t *pass, size_t passlen, uint8_t *mk, char **errmsg);

/* qcrypto_block_luks_store_key: slot idx gets a new salt, an iteration count for
 * iter_time_ms (at least 1000, qemu's errors when out of range) and the master key mk
 * split and encrypted under pass. The key material is written and flushed before the
 * header (slot active) is written and flushed: a crash leaves the slot as it was.
 * h is updated. 0 or -errno with *errmsg (qemu's text). */
int luks_slot_store(struct luks_header *h, unsigned idx, const uint8_t *pass, size_t passlen,
                    const uint8_t *mk, uint64_t iter_time_ms, const struct luks_io *io,
                    char **errmsg);

/* qcrypto_block_luks_erase_key: the slot is marked inactive (salt and iterations zeroed)
 * in the header, written and flushed first, then its key material is overwritten with
 * random bytes LUKS_ERASE_PASSES times, each pass flushed. h is updated. */
#define LUKS_ERASE_PASSES 16
int luks_slot_erase(struct luks_header *h, unsigned idx, const struct luks_io *io,
                    char **errmsg);

/* What luks_create needs: qemu's QCryptoBlockCreateOptionsLUKS. */
struct luks_create_opts {
    const char *cipher_alg;   /* "aes-256" */
    const char *cipher_mode;  /* "xts" */
    const char *ivgen_alg;    /* "plain64" */
    const char *ivgen_hash;   /* IV hash ("cbc-essiv:sha256"), NULL when not given and not
                                 essiv (qemu then writes "xts-plain64") */
    const char *hash_alg;     /* "sha256" */
    uint64_t iter_time_ms;    /* 2000 */
};

/* Builds a header (hdr[LUKS_HEADER_LEN]) and slot 0's key material (*km, *km_len bytes, to
 * write at the slot's key offset) for pass; the master key in *mk (malloc'd, *mk_len).
 * payload_min: qemu's header+keyslots length rounded as it does; *payload_off gets the
 * payload offset in bytes. 0 or -errno with *errmsg. */
int luks_create(const struct luks_create_opts *o, const uint8_t *pass, size_t passlen,
                uint8_t hdr[LUKS_HEADER_LEN], uint8_t **km, size_t *km_len, uint64_t *km_off,
                uint8_t **mk, size_t *mk_len, uint64_t *payload_off, char **errmsg);

/* qcrypto_block_calculate_payload_offset without the key derivation: the header length
 * (header, 8 key slots) a volume with these options gets. 0 or -errno with *errmsg when the
 * cipher is not supported. */
int luks_payload_len(const struct luks_create_opts *o, uint64_t *len, char **errmsg);

#endif
