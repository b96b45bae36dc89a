/* The metadata overlap guard of the qcow2 model (see overlap.h). */
#include "qcow2/overlap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "format/be.h"
#include "io/wport.h"
#include "qcow2/table.h"
#include "util/err.h"
#include "util/rangeset.h"
#include "util/xalloc.h"

struct qcow2_overlap {
    bool built;                          /* the ranges match the metadata */
    unsigned checks;                     /* classes checked (QCOW2_OL_CACHED) */
    struct rangeset cls[QCOW2_OL_NCLASSES - 1];   /* byte ranges per qemu class */
    /* ranges added since the build (qcow2_overlap_add), checked one by one */
    struct { unsigned cls; uint64_t start, end; } recent[QCOW2_OL_RECENT_MAX];
    unsigned nrecent;
    struct qcow2_ol_hook hook;
    bool signaled;                       /* the event was given (qemu's signaled_corruption) */
    unsigned refused, refused_ign;       /* the first refusal */
    uint64_t refused_off, refused_len;
};

/* qemu's metadata_ol_names, then the user's class */
static const char *const class_names[QCOW2_OL_NCLASSES] = {
    "qcow2_header", "active L1 table", "active L2 table", "refcount table",
    "refcount block", "snapshot table", "inactive L1 table", "inactive L2 table",
    "bitmap directory", "guest data",
};

/* qemu's test order (qcow2_check_metadata_overlap); the header is tested first, alone */
static const unsigned class_order[] = {
    QCOW2_OL_ACTIVE_L1, QCOW2_OL_REFCOUNT_TABLE, QCOW2_OL_SNAPSHOT_TABLE,
    QCOW2_OL_INACTIVE_L1, QCOW2_OL_ACTIVE_L2, QCOW2_OL_REFCOUNT_BLOCK, QCOW2_OL_INACTIVE_L2,
    QCOW2_OL_BITMAP_DIRECTORY,
};

static unsigned bitnr(unsigned cls)
{
    return (unsigned)__builtin_ctz(cls);
}

const char *qcow2_overlap_class_name(unsigned cls)
{
    return cls && bitnr(cls) < QCOW2_OL_NCLASSES ? class_names[bitnr(cls)] : "?";
}

static struct qcow2_overlap *state(struct qcow2_image *m)
{
    if (!m->ol) {
        m->ol = xcalloc(1, sizeof(*m->ol));
        m->ol->checks = QCOW2_OL_CACHED;
        for (int i = 0; i < QCOW2_OL_NCLASSES - 1; i++)
            rangeset_init(&m->ol->cls[i], sizeof(struct rs_range));
    }
    return m->ol;
}

void qcow2_overlap_free(struct qcow2_image *m)
{
    if (!m->ol)
        return;
    for (int i = 0; i < QCOW2_OL_NCLASSES - 1; i++)
        rangeset_free(&m->ol->cls[i]);
    free(m->ol);
    m->ol = NULL;
}

void qcow2_overlap_set_checks(struct qcow2_image *m, unsigned classes)
{
    struct qcow2_overlap *o = state(m);
    if ((classes & QCOW2_OL_INACTIVE_L2) && !(o->checks & QCOW2_OL_INACTIVE_L2))
        o->built = false;   /* those ranges are only gathered when checked */
    o->checks = classes & QCOW2_OL_CHECK_ALL;
}

void qcow2_overlap_set_hook(struct qcow2_image *m, const struct qcow2_ol_hook *hook)
{
    struct qcow2_overlap *o = state(m);
    if (hook)
        o->hook = *hook;
    else
        memset(&o->hook, 0, sizeof(o->hook));
}

void qcow2_overlap_invalidate(struct qcow2_image *m)
{
    if (m->ol)
        m->ol->built = false;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

void qcow2_overlap_add(struct qcow2_image *m, unsigned cls, uint64_t off, uint64_t len)
{
    struct qcow2_overlap *o = m->ol;
    if (!o || !o->built || !len || !cls || bitnr(cls) >= QCOW2_OL_NCLASSES - 1)
        return;   /* not built: the next build reads the model, which has it */
    if (o->nrecent == QCOW2_OL_RECENT_MAX) {
        o->built = false;   /* rebuild (sorted) on the next check */
        return;
    }
    o->recent[o->nrecent].cls = cls;
    o->recent[o->nrecent].start = off;
    o->recent[o->nrecent++].end = sat_add(off, len);
}

static bool recent_hits(const struct qcow2_overlap *o, unsigned cls, uint64_t a, uint64_t b)
{
    for (unsigned i = 0; i < o->nrecent; i++)
        if ((o->recent[i].cls & cls) && o->recent[i].start < b && o->recent[i].end > a)
            return true;
    return false;
}

static void add(struct qcow2_overlap *o, unsigned cls, uint64_t off, uint64_t len)
{
    if (len)
        rangeset_add(&o->cls[bitnr(cls)], off, sat_add(off, len));
}

uint64_t qcow2_overlap_snapshot_l1_entries(const struct qcow2_image *m,
                                           const struct qcow2_snapshot *sn)
{
    if (sn->l1_size <= QCOW2_MAX_L1_SIZE / 8)
        return sn->l1_size;
    uint64_t need = qcow2_size_to_l1(&m->h, sn->has_disk_size ? sn->disk_size : m->h.size);
    return need < sn->l1_size ? need : sn->l1_size;
}

/* Inactive L2 tables: the L1 tables of the snapshots qemu's check walks (aligned, l1_size
 * within qemu's limit), read from the file; only when that class is checked. */
static int add_inactive_l2(struct qcow2_image *m, struct qcow2_overlap *o)
{
    for (uint32_t i = 0; i < m->nb_sn; i++) {
        const struct qcow2_snapshot *sn = &m->sn[i];
        if ((sn->l1_table_offset & (m->cs - 1)) || sn->l1_size > QCOW2_MAX_L1_SIZE / 8)
            continue;
        uint64_t *l1 = NULL, n = 0;
        int rc = qcow2_table_load(m->q, m->file_size, sn->l1_table_offset, sn->l1_size, 0,
                                  &l1, &n);
        if (rc < 0)
            return rc;
        for (uint64_t j = 0; j < n; j++)
            if (l1[j] & QCOW2_L1E_OFFSET_MASK)
                add(o, QCOW2_OL_INACTIVE_L2, l1[j] & QCOW2_L1E_OFFSET_MASK, m->cs);
        free(l1);
    }
    return 0;
}

int qcow2_overlap_prepare(struct qcow2_image *m)
{
    struct qcow2_overlap *o = state(m);
    if (o->built)
        return 0;
    for (int i = 0; i < QCOW2_OL_NCLASSES - 1; i++)
        rangeset_clear(&o->cls[i]);
    o->nrecent = 0;
    const struct qcow2_header *h = &m->h;
    add(o, QCOW2_OL_MAIN_HEADER, 0, m->cs);
    add(o, QCOW2_OL_ACTIVE_L1, h->l1_table_offset, (uint64_t)h->l1_size * 8);
    if (m->rt_entries <= UINT64_MAX / 8)
        add(o, QCOW2_OL_REFCOUNT_TABLE, h->refcount_table_offset, m->rt_entries * 8);
    add(o, QCOW2_OL_SNAPSHOT_TABLE, m->sn_offset, m->sn_size);
    for (uint32_t i = 0; i < m->nb_sn; i++)
        add(o, QCOW2_OL_INACTIVE_L1, m->sn[i].l1_table_offset,
            qcow2_overlap_snapshot_l1_entries(m, &m->sn[i]) * 8);
    for (uint64_t i = 0; i < m->l1_loaded; i++)
        if (m->l1[i] & QCOW2_L1E_OFFSET_MASK)
            add(o, QCOW2_OL_ACTIVE_L2, m->l1[i] & QCOW2_L1E_OFFSET_MASK, m->cs);
    for (uint64_t i = 0; i < m->rt_loaded; i++)
        if (m->rt[i] & QCOW2_REFT_OFFSET_MASK)
            add(o, QCOW2_OL_REFCOUNT_BLOCK, m->rt[i] & QCOW2_REFT_OFFSET_MASK, m->cs);
    int rc = (o->checks & QCOW2_OL_INACTIVE_L2) ? add_inactive_l2(m, o) : 0;
    if (m->ext.has_bitmaps && (h->autoclear_features & QCOW2_AUTOCLEAR_BITMAPS))
        add(o, QCOW2_OL_BITMAP_DIRECTORY, m->ext.bitmap_directory_offset,
            m->ext.bitmap_directory_size);
    for (int i = 0; i < QCOW2_OL_NCLASSES - 1; i++)
        rangeset_seal(&o->cls[i]);
    o->built = rc == 0;
    return rc;
}

bool qcow2_overlap_ready(const struct qcow2_image *m)
{
    return m->ol && m->ol->built;
}

int qcow2_overlap_find(struct qcow2_image *m, unsigned ign, uint64_t off, uint64_t len)
{
    if (!len)
        return 0;
    struct qcow2_overlap *o = state(m);
    unsigned want = (o->checks | (o->hook.hits ? QCOW2_OL_EXTRA : 0)) & ~ign;
    if (!want)
        return 0;
    if ((want & QCOW2_OL_MAIN_HEADER) && off < m->cs)
        return QCOW2_OL_MAIN_HEADER;
    int rc = qcow2_overlap_prepare(m);
    if (rc < 0)
        return rc;
    /* qemu rounds the write out to whole clusters, not the metadata ranges */
    uint64_t a = off & ~(m->cs - 1), b = sat_add(off, len);
    b = b > UINT64_MAX - (m->cs - 1) ? UINT64_MAX : (b + m->cs - 1) & ~(m->cs - 1);
    for (size_t i = 0; i < sizeof(class_order) / sizeof(class_order[0]); i++) {
        unsigned c = class_order[i];
        if ((want & c) && (rangeset_hits(&o->cls[bitnr(c)], a, b) || recent_hits(o, c, a, b)))
            return (int)c;
    }
    if ((want & QCOW2_OL_EXTRA) && o->hook.hits(o->hook.ctx, a, b))
        return QCOW2_OL_EXTRA;
    return 0;
}

bool qcow2_overlap_hits(const struct qcow2_image *m, unsigned cls, uint64_t a, uint64_t b)
{
    if (!m->ol)
        return false;
    for (unsigned i = 0; i < QCOW2_OL_NCLASSES - 1; i++)
        if ((cls & (1u << i)) && rangeset_hits(&m->ol->cls[i], a, b))
            return true;
    return recent_hits(m->ol, cls, a, b);
}

uint64_t qcow2_overlap_count(const struct qcow2_image *m, unsigned cls, uint64_t a,
                             uint64_t b)
{
    if (!m->ol || !cls || bitnr(cls) >= QCOW2_OL_NCLASSES - 1)
        return 0;
    uint64_t n = rangeset_count(&m->ol->cls[bitnr(cls)], a, b);
    for (unsigned i = 0; i < m->ol->nrecent; i++)
        n += m->ol->recent[i].cls == cls && m->ol->recent[i].start < b && m->ol->recent[i].end > a;
    return n;
}

unsigned qcow2_overlap_refused(const struct qcow2_image *m, unsigned *ign, uint64_t *off,
                               uint64_t *len)
{
    if (!m->ol || !m->ol->refused)
        return 0;
    if (ign)
        *ign = m->ol->refused_ign;
    if (off)
        *off = m->ol->refused_off;
    if (len)
        *len = m->ol->refused_len;
    return m->ol->refused;
}

/* qemu's qcow2_mark_corrupt: the corrupt bit in the header's incompatible features (v3;
 * v2 has no such field), written through the port and flushed. */
static void mark_corrupt(struct qcow2_image *m)
{
    if (m->h.version < 3 || (m->h.incompatible_features & QCOW2_INCOMPAT_CORRUPT))
        return;
    m->h.incompatible_features |= QCOW2_INCOMPAT_CORRUPT;
    uint8_t b[8];
    be64_put(b, m->h.incompatible_features);
    if (m->port)
        wport_label(&m->port->w, WPORT_CLASS_HEADER, "header: set the corrupt bit (a write was "
                    "refused by the overlap check)");
    if (qcow2_meta_pwrite(m, QCOW2_OL_ALL, QCOW2_OFF_INCOMPAT, b, sizeof(b)) == 0)
        qcow2_meta_flush(m);
}

int qcow2_overlap_check(struct qcow2_image *m, unsigned ign, uint64_t off, uint64_t len)
{
    if ((ign & QCOW2_OL_ALL) == QCOW2_OL_ALL)
        return 0;
    int c = qcow2_overlap_find(m, ign, off, len);
    if (c <= 0)
        return c;
    struct qcow2_overlap *o = m->ol;
    if (!o->refused) {
        o->refused = (unsigned)c;
        o->refused_ign = ign;
        o->refused_off = off;
        o->refused_len = len;
    }
    if (o->hook.refused)
        o->hook.refused(o->hook.ctx, (unsigned)c, ign, off, len);
    if (!o->signaled) {
        o->signaled = true;
        if (!o->hook.event || !o->hook.event(o->hook.ctx, (unsigned)c, off, len))
            err_plain("qcow2: Marking image as corrupt: Preventing invalid write on metadata "
                      "(overlaps with %s); further corruption events will be suppressed\n",
                      qcow2_overlap_class_name((unsigned)c));
        mark_corrupt(m);
    }
    return -EIO;
}
