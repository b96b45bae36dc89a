/* Open a qcow2 image the way qemu-img check does (BDRV_O_CHECK): the model opens it in
 * CHECK mode (qcow2/image.h: header, L1, reftable, extensions, data file, backing name);
 * here the backing chain is opened and the model's bitmap directory loaded, failing with
 * qemu's "Could not open 'F': <msg>". */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "block/image.h"
#include "block/luks.h"
#include "crypto/sector.h"
#include "checker/qcow2_check.h"
#include "format/be.h"
#include "format/probe.h"
#include "io/lock.h"
#include "util/err.h"
#include "util/xalloc.h"

/* out of line, as qc2_refblock: inline in checker/qcow2_check.h they changed the register
 * allocation of the L1/L2 walk's hot loop (measured: check of a 1 TiB image 5 % slower) */
int qc2_load_table(struct qc2 *s, uint64_t off, uint64_t entries, uint64_t **out,
                   uint64_t *loaded)
{
    return qcow2_table_load(s->q, s->file_size, off, entries, 0, out, loaded);
}

static int open_fail(const char *filename, int code, const char *msg)
{
    err_report("Could not open '%s': %s", filename, msg);
    return code < 0 ? code : -EINVAL;
}

static int open_backing(struct qc2 *s)
{
    if (!s->backing_name || s->opts->no_backing)
        return 0;
    /* qemu-img check opens the whole backing chain (read-only, locks taken as for any
     * reader) although it reads none of it: a missing or broken image further down, or a
     * loop, fails the check. The chain is closed again at once, so a deep chain costs no
     * memory during the check. */
    char *path = image_backing_path_name(s->filename, s->backing_name);
    if (!path) /* relative name under an image on NBD */
        return open_fail(s->opts->open_name ? s->opts->open_name : s->filename, -EINVAL,
                         "Cannot generate a base directory for NBD nodes");
    const char *fmt = s->ext.has_backing_format && s->ext.backing_format[0]
                          ? s->ext.backing_format : NULL;
    image_t *chain = NULL;
    char *msg = NULL;
    int rc = image_open_backing_with(s->q, path, fmt, s->opts->backing_opts,
                                     s->opts->share ? IMG_OPEN_SHARE : 0, &chain, &msg);
    free(path);
    if (rc < 0) {
        err_report("Could not open '%s': %s",
                   s->opts->open_name ? s->opts->open_name : s->filename, msg);
        free(msg);
        return rc;
    }
    image_close(chain);
    return 0;
}

/* qcow2_crypto_hdr_read_func: the LUKS header's bytes, inside the crypto extension. */
static int crypto_read(void *opaque, uint64_t off, void *buf, size_t len, char **errmsg)
{
    struct qc2 *s = opaque;
    if (off > s->ext.crypto_length || len > s->ext.crypto_length - off) {
        *errmsg = xstrdup("Request for data outside of extension header");
        return -EINVAL;
    }
    int r = qio_pread(s->q, buf, len, s->ext.crypto_offset + off);
    if (r < 0)
        *errmsg = xasprintf("Could not read encryption header: %s", strerror(-r));
    return r;
}

/* qemu's check opens the image for I/O, so the encryption options are checked and the key
 * is tried as any open does (qcow2_update_options_prepare, then qcrypto_block_open): a wrong
 * encrypt.format, a missing secret or a LUKS password that opens no key slot fails the
 * check. The key itself is not needed: check reads metadata only. 0, or -errno with
 * *errmsg. */
static int open_key(struct qc2 *s, char **errmsg)
{
    const struct check_opts *o = s->opts;
    int r = crypt_format_check(o->encrypt_format,
                               !s->h.crypt_method ? NULL
                               : s->h.crypt_method == QCOW2_CRYPT_AES ? "aes" : "luks",
                               errmsg);
    if (r < 0 || !s->h.crypt_method)
        return r;
    struct qcrypt *c = NULL;
    if (s->h.crypt_method == QCOW2_CRYPT_AES) {
        r = qcow_aes_open_key(o->key_secret, QCOW2_NO_KEY_MSG, &c, errmsg);
    } else {
        if (!s->ext.has_crypto) {
            *errmsg = xasprintf("Missing CRYPTO header for crypt method %u", s->h.crypt_method);
            return -EINVAL;
        }
        if (s->ext.crypto_length < LUKS_HEADER_LEN) {
            *errmsg = xstrdup("Request for data outside of extension header");
            return -EINVAL;
        }
        struct luks_header h;
        if ((r = luks_read_header(s->q, s->ext.crypto_offset, &h, errmsg)) < 0)
            return -EINVAL;
        r = luks_open_key(o->key_secret, QCOW2_NO_KEY_MSG, &h, crypto_read, s, &c, errmsg);
    }
    if (c)
        qcrypt_free(c);
    return r;
}

int qc2_open(struct qc2 *s, qio_t *q, const char *filename, const struct check_opts *o)
{
    s->opts = o;
    struct qcow2_open_opts oo = {
        .mode = QCOW2_MODE_CHECK,
        .no_warnings = o->no_open_warnings,
        .data_flags = (o->rdwr ? QIO_RDWR : QIO_RDONLY) | (o->share ? QIO_SHARE : 0),
        .data_lock_write = false,
        .data_file = o->data_file,
        .has_key = o->key_secret || o->encrypt_format,
    };
    char *err = NULL;
    int rc = qcow2_image_open(&s->m, q, filename, &oo, &err);
    if (rc == 0 && !o->no_open_warnings)
        rc = open_key(s, &err);   /* a repair's double check tried the key already */
    if (rc < 0) {
        rc = open_fail(o->open_name ? o->open_name : filename, rc, err);
        free(err);
        return rc;
    }
    if ((rc = open_backing(s)) < 0)
        return rc;
    /* the model's bitmap directory (qemu fails the open on a bad one) */
    if ((rc = qcow2_image_load_bitmaps(&s->m, &err)) < 0) {
        rc = open_fail(o->open_name ? o->open_name : filename, rc, err);
        free(err);
        return rc;
    }
    if (s->size_wraps || (s->h.size & ~(uint64_t)511) > IMG_MAX_LENGTH)
        return open_fail(o->open_name ? o->open_name : filename, -EFBIG,
                         "Could not refresh total sector count: File too large");
    return 0;
}

void qc2_close(struct qc2 *s)
{
    qcow2_image_close(&s->m);
    imrt_free(&s->imrt);
    free(s->copied_suspect);
    s->copied_suspect = NULL;
    free(s->past_eof);
    s->past_eof = NULL;
    s->past_eof_n = s->past_eof_alloc = 0;
    if (s->data)
        qio_close(s->data);
}
