/* Sector ciphers and LUKS key slots (src/crypto/): published vectors for the nettle wiring
 * (IEEE 1619 XTS-AES, RFC 7914 PBKDF2-HMAC-SHA256), IV numbering per sector, and a header
 * made by luks_create unlocked again by luks_unlock (right and wrong passphrase), the
 * header encoder and key slot amend (order of writes and flushes). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <nettle/nettle-meta.h>

#include "crypto/luks_amend.h"
#include "crypto/luks_key.h"
#include "crypto/sector.h"
#include "format/luks_header.h"
#include "util/secrets.h"

static void hex(const char *s, uint8_t *out)
{
    for (size_t i = 0; s[2 * i]; i++) {
        unsigned v;
        sscanf(s + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
}

/* IEEE 1619-2007 XTS-AES-128 vector 1: zero keys, tweak (sector) 0, 32 zero bytes */
static void test_xts_vector(void **state)
{
    (void)state;
    uint8_t key[32] = { 0 }, buf[32] = { 0 }, want[32];
    hex("917cf69ebd68b2ec9b9fe9a3eadda692cd43d2f59598ed858c02c2652fbf922e", want);
    char *err = NULL;
    qcrypt_t *c = qcrypt_new("aes-128", "xts", "plain64", NULL, key, sizeof(key), &err);
    assert_non_null(c);
    qcrypt_encrypt(c, 0, buf, sizeof(buf));
    assert_memory_equal(buf, want, sizeof(want));
    qcrypt_decrypt(c, 0, buf, sizeof(buf));
    uint8_t zero[32] = { 0 };
    assert_memory_equal(buf, zero, sizeof(zero));
    qcrypt_free(c);
}

/* RFC 7914 section 11: PBKDF2-HMAC-SHA256("passwd", "salt", 1, 64) */
static void test_pbkdf2_vector(void **state)
{
    (void)state;
    uint8_t out[64], want[64];
    hex("55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        "49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783", want);
    qcrypt_pbkdf2(qcrypt_hash("sha256"), (const uint8_t *)"passwd", 6,
                  (const uint8_t *)"salt", 4, 1, out, sizeof(out));
    assert_memory_equal(out, want, sizeof(want));
}

/* Each 512-byte sector has its own IV: encrypting two sectors at once equals encrypting
 * them one by one with consecutive sector numbers; plain wraps at 2^32, plain64 not. */
static void test_sector_ivs(void **state)
{
    (void)state;
    static const char *const modes[][3] = {
        { "aes-256", "xts", "plain64" }, { "aes-128", "cbc", "essiv" },
        { "aes-256", "cbc", "plain" }, { "serpent-256", "xts", "plain64" },
        { "twofish-128", "ctr", "plain64" },
    };
    for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
        uint8_t key[64];
        for (size_t i = 0; i < sizeof(key); i++)
            key[i] = (uint8_t)(i * 7 + 1);
        size_t kl = (size_t)atoi(strchr(modes[m][0], '-') + 1) / 8;
        if (!strcmp(modes[m][1], "xts"))
            kl *= 2;
        char *err = NULL;
        qcrypt_t *c = qcrypt_new(modes[m][0], modes[m][1], modes[m][2], "sha256", key, kl, &err);
        assert_non_null(c);
        uint8_t a[1024], b[1024];
        for (size_t i = 0; i < sizeof(a); i++)
            a[i] = b[i] = (uint8_t)i;
        uint64_t s = (1ull << 32) - 1;
        qcrypt_encrypt(c, s, a, sizeof(a));
        qcrypt_encrypt(c, s, b, 512);
        qcrypt_encrypt(c, s + 1, b + 512, 512);
        assert_memory_equal(a, b, sizeof(a));
        assert_memory_not_equal(a, a + 512, 16); /* different IVs, same-ish data */
        qcrypt_decrypt(c, s, a, sizeof(a));
        for (size_t i = 0; i < sizeof(a); i++)
            assert_int_equal(a[i], (uint8_t)i);
        qcrypt_free(c);
    }
    char *err = NULL;
    uint8_t key[16] = { 0 };
    assert_null(qcrypt_new("des-rfb", "cbc", "plain64", NULL, key, 8, &err));
    assert_non_null(err);
    free(err);
}

struct vol {
    uint8_t *b;
    size_t len;
};

static int vol_read(void *opaque, uint64_t off, void *buf, size_t len, char **errmsg)
{
    struct vol *v = opaque;
    (void)errmsg;
    memset(buf, 0, len);
    if (off < v->len)
        memcpy(buf, v->b + off, len < v->len - off ? len : v->len - off);
    return 0;
}

/* luks_create's header and key material, decoded and unlocked as an image read back */
static void test_create_unlock(void **state)
{
    (void)state;
    struct luks_create_opts o = { "aes-256", "xts", "plain64", NULL, "sha256", 1 };
    uint8_t hdr[LUKS_HEADER_LEN], *km, *mk;
    size_t km_len, mk_len;
    uint64_t km_off, payload;
    char *err = NULL;
    assert_int_equal(luks_create(&o, (const uint8_t *)"pw", 2, hdr, &km, &km_len, &km_off,
                                 &mk, &mk_len, &payload, &err), 0);
    assert_int_equal(payload, 2068480);
    assert_int_equal(mk_len, 64);
    uint64_t plen;
    assert_int_equal(luks_payload_len(&o, &plen, &err), 0);
    assert_int_equal(plen, payload);
    struct vol v = { calloc(1, payload), payload };
    memcpy(v.b, hdr, sizeof(hdr));
    memcpy(v.b + km_off, km, km_len);
    struct luks_header h;
    struct fmt_error fe;
    fmt_error_clear(&fe);
    assert_int_equal(luks_header_decode(v.b, LUKS_HEADER_LEN, &h, &fe), 0);
    uint8_t *got = NULL;
    assert_int_equal(luks_unlock(&h, vol_read, &v, (const uint8_t *)"pw", 2, &got, &err), 0);
    assert_memory_equal(got, mk, mk_len);
    free(got);
    got = NULL;
    assert_int_equal(luks_unlock(&h, vol_read, &v, (const uint8_t *)"px", 2, &got, &err),
                     -13);
    assert_string_equal(err, "Invalid password, cannot unlock any keyslot");
    free(err);
    /* a slot with a hostile iteration count is refused, not computed for hours */
    h.slots[0].iterations = LUKS_MAX_ITERS + 1;
    err = NULL;
    assert_true(luks_unlock(&h, vol_read, &v, (const uint8_t *)"pw", 2, &got, &err) < 0);
    assert_non_null(err);
    free(err);
    free(v.b);
    free(km);
    free(mk);
}

/* A volume in memory that logs each write's offset and each flush (as -1). */
struct logvol {
    struct vol v;
    int64_t log[64];
    size_t n;
};

static int log_write(void *opaque, uint64_t off, const void *buf, size_t len, char **errmsg)
{
    struct logvol *l = opaque;
    (void)errmsg;
    assert_true(off + len <= l->v.len);
    memcpy(l->v.b + off, buf, len);
    if (l->n < 64)
        l->log[l->n++] = (int64_t)off;
    return 0;
}

static int log_flush(void *opaque, char **errmsg)
{
    struct logvol *l = opaque;
    (void)errmsg;
    if (l->n < 64)
        l->log[l->n++] = -1;
    return 0;
}

static int log_read(void *opaque, uint64_t off, void *buf, size_t len, char **errmsg)
{
    return vol_read(&((struct logvol *)opaque)->v, off, buf, len, errmsg);
}

/* encode(decode(header)) is the header; luks_amend adds a slot (material, flush, header,
 * flush: the crash-safe order) that unlocks, and erases one (header, flush, then the
 * material overwritten pass by pass), after which its password no longer unlocks */
static void test_amend_slots(void **state)
{
    (void)state;
    struct luks_create_opts o = { "aes-256", "xts", "plain64", NULL, "sha256", 1 };
    uint8_t hdr[LUKS_HEADER_LEN], *km, *mk;
    size_t km_len, mk_len;
    uint64_t km_off, payload;
    char *err = NULL;
    assert_int_equal(luks_create(&o, (const uint8_t *)"pw0", 3, hdr, &km, &km_len, &km_off,
                                 &mk, &mk_len, &payload, &err), 0);
    struct logvol l = { { calloc(1, payload), payload }, { 0 }, 0 };
    memcpy(l.v.b, hdr, sizeof(hdr));
    memcpy(l.v.b + km_off, km, km_len);
    struct luks_header h;
    struct fmt_error fe;
    fmt_error_clear(&fe);
    assert_int_equal(luks_header_decode(l.v.b, LUKS_HEADER_LEN, &h, &fe), 0);
    uint8_t enc[LUKS_HEADER_LEN];
    luks_header_encode(&h, enc);
    assert_memory_equal(enc, hdr, sizeof(hdr));

    assert_int_equal(secrets_add_object("secret,id=s0,data=pw0"), 0);
    assert_int_equal(secrets_add_object("secret,id=s1,data=pw1"), 0);
    struct luks_io io = { log_read, log_write, log_flush, &l };
    struct luks_amend_opts add = { .active = true, .new_secret = "s1", .has_iter_time = true,
                                   .iter_time = 1 };
    assert_int_equal(luks_amend(&h, &io, &add, "s0", false, &err), 0);
    assert_int_equal(l.n, 4);
    assert_int_equal(l.log[0], (int64_t)h.slots[1].key_offset_sector * LUKS_SECTOR);
    assert_int_equal(l.log[1], -1);
    assert_int_equal(l.log[2], 0);
    assert_int_equal(l.log[3], -1);
    struct luks_header h2;
    assert_int_equal(luks_header_decode(l.v.b, LUKS_HEADER_LEN, &h2, &fe), 0);
    assert_int_equal(h2.slots[1].active, LUKS_SLOT_ENABLED);
    assert_true(h2.slots[1].iterations >= 1000);
    uint8_t *got = NULL;
    assert_int_equal(luks_unlock(&h2, vol_read, &l.v, (const uint8_t *)"pw1", 3, &got, &err),
                     0);
    assert_memory_equal(got, mk, mk_len);
    free(got);

    /* erase slot 0 by its password */
    l.n = 0;
    struct luks_amend_opts del = { .active = false, .old_secret = "s0" };
    assert_int_equal(luks_amend(&h, &io, &del, "s1", false, &err), 0);
    assert_int_equal(l.log[0], 0);
    assert_int_equal(l.log[1], -1);
    assert_int_equal(l.n, 2 + 2 * LUKS_ERASE_PASSES);
    for (size_t i = 2; i < l.n; i += 2) {
        assert_int_equal(l.log[i], (int64_t)km_off);
        assert_int_equal(l.log[i + 1], -1);
    }
    assert_int_equal(luks_header_decode(l.v.b, LUKS_HEADER_LEN, &h2, &fe), 0);
    assert_int_equal(h2.slots[0].active, LUKS_SLOT_DISABLED);
    assert_int_equal(h2.slots[0].iterations, 0);
    got = NULL;
    assert_int_equal(luks_unlock(&h2, vol_read, &l.v, (const uint8_t *)"pw0", 3, &got, &err),
                     -13);
    free(err);
    err = NULL;
    /* the last active slot is kept unless forced */
    struct luks_amend_opts last = { .active = false, .has_keyslot = true, .keyslot = 1 };
    assert_int_equal(luks_amend(&h, &io, &last, "s1", false, &err), -EINVAL);
    assert_string_equal(err, "Attempt to erase the only active keyslot 1 which will erase all "
                        "the data in the image irreversibly - refusing operation");
    free(err);
    free(l.v.b);
    free(km);
    free(mk);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xts_vector),
        cmocka_unit_test(test_pbkdf2_vector),
        cmocka_unit_test(test_sector_ivs),
        cmocka_unit_test(test_create_unlock),
        cmocka_unit_test(test_amend_slots),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
