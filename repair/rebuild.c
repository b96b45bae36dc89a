/* §3.8: rebuild the refcount table and blocks from the IMRT (qemu 7.2's
 * rebuild_refcount_structure: first-fit allocation in the IMRT, refblocks written as
 * IMRT slices, the reftable allocated last and its own refblocks rewritten until it
 * stops growing, then the header switched with one 12-byte write).
 *
 * Unlike qemu 7.2 (digest §3.8, §13.1), the clusters of old refblocks whose reftable
 * entry is damaged (reserved bits, unaligned) are kept out of the allocation, so the
 * new structure never overwrites the old one: qemu's own overlap check refuses exactly
 * that write and leaves the image marked corrupt. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "format/be.h"
#include "repair/repair.h"
#include "util/err.h"
#include "util/xalloc.h"

struct rb {
    struct qc2 *s;
    uint64_t *rt;       /* new reftable, host order */
    uint64_t rt_n;      /* entries */
    uint8_t *blk;       /* one refblock being encoded */
};

/* First-fit run of `count` clusters with IMRT 0 from *first; grows the IMRT at the end. */
static int alloc_imrt(struct rb *b, uint64_t count, uint64_t *first, uint64_t *out)
{
    struct imrt *t = &b->s->imrt;
    uint64_t k = *first, run = 0;
    bool first_gap = true;
    for (; k < t->n && run < count; k++) {
        if (!imrt_get(t, k)) {
            run++;
            if (first_gap) {
                *first = k;
                first_gap = false;
            }
        } else {
            run = 0;
        }
    }
    if (run < count && imrt_grow(t, k + count - run - 1) < 0)
        return -ENOMEM;
    k -= run;
    for (uint64_t i = 0; i < count; i++)
        imrt_set(t, k + i, 1);
    *out = k;
    return 0;
}

static int write_block(struct rb *b, uint64_t ri, uint64_t off)
{
    struct qc2 *s = b->s;
    uint64_t per = s->h.refcount_block_entries, base = ri * per;
    memset(b->blk, 0, (size_t)s->cs);
    for (uint64_t i = 0; i < per && base + i < s->imrt.n; i++) {
        uint64_t v = imrt_get(&s->imrt, base + i);
        if (v)
            qcow2_refblock_set(b->blk, (size_t)s->cs, s->h.refcount_order, i, v);
    }
    return plan_write(rp_plan(s), PC_REBUILD, off, b->blk, (size_t)s->cs,
                      "new refcount block %" PRIu64 " (clusters %" PRIu64 "..%" PRIu64 ")", ri,
                      base, base + per - 1);
}

/* qemu's rebuild_refcounts_write_refblocks over [first, end); 1 if the reftable grew. */
static int write_refblocks(struct rb *b, uint64_t first, uint64_t end)
{
    struct qc2 *s = b->s;
    uint64_t first_free = 0;
    int grown = 0;
    for (uint64_t k = first; k < end; k++) {
        if (k >= s->imrt.n || !imrt_get(&s->imrt, k))
            continue;
        uint64_t ri = k >> s->h.refcount_block_bits, start = ri << s->h.refcount_block_bits;
        uint64_t off;
        if (ri < b->rt_n && b->rt[ri]) {
            off = b->rt[ri];
        } else {
            if (first_free < start)
                first_free = start;
            uint64_t c;
            if (alloc_imrt(b, 1, &first_free, &c) < 0)
                return -ENOMEM;
            if (c >= end)
                end = c + 1;   /* the block holding this block's refcount must be written */
            off = c << s->h.cluster_bits;
            if (ri >= b->rt_n) {
                uint64_t per_cluster = s->cs / 8;
                uint64_t n = (ri + 1 + per_cluster - 1) / per_cluster * per_cluster;
                if (n > (8ull << 20) / 8)
                    return -EFBIG;   /* qemu's reftable limit: 8 MiB */
                b->rt = xreallocarray(b->rt, (size_t)n, 8);
                memset(b->rt + b->rt_n, 0, (size_t)((n - b->rt_n) * 8));
                b->rt_n = n;
                grown = 1;
            }
            b->rt[ri] = off;
        }
        int rc = write_block(b, ri, off);
        if (rc < 0)
            return rc;
        k = start + s->h.refcount_block_entries - 1;
    }
    return grown;
}

/* Old refblocks behind damaged reftable entries are not in the IMRT: reserve them. */
static void reserve_old_refblocks(struct qc2 *s)
{
    for (uint64_t i = 0; i < s->rt_loaded; i++) {
        uint64_t raw = s->rt[i], off = raw & QCOW2_REFT_OFFSET_MASK;
        if (!off || !((raw & QCOW2_REFT_RESERVED_MASK) || (off & (s->cs - 1))))
            continue;
        uint64_t k = off >> s->h.cluster_bits;
        if (k < s->imrt.n && !imrt_get(&s->imrt, k))
            imrt_set(&s->imrt, k, 1);
    }
}

int repair_rebuild(struct qc2 *s)
{
    struct rb b = { s, NULL, 0, xmalloc((size_t)s->cs) };
    int rc;
    reserve_old_refblocks(s);
    repair_drop_rb_cache(s);
    rc = write_refblocks(&b, 0, s->imrt.n);
    uint64_t rt_off = 0, rt_clusters = 0;
    while (rc > 0) {
        uint64_t first = 0, c;
        rt_clusters = (b.rt_n * 8 + s->cs - 1) / s->cs;
        if (alloc_imrt(&b, rt_clusters, &first, &c) < 0) {
            rc = -ENOMEM;
            break;
        }
        rt_off = c << s->h.cluster_bits;
        rc = write_refblocks(&b, c, c + rt_clusters);
    }
    if (rc < 0) {
        err_report("ERROR writing refblock: %s", strerror(-rc));
        s->res->check_errors++;
        goto out;
    }
    if (!b.rt_n) {
        rc = -EIO;   /* nothing is referenced: cannot happen, the header always is */
        goto out;
    }
    uint8_t *raw = xcalloc(1, (size_t)(rt_clusters * s->cs));
    for (uint64_t i = 0; i < b.rt_n; i++)
        be64_put(raw + i * 8, b.rt[i]);
    rc = plan_write(rp_plan(s), PC_REBUILD, rt_off, raw, (size_t)(b.rt_n * 8),
                    "new refcount table (%" PRIu64 " entries)", b.rt_n);
    free(raw);
    if (rc < 0) {
        err_report("ERROR writing reftable: %s", strerror(-rc));
        goto out;
    }
    uint8_t hdr[12];
    be64_put(hdr, rt_off);
    be32_put(hdr + 8, (uint32_t)rt_clusters);
    rc = plan_write(rp_plan(s), PC_REBUILD_HDR, 48, hdr, sizeof(hdr),
                    "header: refcount table at 0x%" PRIx64 ", %" PRIu64 " cluster(s)", rt_off,
                    rt_clusters);
    if (rc < 0) {
        err_report("ERROR setting reftable: %s", strerror(-rc));
        goto out;
    }
    free(s->rt);
    s->rt = b.rt;
    b.rt = NULL;
    s->rt_loaded = s->rt_entries = b.rt_n;
    s->h.refcount_table_offset = rt_off;
    s->h.refcount_table_clusters = (uint32_t)rt_clusters;
    s->h.reftable_entries = b.rt_n;
    s->file_size = rp_plan(s)->size;
    repair_drop_rb_cache(s);
out:
    free(b.rt);
    free(b.blk);
    return rc < 0 ? rc : 0;
}
