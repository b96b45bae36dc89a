/* Live metadata ranges for the refcount rebuild (see metamap.h). */
#include "repair/metamap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "format/be.h"
#include "util/xalloc.h"

/* Offsets above this cannot be stored in any table entry (56-bit offset fields). */
#define META_OFFSET_LIMIT (1ull << 56)

static struct meta_range *add(struct metamap *m, uint64_t first, uint64_t end,
                              const char *what)
{
    struct meta_range *r = rangeset_add(&m->rs, first, end);
    if (r)
        r->what = what;
    return r;
}

/* Bytes [off, off+len) as whole clusters; nothing for an empty or absurd range. */
static void add_bytes(struct metamap *m, const struct qc2 *s, uint64_t off, uint64_t len,
                      const char *what)
{
    if (!len || off >= META_OFFSET_LIMIT)
        return;
    if (len > META_OFFSET_LIMIT - off)
        len = META_OFFSET_LIMIT - off;
    unsigned cb = s->h.cluster_bits;
    add(m, off >> cb, (off + len + s->cs - 1) >> cb, what);
}

/* One cluster at a table entry's offset, unless the IMRT already counts it (then the
 * allocator never picks it anyway; leaving it out keeps the map small). */
static void add_entry(struct metamap *m, const struct qc2 *s, uint64_t off, const char *what)
{
    if (!off || off >= META_OFFSET_LIMIT)
        return;
    uint64_t k = off >> s->h.cluster_bits;
    if (k < s->imrt.n && imrt_get(&s->imrt, k))
        return;
    add(m, k, k + 1, what);
}

/* The entries of the table at [off, off + n*8) that lie inside the file (past EOF the
 * table reads as zeros), each as one cluster of class what; read in chunks rather than
 * loaded whole (qcow2_table_load), so a map of many big tables stays small. */
static int add_table_entries(struct metamap *m, struct qc2 *s, uint64_t off, uint64_t n,
                             uint64_t mask, const char *what)
{
    n = qcow2_table_in_file(off, n, s->file_size);   /* the one loader's rule at EOF */
    enum { CHUNK = 8192 };
    uint8_t *raw = xmalloc(CHUNK * 8);
    int rc = 0;
    for (uint64_t i = 0; i < n && rc == 0; i += CHUNK) {
        uint64_t c = n - i < CHUNK ? n - i : CHUNK;
        rc = qc2_read(s, raw, c * 8, off + i * 8);
        for (uint64_t j = 0; rc == 0 && j < c; j++)
            add_entry(m, s, be64_get(raw + j * 8) & mask, what);
    }
    free(raw);
    return rc;
}

int metamap_build(struct metamap *m, struct qc2 *s)
{
    rangeset_init(&m->rs, sizeof(struct meta_range));
    const struct qcow2_header *h = &s->h;
    int rc = 0;

    add(m, 0, 1, "qcow2_header");
    uint64_t l1n = h->l1_size;
    if (l1n > QCOW2_MAX_L1_SIZE / 8)
        l1n = QCOW2_MAX_L1_SIZE / 8;
    add_bytes(m, s, h->l1_table_offset, l1n * 8, "active L1 table");
    for (uint64_t i = 0; i < s->l1_loaded; i++)
        add_entry(m, s, s->l1[i] & QCOW2_L1E_OFFSET_MASK, "active L2 table");

    uint64_t rtc = h->refcount_table_clusters;
    if (rtc > QCOW2_MAX_REFTABLE_SIZE / s->cs)
        rtc = QCOW2_MAX_REFTABLE_SIZE / s->cs;
    add_bytes(m, s, h->refcount_table_offset, rtc * s->cs, "refcount table");
    for (uint64_t i = 0; i < s->rt_loaded; i++)
        add_entry(m, s, s->rt[i] & QCOW2_REFT_OFFSET_MASK, "refcount block");

    uint64_t snsz = s->sn_size;
    if (snsz > QCOW2_MAX_SNAPSHOTS_SIZE)
        snsz = QCOW2_MAX_SNAPSHOTS_SIZE;
    add_bytes(m, s, s->sn_offset, snsz, "snapshot table");
    for (uint32_t i = 0; i < s->nb_sn && rc == 0; i++) {
        const struct qcow2_snapshot *sn = &s->sn[i];
        uint64_t n = sn->l1_size;
        if (n > QCOW2_MAX_L1_SIZE / 8)
            n = QCOW2_MAX_L1_SIZE / 8;
        add_bytes(m, s, sn->l1_table_offset, n * 8, "inactive L1 table");
        rc = add_table_entries(m, s, sn->l1_table_offset, n, QCOW2_L1E_OFFSET_MASK,
                               "inactive L2 table");
    }

    if (rc == 0 && s->ext.has_bitmaps) {
        uint64_t dsz = s->ext.bitmap_directory_size;
        if (dsz > QCOW2_MAX_BITMAP_DIR_SIZE)
            dsz = QCOW2_MAX_BITMAP_DIR_SIZE;
        add_bytes(m, s, s->ext.bitmap_directory_offset, dsz, "bitmap directory");
        for (uint32_t i = 0; i < s->nb_bm && rc == 0; i++) {
            const struct qcow2_bitmap_dirent *e = &s->bm[i];
            add_bytes(m, s, e->bitmap_table_offset, (uint64_t)e->bitmap_table_size * 8,
                      "bitmap table");
            rc = add_table_entries(m, s, e->bitmap_table_offset, e->bitmap_table_size,
                                   QCOW2_BME_TABLE_OFFSET_MASK, "bitmap data");
        }
    }
    if (s->ext.has_crypto)
        add_bytes(m, s, s->ext.crypto_offset, s->ext.crypto_length, "crypto header");

    /* every reference the check did not count because it lies past EOF (metadata or
     * data): kept free, and counted again if the rebuild brings it inside the file */
    for (size_t i = 0; i < s->past_eof_n; i++) {
        const struct qc2_ref *f = &s->past_eof[i];
        if (!f->size || f->offset >= META_OFFSET_LIMIT || f->size > META_OFFSET_LIMIT - f->offset)
            continue;
        unsigned cb = s->h.cluster_bits;
        struct meta_range *r = add(m, f->offset >> cb, ((f->offset + f->size - 1) >> cb) + 1,
                                   "reference past EOF");
        r->ref_off = f->offset;
        r->ref_end = f->offset + f->size;
    }
    if (rc < 0) {
        metamap_free(m);
        return rc;
    }

    rangeset_seal(&m->rs);
    return 0;
}

void metamap_free(struct metamap *m)
{
    rangeset_free(&m->rs);
}

uint64_t metamap_skip(const struct metamap *m, uint64_t k)
{
    return rangeset_skip(&m->rs, k);
}

const char *metamap_overlap(const struct metamap *m, uint64_t first, uint64_t end)
{
    const struct meta_range *r = rangeset_find(&m->rs, first, end);
    return r ? r->what : NULL;
}

const char *metamap_shares_header(const struct metamap *m)
{
    /* the refcount structures are replaced by the rebuild itself; anything else in
     * cluster 0 shares bytes with the header fields the rebuild rewrites */
    for (size_t i = 0; i < m->rs.n && metamap_at(m, i)->r.start == 0; i++) {
        const struct meta_range *r = metamap_at(m, i);
        if (strcmp(r->what, "qcow2_header") && strcmp(r->what, "refcount table") &&
            strcmp(r->what, "refcount block") && r->r.end > 0)
            return r->what;
    }
    return NULL;
}
