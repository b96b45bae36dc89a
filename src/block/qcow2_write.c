/* qcow2 guest writes (qemu's qcow2_co_pwritev_part and block/qcow2-cluster.c's allocation
 * path): clusters with OFLAG_COPIED are rewritten in place (handle_copied), others get new
 * clusters in qemu's order (handle_alloc: contiguous with the previous run when possible),
 * the uncovered parts of new clusters are copied from the old cluster, the backing chain
 * or zeros (perform_cow, or one fallocate when they read as unallocated:
 * handle_alloc_space), and only then are the L2 entries changed (qcow2_alloc_cluster_link_l2).
 * Guest data and COW data reach the disk before the L2 tables that map them (qcow2/l2.h). */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "io/blkdebug.h"
#include "block/compress_write.h"
#include "block/qcow2_int.h"
#include "crypto/sector.h"
#include "format/be.h"
#include "format/qcow2_codec.h"
#include "qcow2/alloc.h"
#include "qcow2/bitmap_store.h"
#include "qcow2/header_write.h"
#include "qcow2/l2.h"
#include "qcow2/overlap.h"
#include "qcow2/port.h"
#include "util/err.h"
#include "util/xalloc.h"


#define INV_OFFSET UINT64_MAX

static int qcow2_write_op(image_t *img, uint64_t off, const void *buf, size_t n);

/* qemu's qcow2_signal_corruption(fatal) after an operation: a write the overlap guard
 * refused, or metadata found corrupt (image_corrupt), leaves the image unusable (qemu drops
 * its driver: later requests fail with "No medium found", the caches are not written back)
 * and, on v3, with the corrupt bit set. */
static int after_corruption(image_t *img, int r)
{
    struct qcow2_state *s = img->priv;
    if (r != -EIO)
        return r;
    if (qcow2_overlap_refused(&s->m, NULL, NULL, NULL)) {
        img->broken = true; /* the guard printed the event and set the bit */
        img->corruption_signaled = true;
        return r;
    }
    if (img->broken && s->h.version >= 3 && !(s->h.incompatible_features & QCOW2_INCOMPAT_CORRUPT)) {
        (void)qcow2_image_mark_corrupt(&s->m);
    }
    return r;
}
/* qemu's BDRV_REQUEST_MAX_BYTES */
#define REQ_MAX_BYTES ((uint64_t)(INT_MAX & ~511))

struct cow_region {
    unsigned offset;    /* from the start of the first cluster */
    unsigned nb_bytes;
};

/* qemu's QCowL2Meta: one run of clusters whose L2 entries change after the data write. */
struct l2meta {
    uint64_t alloc_offset;   /* host offset of the first cluster */
    uint64_t offset;         /* guest offset of the first cluster */
    unsigned nb_clusters;
    bool keep_old;
    bool skip_cow;
    bool prealloc;           /* metadata preallocation: no subcluster marked written */
    struct cow_region cow_start, cow_end;
    const uint8_t *data;     /* guest data merged into the COW write, or NULL */
};

struct metas {
    struct l2meta *v;
    size_t n, cap;
};

static inline unsigned sc_bits(const struct qcow2_state *s)
{
    return s->h.cluster_bits - (s->geom.extended_l2 ? 5 : 0);
}

static inline unsigned sc_index(const struct qcow2_state *s, uint64_t off)
{
    return (unsigned)((off & (s->cs - 1)) >> sc_bits(s));
}

static bool has_data_file(const struct qcow2_state *s)
{
    return s->geom.data_file;
}

static bool data_file_is_raw(const struct qcow2_state *s)
{
    return (s->h.autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW) != 0;
}

/* The L2 table for a write at off; an unaligned table offset is qemu's corruption event. */
static int get_table(image_t *img, uint64_t off, uint8_t **t, uint64_t *l2_index)
{
    struct qcow2_state *s = img->priv;
    uint64_t l1_index = off >> (s->h.cluster_bits + s->h.l2_bits);
    if (l1_index < s->h.l1_size && (s->l1[l1_index] & QCOW2_L1E_OFFSET_MASK & (s->cs - 1))) {
        image_corrupt(img, "L2 table offset %#llx unaligned (L1 index: %#llx)",
                      (unsigned long long)(s->l1[l1_index] & QCOW2_L1E_OFFSET_MASK),
                      (unsigned long long)l1_index);
        return -EIO;
    }
    return qcow2_l2_table_for_write(&s->m, off, t, l2_index);
}

/* qemu's cluster_needs_new_alloc */
static bool needs_new_alloc(const struct qcow2_state *s, uint64_t e)
{
    switch (qcow2_l2e_type(&s->geom, e)) {
    case QCOW2_CLUSTER_NORMAL:
    case QCOW2_CLUSTER_ZERO_ALLOC:
        return !(e & QCOW2_OFLAG_COPIED);
    default:
        return true;
    }
}

/* qemu's count_single_write_clusters */
static uint64_t count_single_write(const struct qcow2_state *s, uint64_t nb, const uint8_t *t,
                                   uint64_t idx, bool new_alloc)
{
    uint64_t expected = qcow2_l2_get(&s->m, t, idx) & QCOW2_L2E_OFFSET_MASK;
    uint64_t i;
    for (i = 0; i < nb; i++) {
        uint64_t e = qcow2_l2_get(&s->m, t, idx + i);
        if (needs_new_alloc(s, e) != new_alloc)
            break;
        if (!new_alloc) {
            if (expected != (e & QCOW2_L2E_OFFSET_MASK))
                break;
            expected += s->cs;
        }
    }
    return i;
}

static enum qcow2_subcluster_type sc_type(const struct qcow2_state *s, const uint8_t *t,
                                          uint64_t idx, unsigned sc)
{
    return qcow2_l2e_subcluster_type(&s->geom, qcow2_l2_get(&s->m, t, idx),
                                     qcow2_l2_get_bitmap(&s->m, t, idx), sc);
}

/* qemu's qcow2_free_any_cluster, noting when the host cluster that compressed clusters
 * are packed into (free_byte_offset) loses its last reference: see alloc_compressed. */
static void free_entry(struct qcow2_state *s, uint64_t e, enum qcow2_discard_type type)
{
    qcow2_free_any_cluster(&s->m, e, type);
    uint64_t rc;
    if (s->free_byte_offset && !s->packing_freed &&
        qcow2_image_refcount(&s->m, s->free_byte_offset >> s->h.cluster_bits, &rc) == 0 &&
        rc == 0)
        s->packing_freed = true;
}

/* Frees the clusters that entries of the L2 cache no longer reference, after those tables
 * are on disk. Deliberately stricter than qemu 7.2, which frees (and may discard, and may
 * hand out again) a cluster while the table on disk still maps it: a crash then leaves the
 * old mapping pointing at a punched hole or at another write's data. */
static int free_after_flush(struct qcow2_state *s, const uint64_t *old, size_t n,
                            enum qcow2_discard_type type)
{
    if (!n)
        return 0;
    int r = qcow2_l2_flush(&s->m);
    if (r < 0)
        return r; /* the clusters leak: the tables may still map them */
    for (size_t i = 0; i < n; i++)
        free_entry(s, old[i], type);
    return 0;
}

/* qemu's calculate_l2_meta: the COW regions of a write of bytes at guest_off into the
 * clusters at host (keep_old: rewritten in place; no entry change unless a subcluster
 * changes type). */
static int calculate_l2_meta(image_t *img, uint64_t host, uint64_t guest_off, uint64_t bytes,
                             const uint8_t *t, uint64_t l2_index, struct metas *ms,
                             bool keep_old)
{
    struct qcow2_state *s = img->priv;
    const unsigned cb = s->h.cluster_bits, sb = sc_bits(s);
    const uint64_t cs = s->cs, scs = (uint64_t)1 << sb;
    unsigned cow_start_to = (unsigned)(guest_off & (cs - 1));
    unsigned cow_end_from = cow_start_to + (unsigned)bytes;
    unsigned nb_clusters = (unsigned)((cow_end_from + cs - 1) >> cb);
    unsigned cow_start_from = 0, cow_end_to = 0;
    bool skip_cow = keep_old;
    enum qcow2_subcluster_type type = QCOW2_SUBCLUSTER_INVALID;

    for (unsigned i = 0; i < nb_clusters; i++) {
        uint64_t e = qcow2_l2_get(&s->m, t, l2_index + i);
        uint64_t bm = qcow2_l2_get_bitmap(&s->m, t, l2_index + i);
        if (skip_cow) {
            unsigned from = cow_start_to > (i << cb) ? cow_start_to : i << cb;
            unsigned to = cow_end_from < ((i + 1) << cb) ? cow_end_from : (i + 1) << cb;
            unsigned first_sc = (from & (unsigned)(cs - 1)) >> sb;
            unsigned last_sc = ((to - 1) & (unsigned)(cs - 1)) >> sb;
            int cnt = qcow2_range_type(s, e, bm, first_sc, &type);
            if (cnt < 0)
                type = QCOW2_SUBCLUSTER_INVALID;
            else if (type != QCOW2_SUBCLUSTER_NORMAL || first_sc + (unsigned)cnt <= last_sc)
                skip_cow = false;
        } else {
            type = qcow2_l2e_subcluster_type(&s->geom, e, bm, 0);
        }
        if (type == QCOW2_SUBCLUSTER_INVALID) {
            uint64_t l1_index = guest_off >> (cb + s->h.l2_bits);
            image_corrupt(img, "Invalid cluster entry found (L2 offset: %#llx, L2 index: %#x)",
                          (unsigned long long)(s->l1[l1_index] & QCOW2_L1E_OFFSET_MASK),
                          (unsigned)(l2_index + i));
            return -EIO;
        }
    }
    if (skip_cow)
        return 0;

    uint64_t bm = qcow2_l2_get_bitmap(&s->m, t, l2_index);
    unsigned sc = sc_index(s, guest_off);
    type = sc_type(s, t, l2_index, sc);
    switch (type) {
    case QCOW2_SUBCLUSTER_COMPRESSED:
        cow_start_from = 0;
        break;
    case QCOW2_SUBCLUSTER_NORMAL:
        if (keep_old) {
            cow_start_from = cow_start_to;
            break;
        }
        /* fall through */
    case QCOW2_SUBCLUSTER_ZERO_ALLOC:
    case QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC:
        if (keep_old) {
            cow_start_from = sc << sb;
        } else if (s->geom.extended_l2) {
            /* skip leading zero and unallocated subclusters */
            uint32_t alloc = (uint32_t)(bm & QCOW2_L2_BITMAP_ALL_ALLOC);
            unsigned z = alloc ? (unsigned)__builtin_ctz(alloc) : 32;
            cow_start_from = (sc < z ? sc : z) << sb;
        } else {
            cow_start_from = 0;
        }
        break;
    case QCOW2_SUBCLUSTER_ZERO_PLAIN:
    case QCOW2_SUBCLUSTER_UNALLOCATED_PLAIN:
        cow_start_from = sc << sb;
        break;
    default:
        return -EIO;
    }

    uint64_t last = l2_index + nb_clusters - 1;
    bm = qcow2_l2_get_bitmap(&s->m, t, last);
    sc = sc_index(s, guest_off + bytes - 1);
    type = sc_type(s, t, last, sc);
    unsigned round_cs = (unsigned)((cow_end_from + cs - 1) & ~(cs - 1));
    switch (type) {
    case QCOW2_SUBCLUSTER_COMPRESSED:
        cow_end_to = round_cs;
        break;
    case QCOW2_SUBCLUSTER_NORMAL:
        if (keep_old) {
            cow_end_to = cow_end_from;
            break;
        }
        /* fall through */
    case QCOW2_SUBCLUSTER_ZERO_ALLOC:
    case QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC:
        if (keep_old) {
            cow_end_to = (unsigned)((cow_end_from + scs - 1) & ~(scs - 1));
        } else {
            cow_end_to = round_cs;
            if (s->geom.extended_l2) {
                /* skip trailing zero and unallocated subclusters */
                uint32_t alloc = (uint32_t)(bm & QCOW2_L2_BITMAP_ALL_ALLOC);
                unsigned lz = alloc ? (unsigned)__builtin_clz(alloc) : 32;
                unsigned left = s->h.subclusters_per_cluster - sc - 1;
                cow_end_to -= (left < lz ? left : lz) << sb;
            }
        }
        break;
    case QCOW2_SUBCLUSTER_ZERO_PLAIN:
    case QCOW2_SUBCLUSTER_UNALLOCATED_PLAIN:
        cow_end_to = (unsigned)((cow_end_from + scs - 1) & ~(scs - 1));
        break;
    default:
        return -EIO;
    }

    if (ms->n == ms->cap) {
        ms->cap = ms->cap ? ms->cap * 2 : 4;
        ms->v = xreallocarray(ms->v, ms->cap, sizeof(*ms->v));
    }
    ms->v[ms->n++] = (struct l2meta){
        .alloc_offset = host,
        .offset = guest_off & ~(cs - 1),
        .nb_clusters = nb_clusters,
        .keep_old = keep_old,
        .cow_start = { cow_start_from, cow_start_to - cow_start_from },
        .cow_end = { cow_end_from, cow_end_to - cow_end_from },
    };
    return 0;
}

/* qemu's handle_copied: 1 when clusters at guest_off can be rewritten in place (*bytes
 * may shrink, *host set), 0 when not (*bytes 0 if they exist but not at *host). */
static int handle_copied(image_t *img, uint64_t guest_off, uint64_t *host, uint64_t *bytes,
                         struct metas *ms)
{
    struct qcow2_state *s = img->priv;
    const uint64_t cs = s->cs, in = guest_off & (cs - 1);
    uint64_t nb = (in + *bytes + cs - 1) >> s->h.cluster_bits;
    uint64_t idx = (guest_off >> s->h.cluster_bits) & (s->h.l2_entries - 1);
    if (nb > s->h.l2_entries - idx)
        nb = s->h.l2_entries - idx;
    if (nb > REQ_MAX_BYTES >> s->h.cluster_bits)
        nb = REQ_MAX_BYTES >> s->h.cluster_bits;
    uint8_t *t;
    int r = get_table(img, guest_off, &t, &idx);
    if (r < 0)
        return r;
    uint64_t e = qcow2_l2_get(&s->m, t, idx);
    uint64_t coff = e & QCOW2_L2E_OFFSET_MASK;
    if (needs_new_alloc(s, e))
        return 0;
    if (coff & (cs - 1)) {
        image_corrupt(img, "%s cluster offset %#llx unaligned (guest offset: %#llx)",
                      (e & QCOW2_OFLAG_ZERO) ? "Preallocated zero" : "Data",
                      (unsigned long long)coff, (unsigned long long)guest_off);
        return -EIO;
    }
    if (*host != INV_OFFSET && coff != *host) {
        *bytes = 0;
        return 0;
    }
    uint64_t keep = count_single_write(s, nb, t, idx, false);
    if (*bytes > keep * cs - in)
        *bytes = keep * cs - in;
    if ((r = calculate_l2_meta(img, coff, guest_off, *bytes, t, idx, ms, true)) < 0)
        return r;
    *host = coff + in;
    return 1;
}

/* qemu's handle_alloc + do_alloc_cluster_offset: new clusters for guest_off (at *host if
 * set: contiguous with the previous run, or none). 1 allocated, 0 none (*bytes 0). */
static int handle_alloc(image_t *img, uint64_t guest_off, uint64_t *host, uint64_t *bytes,
                        struct metas *ms)
{
    struct qcow2_state *s = img->priv;
    const uint64_t cs = s->cs, in = guest_off & (cs - 1);
    uint64_t nb = (in + *bytes + cs - 1) >> s->h.cluster_bits;
    uint64_t idx = (guest_off >> s->h.cluster_bits) & (s->h.l2_entries - 1);
    if (nb > s->h.l2_entries - idx)
        nb = s->h.l2_entries - idx;
    if (nb > REQ_MAX_BYTES >> s->h.cluster_bits)
        nb = REQ_MAX_BYTES >> s->h.cluster_bits;
    uint8_t *t;
    int r = get_table(img, guest_off, &t, &idx);
    if (r < 0)
        return r;
    nb = count_single_write(s, nb, t, idx, true);
    if (nb == 0)
        return -EIO; /* qemu asserts: handle_copied took the non-COW clusters */
    uint64_t alloc = *host == INV_OFFSET ? INV_OFFSET : *host & ~(cs - 1);
    if (has_data_file(s)) {
        alloc = guest_off & ~(cs - 1);
    } else if (alloc == INV_OFFSET) {
        int64_t o = qcow2_alloc_clusters(&s->m, nb * cs);
        if (o < 0)
            return (int)o;
        alloc = (uint64_t)o;
    } else {
        int64_t k = qcow2_alloc_clusters_at(&s->m, alloc, nb);
        if (k < 0)
            return (int)k;
        nb = (uint64_t)k;
    }
    if (nb == 0) {
        *bytes = 0;
        return 0;
    }
    /* the allocator may have evicted the table: load it again */
    if ((r = get_table(img, guest_off, &t, &idx)) < 0)
        return r;
    uint64_t requested = *bytes + in, avail = nb * cs;
    uint64_t nb_bytes = requested < avail ? requested : avail;
    *host = alloc + in;
    if (*bytes > nb_bytes - in)
        *bytes = nb_bytes - in;
    return calculate_l2_meta(img, alloc, guest_off, *bytes, t, idx, ms, false) < 0 ? -EIO : 1;
}

/* qemu's qcow2_alloc_host_offset: host offset of a contiguous run starting at off (*bytes
 * may shrink), with the metadata updates it needs in ms. */
static int alloc_host_offset(image_t *img, uint64_t off, uint64_t *bytes, uint64_t *host,
                             struct metas *ms)
{
    uint64_t start = off, remaining = *bytes, cluster_offset = INV_OFFSET, cur = 0;
    *host = INV_OFFSET;
    for (;;) {
        if (*host == INV_OFFSET && cluster_offset != INV_OFFSET)
            *host = cluster_offset;
        start += cur;
        remaining -= cur;
        if (cluster_offset != INV_OFFSET)
            cluster_offset += cur;
        if (remaining == 0)
            break;
        cur = remaining;
        int r = handle_copied(img, start, &cluster_offset, &cur, ms);
        if (r < 0)
            return r;
        if (r)
            continue;
        if (cur == 0)
            break;
        r = handle_alloc(img, start, &cluster_offset, &cur, ms);
        if (r < 0)
            return r;
        if (r)
            continue;
        break;
    }
    *bytes -= remaining;
    return *bytes > 0 && *host != INV_OFFSET ? 0 : -EIO;
}

/* The data file's overlap check: qemu checks host writes into the image file only. */
static int data_overlap_check(struct qcow2_state *s, uint64_t off, uint64_t len)
{
    return has_data_file(s) ? 0 : qcow2_overlap_check(&s->m, 0, off, len);
}

/* qemu's bdrv_co_is_zero_fast: the chain's block status says [off, off+n) reads as zeros
 * (zero clusters, unallocated down to a layer without backing), in one run. qimg's block
 * status is qemu's want_zero form: with metadata preallocation detected it also asks the
 * file (qemu's fast check does not), a difference only for such images. */
static bool is_zero_fast(image_t *img, uint64_t off, uint64_t n)
{
    if (!n)
        return true;
    block_status_t st;
    return image_block_status_above(img, NULL, off, n, &st) == 0 && (st.flags & BS_ZERO) &&
           st.pnum == n;
}

/* qemu's handle_alloc_space: COW regions that read as zeros are zeroed with one
 * fallocate over both regions and the data between instead of written (no fallback:
 * else the COW). */
static int handle_alloc_space(image_t *img, struct metas *ms)
{
    struct qcow2_state *s = img->priv;
    if (s->crypt)
        return 0; /* zeros on disk would decrypt to noise: the COW regions are written */
    for (size_t i = 0; i < ms->n; i++) {
        struct l2meta *m = &ms->v[i];
        if (!m->cow_start.nb_bytes && !m->cow_end.nb_bytes)
            continue;
        if (!is_zero_fast(img, m->offset + m->cow_start.offset, m->cow_start.nb_bytes) ||
            !is_zero_fast(img, m->offset + m->cow_end.offset, m->cow_end.nb_bytes))
            continue;
        /* from the start of the first COW region to the end of the last. Deliberately
         * not for clusters rewritten in place (qemu 7.2 zeroes that span too, guest data
         * between the regions included, so a crash before the data write loses data that
         * was on disk): there each region alone, which reads as zeros already */
        struct cow_region span = { m->cow_start.offset, m->cow_end.offset +
                                   m->cow_end.nb_bytes - m->cow_start.offset };
        const struct cow_region *parts[2] = { &span, NULL };
        if (m->keep_old) {
            parts[0] = &m->cow_start;
            parts[1] = &m->cow_end;
        }
        int r = 0;
        for (int k = 0; k < 2 && r == 0; k++) {
            if (!parts[k] || !parts[k]->nb_bytes)
                continue;
            uint64_t start = m->alloc_offset + parts[k]->offset;
            if ((r = data_overlap_check(s, start, parts[k]->nb_bytes)) < 0)
                return r;
            r = posix_write_zeroes(img->data_file, start, parts[k]->nb_bytes, false);
        }
        if (r < 0) {
            if (r != -ENOTSUP && r != -EAGAIN)
                return r;
            continue;
        }
        m->skip_cow = true;
    }
    return 0;
}

/* qemu's merge_cow: the meta whose COW regions sit right around [off, off+n) takes the
 * guest data into its COW write. */
static bool merge_cow(uint64_t off, uint64_t n, const uint8_t *buf, struct metas *ms)
{
    for (size_t k = ms->n; k-- > 0;) {
        struct l2meta *m = &ms->v[k];
        if ((!m->cow_start.nb_bytes && !m->cow_end.nb_bytes) || m->skip_cow)
            continue;
        if (m->offset + m->cow_start.offset + m->cow_start.nb_bytes != off)
            continue;
        if (m->offset + m->cow_end.offset != off + n)
            continue;
        m->data = buf;
        return true;
    }
    return false;
}

/* qemu's perform_cow: the old bytes of both regions read through this image (old
 * cluster, backing chain or zeros) and written around the guest data. */
static int perform_cow(image_t *img, struct l2meta *m)
{
    struct qcow2_state *s = img->priv;
    struct cow_region *a = &m->cow_start, *b = &m->cow_end;
    if ((a->nb_bytes == 0 && b->nb_bytes == 0) || m->skip_cow)
        return 0;
    unsigned data_bytes = b->offset - (a->offset + a->nb_bytes);
    size_t total = (size_t)a->nb_bytes + (m->data ? data_bytes : 0) + b->nb_bytes;
    uint8_t *buf = xmalloc(total ? total : 1);
    uint8_t *end_buf = buf + total - b->nb_bytes;
    int r = 0;
    if (a->nb_bytes)
        r = qcow2_read(img, m->offset + a->offset, buf, a->nb_bytes);
    if (r == 0 && b->nb_bytes)
        r = qcow2_read(img, m->offset + b->offset, end_buf, b->nb_bytes);
    if (r == 0 && s->crypt) {
        /* do_perform_cow_encrypt: the old bytes encrypted for their new place (the
         * guest data in m->data was encrypted by the write already) */
        uint64_t base = s->crypt_physical ? m->alloc_offset : m->offset;
        qcrypt_encrypt(s->crypt, (base + a->offset) / QCRYPT_SECTOR, buf, a->nb_bytes);
        qcrypt_encrypt(s->crypt, (base + b->offset) / QCRYPT_SECTOR, end_buf, b->nb_bytes);
    }
    if (r == 0 && m->data) {
        memcpy(buf + a->nb_bytes, m->data, data_bytes);
        r = data_overlap_check(s, m->alloc_offset + a->offset, total);
        if (r == 0)
            r = qio_pwrite(img->data_file, buf, total, m->alloc_offset + a->offset);
    } else if (r == 0) {
        if (a->nb_bytes && (r = data_overlap_check(s, m->alloc_offset + a->offset,
                                                   a->nb_bytes)) == 0)
            r = qio_pwrite(img->data_file, buf, a->nb_bytes, m->alloc_offset + a->offset);
        if (r == 0 && b->nb_bytes &&
            (r = data_overlap_check(s, m->alloc_offset + b->offset, b->nb_bytes)) == 0)
            r = qio_pwrite(img->data_file, end_buf, b->nb_bytes, m->alloc_offset + b->offset);
    }
    free(buf);
    return r;
}

/* qemu's qcow2_alloc_cluster_link_l2: COW, then the entries (OFLAG_COPIED, and the
 * written subclusters in the bitmap), then the old clusters' references dropped. */
static int link_l2(image_t *img, struct l2meta *m)
{
    struct qcow2_state *s = img->priv;
    const unsigned cb = s->h.cluster_bits;
    int r = perform_cow(img, m);
    if (r < 0)
        return r;
    /* lazy refcounts: the dirty bit before refcount updates may lag (qemu's
     * qcow2_mark_dirty); else the refblocks counting the new clusters reach the disk
     * before this table (qcow2_need_accurate_refcounts) */
    if (qcow2_image_lazy_refcounts(&s->m) && (r = qcow2_image_mark_dirty(&s->m)) < 0)
        return r;
    if (qcow2_image_need_accurate_refcounts(&s->m) &&
        (r = qcow2_l2_depends_on_refblocks(&s->m)) < 0)
        return r;
    uint8_t *t;
    uint64_t idx;
    if ((r = get_table(img, m->offset, &t, &idx)) < 0)
        return r;
    uint64_t *old = xmalloc(m->nb_clusters * sizeof(*old));
    unsigned j = 0;
    for (unsigned i = 0; i < m->nb_clusters; i++) {
        uint64_t off = m->alloc_offset + ((uint64_t)i << cb);
        uint64_t e = qcow2_l2_get(&s->m, t, idx + i);
        if (e != 0)
            old[j++] = e;
        qcow2_l2_set(&s->m, t, idx + i, off | QCOW2_OFLAG_COPIED);
        if (s->geom.extended_l2 && !m->prealloc) {
            uint64_t bm = qcow2_l2_get_bitmap(&s->m, t, idx + i);
            unsigned from = m->cow_start.offset, to = m->cow_end.offset + m->cow_end.nb_bytes;
            if (from < (i << cb))
                from = i << cb;
            if (to > ((i + 1) << cb))
                to = (i + 1) << cb;
            unsigned first = sc_index(s, from), lastsc = sc_index(s, to - 1);
            for (unsigned k = first; k <= lastsc; k++)
                bm = (bm | QCOW2_SUB_ALLOC(k)) & ~QCOW2_SUB_ZERO(k);
            qcow2_l2_set_bitmap(&s->m, t, idx + i, bm);
        }
    }
    qcow2_l2_mark_dirty(&s->m, t);
    r = m->keep_old ? 0 : free_after_flush(s, old, j, QCOW2_DISCARD_NEVER);
    free(old);
    return r;
}

/* qemu's qcow2_handle_l2meta: link (newest first, as qemu's list runs) or, after a
 * failure, give the new clusters back (qcow2_alloc_cluster_abort). */
static int handle_l2meta(image_t *img, struct metas *ms, bool link)
{
    struct qcow2_state *s = img->priv;
    int ret = 0;
    for (size_t k = ms->n; k-- > 0;) {
        struct l2meta *m = &ms->v[k];
        if (link && ret == 0) {
            ret = link_l2(img, m);
            if (ret == 0)
                continue;
        }
        if (!has_data_file(s) && !m->keep_old)
            qcow2_free_clusters(&s->m, m->alloc_offset, (uint64_t)m->nb_clusters * s->cs,
                                QCOW2_DISCARD_NEVER);
    }
    ms->n = 0;
    return ret;
}

/* Chunks of a request whose data is written and whose L2 updates wait (qemu's write tasks
 * of one request, each linking its clusters when it gets the lock again). */
struct pending {
    struct metas *v;
    size_t n, cap;
};

static int link_pending(image_t *img, struct pending *pd)
{
    int ret = 0;
    for (size_t i = 0; i < pd->n; i++) {
        int r = handle_l2meta(img, &pd->v[i], true);
        if (ret == 0)
            ret = r;
        free(pd->v[i].v);
    }
    pd->n = 0;
    return ret;
}

/* qemu's qcow2_co_pwritev_part. A request that takes several allocation runs ("chunks")
 * runs them as parallel write tasks in qemu (at most QCOW2_MAX_WORKERS, 8, at once): a task
 * starts only when the request's coroutine yields and links its clusters (freeing what they
 * replace) only after its data write, so the later chunks are allocated before the earlier
 * ones link, unless the pool is full and the request waits for a task to finish. The same
 * order here, so that clusters freed by an early chunk are reused where qemu reuses them. */
#define QCOW2_MAX_WORKERS 8

/* 0, or -ENOTSUP when the image may not change (encrypted: no key; consistent persistent
 * bitmaps qimg cannot keep current, i11-rdwr's qcow2_image_may_write) */
static int may_write(struct qcow2_state *s)
{
    if (s->h.crypt_method != 0 && !s->crypt)
        return -ENOTSUP;
    return qcow2_image_may_write(&s->m);
}

static int qcow2_write_op(image_t *img, uint64_t off, const void *buf, size_t n);

/* An encrypted image's request alignment is a sector (qcow2_refresh_limits): the partial
 * sectors at either end are read (decrypted) and written whole, as qemu's block layer
 * does for such a request. */
static int write_sectors(image_t *img, uint64_t off, const void *buf, size_t n)
{
    uint64_t a = off / QCRYPT_SECTOR * QCRYPT_SECTOR;
    uint64_t e = (off + n + QCRYPT_SECTOR - 1) / QCRYPT_SECTOR * QCRYPT_SECTOR;
    uint8_t *b = xmalloc((size_t)(e - a));
    int r = qcow2_read(img, a, b, QCRYPT_SECTOR);
    if (r == 0 && e - a > QCRYPT_SECTOR)
        r = qcow2_read(img, e - QCRYPT_SECTOR, b + (e - a) - QCRYPT_SECTOR, QCRYPT_SECTOR);
    if (r == 0) {
        memcpy(b + (off - a), buf, n);
        r = qcow2_write_op(img, a, b, (size_t)(e - a));
    }
    free(b);
    return r;
}

static int qcow2_write_op(image_t *img, uint64_t off, const void *buf, size_t n)
{
    struct qcow2_state *s = img->priv;
    int r0 = may_write(s);
    if (r0 < 0)
        return r0;
    if (s->crypt && ((off | n) % QCRYPT_SECTOR))
        return write_sectors(img, off, buf, n);
    const uint8_t *p = buf;
    struct pending pd = { 0 };
    /* encrypted copies of the guest data: a merged COW writes them when linking */
    uint8_t **enc = NULL;
    size_t n_enc = 0;
    int r = 0;
    while (n && r == 0) {
        uint64_t cur = n < INT_MAX ? n : INT_MAX, host;
        struct metas ms = { 0 };
        r = alloc_host_offset(img, off, &cur, &host, &ms);
        if (r == 0)
            r = data_overlap_check(s, host, cur);
        if (r == 0 && pd.n >= QCOW2_MAX_WORKERS) {
            /* aio_task_pool_wait_slot: the earlier tasks finish first */
            r = link_pending(img, &pd);
        }
        if (r == 0)
            r = handle_alloc_space(img, &ms);
        const uint8_t *src = p;
        if (r == 0 && s->crypt) {
            /* qcow2_co_encrypt: IVs from the host offset (LUKS) or the guest's (AES) */
            uint8_t *c = xmalloc((size_t)cur);
            memcpy(c, p, (size_t)cur);
            qcrypt_encrypt(s->crypt, (s->crypt_physical ? host : off) / QCRYPT_SECTOR, c,
                           (size_t)cur);
            enc = xreallocarray(enc, n_enc + 1, sizeof(*enc));
            enc[n_enc++] = c;
            src = c;
        }
        if (r == 0 && !merge_cow(off, cur, src, &ms)) {
            qio_event(img->file, BLKDBG_WRITE_AIO); /* qcow2_co_pwritev_task */
            r = qio_pwrite(img->data_file, src, (size_t)cur, host);
        }
        if (r < 0) {
            handle_l2meta(img, &ms, false);
            free(ms.v);
            break;
        }
        if (pd.n == pd.cap) {
            pd.cap = pd.cap ? 2 * pd.cap : 4;
            pd.v = xreallocarray(pd.v, pd.cap, sizeof(*pd.v));
        }
        pd.v[pd.n++] = ms;
        off += cur;
        p += cur;
        n -= (size_t)cur;
    }
    int lr = link_pending(img, &pd);
    if (r == 0)
        r = lr;
    free(pd.v);
    for (size_t i = 0; i < n_enc; i++)
        free(enc[i]);
    free(enc);
    return r;
}

/* qemu's preallocate_co (metadata mode): clusters allocated and mapped over [off, end)
 * without writing guest data, then the file that holds them grown to their end. */
int qcow2_preallocate(image_t *img, uint64_t off, uint64_t end, char **errmsg)
{
    struct qcow2_state *s = img->priv;
    uint64_t host = 0, cur = 0;
    int r = 0;
    while (off < end) {
        uint64_t max = (uint64_t)INT_MAX & ~(s->cs - 1);
        cur = end - off < max ? end - off : max;
        struct metas ms = { 0 };
        r = alloc_host_offset(img, off, &cur, &host, &ms);
        if (r < 0) {
            handle_l2meta(img, &ms, false);
            free(ms.v);
            *errmsg = xasprintf("Allocating clusters failed: %s", strerror(-r));
            return r;
        }
        for (size_t i = 0; i < ms.n; i++)
            ms.v[i].prealloc = true;
        r = handle_l2meta(img, &ms, true);
        free(ms.v);
        if (r < 0) {
            *errmsg = xasprintf("Mapping clusters failed: %s", strerror(-r));
            return r;
        }
        off += cur;
    }
    uint64_t len;
    if ((r = qio_size(img->data_file, &len)) < 0) {
        *errmsg = xasprintf("Could not get file size: %s", strerror(-r));
        return r;
    }
    if (host + cur > len && (r = qio_truncate(img->data_file, host + cur)) < 0) {
        *errmsg = xasprintf("Could not resize file: %s", strerror(-r));
        return r;
    }
    return 0;
}

/* The L2 loop of qemu 7.2's qcow2_co_truncate for falloc/full preallocation: clusters
 * already allocated at host (contiguous) mapped from the cluster holding guest onwards,
 * one L2 table per step, the head of the first cluster copied (COW) from what the guest
 * saw there; prealloc: entries marked preallocated (no subcluster bits), else the
 * subclusters marked allocated (the file gave zeros, which must hide a backing file). */
int qcow2_link_preallocated(image_t *img, uint64_t guest, uint64_t host, uint64_t nb,
                            bool prealloc, char **errmsg)
{
    struct qcow2_state *s = img->priv;
    const unsigned cb = s->h.cluster_bits;
    while (nb) {
        uint64_t idx = (guest >> cb) & (s->h.l2_entries - 1);
        uint64_t n = nb < s->h.l2_entries - idx ? nb : s->h.l2_entries - idx;
        unsigned head = (unsigned)(guest & (s->cs - 1));
        uint64_t start = guest - head;
        struct l2meta m = {
            .alloc_offset = host, .offset = start, .nb_clusters = (unsigned)n,
            .prealloc = prealloc,
            .cow_start = { .offset = 0, .nb_bytes = head },
            .cow_end = { .offset = (unsigned)(n << cb), .nb_bytes = 0 },
        };
        struct metas ms = { .v = &m, .n = 1, .cap = 1 };
        int r = handle_l2meta(img, &ms, true);
        if (r < 0) {
            *errmsg = xasprintf("Failed to update L2 tables: %s", strerror(-r));
            if (nb > n)
                qcow2_free_clusters(&s->m, host + (n << cb), (nb - n) << cb,
                                    QCOW2_DISCARD_OTHER);
            return r;
        }
        guest = start + (n << cb);
        host += n << cb;
        nb -= n;
    }
    return 0;
}

int qcow2_flush(image_t *img)
{
    /* qemu's qcow2_write_caches: L2 tables, then refblocks unless lazy refcounts let them
     * wait (the dirty bit is set) */
    struct qcow2_state *s = img->priv;
    return qcow2_image_flush_caches(&s->m);
}

/* ---- discard and zero writes (qemu's qcow2_cluster_discard, qcow2_subcluster_zeroize) */

/* qemu's discard_in_l2_slice: the clusters of one table; returns how many. */
static int64_t discard_in_table(image_t *img, uint64_t off, uint64_t nb,
                                enum qcow2_discard_type type, bool full)
{
    struct qcow2_state *s = img->priv;
    uint8_t *t;
    uint64_t idx;
    int r = get_table(img, off, &t, &idx);
    if (r < 0)
        return r;
    if (nb > s->h.l2_entries - idx)
        nb = s->h.l2_entries - idx;
    uint64_t *old = xmalloc((size_t)nb * sizeof(*old));
    size_t nold = 0;
    for (uint64_t i = 0; i < nb; i++) {
        uint64_t oe = qcow2_l2_get(&s->m, t, idx + i), ob = qcow2_l2_get_bitmap(&s->m, t, idx + i);
        uint64_t ne = oe, nbm = ob;
        enum qcow2_cluster_type ct = qcow2_l2e_type(&s->geom, oe);
        if (full) {
            ne = nbm = 0;
        } else if (img->backing || qcow2_cluster_type_allocated(ct)) {
            if (s->geom.extended_l2) {
                ne = 0;
                nbm = QCOW2_L2_BITMAP_ALL_ZERO;
            } else {
                ne = s->h.version >= 3 ? QCOW2_OFLAG_ZERO : 0;
            }
        }
        if (oe == ne && ob == nbm)
            continue;
        qcow2_l2_set(&s->m, t, idx + i, ne);
        qcow2_l2_set_bitmap(&s->m, t, idx + i, nbm);
        qcow2_l2_mark_dirty(&s->m, t);
        old[nold++] = oe;
    }
    r = free_after_flush(s, old, nold, type);
    free(old);
    return r < 0 ? r : (int64_t)nb;
}

/* qemu's qcow2_cluster_discard: the freed clusters' discards are collected and passed
 * down merged at the end (s->cache_discards), not one cluster at a time */
static int cluster_discard(image_t *img, uint64_t off, uint64_t bytes,
                           enum qcow2_discard_type type, bool full)
{
    struct qcow2_state *s = img->priv;
    uint64_t nb = (bytes + s->cs - 1) >> s->h.cluster_bits;
    int r = 0;
    qcow2_discards_cache(&s->m);
    while (nb > 0 && r == 0) {
        int64_t k = discard_in_table(img, off, nb, type, full);
        if (k < 0) {
            r = (int)k;
            break;
        }
        nb -= (uint64_t)k;
        off += (uint64_t)k * s->cs;
    }
    qcow2_discards_process(&s->m, r);
    return r;
}

/* qemu's zero_in_l2_slice */
static int64_t zero_in_table(image_t *img, uint64_t off, uint64_t nb, bool may_unmap)
{
    struct qcow2_state *s = img->priv;
    uint8_t *t;
    uint64_t idx, idx0;
    int r = get_table(img, off, &t, &idx0);
    if (r < 0)
        return r;
    idx = idx0;
    if (nb > s->h.l2_entries - idx)
        nb = s->h.l2_entries - idx;
    uint64_t *old = xmalloc((size_t)nb * sizeof(*old));
    size_t nold = 0;
    for (uint64_t i = 0; i < nb; i++) {
        uint64_t oe = qcow2_l2_get(&s->m, t, idx + i), ob = qcow2_l2_get_bitmap(&s->m, t, idx + i);
        enum qcow2_cluster_type ct = qcow2_l2e_type(&s->geom, oe);
        bool unmap = ct == QCOW2_CLUSTER_COMPRESSED ||
                     (may_unmap && qcow2_cluster_type_allocated(ct));
        uint64_t ne = unmap ? 0 : oe, nbm = ob;
        if (s->geom.extended_l2)
            nbm = QCOW2_L2_BITMAP_ALL_ZERO;
        else
            ne |= QCOW2_OFLAG_ZERO;
        if (oe == ne && ob == nbm)
            continue;
        qcow2_l2_set(&s->m, t, idx + i, ne);
        qcow2_l2_set_bitmap(&s->m, t, idx + i, nbm);
        qcow2_l2_mark_dirty(&s->m, t);
        if (unmap)
            old[nold++] = oe;
    }
    r = free_after_flush(s, old, nold, QCOW2_DISCARD_REQUEST);
    free(old);
    return r < 0 ? r : (int64_t)nb;
}

/* qemu's zero_l2_subclusters: nsc subclusters from off inside one cluster */
static int zero_subclusters(image_t *img, uint64_t off, unsigned nsc)
{
    struct qcow2_state *s = img->priv;
    uint8_t *t;
    uint64_t idx;
    int r = get_table(img, off, &t, &idx);
    if (r < 0)
        return r;
    switch (qcow2_l2e_type(&s->geom, qcow2_l2_get(&s->m, t, idx))) {
    case QCOW2_CLUSTER_COMPRESSED:
        return -ENOTSUP;
    case QCOW2_CLUSTER_NORMAL:
    case QCOW2_CLUSTER_UNALLOCATED:
        break;
    default:
        return -EIO;
    }
    unsigned sc = sc_index(s, off);
    uint64_t ob = qcow2_l2_get_bitmap(&s->m, t, idx), bm = ob;
    for (unsigned k = sc; k < sc + nsc; k++)
        bm = (bm | QCOW2_SUB_ZERO(k)) & ~QCOW2_SUB_ALLOC(k);
    if (bm != ob) {
        qcow2_l2_set_bitmap(&s->m, t, idx, bm);
        qcow2_l2_mark_dirty(&s->m, t);
    }
    return 0;
}

/* Zeros over a data-file-raw range, as bdrv_co_pwrite_zeroes on the data file. */
static int zero_data_file(image_t *img, uint64_t off, uint64_t n, bool may_unmap)
{
    int r = posix_write_zeroes(img->data_file, off, n, may_unmap);
    if (r != -ENOTSUP)
        return r;
    const size_t chunk = 16u << 20;
    uint8_t *z = xcalloc(1, n < chunk ? (size_t)n : chunk);
    r = 0;
    while (n && r == 0) {
        size_t k = n < chunk ? (size_t)n : chunk;
        r = qio_pwrite(img->data_file, z, k, off);
        off += k;
        n -= k;
    }
    free(z);
    return r;
}

static int zeroize_v3(image_t *img, uint64_t off, uint64_t bytes, bool may_unmap);

/* qemu's qcow2_subcluster_zeroize (discards collected as in cluster_discard) */
static int subcluster_zeroize(image_t *img, uint64_t off, uint64_t bytes, bool may_unmap)
{
    struct qcow2_state *s = img->priv;
    int r;
    if (data_file_is_raw(s) && (r = zero_data_file(img, off, bytes, may_unmap)) < 0)
        return r;
    if (s->h.version < 3) {
        if (!img->backing)
            return cluster_discard(img, off, bytes, QCOW2_DISCARD_REQUEST, false);
        return -ENOTSUP;
    }
    qcow2_discards_cache(&s->m);
    r = zeroize_v3(img, off, bytes, may_unmap);
    qcow2_discards_process(&s->m, r);
    return r;
}

static int zeroize_v3(image_t *img, uint64_t off, uint64_t bytes, bool may_unmap)
{
    struct qcow2_state *s = img->priv;
    int r;
    const uint64_t cs = s->cs, size = img->size;
    uint64_t end = off + bytes;
    uint64_t up = (off + cs - 1) & ~(cs - 1);
    uint64_t head = (end < up ? end : up) - off;
    off += head;
    uint64_t ce = end & ~(cs - 1);
    uint64_t tail = end >= size ? 0 : end - (off > ce ? off : ce);
    end -= tail;
    unsigned sb = sc_bits(s);
    if (head && (r = zero_subclusters(img, off - head,
                                      (unsigned)((head + ((1u << sb) - 1)) >> sb))) < 0)
        return r;
    uint64_t nb = end > off ? (end - off + cs - 1) >> s->h.cluster_bits : 0;
    while (nb > 0) {
        int64_t k = zero_in_table(img, off, nb, may_unmap);
        if (k < 0)
            return (int)k;
        nb -= (uint64_t)k;
        off += (uint64_t)k * cs;
    }
    if (tail && (r = zero_subclusters(img, end, (unsigned)((tail + ((1u << sb) - 1)) >> sb))) < 0)
        return r;
    return 0;
}

int qcow2_discard_full(image_t *img, uint64_t off, uint64_t n)
{
    return cluster_discard(img, off, n, QCOW2_DISCARD_ALWAYS, true);
}

int qcow2_zeroize(image_t *img, uint64_t off, uint64_t n)
{
    return subcluster_zeroize(img, off, n, false);
}

/* qemu's is_zero: [off, off+n) (clamped to the size) reads as zeros by block status. */
static bool is_zero(image_t *img, uint64_t off, uint64_t n)
{
    if (off + n > img->size)
        n = off < img->size ? img->size - off : 0;
    if (!n)
        return true;
    block_status_t st;
    return image_block_status_above(img, NULL, off, n, &st) == 0 && (st.flags & BS_ZERO) &&
           st.pnum == n;
}

/* qemu's qcow2_co_pwrite_zeroes for one request of bdrv_co_do_pwrite_zeroes' loop (an
 * unaligned piece stays inside one subcluster). */
static int pwrite_zeroes(image_t *img, uint64_t off, uint64_t bytes, bool may_unmap)
{
    struct qcow2_state *s = img->priv;
    const uint64_t scs = (uint64_t)1 << sc_bits(s);
    uint64_t head = off & (scs - 1);
    uint64_t tail = ((off + bytes + scs - 1) & ~(scs - 1)) - (off + bytes);
    if (off + bytes == img->size)
        tail = 0;
    if (head || tail) {
        if (!(is_zero(img, off - head, head) && is_zero(img, off + bytes, tail)))
            return -ENOTSUP;
        off -= head;
        bytes = scs;
        struct qcow2_run run;
        int r = qcow2_get_run(img, off, scs, &run);
        if (r < 0)
            return r;
        if (run.type != QCOW2_SUBCLUSTER_UNALLOCATED_PLAIN &&
            run.type != QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC &&
            run.type != QCOW2_SUBCLUSTER_ZERO_PLAIN && run.type != QCOW2_SUBCLUSTER_ZERO_ALLOC)
            return -ENOTSUP;
    }
    return subcluster_zeroize(img, off, bytes, may_unmap);
}

/* bdrv_co_do_pwrite_zeroes' loop with qcow2's alignment (the subcluster): unaligned head
 * and tail pieces alone, each piece zeroed by qcow2 or, where it cannot (-ENOTSUP),
 * written as zero buffers of at most 16 MiB. */
static int qcow2_write_zeroes_op(image_t *img, uint64_t off, uint64_t n, bool may_unmap)
{
    struct qcow2_state *s = img->priv;
    int r0 = may_write(s);
    if (r0 < 0)
        return r0;
    const uint64_t align = (uint64_t)1 << sc_bits(s);
    const uint64_t max_transfer = 16u << 20;
    const uint64_t max_zero = (uint64_t)INT_MAX & ~(align - 1);
    uint64_t head = off % align, tail = (off + n) % align;
    uint8_t *zeros = NULL;
    int r = 0;
    while (n > 0 && r == 0) {
        uint64_t num = n;
        if (head) {
            num = n < max_transfer ? n : max_transfer;
            if (num > align - head)
                num = align - head;
            head = (head + num) % align;
        } else if (tail && num > align) {
            num -= tail;
        }
        if (num > max_zero)
            num = max_zero;
        r = pwrite_zeroes(img, off, num, may_unmap);
        if (r == -ENOTSUP) {
            if (num > max_transfer)
                num = max_transfer;
            if (!zeros)
                zeros = xcalloc(1, (size_t)max_transfer);
            r = qcow2_write_op(img, off, zeros, (size_t)num);
        }
        off += num;
        n -= num;
    }
    free(zeros);
    return r;
}

/* qemu's bdrv_co_pdiscard split at the cluster size, then qcow2_co_pdiscard: partial
 * clusters are ignored except a last one that ends the image. */
static int qcow2_discard_op(image_t *img, uint64_t off, uint64_t n)
{
    struct qcow2_state *s = img->priv;
    int r0 = may_write(s);
    if (r0 < 0)
        return r0;
    if (s->h.version < 3 && img->backing)
        return 0; /* -ENOTSUP, which bdrv_co_pdiscard ignores */
    const uint64_t cs = s->cs;
    uint64_t start = (off + cs - 1) & ~(cs - 1);
    uint64_t end = off + n == img->size ? off + n : (off + n) & ~(cs - 1);
    if (start >= end)
        return 0;
    return cluster_discard(img, start, end - start, QCOW2_DISCARD_REQUEST, false);
}

/* ---- compressed writes (qemu's qcow2_co_pwritev_compressed_part) ---- */

/* qemu's qcow2_alloc_compressed_cluster_offset: -EIO when the cluster is allocated */
static int alloc_compressed(image_t *img, uint64_t off, uint64_t len, uint64_t *host)
{
    struct qcow2_state *s = img->priv;
    uint8_t *t;
    uint64_t idx;
    int r = get_table(img, off, &t, &idx);
    if (r < 0)
        return r;
    if (qcow2_l2_get(&s->m, t, idx) & QCOW2_L2E_OFFSET_MASK)
        return -EIO;
    /* Deliberately better than qemu 7.2: qemu goes on packing into free_byte_offset's
     * cluster after that cluster was freed and taken again for other data (a data cluster,
     * a table), so the compressed bytes overwrite it and its refcount is too high (check:
     * "ERROR OFLAG_COPIED data cluster ... refcount=2"). Such a cluster is left; a freed
     * one not yet taken is packed into as qemu does. */
    uint64_t prc;
    if (s->packing_freed && s->free_byte_offset &&
        qcow2_image_refcount(&s->m, s->free_byte_offset >> s->h.cluster_bits, &prc) == 0 &&
        prc > 0)
        s->free_byte_offset = 0;
    int64_t co = qcow2_alloc_bytes(&s->m, len);
    s->packing_freed = false;
    if (co < 0)
        return (int)co;
    if ((r = get_table(img, off, &t, &idx)) < 0)
        return r;
    uint64_t nb_sectors = ((uint64_t)co + len - 1) / 512 - (uint64_t)co / 512;
    unsigned csize_shift = 62 - (s->h.cluster_bits - 8);
    uint64_t e = (uint64_t)co | QCOW2_OFLAG_COMPRESSED | (nb_sectors << csize_shift);
    qcow2_l2_set(&s->m, t, idx, e);
    qcow2_l2_set_bitmap(&s->m, t, idx, 0);
    qcow2_l2_mark_dirty(&s->m, t);
    *host = (uint64_t)co;
    return 0;
}

/* The write half of a compressed cluster: out/len is src (n bytes) compressed by
 * qcow2_compress, or len -ENOSPC when it does not shrink (written plainly, as qemu). */
static int store_compressed_cluster(image_t *img, uint64_t off, const uint8_t *src, size_t n,
                                    const uint8_t *out, ssize_t len)
{
    struct qcow2_state *s = img->priv;
    int r;
    uint64_t host = 0;
    if (len == -ENOSPC) {
        r = qcow2_write_op(img, off, src, n);
    } else if (len < 0) {
        r = -EINVAL;
    } else if ((r = alloc_compressed(img, off, (uint64_t)len, &host)) == 0 &&
               (r = qcow2_overlap_check(&s->m, 0, host, (uint64_t)len)) == 0) {
        r = qio_pwrite(img->data_file, out, (size_t)len, host);
    }
    return r;
}

static int write_compressed_cluster(image_t *img, uint64_t off, const uint8_t *src,
                                    size_t n)
{
    struct qcow2_state *s = img->priv;
    size_t cs = (size_t)s->cs;
    if (n != cs && (n > cs || off + n != img->size))
        return -EINVAL;
    uint8_t *in = xcalloc(1, cs), *out = xmalloc(cs);
    memcpy(in, src, n);
    ssize_t len = qcow2_compress(s->h.compression_type, out, in, cs);
    int r = store_compressed_cluster(img, off, src, n, out, len);
    free(in);
    free(out);
    return r;
}

static int qcow2_write_compressed_op(image_t *img, uint64_t off, const void *buf, size_t n)
{
    struct qcow2_state *s = img->priv;
    if (has_data_file(s))
        return -ENOTSUP;
    int r0 = may_write(s);
    if (r0 < 0)
        return r0;
    const uint64_t cs = s->cs;
    if (n == 0) {
        /* qemu aligns the file's end to a sector */
        uint64_t len;
        int r = qio_size(img->file, &len);
        if (r == 0 && (len & 511))
            r = qio_truncate(img->file, (len + 511) & ~(uint64_t)511);
        return r;
    }
    if (off & (cs - 1))
        return -EINVAL;
    if ((n & (cs - 1)) && off + n != img->size)
        return -EINVAL;
    const uint8_t *p = buf;
    while (n) {
        size_t k = n < cs ? n : (size_t)cs;
        int r = write_compressed_cluster(img, off, p, k);
        if (r < 0)
            return r;
        off += k;
        p += k;
        n -= k;
    }
    return 0;
}

/* ---- open and close of a writable image ---- */

/* The writer's state after a read-write open: a write-back L2 cache, the refcount table,
 * the allocator's start and qemu's discard defaults for an image opened with discard=unmap
 * (qemu-io's, and qimg's: qcow2_update_options' pass-discard-request/-snapshot on, -other
 * off). */
int qcow2_writer_init(image_t *img, char **errmsg)
{
    struct qcow2_state *s = img->priv;
    qcow2_l2_cache_init(&s->m, true);
    int r = qcow2_image_load_reftable(&s->m);
    if (r < 0) {
        *errmsg = xasprintf("Could not read refcount table: %s", strerror(-r));
        return r;
    }
    s->free_cluster_index = 0;
    s->free_byte_offset = 0;
    s->discard_passthrough[QCOW2_DISCARD_NEVER] = false;
    s->discard_passthrough[QCOW2_DISCARD_ALWAYS] = true;
    s->discard_passthrough[QCOW2_DISCARD_REQUEST] = true;
    s->discard_passthrough[QCOW2_DISCARD_SNAPSHOT] = true;
    s->discard_passthrough[QCOW2_DISCARD_OTHER] = false;
    /* the model's cache hooks (qcow2_image_flush_caches, _inactivate: qemu's
     * qcow2_write_caches order, L2 tables then refblocks) */
    s->m.l2_flush = qcow2_l2_flush;
    s->m.rb_flush = qcow2_refcount_flush;
    return 0;
}

/* bdrv_close's flush after qcow2_inactivate (which wrote the caches through the model's
 * hooks): the files reach the disk (a file system reports fallocated ranges differently
 * while their pages are dirty). */
void qcow2_writer_close(image_t *img)
{
    struct qcow2_state *s = img->priv;
    if (!(img->flags & IMG_OPEN_RDWR) || img->broken || !s->l2cache || !s->l2cache->writable)
        return;
    (void)qio_flush(img->file);
    if (img->data_file && img->data_file != img->file)
        (void)qio_flush(img->data_file);
}

/* Each request marks its whole range in the enabled persistent bitmaps, failed or not, as
 * qemu's bdrv_co_write_req_finish does for writes, zero writes and discards. */
static int dirty(image_t *img, uint64_t off, uint64_t n, int r)
{
    struct qcow2_state *s = img->priv;
    qcow2_bitmaps_set_dirty(&s->m, off, n);
    return r;
}

int qcow2_write(image_t *img, uint64_t off, const void *buf, size_t n)
{
    return after_corruption(img, dirty(img, off, n, qcow2_write_op(img, off, buf, n)));
}

int qcow2_write_zeroes(image_t *img, uint64_t off, uint64_t n, bool may_unmap)
{
    return after_corruption(img, dirty(img, off, n,
                                       qcow2_write_zeroes_op(img, off, n, may_unmap)));
}

int qcow2_discard(image_t *img, uint64_t off, uint64_t n)
{
    return after_corruption(img, dirty(img, off, n, qcow2_discard_op(img, off, n)));
}

int qcow2_write_compressed(image_t *img, uint64_t off, const void *buf, size_t n)
{
    return after_corruption(img, dirty(img, off, n,
                                       qcow2_write_compressed_op(img, off, buf, n)));
}

/* ---- compression on the caller's threads (block/compress_write.h) ---- */

int image_compress_params(image_t *img, unsigned *type, size_t *cluster)
{
    if (img->drv != &qcow2_driver)
        return -ENOTSUP;
    struct qcow2_state *s = img->priv;
    if (has_data_file(s))
        return -ENOTSUP;
    *type = s->h.compression_type;
    *cluster = (size_t)s->cs;
    return 0;
}

int image_write_precompressed(image_t *img, uint64_t off, const void *buf, size_t n,
                              const void *cbuf, ssize_t clen)
{
    int r = image_check_request(img, off, n);
    if (r < 0)
        return r;
    if (img->broken)
        return -ENOMEDIUM;
    if (!(img->flags & IMG_OPEN_RDWR))
        return -EPERM;
    struct qcow2_state *s = img->priv;
    if (has_data_file(s))
        return -ENOTSUP;
    if ((r = may_write(s)) < 0)
        return r;
    const uint64_t cs = s->cs;
    if ((off & (cs - 1)) || (n != cs && (n > cs || off + n != img->size)))
        return -EINVAL;
    return after_corruption(img, dirty(img, off, n,
                                       store_compressed_cluster(img, off, buf, n, cbuf, clen)));
}
