/* §3.3 steps 1-4 and §3.4: header, active L1/L2 (with statistics), every snapshot's
 * L1/L2. L2 tables are read in batches of adjacent tables (one pread per run, not per
 * table or per cluster). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "checker/qcow2_check.h"
#include "checker/qcow2_deep.h"
#include "checker/qcow2_l2read.h"
#include "format/be.h"
#include "util/xalloc.h"

struct walk {
    struct qc2 *s;
    struct l2_reader rd;
    int snapshot;             /* -1 active */
    bool active;
    const uint64_t *l1;
    uint64_t l1_n;            /* entries loaded (rest are 0) */
};

/* n bytes (a multiple of 8) all zero: whole words ORed, which the compiler vectorizes;
 * the walk asks for the first entry alone first, so dense tables pay one word */
static inline bool all_zero(const uint8_t *p, uint64_t n)
{
    uint64_t acc = 0;
    for (uint64_t k = 0; k < n; k += 8) {
        uint64_t w;
        memcpy(&w, p + k, 8);
        acc |= w;
    }
    return acc == 0;
}

/* 512*k bytes all zero: 16-byte vector ORs, 4 lanes deep (GCC/clang vector extension,
 * plain SSE2 on x86-64; the generic loop above stays scalar with a variable length) */
typedef uint64_t v2u64 __attribute__((vector_size(16)));
static inline bool all_zero_512(const uint8_t *p, uint64_t k)
{
    v2u64 a0 = { 0, 0 }, a1 = a0, a2 = a0, a3 = a0;
    for (const uint8_t *end = p + k * 512; p < end; p += 64) {
        v2u64 w0, w1, w2, w3;
        memcpy(&w0, p, 16);
        memcpy(&w1, p + 16, 16);
        memcpy(&w2, p + 32, 16);
        memcpy(&w3, p + 48, 16);
        a0 |= w0;
        a1 |= w1;
        a2 |= w2;
        a3 |= w3;
    }
    a0 |= a1 | a2 | a3;
    return !(a0[0] | a0[1]);
}

/* true if pass_copied must look at this entry again: a COPIED problem, or an unreadable
 * refcount (pass_copied skips those; re-reading is the simple, exact way to agree) */
static inline bool copied_check(struct qc2 *s, struct rc_lookup *lk, uint64_t e)
{
    uint64_t refcount;
    bool unreadable;
    return qc2_copied_wrong(s, lk, e, &refcount, &unreadable) || unreadable;
}

static int check_l2(struct walk *w, uint64_t l1_index, uint64_t l2_off)
{
    struct qc2 *s = w->s;
    struct check_result *res = s->res;
    const uint8_t *t;
    int rc = l2_reader_get(s, &w->rd, w->l1, w->l1_n, l1_index, l2_off, &t);
    if (rc < 0) {
        struct finding f = finding_make(FK_L2_IO_ERROR);
        f.err = rc;
        f.offset = l2_off;
        f.l1_index = l1_index;
        f.snapshot = w->snapshot;
        qc2_report(s, &f);
        return rc;
    }
    uint64_t cs = s->cs, esz = s->h.l2_entry_size, n = s->h.l2_entries;
    bool extl2 = s->geom.extended_l2, frag = w->active;
    uint64_t next_contiguous = 0;
    const unsigned cb = s->h.cluster_bits;
    const bool plain = !extl2 && !s->has_data_file && !s->opts->deep;
    /* read-only check: judge OFLAG_COPIED here against the on-disk refcounts, so that
     * pass_copied re-reads only tables with a problem (qemu reads every table twice) */
    uint8_t *suspect = w->active && s->copied_suspect ? &s->copied_suspect[l1_index] : NULL;
    bool copied_bad = false;
    struct rc_lookup lk = { 0, NULL, 0, false };
    for (uint64_t i = 0; i < n; i++) {
        /* unallocated runs cost nothing: 64 entries at a time (one OR over 512 or 1024
         * bytes), then 8; a dense table pays one word per 8 entries */
        if (!(i & 7) && i + 8 <= n && all_zero(t + i * esz, 8)) {
            if (!(i & 63) && i + 64 <= n && all_zero_512(t + i * esz, esz / 8)) {
                i += 63;
                continue;
            }
            if (all_zero(t + i * esz, 8 * esz)) {
                i += 7;
                continue;
            }
        }
        uint64_t e = be64_get(t + i * esz);
        uint64_t bmp = extl2 ? be64_get(t + i * esz + 8) : 0;
        if (!e && !bmp)
            continue;   /* fast path: UNALLOCATED with no bitmap, nothing to do */
        /* fast path: a healthy NORMAL entry (no flags but COPIED, aligned) */
        if (plain && !(e & ~(QCOW2_OFLAG_COPIED | QCOW2_L2E_OFFSET_MASK)) &&
            (e & QCOW2_L2E_OFFSET_MASK) && !(e & QCOW2_L2E_OFFSET_MASK & (cs - 1))) {
            uint64_t off = e & QCOW2_L2E_OFFSET_MASK;
            if (frag) {
                res->allocated_clusters++;
                if (next_contiguous && off != next_contiguous)
                    res->fragmented_clusters++;
                next_contiguous = off + cs;
            }
            rc = qc2_inc_cluster(s, off >> cb, w->snapshot);
            if (rc < 0)
                return rc;
            if (suspect && !copied_bad)
                copied_bad = copied_check(s, &lk, e);
            continue;
        }
        enum qcow2_cluster_type type = qcow2_l2e_type(&s->geom, e);
        if (suspect && !copied_bad &&
            (type == QCOW2_CLUSTER_NORMAL || type == QCOW2_CLUSTER_ZERO_ALLOC))
            copied_bad = copied_check(s, &lk, e);
        uint64_t guest = FIND_NONE;
        if (w->active) {
            uint64_t gc = l1_index * n + i;   /* l1_index < 2^22, n <= 2^18: no overflow */
            guest = gc << cb;
        }
        struct finding f = finding_make(FK_L2_RESERVED);
        f.entry = e;
        f.entry_offset = l2_off + i * esz;
        f.l1_index = l1_index;
        f.l2_index = i;
        f.snapshot = w->snapshot;
        f.guest_offset = guest;
        f.guest_len = guest == FIND_NONE ? FIND_NONE : cs;

        if (type != QCOW2_CLUSTER_COMPRESSED && (e & QCOW2_L2E_STD_RESERVED_MASK)) {
            qc2_report(s, &f);
        }
        switch (type) {
        case QCOW2_CLUSTER_COMPRESSED: {
            struct qcow2_compressed c;
            if (e & QCOW2_OFLAG_COPIED) {
                f.kind = FK_COMPRESSED_COPIED;
                f.offset = e & s->h.cluster_offset_mask;
                qc2_report(s, &f);
                e &= ~QCOW2_OFLAG_COPIED;
                f.offset = FIND_NONE;
            }
            f.entry = e;
            if (s->has_data_file) {
                f.kind = FK_COMPRESSED_DATA_FILE;
                qc2_report(s, &f);
                break;
            }
            if (bmp) {
                f.kind = FK_COMPRESSED_SUBCLUSTERS;
                qc2_report(s, &f);
                break;
            }
            qcow2_compressed_decode(s->h.cluster_bits, e, &c);
            rc = qc2_inc_refs(s, c.host_offset, c.csize, w->snapshot);
            if (rc < 0)
                return rc;
            if (frag) {
                res->allocated_clusters++;
                res->compressed_clusters++;
                res->fragmented_clusters++;
            }
            if (s->opts->deep)
                qc2_deep_compressed(s, e, &c, &f);
            break;
        }
        case QCOW2_CLUSTER_ZERO_ALLOC:
        case QCOW2_CLUSTER_NORMAL: {
            uint64_t off = e & QCOW2_L2E_OFFSET_MASK;
            f.offset = off;
            if ((bmp >> 32) & bmp) {
                f.kind = FK_SUBCLUSTER_BITMAP;
                f.found = bmp;
                qc2_report(s, &f);
                f.found = FIND_NONE;
            }
            if (off & (cs - 1)) {
                bool data = extl2 ? (bmp & QCOW2_L2_BITMAP_ALL_ALLOC) : !(e & QCOW2_OFLAG_ZERO);
                f.kind = data ? FK_DATA_UNALIGNED : FK_PREALLOC_UNALIGNED;
                f.cluster = off >> s->h.cluster_bits;
                /* §3.10 under -r all; qimg also drops unaligned data entries (README) */
                /* never write through a "table" at an unaligned offset: it is not one */
                bool fixing = (s->fix & CHECK_FIX_ERRORS) && s->fixer && !(l2_off & (cs - 1));
                /* qimg's own fix of data entries is not tried in a "table" that is the
                 * header cluster (qemu would refuse the write; the check goes on) */
                if (data && l2_off < cs)
                    fixing = false;
                if (fixing && !data)
                    f.flags |= FF_REPAIRING;
                qc2_report(s, &f);
                f.cluster = FIND_NONE;
                if (fixing) {
                    int frc = s->fixer->zero_l2_entry(s, &f, bmp);
                    if (frc == 0) {
                        res->corruptions--;
                        res->corruptions_fixed++;
                        break;   /* the cluster is unused now: no reference, no stats */
                    }
                    res->check_errors++;
                    if (frc == -EIO)
                        return frc;   /* qemu: overlap check failed, abort the check */
                }
            }
            if (frag) {
                res->allocated_clusters++;
                if (next_contiguous && off != next_contiguous)
                    res->fragmented_clusters++;
                next_contiguous = off + cs;
            }
            if (!s->has_data_file) {
                rc = qc2_inc_refs(s, off, cs, w->snapshot);
                if (rc < 0)
                    return rc;
            }
            if (s->opts->deep)
                qc2_deep_l2_entry(s, type, e, &f);
            break;
        }
        case QCOW2_CLUSTER_ZERO_PLAIN:
            if (s->opts->deep)
                qc2_deep_l2_entry(s, type, e, &f);
            break;
        case QCOW2_CLUSTER_UNALLOCATED:
            if (bmp & QCOW2_L2_BITMAP_ALL_ALLOC) {
                f.kind = FK_UNALLOC_SUBCLUSTERS;
                f.found = bmp;
                qc2_report(s, &f);
            }
            break;
        }
    }
    if (suspect)
        *suspect = copied_bad;
    return 0;
}

/* qemu's check_refcounts_l1. l1_cached: the active L1 already loaded at open. */
static int check_l1(struct walk *w, uint64_t l1_off, uint64_t l1_size)
{
    struct qc2 *s = w->s;
    if (!l1_size)
        return 0;
    int rc = qc2_inc_refs(s, l1_off, l1_size * 8, w->snapshot);
    if (rc < 0)
        return rc;
    for (uint64_t i = 0; i < w->l1_n; i++) {
        uint64_t e = w->l1[i];
        if (!e)
            continue;
        if (e & QCOW2_L1E_RESERVED_MASK) {
            struct finding f = finding_make(FK_L1_RESERVED);
            f.entry = e;
            f.entry_offset = l1_off + i * 8;
            f.l1_index = i;
            f.snapshot = w->snapshot;
            qc2_report(s, &f);
        }
        uint64_t l2 = e & QCOW2_L1E_OFFSET_MASK;
        rc = qc2_inc_refs(s, l2, s->cs, w->snapshot);
        if (rc < 0)
            return rc;
        if (l2 & (s->cs - 1)) {
            struct finding f = finding_make(FK_L2_UNALIGNED);
            f.offset = l2;
            f.entry = e;
            f.entry_offset = l1_off + i * 8;
            f.l1_index = i;
            f.snapshot = w->snapshot;
            qc2_report(s, &f);
        }
        rc = check_l2(w, i, l2);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int qc2_pass_l1l2(struct qc2 *s)
{
    struct walk w;
    memset(&w, 0, sizeof(w));
    w.s = s;
    l2_reader_init(&w.rd, s->cs, s->file_size);
    int rc = qc2_inc_refs(s, 0, s->cs, -1);   /* header */
    if (rc < 0)
        goto out;
    w.snapshot = -1;
    w.active = true;
    w.l1 = s->l1;
    w.l1_n = s->l1_loaded;
    if (s->copied_prescreen && !s->fix && !s->opts->deep && s->l1_loaded) {
        /* every table suspect until the walk has judged it (an early return keeps it so) */
        free(s->copied_suspect);
        s->copied_suspect = xmalloc((size_t)s->l1_loaded);
        memset(s->copied_suspect, 1, (size_t)s->l1_loaded);
    }
    /* two readers only while nothing writes to the image (no fix in this run) */
    l2_reader_begin_walk(s, &w.rd, w.l1, w.l1_n, !s->fix);
    rc = check_l1(&w, s->h.l1_table_offset, s->h.l1_size);
    l2_reader_end_walk(&w.rd);
    if (rc < 0)
        goto out;
    if (s->has_data_file && s->nb_sn > 0) {
        struct finding f = finding_make(FK_SNAP_WITH_DATA_FILE);
        f.found = s->nb_sn;
        qc2_report(s, &f);
    }
    w.active = false;
    for (uint32_t i = 0; i < s->nb_sn; i++) {
        const struct qcow2_snapshot *sn = &s->sn[i];
        w.snapshot = (int)i;
        if (sn->l1_table_offset & (s->cs - 1)) {
            struct finding f = finding_make(FK_SNAP_L1_UNALIGNED);
            f.snapshot = (int)i;
            f.offset = sn->l1_table_offset;
            qc2_report(s, &f);
            continue;
        }
        if (sn->l1_size > QCOW2_MAX_L1_SIZE / 8) {
            struct finding f = finding_make(FK_SNAP_L1_TOO_LARGE);
            f.snapshot = (int)i;
            f.offset = sn->l1_table_offset;
            f.found = sn->l1_size;
            qc2_report(s, &f);
            continue;
        }
        if (s->opts->deep)
            qc2_deep_snapshot(s, i);
        uint64_t *l1 = NULL, n = 0;
        rc = qc2_load_table(s, sn->l1_table_offset, sn->l1_size, &l1, &n);   /* clamped as the active one */
        if (rc < 0) {
            /* qemu counts the table's clusters before it fails to read them */
            int rc2 = qc2_inc_refs(s, sn->l1_table_offset, (uint64_t)sn->l1_size * 8, (int)i);
            if (rc2 < 0) {
                rc = rc2;
                goto out;
            }
            struct finding f = finding_make(FK_L1_IO_ERROR);
            f.err = rc;
            f.snapshot = (int)i;
            qc2_report(s, &f);
            goto out;
        }
        w.l1 = l1;
        w.l1_n = n;
        l2_reader_begin_walk(s, &w.rd, w.l1, w.l1_n, !s->fix);
        rc = check_l1(&w, sn->l1_table_offset, sn->l1_size);
        l2_reader_end_walk(&w.rd);
        free(l1);
        if (rc < 0)
            goto out;
    }
    /* snapshot table, reftable, LUKS header (§3.3 steps 5-7) */
    rc = qc2_inc_refs(s, s->sn_offset, s->sn_size, -1);
    if (rc < 0)
        goto out;
    rc = qc2_inc_refs(s, s->h.refcount_table_offset, s->rt_entries * 8, -1);
    if (rc < 0)
        goto out;
    if (s->ext.has_crypto && s->ext.crypto_length)
        rc = qc2_inc_refs(s, s->ext.crypto_offset, s->ext.crypto_length, -1);
out:
    l2_reader_free(&w.rd);
    return rc;
}
