/* Snapshot table entries: decode, limits, encode. */
#include <errno.h>
#include <stdlib.h>

#include "test_format_helpers.h"
#include "format/qcow2_snapshot.h"

static struct qcow2_snapshot sample(void)
{
    static char id[] = "1", name[] = "snap1";
    struct qcow2_snapshot s = {
        .l1_table_offset = 0x70000, .l1_size = 1, .id_str_size = 1, .name_size = 5,
        .date_sec = 1700000000, .date_nsec = 5, .vm_clock_nsec = 77,
        .vm_state_size = 0x100000000ull, .disk_size = 1 << 20, .icount = UINT64_MAX,
        .id_str = id, .name = name,
    };
    return s;
}

static void test_roundtrip_and_table(void **state)
{
    (void)state;
    uint8_t buf[256] = { 0 };
    struct qcow2_snapshot in = sample(), out;
    struct fmt_error e;
    uint64_t len, pos = 0;

    int64_t n = qcow2_snapshot_encode(&in, buf, sizeof(buf));
    assert_int_equal(n, 40 + 24 + 1 + 5);
    assert_int_equal(qcow2_snapshot_encoded_size(&in), n);
    assert_int_equal(be32_get(buf + 32), 0);            /* too big for 32 bits */
    assert_int_equal(be32_get(buf + 36), 24);
    /* second entry at the next 8-byte boundary */
    uint64_t second = 0;
    assert_true(u64_align8((uint64_t)n, &second));
    assert_int_equal(second, 72);
    assert_int_equal(qcow2_snapshot_encode(&in, buf + second, sizeof(buf) - second), n);

    for (unsigned i = 0; i < 2; i++) {
        assert_true(u64_align8(pos, &pos));
        assert_int_equal(qcow2_snapshot_decode(buf + pos, sizeof(buf) - pos, 0x80000 + pos, i, 3,
                                               1 << 20, 0, &out, &len, &e), 0);
        assert_int_equal(len, n);
        assert_int_equal(out.l1_table_offset, 0x70000);
        assert_true(out.vm_state_size == 0x100000000ull);
        assert_int_equal(out.disk_size, 1 << 20);
        assert_true(out.icount == UINT64_MAX);
        assert_true(out.has_icount);
        assert_false(out.incomplete);
        assert_string_equal(out.id_str, "1");
        assert_string_equal(out.name, "snap1");
        assert_int_equal(out.unknown_extra_len, 0);
        qcow2_snapshot_free(&out);
        pos += len;
    }
    assert_int_equal(pos, 72 + n);            /* table size: no trailing padding */
    assert_false(qcow2_snapshot_table_too_big(64ull << 20));
    assert_true(qcow2_snapshot_table_too_big((64ull << 20) + 1));
    assert_int_equal(qcow2_snapshot_encode(&in, buf, 50), -ENOSPC);
}

static void test_short_extra(void **state)
{
    (void)state;
    uint8_t buf[128] = { 0 };
    struct qcow2_snapshot s;
    struct fmt_error e;
    uint64_t len;

    be32_put(buf + 32, 1234);
    be32_put(buf + 36, 8);                  /* only vm_state_size_large */
    be64_put(buf + 40, 99);
    assert_int_equal(qcow2_snapshot_decode(buf, sizeof(buf), 0, 0, 3, 4096, 0, &s, &len, &e), 0);
    assert_int_equal(len, 48);
    assert_int_equal(s.vm_state_size, 99);
    assert_false(s.has_disk_size);
    assert_int_equal(s.disk_size, 4096);    /* defaults to the virtual size */
    assert_true(s.icount == UINT64_MAX);
    assert_true(s.incomplete);              /* v3 needs 16 bytes */
    qcow2_snapshot_free(&s);
    assert_int_equal(qcow2_snapshot_decode(buf, sizeof(buf), 0, 0, 2, 4096, 0, &s, &len, &e), 0);
    assert_false(s.incomplete);
    qcow2_snapshot_free(&s);
    be32_put(buf + 36, 0);
    assert_int_equal(qcow2_snapshot_decode(buf, sizeof(buf), 0, 0, 2, 4096, 0, &s, &len, &e), 0);
    assert_int_equal(s.vm_state_size, 1234);
    qcow2_snapshot_free(&s);
}

static void test_limits(void **state)
{
    (void)state;
    static uint8_t buf[4096];
    struct qcow2_snapshot s;
    struct fmt_error e;
    uint64_t len;

    memset(buf, 0, sizeof(buf));
    be32_put(buf + 36, 2000);
    be16_put(buf + 12, 1);
    buf[40 + 2000] = '7';
    assert_int_equal(qcow2_snapshot_decode(buf, sizeof(buf), 0, 3, 3, 0, 0, &s, &len, &e), -EFBIG);
    assert_string_equal(e.qemu_msg, "Too much extra metadata in snapshot table entry 3");
    assert_int_equal(qcow2_snapshot_decode(buf, sizeof(buf), 0, 3, 3, 0, QCOW2_SN_TRUNCATE_EXTRA,
                                           &s, &len, &e), 0);
    assert_true(s.extra_truncated);
    assert_int_equal(s.unknown_extra_len, 1000);
    assert_int_equal(len, 40 + 2000 + 1);
    assert_string_equal(s.id_str, "7");
    qcow2_snapshot_free(&s);

    /* truncated buffers */
    assert_int_equal(qcow2_snapshot_decode(buf, 39, 0, 0, 3, 0, 0, &s, &len, &e), -EINVAL);
    be32_put(buf + 36, 24);
    be16_put(buf + 14, 100);
    assert_int_equal(qcow2_snapshot_decode(buf, 40 + 24 + 1 + 99, 0, 0, 3, 0, 0, &s, &len, &e),
                     -EINVAL);
    be16_put(buf + 12, 0xffff);
    be16_put(buf + 14, 0xffff);
    assert_int_equal(qcow2_snapshot_decode(buf, sizeof(buf), 0, 0, 3, 0, 0, &s, &len, &e), -EINVAL);
}

static void test_unknown_extra_roundtrip(void **state)
{
    (void)state;
    uint8_t buf[256] = { 0 }, extra[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
    struct qcow2_snapshot in = sample(), out;
    uint64_t len;
    in.unknown_extra = extra;
    in.unknown_extra_len = 8;
    in.vm_state_size = 10;
    int64_t n = qcow2_snapshot_encode(&in, buf, sizeof(buf));
    assert_int_equal(n, 40 + 32 + 6);
    assert_int_equal(be32_get(buf + 32), 10);
    assert_int_equal(qcow2_snapshot_decode(buf, (size_t)n, 0, 0, 3, 0, 0, &out, &len, NULL), 0);
    assert_int_equal(out.unknown_extra_len, 8);
    assert_memory_equal(out.unknown_extra, extra, 8);
    qcow2_snapshot_free(&out);
}

/* An in-memory file for qcow2_snapshot_read: zeros past its end, reads counted, one byte
 * range that fails. */
struct memfile {
    const uint8_t *data;
    size_t len;
    unsigned reads;
    uint64_t bad_off;          /* a read touching this offset fails with -EIO (0: none) */
    uint64_t max_end;          /* the furthest byte read */
};

static int mem_pread(void *ctx, void *buf, uint64_t len, uint64_t off)
{
    struct memfile *m = ctx;
    m->reads++;
    if (m->bad_off && off <= m->bad_off && m->bad_off < off + len)
        return -EIO;
    if (off + len > m->max_end)
        m->max_end = off + len;
    memset(buf, 0, (size_t)len);
    if (off < m->len)
        memcpy(buf, m->data + off, (size_t)(len < m->len - off ? len : m->len - off));
    return 0;
}

static void test_extent_and_read(void **state)
{
    (void)state;
    static uint8_t f[8192];
    memset(f, 0, sizeof(f));
    /* entry at 512: extra 2000 (vm_state_size_large, disk_size, icount, then 1976 more),
     * id "7", name "big" */
    uint8_t *h = f + 512;
    be64_put(h, 0x30000);
    be32_put(h + 8, 2);
    be16_put(h + 12, 1);
    be16_put(h + 14, 3);
    be32_put(h + 36, 2000);
    be64_put(h + 40, 99);
    be64_put(h + 48, 1 << 20);
    be64_put(h + 56, 5);
    memset(h + 64, 0xab, 2000 - 24);
    memcpy(h + 40 + 2000, "7big", 4);

    struct qcow2_sn_extent x;
    qcow2_snapshot_extent(h, &x);
    assert_int_equal(x.extra, 2000);
    assert_int_equal(x.extra_kept, 1024);
    assert_int_equal(x.strs, 4);
    assert_int_equal(x.len, 40 + 2000 + 4);
    assert_int_equal(x.kept_len, 40 + 1024 + 4);

    /* as qemu's open: refused from the header alone, nothing read past it */
    struct memfile m = { f, sizeof(f), 0, 0, 0 };
    struct qcow2_sn_source src = { mem_pread, &m, 3, 4096, 0, 0 };
    struct qcow2_snapshot sn;
    struct fmt_error e;
    assert_int_equal(qcow2_snapshot_read(&src, 512, 4, &sn, &x, &e), -EFBIG);
    assert_int_equal(src.read_err, 0);
    assert_string_equal(e.qemu_msg, "Too much extra metadata in snapshot table entry 4");
    assert_int_equal(m.reads, 1);
    assert_int_equal(m.max_end, 512 + 40);
    assert_int_equal(x.len, 40 + 2000 + 4);

    /* as qemu's repair: 1024 bytes of extra data kept, the strings read from their place */
    src.flags = QCOW2_SN_TRUNCATE_EXTRA;
    m.max_end = 0;
    assert_int_equal(qcow2_snapshot_read(&src, 512, 4, &sn, &x, &e), 0);
    assert_true(sn.extra_truncated);
    assert_int_equal(sn.extra_data_size, 2000);
    assert_int_equal(sn.unknown_extra_len, 1000);
    assert_int_equal(sn.unknown_extra[999], 0xab);
    assert_int_equal(sn.vm_state_size, 99);
    assert_int_equal(sn.icount, 5);
    assert_string_equal(sn.id_str, "7");
    assert_string_equal(sn.name, "big");
    assert_false(sn.incomplete);
    assert_int_equal(m.max_end, 512 + 40 + 2000 + 4);
    /* the same as decoding the whole entry's bytes */
    struct qcow2_snapshot whole;
    uint64_t len;
    assert_int_equal(qcow2_snapshot_decode(h, x.len, 512, 4, 3, 4096, QCOW2_SN_TRUNCATE_EXTRA,
                                           &whole, &len, &e), 0);
    assert_int_equal(len, x.len);
    assert_memory_equal(whole.unknown_extra, sn.unknown_extra, 1000);
    assert_string_equal(whole.name, sn.name);
    qcow2_snapshot_free(&whole);
    qcow2_snapshot_free(&sn);

    /* an entry running past the end of the file reads zeros there, as qemu */
    struct memfile tail = { f, 512 + 40 + 2000 + 2, 0, 0, 0 };
    src.ctx = &tail;
    assert_int_equal(qcow2_snapshot_read(&src, 512, 4, &sn, &x, &e), 0);
    assert_int_equal(sn.name_size, 3);
    assert_int_equal(sn.name[0], 'b');
    assert_int_equal(sn.name[1], 0);
    qcow2_snapshot_free(&sn);

    /* a failed read is told apart from a bad entry */
    struct memfile bad = { f, sizeof(f), 0, 512 + 40 + 2000 + 1, 0 };
    src.ctx = &bad;
    assert_int_equal(qcow2_snapshot_read(&src, 512, 4, &sn, &x, &e), -EIO);
    assert_int_equal(src.read_err, -EIO);
    bad.bad_off = 512;
    assert_int_equal(qcow2_snapshot_read(&src, 512, 4, &sn, &x, &e), -EIO);
    assert_int_equal(src.read_err, -EIO);

    /* a v3 entry with 8 bytes of extra data: incomplete, disk size from the image */
    be32_put(h + 36, 8);
    memcpy(h + 48, "7big", 4);
    src.ctx = &m;
    src.flags = 0;
    assert_int_equal(qcow2_snapshot_read(&src, 512, 0, &sn, &x, &e), 0);
    assert_int_equal(x.len, 40 + 8 + 4);
    assert_true(sn.incomplete);
    assert_int_equal(sn.disk_size, 4096);
    assert_string_equal(sn.name, "big");
    qcow2_snapshot_free(&sn);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_and_table),
        cmocka_unit_test(test_short_extra),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_unknown_extra_roundtrip),
        cmocka_unit_test(test_extent_and_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
