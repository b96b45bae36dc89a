/* VDI header decoder: every validation rule broken once, in qemu's order (the size limit
 * comes before the signature), plus truncated buffers. Fixture: what qemu-img 7.2 writes
 * for `create -f vdi x 10M`. */
#include "test_format_helpers.h"
#include "format/vdi_header.h"

#include <errno.h>

static void le32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void le64(uint8_t *p, uint64_t v) { le32(p, (uint32_t)v); le32(p + 4, (uint32_t)(v >> 32)); }

static void fixture(uint8_t *b)
{
    memset(b, 0, VDI_HEADER_LEN);
    memcpy(b, "<<< QEMU VM Virtual Disk Image >>>\n", 35);
    le32(b + 0x40, VDI_SIGNATURE);
    le32(b + 0x44, VDI_VERSION_1_1);
    le32(b + 0x48, 0x180);
    le32(b + 0x4c, VDI_TYPE_DYNAMIC);
    le32(b + 0x154, 0x200);
    le32(b + 0x158, 0x400);
    le32(b + 0x168, 512);
    le64(b + 0x170, 10u << 20);
    le32(b + 0x178, VDI_BLOCK_SIZE);
    le32(b + 0x180, 10);
    le32(b + 0x184, 2);
    b[0x188] = 0x11;                                    /* image uuid: not checked */
}

static void expect(const uint8_t *b, int code, const char *msg)
{
    struct vdi_header h;
    struct fmt_error e;
    fmt_error_clear(&e);
    assert_int_equal(vdi_header_decode(b, VDI_HEADER_LEN, &h, &e), code);
    assert_int_equal(e.code, code);
    assert_string_equal(e.qemu_msg, msg);
}

static void test_ok(void **state)
{
    (void)state;
    uint8_t b[VDI_HEADER_LEN];
    fixture(b);
    struct vdi_header h;
    assert_int_equal(vdi_header_decode(b, sizeof(b), &h, NULL), 0);
    assert_int_equal(h.blocks_in_image, 10);
    assert_int_equal(h.blocks_allocated, 2);
    assert_int_equal(h.bmap_bytes, 512);
    assert_int_equal(vdi_block_offset(&h, 1, 7), 0x400 + VDI_BLOCK_SIZE + 7);
    le64(b + 0x170, (10u << 20) - 100);                 /* odd size: rounded up */
    assert_int_equal(vdi_header_decode(b, sizeof(b), &h, NULL), 0);
    assert_int_equal(h.disk_size, 10u << 20);
    assert_int_equal(h.disk_size_raw, (10u << 20) - 100);
}

static void test_rules(void **state)
{
    (void)state;
    uint8_t b[VDI_HEADER_LEN];
    fixture(b); le64(b + 0x170, VDI_DISK_SIZE_MAX + 1); b[0x40] = 0;
    expect(b, -ENOTSUP, "Unsupported VDI image size (size is 0x1fffff8000001, max supported "
           "is 0x1fffff8000000)");
    fixture(b); b[0x40] = 0;
    expect(b, -EINVAL, "Image not in VDI format (bad signature beda1000)");
    fixture(b); le32(b + 0x44, 0x00020003);
    expect(b, -ENOTSUP, "unsupported VDI image (version 2.3)");
    fixture(b); le32(b + 0x154, 0x201);
    expect(b, -ENOTSUP, "unsupported VDI image (unaligned block map offset 0x201)");
    fixture(b); le32(b + 0x158, 0x401);
    expect(b, -ENOTSUP, "unsupported VDI image (unaligned data offset 0x401)");
    fixture(b); le32(b + 0x168, 4096);
    expect(b, -ENOTSUP, "unsupported VDI image (sector size 4096 is not 512)");
    fixture(b); le32(b + 0x178, 2u << 20);
    expect(b, -ENOTSUP, "unsupported VDI image (block size 2097152 is not 1048576)");
    fixture(b); le32(b + 0x180, 9);
    expect(b, -ENOTSUP, "unsupported VDI image (disk size 10485760, image bitmap has room "
           "for 9437184)");
    fixture(b); b[0x1a8] = 1;
    expect(b, -ENOTSUP, "unsupported VDI image (non-NULL link UUID)");
    fixture(b); b[0x1c7] = 1;
    expect(b, -ENOTSUP, "unsupported VDI image (non-NULL parent UUID)");
    fixture(b); le32(b + 0x180, VDI_BLOCKS_IN_IMAGE_MAX + 1);
    expect(b, -ENOTSUP, "unsupported VDI image (too many blocks 536870785, max is 536870784)");
    fixture(b); le32(b + 0x180, VDI_BLOCKS_IN_IMAGE_MAX);
    struct vdi_header h;
    assert_int_equal(vdi_header_decode(b, sizeof(b), &h, NULL), 0);
    assert_int_equal(h.bmap_bytes, 2147483648u - 512u);  /* fits qemu's INT_MAX rule */
}

static void test_truncated(void **state)
{
    (void)state;
    uint8_t b[VDI_HEADER_LEN];
    fixture(b);
    struct vdi_header h;
    struct fmt_error e;
    for (size_t n = 0; n < VDI_HEADER_LEN; n += 7) {
        fmt_error_clear(&e);
        assert_int_equal(vdi_header_decode(b, n, &h, &e), -EINVAL);
        assert_string_equal(e.qemu_msg, "");
    }
    memset(b, 0, sizeof(b));                            /* a short file reads as zeros */
    expect(b, -EINVAL, "Image not in VDI format (bad signature 00000000)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ok),
        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_truncated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
