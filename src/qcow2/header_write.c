/* Writing the qcow2 header from the model (see header_write.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "format/be.h"
#include "format/qcow2_ext.h"
#include "qcow2/bitmap_store.h"
#include "qcow2/header_write.h"
#include "qcow2/port.h"
#include "util/err.h"
#include "util/xalloc.h"

/* qemu writes the header with bdrv_pwrite on the image file, outside the overlap check:
 * the write may overlap every class. */
#define HEADER_IGN QCOW2_OL_ALL

/* The bytes [off, off+len) of cluster 0 as read at open; zeros where it held none. */
static void c0_copy(const struct qcow2_image *m, uint64_t off, uint64_t len, uint8_t *dst)
{
    memset(dst, 0, len);
    if (!m->c0 || off >= m->c0_len)
        return;
    uint64_t n = m->c0_len - off < len ? m->c0_len - off : len;
    memcpy(dst, m->c0 + off, n);
}

/* qemu's feature table (qcow2_update_header): its eight names in its order, which is the
 * order of type then bit in qcow2_feature_name's table. */
static int add_feature_table(uint8_t *buf, size_t len, size_t *pos)
{
    uint8_t t[8 * QCOW2_FEATURE_ENTRY_SIZE];
    size_t n = 0;
    memset(t, 0, sizeof(t));
    for (unsigned type = 0; type <= 2; type++) {
        for (unsigned bit = 0; bit < 64; bit++) {
            const char *name = qcow2_feature_name(type, bit);
            if (!name || n == 8)
                continue;
            uint8_t *e = t + n++ * QCOW2_FEATURE_ENTRY_SIZE;
            e[0] = (uint8_t)type;
            e[1] = (uint8_t)bit;
            memcpy(e + 2, name, strlen(name)); /* <= 46 bytes, NUL padded */
        }
    }
    return qcow2_ext_encode(buf, len, pos, QCOW2_EXT_FEATURE_TABLE, t,
                            (uint32_t)(n * QCOW2_FEATURE_ENTRY_SIZE));
}

int qcow2_header_build(const struct qcow2_image *m, uint8_t *buf, size_t len,
                       uint64_t *backing_off, uint32_t *backing_size)
{
    struct qcow2_header h = m->h;
    int rc;

    *backing_off = 0;
    *backing_size = 0;
    memset(buf, 0, len);
    /* qemu writes bs->total_sectors * 512 and its own header length */
    h.size = m->h.size & ~(uint64_t)511;
    h.backing_file_offset = 0;
    h.backing_file_size = 0;
    if (h.version >= 3)
        h.header_length = QCOW2_HDR_V3_LEN + m->h.unknown_len;
    rc = qcow2_header_encode(&h, buf, len);
    if (rc < 0)
        return rc;
    size_t pos = (size_t)rc;
    if (h.version >= 3 && m->h.unknown_len) {
        if (len - pos < m->h.unknown_len)
            return -ENOSPC;
        c0_copy(m, m->h.unknown_offset, m->h.unknown_len, buf + pos);
        pos += m->h.unknown_len;
    }
    const struct qcow2_ext *x = &m->ext;
    if (x->has_backing_format &&
        (rc = qcow2_ext_encode(buf, len, &pos, QCOW2_EXT_BACKING_FORMAT, x->backing_format,
                               (uint32_t)strlen(x->backing_format))) < 0)
        return rc;
    /* qemu keeps the names as C strings: an inner NUL ends them */
    if ((h.incompatible_features & QCOW2_INCOMPAT_DATA_FILE) && x->has_data_file &&
        (rc = qcow2_ext_encode(buf, len, &pos, QCOW2_EXT_DATA_FILE, x->data_file,
                               (uint32_t)strlen(x->data_file))) < 0)
        return rc;
    if (x->has_crypto && x->crypto_offset) {
        uint8_t c[QCOW2_CRYPTO_EXT_SIZE];
        be64_put(c, x->crypto_offset);
        be64_put(c + 8, x->crypto_length);
        if ((rc = qcow2_ext_encode(buf, len, &pos, QCOW2_EXT_CRYPTO, c, sizeof(c))) < 0)
            return rc;
    }
    /* qemu leaves the table out for clusters of 4 KiB and less (room for a backing name) */
    if (h.version >= 3 && m->cs > 4096 && (rc = add_feature_table(buf, len, &pos)) < 0)
        return rc;
    if (x->has_bitmaps && x->nb_bitmaps > 0) {
        uint8_t b[QCOW2_BITMAPS_EXT_SIZE];
        be32_put(b, x->nb_bitmaps);
        be32_put(b + 4, 0);
        be64_put(b + 8, x->bitmap_directory_size);
        be64_put(b + 16, x->bitmap_directory_offset);
        if ((rc = qcow2_ext_encode(buf, len, &pos, QCOW2_EXT_BITMAPS, b, sizeof(b))) < 0)
            return rc;
    }
    for (size_t i = x->n_unknown; i-- > 0;) {
        const struct qcow2_ext_loc *u = &x->unknown[i];
        uint8_t *d = xmalloc(u->len ? u->len : 1); /* len < one cluster (parsed in it) */
        c0_copy(m, u->offset + 8, u->len, d);
        rc = qcow2_ext_encode(buf, len, &pos, u->magic, d, u->len);
        free(d);
        if (rc < 0)
            return rc;
    }
    if ((rc = qcow2_ext_encode(buf, len, &pos, QCOW2_EXT_END, NULL, 0)) < 0)
        return rc;
    /* qemu's image_backing_file: set whenever the header had a name offset, even an empty
     * name; a C string */
    if (m->h.backing_file_offset) {
        const char *name = m->backing_name ? m->backing_name : "";
        size_t n = strlen(name);
        if (len - pos < n)
            return -ENOSPC;
        memcpy(buf + pos, name, n);
        *backing_off = pos;
        *backing_size = (uint32_t)n;
        be64_put(buf + QCOW2_OFF_BACKING_OFFSET, pos);
        be32_put(buf + QCOW2_OFF_BACKING_SIZE, (uint32_t)n);
    }
    return 0;
}

void qcow2_header_diff(const uint8_t *cur, const uint8_t *new, size_t cs, uint64_t file_size,
                       size_t *from, size_t *to)
{
    size_t a = 0, b = cs;
    while (a < cs && cur[a] == new[a])
        a++;
    while (b > a && cur[b - 1] == new[b - 1])
        b--;
    if (file_size < cs) {
        /* qemu's whole-cluster write makes the file at least one cluster long */
        if (a == b)
            a = file_size;
        b = cs;
    }
    *from = a;
    *to = b;
}

bool qcow2_header_open_update(struct qcow2_image *m)
{
    bool update = false;
    if (m->h.autoclear_features & ~QCOW2_AUTOCLEAR_MASK) {
        m->h.autoclear_features &= QCOW2_AUTOCLEAR_MASK;
        update = true;
    }
    if (m->ext.bitmaps_ignored) {
        /* qemu's qcow2_read_extensions asks for the update; its rewrite has no bitmaps */
        m->ext.bitmaps_ignored = false;
        update = true;
    }
    return update;
}

int qcow2_image_update_header(struct qcow2_image *m)
{
    if (m->cs < QCOW2_HDR_V3_LEN || m->cs > ((size_t)1 << QCOW2_MAX_CLUSTER_BITS))
        return -EINVAL;
    size_t cs = (size_t)m->cs;
    uint8_t *cur = xmalloc(cs), *new = xmalloc(cs);
    uint64_t boff;
    uint32_t bsize;
    int rc = qcow2_header_build(m, new, cs, &boff, &bsize);
    uint64_t fsize = 0;
    if (rc == 0)
        rc = qio_size(m->q, &fsize);
    if (rc == 0)
        rc = qio_pread(m->q, cur, cs, 0); /* zeros past EOF */
    if (rc == 0) {
        size_t a, b;
        qcow2_header_diff(cur, new, cs, fsize, &a, &b);
        if (b > a)
            rc = qcow2_meta_pwrite(m, HEADER_IGN, a, new + a, b - a);
    }
    if (rc == 0) {
        /* the model follows the header it wrote */
        if (m->h.version >= 3)
            m->h.header_length = QCOW2_HDR_V3_LEN + m->h.unknown_len;
        m->h.size &= ~(uint64_t)511;
        m->h.backing_file_offset = boff;
        m->h.backing_file_size = bsize;
        m->h.ext_end = boff ? boff : m->cs;
        if (fsize < cs)
            m->file_size = cs > m->file_size ? cs : m->file_size;
    }
    free(cur);
    free(new);
    return rc;
}

int qcow2_image_activate(struct qcow2_image *m, char **errmsg)
{
    bool update = qcow2_header_open_update(m), updated;
    /* qcow2_load_dirty_bitmaps: its in-place directory update rewrites the header too */
    char *msg = NULL;
    int rc = qcow2_bitmaps_load_rw(m, &updated, &msg);
    if (rc < 0) {
        if (errmsg)
            *errmsg = msg;
        else
            free(msg);
        return rc;
    }
    if (!update || updated)
        return 0;
    rc = qcow2_image_update_header(m);
    if (rc < 0)
        *errmsg = xasprintf("Could not update qcow2 header: %s", strerror(-rc));
    return rc;
}

int qcow2_image_may_write(const struct qcow2_image *m)
{
    (void)m;
    return 0;
}

int qcow2_image_mark_dirty(struct qcow2_image *m)
{
    if (m->h.version < 3)
        return -ENOTSUP; /* qemu asserts: lazy refcounts exist only in v3 */
    if (m->h.incompatible_features & QCOW2_INCOMPAT_DIRTY)
        return 0;
    uint8_t b[8];
    be64_put(b, m->h.incompatible_features | QCOW2_INCOMPAT_DIRTY);
    int rc = qcow2_meta_pwrite(m, HEADER_IGN, QCOW2_OFF_INCOMPAT, b, sizeof(b));
    if (rc == 0)
        rc = qcow2_meta_flush(m);
    if (rc == 0)
        m->h.incompatible_features |= QCOW2_INCOMPAT_DIRTY;
    return rc;
}

int qcow2_image_flush_caches(struct qcow2_image *m)
{
    int rc = m->l2_flush ? m->l2_flush(m) : 0;
    if (rc == 0 && m->rb_flush && qcow2_image_need_accurate_refcounts(m))
        rc = m->rb_flush(m);
    if (rc == 0)
        rc = qcow2_meta_flush(m);
    return rc;
}

int qcow2_image_mark_clean(struct qcow2_image *m)
{
    if (!(m->h.incompatible_features & QCOW2_INCOMPAT_DIRTY))
        return 0;
    /* as qemu: the bit goes first, so that the refcount blocks are written too */
    m->h.incompatible_features &= ~QCOW2_INCOMPAT_DIRTY;
    int rc = qcow2_image_flush_caches(m);
    if (rc < 0)
        return rc;
    return qcow2_image_update_header(m);
}

int qcow2_image_mark_corrupt(struct qcow2_image *m)
{
    m->h.incompatible_features |= QCOW2_INCOMPAT_CORRUPT;
    return qcow2_image_update_header(m);
}

int qcow2_image_mark_consistent(struct qcow2_image *m)
{
    if (!(m->h.incompatible_features & QCOW2_INCOMPAT_CORRUPT))
        return 0;
    int rc = qcow2_image_flush_caches(m);
    if (rc < 0)
        return rc;
    m->h.incompatible_features &= ~QCOW2_INCOMPAT_CORRUPT;
    return qcow2_image_update_header(m);
}

int qcow2_image_inactivate(struct qcow2_image *m)
{
    int result = 0, rc;
    if (!m->active)
        return 0;
    m->active = false;
    /* qemu stores the persistent bitmaps first (qcow2_store_persistent_dirty_bitmaps);
     * a failure loses them (their autoclear bit or IN_USE flags say so), as in qemu */
    char *msg = NULL;
    if (qcow2_bitmaps_store(m, &msg) < 0)
        err_report("Lost persistent bitmaps during inactivation of node '%s': %s",
                   m->filename ? m->filename : "", msg ? msg : "");
    free(msg);
    if (m->l2_flush && (rc = m->l2_flush(m)) < 0) {
        result = rc;
        err_report("Failed to flush the L2 table cache: %s", strerror(-rc));
    }
    if (m->rb_flush && (rc = m->rb_flush(m)) < 0) {
        result = rc;
        err_report("Failed to flush the refcount block cache: %s", strerror(-rc));
    }
    if (result == 0 && (m->l2_flush || m->rb_flush))
        result = qcow2_meta_flush(m);
    if (result == 0)
        result = qcow2_image_mark_clean(m);
    return result;
}
