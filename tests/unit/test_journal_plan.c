/* journal/plan: reads through the plan see every planned write in order (the page overlay
 * agrees with a byte-by-byte model), including writes past the base's end, merged runs
 * and a crash-guard write prepended under later ones. The many-small-writes case is the
 * shape of a refcount_bits=1 repair (each update rewrites one byte, none merge): the
 * overlay answers each read with one page lookup, where walking the plan made it O(N^2)
 * (a fuzz input with ~100k such writes ran past the fuzzer's 10 s limit). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "io/qio.h"
#include "journal/plan.h"

#define BASE 20000
#define SPAN 40000   /* writes reach past the base's end */

static uint32_t rnd(uint32_t *s)
{
    *s = *s * 1103515245u + 12345u;
    return *s >> 8;
}

static void check_all(struct plan *p, const uint8_t *model)
{
    static uint8_t got[SPAN];
    assert_int_equal(plan_read(p, got, SPAN, 0), 0);
    assert_memory_equal(got, model, SPAN);
    /* unaligned windows crossing page boundaries */
    for (uint64_t off = 4090; off < SPAN - 100; off += 4093) {
        assert_int_equal(plan_read(p, got, 100, off), 0);
        assert_memory_equal(got, model + off, 100);
    }
}

static void test_plan_overlay_matches_model(void **state)
{
    (void)state;
    static uint8_t base[BASE], model[SPAN];
    uint32_t s = 7;
    for (size_t i = 0; i < BASE; i++)
        base[i] = (uint8_t)rnd(&s);
    memcpy(model, base, BASE);
    memset(model + BASE, 0, SPAN - BASE);
    qio_t *q = qio_open_mem(base, BASE, false, BASE);
    assert_non_null(q);
    struct plan p;
    plan_init(&p, q);
    for (int i = 0; i < 3000; i++) {
        uint8_t buf[300];
        size_t len = 1 + rnd(&s) % sizeof(buf);
        uint64_t off = rnd(&s) % (SPAN - len);
        if (i % 5 == 0 && p.n) {   /* contiguous continuation: merges into the last entry */
            const struct plan_entry *l = &p.v[p.n - 1];
            if (l->op == PLAN_WRITE && l->offset + l->len + len <= SPAN)
                off = l->offset + l->len;
        }
        for (size_t k = 0; k < len; k++)
            buf[k] = (uint8_t)rnd(&s);
        assert_int_equal(plan_write(&p, PC_REFCOUNT, off, buf, len, "w%d", i), 0);
        memcpy(model + off, buf, len);
        if (i % 500 == 0)
            check_all(&p, model);
    }
    check_all(&p, model);
    /* every entry's old bytes are what the plan showed just before it */
    static uint8_t replay[SPAN];
    memcpy(replay, base, BASE);
    memset(replay + BASE, 0, SPAN - BASE);
    for (size_t i = 0; i < p.n; i++) {
        const struct plan_entry *e = &p.v[i];
        assert_memory_equal(e->old_bytes, replay + e->offset, e->len);
        memcpy(replay + e->offset, e->new_bytes, e->len);
    }
    assert_memory_equal(replay, model, SPAN);

    /* a guard write prepended lies under every later write */
    uint8_t g[16];
    memset(g, 0xAB, sizeof(g));
    assert_int_equal(plan_prepend_write(&p, PC_GUARD, 4088, g, sizeof(g), "guard"), 0);
    memcpy(replay, base, BASE);
    memset(replay + BASE, 0, SPAN - BASE);
    for (size_t i = 0; i < p.n; i++)
        memcpy(replay + p.v[i].offset, p.v[i].new_bytes, p.v[i].len);
    check_all(&p, replay);
    plan_free(&p);
    qio_close(q);
}

static void test_plan_many_single_byte_writes(void **state)
{
    (void)state;
    enum { N = 200000 };
    static uint8_t base[1 << 16];
    qio_t *q = qio_open_mem(base, sizeof(base), false, sizeof(base));
    assert_non_null(q);
    struct plan p;
    plan_init(&p, q);
    /* one byte rewritten again and again (sub-byte refcounts): no write merges */
    for (uint32_t i = 0; i < N; i++) {
        uint8_t b = (uint8_t)(i | 1);
        assert_int_equal(plan_write(&p, PC_REFCOUNT, 1000 + (i % 8192) * 4, &b, 1, "r"), 0);
    }
    assert_int_equal(p.n, N);
    uint8_t b;
    assert_int_equal(plan_read(&p, &b, 1, 1000 + ((N - 1) % 8192) * 4), 0);
    assert_int_equal(b, (uint8_t)((N - 1) | 1));
    plan_free(&p);
    qio_close(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_overlay_matches_model),
        cmocka_unit_test(test_plan_many_single_byte_writes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
