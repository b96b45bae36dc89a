/* The metadata write port (io/wport.h, qcow2/port.h) and the overlap guard
 * (qcow2/overlap.h) on the in-memory backend: each backend's effect on the file, the plan
 * and the journal; the guard refusing a write into each of qemu's classes with -EIO, the
 * corruption event and the corrupt bit, and letting it through when the class is ignored. */
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_format_helpers.h"
#include "format/be.h"
#include "io/wport.h"
#include "journal/journal.h"
#include "journal/plan.h"
#include "qcow2/image.h"
#include "qcow2/overlap.h"
#include "qcow2/port.h"

#define IMG_LEN 0xa0000u

/* qemu-img create -f qcow2 x 1M (v3, 64 KiB clusters): reftable 0x10000, refblock
 * 0x20000, L1 0x30000 (1 entry); plus an L2 table at 0x40000 named by L1[0], and a
 * snapshot's L1 at 0x60000 whose entry names an L2 table at 0x70000. */
static uint8_t *guard_image(void)
{
    uint8_t *img = calloc(1, IMG_LEN);
    memcpy(img, qemu_1m_header, sizeof(qemu_1m_header));
    be64_put(img + 0x10000, 0x20000);
    for (int k = 0; k < 10; k++)
        be16_put(img + 0x20000 + k * 2, 1);
    be64_put(img + 0x30000, 0x40000 | QCOW2_OFLAG_COPIED);
    be64_put(img + 0x60000, 0x70000);
    return img;
}

struct fixture {
    uint8_t *img;
    qio_t *q;
    struct qcow2_image m;
    struct qcow2_snapshot sn;
};

/* Opened in CHECK mode (reftable loaded); the snapshot table, one snapshot and the bitmap
 * directory are set in the model as the checker and driver would have read them. */
static void open_fixture(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    f->img = guard_image();
    f->q = qio_open_mem(f->img, IMG_LEN, true, IMG_LEN * 2);
    char *err = NULL;
    struct qcow2_open_opts o = { .mode = QCOW2_MODE_CHECK };
    assert_int_equal(qcow2_image_open(&f->m, f->q, "x", &o, &err), 0);
    f->m.sn_offset = 0x50000;
    f->m.sn_size = 120;
    f->sn.l1_table_offset = 0x60000;
    f->sn.l1_size = 1;
    f->m.sn = &f->sn;
    f->m.nb_sn = 1;
    f->m.ext.has_bitmaps = true;
    f->m.ext.bitmap_directory_offset = 0x80000;
    f->m.ext.bitmap_directory_size = 64;
    f->m.h.autoclear_features |= QCOW2_AUTOCLEAR_BITMAPS;
}

static void close_fixture(struct fixture *f)
{
    f->m.sn = NULL;   /* not the model's */
    f->m.nb_sn = 0;
    qcow2_image_close(&f->m);
    qio_close(f->q);
    free(f->img);
}

static uint64_t incompat(qio_t *q)
{
    uint8_t b[8];
    assert_int_equal(qio_pread(q, b, 8, 72), 0);
    return be64_get(b);
}

/* stderr of fn(arg) as text (static buffer) */
static char captured[1024];
static int capture_write(struct qcow2_image *m, unsigned ign, uint64_t off)
{
    fflush(stderr);
    int saved = dup(2);
    FILE *t = tmpfile();
    dup2(fileno(t), 2);
    uint8_t b[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
    int rc = qcow2_meta_pwrite(m, ign, off, b, sizeof(b));
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(t);
    size_t n = fread(captured, 1, sizeof(captured) - 1, t);
    captured[n] = 0;
    fclose(t);
    return rc;
}

static void test_guard_each_class(void **state)
{
    (void)state;
    static const struct { unsigned cls; uint64_t off; const char *name; } cases[] = {
        { QCOW2_OL_MAIN_HEADER, 0x200, "qcow2_header" },
        { QCOW2_OL_ACTIVE_L1, 0x30000, "active L1 table" },
        { QCOW2_OL_ACTIVE_L2, 0x40010, "active L2 table" },
        { QCOW2_OL_REFCOUNT_TABLE, 0x10000, "refcount table" },
        { QCOW2_OL_REFCOUNT_BLOCK, 0x20008, "refcount block" },
        { QCOW2_OL_SNAPSHOT_TABLE, 0x50000, "snapshot table" },
        { QCOW2_OL_INACTIVE_L1, 0x60000, "inactive L1 table" },
        { QCOW2_OL_INACTIVE_L2, 0x70000, "inactive L2 table" },
        { QCOW2_OL_BITMAP_DIRECTORY, 0x80000, "bitmap directory" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fixture f;
        open_fixture(&f);
        if (cases[i].cls == QCOW2_OL_INACTIVE_L2)
            qcow2_overlap_set_checks(&f.m, QCOW2_OL_CHECK_ALL);   /* qemu's =all */
        uint8_t before[8];
        assert_int_equal(qio_pread(f.q, before, 8, cases[i].off), 0);
        assert_int_equal(incompat(f.q) & QCOW2_INCOMPAT_CORRUPT, 0);
        assert_int_equal(qcow2_overlap_find(&f.m, 0, cases[i].off, 8), (int)cases[i].cls);
        assert_int_equal(capture_write(&f.m, 0, cases[i].off), -EIO);
        char want[256];
        snprintf(want, sizeof(want), "qcow2: Marking image as corrupt: Preventing invalid "
                 "write on metadata (overlaps with %s); further corruption events will be "
                 "suppressed\n", cases[i].name);
        assert_string_equal(captured, want);
        /* the write did not happen; the corrupt bit did (v3), in the model too */
        uint8_t now[8];
        assert_int_equal(qio_pread(f.q, now, 8, cases[i].off), 0);
        if (cases[i].cls != QCOW2_OL_MAIN_HEADER)
            assert_memory_equal(now, before, 8);
        assert_int_equal(incompat(f.q), QCOW2_INCOMPAT_CORRUPT);
        assert_true(f.m.h.incompatible_features & QCOW2_INCOMPAT_CORRUPT);
        unsigned ign;
        uint64_t off;
        assert_int_equal(qcow2_overlap_refused(&f.m, &ign, &off, NULL), cases[i].cls);
        assert_int_equal(off, cases[i].off);
        /* a second hit: -EIO again, the event suppressed */
        assert_int_equal(capture_write(&f.m, 0, cases[i].off), -EIO);
        assert_string_equal(captured, "");
        /* ignoring the class lets the write through (nothing else is there) */
        assert_int_equal(capture_write(&f.m, cases[i].cls, cases[i].off), 0);
        assert_string_equal(captured, "");
        assert_int_equal(qio_pread(f.q, now, 8, cases[i].off), 0);
        assert_int_equal(now[0], 1);
        assert_int_equal(now[7], 8);
        close_fixture(&f);
    }
}

static void test_guard_defaults_and_rounding(void **state)
{
    (void)state;
    struct fixture f;
    open_fixture(&f);
    /* qemu's default (cached) set does not check inactive L2 tables */
    assert_int_equal(qcow2_overlap_find(&f.m, 0, 0x70000, 8), 0);
    /* free space passes; a write is rounded out to whole clusters (qemu): bytes past the
     * L1's 8 bytes but in its cluster hit it, as does a write ending in it */
    assert_int_equal(qcow2_overlap_find(&f.m, 0, 0x90000, 0x10000), 0);
    assert_int_equal(qcow2_overlap_find(&f.m, 0, 0x38000, 8), QCOW2_OL_ACTIVE_L1);
    /* across two classes: qemu's test order (active L1 before refcount blocks) */
    assert_int_equal(qcow2_overlap_find(&f.m, 0, 0x2fff8, 16), QCOW2_OL_ACTIVE_L1);
    assert_int_equal(qcow2_overlap_find(&f.m, QCOW2_OL_ACTIVE_L1, 0x2fff8, 16),
                     QCOW2_OL_REFCOUNT_BLOCK);
    /* QCOW2_OL_ALL: not checked at all (qemu's header updates) */
    assert_int_equal(qcow2_overlap_check(&f.m, QCOW2_OL_ALL, 0, 8), 0);
    assert_int_equal(qcow2_overlap_count(&f.m, QCOW2_OL_ACTIVE_L2, 0, IMG_LEN), 1);
    assert_true(qcow2_overlap_hits(&f.m, QCOW2_OL_ACTIVE_L1 | QCOW2_OL_ACTIVE_L2, 0x40000,
                                   0x40001));
    assert_false(qcow2_overlap_hits(&f.m, QCOW2_OL_ACTIVE_L1, 0x30008, 0x40000));
    close_fixture(&f);
}

static void test_guard_invalidate(void **state)
{
    (void)state;
    struct fixture f;
    open_fixture(&f);
    assert_int_equal(qcow2_overlap_find(&f.m, 0, 0x90000, 8), 0);
    /* a writer moves the L1 table: the cached ranges still have the old one ... */
    f.m.h.l1_table_offset = 0x90000;
    assert_int_equal(qcow2_overlap_find(&f.m, 0, 0x90000, 8), 0);
    /* ... until it says so */
    qcow2_overlap_invalidate(&f.m);
    assert_int_equal(qcow2_overlap_find(&f.m, 0, 0x90000, 8), QCOW2_OL_ACTIVE_L1);
    assert_int_equal(qcow2_overlap_find(&f.m, 0, 0x30000, 8), 0);
    /* new metadata added without a rebuild: checked at once, in its class's turn */
    qcow2_overlap_add(&f.m, QCOW2_OL_ACTIVE_L2, 0x50000, 0x10000);
    assert_int_equal(qcow2_overlap_find(&f.m, QCOW2_OL_SNAPSHOT_TABLE, 0x50000, 8),
                     QCOW2_OL_ACTIVE_L2);
    assert_true(qcow2_overlap_hits(&f.m, QCOW2_OL_ACTIVE_L2, 0x5fff0, 0x60000));
    assert_int_equal(qcow2_overlap_count(&f.m, QCOW2_OL_ACTIVE_L2, 0, IMG_LEN), 2);
    /* past the short list: a rebuild from the model, which does not have those ranges */
    for (unsigned i = 0; i < QCOW2_OL_RECENT_MAX; i++)
        qcow2_overlap_add(&f.m, QCOW2_OL_ACTIVE_L2, 0x100000 + i * 0x10000ull, 0x10000);
    assert_int_equal(qcow2_overlap_find(&f.m, QCOW2_OL_SNAPSHOT_TABLE, 0x50000, 8), 0);
    close_fixture(&f);
}

static void test_guard_v2_no_corrupt_bit(void **state)
{
    (void)state;
    struct fixture f;
    open_fixture(&f);
    f.m.h.version = 2;   /* v2 has no incompatible-features field to mark */
    uint8_t before[IMG_LEN / 16];
    assert_int_equal(qio_pread(f.q, before, sizeof(before), 0), 0);
    assert_int_equal(capture_write(&f.m, 0, 0x30000), -EIO);
    assert_non_null(strstr(captured, "(overlaps with active L1 table)"));
    uint8_t after[IMG_LEN / 16];
    assert_int_equal(qio_pread(f.q, after, sizeof(after), 0), 0);
    assert_memory_equal(before, after, sizeof(before));
    close_fixture(&f);
}

/* The user's own class (repair's guest data) and event. */
static bool extra_hits(void *ctx, uint64_t a, uint64_t b)
{
    (void)ctx;
    return a < 0x98000 && b > 0x90000;
}
static unsigned extra_refused;
static void extra_refused_fn(void *ctx, unsigned cls, unsigned ign, uint64_t off, uint64_t len)
{
    (void)ctx, (void)ign, (void)off, (void)len;
    extra_refused = cls;
}
static bool extra_event(void *ctx, unsigned cls, uint64_t off, uint64_t len)
{
    (void)ctx, (void)len;
    if (cls != QCOW2_OL_EXTRA)
        return false;
    fprintf(stderr, "own event at 0x%llx\n", (unsigned long long)off);
    return true;
}

static void test_guard_extra_class(void **state)
{
    (void)state;
    struct fixture f;
    open_fixture(&f);
    struct qcow2_ol_hook h = { NULL, extra_hits, extra_refused_fn, extra_event };
    qcow2_overlap_set_hook(&f.m, &h);
    assert_int_equal(qcow2_overlap_find(&f.m, 0, 0x90000, 8), QCOW2_OL_EXTRA);
    assert_int_equal(capture_write(&f.m, 0, 0x90008), -EIO);
    assert_string_equal(captured, "own event at 0x90008\n");
    assert_int_equal(extra_refused, QCOW2_OL_EXTRA);
    assert_string_equal(qcow2_overlap_class_name(QCOW2_OL_EXTRA), "guest data");
    assert_int_equal(capture_write(&f.m, QCOW2_OL_EXTRA, 0x90008), 0);
    close_fixture(&f);
}

/* --- the port's backends ------------------------------------------------------------ */

static qio_t *mem_file(size_t len)
{
    uint8_t *b = malloc(len);
    for (size_t i = 0; i < len; i++)
        b[i] = (uint8_t)i;
    qio_t *q = qio_open_mem(b, len, true, 1 << 20);
    free(b);
    return q;
}

static void test_port_direct(void **state)
{
    (void)state;
    qio_t *q = mem_file(4096);
    struct wport w;
    assert_int_equal(wport_init_direct(&w, q), 0);
    assert_int_equal(wport_size(&w), 4096);
    assert_int_equal(wport_pwrite(&w, 100, "abcd", 4), 0);
    assert_int_equal(wport_pwrite(&w, 5000, "xy", 2), 0);   /* grows the file */
    assert_int_equal(wport_size(&w), 5002);
    assert_int_equal(wport_flush(&w), 0);
    uint8_t b[4];
    assert_int_equal(qio_pread(q, b, 4, 100), 0);
    assert_memory_equal(b, "abcd", 4);
    uint64_t sz;
    assert_int_equal(qio_size(q, &sz), 0);
    assert_int_equal(sz, 5002);
    assert_int_equal(wport_truncate(&w, 8192), 0);
    assert_int_equal(wport_truncate(&w, 1000), 0);           /* direct may shrink */
    assert_int_equal(qio_size(q, &sz), 0);
    assert_int_equal(sz, 1000);
    assert_int_equal(wport_pwrite(&w, (uint64_t)INT64_MAX, "z", 1), -EINVAL);
    qio_close(q);
}

static void test_port_plan(void **state)
{
    (void)state;
    qio_t *q = mem_file(4096);
    struct plan p;
    struct wport w;
    plan_init(&p, q);
    wport_init_plan(&w, &p);
    wport_label(&w, PC_REFCOUNT, "refcount %d", 7);
    assert_int_equal(wport_pwrite(&w, 100, "abcd", 4), 0);
    assert_int_equal(wport_pwrite(&w, 104, "ef", 2), 0);      /* merges: same class, contiguous */
    wport_label(&w, PC_GROW, "grow");
    assert_int_equal(wport_truncate(&w, 8192), 0);
    assert_int_equal(wport_truncate(&w, 100), -ENOTSUP);
    assert_int_equal(wport_flush(&w), 0);
    assert_int_equal(wport_size(&w), 8192);
    /* nothing written */
    uint8_t b[6];
    uint64_t sz;
    assert_int_equal(qio_pread(q, b, 6, 100), 0);
    assert_int_equal(b[0], 100);
    assert_int_equal(qio_size(q, &sz), 0);
    assert_int_equal(sz, 4096);
    /* recorded with labels and old bytes; reads through the plan see it */
    assert_int_equal(p.n, 2);
    assert_int_equal(p.v[0].op, PLAN_WRITE);
    assert_int_equal(p.v[0].cls, PC_REFCOUNT);
    assert_int_equal(p.v[0].len, 6);
    assert_string_equal(p.v[0].reason, "refcount 7; refcount 7");
    assert_int_equal(p.v[0].old_bytes[0], 100);
    assert_int_equal(p.v[1].op, PLAN_TRUNCATE);
    assert_string_equal(plan_class_name(p.v[1].cls), "grow");
    qio_t *ov = plan_overlay_qio(&p);
    assert_int_equal(qio_pread(ov, b, 6, 100), 0);
    assert_memory_equal(b, "abcdef", 6);
    assert_int_equal(qio_size(ov, &sz), 0);
    assert_int_equal(sz, 8192);
    qio_close(ov);

    /* applied through a direct port: the file as planned */
    struct wport d;
    const struct plan_entry *failed;
    assert_int_equal(wport_init_direct(&d, q), 0);
    assert_int_equal(wport_apply(&d, &p, &failed), 0);
    assert_null(failed);
    assert_int_equal(qio_pread(q, b, 6, 100), 0);
    assert_memory_equal(b, "abcdef", 6);
    assert_int_equal(qio_size(q, &sz), 0);
    assert_int_equal(sz, 8192);
    /* a plan port cannot apply */
    assert_int_equal(wport_apply(&w, &p, &failed), -EINVAL);
    plan_free(&p);
    qio_close(q);
}

/* rows of the journal: "op class offset length old[0] new[0] old_size new_size reason" */
static int journal_rows(const char *path, char rows[][128], int max)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT op, class, offset, length, old, new, "
                                        "old_size, new_size, reason FROM writes ORDER BY seq",
                                        -1, &st, NULL), SQLITE_OK);
    int n = 0;
    while (sqlite3_step(st) == SQLITE_ROW && n < max) {
        const uint8_t *o = sqlite3_column_blob(st, 4), *w = sqlite3_column_blob(st, 5);
        snprintf(rows[n++], 128, "%s %s %lld %lld %d %d %lld %lld %s",
                 (const char *)sqlite3_column_text(st, 0),
                 (const char *)sqlite3_column_text(st, 1), sqlite3_column_int64(st, 2),
                 sqlite3_column_int64(st, 3), o ? o[0] : -1, w ? w[0] : -1,
                 sqlite3_column_int64(st, 6), sqlite3_column_int64(st, 7),
                 (const char *)sqlite3_column_text(st, 8));
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static void test_port_journal(void **state)
{
    (void)state;
    char path[] = "/tmp/qimg-test-port-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    unlink(path);   /* journal_create makes it itself (O_EXCL) */
    qio_t *q = mem_file(4096);
    journal_t *j;
    assert_int_equal(journal_create(path, "x", q, &j), 0);
    struct wport w;
    assert_int_equal(wport_init_journal(&w, q, j), 0);
    wport_label(&w, PC_HEADER, "first");
    assert_int_equal(wport_pwrite(&w, 10, "\xaa\xbb", 2), 0);
    wport_label(&w, PC_TABLE, "past the end");
    assert_int_equal(wport_pwrite(&w, 4095, "\xcc\xdd", 2), 0);
    wport_label(&w, PC_GROW, "grow");
    assert_int_equal(wport_truncate(&w, 6000), 0);
    assert_int_equal(wport_truncate(&w, 10), -ENOTSUP);   /* no bytes kept of a cut */
    /* a plan applied through the journal: its rows follow */
    struct plan p;
    plan_init(&p, q);
    assert_int_equal(plan_write(&p, PC_COPIED, 20, "\x11", 1, "planned"), 0);
    const struct plan_entry *failed;
    assert_int_equal(wport_apply(&w, &p, &failed), 0);
    plan_free(&p);
    journal_close(j);
    uint8_t b[2];
    assert_int_equal(qio_pread(q, b, 2, 10), 0);
    assert_memory_equal(b, "\xaa\xbb", 2);
    char rows[8][128];
    assert_int_equal(journal_rows(path, rows, 8), 4);
    assert_string_equal(rows[0], "write header 10 2 10 170 4096 4096 first");
    assert_string_equal(rows[1], "write table 4095 2 255 204 4096 4097 past the end");
    /* the journal's truncate rows: offset 0, length 0, the size in new_size */
    assert_string_equal(rows[2], "truncate grow 0 0 -1 -1 4097 6000 grow");
    assert_string_equal(rows[3], "write copied 20 1 20 17 6000 6000 planned");
    unlink(path);
    qio_close(q);
}

/* The model through the plan backend: the guard still applies, writes are recorded, and
 * the model reading its file (the plan's overlay) sees them. */
static void test_model_plan(void **state)
{
    (void)state;
    struct fixture f;
    open_fixture(&f);
    struct plan p;
    struct qcow2_port port;
    plan_init(&p, f.q);
    wport_init_plan(&port.w, &p);
    qio_t *ov = plan_overlay_qio(&p);
    qio_t *real = f.m.q;
    f.m.q = ov;
    qcow2_port_set(&f.m, &port);
    wport_label(&port.w, PC_COPIED, "L2 entry");
    uint8_t e[8];
    be64_put(e, 0x123450000ull);
    assert_int_equal(qcow2_meta_pwrite(&f.m, QCOW2_OL_L2_TABLES, 0x40000, e, 8), 0);
    uint8_t b[8];
    assert_int_equal(qio_pread(f.m.q, b, 8, 0x40000), 0);
    assert_int_equal(be64_get(b), 0x123450000ull);
    assert_int_equal(qio_pread(real, b, 8, 0x40000), 0);
    assert_int_equal(be64_get(b), 0);
    /* a refusal: -EIO, the corrupt bit planned, the file untouched */
    assert_int_equal(capture_write(&f.m, 0, 0x30000), -EIO);
    assert_int_equal(p.n, 2);
    assert_int_equal(p.v[1].offset, 72);
    assert_int_equal(p.v[1].cls, PC_HEADER);
    assert_int_equal(incompat(real), 0);
    assert_int_equal(incompat(f.m.q), QCOW2_INCOMPAT_CORRUPT);
    f.m.q = real;
    qio_close(ov);
    plan_free(&p);
    close_fixture(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_guard_each_class),
        cmocka_unit_test(test_guard_defaults_and_rounding),
        cmocka_unit_test(test_guard_invalidate),
        cmocka_unit_test(test_guard_v2_no_corrupt_bit),
        cmocka_unit_test(test_guard_extra_class),
        cmocka_unit_test(test_port_direct),
        cmocka_unit_test(test_port_plan),
        cmocka_unit_test(test_port_journal),
        cmocka_unit_test(test_model_plan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
