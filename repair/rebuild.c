/* §3.8: rebuild the refcount table and blocks from the IMRT (qemu 7.2's
 * rebuild_refcount_structure: first-fit allocation in the IMRT, refblocks written as
 * IMRT slices, the reftable allocated last and its own refblocks rewritten until it
 * stops growing, then the header switched with one 12-byte write).
 *
 * Unlike qemu 7.2 (digest §3.8, §3.11, §13.1), the allocator never hands out a cluster
 * of live metadata, even one the IMRT does not count: old refblocks whose reftable entry
 * is damaged (reserved bits, unaligned), and any table (active L1, L2, snapshot table,
 * ...) that lies past EOF (repair/metamap.h). qemu picks such clusters and then its
 * overlap check refuses the write, failing the repair ("Check failed") with the image
 * marked corrupt; qimg places the new structure elsewhere. Every write still goes through
 * the overlap guard (qcow2/overlap.h, repair/data_guard.h); a hit fails the fixing pass,
 * and of the plan only the corrupt bit is written, as qemu marks the image. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "format/be.h"
#include "repair/metamap.h"
#include "repair/repair.h"
#include "util/err.h"
#include "util/xalloc.h"

/* Allocation stops below this file offset (table entries hold 56-bit offsets). */
#define META_ALLOC_LIMIT (1ull << 56)

struct rb {
    struct qc2 *s;
    struct metamap mm;  /* live metadata the new structure must not overwrite */
    struct overlap_guard *guard;   /* nor what the guard refuses */
    uint64_t *rt;       /* new reftable, host order */
    uint64_t rt_n;      /* entries */
    uint8_t *blk;       /* one refblock being encoded */
};

/* First-fit run of `count` clusters with IMRT 0 from *first, never in a range of live
 * metadata (b->mm: the IMRT misses metadata past EOF or behind a damaged entry); grows
 * the IMRT at the end. */
static int alloc_imrt(struct rb *b, uint64_t count, uint64_t *first, uint64_t *out)
{
    struct imrt *t = &b->s->imrt;
    uint64_t k = *first, run = 0, start = 0;
    uint64_t limit = META_ALLOC_LIMIT >> b->s->h.cluster_bits;
    bool first_gap = true;
    while (run < count) {
        if (k >= limit)
            return -EFBIG;
        uint64_t next = metamap_skip(&b->mm, k);
        if (next != k) {
            run = 0;
            k = next;
            continue;
        }
        /* nor anything the overlap guard would refuse: guest data the IMRT does not
         * count (a snapshot the check skipped), the second cluster of an unaligned old
         * refblock, ... */
        if ((k < t->n && imrt_get(t, k)) ||
            overlap_find(b->s, b->guard, 0, k << b->s->h.cluster_bits, b->s->cs) != 0) {
            run = 0;
            k++;
            continue;
        }
        if (first_gap) {
            *first = k;
            first_gap = false;
        }
        if (!run)
            start = k;
        run++;
        k++;
    }
    if (start + count > t->n && imrt_grow(t, start + count - 1) < 0)
        return -ENOMEM;
    for (uint64_t i = 0; i < count; i++)
        imrt_set(t, start + i, 1);
    *out = start;
    return 0;
}

/* qemu's overlap check before a rebuild write (§3.11): every class, against the old
 * metadata (the new reftable is installed only at the end). The allocator above never
 * picks metadata, so this fires only on what the allocator cannot know about. */
static int overlap_check(struct rb *b, uint64_t off, uint64_t len)
{
    return qcow2_overlap_check(&b->s->m, QCOW2_OL_NONE, off, len);
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
    int rc = overlap_check(b, off, s->cs);
    if (rc < 0)
        return rc;
    return repair_write(s, QCOW2_OL_NONE, PC_REBUILD, off, b->blk, (size_t)s->cs,
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
            int arc = alloc_imrt(b, 1, &first_free, &c);
            if (arc < 0)
                return arc;
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
        /* an unaligned block covers two clusters (so does qemu's overlap check of it) */
        uint64_t k = off >> s->h.cluster_bits;
        uint64_t last = off > UINT64_MAX - (s->cs - 1) ? k : (off + s->cs - 1) >> s->h.cluster_bits;
        for (; k <= last; k++)
            if (k < s->imrt.n && !imrt_get(&s->imrt, k))
                imrt_set(&s->imrt, k, 1);
    }
}

/* References the check found past EOF (metadata or data) that the new structure brings
 * inside the file (rt_end: end of the new reftable, not yet written) are counted by the
 * recount after the rebuild (§3.7), with qemu's rule for "past EOF". Count them now, so
 * the new refblocks hold their refcounts instead of 0 (a new "refcount=0 reference=1").
 * Their clusters were never allocated (they are in b->mm). 1 if the reftable grew, 0,
 * or -errno. */
static int count_now_inside(struct rb *b, uint64_t rt_end)
{
    struct qc2 *s = b->s;
    int grown = 0;
    for (bool again = true; again;) {
        again = false;
        uint64_t fsize = rp_plan(s)->size > rt_end ? rp_plan(s)->size : rt_end;
        for (size_t i = 0; i < b->mm.rs.n; i++) {
            struct meta_range *r = metamap_at(&b->mm, i);
            if (!r->ref_end || r->counted ||
                (int64_t)r->ref_end - (int64_t)fsize >= (int64_t)s->cs)
                continue;
            r->counted = true;
            again = true;
            if (r->r.end > s->imrt.n && imrt_grow(&s->imrt, r->r.end - 1) < 0)
                return -ENOMEM;
            for (uint64_t k = r->r.start; k < r->r.end; k++) {
                uint64_t v = imrt_get(&s->imrt, k);
                if (v < s->imrt.max)
                    imrt_set(&s->imrt, k, v + 1);
            }
            int rc = write_refblocks(b, r->r.start, r->r.end);
            if (rc < 0)
                return rc;
            grown |= rc;
        }
    }
    return grown;
}

/* The header fields a rebuild rewrites (refcount_table_offset, _clusters). */
#define HDR_REFTABLE_FIELDS_OFF 48

int repair_rebuild(struct qc2 *s)
{
    struct overlap_guard *g = &((struct repair_ctx *)s->fixer_ctx)->guard;
    struct rb b = { s, { { 0 } }, g, NULL, 0, NULL };
    int rc;
    reserve_old_refblocks(s);
    /* built from the old in-memory metadata, before anything is allocated */
    rc = overlap_guard_prepare(s, g);
    if (rc == 0)
        rc = metamap_build(&b.mm, s);
    if (rc < 0) {
        err_report("ERROR reading metadata for the rebuild: %s", strerror(-rc));
        s->res->check_errors++;
        return rc;
    }
    /* Other metadata in the header's cluster (an L1 or snapshot table at offset 0, an L2
     * table named as cluster 0) shares bytes with the header: switching the reftable
     * would rewrite one of its entries too, into a pointer at the new refcount
     * structures. qemu's rebuild fails on such images as well (its overlap check, or its
     * refblocks landing in that table); refuse before planning anything. */
    const char *shared = metamap_shares_header(&b.mm);
    if (shared) {
        err_report("ERROR cannot rebuild the refcount structure: the %s overlaps the image "
                   "header", shared);
        s->res->check_errors++;
        metamap_free(&b.mm);
        return -EINVAL;
    }
    b.blk = xmalloc((size_t)s->cs);
    repair_drop_rb_cache(s);
    rc = write_refblocks(&b, 0, s->imrt.n);
    uint64_t rt_off = 0, rt_clusters = 0;
    for (;;) {
        while (rc > 0) {
            uint64_t first = 0, c;
            rt_clusters = (b.rt_n * 8 + s->cs - 1) / s->cs;
            if ((rc = alloc_imrt(&b, rt_clusters, &first, &c)) < 0)
                break;
            rt_off = c << s->h.cluster_bits;
            rc = write_refblocks(&b, c, c + rt_clusters);
        }
        if (rc < 0 || !rt_clusters)
            break;
        rc = count_now_inside(&b, rt_off + rt_clusters * s->cs);
        if (rc <= 0)
            break;
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
    rc = overlap_check(&b, rt_off, rt_clusters * s->cs);
    if (rc < 0) {
        err_report("ERROR writing reftable: %s", strerror(-rc));
        s->res->check_errors++;
        goto out;
    }
    uint8_t *raw = xcalloc(1, (size_t)(rt_clusters * s->cs));
    for (uint64_t i = 0; i < b.rt_n; i++)
        be64_put(raw + i * 8, b.rt[i]);
    rc = repair_write(s, QCOW2_OL_NONE, PC_REBUILD, rt_off, raw, (size_t)(b.rt_n * 8),
                    "new refcount table (%" PRIu64 " entries)", b.rt_n);
    free(raw);
    if (rc < 0) {
        err_report("ERROR writing reftable: %s", strerror(-rc));
        goto out;
    }
    uint8_t hdr[12];
    be64_put(hdr, rt_off);
    be32_put(hdr + 8, (uint32_t)rt_clusters);
    rc = repair_write(s, QCOW2_OL_ALL, PC_REBUILD_HDR, HDR_REFTABLE_FIELDS_OFF, hdr, sizeof(hdr),
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
    qcow2_overlap_invalidate(&s->m);   /* the refcount structures moved */
out:
    metamap_free(&b.mm);
    free(b.rt);
    free(b.blk);
    return rc < 0 ? rc : 0;
}
