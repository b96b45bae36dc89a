/* LUKS v1 header decoder: qemu 7.2's qcrypto_block_luks_check_header() and
 * qcrypto_block_luks_parse_header() rules, order and messages. */
#include "format/luks_header.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "format/be.h"

#define HDR "LUKS header"
#define FAIL(field, value, off, ...) \
    fmt_error_set(err, -EINVAL, HDR, field, value, true, off, __VA_ARGS__)

static const uint8_t luks_magic[6] = { 'L', 'U', 'K', 'S', 0xba, 0xbe };

bool luks_probe(const uint8_t *buf, size_t len)
{
    return len >= LUKS_OFF_CIPHER_NAME && memcmp(buf, luks_magic, sizeof(luks_magic)) == 0 &&
           be16_get(buf + LUKS_OFF_VERSION) == 1;
}

/* QAPI enum names qemu accepts in the header (exact, case-sensitive matches). */
static const char *const hash_names[] = { "md5", "sha1", "sha224", "sha256", "sha384",
                                          "sha512", "ripemd160" };
static const unsigned hash_digest_len[] = { 16, 20, 28, 32, 48, 64, 20 };
static const char *const mode_names[] = { "ecb", "cbc", "xts", "ctr" };
static const char *const ivgen_names[] = { "plain", "plain64", "essiv" };

static int lookup(const char *const *names, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return (int)i;
    return -1;
}
#define LOOKUP(tab, name) lookup(tab, sizeof(tab) / sizeof(tab[0]), name)

/* qemu's LUKS cipher name map: family, then algorithm per key size. */
struct cipher { const char *family, *alg; unsigned key_bytes; };
static const struct cipher ciphers[] = {
    { "aes", "aes-128", 16 }, { "aes", "aes-192", 24 }, { "aes", "aes-256", 32 },
    { "cast5", "cast5-128", 16 },
    { "serpent", "serpent-128", 16 }, { "serpent", "serpent-192", 24 },
    { "serpent", "serpent-256", 32 },
    { "twofish", "twofish-128", 16 }, { "twofish", "twofish-192", 24 },
    { "twofish", "twofish-256", 32 },
};

static const struct cipher *cipher_find(const char *family, uint32_t key_bytes)
{
    for (size_t i = 0; i < sizeof(ciphers) / sizeof(ciphers[0]); i++)
        if (strcmp(ciphers[i].family, family) == 0 && ciphers[i].key_bytes == key_bytes)
            return &ciphers[i];
    return NULL;
}

/* qemu's qcrypto_block_luks_splitkeylen_sectors(): key_bytes * stripes in unsigned int
 * (it wraps), in sectors, rounded up to the 8-sector header size. */
static uint32_t splitkey_sectors(uint32_t key_bytes, uint32_t stripes)
{
    uint32_t bytes = key_bytes * stripes;
    uint64_t sectors = ((uint64_t)bytes + LUKS_SECTOR - 1) / LUKS_SECTOR;
    return (uint32_t)((sectors + 7) & ~(uint64_t)7);
}

static bool has_nul(const uint8_t *p, size_t n)
{
    return memchr(p, 0, n) != NULL;
}

/* qcrypto_block_luks_check_header(). Start and length sums are unsigned int in qemu. */
static int check_header(const uint8_t *buf, const struct luks_header *h, struct fmt_error *err)
{
    if (memcmp(buf, luks_magic, sizeof(luks_magic)) != 0) {
        FAIL("magic", 0, LUKS_OFF_MAGIC, "must be LUKS\\xba\\xbe");
        fmt_error_qemu(err, "Volume is not in LUKS format");
        return -EINVAL;
    }
    if (h->version != 1) {
        FAIL("version", h->version, LUKS_OFF_VERSION, "must be 1");
        fmt_error_qemu(err, "LUKS version %u is not supported", h->version);
        return -EINVAL;
    }
    static const struct { const char *field, *what; unsigned off; } strs[] = {
        { "cipher_name", "cipher name", LUKS_OFF_CIPHER_NAME },
        { "cipher_mode", "cipher mode", LUKS_OFF_CIPHER_MODE },
        { "hash_spec", "hash spec", LUKS_OFF_HASH_SPEC },
    };
    for (size_t i = 0; i < 3; i++) {
        if (!has_nul(buf + strs[i].off, 32)) {
            FAIL(strs[i].field, 32, strs[i].off, "must be NUL-terminated within 32 bytes");
            fmt_error_qemu(err, "LUKS header %s is not NUL terminated", strs[i].what);
            return -EINVAL;
        }
    }
    if (h->payload_offset_sector < 4096 / LUKS_SECTOR) {
        FAIL("payload_offset", h->payload_offset_sector, LUKS_OFF_PAYLOAD,
             "must be at least 8 sectors (after the header)");
        fmt_error_qemu(err, "LUKS payload is overlapping with the header");
        return -EINVAL;
    }
    for (unsigned i = 0; i < LUKS_NUM_SLOTS; i++) {
        const struct luks_slot *s1 = &h->slots[i];
        unsigned off = LUKS_OFF_SLOTS + i * LUKS_SLOT_LEN;
        uint32_t start1 = s1->key_offset_sector;
        uint32_t len1 = splitkey_sectors(h->key_bytes, s1->stripes);
        if (s1->stripes != LUKS_STRIPES) {
            FAIL("slot.stripes", s1->stripes, off + LUKS_SLOT_OFF_STRIPES, "must be 4000");
            fmt_error_qemu(err, "Keyslot %u is corrupted (stripes %d != %d)", i,
                           (int)s1->stripes, (int)LUKS_STRIPES);
            return -EINVAL;
        }
        if (s1->active != LUKS_SLOT_DISABLED && s1->active != LUKS_SLOT_ENABLED) {
            FAIL("slot.active", s1->active, off + LUKS_SLOT_OFF_ACTIVE,
                 "must be 0xdead or 0xac71f3");
            fmt_error_qemu(err, "Keyslot %u state (active/disable) is corrupted", i);
            return -EINVAL;
        }
        if (start1 < (LUKS_HEADER_LEN + LUKS_SECTOR - 1) / LUKS_SECTOR) {
            FAIL("slot.key_offset", start1, off + LUKS_SLOT_OFF_KEY_OFFSET,
                 "must lie after the header");
            fmt_error_qemu(err, "Keyslot %u is overlapping with the LUKS header", i);
            return -EINVAL;
        }
        if ((uint32_t)(start1 + len1) > h->payload_offset_sector) {
            FAIL("slot.key_offset", start1, off + LUKS_SLOT_OFF_KEY_OFFSET,
                 "key material must end before the payload");
            fmt_error_qemu(err, "Keyslot %u is overlapping with the encrypted payload", i);
            return -EINVAL;
        }
        for (unsigned j = i + 1; j < LUKS_NUM_SLOTS; j++) {
            uint32_t start2 = h->slots[j].key_offset_sector;
            uint32_t len2 = splitkey_sectors(h->key_bytes, h->slots[j].stripes);
            if ((uint32_t)(start1 + len1) > start2 && (uint32_t)(start2 + len2) > start1) {
                FAIL("slot.key_offset", start2,
                     LUKS_OFF_SLOTS + j * LUKS_SLOT_LEN + LUKS_SLOT_OFF_KEY_OFFSET,
                     "key material overlaps slot %u's", i);
                fmt_error_qemu(err, "Keyslots %u and %u are overlapping in the header", i, j);
                return -EINVAL;
            }
        }
    }
    return 0;
}

/* The cipher ESSIV uses: the block cipher's family with the hash's digest length as key
 * length (dm-crypt's rule, qemu's qcrypto_block_luks_essiv_cipher()). */
static int essiv_cipher(const struct luks_header *h, unsigned digest, struct fmt_error *err)
{
    const struct cipher *c = NULL;
    for (size_t i = 0; i < sizeof(ciphers) / sizeof(ciphers[0]); i++)
        if (strcmp(ciphers[i].alg, h->cipher_alg) == 0)
            c = &ciphers[i];
    if (c->key_bytes == digest)
        return 0;
    const char *fam = strcmp(c->family, "aes") == 0 ? "AES"
                    : strcmp(c->family, "serpent") == 0 ? "Serpent"
                    : strcmp(c->family, "twofish") == 0 ? "Twofish" : NULL;
    if (!fam) {
        FAIL("cipher_name", 0, LUKS_OFF_CIPHER_NAME, "has no cipher for essiv");
        fmt_error_qemu(err, "Cipher %s not supported with essiv", h->cipher_alg);
        return -EINVAL;
    }
    if (cipher_find(c->family, digest))
        return 0;
    FAIL("cipher_mode", digest, LUKS_OFF_CIPHER_MODE, "essiv hash digest fits no %s key", fam);
    fmt_error_qemu(err, "No %s cipher with key size %u available", fam, digest);
    return -EINVAL;
}

/* qcrypto_block_luks_parse_header(): cipher_mode is "<mode>-<ivgen>[:<ivhash>]". */
static int parse_header(struct luks_header *h, struct fmt_error *err)
{
    char mode[33];
    memcpy(mode, h->cipher_mode, sizeof(mode));
    char *ivgen = strchr(mode, '-');
    if (!ivgen) {
        FAIL("cipher_mode", 0, LUKS_OFF_CIPHER_MODE, "must be <mode>-<ivgen>[:<hash>]");
        fmt_error_qemu(err, "Unexpected cipher mode string format '%s'", h->cipher_mode);
        return -EINVAL;
    }
    *ivgen++ = 0;
    char *ivhash = strchr(ivgen, ':');
    int ivhash_i = -1;
    if (ivhash) {
        *ivhash++ = 0;
        if ((ivhash_i = LOOKUP(hash_names, ivhash)) < 0) {
            FAIL("cipher_mode", 0, LUKS_OFF_CIPHER_MODE, "unknown IV hash");
            fmt_error_qemu(err, "Hash algorithm '%s' not supported", ivhash);
            return -EINVAL;
        }
    }
    int mode_i = LOOKUP(mode_names, mode);
    if (mode_i < 0) {
        FAIL("cipher_mode", 0, LUKS_OFF_CIPHER_MODE, "unknown cipher mode");
        fmt_error_qemu(err, "Cipher mode '%s' not supported", mode);
        return -EINVAL;
    }
    h->cipher_mode_name = mode_names[mode_i];
    uint32_t kb = h->key_bytes;
    if (strcmp(h->cipher_mode_name, "xts") == 0)
        kb /= 2;   /* XTS keys are two cipher keys */
    const struct cipher *c = cipher_find(h->cipher_name, kb);
    if (!c) {
        FAIL("key_bytes", h->key_bytes, LUKS_OFF_KEY_BYTES, "no such %s key size",
             h->cipher_name);
        fmt_error_qemu(err, "Algorithm '%s' with key size %d bytes not supported",
                       h->cipher_name, (int)kb);
        return -EINVAL;
    }
    h->cipher_alg = c->alg;
    int hash_i = LOOKUP(hash_names, h->hash_spec);
    if (hash_i < 0) {
        FAIL("hash_spec", 0, LUKS_OFF_HASH_SPEC, "unknown hash");
        fmt_error_qemu(err, "Hash algorithm '%s' not supported", h->hash_spec);
        return -EINVAL;
    }
    h->hash_alg = hash_names[hash_i];
    int ivgen_i = LOOKUP(ivgen_names, ivgen);
    if (ivgen_i < 0) {
        FAIL("cipher_mode", 0, LUKS_OFF_CIPHER_MODE, "unknown IV generator");
        fmt_error_qemu(err, "IV generator '%s' not supported", ivgen);
        return -EINVAL;
    }
    h->ivgen_alg = ivgen_names[ivgen_i];
    if (strcmp(h->ivgen_alg, "essiv") == 0) {
        if (ivhash_i < 0) {
            FAIL("cipher_mode", 0, LUKS_OFF_CIPHER_MODE, "essiv needs a hash");
            fmt_error_qemu(err, "Missing IV generator hash specification");
            return -EINVAL;
        }
        h->ivgen_hash_alg = hash_names[ivhash_i];
        return essiv_cipher(h, hash_digest_len[ivhash_i], err);
    }
    /* plain/plain64 ignore an IV hash, as dm-crypt does */
    return 0;
}

int luks_header_decode(const uint8_t *buf, size_t len, struct luks_header *h,
                       struct fmt_error *err)
{
    memset(h, 0, sizeof(*h));
    if (len < LUKS_HEADER_LEN)
        return fmt_error_set(err, -EINVAL, HDR, NULL, len, false, 0, "buffer of %zu bytes is "
                             "shorter than the %u-byte header", len, LUKS_HEADER_LEN);
    h->version = be16_get(buf + LUKS_OFF_VERSION);
    memcpy(h->cipher_name, buf + LUKS_OFF_CIPHER_NAME, 32);
    memcpy(h->cipher_mode, buf + LUKS_OFF_CIPHER_MODE, 32);
    memcpy(h->hash_spec, buf + LUKS_OFF_HASH_SPEC, 32);
    h->payload_offset_sector = be32_get(buf + LUKS_OFF_PAYLOAD);
    h->key_bytes = be32_get(buf + LUKS_OFF_KEY_BYTES);
    memcpy(h->mk_digest, buf + LUKS_OFF_MK_DIGEST, LUKS_DIGEST_LEN);
    memcpy(h->mk_salt, buf + LUKS_OFF_MK_SALT, LUKS_SALT_LEN);
    h->master_key_iterations = be32_get(buf + LUKS_OFF_MK_ITERS);
    memcpy(h->uuid, buf + LUKS_OFF_UUID, 40);
    for (unsigned i = 0; i < LUKS_NUM_SLOTS; i++) {
        const uint8_t *s = buf + LUKS_OFF_SLOTS + i * LUKS_SLOT_LEN;
        h->slots[i].active = be32_get(s + LUKS_SLOT_OFF_ACTIVE);
        h->slots[i].iterations = be32_get(s + LUKS_SLOT_OFF_ITERS);
        memcpy(h->slots[i].salt, s + LUKS_SLOT_OFF_SALT, LUKS_SALT_LEN);
        h->slots[i].key_offset_sector = be32_get(s + LUKS_SLOT_OFF_KEY_OFFSET);
        h->slots[i].stripes = be32_get(s + LUKS_SLOT_OFF_STRIPES);
    }
    int r = check_header(buf, h, err);
    if (r == 0)
        r = parse_header(h, err);
    if (r == 0)
        h->payload_offset = (uint64_t)h->payload_offset_sector * LUKS_SECTOR;
    return r;
}

void luks_header_encode(const struct luks_header *h, uint8_t buf[LUKS_HEADER_LEN])
{
    memset(buf, 0, LUKS_HEADER_LEN);
    memcpy(buf, luks_magic, sizeof(luks_magic));
    be16_put(buf + LUKS_OFF_VERSION, h->version);
    memcpy(buf + LUKS_OFF_CIPHER_NAME, h->cipher_name, 32);
    memcpy(buf + LUKS_OFF_CIPHER_MODE, h->cipher_mode, 32);
    memcpy(buf + LUKS_OFF_HASH_SPEC, h->hash_spec, 32);
    be32_put(buf + LUKS_OFF_PAYLOAD, h->payload_offset_sector);
    be32_put(buf + LUKS_OFF_KEY_BYTES, h->key_bytes);
    memcpy(buf + LUKS_OFF_MK_DIGEST, h->mk_digest, LUKS_DIGEST_LEN);
    memcpy(buf + LUKS_OFF_MK_SALT, h->mk_salt, LUKS_SALT_LEN);
    be32_put(buf + LUKS_OFF_MK_ITERS, h->master_key_iterations);
    memcpy(buf + LUKS_OFF_UUID, h->uuid, 40);
    for (unsigned i = 0; i < LUKS_NUM_SLOTS; i++) {
        uint8_t *s = buf + LUKS_OFF_SLOTS + i * LUKS_SLOT_LEN;
        be32_put(s + LUKS_SLOT_OFF_ACTIVE, h->slots[i].active);
        be32_put(s + LUKS_SLOT_OFF_ITERS, h->slots[i].iterations);
        memcpy(s + LUKS_SLOT_OFF_SALT, h->slots[i].salt, LUKS_SALT_LEN);
        be32_put(s + LUKS_SLOT_OFF_KEY_OFFSET, h->slots[i].key_offset_sector);
        be32_put(s + LUKS_SLOT_OFF_STRIPES, h->slots[i].stripes);
    }
}
