/* qcow2 guest-to-host mapping: L1 lookup through the model's L2 cache (qcow2/l2.h),
 * qemu's run counting (qcow2_get_host_offset + count_contiguous_subclusters) and block
 * status. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "block/qcow2_int.h"
#include "format/be.h"
#include "format/qcow2_refcount.h"
#include "qcow2/l2.h"
#include "qcow2/refcount.h"
#include "qcow2/table.h"
#include "util/xalloc.h"

void qcow2_map_free(struct qcow2_state *s)
{
    qcow2_l2_cache_free(&s->m);
}

static inline uint64_t l2_entry(const struct qcow2_state *s, const uint8_t *t, uint64_t i)
{
    return be64_get(t + i * s->h.l2_entry_size);
}

static inline uint64_t l2_bitmap(const struct qcow2_state *s, const uint8_t *t, uint64_t i)
{
    return s->geom.extended_l2 ? be64_get(t + i * 16 + 8) : 0;
}

static unsigned cto32(uint32_t v) { return v == UINT32_MAX ? 32 : (unsigned)__builtin_ctz(~v); }
static unsigned ctz32(uint32_t v) { return v == 0 ? 32 : (unsigned)__builtin_ctz(v); }

/* qemu's QCOW_OFLAG_SUB_ALLOC_RANGE(0, n): bits [0, n) */
static inline uint32_t low_bits(unsigned n) { return n >= 32 ? UINT32_MAX : (1u << n) - 1; }

/* qemu's qcow2_get_subcluster_range_type(): subclusters of the same type from sc_from. */
int qcow2_range_type(const struct qcow2_state *s, uint64_t entry, uint64_t bitmap,
                      unsigned sc_from, enum qcow2_subcluster_type *type)
{
    *type = qcow2_l2e_subcluster_type(&s->geom, entry, bitmap, sc_from);
    if (*type == QCOW2_SUBCLUSTER_INVALID)
        return -EINVAL;
    if (!s->geom.extended_l2 || *type == QCOW2_SUBCLUSTER_COMPRESSED)
        return (int)(s->h.subclusters_per_cluster - sc_from);
    uint32_t alloc = (uint32_t)bitmap, zero = (uint32_t)(bitmap >> 32);
    switch (*type) {
    case QCOW2_SUBCLUSTER_NORMAL:
        return (int)(cto32(alloc | low_bits(sc_from)) - sc_from);
    case QCOW2_SUBCLUSTER_ZERO_PLAIN:
    case QCOW2_SUBCLUSTER_ZERO_ALLOC:
        return (int)(cto32(zero | low_bits(sc_from)) - sc_from);
    default: /* UNALLOCATED_PLAIN / UNALLOCATED_ALLOC */
        return (int)(ctz32((zero | alloc) & ~low_bits(sc_from)) - sc_from);
    }
}

/* qemu's count_contiguous_subclusters(); *bad gets the index of an invalid entry. */
static int count_run(const struct qcow2_state *s, const uint8_t *t, uint64_t nb_clusters,
                     unsigned sc_index, uint64_t l2_index, uint64_t *bad)
{
    int count = 0;
    bool check_offset = false;
    uint64_t expected_offset = 0;
    enum qcow2_subcluster_type expected = QCOW2_SUBCLUSTER_NORMAL, type;
    for (uint64_t i = 0; i < nb_clusters; i++) {
        unsigned first_sc = i == 0 ? sc_index : 0;
        uint64_t e = l2_entry(s, t, l2_index + i);
        int ret = qcow2_range_type(s, e, l2_bitmap(s, t, l2_index + i), first_sc, &type);
        if (ret < 0) {
            *bad = l2_index + i;
            return -EIO;
        }
        if (i == 0) {
            if (type == QCOW2_SUBCLUSTER_COMPRESSED)
                return ret;
            expected = type;
            expected_offset = e & QCOW2_L2E_OFFSET_MASK;
            check_offset = type == QCOW2_SUBCLUSTER_NORMAL ||
                           type == QCOW2_SUBCLUSTER_ZERO_ALLOC ||
                           type == QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC;
        } else if (type != expected) {
            break;
        } else if (check_offset) {
            expected_offset += s->h.cluster_size;
            if (expected_offset != (e & QCOW2_L2E_OFFSET_MASK))
                break;
        }
        count += ret;
        if (first_sc + (unsigned)ret < s->h.subclusters_per_cluster)
            break; /* type changes inside this cluster */
    }
    return count;
}

int qcow2_get_run(image_t *img, uint64_t off, uint64_t bytes, struct qcow2_run *run)
{
    struct qcow2_state *s = img->priv;
    const unsigned cb = s->h.cluster_bits;
    const uint64_t cs = s->h.cluster_size;
    uint64_t in_cluster = off & (cs - 1);
    if (bytes > INT_MAX)
        bytes = INT_MAX; /* qemu works in int-sized requests */
    uint64_t needed = bytes + in_cluster;
    uint64_t l2_index = (off >> cb) & (s->h.l2_entries - 1);
    uint64_t available = (s->h.l2_entries - l2_index) << cb;
    if (needed > available)
        needed = available;

    run->host = 0;
    run->type = QCOW2_SUBCLUSTER_UNALLOCATED_PLAIN;
    uint64_t l1_index = off >> (cb + s->h.l2_bits);
    uint64_t l2_offset = l1_index < s->h.l1_size ? s->l1[l1_index] & QCOW2_L1E_OFFSET_MASK : 0;
    if (l2_offset) {
        if (l2_offset & (cs - 1)) {
            image_corrupt(img, "L2 table offset %#llx unaligned (L1 index: %#llx)",
                          (unsigned long long)l2_offset, (unsigned long long)l1_index);
            return -EIO;
        }
        uint8_t *t;
        int r = qcow2_l2_load(&s->m, l2_offset, &t);
        if (r < 0)
            return r;
        unsigned sc_index = (unsigned)((off & (cs - 1)) >> (cb - (s->geom.extended_l2 ? 5 : 0)));
        uint64_t entry = l2_entry(s, t, l2_index), bitmap = l2_bitmap(s, t, l2_index);
        enum qcow2_subcluster_type type =
            qcow2_l2e_subcluster_type(&s->geom, entry, bitmap, sc_index);
        if (s->h.version < 3 &&
            (type == QCOW2_SUBCLUSTER_ZERO_PLAIN || type == QCOW2_SUBCLUSTER_ZERO_ALLOC)) {
            image_corrupt(img, "Zero cluster entry found in pre-v3 image (L2 offset: %#llx, "
                          "L2 index: %#x)", (unsigned long long)l2_offset, (unsigned)l2_index);
            return -EIO;
        }
        if (type == QCOW2_SUBCLUSTER_COMPRESSED) {
            if (s->geom.data_file) {
                image_corrupt(img, "Compressed cluster entry found in image with external "
                              "data file (L2 offset: %#llx, L2 index: %#x)",
                              (unsigned long long)l2_offset, (unsigned)l2_index);
                return -EIO;
            }
            run->host = entry;
        } else if (type == QCOW2_SUBCLUSTER_ZERO_ALLOC || type == QCOW2_SUBCLUSTER_NORMAL ||
                   type == QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC) {
            uint64_t hc = entry & QCOW2_L2E_OFFSET_MASK;
            run->host = hc + in_cluster;
            if (hc & (cs - 1)) {
                image_corrupt(img, "Cluster allocation offset %#llx unaligned (L2 offset: "
                              "%#llx, L2 index: %#x)", (unsigned long long)hc,
                              (unsigned long long)l2_offset, (unsigned)l2_index);
                return -EIO;
            }
            if (s->geom.data_file && run->host != off) {
                image_corrupt(img, "External data file host cluster offset %#llx does not "
                              "match guest cluster offset: %#llx, L2 index: %#x)",
                              (unsigned long long)hc, (unsigned long long)(off - in_cluster),
                              (unsigned)l2_index);
                return -EIO;
            }
        }
        uint64_t nb_clusters = (needed + cs - 1) >> cb;
        uint64_t bad = l2_index;
        int sc = count_run(s, t, nb_clusters, sc_index, l2_index, &bad);
        if (sc < 0) {
            image_corrupt(img, "Invalid cluster entry found  (L2 offset: %#llx, L2 index: %#x)",
                          (unsigned long long)l2_offset, (unsigned)bad);
            return -EIO;
        }
        run->type = type;
        available = ((uint64_t)sc + sc_index) << (cb - (s->geom.extended_l2 ? 5 : 0));
    }
    if (available > needed)
        available = needed;
    run->bytes = available - in_cluster;
    return 0;
}

/* qemu's qcow2_get_refcount() for cluster k (0 when not covered), through the model. */
static int get_refcount(image_t *img, uint64_t k, uint64_t *out)
{
    struct qcow2_state *s = img->priv;
    int r = qcow2_image_refcount(&s->m, k, out);
    uint64_t ti = k >> s->h.refcount_block_bits;
    if (r == -EIO && ti < s->rt_loaded &&
        (s->rt[ti] & QCOW2_REFT_OFFSET_MASK & (s->h.cluster_size - 1)))
        image_corrupt(img, "Refblock offset %#llx unaligned (reftable index: %#llx)",
                      (unsigned long long)(s->rt[ti] & QCOW2_REFT_OFFSET_MASK),
                      (unsigned long long)ti);
    return r;
}

/* The reftable and the refblock cache: needed for this detection only, so a layer of a
 * deep chain keeps no copy. */
static void drop_refcounts(struct qcow2_state *s)
{
    if (s->l2cache && s->l2cache->writable)
        return; /* a writable image keeps them: its allocator works on them */
    free(s->rt);
    s->rt = NULL;
    s->rt_loaded = 0;
    qcow2_rb_cache_free(&s->rb);
}

/* qemu's qcow2_detect_metadata_preallocation(): at least threshold refcounted clusters
 * (threshold = max(real * 10 / 9, real + 2), real = allocated bytes / cluster size) means
 * metadata preallocation; equal counts too (measured: 7 refcounted clusters in a file
 * holding 5 are detected). Returns 1, 0 or -errno. */
static int detect_prealloc(image_t *img)
{
    struct qcow2_state *s = img->priv;
    uint64_t file_len, real;
    int r = qio_size(img->file, &file_len);
    if (r < 0 || (r = qio_allocated(img->file, &real)) < 0)
        return r;
    if ((r = qcow2_image_load_reftable(&s->m)) < 0) {
        drop_refcounts(s);
        return r;
    }
    int64_t real_clusters = (int64_t)(real / s->h.cluster_size);
    int64_t threshold = real_clusters * 10 / 9;
    if (threshold < real_clusters + 2)
        threshold = real_clusters + 2;
    uint64_t end = (file_len + s->h.cluster_size - 1) >> s->h.cluster_bits;
    int64_t count = 0;
    for (uint64_t i = 0; i < end && count < threshold; i++) {
        uint64_t rc;
        r = get_refcount(img, i, &rc);
        if (r < 0)
            break;
        count += rc != 0;
    }
    drop_refcounts(s);
    return r < 0 ? r : count >= threshold;
}

int qcow2_block_status(image_t *img, uint64_t off, uint64_t bytes, block_status_t *st)
{
    struct qcow2_state *s = img->priv;
    if (s->prealloc < 0)
        s->prealloc = detect_prealloc(img) == 1;
    struct qcow2_run run;
    int r = qcow2_get_run(img, off, bytes, &run);
    if (r < 0)
        return r;
    st->pnum = run.bytes;
    unsigned f = 0;
    if ((run.type == QCOW2_SUBCLUSTER_NORMAL || run.type == QCOW2_SUBCLUSTER_ZERO_ALLOC ||
         run.type == QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC) && s->h.crypt_method == 0) {
        st->map = run.host;
        st->file = img->data_file;
        st->filename = img->data_file_name ? img->data_file_name
                      : image_file_name(img);
        f |= BS_OFFSET_VALID;
    }
    if (run.type == QCOW2_SUBCLUSTER_ZERO_PLAIN || run.type == QCOW2_SUBCLUSTER_ZERO_ALLOC)
        f |= BS_ZERO;
    else if (run.type != QCOW2_SUBCLUSTER_UNALLOCATED_PLAIN &&
             run.type != QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC)
        f |= BS_DATA;
    if (s->prealloc && (f & BS_DATA) && (f & BS_OFFSET_VALID))
        f |= BS_RECURSE;
    st->flags = f;
    return 0;
}
