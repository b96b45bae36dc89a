/* Salvage reader for damaged qcow2 images (see salvage.h). Never writes: the image and its
 * data file are opened read-only.
 *
 * Open: the model in SALVAGE mode, then survey(): a map of the host clusters of the image
 * file (header, active L1, active L2 tables, data, compressed data) built from the active
 * L1/L2 only, and the list of lost guest ranges (sorted, disjoint: each guest byte gets at
 * most one reason). Reads look the list up first, then follow qemu's qcow2 reader
 * (qcow2_get_host_offset's entry types) for everything else. */
#include "block/salvage.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "block/driver.h"
#include "format/be.h"
#include "format/qcow2_codec.h"
#include "format/qcow2_l2.h"
#include "io/lock.h"
#include "qcow2/image.h"
#include "util/err.h"
#include "util/xalloc.h"

/* Host cluster map entries (one byte per cluster of the image file). */
enum { H_FREE, H_META, H_L2, H_L2_SHARED, H_DATA, H_DATA_SHARED, H_COMP };

/* Most host clusters the map covers (1 GiB of memory): files with more are refused. */
#define SV_MAX_HOST_CLUSTERS (1ull << 30)

/* L1 entry states */
enum { L1_NONE, L1_OK, L1_LOST };

struct sv_list {
    struct salvage_range *v;
    size_t n, cap;
};

struct sv {
    struct qcow2_image m;
    uint64_t size;           /* guest bytes (img->size) */
    uint64_t cs, scs;        /* cluster and subcluster size */
    unsigned nsc;            /* subclusters per cluster (1 without extended L2) */
    uint64_t esz;            /* L2 entry size */
    uint64_t cov;            /* guest bytes one L1 entry maps */
    uint64_t l1n;            /* L1 entries that map guest bytes */
    uint8_t *l1st;           /* L1_* per entry */
    uint8_t *hmap;           /* H_* per host cluster of the image file */
    uint64_t nhc;
    qio_t *dfile;            /* where data clusters live (image file or data file) */
    uint64_t dsize;          /* its size */
    char *backing_err;

    struct sv_list st;       /* found at open: sorted, disjoint */
    struct sv_list dyn;      /* found by reads (compressed, I/O errors), any order */
    struct sv_list sus;      /* suspect ranges */
    struct sv_list out;      /* salvage_ranges' merged view */
    pthread_mutex_t mu;      /* dyn and out: a reader thread may add while others ask */
    pthread_mutex_t io;      /* the caches below: one read or status query at a time */

    /* one L2 table cached (raw bytes, the part inside the file; the rest reads as 0) */
    uint64_t l2_off;
    uint8_t *l2;
    bool l2_valid;
    /* one compressed cluster decoded */
    uint8_t *cbuf, *dbuf;
    uint64_t dbuf_entry;
    int dbuf_state;          /* 0 none, 1 decoded, -1 failed */
};

static void list_add(struct sv_list *l, uint64_t off, uint64_t len, enum salvage_reason why,
                     uint64_t host, int err)
{
    if (!len)
        return;
    struct salvage_range *last = l->n ? &l->v[l->n - 1] : NULL;
    /* a run of one reason (consecutive clusters past EOF, ...) is one range */
    if (last && last->reason == why && last->off + last->len == off && last->err == err) {
        last->len += len;
        return;
    }
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->v = xreallocarray(l->v, l->cap, sizeof(*l->v));
    }
    l->v[l->n++] = (struct salvage_range){ off, len, why, host, err };
}

static int cmp_range(const void *a, const void *b)
{
    const struct salvage_range *x = a, *y = b;
    if (x->off != y->off)
        return x->off < y->off ? -1 : 1;
    return (int)x->reason - (int)y->reason;
}

/* Sorted copy of a and b merged: overlapping or adjacent ranges of one reason become one. */
static void list_merge(struct sv_list *out, const struct sv_list *a, const struct sv_list *b)
{
    struct sv_list t = { 0 };
    t.cap = a->n + b->n;
    t.v = xreallocarray(NULL, t.cap ? t.cap : 1, sizeof(*t.v));
    if (a->n)
        memcpy(t.v, a->v, a->n * sizeof(*t.v));
    if (b->n)
        memcpy(t.v + a->n, b->v, b->n * sizeof(*t.v));
    t.n = a->n + b->n;
    qsort(t.v, t.n, sizeof(*t.v), cmp_range);
    out->n = 0;
    for (size_t i = 0; i < t.n; i++) {
        struct salvage_range *r = &t.v[i];
        struct salvage_range *last = out->n ? &out->v[out->n - 1] : NULL;
        if (last && last->reason == r->reason && r->off <= last->off + last->len) {
            uint64_t end = r->off + r->len;
            if (end > last->off + last->len)
                last->len = end - last->off;
            continue;
        }
        if (out->n == out->cap) {
            out->cap = out->cap ? out->cap * 2 : 16;
            out->v = xreallocarray(out->v, out->cap, sizeof(*out->v));
        }
        out->v[out->n++] = *r;
    }
    free(t.v);
}

/* ---- survey ------------------------------------------------------------------------ */

static uint64_t guest_end(const struct sv *s, uint64_t off, uint64_t len)
{
    return len > s->size - off ? s->size : off + len;
}

static void lose(struct sv *s, uint64_t off, uint64_t len, enum salvage_reason why,
                 uint64_t host)
{
    if (off >= s->size)
        return;
    list_add(&s->st, off, guest_end(s, off, len) - off, why, host, 0);
}

static void mark_bytes(struct sv *s, uint64_t off, uint64_t len, uint8_t what)
{
    if (!len || off >= s->m.file_size)
        return;
    uint64_t end = len > s->m.file_size - off ? s->m.file_size : off + len;
    for (uint64_t k = off / s->cs; k < s->nhc && k * s->cs < end; k++)
        s->hmap[k] = what;
}

/* The raw L2 table at l2 (cluster aligned, inside the file) into s->l2: the bytes inside
 * the file, zeros after them. Returns the entries at least partly inside, or -errno. */
static int64_t load_l2(struct sv *s, uint64_t l2)
{
    uint64_t avail = s->m.file_size - l2 < s->cs ? s->m.file_size - l2 : s->cs;
    if (s->l2_valid && s->l2_off == l2)
        return (int64_t)((avail + s->esz - 1) / s->esz);
    s->l2_valid = false;
    int r = qio_pread(s->m.q, s->l2, s->cs, l2); /* zeros past EOF */
    if (r < 0)
        return r;
    s->l2_off = l2;
    s->l2_valid = true;
    return (int64_t)((avail + s->esz - 1) / s->esz);
}

static void l2_entry(const struct sv *s, uint64_t j, uint64_t *e, uint64_t *bmp)
{
    *e = be64_get(s->l2 + j * s->esz);
    *bmp = s->esz == 16 ? be64_get(s->l2 + j * s->esz + 8) : 0;
}

/* qemu's subcluster type, except that a bitmap conflict elsewhere in the entry does not
 * spoil the subclusters whose own two bits are consistent (qemu calls the whole cluster
 * invalid; salvage keeps what it can). */
static enum qcow2_subcluster_type sc_type(const struct sv *s, uint64_t e, uint64_t bmp,
                                          unsigned sc)
{
    enum qcow2_subcluster_type t = qcow2_l2e_subcluster_type(&s->m.geom, e, bmp, sc);
    if (t != QCOW2_SUBCLUSTER_INVALID || !s->m.geom.extended_l2 ||
        qcow2_l2e_type(&s->m.geom, e) == QCOW2_CLUSTER_COMPRESSED)
        return t;
    uint64_t own = bmp & (QCOW2_SUB_ALLOC(sc) | QCOW2_SUB_ZERO(sc));
    if (own == (QCOW2_SUB_ALLOC(sc) | QCOW2_SUB_ZERO(sc)))
        return t;
    return qcow2_l2e_subcluster_type(&s->m.geom, e, own, sc);
}

/* One L2 entry of guest cluster g at survey time (pass 2). */
static void survey_entry(struct sv *s, uint64_t g, uint64_t e, uint64_t bmp, bool *shared)
{
    enum qcow2_cluster_type t = qcow2_l2e_type(&s->m.geom, e);
    if (t == QCOW2_CLUSTER_COMPRESSED) {
        if (s->m.geom.extended_l2 && bmp) {
            lose(s, g, s->cs, SV_SUBCLUSTER_INVALID, 0);
            return;
        }
        if (s->m.has_data_file) {
            lose(s, g, s->cs, SV_COMPRESSED_DATA_FILE, 0);
            return;
        }
        struct qcow2_compressed c;
        qcow2_compressed_decode(s->m.h.cluster_bits, e, &c);
        uint64_t end = c.host_offset + c.csize;
        for (uint64_t k = c.host_offset / s->cs; k < s->nhc && k * s->cs < end; k++) {
            uint8_t h = s->hmap[k];
            if (h == H_META || h == H_L2 || h == H_L2_SHARED) {
                lose(s, g, s->cs, SV_COMPRESSED_OVERLAP, c.host_offset);
                return;
            }
        }
        for (uint64_t k = c.host_offset / s->cs; k < s->nhc && k * s->cs < end; k++) {
            if (s->hmap[k] == H_DATA || s->hmap[k] == H_DATA_SHARED) {
                s->hmap[k] = H_DATA_SHARED;
                *shared = true;
            } else {
                s->hmap[k] = H_COMP;
            }
        }
        return;
    }
    uint64_t host = qcow2_l2e_offset(e);
    bool any_data = false;
    for (unsigned sc = 0; sc < s->nsc; sc++) {
        enum qcow2_subcluster_type st = sc_type(s, e, bmp, sc);
        if (st == QCOW2_SUBCLUSTER_INVALID)
            lose(s, g + sc * s->scs, s->scs, SV_SUBCLUSTER_INVALID, 0);
        else if (st == QCOW2_SUBCLUSTER_NORMAL)
            any_data = true;
        else if ((st == QCOW2_SUBCLUSTER_UNALLOCATED_PLAIN ||
                  st == QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC) && s->backing_err)
            lose(s, g + sc * s->scs, s->scs, SV_NO_BACKING, 0);
    }
    if (!any_data)
        return;
    /* the checks below lose the NORMAL subclusters only */
    enum salvage_reason why = SV__COUNT;
    if (host & (s->cs - 1))
        why = SV_DATA_UNALIGNED;
    else if (host >= s->dsize)
        why = SV_DATA_PAST_EOF;
    else if (!s->m.has_data_file) {
        uint64_t k = host / s->cs;
        uint8_t h = k < s->nhc ? s->hmap[k] : H_FREE;
        if (h == H_META || h == H_L2 || h == H_L2_SHARED)
            why = SV_DATA_OVERLAP;
        else if (h == H_DATA || h == H_DATA_SHARED || h == H_COMP) {
            s->hmap[k] = H_DATA_SHARED;
            *shared = true;
        } else if (k < s->nhc) {
            s->hmap[k] = H_DATA;
        }
    }
    for (unsigned sc = 0; sc < s->nsc; sc++) {
        if (sc_type(s, e, bmp, sc) != QCOW2_SUBCLUSTER_NORMAL)
            continue;
        uint64_t hs = host + sc * s->scs, gs = g + sc * s->scs;
        if (why != SV__COUNT)
            lose(s, gs, s->scs, why, host);
        else if (hs >= s->dsize)
            lose(s, gs, s->scs, SV_DATA_PAST_EOF, host);
        else if (hs + s->scs > s->dsize) /* the part past the end of the file */
            lose(s, gs + (s->dsize - hs), s->scs - (s->dsize - hs), SV_DATA_PAST_EOF, host);
    }
}

/* Pass 3, only when some host cluster is mapped twice: every guest range on one. */
static int survey_shared(struct sv *s)
{
    for (uint64_t i = 0; i < s->l1n; i++) {
        if (s->l1st[i] != L1_OK)
            continue;
        uint64_t l2 = s->m.l1[i] & QCOW2_L1E_OFFSET_MASK;
        int64_t n = load_l2(s, l2);
        if (n < 0)
            return (int)n;
        for (uint64_t j = 0; j < (uint64_t)n && i * s->cov + j * s->cs < s->size; j++) {
            uint64_t e, bmp;
            l2_entry(s, j, &e, &bmp);
            enum qcow2_cluster_type t = qcow2_l2e_type(&s->m.geom, e);
            uint64_t host = qcow2_l2e_offset(e), k = host / s->cs;
            if (t == QCOW2_CLUSTER_COMPRESSED || (host & (s->cs - 1)) || k >= s->nhc ||
                s->hmap[k] != H_DATA_SHARED)
                continue;
            uint64_t g = i * s->cov + j * s->cs;
            for (unsigned sc = 0; sc < s->nsc; sc++)
                if (sc_type(s, e, bmp, sc) == QCOW2_SUBCLUSTER_NORMAL &&
                    g + sc * s->scs < s->size)
                    list_add(&s->sus, g + sc * s->scs,
                             guest_end(s, g + sc * s->scs, s->scs) - (g + sc * s->scs),
                             SV_SUSPECT_SHARED_DATA, host, 0);
        }
    }
    return 0;
}

static int survey(struct sv *s)
{
    const struct qcow2_header *h = &s->m.h;
    uint64_t fsz = s->m.file_size;
    s->nhc = (fsz + s->cs - 1) / s->cs;
    if (s->nhc > SV_MAX_HOST_CLUSTERS)
        return -EFBIG;
    s->hmap = xcalloc(s->nhc ? s->nhc : 1, 1);
    /* pass 1: the L1 entries and the clusters of their L2 tables; the L1 table is the
     * entries that map the virtual size (a damaged l1_size may claim far more) */
    uint64_t need = (s->size + s->cov - 1) / s->cov;
    uint64_t have = h->l1_size < need ? h->l1_size : need;
    mark_bytes(s, 0, s->cs, H_META);
    mark_bytes(s, h->l1_table_offset, have * 8, H_META);
    if (have < need)
        lose(s, have * s->cov, s->size - have * s->cov, SV_L1_TOO_SMALL, 0);
    s->l1n = have;
    s->l1st = xcalloc(s->l1n ? s->l1n : 1, 1);
    for (uint64_t i = 0; i < s->l1n; i++) {
        uint64_t g = i * s->cov;
        if (i >= s->m.l1_loaded) {
            s->l1st[i] = L1_LOST;
            lose(s, g, s->cov, SV_L1_PAST_EOF, h->l1_table_offset + i * 8);
            continue;
        }
        uint64_t l2 = s->m.l1[i] & QCOW2_L1E_OFFSET_MASK;
        enum salvage_reason why = SV__COUNT;
        if (!l2) {
            s->l1st[i] = L1_NONE;
            if (s->backing_err)
                lose(s, g, s->cov, SV_NO_BACKING, 0);
            continue;
        }
        if (l2 & (s->cs - 1))
            why = SV_L2_UNALIGNED;
        else if (l2 >= fsz)
            why = SV_L2_PAST_EOF;
        else if (s->hmap[l2 / s->cs] == H_META)
            why = SV_L2_OVERLAP;
        if (why != SV__COUNT) {
            s->l1st[i] = L1_LOST;
            lose(s, g, s->cov, why, l2);
            continue;
        }
        s->l1st[i] = L1_OK;
        uint8_t *hm = &s->hmap[l2 / s->cs];
        *hm = *hm == H_FREE ? H_L2 : H_L2_SHARED;
    }

    /* pass 2: every entry of every usable L2 table */
    bool shared = false;
    for (uint64_t i = 0; i < s->l1n; i++) {
        if (s->l1st[i] != L1_OK)
            continue;
        uint64_t g0 = i * s->cov, l2 = s->m.l1[i] & QCOW2_L1E_OFFSET_MASK;
        if (s->hmap[l2 / s->cs] == H_L2_SHARED)
            list_add(&s->sus, g0, guest_end(s, g0, s->cov) - g0, SV_SUSPECT_SHARED_L2, l2, 0);
        int64_t n = load_l2(s, l2);
        if (n < 0) {
            s->l1st[i] = L1_LOST;
            list_add(&s->st, g0, guest_end(s, g0, s->cov) - g0, SV_READ_ERROR, l2, (int)-n);
            continue;
        }
        uint64_t per = s->cov / s->cs;
        for (uint64_t j = 0; j < per && g0 + j * s->cs < s->size; j++) {
            uint64_t g = g0 + j * s->cs;
            if (j >= (uint64_t)n) {
                lose(s, g, (per - j) * s->cs, SV_L2_PAST_EOF, l2);
                break;
            }
            uint64_t e, bmp;
            l2_entry(s, j, &e, &bmp);
            survey_entry(s, g, e, bmp, &shared);
        }
    }
    return shared ? survey_shared(s) : 0;
}

/* ---- reads -------------------------------------------------------------------------- */

/* The static lost range holding off, or else the first one after it (NULL: none). */
static const struct salvage_range *st_find(const struct sv *s, uint64_t off)
{
    size_t lo = 0, hi = s->st.n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const struct salvage_range *r = &s->st.v[mid];
        if (r->off + r->len <= off)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < s->st.n ? &s->st.v[lo] : NULL;
}

static void lose_dyn(struct sv *s, uint64_t off, uint64_t len, enum salvage_reason why,
                     uint64_t host, int err)
{
    pthread_mutex_lock(&s->mu);
    list_add(&s->dyn, off, guest_end(s, off, len) - off, why, host, err);
    pthread_mutex_unlock(&s->mu);
}

/* What guest byte off is, for reads and block status: the subcluster type (INVALID for a
 * lost byte), the host offset of byte off for NORMAL, the L2 entry for COMPRESSED, and how
 * many bytes from off share it (<= n). */
struct sv_loc {
    enum qcow2_subcluster_type type;
    uint64_t host, entry, len;
};

static int locate(struct sv *s, uint64_t off, uint64_t n, struct sv_loc *loc)
{
    const struct salvage_range *r = st_find(s, off);
    if (r && r->off <= off) {
        loc->type = QCOW2_SUBCLUSTER_INVALID;
        loc->len = r->off + r->len - off < n ? r->off + r->len - off : n;
        return 0;
    }
    if (r && r->off - off < n)
        n = r->off - off;
    uint64_t i = off / s->cov, in_l1 = s->cov - off % s->cov;
    if (n > in_l1)
        n = in_l1;
    if (i >= s->l1n || s->l1st[i] != L1_OK) { /* L1_NONE (L1_LOST is in the list) */
        loc->type = QCOW2_SUBCLUSTER_UNALLOCATED_PLAIN;
        loc->len = n;
        return 0;
    }
    int64_t got = load_l2(s, s->m.l1[i] & QCOW2_L1E_OFFSET_MASK);
    if (got < 0)
        return (int)got;
    uint64_t j = (off % s->cov) / s->cs, e, bmp;
    l2_entry(s, j, &e, &bmp);
    unsigned sc = (unsigned)((off % s->cs) / s->scs);
    uint64_t in_sc = s->scs - off % s->scs;
    loc->type = sc_type(s, e, bmp, sc);
    loc->entry = e;
    loc->host = qcow2_l2e_offset(e) + off % s->cs;
    if (loc->type == QCOW2_SUBCLUSTER_COMPRESSED)
        in_sc = s->cs - off % s->cs;
    loc->len = n < in_sc ? n : in_sc;
    return 0;
}

static int read_compressed(struct sv *s, uint64_t entry)
{
    if (s->dbuf_state && s->dbuf_entry == entry)
        return s->dbuf_state > 0 ? 0 : -EIO;
    struct qcow2_compressed c;
    qcow2_compressed_decode(s->m.h.cluster_bits, entry, &c);
    if (!s->cbuf) {
        s->cbuf = xmalloc(2 * s->cs);
        s->dbuf = xmalloc(s->cs);
    }
    s->dbuf_entry = entry;
    s->dbuf_state = -1;
    /* csize <= 2 clusters by the descriptor's geometry */
    if (!c.csize || c.csize > 2 * s->cs)
        return -EIO;
    int r = qio_pread(s->m.q, s->cbuf, c.csize, c.host_offset);
    if (r < 0)
        return r;
    r = qcow2_decompress(s->m.h.compression_type, s->dbuf, s->cs, s->cbuf, c.csize);
    if (!qcow2_inflate_qemu_ok(r))
        return r == -ENOMEM ? r : -EIO;
    s->dbuf_state = 1;
    return 0;
}

static int64_t sv_read_step(image_t *img, uint64_t off, uint8_t *p, size_t n)
{
    struct sv *s = img->priv;
    struct sv_loc loc;
    int r = locate(s, off, n, &loc);
    if (r < 0)
        return r;
    size_t k = (size_t)loc.len;
    switch (loc.type) {
    case QCOW2_SUBCLUSTER_UNALLOCATED_PLAIN:
    case QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC:
        if (img->backing) {
            r = read_from_backing(img, off, p, k);
            if (r < 0) {
                lose_dyn(s, off, k, SV_READ_ERROR, 0, -r);
                memset(p, 0, k);
            }
        } else {
            memset(p, 0, k);
        }
        break;
    case QCOW2_SUBCLUSTER_NORMAL:
        r = qio_pread(s->dfile, p, k, loc.host);
        if (r < 0) {
            lose_dyn(s, off, k, SV_READ_ERROR, loc.host, -r);
            memset(p, 0, k);
        }
        break;
    case QCOW2_SUBCLUSTER_COMPRESSED:
        r = read_compressed(s, loc.entry);
        if (r == -ENOMEM)
            return r;
        if (r < 0) {
            struct qcow2_compressed c;
            qcow2_compressed_decode(s->m.h.cluster_bits, loc.entry, &c);
            lose_dyn(s, off - off % s->cs, s->cs, SV_COMPRESSED_BAD, c.host_offset, 0);
            memset(p, 0, k);
        } else {
            memcpy(p, s->dbuf + off % s->cs, k);
        }
        break;
    default: /* zeros, and lost bytes */
        memset(p, 0, k);
        break;
    }
    return (int64_t)k;
}

static int sv_read(image_t *img, uint64_t off, void *buf, size_t n)
{
    struct sv *s = img->priv;
    pthread_mutex_lock(&s->io);
    int r = read_in_steps(img, off, buf, n, sv_read_step);
    pthread_mutex_unlock(&s->io);
    return r;
}

static int sv_block_status(image_t *img, uint64_t off, uint64_t bytes, block_status_t *st)
{
    struct sv *s = img->priv;
    uint64_t done = 0;
    unsigned flags = 0;
    pthread_mutex_lock(&s->io);
    /* runs of one kind: lost bytes read as zeros, like zero clusters */
    while (done < bytes) {
        struct sv_loc loc;
        int r = locate(s, off + done, bytes - done, &loc);
        if (r < 0) {
            pthread_mutex_unlock(&s->io);
            return r;
        }
        unsigned f;
        switch (loc.type) {
        case QCOW2_SUBCLUSTER_NORMAL:
        case QCOW2_SUBCLUSTER_COMPRESSED: f = BS_DATA; break;
        case QCOW2_SUBCLUSTER_UNALLOCATED_PLAIN:
        case QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC: f = 0; break;
        default: f = BS_ZERO; break;
        }
        if (done && f != flags)
            break;
        flags = f;
        done += loc.len;
    }
    pthread_mutex_unlock(&s->io);
    st->flags = flags;
    st->pnum = done;
    return 0;
}

static void sv_close(image_t *img)
{
    struct sv *s = img->priv;
    if (!s)
        return;
    qcow2_image_close(&s->m);
    free(s->l1st);
    free(s->hmap);
    free(s->backing_err);
    free(s->st.v);
    free(s->dyn.v);
    free(s->sus.v);
    free(s->out.v);
    free(s->l2);
    free(s->cbuf);
    free(s->dbuf);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->io);
    free(s);
    img->priv = NULL;
}

static const struct driver salvage_driver = {
    .name = "qcow2",
    .supports_backing = true,
    .read = sv_read,
    .block_status = sv_block_status,
    .close = sv_close,
};

bool image_is_salvage(const image_t *img)
{
    return img && img->drv == &salvage_driver;
}

int salvage_open(const char *filename, int flags, image_t **out, char **errmsg)
{
    *out = NULL;
    char *inner = NULL;
    image_t *img = xcalloc(1, sizeof(*img));
    img->filename = xstrdup(filename);
    img->flags = flags & IMG_OPEN_SHARE;
    img->drv = &salvage_driver;
    img->format = "qcow2";
    struct sv *s = xcalloc(1, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->io, NULL);
    img->priv = s;
    int r = qio_open_image(filename, QIO_RDONLY, &img->file, &inner);
    if (r < 0)
        goto fail;
    img->data_file = img->file;
    r = qio_lock_image(img->file, false, true, (flags & IMG_OPEN_SHARE) != 0, filename, &inner);
    if (r < 0)
        goto fail;
    uint8_t magic[4];
    if ((r = qio_pread(img->file, magic, 4, 0)) < 0 || be32_get(magic) != QCOW2_MAGIC) {
        inner = xstrdup(r < 0 ? strerror(-r) : "salvage reads qcow2 images only");
        r = r < 0 ? r : -EINVAL;
        goto fail;
    }
    struct qcow2_open_opts oo = {
        .mode = QCOW2_MODE_SALVAGE,
        .data_flags = QIO_RDONLY | ((flags & IMG_OPEN_SHARE) ? QIO_SHARE : 0),
    };
    r = qcow2_image_open(&s->m, img->file, img->filename, &oo, &inner);
    if (s->m.data)
        img->data_file = s->m.data; /* closed by image_close */
    if (r < 0)
        goto fail;
    if (s->m.size_wraps || (s->m.h.size & ~(uint64_t)511) > IMG_MAX_LENGTH) {
        inner = xstrdup("Could not refresh total sector count: File too large");
        r = -EFBIG;
        goto fail;
    }
    s->size = img->size = s->m.h.size & ~(uint64_t)511;
    s->cs = s->m.cs;
    img->cluster_size = (uint32_t)s->cs;
    s->nsc = s->m.geom.extended_l2 ? QCOW2_EXTL2_SUBCLUSTERS : 1;
    s->scs = s->cs / s->nsc;
    s->esz = s->m.h.l2_entry_size;
    s->cov = s->cs * s->m.h.l2_entries;
    s->l2 = xmalloc(s->cs);
    s->dfile = img->data_file;
    if ((r = qio_size(s->dfile, &s->dsize)) < 0) {
        inner = xasprintf("Could not get the size of the data file: %s", strerror(-r));
        goto fail;
    }
    if (s->m.backing_name) {
        img->backing_file = xstrdup(s->m.backing_name);
        img->backing_full = image_path_combine(filename, s->m.backing_name);
        if (s->m.ext.has_backing_format && s->m.ext.backing_format[0])
            img->backing_format = xstrdup(s->m.ext.backing_format);
        char *msg = NULL;
        if (image_open_backing_of(img->file, img->backing_full, img->backing_format,
                                  flags & IMG_OPEN_SHARE, &img->backing, &msg) < 0) {
            s->backing_err = msg ? msg : xstrdup("backing file did not open");
            img->backing = NULL;
        }
    }
    if ((r = survey(s)) < 0) {
        inner = xstrdup(r == -EFBIG ? "image file too large to salvage" : strerror(-r));
        goto fail;
    }
    /* survey adds in L1 pass order: sorted once, for st_find's binary search */
    static const struct sv_list none;
    struct sv_list sorted = { 0 };
    list_merge(&sorted, &s->st, &none);
    free(s->st.v);
    s->st = sorted;
    *out = img;
    return 0;
fail:
    *errmsg = xasprintf("Could not open '%s': %s", filename, inner ? inner : strerror(-r));
    free(inner);
    image_close(img);
    return r;
}

size_t salvage_ranges(image_t *img, bool suspect, const struct salvage_range **v)
{
    struct sv *s = img->priv;
    pthread_mutex_lock(&s->mu);
    static const struct sv_list none;
    list_merge(&s->out, suspect ? &s->sus : &s->st, suspect ? &none : &s->dyn);
    pthread_mutex_unlock(&s->mu);
    *v = s->out.v;
    return s->out.n;
}

const char *salvage_backing_error(const image_t *img)
{
    return image_is_salvage(img) ? ((const struct sv *)img->priv)->backing_err : NULL;
}

void salvage_reason_text(const image_t *img, const struct salvage_range *r, char *buf,
                         size_t len)
{
    unsigned long long h = r->host;
    switch (r->reason) {
    case SV_L1_PAST_EOF:
        snprintf(buf, len, "L1 table entry at 0x%llx lies past the end of the image file", h);
        break;
    case SV_L1_TOO_SMALL:
        snprintf(buf, len, "not mapped: the L1 table (l1_size) is too small for the "
                 "virtual size");
        break;
    case SV_L2_UNALIGNED:
        snprintf(buf, len, "L2 table offset 0x%llx is not cluster aligned", h);
        break;
    case SV_L2_PAST_EOF:
        snprintf(buf, len, "L2 table at 0x%llx lies past the end of the image file", h);
        break;
    case SV_L2_OVERLAP:
        snprintf(buf, len, "L2 table at 0x%llx lies on the image header or the L1 table", h);
        break;
    case SV_DATA_UNALIGNED:
        snprintf(buf, len, "data cluster offset 0x%llx is not cluster aligned", h);
        break;
    case SV_DATA_PAST_EOF:
        snprintf(buf, len, "data cluster at 0x%llx lies past the end of the %s", h,
                 image_is_salvage(img) && ((const struct sv *)img->priv)->m.has_data_file
                     ? "data file" : "image file");
        break;
    case SV_DATA_OVERLAP:
        snprintf(buf, len, "data cluster at 0x%llx lies on metadata (header, L1 or L2 table)",
                 h);
        break;
    case SV_SUBCLUSTER_INVALID:
        snprintf(buf, len, "invalid subcluster bitmap (allocated and zero bits both set)");
        break;
    case SV_COMPRESSED_DATA_FILE:
        snprintf(buf, len, "compressed cluster in an image with an external data file");
        break;
    case SV_COMPRESSED_OVERLAP:
        snprintf(buf, len, "compressed cluster at 0x%llx lies on metadata (header, L1 or "
                 "L2 table)", h);
        break;
    case SV_COMPRESSED_BAD:
        snprintf(buf, len, "compressed cluster at 0x%llx does not decompress", h);
        break;
    case SV_READ_ERROR:
        snprintf(buf, len, "read error at 0x%llx: %s", h, strerror(r->err));
        break;
    case SV_NO_BACKING:
        snprintf(buf, len, "unallocated, and the backing file did not open: %s",
                 salvage_backing_error(img) ? salvage_backing_error(img) : "?");
        break;
    case SV_SUSPECT_SHARED_DATA:
        snprintf(buf, len, "host cluster 0x%llx is mapped by more than one guest cluster", h);
        break;
    case SV_SUSPECT_SHARED_L2:
        snprintf(buf, len, "L2 table at 0x%llx is used by more than one L1 entry", h);
        break;
    default:
        snprintf(buf, len, "unknown");
        break;
    }
}

int salvage_report(image_t *img, FILE *f)
{
    const struct salvage_range *v;
    char why[512];
    size_t lost = salvage_ranges(img, false, &v);
    for (size_t i = 0; i < lost; i++) {
        salvage_reason_text(img, &v[i], why, sizeof(why));
        fprintf(f, "%s: %s: salvage: lost 0x%llx+0x%llx (%llu bytes): %s\n", qimg_progname,
                img->filename,
                (unsigned long long)v[i].off, (unsigned long long)v[i].len,
                (unsigned long long)v[i].len, why);
    }
    size_t sus = salvage_ranges(img, true, &v);
    for (size_t i = 0; i < sus; i++) {
        salvage_reason_text(img, &v[i], why, sizeof(why));
        fprintf(f, "%s: %s: salvage: suspect 0x%llx+0x%llx (%llu bytes): %s\n", qimg_progname,
                img->filename,
                (unsigned long long)v[i].off, (unsigned long long)v[i].len,
                (unsigned long long)v[i].len, why);
    }
    return lost ? 2 : sus ? 3 : 0;
}
