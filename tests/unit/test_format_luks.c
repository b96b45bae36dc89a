/* LUKS v1 header decoder: the header qemu-img 7.2 writes (aes-256 xts-plain64 sha256, slot
 * 0 active), every validation rule broken once with qemu's message, the probe, and a short
 * buffer. */
#include "test_format_helpers.h"
#include "format/luks_header.h"

#include <errno.h>

static void put32(uint8_t *p, uint32_t v) { be32_put(p, v); }

static uint8_t *slot(uint8_t *b, int i) { return b + LUKS_OFF_SLOTS + i * LUKS_SLOT_LEN; }

/* qemu's layout for a 64-byte key: slot i's key material at 8 + 504 * i sectors (4000
 * stripes * 64 bytes = 500 sectors, rounded up to 8), payload at 4040 sectors. */
static void fixture(uint8_t *b)
{
    memset(b, 0, LUKS_HEADER_LEN);
    memcpy(b, "LUKS\xba\xbe", 6);
    be16_put(b + LUKS_OFF_VERSION, 1);
    strcpy((char *)b + LUKS_OFF_CIPHER_NAME, "aes");
    strcpy((char *)b + LUKS_OFF_CIPHER_MODE, "xts-plain64");
    strcpy((char *)b + LUKS_OFF_HASH_SPEC, "sha256");
    put32(b + LUKS_OFF_PAYLOAD, 4040);
    put32(b + LUKS_OFF_KEY_BYTES, 64);
    put32(b + LUKS_OFF_MK_ITERS, 10623);
    strcpy((char *)b + LUKS_OFF_UUID, "bdc9c10a-6fa1-41ef-8056-fe449aaed0de");
    for (int i = 0; i < LUKS_NUM_SLOTS; i++) {
        put32(slot(b, i) + LUKS_SLOT_OFF_ACTIVE, i == 0 ? LUKS_SLOT_ENABLED : LUKS_SLOT_DISABLED);
        put32(slot(b, i) + LUKS_SLOT_OFF_ITERS, i == 0 ? 43458 : 0);
        put32(slot(b, i) + LUKS_SLOT_OFF_KEY_OFFSET, 8 + 504 * (uint32_t)i);
        put32(slot(b, i) + LUKS_SLOT_OFF_STRIPES, LUKS_STRIPES);
    }
}

static void expect(const uint8_t *b, const char *msg)
{
    struct luks_header h;
    struct fmt_error e;
    fmt_error_clear(&e);
    assert_int_equal(luks_header_decode(b, LUKS_HEADER_LEN, &h, &e), -EINVAL);
    assert_int_equal(e.code, -EINVAL);
    assert_string_equal(e.qemu_msg, msg);
}

static void test_ok(void **state)
{
    (void)state;
    uint8_t b[LUKS_HEADER_LEN];
    fixture(b);
    struct luks_header h;
    assert_int_equal(luks_header_decode(b, sizeof(b), &h, NULL), 0);
    assert_string_equal(h.cipher_alg, "aes-256");
    assert_string_equal(h.cipher_mode_name, "xts");
    assert_string_equal(h.ivgen_alg, "plain64");
    assert_null(h.ivgen_hash_alg);
    assert_string_equal(h.hash_alg, "sha256");
    assert_string_equal(h.uuid, "bdc9c10a-6fa1-41ef-8056-fe449aaed0de");
    assert_int_equal(h.payload_offset, 2068480);
    assert_int_equal(h.master_key_iterations, 10623);
    assert_int_equal(h.slots[0].active, LUKS_SLOT_ENABLED);
    assert_int_equal(h.slots[0].iterations, 43458);
    assert_int_equal(h.slots[7].key_offset_sector * LUKS_SECTOR, 1810432);
}

static void test_essiv(void **state)
{
    (void)state;
    uint8_t b[LUKS_HEADER_LEN];
    fixture(b);
    strcpy((char *)b + LUKS_OFF_CIPHER_MODE, "cbc-essiv:sha256");
    put32(b + LUKS_OFF_KEY_BYTES, 16);
    struct luks_header h;
    assert_int_equal(luks_header_decode(b, sizeof(b), &h, NULL), 0);
    assert_string_equal(h.cipher_alg, "aes-128");   /* ESSIV itself uses aes-256 */
    assert_string_equal(h.ivgen_hash_alg, "sha256");
    strcpy((char *)b + LUKS_OFF_CIPHER_MODE, "cbc-essiv:sha1");
    expect(b, "No AES cipher with key size 20 available");
    strcpy((char *)b + LUKS_OFF_CIPHER_NAME, "cast5");
    strcpy((char *)b + LUKS_OFF_CIPHER_MODE, "cbc-essiv:sha256");
    expect(b, "Cipher cast5-128 not supported with essiv");
    strcpy((char *)b + LUKS_OFF_CIPHER_MODE, "cbc-essiv");
    expect(b, "Missing IV generator hash specification");
}

static void test_check_rules(void **state)
{
    (void)state;
    uint8_t b[LUKS_HEADER_LEN];
    fixture(b); b[3] = 'Z';
    expect(b, "Volume is not in LUKS format");
    fixture(b); be16_put(b + LUKS_OFF_VERSION, 2);
    expect(b, "LUKS version 2 is not supported");
    fixture(b); memset(b + LUKS_OFF_CIPHER_NAME, 'a', 32);
    expect(b, "LUKS header cipher name is not NUL terminated");
    fixture(b); memset(b + LUKS_OFF_CIPHER_MODE, 'a', 32);
    expect(b, "LUKS header cipher mode is not NUL terminated");
    fixture(b); memset(b + LUKS_OFF_HASH_SPEC, 'a', 32);
    expect(b, "LUKS header hash spec is not NUL terminated");
    fixture(b); put32(b + LUKS_OFF_PAYLOAD, 7);
    expect(b, "LUKS payload is overlapping with the header");
    fixture(b); put32(slot(b, 3) + LUKS_SLOT_OFF_STRIPES, 3999);
    expect(b, "Keyslot 3 is corrupted (stripes 3999 != 4000)");
    fixture(b); put32(slot(b, 2) + LUKS_SLOT_OFF_ACTIVE, 1);
    expect(b, "Keyslot 2 state (active/disable) is corrupted");
    fixture(b); put32(slot(b, 0) + LUKS_SLOT_OFF_KEY_OFFSET, 1);
    expect(b, "Keyslot 0 is overlapping with the LUKS header");
    fixture(b); put32(slot(b, 7) + LUKS_SLOT_OFF_KEY_OFFSET, 3600);
    expect(b, "Keyslot 7 is overlapping with the encrypted payload");
    fixture(b); put32(slot(b, 1) + LUKS_SLOT_OFF_KEY_OFFSET, 8);
    expect(b, "Keyslots 0 and 1 are overlapping in the header");
    /* key_bytes * stripes wraps in qemu's unsigned int: 2^30 * 4000 = 0 bytes of key
     * material, so no overlap; the key size is what fails */
    fixture(b); put32(b + LUKS_OFF_KEY_BYTES, 1u << 30);
    expect(b, "Algorithm 'aes' with key size 536870912 bytes not supported");
}

static void test_parse_rules(void **state)
{
    (void)state;
    uint8_t b[LUKS_HEADER_LEN];
    static const struct { const char *mode, *msg; } modes[] = {
        { "xts", "Unexpected cipher mode string format 'xts'" },
        { "xts-plain64:sha3", "Hash algorithm 'sha3' not supported" },
        { "foo-plain64", "Cipher mode 'foo' not supported" },
        { "xts-bogus", "IV generator 'bogus' not supported" },
    };
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        fixture(b);
        strcpy((char *)b + LUKS_OFF_CIPHER_MODE, modes[i].mode);
        expect(b, modes[i].msg);
    }
    fixture(b); strcpy((char *)b + LUKS_OFF_CIPHER_NAME, "des");
    expect(b, "Algorithm 'des' with key size 32 bytes not supported");
    fixture(b); strcpy((char *)b + LUKS_OFF_HASH_SPEC, "SHA256");
    expect(b, "Hash algorithm 'SHA256' not supported");
    /* plain64 ignores an IV hash, as dm-crypt does */
    fixture(b); strcpy((char *)b + LUKS_OFF_CIPHER_MODE, "xts-plain64:md5");
    struct luks_header h;
    assert_int_equal(luks_header_decode(b, sizeof(b), &h, NULL), 0);
    assert_null(h.ivgen_hash_alg);
}

static void test_probe_and_short(void **state)
{
    (void)state;
    uint8_t b[LUKS_HEADER_LEN];
    fixture(b);
    assert_true(luks_probe(b, 8));
    assert_false(luks_probe(b, 7));
    be16_put(b + LUKS_OFF_VERSION, 2);
    assert_false(luks_probe(b, sizeof(b)));
    fixture(b);
    struct luks_header h;
    struct fmt_error e;
    fmt_error_clear(&e);
    assert_int_equal(luks_header_decode(b, LUKS_HEADER_LEN - 1, &h, &e), -EINVAL);
    assert_string_equal(e.qemu_msg, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ok),
        cmocka_unit_test(test_essiv),
        cmocka_unit_test(test_check_rules),
        cmocka_unit_test(test_parse_rules),
        cmocka_unit_test(test_probe_and_short),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
