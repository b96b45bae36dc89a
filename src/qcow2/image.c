/* Opening the one qcow2 model (see image.h): qemu's qcow2_do_open order and messages. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "format/be.h"
#include "io/lock.h"
#include "qcow2/bitmap_store.h"
#include "qcow2/image.h"
#include "qcow2/l2.h"
#include "qcow2/table.h"
#include "qcow2/overlap.h"
#include "util/err.h"
#include "util/xalloc.h"

static int fail_fmt(char **errmsg, const struct fmt_error *e, int rc)
{
    char tmp[FMT_ERROR_MSG_MAX + 64];
    *errmsg = xstrdup(fmt_error_user_msg(e, tmp, sizeof(tmp)));
    return rc < 0 ? rc : -EINVAL;
}

static int fail_msg(char **errmsg, int rc, const char *msg)
{
    *errmsg = xstrdup(msg);
    return rc;
}

/* Cluster 0, at most one (validated) cluster; bytes past EOF read as zero. */
static int read_cluster0(struct qcow2_image *m, bool check, uint8_t **out, size_t *len,
                         char **errmsg)
{
    uint8_t first[QCOW2_HDR_V3_LEN];
    int rc = qio_pread(m->q, first, sizeof(first), 0);
    size_t blen = sizeof(first);
    if (rc == 0) {
        uint32_t cb = be32_get(first + QCOW2_OFF_CLUSTER_BITS);
        if (cb >= QCOW2_MIN_CLUSTER_BITS && cb <= QCOW2_MAX_CLUSTER_BITS)
            blen = (size_t)1 << cb;
    }
    uint8_t *buf = xmalloc(blen);
    if (rc == 0)
        rc = qio_pread(m->q, buf, blen, 0);
    if (rc < 0) {
        free(buf);
        *errmsg = check ? xstrdup(strerror(-rc))
                        : xasprintf("Could not read qcow2 header: %s", strerror(-rc));
        return rc;
    }
    *out = buf;
    *len = blen;
    return 0;
}

/* qcow2_do_open's data file step (qemu 7.2 opens the stored name as given, relative to the
 * working directory, unlike a backing file name). */
static int open_data_file(struct qcow2_image *m, const struct qcow2_open_opts *o,
                          char **errmsg)
{
    if (!(m->h.incompatible_features & QCOW2_INCOMPAT_DATA_FILE)) {
        if (!o->no_io && (m->h.autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW))
            return fail_msg(errmsg, -EINVAL, "data-file-raw requires a data file");
        return 0;
    }
    /* qemu-img info (NO_IO) never opens the data file (its name comes from the header): a
     * missing name or file, a FIFO or a directory there does not matter to it */
    if (o->no_io)
        return 0;
    if (!m->ext.has_data_file && !o->data_file)
        return fail_msg(errmsg, -EINVAL, "'data-file' is required for this image");
    if (m->data) {
        m->has_data_file = true; /* a reload (qcow2_image_reload) keeps the open file */
        return 0;
    }
    const char *name = o->data_file ? o->data_file : m->ext.data_file;
    /* a name that starts with a NUL byte is "" to qemu (the extension is read as a C
     * string), and its file driver needs one (bdrv_open_common) */
    if (!name[0])
        return fail_msg(errmsg, -EINVAL, "The 'file' block driver requires a file name");
    qio_t *d;
    int rc = qio_open_image(name, o->data_flags, &d, errmsg);
    if (rc < 0)
        return rc;
    rc = qio_lock_data_file(d, o->data_lock_write, (o->data_flags & QIO_SHARE) != 0, name,
                            errmsg);
    if (rc < 0) {
        qio_close(d);
        return rc;
    }
    m->data = d;
    m->has_data_file = true;
    return 0;
}

/* flags QCOW2_TABLE_PAD: the whole table (the writer's), rt_loaded = rt_entries */
static int load_reftable(struct qcow2_image *m, unsigned flags)
{
    if (m->rt)
        return 0;
    m->rt_entries = m->h.reftable_entries;
    int rc = qcow2_table_load(m->q, m->file_size, m->h.refcount_table_offset, m->rt_entries,
                              flags, &m->rt, &m->rt_loaded);
    if (rc == 0 && (flags & QCOW2_TABLE_PAD))
        m->rt_loaded = m->rt_entries;
    return rc;
}

int qcow2_image_load_reftable(struct qcow2_image *m)
{
    return load_reftable(m, 0);
}

int qcow2_image_open(struct qcow2_image *m, qio_t *q, const char *filename,
                     const struct qcow2_open_opts *o, char **errmsg)
{
    bool salvage = o->mode == QCOW2_MODE_SALVAGE;
    bool check = o->mode == QCOW2_MODE_CHECK || salvage;
    struct fmt_error e;
    int rc;

    m->q = q;
    m->filename = filename;
    rc = qio_size(q, &m->file_size);
    if (rc < 0) {
        *errmsg = check ? xstrdup(strerror(-rc))
                        : xasprintf("Could not get the size of '%s': %s", filename,
                                    strerror(-rc));
        return rc;
    }
    uint8_t *buf;
    size_t blen;
    if ((rc = read_cluster0(m, check, &buf, &blen, errmsg)) < 0)
        return rc;

    fmt_error_clear(&e);
    unsigned hflags = check ? QCOW2_HDR_CHECK : o->mode == QCOW2_MODE_RDWR ? QCOW2_HDR_RDWR : 0;
    if (salvage)
        hflags |= QCOW2_HDR_SALVAGE;
    rc = qcow2_header_decode(buf, blen, hflags, &m->h, &e);
    /* a size whose L1 count wraps in qemu's arithmetic: the open goes on and the user
     * refuses the size at the end (only the size rule: a too-large L1 is -EFBIG too) */
    if (rc == -EFBIG && e.field && !strcmp(e.field, "size") && qcow2_size_wrap_waived(&m->h)) {
        m->size_wraps = true;
        rc = 0;
    }
    if (rc < 0)
        goto fail_e;
    m->cs = m->h.cluster_size;
    m->geom.cluster_bits = m->h.cluster_bits;
    m->geom.extended_l2 = (m->h.incompatible_features & QCOW2_INCOMPAT_EXTL2) != 0;
    m->geom.data_file = (m->h.incompatible_features & QCOW2_INCOMPAT_DATA_FILE) != 0;

    /* the active L1 (<= 4 Mi entries, validated by the decoder); the driver indexes it
     * whole, the checker judges what the file holds */
    rc = qcow2_table_load(q, m->file_size, m->h.l1_table_offset,
                          salvage && m->h.l1_size > QCOW2_MAX_L1_SIZE / 8
                              ? QCOW2_MAX_L1_SIZE / 8 : m->h.l1_size,
                          check ? 0 : QCOW2_TABLE_PAD, &m->l1, &m->l1_loaded);
    if (rc < 0) {
        free(buf);
        *errmsg = check ? xstrdup("Could not read L1 table")
                        : xasprintf("Could not read L1 table: %s", strerror(-rc));
        return rc;
    }
    /* qcow2_refcount_init: the checker needs the reftable, and so does the writer (whole,
     * zeros past EOF as qemu reads it, so the allocator can hook refblocks up anywhere in
     * it); the reader loads it on demand, but fails here where qemu's read would */
    if (salvage)
        rc = 0;
    else if (check)
        rc = load_reftable(m, 0);
    else if (o->mode == QCOW2_MODE_RDWR)
        rc = load_reftable(m, QCOW2_TABLE_PAD);
    else
        rc = qcow2_table_past_max(m->h.refcount_table_offset, m->h.reftable_entries) ? -EIO
                                                                                   : 0;
    if (rc < 0) {
        free(buf);
        *errmsg = xasprintf("Could not initialize refcount handling: %s", strerror(-rc));
        return rc;
    }
    fmt_error_clear(&e);
    if ((rc = qcow2_ext_parse(&m->h, buf, blen, &m->ext, &e)) < 0)
        goto fail_e;
    if (m->ext.bitmaps_ignored && !o->no_warnings) {
        /* qemu warns while reading the extensions, text and missing newline included */
        if (m->h.version < 3) /* qemu is more specific for v2 (no autoclear field) */
            err_report("warning: This qcow2 v2 image contains bitmaps, but they may have "
                       "been modified by a program without persistent bitmap support; so "
                       "now they must all be considered inconsistent");
        else
            err_report("warning: a program lacking bitmap support modified this file, so "
                       "all bitmaps are now considered inconsistent");
        /* the command that fixes it: qemu-img's (qemu-io says qemu-img too), or qimg's */
        err_plain("Some clusters may be leaked, run '%s check -r' on the image file to fix.",
                  strncmp(qimg_progname, "qemu-", 5) ? "qimg" : "qemu-img");
    }
    /* encrypted images need a key secret for I/O, which qimg does not take (qemu opens the
     * LUKS header while it reads the extensions, before the data file) */
    if (!o->no_io && !o->has_key && m->h.crypt_method == QCOW2_CRYPT_LUKS && m->ext.has_crypto) {
        free(buf);
        return fail_msg(errmsg, -EINVAL, QCOW2_NO_KEY_MSG);
    }
    if ((rc = open_data_file(m, o, errmsg)) < 0) {
        free(buf);
        return rc;
    }
    if (!o->no_io && m->h.crypt_method == QCOW2_CRYPT_LUKS && !m->ext.has_crypto) {
        free(buf);
        *errmsg = xasprintf("Missing CRYPTO header for crypt method %u", m->h.crypt_method);
        return -EINVAL;
    }
    if (!o->no_io && !o->has_key && m->h.crypt_method == QCOW2_CRYPT_AES) {
        free(buf);
        return fail_msg(errmsg, -EINVAL, QCOW2_NO_KEY_MSG);
    }
    /* the backing file name (C-string semantics, as qemu's bs->backing_file) */
    char name[QCOW2_MAX_BACKING_NAME + 1];
    uint32_t name_len;
    bool has;
    fmt_error_clear(&e);
    if ((rc = qcow2_backing_name(&m->h, buf, blen, name, &name_len, &has, &e)) < 0)
        goto fail_e;
    /* a header rewrite keeps the unknown parts of cluster 0 (qcow2/header_write.h) */
    if (o->mode == QCOW2_MODE_READ) {
        free(buf);
    } else {
        m->c0 = buf;
        m->c0_len = blen;
    }
    if (has && name[0])
        m->backing_name = xstrdup(name);
    return 0;

fail_e:
    free(buf);
    return fail_fmt(errmsg, &e, rc);
}

int qcow2_image_reload(struct qcow2_image *m, const struct qcow2_open_opts *o, char **errmsg)
{
    struct qcow2_image keep = *m;
    m->dbm = NULL; /* the bitmaps in memory stay (loaded before qemu's dirty repair) */
    qcow2_image_close(m);
    memset(m, 0, sizeof(*m));
    m->dbm = keep.dbm;
    m->data = keep.data;
    m->port = keep.port;
    m->l2_flush = keep.l2_flush;
    m->rb_flush = keep.rb_flush;
    memcpy(m->discard_passthrough, keep.discard_passthrough, sizeof(m->discard_passthrough));
    return qcow2_image_open(m, keep.q, keep.filename, o, errmsg);
}

void qcow2_image_close(struct qcow2_image *m)
{
    qcow2_l2_cache_free(m);
    free(m->c0);
    m->c0 = NULL;
    m->c0_len = 0;
    free(m->l1);
    m->l1 = NULL;
    free(m->rt);
    m->rt = NULL;
    m->rt_loaded = 0;
    qcow2_ext_free(&m->ext);
    qcow2_rb_cache_free(&m->rb);
    qcow2_overlap_free(m);
    free(m->backing_name);
    m->backing_name = NULL;
    for (uint32_t i = 0; i < m->nb_sn; i++)
        qcow2_snapshot_free(&m->sn[i]);
    free(m->sn);
    m->sn = NULL;
    m->nb_sn = 0;
    free(m->bm);
    m->bm = NULL;
    m->nb_bm = 0;
    qcow2_bitmaps_free(m);
}
