/* The snapshot table under -r all: qemu's qcow2_check_read_snapshot_table in repair mode
 * (digest §3.1; the entries are read by the model's one reader, qcow2/snapshots.c, with
 * QCOW2_SN_READ_REPAIR: here its messages, counts and the count written back) and
 * qcow2_check_fix_snapshot_table's rewrite (§3 step 3, §1.8).
 *
 * One deliberate difference (README, "Differences from qemu-img"; digest §13.12): when
 * nb_snapshots exceeds 65536 the count itself is garbage, and qemu goes on to "repair"
 * 65536 entries read from whatever follows the table into garbage snapshots. qimg keeps
 * the leading entries that are plausible snapshots and discards the rest, saying so. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "format/be.h"
#include "repair/repair.h"
#include "util/err.h"
#include "util/xalloc.h"

/* Is entry i at `at` a snapshot qemu's check accepts as it stands? NULL if so, else why
 * not. (An all-zero v2 entry is one: an empty snapshot, as QEMU's iotest 261 keeps 65536
 * of them; v3 needs 16 bytes of extra data.) */
static const char *implausible(struct qc2 *s, uint8_t *buf, uint64_t at)
{
    if (at + QCOW2_SN_HDR_SIZE > s->file_size)
        return "it lies past the end of the file";
    if (qc2_read(s, buf, QCOW2_SN_HDR_SIZE, at) < 0)
        return "it cannot be read";
    uint64_t l1 = be64_get(buf);
    uint32_t l1n = be32_get(buf + 8);
    struct qcow2_sn_extent x;
    qcow2_snapshot_extent(buf, &x);
    if (x.extra > QCOW2_MAX_SNAPSHOT_EXTRA || at + x.len > s->file_size)
        return "its size runs past the end of the file";
    if (s->h.version >= 3 && x.extra < QCOW2_SN_EXTRA_V3_MIN)
        return "it lacks the extra data a v3 snapshot has";
    if ((l1 & (s->cs - 1)) || l1n > QCOW2_MAX_L1_SIZE / 8 ||
        (l1n && (!l1 || l1 + (uint64_t)l1n * 8 > s->file_size)))
        return "its L1 table is not inside the file";
    return NULL;
}

static uint32_t plausible_prefix(struct qc2 *s, uint64_t nb, const char **why, uint64_t *at_out)
{
    uint8_t *buf = xmalloc(QCOW2_SN_HDR_SIZE);
    uint64_t pos = s->h.snapshots_offset;
    uint32_t i = 0;
    *why = NULL;
    for (; i < nb && i < QCOW2_MAX_SNAPSHOTS; i++) {
        uint64_t at = (pos + 7) & ~7ull;
        if ((*why = implausible(s, buf, at)) != NULL) {
            *at_out = at;
            break;
        }
        struct qcow2_sn_extent x;
        qcow2_snapshot_extent(buf, &x);
        pos = at + x.len;
    }
    free(buf);
    return i;
}

/* qemu's message for an entry whose extra data it truncates. */
static void say_extra_dropped(uint32_t i, uint32_t extra)
{
    err_plain("Discarding too much extra metadata in snapshot table entry %" PRIu32 " (%" PRIu32
              " > %u)\n", i, extra, QCOW2_MAX_SNAPSHOT_EXTRA);
}

static int write_nb(struct qc2 *s, uint32_t nb, const char *why)
{
    uint8_t b[4];
    be32_put(b, nb);
    return repair_write(s, QCOW2_OL_ALL, PC_SNAPSHOT, 60, b, 4, "header: nb_snapshots %" PRIu32
                      " -> %" PRIu32 " (%s)", s->h.nb_snapshots, nb, why);
}

int repair_snapshot_pass(struct qc2 *s, struct check_result *r)
{
    uint64_t nb = s->h.nb_snapshots, off = s->h.snapshots_offset;
    uint64_t reduced = 0, dropped = 0;
    s->sn_offset = off;
    s->sn_size = 0;
    if (nb > QCOW2_MAX_SNAPSHOTS) {
        err_plain("Discarding %" PRIu64 " overhanging snapshots\n", nb - QCOW2_MAX_SNAPSHOTS);
        const char *why = NULL;
        uint64_t at = 0;
        uint32_t keep = (off & (s->cs - 1)) ? QCOW2_MAX_SNAPSHOTS : plausible_prefix(s, nb, &why, &at);
        if (keep < QCOW2_MAX_SNAPSHOTS)
            err_report("Discarding %" PRIu64 " more snapshot table entries from entry %" PRIu32
                       " (at 0x%" PRIx64 ") on: %s, so nb_snapshots %" PRIu64 " is garbage and "
                       "these entries are not snapshots", QCOW2_MAX_SNAPSHOTS - (uint64_t)keep,
                       keep, at, why, nb);
        reduced = nb - keep;
        nb = keep;
    }
    if ((uint64_t)INT64_MAX - nb * QCOW2_SN_HDR_SIZE < off || (off & (s->cs - 1))) {
        struct finding f = finding_make(FK_SNAP_TABLE_OFFSET_INVALID);
        f.err = -EINVAL;
        f.offset = off;
        qc2_report(s, &f);
        return -EINVAL;
    }
    /* the model's reader in qemu's repair mode: extra data beyond 1024 bytes is truncated,
     * not refused, and a table too big keeps the entries before the one that overflows */
    struct qcow2_sn_error why;
    int rc = qcow2_image_read_snapshots_opt(&s->m, (uint32_t)nb, QCOW2_SN_READ_REPAIR, &why);
    /* qemu says so of each entry as it reads it, the one it then drops included */
    for (uint32_t i = 0; i < s->nb_sn; i++) {
        if (s->sn[i].extra_truncated) {
            say_extra_dropped(i, s->sn[i].extra_data_size);
            dropped++;
        }
    }
    if (rc < 0 && why.kind == QCOW2_SN_TOO_BIG) {
        if (why.extra > QCOW2_MAX_SNAPSHOT_EXTRA) {
            say_extra_dropped(why.index, why.extra);
            dropped++;
        }
        err_plain("Discarding %" PRIu64 " overhanging snapshots (snapshot table is too "
                  "big)\n", nb - why.index);
        reduced += nb - why.index;
        nb = why.index;
        rc = 0;
    } else if (rc < 0) {
        struct finding f = finding_make(FK_SNAP_TABLE_POINTER_READ);
        f.err = rc;
        qc2_report(s, &f);
        goto out;
    }
    r->corruptions += (int64_t)(reduced + dropped);
    if (reduced) {
        rc = write_nb(s, (uint32_t)nb, "overhanging snapshots discarded");
        if (rc < 0) {
            r->check_errors++;
            goto out;
        }
        s->h.nb_snapshots = (uint32_t)nb;
        r->corruptions -= (int64_t)reduced;
        r->corruptions_fixed += (int64_t)reduced;
    }
    qc2_report_incomplete_snapshots(s, FF_REPAIRING);
out:
    return rc;
}

/* Clusters [k, k+n) free on disk and unreferenced, each covered by an existing refblock,
 * and no guest data (a snapshot the check skipped has data the IMRT does not count). */
static bool run_free(struct qc2 *s, uint64_t k, uint64_t n)
{
    const struct overlap_guard *g = &((struct repair_ctx *)s->fixer_ctx)->guard;
    for (uint64_t i = k; i < k + n; i++) {
        if (overlap_data_cluster(g, i))
            return false;
        uint64_t ti = i >> s->h.refcount_block_bits, v = 1;
        if (ti >= s->rt_loaded || !(s->rt[ti] & QCOW2_REFT_OFFSET_MASK))
            return false;
        if (i < s->imrt.n && imrt_get(&s->imrt, i))
            return false;
        if (qc2_ondisk_refcount(s, i, &v) < 0 || v)
            return false;
    }
    return true;
}

int repair_snapshot_rewrite(struct qc2 *s)
{
    uint64_t size = 0;
    for (uint32_t i = 0; i < s->nb_sn; i++) {
        size = (size + 7) & ~7ull;
        s->sn[i].extra_data_size = QCOW2_SN_EXTRA_KNOWN + s->sn[i].unknown_extra_len;
        /* qemu keeps id and name as C strings and writes strlen() of each back: bytes from
         * the first NUL on (e.g. read as zeros past EOF) are dropped, as qemu drops them */
        s->sn[i].id_str_size = (uint16_t)strnlen(s->sn[i].id_str ? s->sn[i].id_str : "",
                                                 s->sn[i].id_str_size);
        s->sn[i].name_size = (uint16_t)strnlen(s->sn[i].name ? s->sn[i].name : "",
                                               s->sn[i].name_size);
        size += qcow2_snapshot_encoded_size(&s->sn[i]);
    }
    uint64_t new_off = 0;
    int rc = 0;
    if (size) {
        uint8_t *t = xcalloc(1, (size_t)size);
        uint64_t pos = 0;
        for (uint32_t i = 0; i < s->nb_sn && rc >= 0; i++) {
            pos = (pos + 7) & ~7ull;
            int64_t w = qcow2_snapshot_encode(&s->sn[i], t + pos, (size_t)(size - pos));
            if (w < 0)
                rc = (int)w;
            else
                pos += (uint64_t)w;
        }
        uint64_t n = (size + s->cs - 1) / s->cs, k = 1, end = s->imrt.n + n + 1;
        if (rc >= 0)
            rc = overlap_guard_prepare(s, &((struct repair_ctx *)s->fixer_ctx)->guard);
        while (rc >= 0 && k < end && !run_free(s, k, n))
            k++;
        if (rc >= 0 && k >= end)
            rc = -ENOSPC;
        /* the table first: until its refcount is set it is an unreferenced free cluster,
         * and writing it also makes the file cover it, so a crash before the header
         * switch leaves at most a leak that a check can see */
        new_off = k << s->h.cluster_bits;
        if (rc >= 0)   /* qcow2_write_snapshots: every class */
            rc = repair_write(s, QCOW2_OL_NONE, PC_SNAPSHOT, new_off, t, (size_t)size,
                            "new snapshot table (%" PRIu32 " entries)", s->nb_sn);
        s->file_size = rp_plan(s)->size;
        if (rc >= 0)
            rc = repair_refcount_run(s, k, n, false, 1, PC_SNAPSHOT, "new snapshot table");
        free(t);
    }
    if (rc >= 0) {
        uint8_t h[12];
        be32_put(h, s->nb_sn);
        be64_put(h + 4, new_off);
        rc = repair_write(s, QCOW2_OL_ALL, PC_SNAPSHOT, 60, h, 12, "header: %" PRIu32 " snapshot(s), "
                        "table at 0x%" PRIx64, s->nb_sn, new_off);
    }
    if (rc >= 0 && s->sn_size) {
        /* qemu's qcow2_free_clusters walks the old table's clusters in order and stops at
         * the first without a refblock (-EAGAIN) or already at refcount 0 (-EINVAL); it then
         * rolls back what it decremented, so either all are freed or none. The new table
         * may lie inside the old range: its fresh refcounts count here, as in qemu. */
        uint64_t first = s->sn_offset >> s->h.cluster_bits;
        uint64_t last = (s->sn_offset + s->sn_size - 1) >> s->h.cluster_bits;
        int why = 0;
        for (uint64_t k = first; k <= last && !why;) {   /* a refblock at a time */
            const uint8_t *blk = NULL;
            uint64_t ti = k >> s->h.refcount_block_bits;
            uint64_t stop = (ti + 1) << s->h.refcount_block_bits;
            if (stop > last + 1 || stop <= k)
                stop = last + 1;
            if (qc2_refblock(s, ti, &blk) < 0 || !blk)
                why = EAGAIN;
            for (; k < stop && !why; k++)
                if (!qcow2_refblock_entry(blk, s->h.refcount_order,
                                          k & (s->h.refcount_block_entries - 1)))
                    why = EINVAL;
        }
        if (why)
            err_plain("qcow2_free_clusters failed: %s\n", strerror(why));
        if (rc >= 0 && !why)
            rc = repair_refcount_run(s, first, last - first + 1, true, 0, PC_SNAPSHOT,
                                     "old snapshot table freed");
    }
    if (rc < 0)
        err_plain("ERROR failed to update snapshot table: %s\n", strerror(-rc));
    return rc;
}
