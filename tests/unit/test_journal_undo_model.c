/* The undo model: which journals agree with themselves, and which image states an undo
 * accepts (a finished repair, one stopped with a write in flight, a half-done undo). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "journal/undo_model.h"

#define FILE_LEN 64

struct img {
    uint8_t b[FILE_LEN];
};

static int rd(void *opaque, void *buf, size_t n, uint64_t off)
{
    struct img *im = opaque;
    memset(buf, 0, n);
    if (off < FILE_LEN)
        memcpy(buf, im->b + off, off + n <= FILE_LEN ? n : FILE_LEN - off);
    return 0;
}

/* Three writes: [8,16) A->B, [12,20) (B/0 part)->C, [8,12) B->D; file 32 bytes, the last
 * also grows nothing. Bytes start as their offset. */
static uint8_t o1[8], n1[8], o2[8], n2[8], o3[4], n3[4];
static struct undo_row rows[3];
static struct img orig_img;

static void setup_rows(void)
{
    for (int i = 0; i < FILE_LEN; i++)
        orig_img.b[i] = i < 32 ? (uint8_t)i : 0;
    for (int i = 0; i < 8; i++) {
        o1[i] = (uint8_t)(8 + i);
        n1[i] = 0xb0;
        o2[i] = i < 4 ? 0xb0 : (uint8_t)(16 + i - 4);
        n2[i] = 0xc0;
    }
    for (int i = 0; i < 4; i++) {
        o3[i] = 0xb0;
        n3[i] = 0xd0;
    }
    rows[0] = (struct undo_row){ true, 8, 8, 32, 32, o1, n1 };
    rows[1] = (struct undo_row){ true, 12, 8, 32, 32, o2, n2 };
    rows[2] = (struct undo_row){ true, 8, 4, 32, 32, o3, n3 };
}

/* The image after rows 1..k. */
static void apply(struct img *im, size_t k)
{
    *im = orig_img;
    for (size_t i = 0; i < k; i++)
        memcpy(im->b + rows[i].off, rows[i].new_, rows[i].len);
}

static void test_consistent_journal(void **state)
{
    (void)state;
    setup_rows();
    struct undo_model m;
    char why[200];
    assert_int_equal(undo_model_build(&m, rows, 3, 32, 0, why, sizeof(why)), 0);
    assert_int_equal(m.nruns, 1);
    assert_int_equal(m.bytes, 12);
    struct img im;
    uint64_t where;
    apply(&im, 3);
    assert_int_equal(undo_model_holds(&m, 3, NULL, 0, rd, &im, &where), 0);
    /* state 2 is not state 3 (bytes 8..11 differ) */
    assert_int_equal(undo_model_holds(&m, 2, NULL, 0, rd, &im, &where), 1);
    assert_int_equal(where, 8);
    /* the original header comes back */
    uint8_t buf[32];
    assert_int_equal(undo_model_original(&m, buf, 32, rd, &im), 0);
    assert_memory_equal(buf, orig_img.b, 32);
    undo_model_free(&m);
}

static void test_in_flight_rows(void **state)
{
    (void)state;
    setup_rows();
    struct undo_model m;
    char why[200];
    assert_int_equal(undo_model_build(&m, rows, 3, 32, 0, why, sizeof(why)), 0);
    struct img im;
    uint64_t where, u = 3;
    /* row 3 journaled but half written: bytes 8,9 new, 10,11 old */
    apply(&im, 2);
    im.b[8] = im.b[9] = 0xd0;
    assert_int_equal(undo_model_holds(&m, 3, NULL, 0, rd, &im, &where), 1);
    assert_int_equal(undo_model_holds(&m, 3, &u, 1, rd, &im, &where), 0);
    /* a byte neither old nor new is refused, even in flight */
    im.b[10] = 0x77;
    assert_int_equal(undo_model_holds(&m, 3, &u, 1, rd, &im, &where), 1);
    assert_int_equal(where, 10);
    /* an undo that put back row 3 and stopped in row 2: S_2 with row 2 in flight */
    apply(&im, 2);
    memcpy(im.b + 12, o2, 4);   /* half of row 2's old bytes back */
    u = 2;
    assert_int_equal(undo_model_holds(&m, 2, &u, 1, rd, &im, &where), 0);
    u = 1;   /* not if another row is said to be in flight */
    assert_int_equal(undo_model_holds(&m, 2, &u, 1, rd, &im, &where), 1);
    undo_model_free(&m);
}

static void test_inconsistent_journals(void **state)
{
    (void)state;
    struct undo_model m;
    char why[200];
    setup_rows();
    /* an old byte that is not what the row before left there */
    o3[1] = 0x55;
    assert_int_equal(undo_model_build(&m, rows, 3, 32, 0, why, sizeof(why)), -EINVAL);
    assert_non_null(strstr(why, "write 3: old byte at 0x9"));
    /* ... unless row 1 failed part-way and left its old byte there */
    o3[1] = 9;
    assert_int_equal(undo_model_build(&m, rows, 3, 32, 2, why, sizeof(why)), -EINVAL);
    assert_int_equal(undo_model_build(&m, rows, 3, 32, 1, why, sizeof(why)), 0);
    undo_model_free(&m);
    setup_rows();
    /* pre_size that is not the first row's old_size */
    assert_int_equal(undo_model_build(&m, rows, 3, 0, 0, why, sizeof(why)), -EINVAL);
    assert_non_null(strstr(why, "pre_size 0"));
    /* a size that does not follow from the range */
    rows[1].new_size = 33;
    assert_int_equal(undo_model_build(&m, rows, 3, 32, 0, why, sizeof(why)), -EINVAL);
    assert_non_null(strstr(why, "write 2: new_size 33"));
    setup_rows();
    /* a write past the pre-repair end whose old bytes are not zero */
    rows[0].old_size = 4;
    rows[0].new_size = 16;
    rows[1].old_size = 16;
    rows[1].new_size = 20;
    rows[2].old_size = rows[2].new_size = 20;
    assert_int_equal(undo_model_build(&m, rows, 3, 4, 0, why, sizeof(why)), -EINVAL);
    assert_non_null(strstr(why, "past the pre-repair size"));
}

static void test_grow_rows(void **state)
{
    (void)state;
    /* a truncate row, then a write past the old end (old bytes zero) */
    uint8_t z[4] = { 0 }, nw[4] = { 1, 2, 3, 4 };
    struct undo_row r[2] = {
        { false, 0, 0, 16, 24, NULL, NULL },
        { true, 28, 4, 24, 32, z, nw },
    };
    struct undo_model m;
    char why[200];
    assert_int_equal(undo_model_build(&m, r, 2, 16, 0, why, sizeof(why)), 0);
    struct img im;
    memset(&im, 0, sizeof(im));
    uint64_t where;
    memcpy(im.b + 28, nw, 4);
    assert_int_equal(undo_model_holds(&m, 2, NULL, 0, rd, &im, &where), 0);
    assert_int_equal(undo_model_holds(&m, 0, NULL, 0, rd, &im, &where), 1);
    undo_model_free(&m);
    r[0].new_size = 8;   /* a truncate row never shrinks */
    assert_int_equal(undo_model_build(&m, r, 2, 16, 0, why, sizeof(why)), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_consistent_journal),
        cmocka_unit_test(test_in_flight_rows),
        cmocka_unit_test(test_inconsistent_journals),
        cmocka_unit_test(test_grow_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
