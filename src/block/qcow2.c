/* qcow2 driver: the image model opens the image (qcow2/image.h, qemu's qcow2_do_open
 * order); here the image layer's view of it, the LUKS header for info, and the model's
 * snapshot table and bitmap directory read at open. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/luks.h"
#include "block/qcow2_int.h"
#include "block/qcow2_model.h"
#include "crypto/sector.h"
#include "format/be.h"
#include "io/lock.h"
#include "qcow2/dirty_repair.h"
#include "qcow2/header_write.h"
#include "util/err.h"
#include "util/secrets.h"
#include "util/xalloc.h"

static int qcow2_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)filename;
    return len >= 8 && be32_get(buf) == QCOW2_MAGIC && be32_get(buf + 4) >= 2 ? 100 : 0;
}

static struct qcow2_open_opts open_opts(const image_t *img)
{
    bool rdwr = (img->flags & IMG_OPEN_RDWR) != 0;
    return (struct qcow2_open_opts){
        .mode = rdwr ? QCOW2_MODE_RDWR : QCOW2_MODE_READ,
        .no_io = (img->flags & IMG_OPEN_NO_IO) != 0,
        .data_flags = (rdwr ? QIO_RDWR : QIO_RDONLY) |
                      ((img->flags & IMG_OPEN_SHARE) ? QIO_SHARE : 0),
        .data_lock_write = rdwr,
        .data_file = img->data_file_opt,
        .has_key = img->key_secret || img->encrypt_format,
    };
}

/* The end of qemu's qcow2_do_open for a writable image: the header update (unknown
 * autoclear bits), then the repair of a dirty image, which qemu runs as its check with
 * BDRV_FIX_ERRORS | BDRV_FIX_LEAKS and which qimg runs with check -r's engine. */
static int open_rdwr_finish(image_t *img, char **errmsg)
{
    struct qcow2_state *s = img->priv;
    int r = qcow2_image_activate(&s->m, errmsg);
    if (r < 0)
        return r;
    if (!(s->h.incompatible_features & QCOW2_INCOMPAT_DIRTY)) {
        s->active = true;
        return 0;
    }
    bool consistent;
    r = repair_dirty_on_open(img->file, img->filename, &consistent);
    if (r < 0) {
        *errmsg = xasprintf("Could not repair dirty image: %s", strerror(-r));
        return r;
    }
    /* the repair wrote past the model: read it again, forget cached tables */
    struct qcow2_open_opts oo = open_opts(img);
    qcow2_map_free(s);
    s->prealloc = -1;
    s->dbuf_entry = 0;
    oo.no_warnings = true;
    if ((r = qcow2_image_reload(&s->m, &oo, errmsg)) < 0 ||
        (r = qcow2_load_snapshots(img, errmsg)) < 0 ||
        (r = qcow2_image_load_bitmaps(&s->m, errmsg)) < 0) /* the store at close uses it */
        return r;
    img->dirty = (s->h.incompatible_features & QCOW2_INCOMPAT_DIRTY) != 0;
    /* qemu's qcow2_mark_clean after its check rewrites the whole header */
    if (consistent && (r = qcow2_image_update_header(&s->m)) < 0) {
        *errmsg = xasprintf("Could not repair dirty image: %s", strerror(-r));
        return r;
    }
    s->active = true;
    return 0;
}

/* qcow2_crypto_hdr_read_func: the LUKS header's bytes inside the crypto extension. */
static int crypto_read(void *opaque, uint64_t off, void *buf, size_t len, char **errmsg)
{
    image_t *img = opaque;
    struct qcow2_state *s = img->priv;
    if (off > s->ext.crypto_length || len > s->ext.crypto_length - off) {
        *errmsg = xstrdup("Request for data outside of extension header");
        return -EINVAL;
    }
    int r = qio_pread(img->file, buf, len, s->ext.crypto_offset + off);
    if (r < 0)
        *errmsg = xasprintf("Could not read encryption header: %s", strerror(-r));
    return r;
}

/* qcow2_update_options_prepare's encryption part and the crypto open of qcow2_do_open:
 * encrypt.format must name the header's method, then the key-secret unlocks it (LUKS: the
 * header's key slots; AES: the secret itself is the key, qcrypto_block_qcow_init). */
static int open_crypt(image_t *img, char **errmsg)
{
    struct qcow2_state *s = img->priv;
    if (s->h.crypt_method == QCOW2_CRYPT_LUKS) {
        if (!s->luks) {
            *errmsg = xasprintf("Missing CRYPTO header for crypt method %u", s->h.crypt_method);
            return -EINVAL;
        }
        s->crypt_physical = true;
        return luks_open_key(img->key_secret, QCOW2_NO_KEY_MSG, s->luks, crypto_read, img,
                             &s->crypt, errmsg);
    }
    return qcow_aes_open_key(img->key_secret, QCOW2_NO_KEY_MSG, &s->crypt, errmsg);
}

static int qcow2_open(image_t *img, char **errmsg)
{
    struct qcow2_state *s = xcalloc(1, sizeof(*s));
    img->priv = s;
    s->prealloc = -1;
    bool rdwr = (img->flags & IMG_OPEN_RDWR) != 0;
    bool no_io = (img->flags & IMG_OPEN_NO_IO) != 0;
    struct qcow2_open_opts oo = open_opts(img);
    int r = qcow2_image_open(&s->m, img->file, img->filename, &oo, errmsg);
    /* img->data_file is the image file unless the image has an external data file: then
     * the model's (the image layer owns and closes it), or none for info (NO_IO) */
    if (s->data)
        img->data_file = s->data;
    else if (s->geom.data_file && no_io)
        img->data_file = NULL;
    if (r < 0)
        return r;
    /* map's File column: the data-file option's name as qemu shows it (its label, e.g.
     * "blkdebug::NAME" over a blkdebug filter), else the header's name */
    if (s->geom.data_file && (img->data_file_label || img->data_file_opt || s->ext.has_data_file))
        img->data_file_name = xstrdup(img->data_file_label ? img->data_file_label
                                      : img->data_file_opt ? img->data_file_opt
                                                           : s->ext.data_file);
    img->cluster_size = (uint32_t)s->h.cluster_size;
    img->size = s->h.size & ~(uint64_t)511; /* qemu: total_sectors = size / 512 */
    img->dirty = (s->h.incompatible_features & QCOW2_INCOMPAT_DIRTY) != 0;
    img->encrypted = s->h.crypt_method != 0;
    /* qcow2_update_options_prepare: encrypt.format against the header, info's open too */
    if ((r = crypt_format_check(img->encrypt_format,
                                !s->h.crypt_method ? NULL
                                : s->h.crypt_method == QCOW2_CRYPT_AES ? "aes" : "luks",
                                errmsg)) < 0)
        return r;
    if (s->h.crypt_method == QCOW2_CRYPT_LUKS && s->ext.has_crypto) {
        /* info (NO_IO) only, I/O wants a key (refused by the model): qemu validates the
         * LUKS header while it reads the extensions and shows it.
         * qcow2_crypto_hdr_read_func: reads stay inside the extension's stated length */
        if (s->ext.crypto_length < LUKS_HEADER_LEN) {
            *errmsg = xstrdup("Request for data outside of extension header");
            return -EINVAL;
        }
        s->luks = xcalloc(1, sizeof(*s->luks));
        if ((r = luks_read_header(img->file, s->ext.crypto_offset, s->luks, errmsg)) < 0)
            return -EINVAL;
    }
    if (s->h.crypt_method != 0 && !no_io && (r = open_crypt(img, errmsg)) < 0)
        return r;
    if (s->backing_name) {
        img->backing_file = xstrdup(s->backing_name);
        img->backing_full = image_backing_path(img, img->backing_file);
        if (s->ext.has_backing_format && s->ext.backing_format[0])
            img->backing_format = xstrdup(s->ext.backing_format);
    }
    if ((r = qcow2_load_snapshots(img, errmsg)) < 0)
        return r;
    if ((r = qcow2_image_load_bitmaps(&s->m, errmsg)) < 0)
        return r;
    if (rdwr && (r = open_rdwr_finish(img, errmsg)) < 0)
        return r;
    if (rdwr)
        return qcow2_writer_init(img, errmsg);
    return 0;
}

static void qcow2_close(image_t *img)
{
    struct qcow2_state *s = img->priv;
    if (!s)
        return;
    /* qemu's qcow2_close of a writable node: qcow2_inactivate (caches, dirty bit) */
    if (!img->broken)
        qcow2_image_inactivate(&s->m);
    qcow2_writer_close(img);
    qcow2_map_free(s);
    qcow2_image_close(&s->m);
    free(s->cbuf);
    free(s->dbuf);
    free(s->luks);
    qcrypt_free(s->crypt);
    free(s);
    img->priv = NULL;
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
    .write = qcow2_write,
    .write_zeroes = qcow2_write_zeroes,
    .write_compressed = qcow2_write_compressed,
    .discard = qcow2_discard,
    .flush = qcow2_flush,
    .truncate = qcow2_truncate,
};

struct qcow2_image *qcow2_model_of(image_t *img)
{
    if (!img || img->drv != &qcow2_driver || !img->priv)
        return NULL;
    return &((struct qcow2_state *)img->priv)->m;
}
