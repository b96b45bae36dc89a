/* The overlap guard of repair writes (see overlap.h). */
#include "repair/overlap.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checker/qcow2_check.h"
#include "format/be.h"
#include "repair/plan.h"
#include "repair/repair.h"
#include "util/err.h"
#include "util/xalloc.h"

/* qemu's metadata_ol_names, then qimg's own class */
static const char *const class_names[OL_NCLASSES] = {
    "qcow2_header", "active L1 table", "active L2 table", "refcount table",
    "refcount block", "snapshot table", "inactive L1 table", "inactive L2 table",
    "bitmap directory", "guest data",
};

/* qemu's test order (qcow2_check_metadata_overlap), guest data last */
static const unsigned class_order[] = {
    OL_MAIN_HEADER, OL_ACTIVE_L1, OL_REFCOUNT_TABLE, OL_SNAPSHOT_TABLE, OL_INACTIVE_L1,
    OL_ACTIVE_L2, OL_REFCOUNT_BLOCK, OL_INACTIVE_L2, OL_BITMAP_DIRECTORY, OL_GUEST_DATA,
};

static unsigned bitnr(unsigned cls)
{
    return (unsigned)__builtin_ctz(cls);
}

const char *overlap_class_name(unsigned cls)
{
    return cls && bitnr(cls) < OL_NCLASSES ? class_names[bitnr(cls)] : "?";
}

/* --- range sets -------------------------------------------------------------------- */

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static void set_add(struct ol_set *t, uint64_t start, uint64_t len)
{
    if (!len)
        return;
    if (t->n == t->alloc) {
        t->alloc = t->alloc ? t->alloc * 2 : 16;
        t->v = xreallocarray(t->v, t->alloc, sizeof(*t->v));
    }
    t->v[t->n++] = (struct ol_range){ start, sat_add(start, len) };
}

static int cmp_range(const void *a, const void *b)
{
    const struct ol_range *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

static void set_seal(struct ol_set *t)
{
    if (t->n)
        qsort(t->v, t->n, sizeof(*t->v), cmp_range);
    t->max_end = xreallocarray(t->max_end, t->n ? t->n : 1, sizeof(*t->max_end));
    for (size_t i = 0; i < t->n; i++)
        t->max_end[i] = i && t->max_end[i - 1] > t->v[i].end ? t->max_end[i - 1] : t->v[i].end;
}

static void set_free(struct ol_set *t)
{
    free(t->v);
    free(t->max_end);
    memset(t, 0, sizeof(*t));
}

/* Does any range overlap [a, b)? */
static bool set_hits(const struct ol_set *t, uint64_t a, uint64_t b)
{
    size_t lo = 0, hi = t->n;   /* count ranges with start < b */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (t->v[mid].start < b)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo && t->max_end[lo - 1] > a;
}

/* How many ranges overlap [a, b) (diagnosis only). */
static uint64_t set_count(const struct ol_set *t, uint64_t a, uint64_t b)
{
    uint64_t n = 0;
    for (size_t i = 0; i < t->n && t->v[i].start < b; i++)
        n += t->v[i].end > a;
    return n;
}

/* --- building ---------------------------------------------------------------------- */

/* The snapshots whose tables the check walks (aligned L1, l1_size within qemu's limit). */
static bool walked_snapshot(const struct qc2 *s, const struct qcow2_snapshot *sn)
{
    return !(sn->l1_table_offset & (s->cs - 1)) && sn->l1_size <= QCOW2_MAX_L1_SIZE / 8;
}

/* The entries of snapshot sn's L1 table that the inactive-L1 class covers: all of them
 * (qemu), except for an l1_size past qemu's limit, which the check reports as corrupt and
 * never walks: then only the entries its virtual disk needs. */
static uint64_t guarded_l1_entries(const struct qc2 *s, const struct qcow2_snapshot *sn)
{
    if (sn->l1_size <= QCOW2_MAX_L1_SIZE / 8)
        return sn->l1_size;
    uint64_t need = qcow2_size_to_l1(&s->h, sn->has_disk_size ? sn->disk_size : s->h.size);
    return need < sn->l1_size ? need : sn->l1_size;
}

static int build_classes(struct qc2 *s, struct overlap_guard *g)
{
    for (int i = 0; i < OL_NCLASSES; i++)
        g->cls[i].n = 0;
    const struct qcow2_header *h = &s->h;
    set_add(&g->cls[bitnr(OL_ACTIVE_L1)], h->l1_table_offset, (uint64_t)h->l1_size * 8);
    if (s->rt_entries <= UINT64_MAX / 8)
        set_add(&g->cls[bitnr(OL_REFCOUNT_TABLE)], h->refcount_table_offset, s->rt_entries * 8);
    set_add(&g->cls[bitnr(OL_SNAPSHOT_TABLE)], s->sn_offset, s->sn_size);
    for (uint32_t i = 0; i < s->nb_sn; i++)
        set_add(&g->cls[bitnr(OL_INACTIVE_L1)], s->sn[i].l1_table_offset,
                guarded_l1_entries(s, &s->sn[i]) * 8);
    for (uint64_t i = 0; i < s->l1_loaded; i++)
        if (s->l1[i] & QCOW2_L1E_OFFSET_MASK)
            set_add(&g->cls[bitnr(OL_ACTIVE_L2)], s->l1[i] & QCOW2_L1E_OFFSET_MASK, s->cs);
    for (uint64_t i = 0; i < s->rt_loaded; i++)
        if (s->rt[i] & QCOW2_REFT_OFFSET_MASK)
            set_add(&g->cls[bitnr(OL_REFCOUNT_BLOCK)], s->rt[i] & QCOW2_REFT_OFFSET_MASK, s->cs);
    int rc = 0;
    /* inactive L2 tables need every snapshot L1 read: only when the class is checked */
    for (uint32_t i = 0; (OL_DEFAULT & OL_INACTIVE_L2) && i < s->nb_sn && rc == 0; i++) {
        const struct qcow2_snapshot *sn = &s->sn[i];
        if (!walked_snapshot(s, sn))
            continue;
        uint64_t *l1 = NULL, n = 0;
        rc = qc2_load_table(s, sn->l1_table_offset, sn->l1_size, &l1, &n);
        for (uint64_t j = 0; rc == 0 && j < n; j++)
            if (l1[j] & QCOW2_L1E_OFFSET_MASK)
                set_add(&g->cls[bitnr(OL_INACTIVE_L2)], l1[j] & QCOW2_L1E_OFFSET_MASK, s->cs);
        free(l1);
    }
    if (s->ext.has_bitmaps && (h->autoclear_features & 1))
        set_add(&g->cls[bitnr(OL_BITMAP_DIRECTORY)], s->ext.bitmap_directory_offset,
                s->ext.bitmap_directory_size);
    for (int i = 0; i < OL_NCLASSES; i++)
        set_seal(&g->cls[i]);
    g->built = rc == 0;
    return rc;
}

static void bit_set(uint8_t *m, uint64_t k)
{
    m[k / 8] |= (uint8_t)(1u << (k % 8));
}

static bool bit_get(const uint8_t *m, uint64_t k)
{
    return m && (m[k / 8] >> (k % 8)) & 1;
}

/* Mark the clusters one L2 table maps as guest data. Entries with an unaligned offset map
 * no cluster (the repair zeroes them or qimg drops them, saying so). */
static void map_l2(struct qc2 *s, struct overlap_guard *g, const uint8_t *t, uint8_t *m)
{
    uint64_t esz = s->h.l2_entry_size, n = s->h.l2_entries;
    unsigned cb = s->h.cluster_bits;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t e = be64_get(t + i * esz);
        if (!e)
            continue;
        enum qcow2_cluster_type type = qcow2_l2e_type(&s->geom, e);
        if (type == QCOW2_CLUSTER_COMPRESSED) {
            struct qcow2_compressed c;
            uint64_t first, last;
            qcow2_compressed_decode(cb, e & ~QCOW2_OFLAG_COPIED, &c);
            qcow2_compressed_clusters(cb, &c, &first, &last);
            for (uint64_t k = first; k <= last && k < g->data_clusters; k++)
                bit_set(m, k);
        } else if (type == QCOW2_CLUSTER_NORMAL || type == QCOW2_CLUSTER_ZERO_ALLOC) {
            uint64_t off = e & QCOW2_L2E_OFFSET_MASK;
            if (off && !(off & (s->cs - 1)) && (off >> cb) < g->data_clusters)
                bit_set(m, off >> cb);
        }
    }
}

/* A snapshot "L2 table" that is metadata of the active image (its L1 or L2 tables, the
 * refcount structures, the header, the snapshot table) is a garbage L1 entry: what its
 * "entries" map is no guest data, and counting it would block fixes of the real table. */
static bool active_metadata(struct qc2 *s, const struct overlap_guard *g, uint64_t off)
{
    static const unsigned classes[] = {
        OL_ACTIVE_L1, OL_ACTIVE_L2, OL_REFCOUNT_TABLE, OL_REFCOUNT_BLOCK, OL_SNAPSHOT_TABLE,
        OL_BITMAP_DIRECTORY,
    };
    uint64_t a = off & ~(s->cs - 1), b = sat_add(off, s->cs);
    if (a < s->cs)
        return true;
    for (size_t i = 0; i < sizeof(classes) / sizeof(classes[0]); i++)
        if (set_hits(&g->cls[bitnr(classes[i])], a, b))
            return true;
    return false;
}

static int map_l1(struct qc2 *s, struct overlap_guard *g, const uint64_t *l1, uint64_t n,
                  uint8_t *m, uint8_t *seen, uint8_t *buf)
{
    for (uint64_t i = 0; i < n; i++) {
        uint64_t l2 = l1[i] & QCOW2_L1E_OFFSET_MASK;
        if (!l2 || l2 >= s->file_size)
            continue;
        if (m == g->data_snap && active_metadata(s, g, l2))
            continue;
        bool aligned = !(l2 & (s->cs - 1));
        uint64_t k = l2 >> s->h.cluster_bits;
        if (aligned && bit_get(seen, k))
            continue;   /* shared with an earlier L1 entry or table: same entries */
        int rc = qc2_read(s, buf, s->cs, l2);
        if (rc < 0)
            return rc;
        map_l2(s, g, buf, m);
        if (aligned)
            bit_set(seen, k);
    }
    return 0;
}

/* Which clusters L2 entries map as guest data, the active image's and the snapshots'
 * apart; on the image as the fixing pass found it (fixes only ever remove mappings). An
 * external data file holds all guest data: nothing in this file is. */
static int build_data(struct qc2 *s, struct overlap_guard *g)
{
    g->data_built = true;
    if (s->has_data_file)
        return 0;
    g->data_clusters = (s->file_size + s->cs - 1) >> s->h.cluster_bits;
    size_t bytes = (size_t)(g->data_clusters / 8 + 1);
    g->data_active = xcalloc(1, bytes);
    g->data_snap = xcalloc(1, bytes);
    uint8_t *seen = xcalloc(1, bytes), *buf = xmalloc((size_t)s->cs);
    int rc = map_l1(s, g, s->l1, s->l1_loaded, g->data_active, seen, buf);
    memset(seen, 0, bytes);
    for (uint32_t i = 0; i < s->nb_sn && rc == 0; i++) {
        /* a snapshot whose l1_size is too large is not walked by the check (so its data
         * is free in the IMRT), but its entry stays: guard what its disk needs */
        const struct qcow2_snapshot *sn = &s->sn[i];
        if (sn->l1_table_offset & (s->cs - 1))
            continue;
        uint64_t *l1 = NULL, n = 0;
        rc = qc2_load_table(s, sn->l1_table_offset, guarded_l1_entries(s, sn), &l1, &n);
        if (rc == 0)
            rc = map_l1(s, g, l1, n, g->data_snap, seen, buf);
        free(l1);
    }
    free(seen);
    free(buf);
    return rc;
}

int overlap_guard_prepare(struct qc2 *s, struct overlap_guard *g)
{
    int rc = 0;
    if (!g->built && (rc = build_classes(s, g)) < 0)
        return rc;
    if (!g->data_built)
        rc = build_data(s, g);   /* after the classes: it consults them */
    return rc;
}

void overlap_guard_free(struct overlap_guard *g)
{
    for (int i = 0; i < OL_NCLASSES; i++)
        set_free(&g->cls[i]);
    free(g->data_active);
    free(g->data_snap);
    memset(g, 0, sizeof(*g));
}

void overlap_guard_invalidate(struct overlap_guard *g)
{
    g->built = false;
}

bool overlap_data_cluster(const struct overlap_guard *g, uint64_t k)
{
    return k < g->data_clusters && (bit_get(g->data_active, k) || bit_get(g->data_snap, k));
}

/* --- the check --------------------------------------------------------------------- */

static bool data_hits(const struct overlap_guard *g, uint64_t k0, uint64_t k1)
{
    for (uint64_t k = k0; k < k1 && k < g->data_clusters; k++)
        if (overlap_data_cluster(g, k))
            return true;
    return false;
}

int overlap_find(struct qc2 *s, struct overlap_guard *g, unsigned ign, uint64_t off,
                 uint64_t len)
{
    if (!len)
        return 0;
    if (!(ign & OL_MAIN_HEADER) && off < s->cs)
        return OL_MAIN_HEADER;
    int rc = overlap_guard_prepare(s, g);
    if (rc < 0)
        return rc;
    /* qemu rounds the write out to whole clusters, not the metadata ranges */
    uint64_t a = off & ~(s->cs - 1), b = sat_add(off, len);
    b = b > UINT64_MAX - (s->cs - 1) ? UINT64_MAX : (b + s->cs - 1) & ~(s->cs - 1);
    for (size_t i = 1; i < sizeof(class_order) / sizeof(class_order[0]); i++) {
        unsigned c = class_order[i];
        if ((ign & c) || !(OL_DEFAULT & c))
            continue;
        if (c == OL_GUEST_DATA ? data_hits(g, a >> s->h.cluster_bits, b >> s->h.cluster_bits)
                               : set_hits(&g->cls[bitnr(c)], a, b))
            return (int)c;
    }
    return 0;
}

/* The first L2 entry (active image first) that maps cluster k as guest data. */
static void data_owner(struct qc2 *s, uint64_t k, char *out, size_t n)
{
    snprintf(out, n, "an L2 entry maps it as guest data");
    uint64_t esz = s->h.l2_entry_size, ne = s->h.l2_entries;
    uint8_t *buf = xmalloc((size_t)s->cs);
    for (uint64_t i = 0; i < s->l1_loaded; i++) {
        uint64_t l2 = s->l1[i] & QCOW2_L1E_OFFSET_MASK;
        if (!l2 || l2 >= s->file_size || qc2_read(s, buf, s->cs, l2) < 0)
            continue;
        for (uint64_t j = 0; j < ne; j++) {
            uint64_t e = be64_get(buf + j * esz);
            enum qcow2_cluster_type t = qcow2_l2e_type(&s->geom, e);
            if ((t == QCOW2_CLUSTER_NORMAL || t == QCOW2_CLUSTER_ZERO_ALLOC) &&
                (e & QCOW2_L2E_OFFSET_MASK) == k << s->h.cluster_bits) {
                snprintf(out, n, "it holds guest offset 0x%" PRIx64 " of the active image",
                         (i * ne + j) << s->h.cluster_bits);
                free(buf);
                return;
            }
        }
    }
    free(buf);
    if (bit_get(((struct repair_ctx *)s->fixer_ctx)->guard.data_snap, k))
        snprintf(out, n, "it holds guest data of a snapshot");
}

int overlap_pre_write(struct qc2 *s, unsigned ign, uint64_t off, uint64_t len)
{
    struct repair_ctx *ctx = s->fixer_ctx;
    struct overlap_guard *g = &ctx->guard;
    int c = overlap_find(s, g, ign, off, len);
    if (c <= 0)
        return c;
    if (!g->refused) {
        g->refused = (unsigned)c;
        g->refused_off = off;
        g->refused_len = len;
        g->refused_ign = ign;
    }
    if (!s->signaled_overlap) {
        if (c == OL_GUEST_DATA) {
            char why[128];
            data_owner(s, off >> s->h.cluster_bits, why, sizeof(why));
            err_plain("qcow2: Marking image as corrupt: Preventing invalid write on guest data "
                      "(cluster 0x%" PRIx64 ": %s); further corruption events will be "
                      "suppressed\n", off & ~(s->cs - 1), why);
        } else {
            err_plain("qcow2: Marking image as corrupt: Preventing invalid write on metadata "
                      "(overlaps with %s); further corruption events will be suppressed\n",
                      overlap_class_name((unsigned)c));
        }
        s->signaled_overlap = true;
    }
    return -EIO;
}

/* --- diagnosis --------------------------------------------------------------------- */

static uint64_t data_count(const uint8_t *m, const struct overlap_guard *g, uint64_t a,
                           uint64_t b, uint64_t cb)
{
    uint64_t n = 0;
    for (uint64_t k = a >> cb; k < g->data_clusters && (k << cb) < b; k++)
        n += bit_get(m, k);
    return n;
}

/* What an L1 table's bytes [a, b) lie on, as text; 0 if nothing. */
static int lies_on(struct qc2 *s, const struct overlap_guard *g, uint64_t a, uint64_t b,
                   bool active, char *out, size_t n)
{
    static const unsigned classes[] = {
        OL_ACTIVE_L1, OL_REFCOUNT_TABLE, OL_SNAPSHOT_TABLE, OL_ACTIVE_L2, OL_REFCOUNT_BLOCK,
        OL_BITMAP_DIRECTORY,
    };
    size_t len = 0;
    int hits = 0;
    out[0] = 0;
    if (a < s->cs) {
        len += (size_t)snprintf(out + len, n - len, "the image header");
        hits++;
    }
    for (size_t i = 0; i < sizeof(classes) / sizeof(classes[0]) && len < n; i++) {
        if (active && classes[i] == OL_ACTIVE_L1)
            continue;
        uint64_t c = set_count(&g->cls[bitnr(classes[i])], a, b);
        if (!c)
            continue;
        bool one = classes[i] != OL_ACTIVE_L2 && classes[i] != OL_REFCOUNT_BLOCK;
        if (one)
            len += (size_t)snprintf(out + len, n - len, "%sthe %s", hits ? ", " : "",
                                    overlap_class_name(classes[i]));
        else
            len += (size_t)snprintf(out + len, n - len, "%s%" PRIu64 " %s%s", hits ? ", " : "",
                                    c, overlap_class_name(classes[i]), c > 1 ? "s" : "");
        hits++;
    }
    uint64_t d = data_count(g->data_active, g, a, b, s->h.cluster_bits);
    if (d && len < n) {
        len += (size_t)snprintf(out + len, n - len, "%s%" PRIu64 " guest data cluster%s of "
                                "the active image", hits ? ", " : "", d, d > 1 ? "s" : "");
        hits++;
    }
    return hits;
}

void overlap_explain(struct qc2 *s)
{
    struct overlap_guard *g = &((struct repair_ctx *)s->fixer_ctx)->guard;
    if (!g->refused || !g->built || !g->data_built)
        return;
    char what[512];
    int named = 0;   /* L1 tables named as garbage */
    for (uint32_t i = 0; i < s->nb_sn; i++) {
        const struct qcow2_snapshot *sn = &s->sn[i];
        uint64_t a = sn->l1_table_offset & ~(s->cs - 1);
        uint64_t b = sat_add(sn->l1_table_offset, guarded_l1_entries(s, sn) * 8);
        if (!sn->l1_size || !lies_on(s, g, a, b, false, what, sizeof(what)))
            continue;
        err_report("snapshot %s (%s): its L1 table at 0x%" PRIx64 " (%" PRIu32 " entries) "
                   "lies on %s, so it is not a real L1 table; -r all would have to discard "
                   "this snapshot (none of its data can be found through this table)",
                   sn->id_str ? sn->id_str : "", sn->name ? sn->name : "",
                   sn->l1_table_offset, sn->l1_size, what);
        named++;
    }
    /* the active L1: the first cluster of it that lies on something else */
    uint64_t l1 = s->h.l1_table_offset, end = sat_add(l1, (uint64_t)s->h.l1_size * 8);
    for (uint64_t c = l1 & ~(s->cs - 1); s->h.l1_size && c < end; c += s->cs) {
        if (!lies_on(s, g, c, c + s->cs, true, what, sizeof(what)))
            continue;
        uint64_t first = c > l1 ? (c - l1) / 8 : 0;
        uint64_t need = qcow2_size_to_l1(&s->h, s->h.size);
        uint64_t l2_span = s->cs * s->h.l2_entries;
        lies_on(s, g, c, end, true, what, sizeof(what));
        char loss[96];
        if (first >= need)
            snprintf(loss, sizeof(loss), "the virtual disk needs %" PRIu64 ": no guest data "
                     "is lost", need);
        else
            snprintf(loss, sizeof(loss), "guest data from offset 0x%" PRIx64 " on would "
                     "lose its mapping", first * l2_span);
        err_report("the active L1 table at 0x%" PRIx64 " (%" PRIu32 " entries) lies on %s "
                   "from entry %" PRIu64 " on, so those entries are not L1 entries; -r all "
                   "would have to cut it to %" PRIu64 " entries (%s)", l1, s->h.l1_size, what,
                   first, first, loss);
        named++;
        break;
    }
    if (named || g->refused != OL_GUEST_DATA)
        return;
    /* no table is impossible as a whole: one cluster has two owners */
    const char *role = (g->refused_ign & OL_L2_TABLES) ? "an L2 table being fixed"
                       : (g->refused_ign & OL_REFCOUNT_BLOCK) ? "a refcount block"
                       : (g->refused_ign & OL_ACTIVE_L1) ? "the active L1 table"
                       : "where the repair would place a new structure";
    char why[128];
    data_owner(s, g->refused_off >> s->h.cluster_bits, why, sizeof(why));
    err_report("cluster 0x%" PRIx64 " is %s and guest data (%s): one of the two is garbage; "
               "-r all would have to drop one of them (the L2 entry, so that guest cluster "
               "reads as unallocated, or the structure)", g->refused_off & ~(s->cs - 1),
               role, why);
}

/* --- the plan ---------------------------------------------------------------------- */

int overlap_verify_plan(const struct overlap_guard *g, const struct plan *p, uint64_t cs)
{
    if (!g->data_active && !g->data_snap)
        return 0;
    unsigned cb = (unsigned)__builtin_ctzll(cs);
    for (size_t i = 0; i < p->n; i++) {
        const struct plan_entry *e = &p->v[i];
        if (e->op != PLAN_WRITE || !e->len || e->offset + e->len <= cs)
            continue;
        uint64_t a = e->offset < cs ? cs : e->offset;
        if (data_hits(g, a >> cb, ((e->offset + e->len - 1) >> cb) + 1)) {
            err_report("internal error: the repair plan writes guest data at offset 0x%" PRIx64
                       " (%s); nothing was written", e->offset, e->reason);
            return -EIO;
        }
    }
    return 0;
}
