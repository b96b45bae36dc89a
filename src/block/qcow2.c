/* qcow2 driver: open in qemu's order (qcow2_do_open) on top of the pure decoders, then the
 * L1 table, data file, backing name, snapshot table and bitmap directory. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/luks.h"
#include "block/qcow2_int.h"
#include "format/be.h"
#include "io/lock.h"
#include "qcow2/table.h"
#include "util/err.h"
#include "util/xalloc.h"

static int qcow2_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)filename;
    return len >= 8 && be32_get(buf) == QCOW2_MAGIC && be32_get(buf + 4) >= 2 ? 100 : 0;
}

static int fail(char **errmsg, const struct fmt_error *e, int r)
{
    char tmp[FMT_ERROR_MSG_MAX];
    *errmsg = xstrdup(fmt_error_user_msg(e, tmp, sizeof(tmp)));
    return r;
}

static int read_l1(image_t *img, char **errmsg)
{
    struct qcow2_state *s = img->priv;
    /* <= 4 Mi entries (32 MiB), validated by the decoder; the whole table is kept (padded
     * with zeros past EOF) since lookups index it directly */
    uint64_t loaded;
    int r = qcow2_table_load(img->file, s->file_size, s->h.l1_table_offset, s->h.l1_size,
                             QCOW2_TABLE_PAD, &s->l1, &loaded);
    if (r < 0)
        *errmsg = xasprintf("Could not read L1 table: %s", strerror(-r));
    return r;
}

static int open_data_file(image_t *img, char **errmsg)
{
    struct qcow2_state *s = img->priv;
    bool ext_file = (s->h.incompatible_features & QCOW2_INCOMPAT_DATA_FILE) != 0;
    /* qemu-img info (NO_IO) does not open the data file, so none of these are checked */
    bool no_io = (img->flags & IMG_OPEN_NO_IO) != 0;
    if (!ext_file) {
        if (!no_io && (s->h.autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW)) {
            *errmsg = xstrdup("data-file-raw requires a data file");
            return -EINVAL;
        }
        return 0;
    }
    if (!s->x.has_data_file) {
        if (no_io) {
            img->data_file = NULL;
            return 0;
        }
        *errmsg = xstrdup("'data-file' is required for this image");
        return -EINVAL;
    }
    /* qemu 7.2 opens the stored name as given, i.e. relative to the working directory */
    img->data_file_name = xstrdup(s->x.data_file);
    if (no_io) {
        /* qemu-img info never opens the data file (its name comes from the header): a
         * missing file, a FIFO or a directory there does not matter to it */
        img->data_file = NULL;
        return 0;
    }
    qio_t *q;
    int r = qio_open_image(img->data_file_name,
                           (img->flags & IMG_OPEN_RDWR) ? QIO_RDWR : QIO_RDONLY, &q, errmsg);
    if (r < 0)
        return r;
    r = qio_lock_data_file(q, img->flags & IMG_OPEN_RDWR, img->flags & IMG_OPEN_SHARE,
                           img->data_file_name, errmsg);
    if (r < 0) {
        qio_close(q);
        return r;
    }
    img->data_file = q;
    return 0;
}

static int qcow2_open(image_t *img, char **errmsg)
{
    struct qcow2_state *s = xcalloc(1, sizeof(*s));
    img->priv = s;
    s->prealloc = -1;
    struct fmt_error e;
    fmt_error_clear(&e);
    int r = qio_size(img->file, &s->file_size);
    if (r < 0) {
        *errmsg = xasprintf("Could not get the size of '%s': %s", img->filename, strerror(-r));
        return r;
    }

    /* Cluster 0; at most 2 MiB once cluster_bits is known to be sane. */
    uint8_t first[QCOW2_HDR_V3_LEN];
    if ((r = qio_pread(img->file, first, sizeof(first), 0)) < 0) {
        *errmsg = xasprintf("Could not read qcow2 header: %s", strerror(-r));
        return r;
    }
    uint32_t cb = be32_get(first + QCOW2_OFF_CLUSTER_BITS);
    size_t blen = cb >= QCOW2_MIN_CLUSTER_BITS && cb <= QCOW2_MAX_CLUSTER_BITS
                      ? (size_t)1 << cb : sizeof(first);
    uint8_t *buf = xmalloc(blen);
    if ((r = qio_pread(img->file, buf, blen, 0)) < 0) {
        free(buf);
        *errmsg = xasprintf("Could not read qcow2 header: %s", strerror(-r));
        return r;
    }
    unsigned hflags = (img->flags & IMG_OPEN_RDWR) ? QCOW2_HDR_RDWR : 0;
    r = qcow2_header_decode(buf, blen, hflags, &s->h, &e);
    /* only the size rule may be waived: a too-large L1 table is also -EFBIG */
    if (r == -EFBIG && e.field && strcmp(e.field, "size") == 0 && qcow2_size_wrap_waived(&s->h)) {
        r = 0;   /* open.c refuses the size itself, after the rest of the open */
        fmt_error_clear(&e);
    }
    if (r == 0)
        r = qcow2_ext_parse(&s->h, buf, blen, &s->x, &e);
    if (r == 0 && s->x.bitmaps_ignored) {
        /* qemu warns while reading the extensions, text and missing newline included */
        err_report("warning: a program lacking bitmap support modified this file, so all "
                   "bitmaps are now considered inconsistent");
        err_plain("Some clusters may be leaked, run '%s check -r' on the image file to fix.",
                  qimg_progname);
    }
    char name[QCOW2_MAX_BACKING_NAME + 1];
    uint32_t name_len = 0;
    bool has_backing = false;
    if (r == 0)
        r = qcow2_backing_name(&s->h, buf, blen, name, &name_len, &has_backing, &e);
    free(buf);
    if (r < 0)
        return fail(errmsg, &e, r);

    s->geom.cluster_bits = s->h.cluster_bits;
    s->geom.extended_l2 = (s->h.incompatible_features & QCOW2_INCOMPAT_EXTL2) != 0;
    s->geom.data_file = (s->h.incompatible_features & QCOW2_INCOMPAT_DATA_FILE) != 0;
    img->cluster_size = (uint32_t)s->h.cluster_size;
    img->size = s->h.size & ~(uint64_t)511; /* qemu: total_sectors = size / 512 */
    img->dirty = (s->h.incompatible_features & QCOW2_INCOMPAT_DIRTY) != 0;

    if ((r = read_l1(img, errmsg)) < 0)
        return r;
    bool no_io = (img->flags & IMG_OPEN_NO_IO) != 0;
    /* qemu opens the LUKS header while it reads the extensions, before the data file: for
     * I/O it wants the key first; info (NO_IO) validates the header and shows it */
    if (s->h.crypt_method == QCOW2_CRYPT_LUKS && s->x.has_crypto && !no_io) {
        *errmsg = xstrdup(QCOW2_NO_KEY_MSG);
        return -EINVAL;
    }
    if (s->h.crypt_method == QCOW2_CRYPT_LUKS && s->x.has_crypto) {
        /* qcow2_crypto_hdr_read_func: reads stay inside the extension's stated length */
        if (s->x.crypto_length < LUKS_HEADER_LEN) {
            *errmsg = xstrdup("Request for data outside of extension header");
            return -EINVAL;
        }
        s->luks = xcalloc(1, sizeof(*s->luks));
        if ((r = luks_read_header(img->file, s->x.crypto_offset, s->luks, errmsg)) < 0)
            return -EINVAL;
    }
    img->encrypted = s->h.crypt_method != 0;
    if ((r = open_data_file(img, errmsg)) < 0)
        return r;
    if (s->h.crypt_method == QCOW2_CRYPT_LUKS && !s->x.has_crypto && !no_io) {
        *errmsg = xasprintf("Missing CRYPTO header for crypt method %u", s->h.crypt_method);
        return -EINVAL;
    }
    if (s->h.crypt_method == QCOW2_CRYPT_AES && !no_io) {
        *errmsg = xstrdup(QCOW2_NO_KEY_MSG);
        return -EINVAL;
    }
    if (has_backing && name[0]) {
        /* C-string semantics, as qemu's bs->backing_file */
        img->backing_file = xstrdup(name);
        img->backing_full = image_path_combine(img->filename, img->backing_file);
        if (s->x.has_backing_format && s->x.backing_format[0])
            img->backing_format = xstrdup(s->x.backing_format);
    }
    if ((r = qcow2_load_snapshots(img, errmsg)) < 0)
        return r;
    if ((r = qcow2_load_bitmaps(img, errmsg)) < 0)
        return r;
    return 0;
}

static void qcow2_close(image_t *img)
{
    struct qcow2_state *s = img->priv;
    if (!s)
        return;
    qcow2_map_free(s);
    qcow2_ext_free(&s->x);
    free(s->l1);
    snapshot_list_free(s->snaps, s->n_snaps);
    for (size_t i = 0; i < s->n_bitmaps; i++)
        free(s->bitmaps[i].name);
    free(s->bitmaps);
    free(s->cbuf);
    free(s->dbuf);
    free(s->luks);
    free(s);
    img->priv = NULL;
}

/* qemu discards qcow2 clusters; until the one qcow2 model writes (issue 11), refuse rather
 * than let image_discard's "no discard op = no-op" rule claim success. */
static int qcow2_discard_todo(image_t *img, uint64_t off, uint64_t n)
{
    (void)img, (void)off, (void)n;
    return -ENOTSUP;
}

const struct driver qcow2_driver = {
    .name = "qcow2",
    .supports_backing = true,
    .probe = qcow2_probe,
    .open = qcow2_open,
    .close = qcow2_close,
    .read = qcow2_read,
    .block_status = qcow2_block_status,
    .format_specific = qcow2_format_specific,
    .snapshots = qcow2_snapshots,
    .discard = qcow2_discard_todo,
};
