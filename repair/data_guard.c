/* Repair's guest-data class and refusal diagnosis on the model's guard (see
 * data_guard.h). */
#include "repair/data_guard.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checker/qcow2_check.h"
#include "format/be.h"
#include "journal/plan.h"
#include "repair/repair.h"
#include "util/err.h"
#include "util/xalloc.h"

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* --- building ---------------------------------------------------------------------- */

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
        QCOW2_OL_ACTIVE_L1, QCOW2_OL_ACTIVE_L2, QCOW2_OL_REFCOUNT_TABLE,
        QCOW2_OL_REFCOUNT_BLOCK, QCOW2_OL_SNAPSHOT_TABLE, QCOW2_OL_BITMAP_DIRECTORY,
    };
    uint64_t a = off & ~(s->cs - 1), b = sat_add(off, s->cs);
    (void)g;
    if (a < s->cs)
        return true;
    unsigned any = 0;
    for (size_t i = 0; i < sizeof(classes) / sizeof(classes[0]); i++)
        any |= classes[i];
    return qcow2_overlap_hits(&s->m, any, a, b);
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
        rc = qc2_load_table(s, sn->l1_table_offset, qcow2_overlap_snapshot_l1_entries(&s->m, sn), &l1, &n);
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
    int rc = qcow2_overlap_prepare(&s->m);
    if (rc == 0 && !g->data_built)
        rc = build_data(s, g);   /* after the classes: it consults them */
    return rc;
}

void overlap_guard_free(struct overlap_guard *g)
{
    free(g->data_active);
    free(g->data_snap);
    memset(g, 0, sizeof(*g));
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

static struct overlap_guard *guard_of(struct qc2 *s)
{
    return &((struct repair_ctx *)s->fixer_ctx)->guard;
}

int overlap_find(struct qc2 *s, struct overlap_guard *g, unsigned ign, uint64_t off,
                 uint64_t len)
{
    int rc = overlap_guard_prepare(s, g);
    return rc < 0 ? rc : qcow2_overlap_find(&s->m, ign, off, len);
}

/* The model's hooks (qcow2_ol_hook), ctx the qc2 */
static bool hook_hits(void *ctx, uint64_t a, uint64_t b)
{
    struct qc2 *s = ctx;
    struct overlap_guard *g = guard_of(s);
    if (!g->data_built && overlap_guard_prepare(s, g) < 0)
        return false;
    return data_hits(g, a >> s->h.cluster_bits, b >> s->h.cluster_bits);
}

static void hook_refused(void *ctx, unsigned cls, unsigned ign, uint64_t off, uint64_t len)
{
    struct qc2 *s = ctx;
    struct overlap_guard *g = guard_of(s);
    /* the maps are of the image before the repair: before the corrupt bit is planned
     * (a header hit comes before any range is built: then none is, as before) */
    if (!g->data_built && qcow2_overlap_ready(&s->m))
        overlap_guard_prepare(s, g);
    if (!g->refused) {
        g->refused = cls;
        g->refused_off = off;
        g->refused_len = len;
        g->refused_ign = ign;
    }
}

static void data_owner(struct qc2 *s, uint64_t k, char *out, size_t n);

static bool hook_event(void *ctx, unsigned cls, uint64_t off, uint64_t len)
{
    struct qc2 *s = ctx;
    (void)len;
    if (cls != OL_GUEST_DATA)
        return false;
    char why[128];
    data_owner(s, off >> s->h.cluster_bits, why, sizeof(why));
    err_plain("qcow2: Marking image as corrupt: Preventing invalid write on guest data "
              "(cluster 0x%" PRIx64 ": %s); further corruption events will be "
              "suppressed\n", off & ~(s->cs - 1), why);
    return true;
}

void overlap_guard_attach(struct qc2 *s)
{
    struct qcow2_ol_hook h = { s, hook_hits, hook_refused, hook_event };
    qcow2_overlap_set_hook(&s->m, &h);
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
    if (bit_get(guard_of(s)->data_snap, k))
        snprintf(out, n, "it holds guest data of a snapshot");
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
        QCOW2_OL_ACTIVE_L1, QCOW2_OL_REFCOUNT_TABLE, QCOW2_OL_SNAPSHOT_TABLE,
        QCOW2_OL_ACTIVE_L2, QCOW2_OL_REFCOUNT_BLOCK, QCOW2_OL_BITMAP_DIRECTORY,
    };
    size_t len = 0;
    int hits = 0;
    out[0] = 0;
    if (a < s->cs) {
        len += (size_t)snprintf(out + len, n - len, "the image header");
        hits++;
    }
    for (size_t i = 0; i < sizeof(classes) / sizeof(classes[0]) && len < n; i++) {
        if (active && classes[i] == QCOW2_OL_ACTIVE_L1)
            continue;
        uint64_t c = qcow2_overlap_count(&s->m, classes[i], a, b);
        if (!c)
            continue;
        bool one = classes[i] != QCOW2_OL_ACTIVE_L2 && classes[i] != QCOW2_OL_REFCOUNT_BLOCK;
        if (one)
            len += (size_t)snprintf(out + len, n - len, "%sthe %s", hits ? ", " : "",
                                    qcow2_overlap_class_name(classes[i]));
        else
            len += (size_t)snprintf(out + len, n - len, "%s%" PRIu64 " %s%s", hits ? ", " : "",
                                    c, qcow2_overlap_class_name(classes[i]), c > 1 ? "s" : "");
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
    if (!g->refused || !qcow2_overlap_ready(&s->m) || !g->data_built)
        return;
    char what[512];
    int named = 0;   /* L1 tables named as garbage */
    for (uint32_t i = 0; i < s->nb_sn; i++) {
        const struct qcow2_snapshot *sn = &s->sn[i];
        uint64_t a = sn->l1_table_offset & ~(s->cs - 1);
        uint64_t b = sat_add(sn->l1_table_offset, qcow2_overlap_snapshot_l1_entries(&s->m, sn) * 8);
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
    const char *role = (g->refused_ign & QCOW2_OL_L2_TABLES) ? "an L2 table being fixed"
                       : (g->refused_ign & QCOW2_OL_REFCOUNT_BLOCK) ? "a refcount block"
                       : (g->refused_ign & QCOW2_OL_ACTIVE_L1) ? "the active L1 table"
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
