/* Open a qcow2 image the way qemu-img check does (BDRV_O_CHECK, digest §2): the
 * header decoder does the header-only validation; here we read the active L1 and the
 * reftable (clamped to the file: entries past EOF read as 0, so memory follows the file,
 * not the header), parse the extensions, open the data and backing files, and load the
 * bitmap directory, failing with qemu's "Could not open 'F': <msg>". */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "block/image.h"
#include "checker/qcow2_bitmaps.h"
#include "checker/qcow2_check.h"
#include "format/be.h"
#include "format/probe.h"
#include "io/lock.h"
#include "util/err.h"
#include "util/xalloc.h"

#define HDR_READ_MAX (2u << 20)   /* largest cluster qemu accepts */

int qc2_read(struct qc2 *s, void *buf, uint64_t len, uint64_t off)
{
    if (len > SIZE_MAX)
        return -EINVAL;
    return qio_pread(s->q, buf, (size_t)len, off);
}

static int open_fail(const char *filename, int code, const char *msg)
{
    err_report("Could not open '%s': %s", filename, msg);
    return code < 0 ? code : -EINVAL;
}

/* A file name stored in the image is relative to the image's directory. */
static char *relative_to_image(const char *image, const char *name)
{
    if (name[0] == '/' || !strchr(image, '/'))
        return xstrdup(name);
    char *dup = xstrdup(image);
    char *dir = dirname(dup);
    char *p = xasprintf("%s/%s", dir, name);
    free(dup);
    return p;
}

static int open_data_file(struct qc2 *s)
{
    bool want = s->h.incompatible_features & QCOW2_INCOMPAT_DATA_FILE;
    if (!want) {
        if (s->h.autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW)
            return open_fail(s->filename, -EINVAL, "data-file-raw requires a data file");
        return 0;
    }
    if (!s->ext.has_data_file)
        return open_fail(s->filename, -EINVAL, "'data-file' is required for this image");
    /* qemu 7.2 opens the stored name as given (relative to the working directory, unlike
     * a backing file name); src/block/qcow2.c does the same */
    char *path = xstrdup(s->ext.data_file);
    char *msg = NULL;
    int rc = qio_open_image(path, (s->opts->rdwr ? QIO_RDWR : QIO_RDONLY) |
                                      (s->opts->share ? QIO_SHARE : 0), &s->data, &msg);
    if (rc < 0) {
        err_report("Could not open '%s': %s", s->filename, msg);
        free(msg);
        free(path);
        return rc;
    }
    char *lockmsg = NULL;
    rc = qio_lock_data_file(s->data, false, s->opts->share, path, &lockmsg);
    if (rc < 0) {
        err_report("Could not open '%s': %s", s->filename, lockmsg);
        free(lockmsg);
        free(path);
        return rc;
    }
    free(path);
    s->has_data_file = true;
    return 0;
}

static int open_backing(struct qc2 *s, const uint8_t *buf, size_t buf_len)
{
    char name[QCOW2_MAX_BACKING_NAME + 1];
    uint32_t len;
    bool has;
    struct fmt_error e;
    fmt_error_clear(&e);
    int rc = qcow2_backing_name(&s->h, buf, buf_len, name, &len, &has, &e);
    if (rc < 0) {
        char tmp[512];
        return open_fail(s->filename, rc, fmt_error_user_msg(&e, tmp, sizeof(tmp)));
    }
    if (!has || !name[0])
        return 0;
    /* qemu-img check opens the whole backing chain (read-only, locks taken as for any
     * reader) although it reads none of it: a missing or broken image further down, or a
     * loop, fails the check. The chain is closed again at once, so a deep chain costs no
     * memory during the check. */
    char *path = relative_to_image(s->filename, name);
    const char *fmt = s->ext.has_backing_format && s->ext.backing_format[0]
                          ? s->ext.backing_format : NULL;
    image_t *chain = NULL;
    char *msg = NULL;
    rc = image_open_backing_of(s->q, path, fmt, s->opts->share ? IMG_OPEN_SHARE : 0, &chain,
                               &msg);
    free(path);
    if (rc < 0) {
        err_report("Could not open '%s': %s", s->filename, msg);
        free(msg);
        return rc;
    }
    image_close(chain);
    return 0;
}

int qc2_open(struct qc2 *s, qio_t *q, const char *filename, const struct check_opts *o)
{
    char msg[FMT_ERROR_MSG_MAX + 64];
    struct fmt_error e;
    int rc;

    s->q = q;
    s->filename = filename;
    s->opts = o;
    rc = qio_size(q, &s->file_size);
    if (rc < 0)
        return open_fail(filename, rc, strerror(-rc));

    size_t have = s->file_size < HDR_READ_MAX ? (size_t)s->file_size : HDR_READ_MAX;
    uint8_t *buf = xcalloc(1, HDR_READ_MAX);
    rc = qio_pread(q, buf, have, 0);
    if (rc < 0) {
        free(buf);
        return open_fail(filename, rc, strerror(-rc));
    }
    fmt_error_clear(&e);
    rc = qcow2_header_decode(buf, have, QCOW2_HDR_CHECK, &s->h, &e);
    /* a size whose L1 count wraps in qemu's arithmetic: the open goes on, fails at the end */
    bool size_wraps = rc == -EFBIG && e.field && !strcmp(e.field, "size") &&
                      qcow2_size_wrap_waived(&s->h);
    if (size_wraps)
        rc = 0;
    if (rc < 0) {
        free(buf);
        return open_fail(filename, rc, fmt_error_user_msg(&e, msg, sizeof(msg)));
    }
    s->cs = s->h.cluster_size;
    s->geom.cluster_bits = s->h.cluster_bits;
    s->geom.extended_l2 = s->h.incompatible_features & QCOW2_INCOMPAT_EXTL2;
    s->geom.data_file = s->h.incompatible_features & QCOW2_INCOMPAT_DATA_FILE;
    size_t c0 = have < s->cs ? have : (size_t)s->cs;

    /* step 12: the active L1 */
    rc = qc2_load_table(s, s->h.l1_table_offset, s->h.l1_size, &s->l1, &s->l1_loaded);
    if (rc < 0) {
        free(buf);
        return open_fail(filename, rc, "Could not read L1 table");
    }
    /* step 14: reftable, then extensions */
    s->rt_entries = s->h.reftable_entries;
    rc = qc2_load_table(s, s->h.refcount_table_offset, s->rt_entries, &s->rt, &s->rt_loaded);
    if (rc < 0) {
        free(buf);
        return open_fail(filename, rc, "Could not read refcount table");
    }
    fmt_error_clear(&e);
    rc = qcow2_ext_parse(&s->h, buf, c0, &s->ext, &e);
    if (rc < 0) {
        free(buf);
        return open_fail(filename, rc, fmt_error_user_msg(&e, msg, sizeof(msg)));
    }
    if (s->ext.bitmaps_ignored && !o->no_open_warnings)
    {
        /* qemu's text, including its missing newline after the second sentence */
        err_report("warning: a program lacking bitmap support modified this file, so all "
                   "bitmaps are now considered inconsistent");
        err_plain("Some clusters may be leaked, run '%s check -r' on the image file to fix.",
                  qimg_progname);
    }
    /* encrypted images need a key secret for I/O, which qimg does not take (qemu opens
     * the LUKS header while it reads the extensions, before the data file) */
    if (s->h.crypt_method == QCOW2_CRYPT_LUKS && s->ext.has_crypto) {
        free(buf);
        return open_fail(filename, -EINVAL, QCOW2_NO_KEY_MSG);
    }
    rc = open_data_file(s);
    if (rc < 0) {
        free(buf);
        return rc;
    }
    if (s->h.crypt_method == QCOW2_CRYPT_LUKS && !s->ext.has_crypto) {
        free(buf);
        return open_fail(filename, -EINVAL, "Missing CRYPTO header for crypt method 2");
    }
    if (s->h.crypt_method == QCOW2_CRYPT_AES) {
        free(buf);
        return open_fail(filename, -EINVAL, QCOW2_NO_KEY_MSG);
    }
    rc = open_backing(s, buf, c0);
    free(buf);
    if (rc < 0)
        return rc;
    rc = qc2_bitmaps_load(s, msg, sizeof(msg));
    if (rc < 0)
        return open_fail(filename, rc, msg);
    if (size_wraps || (s->h.size & ~(uint64_t)511) > IMG_MAX_LENGTH)
        return open_fail(filename, -EFBIG, "Could not refresh total sector count: File too large");
    return 0;
}

void qc2_close(struct qc2 *s)
{
    free(s->l1);
    free(s->rt);
    for (uint32_t i = 0; i < s->nb_sn; i++)
        qcow2_snapshot_free(&s->sn[i]);
    free(s->sn);
    qcow2_ext_free(&s->ext);
    qc2_bitmaps_free(s);
    qcow2_rb_cache_free(&s->rb);
    imrt_free(&s->imrt);
    free(s->copied_suspect);
    s->copied_suspect = NULL;
    free(s->past_eof);
    s->past_eof = NULL;
    s->past_eof_n = s->past_eof_alloc = 0;
    if (s->data)
        qio_close(s->data);
}
