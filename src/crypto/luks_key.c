/* LUKS1 key slots over nettle (crypto/sector.c): see luks_key.h. */
#include "crypto/luks_key.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <nettle/nettle-meta.h>

#include "crypto/sector.h"
#include "util/xalloc.h"

#define INVALID_PASSWORD "Invalid password, cannot unlock any keyslot"

/* The anti-forensic diffuser (qcrypto_afsplit's diffuse): each digest-sized chunk i of the
 * block becomes hash(be32(i) || chunk), truncated for a short last chunk. */
static void af_diffuse(const struct nettle_hash *h, uint8_t *block, size_t len)
{
    uint8_t d[64];
    void *ctx = xmalloc(h->context_size);
    for (size_t i = 0, off = 0; off < len; i++, off += h->digest_size) {
        size_t n = len - off < h->digest_size ? len - off : h->digest_size;
        uint8_t be[4] = { (uint8_t)(i >> 24), (uint8_t)(i >> 16), (uint8_t)(i >> 8),
                          (uint8_t)i };
        h->init(ctx);
        h->update(ctx, 4, be);
        h->update(ctx, n, block + off);
        h->digest(ctx, h->digest_size, d);
        memcpy(block + off, d, n);
    }
    free(ctx);
}

/* qcrypto_afsplit_decode: stripes blocks of len bytes merged into out[len]. */
static void af_merge(const struct nettle_hash *h, const uint8_t *split, uint32_t stripes,
                     size_t len, uint8_t *out)
{
    memset(out, 0, len);
    for (uint32_t s = 0; s + 1 < stripes; s++) {
        for (size_t i = 0; i < len; i++)
            out[i] ^= split[s * len + i];
        af_diffuse(h, out, len);
    }
    for (size_t i = 0; i < len; i++)
        out[i] ^= split[(size_t)(stripes - 1) * len + i];
}

/* qcrypto_afsplit_encode: random stripes, the last one chosen so that they merge to key. */
static int af_split(const struct nettle_hash *h, const uint8_t *key, uint32_t stripes,
                    size_t len, uint8_t *split)
{
    uint8_t *d = xcalloc(1, len);
    int r = qcrypt_random(split, (size_t)(stripes - 1) * len);
    for (uint32_t s = 0; r == 0 && s + 1 < stripes; s++) {
        for (size_t i = 0; i < len; i++)
            d[i] ^= split[s * len + i];
        af_diffuse(h, d, len);
    }
    for (size_t i = 0; r == 0 && i < len; i++)
        split[(size_t)(stripes - 1) * len + i] = d[i] ^ key[i];
    free(d);
    return r;
}

static bool mk_digest_ok(const struct luks_header *h, const struct nettle_hash *hash,
                         const uint8_t *mk)
{
    uint8_t d[LUKS_DIGEST_LEN];
    if (h->master_key_iterations == 0 || h->master_key_iterations > LUKS_MAX_ITERS)
        return false;
    qcrypt_pbkdf2(hash, mk, h->key_bytes, h->mk_salt, LUKS_SALT_LEN, h->master_key_iterations,
                  d, sizeof(d));
    return memcmp(d, h->mk_digest, sizeof(d)) == 0;
}

/* qcrypto_block_luks_load_key: 1 and the key in mk when this slot opens with pass, 0 when
 * not, -errno on I/O or cipher errors. */
static int load_key(const struct luks_header *h, const struct luks_slot *s,
                    const struct nettle_hash *hash, luks_read_fn rd, void *opaque,
                    const uint8_t *pass, size_t passlen, uint8_t *mk, char **errmsg)
{
    if (s->iterations == 0)
        return 0;
    if (s->iterations > LUKS_MAX_ITERS) {
        *errmsg = xasprintf("LUKS key slot iteration count %u is above qimg's limit of %u",
                            s->iterations, LUKS_MAX_ITERS);
        return -EINVAL;
    }
    size_t kb = h->key_bytes;
    size_t split_len = kb * s->stripes; /* stripes == 4000 and key_bytes <= 64: validated */
    size_t rounded = (split_len + QCRYPT_SECTOR - 1) / QCRYPT_SECTOR * QCRYPT_SECTOR;
    uint8_t *slot_key = xmalloc(kb);
    uint8_t *split = xcalloc(1, rounded);
    int r = rd(opaque, (uint64_t)s->key_offset_sector * LUKS_SECTOR, split, split_len, errmsg);
    if (r < 0)
        goto out;
    qcrypt_pbkdf2(hash, pass, passlen, s->salt, LUKS_SALT_LEN, s->iterations, slot_key, kb);
    qcrypt_t *c = qcrypt_new(h->cipher_alg, h->cipher_mode_name, h->ivgen_alg,
                             h->ivgen_hash_alg, slot_key, kb, errmsg);
    if (!c) {
        r = -ENOTSUP;
        goto out;
    }
    qcrypt_decrypt(c, 0, split, rounded);
    qcrypt_free(c);
    af_merge(hash, split, s->stripes, kb, mk);
    r = mk_digest_ok(h, hash, mk) ? 1 : 0;
out:
    memset(slot_key, 0, kb);
    memset(split, 0, rounded);
    free(slot_key);
    free(split);
    return r;
}

int luks_slot_try(const struct luks_header *h, unsigned idx, luks_read_fn rd, void *opaque,
                  const uint8_t *pass, size_t passlen, uint8_t *mk, char **errmsg)
{
    const struct nettle_hash *hash = qcrypt_hash(h->hash_alg);
    if (!hash || h->key_bytes == 0 || h->key_bytes > 64) {
        *errmsg = xasprintf("Hash algorithm '%s' not supported", h->hash_alg);
        return -ENOTSUP;
    }
    if (idx >= LUKS_NUM_SLOTS || h->slots[idx].active != LUKS_SLOT_ENABLED)
        return 0;
    return load_key(h, &h->slots[idx], hash, rd, opaque, pass, passlen, mk, errmsg);
}

int luks_unlock(const struct luks_header *h, luks_read_fn rd, void *opaque,
                const uint8_t *pass, size_t passlen, uint8_t **mk, char **errmsg)
{
    const struct nettle_hash *hash = qcrypt_hash(h->hash_alg);
    if (!hash || h->key_bytes == 0 || h->key_bytes > 64) {
        *errmsg = xasprintf("Hash algorithm '%s' not supported", h->hash_alg);
        return -ENOTSUP;
    }
    uint8_t *key = xmalloc(h->key_bytes);
    for (unsigned i = 0; i < LUKS_NUM_SLOTS; i++) {
        const struct luks_slot *s = &h->slots[i];
        if (s->active != LUKS_SLOT_ENABLED)
            continue;
        int r = load_key(h, s, hash, rd, opaque, pass, passlen, key, errmsg);
        if (r < 0) {
            free(key);
            return r;
        }
        if (r == 1) {
            *mk = key;
            return 0;
        }
    }
    free(key);
    *errmsg = xstrdup(INVALID_PASSWORD);
    return -EACCES;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* qcrypto_pbkdf2_count_iters: PBKDF2 iterations per second over this key. */
static uint64_t pbkdf2_rate(const struct nettle_hash *h, const uint8_t *key, size_t keylen,
                            const uint8_t *salt)
{
    struct timespec a, b;
    uint8_t out[64];
    unsigned probe = 1u << 14;
    clock_gettime(CLOCK_MONOTONIC, &a);
    qcrypt_pbkdf2(h, key, keylen, salt, LUKS_SALT_LEN, probe, out, h->digest_size);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
    if (ms <= 0)
        ms = 0.001;
    double rate = (double)probe / ms * 1e3;
    return rate >= 1e18 ? (uint64_t)1e18 : (uint64_t)rate;
}

/* The rate scaled to iter_time (qcrypto_block_luks_create): how many iterations of PBKDF2
 * over this key take iter_time_ms, at least min. */
static uint32_t timed_iters(const struct nettle_hash *h, const uint8_t *key, size_t keylen,
                            const uint8_t *salt, uint64_t iter_time_ms, uint32_t min)
{
    double iters = (double)pbkdf2_rate(h, key, keylen, salt) / 1e3 * (double)iter_time_ms;
    if (iters > LUKS_MAX_ITERS)
        iters = LUKS_MAX_ITERS;
    return iters < min ? min : (uint32_t)iters;
}

/* The cipher family name LUKS stores ("aes" for "aes-256"). */
static void family(const char *alg, char out[32])
{
    const char *dash = strchr(alg, '-');
    size_t n = dash ? (size_t)(dash - alg) : strlen(alg);
    if (n > 31)
        n = 31;
    memcpy(out, alg, n);
    out[n] = 0;
}

int luks_create(const struct luks_create_opts *o, const uint8_t *pass, size_t passlen,
                uint8_t hdr[LUKS_HEADER_LEN], uint8_t **km, size_t *km_len, uint64_t *km_off,
                uint8_t **mkout, size_t *mk_len, uint64_t *payload_off, char **errmsg)
{
    const struct nettle_hash *hash = qcrypt_hash(o->hash_alg);
    if (!hash) {
        *errmsg = xasprintf("Hash algorithm '%s' not supported", o->hash_alg);
        return -ENOTSUP;
    }
    /* the key size from the algorithm name's bits, doubled for xts */
    const char *dash = strchr(o->cipher_alg, '-');
    unsigned bits = dash ? (unsigned)strtoul(dash + 1, NULL, 10) : 0;
    size_t kb = bits / 8 * (strcmp(o->cipher_mode, "xts") ? 1 : 2);
    uint8_t *mk = xmalloc(kb ? kb : 1);
    char *err = NULL;
    int r = qcrypt_random(mk, kb);
    qcrypt_t *probe = r == 0 ? qcrypt_new(o->cipher_alg, o->cipher_mode, o->ivgen_alg,
                                          o->ivgen_hash, mk, kb, &err) : NULL;
    if (!probe) {
        *errmsg = err ? err : xasprintf("Unable to read random bytes: %s", strerror(-r));
        free(mk);
        return r < 0 ? r : -ENOTSUP;
    }
    qcrypt_free(probe);

    uint8_t slot_salt[LUKS_SALT_LEN], mk_salt[LUKS_SALT_LEN], uuid[16];
    if ((r = qcrypt_random(slot_salt, sizeof(slot_salt))) < 0 ||
        (r = qcrypt_random(mk_salt, sizeof(mk_salt))) < 0 ||
        (r = qcrypt_random(uuid, sizeof(uuid))) < 0) {
        *errmsg = xasprintf("Unable to read random bytes: %s", strerror(-r));
        free(mk);
        return r;
    }
    memset(hdr, 0, LUKS_HEADER_LEN);
    memcpy(hdr, "LUKS\xba\xbe", 6);
    hdr[LUKS_OFF_VERSION + 1] = 1;
    char fam[32];
    family(o->cipher_alg, fam);
    memcpy(hdr + LUKS_OFF_CIPHER_NAME, fam, strlen(fam));
    char mode[33];
    if (o->ivgen_hash)
        snprintf(mode, sizeof(mode), "%s-%s:%s", o->cipher_mode, o->ivgen_alg, o->ivgen_hash);
    else
        snprintf(mode, sizeof(mode), "%s-%s", o->cipher_mode, o->ivgen_alg);
    memcpy(hdr + LUKS_OFF_CIPHER_MODE, mode, strlen(mode));
    memcpy(hdr + LUKS_OFF_HASH_SPEC, o->hash_alg, strlen(o->hash_alg));
    put_be32(hdr + LUKS_OFF_KEY_BYTES, (uint32_t)kb);

    /* master key digest: a quarter-second's worth in qemu's terms (iters / 8), >= 1000 */
    uint32_t mk_iters = timed_iters(hash, mk, kb, mk_salt, o->iter_time_ms, 8000) / 8;
    uint8_t d[LUKS_DIGEST_LEN];
    qcrypt_pbkdf2(hash, mk, kb, mk_salt, LUKS_SALT_LEN, mk_iters, d, sizeof(d));
    memcpy(hdr + LUKS_OFF_MK_DIGEST, d, sizeof(d));
    memcpy(hdr + LUKS_OFF_MK_SALT, mk_salt, LUKS_SALT_LEN);
    put_be32(hdr + LUKS_OFF_MK_ITERS, mk_iters);
    uuid[6] = (uint8_t)((uuid[6] & 0x0f) | 0x40);
    uuid[8] = (uint8_t)((uuid[8] & 0x3f) | 0x80);
    char us[40];
    snprintf(us, sizeof(us), "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
             "%02x%02x%02x%02x%02x%02x", uuid[0], uuid[1], uuid[2], uuid[3], uuid[4], uuid[5],
             uuid[6], uuid[7], uuid[8], uuid[9], uuid[10], uuid[11], uuid[12], uuid[13],
             uuid[14], uuid[15]);
    memcpy(hdr + LUKS_OFF_UUID, us, strlen(us));

    /* key slots: 4 KiB of header, then each slot's material rounded to 8 sectors */
    size_t split_len = kb * LUKS_STRIPES;
    uint32_t split_sectors = (uint32_t)(((split_len + LUKS_SECTOR - 1) / LUKS_SECTOR + 7) & ~7u);
    uint32_t slot_iters = timed_iters(hash, pass, passlen, slot_salt, o->iter_time_ms, 1000);
    for (unsigned i = 0; i < LUKS_NUM_SLOTS; i++) {
        uint8_t *s = hdr + LUKS_OFF_SLOTS + i * LUKS_SLOT_LEN;
        put_be32(s + LUKS_SLOT_OFF_ACTIVE, i == 0 ? LUKS_SLOT_ENABLED : LUKS_SLOT_DISABLED);
        if (i == 0) {
            put_be32(s + LUKS_SLOT_OFF_ITERS, slot_iters);
            memcpy(s + LUKS_SLOT_OFF_SALT, slot_salt, LUKS_SALT_LEN);
        }
        put_be32(s + LUKS_SLOT_OFF_KEY_OFFSET, 4096 / LUKS_SECTOR + i * split_sectors);
        put_be32(s + LUKS_SLOT_OFF_STRIPES, LUKS_STRIPES);
    }
    uint32_t payload_sector = 4096 / LUKS_SECTOR + LUKS_NUM_SLOTS * split_sectors;
    put_be32(hdr + LUKS_OFF_PAYLOAD, payload_sector);

    size_t rounded = (size_t)split_sectors * LUKS_SECTOR;
    uint8_t *split = xcalloc(1, rounded);
    uint8_t *slot_key = xmalloc(kb);
    if ((r = af_split(hash, mk, LUKS_STRIPES, kb, split)) < 0) {
        *errmsg = xasprintf("Unable to read random bytes: %s", strerror(-r));
        free(split);
        free(slot_key);
        free(mk);
        return r;
    }
    qcrypt_pbkdf2(hash, pass, passlen, slot_salt, LUKS_SALT_LEN, slot_iters, slot_key, kb);
    qcrypt_t *c = qcrypt_new(o->cipher_alg, o->cipher_mode, o->ivgen_alg, o->ivgen_hash,
                             slot_key, kb, &err);
    qcrypt_encrypt(c, 0, split, rounded);
    qcrypt_free(c);
    memset(slot_key, 0, kb);
    free(slot_key);
    *km = split;
    *km_len = split_len;
    *km_off = 4096;
    *mkout = mk;
    *mk_len = kb;
    *payload_off = (uint64_t)payload_sector * LUKS_SECTOR;
    return 0;
}

int luks_payload_len(const struct luks_create_opts *o, uint64_t *len, char **errmsg)
{
    if (!qcrypt_hash(o->hash_alg)) {
        *errmsg = xasprintf("Hash algorithm '%s' not supported", o->hash_alg);
        return -ENOTSUP;
    }
    const char *dash = strchr(o->cipher_alg, '-');
    unsigned bits = dash ? (unsigned)strtoul(dash + 1, NULL, 10) : 0;
    size_t kb = bits / 8 * (strcmp(o->cipher_mode, "xts") ? 1 : 2);
    uint8_t key[64] = { 0 };
    qcrypt_t *c = kb <= sizeof(key) ? qcrypt_new(o->cipher_alg, o->cipher_mode, o->ivgen_alg,
                                                 o->ivgen_hash, key, kb, errmsg) : NULL;
    if (!c) {
        if (!*errmsg)
            *errmsg = xasprintf("Cipher '%s' is not supported by qimg", o->cipher_alg);
        return -ENOTSUP;
    }
    qcrypt_free(c);
    size_t split_len = kb * LUKS_STRIPES;
    uint64_t split_sectors = ((split_len + LUKS_SECTOR - 1) / LUKS_SECTOR + 7) & ~(uint64_t)7;
    *len = 4096 + LUKS_NUM_SLOTS * split_sectors * LUKS_SECTOR;
    return 0;
}

/* The key material region of a slot: its length as stored and as whole sectors. */
static void split_lens(const struct luks_header *h, const struct luks_slot *s, size_t *len,
                       size_t *rounded)
{
    *len = (size_t)h->key_bytes * s->stripes; /* key_bytes <= 64, stripes 4000: validated */
    *rounded = (*len + QCRYPT_SECTOR - 1) / QCRYPT_SECTOR * QCRYPT_SECTOR;
}

static int write_header(const struct luks_header *h, const struct luks_io *io, char **errmsg)
{
    uint8_t buf[LUKS_HEADER_LEN];
    luks_header_encode(h, buf);
    int r = io->write(io->opaque, 0, buf, sizeof(buf), errmsg);
    return r < 0 ? r : io->flush(io->opaque, errmsg);
}

int luks_slot_store(struct luks_header *h, unsigned idx, const uint8_t *pass, size_t passlen,
                    const uint8_t *mk, uint64_t iter_time_ms, const struct luks_io *io,
                    char **errmsg)
{
    const struct nettle_hash *hash = qcrypt_hash(h->hash_alg);
    if (!hash || idx >= LUKS_NUM_SLOTS || h->key_bytes == 0 || h->key_bytes > 64) {
        *errmsg = xasprintf("Hash algorithm '%s' not supported", h->hash_alg);
        return -ENOTSUP;
    }
    struct luks_slot ns = h->slots[idx];
    int r = qcrypt_random(ns.salt, LUKS_SALT_LEN);
    if (r < 0) {
        *errmsg = xasprintf("Unable to read random bytes: %s", strerror(-r));
        return r;
    }
    /* qemu's arithmetic: iterations per second, scaled in 64 bits, then refused above
     * 32 bits; an iter-time of 0 leaves the minimum */
    uint64_t rate = pbkdf2_rate(hash, pass, passlen, ns.salt);
    if (iter_time_ms && rate > UINT64_MAX / iter_time_ms) {
        *errmsg = xasprintf("PBKDF iterations %llu too large to scale: %s",
                            (unsigned long long)rate, strerror(ERANGE));
        return -ERANGE;
    }
    uint64_t iters = rate * iter_time_ms / 1000;
    if (iters > UINT32_MAX) {
        *errmsg = xasprintf("PBKDF iterations %llu larger than %u: %s",
                            (unsigned long long)iters, UINT32_MAX, strerror(ERANGE));
        return -ERANGE;
    }
    if (iters < 1000)
        iters = 1000;   /* QCRYPTO_BLOCK_LUKS_MIN_SLOT_KEY_ITERS */
    if (iters > LUKS_MAX_ITERS) {
        /* qimg would not open the slot it wrote (luks_key.h) */
        *errmsg = xasprintf("PBKDF iterations %llu are above qimg's limit of %u (use a "
                            "smaller iter-time)", (unsigned long long)iters, LUKS_MAX_ITERS);
        return -ERANGE;
    }
    ns.iterations = (uint32_t)iters;

    size_t kb = h->key_bytes, len, rounded;
    split_lens(h, &ns, &len, &rounded);
    uint8_t *split = xcalloc(1, rounded);
    uint8_t *slot_key = xmalloc(kb);
    char *err = NULL;
    if ((r = af_split(hash, mk, ns.stripes, kb, split)) < 0) {
        *errmsg = xasprintf("Unable to read random bytes: %s", strerror(-r));
        goto out;
    }
    qcrypt_pbkdf2(hash, pass, passlen, ns.salt, LUKS_SALT_LEN, ns.iterations, slot_key, kb);
    qcrypt_t *c = qcrypt_new(h->cipher_alg, h->cipher_mode_name, h->ivgen_alg,
                             h->ivgen_hash_alg, slot_key, kb, &err);
    if (!c) {
        *errmsg = err;
        r = -ENOTSUP;
        goto out;
    }
    qcrypt_encrypt(c, 0, split, rounded);
    qcrypt_free(c);
    /* the material first: until the header says active, the slot is not used */
    if ((r = io->write(io->opaque, (uint64_t)ns.key_offset_sector * LUKS_SECTOR, split, len,
                       errmsg)) < 0 ||
        (r = io->flush(io->opaque, errmsg)) < 0)
        goto out;
    ns.active = LUKS_SLOT_ENABLED;
    struct luks_slot old = h->slots[idx];
    h->slots[idx] = ns;
    if ((r = write_header(h, io, errmsg)) < 0)
        h->slots[idx] = old;
out:
    memset(slot_key, 0, kb);
    memset(split, 0, rounded);
    free(slot_key);
    free(split);
    return r;
}

int luks_slot_erase(struct luks_header *h, unsigned idx, const struct luks_io *io,
                    char **errmsg)
{
    if (idx >= LUKS_NUM_SLOTS)
        return -EINVAL;
    struct luks_slot *s = &h->slots[idx];
    memset(s->salt, 0, LUKS_SALT_LEN);
    s->iterations = 0;
    s->active = LUKS_SLOT_DISABLED;
    /* qemu goes on to destroy the key material even when the header write failed */
    char *herr = NULL;
    int hr = write_header(h, io, &herr);
    size_t len, rounded;
    split_lens(h, s, &len, &rounded);
    uint8_t *garbage = xcalloc(1, len ? len : 1);
    int r = 0;
    for (unsigned pass = 0; pass < LUKS_ERASE_PASSES && r == 0; pass++) {
        int rr = qcrypt_random(garbage, len);
        if (rr < 0 && pass > 0) {
            r = rr;
            if (!herr)
                herr = xasprintf("Unable to read random bytes: %s", strerror(-rr));
            break;
        }
        char *werr = NULL;
        r = io->write(io->opaque, (uint64_t)s->key_offset_sector * LUKS_SECTOR, garbage, len,
                      &werr);
        if (r == 0)
            r = io->flush(io->opaque, &werr);
        if (r < 0) {
            if (!herr)
                herr = werr;
            else
                free(werr);
        }
    }
    free(garbage);
    if (hr < 0 || r < 0) {
        *errmsg = herr;
        return hr < 0 ? hr : r;
    }
    return 0;
}
