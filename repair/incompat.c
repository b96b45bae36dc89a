/* The incompatible-features field across a repair (see incompat.h). */
#include "repair/incompat.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "format/be.h"
#include "format/qcow2_header.h"
#include "repair/apply.h"

void repair_header_peek(qio_t *q, uint32_t *version, uint32_t *cluster_bits)
{
    uint8_t hb[112];
    memset(hb, 0, sizeof(hb));
    qio_pread(q, hb, sizeof(hb), 0);
    *version = be32_get(hb + 4);
    *cluster_bits = be32_get(hb + 20);
}

int repair_incompat_read(qio_t *q, uint32_t version, uint64_t *out)
{
    uint8_t b[8];
    *out = 0;
    if (version < 3)
        return 0;
    int rc = qio_pread(q, b, 8, 72);
    if (rc == 0)
        *out = be64_get(b);
    return rc;
}

uint64_t repair_incompat_final(uint64_t orig, int rc, const struct check_result *r)
{
    if (rc == 0 && !r->corruptions && !r->check_errors)
        return orig & ~(QCOW2_INCOMPAT_CORRUPT | QCOW2_INCOMPAT_DIRTY);
    return orig;
}

uint64_t repair_incompat_guard(struct plan *p, uint32_t version, uint64_t orig)
{
    if (version < 3 || !p->n || (orig & QCOW2_INCOMPAT_CORRUPT))
        return orig;
    uint8_t b[8];
    be64_put(b, orig | QCOW2_INCOMPAT_CORRUPT);
    plan_prepend_write(p, PC_GUARD, 72, b, 8, "header: set the corrupt bit while the "
                       "repair is in progress");
    return orig | QCOW2_INCOMPAT_CORRUPT;
}

int repair_incompat_plan(struct plan *p, uint32_t version, uint64_t from, uint64_t to)
{
    if (version < 3 || from == to)
        return 0;
    uint8_t b[8];
    be64_put(b, to);
    return plan_write(p, PC_HEADER, 72, b, 8, "header: incompatible features 0x%" PRIx64
                      " -> 0x%" PRIx64, from, to);
}

/* One journaled write of the field, outside the repair plan. 0 or -errno. */
static int write_incompat(qio_t *q, journal_t *j, uint64_t value, const char *reason)
{
    struct plan hp;
    const struct plan_entry *failed;
    plan_init(&hp, q);
    uint8_t b[8];
    be64_put(b, value);
    int rc = plan_write(&hp, PC_HEADER, 72, b, 8, "%s", reason);
    if (rc == 0)
        rc = repair_apply(q, &hp, j, &failed);
    plan_free(&hp);
    return rc;
}

int repair_incompat_settle(qio_t *q, journal_t *j, uint32_t version, uint64_t want)
{
    uint64_t now;
    if (version < 3 || repair_incompat_read(q, version, &now) < 0 || now == want)
        return 0;
    char why[96];
    snprintf(why, sizeof(why), "header: incompatible features 0x%" PRIx64 " -> 0x%" PRIx64,
             now, want);
    return write_incompat(q, j, want, why);
}

int repair_incompat_restore(qio_t *q, journal_t *j, uint32_t version, uint64_t orig)
{
    uint64_t now;
    if (version < 3 || (repair_incompat_read(q, version, &now) == 0 && now == orig))
        return 0;
    char why[96];
    snprintf(why, sizeof(why), "header: incompatible features put back to 0x%" PRIx64
             " after a failed write", orig);
    return write_incompat(q, j, orig, why);
}

void repair_mark_corrupt(qio_t *q, journal_t *j, uint32_t version, uint64_t orig)
{
    if (version < 3 || (orig & QCOW2_INCOMPAT_CORRUPT))
        return;
    int rc = write_incompat(q, j, orig | QCOW2_INCOMPAT_CORRUPT, "header: set the corrupt "
                            "bit (a fix was refused by the overlap check)");
    if (j)
        journal_finish(j, q, rc == 0);
}
