/* Format probing. */
#include "test_format_helpers.h"
#include "format/probe.h"

static void test_probe(void **state)
{
    (void)state;
    uint8_t b[2048] = { 0 };

    assert_string_equal(probe_format(b, 0), "raw");
    assert_string_equal(probe_format(b, sizeof(b)), "raw");
    memcpy(b, qemu_1m_header, 512);
    assert_string_equal(probe_format(b, sizeof(b)), "qcow2");
    assert_string_equal(probe_format(b, 112), "qcow2");
    assert_string_equal(probe_format(b, 111), "raw");        /* header must fit */
    be32_put(b + 4, 1);
    assert_string_equal(probe_format(b, sizeof(b)), "qcow");
    be32_put(b + 4, 0);
    assert_string_equal(probe_format(b, sizeof(b)), "raw");

    memset(b, 0, sizeof(b));
    memcpy(b, "QED\0", 4);
    assert_string_equal(probe_format(b, 64), "qed");
    assert_string_equal(probe_format(b, 63), "raw");

    memset(b, 0, sizeof(b));
    memcpy(b, "<<< Oracle VM VirtualBox Disk Image >>>\n", 40);
    b[0x40] = 0x7f; b[0x41] = 0x10; b[0x42] = 0xda; b[0x43] = 0xbe;
    assert_string_equal(probe_format(b, 512), "vdi");
    assert_string_equal(probe_format(b, 511), "raw");

    memset(b, 0, sizeof(b));
    memcpy(b, "LUKS\xba\xbe", 6);
    /* qemu's LUKS probe also wants version 1 (qcrypto_block_luks_has_format) */
    assert_string_equal(probe_format(b, sizeof(b)), "raw");
    b[7] = 1;
    assert_string_equal(probe_format(b, sizeof(b)), "luks");
    assert_string_equal(probe_format(b, 7), "raw");
    memcpy(b, "vhdxfile", 8);
    assert_string_equal(probe_format(b, sizeof(b)), "vhdx");
    memcpy(b, "conectix", 8);
    assert_string_equal(probe_format(b, sizeof(b)), "vpc");
}

int main(void)
{
    const struct CMUnitTest tests[] = { cmocka_unit_test(test_probe) };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
