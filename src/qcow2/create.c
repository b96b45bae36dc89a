/* qcow2 creation as qemu 7.2's qcow2_co_create_opts + qcow2_co_create: the options checked in
 * qemu's order (its QAPI visitor first, then qcow2_co_create's checks), the file created, the
 * first three clusters written (header, reftable, refblock), then - through the write engine,
 * as qemu does through its driver - the three clusters allocated, the full header written
 * (qcow2_update_header), the image grown to its size with the preallocation asked for
 * (qcow2_co_truncate: L1 placement, metadata preallocation), and the backing file set. Any
 * failure removes the files made (qemu: bdrv_co_delete_file_noerr). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/create.h"
#include "block/image.h"
#include "block/qcow2_int.h"
#include "crypto/luks_key.h"
#include "format/be.h"
#include "qcow2/alloc.h"
#include "qcow2/header_write.h"
#include "io/lock.h"
#include "io/qio.h"
#include "util/err.h"
#include "util/secrets.h"
#include "util/xalloc.h"

static int fail(char **errmsg, const char *fmt, const char *a)
{
    size_t n = strlen(fmt) + (a ? strlen(a) : 0) + 1;
    *errmsg = xmalloc(n);
    snprintf(*errmsg, n, fmt, a ? a : "");
    return -EINVAL;
}

struct qparams {
    uint64_t size;
    int version;
    uint64_t cs;
    bool extl2, lazy, dfraw;
    bool aes;              /* the legacy AES encryption (crypt_method 1): only the header
                              says so, the key is not needed to create the image */
    bool luks;             /* LUKS (crypt_method 2): a LUKS header in its own clusters */
    struct luks_create_opts lo;
    const char *key_secret;
    int64_t refcount_bits;
    enum img_prealloc prealloc;
    int compression; /* 0 zlib, 1 zstd */
    const char *data_file, *backing, *bfmt;
};

/* qcow2_co_create_opts's conversions and QAPI parse, then qcow2_co_create's checks */
static int validate(const struct copts *o, struct qparams *p, char **errmsg)
{
    static const char *const prealloc_names[] = { "off", "metadata", "falloc", "full", NULL };
    memset(p, 0, sizeof(*p));
    p->size = (copts_num(o, "size", 0) + 511) & ~511ull;
    p->data_file = copts_isset(o, "data_file") ? copts_str(o, "data_file") : NULL;
    p->dfraw = copts_bool(o, "data_file_raw", false);
    p->extl2 = copts_bool(o, "extended_l2", false);
    p->version = 3;
    if (copts_isset(o, "compat")) {
        const char *v = copts_str(o, "compat");
        if (!strcmp(v, "0.10") || !strcmp(v, "v2"))
            p->version = 2;
        else if (!strcmp(v, "1.1") || !strcmp(v, "v3"))
            p->version = 3;
        else
            return fail(errmsg, "Parameter 'version' does not accept value '%s'", v);
    }
    p->backing = copts_isset(o, "backing_file") ? copts_str(o, "backing_file") : NULL;
    p->bfmt = copts_isset(o, "backing_fmt") ? copts_str(o, "backing_fmt") : NULL;
    if (p->bfmt && !copts_backing_fmt_known(p->bfmt))
        return fail(errmsg, "Parameter 'backing-fmt' does not accept value '%s'", p->bfmt);
    const char *enc = copts_isset(o, "encrypt.format") ? copts_str(o, "encrypt.format") : NULL;
    if (copts_isset(o, "encryption"))
        enc = copts_bool(o, "encryption", false) ? "qcow" : NULL;
    if (enc && !strcmp(enc, "aes"))
        enc = "qcow";
    if (enc && strcmp(enc, "qcow") && strcmp(enc, "luks"))
        return fail(errmsg, "Parameter 'encrypt.format' does not accept value '%s'", enc);
    if (enc && !copts_isset(o, "encrypt.key-secret"))
        return fail(errmsg, "Parameter 'encrypt.key-secret' is required for cipher", NULL);
    p->cs = copts_num(o, "cluster_size", 65536);
    p->prealloc = IMG_PREALLOC_OFF;
    if (copts_isset(o, "preallocation")) {
        const char *v = copts_str(o, "preallocation");
        int i = 0;
        while (prealloc_names[i] && strcmp(prealloc_names[i], v))
            i++;
        if (!prealloc_names[i])
            return fail(errmsg, "Parameter 'preallocation' does not accept value '%s'", v);
        p->prealloc = (enum img_prealloc)i;
    }
    p->lazy = copts_bool(o, "lazy_refcounts", false);
    p->refcount_bits = (int64_t)copts_num(o, "refcount_bits", 16);
    bool has_ct = copts_isset(o, "compression_type");
    if (has_ct) {
        const char *v = copts_str(o, "compression_type");
        if (!strcmp(v, "zstd"))
            p->compression = 1;
        else if (strcmp(v, "zlib"))
            return fail(errmsg, "Parameter 'compression-type' does not accept value '%s'", v);
    }

    /* qcow2_co_create */
    if (p->extl2 && p->version < 3)
        return fail(errmsg, "Extended L2 entries are only supported with compatibility "
                    "level 1.1 and above (use version=v3 or greater)", NULL);
    /* validate_cluster_size */
    if (p->cs < 512 || p->cs > 2 * 1024 * 1024 || (p->cs & (p->cs - 1)))
        return fail(errmsg, "Cluster size must be a power of two between 512 and 2048k", NULL);
    if (p->extl2 && p->cs < 16384)
        return fail(errmsg, "Extended L2 entries are only supported with cluster sizes "
                    "of at least 16384 bytes", NULL);
    if (p->backing && p->prealloc != IMG_PREALLOC_OFF && !p->extl2)
        return fail(errmsg, "Backing file and preallocation can only be used at the same "
                    "time if extended_l2 is on", NULL);
    if (p->bfmt && !p->backing)
        return fail(errmsg, "Backing format cannot be used without backing file", NULL);
    if (p->version < 3 && p->lazy)
        return fail(errmsg, "Lazy refcounts only supported with compatibility level 1.1 and "
                    "above (use version=v3 or greater)", NULL);
    if (p->refcount_bits > 64 || p->refcount_bits <= 0 ||
        (p->refcount_bits & (p->refcount_bits - 1)))
        return fail(errmsg, "Refcount width must be a power of two and may not exceed 64 bits",
                    NULL);
    if (p->version < 3 && p->refcount_bits != 16)
        return fail(errmsg, "Different refcount widths than 16 bits require compatibility "
                    "level 1.1 or above (use version=v3 or greater)", NULL);
    if (p->dfraw && !p->data_file)
        return fail(errmsg, "data-file-raw requires data-file", NULL);
    if (p->dfraw && p->backing)
        return fail(errmsg, "Backing file and data-file-raw cannot be used at the same time",
                    NULL);
    if (p->dfraw && p->prealloc == IMG_PREALLOC_OFF)
        p->prealloc = IMG_PREALLOC_METADATA; /* keep the data file a valid raw image */
    if (p->data_file && p->version < 3)
        return fail(errmsg, "External data files are only supported with compatibility level "
                    "1.1 and above (use version=v3 or greater)", NULL);
    if (has_ct && p->compression && p->version < 3)
        return fail(errmsg, "Non-zlib compression type is only supported with compatibility "
                    "level 1.1 and above (use version=v3 or greater)", NULL);
    if (enc && !secrets_have(copts_str(o, "encrypt.key-secret")))
        return fail(errmsg, "No secret with id '%s'", copts_str(o, "encrypt.key-secret"));
    p->aes = enc && !strcmp(enc, "qcow");
    p->luks = enc && !strcmp(enc, "luks");
    p->key_secret = enc ? copts_str(o, "encrypt.key-secret") : NULL;
    if (p->luks)
        return luks_options(o, "encrypt.", &p->lo, errmsg);
    return 0;
}

/* qcow2_set_up_encryption with LUKS (qcow2_crypto_hdr_init_func / write_func): the LUKS
 * header and key material in newly allocated clusters (zeroed first, as qemu does), then
 * the header's crypt_method and crypto extension. */
static int set_up_luks(image_t *img, const struct qparams *p, char **errmsg)
{
    struct qcow2_state *s = img->priv;
    struct qcow2_image *m = &s->m;
    unsigned char *pass;
    size_t plen;
    int r = secrets_get(p->key_secret, &pass, &plen, errmsg);
    if (r < 0)
        return r;
    uint8_t hdr[LUKS_HEADER_LEN];
    uint8_t *km = NULL, *mk = NULL;
    size_t km_len = 0, mk_len = 0;
    uint64_t km_off = 0, len = 0;
    r = luks_create(&p->lo, pass, plen, hdr, &km, &km_len, &km_off, &mk, &mk_len, &len,
                    errmsg);
    memset(pass, 0, plen);
    free(pass);
    if (r < 0)
        return r;
    memset(mk, 0, mk_len);
    free(mk);
    uint64_t clen = (len + p->cs - 1) / p->cs * p->cs;
    int64_t at = qcow2_alloc_clusters(m, clen);
    if (at < 0) {
        r = (int)at;
        goto out;
    }
    uint8_t *zero = xcalloc(1, clen);
    r = qio_pwrite(img->file, zero, clen, (uint64_t)at);
    free(zero);
    if (r == 0)
        r = qio_pwrite(img->file, hdr, sizeof(hdr), (uint64_t)at);
    if (r == 0)
        r = qio_pwrite(img->file, km, km_len, (uint64_t)at + km_off);
    if (r == 0)
        r = qio_flush(img->file);
    if (r < 0)
        goto out;
    m->h.crypt_method = QCOW2_CRYPT_LUKS;
    m->ext.has_crypto = true;
    m->ext.crypto_offset = (uint64_t)at;
    m->ext.crypto_length = len;
    r = qcow2_image_update_header(m);
out:
    if (r < 0 && !*errmsg)
        *errmsg = xasprintf("Could not write encryption header: %s", strerror(-r));
    memset(km, 0, km_len);
    free(km);
    return r;
}

static int ctz64(uint64_t v)
{
    return __builtin_ctzll(v);
}

/* The first three clusters as qcow2_co_create writes them before opening the image; the
 * data file name goes in as an extension so the engine's open finds the data file (qemu
 * hands it the node instead); qcow2_update_header rewrites cluster 0 anyway. */
static int write_initial(qio_t *q, const struct qparams *p)
{
    size_t cs = p->cs;
    uint8_t *buf = xcalloc(3, cs);
    be32_put(buf + 0, 0x514649fb);
    be32_put(buf + 4, (uint32_t)p->version);
    be32_put(buf + 20, (uint32_t)ctz64(p->cs));
    be64_put(buf + 48, p->cs);     /* refcount_table_offset */
    be32_put(buf + 56, 1);         /* refcount_table_clusters */
    uint64_t incompat = 0, compat = 0, autoclear = 0;
    if (p->lazy)
        compat |= 1;
    if (p->data_file)
        incompat |= 1ull << 2;
    if (p->dfraw)
        autoclear |= 1ull << 1;
    if (p->compression)
        incompat |= 1ull << 3;
    if (p->extl2)
        incompat |= 1ull << 4;
    be64_put(buf + 72, incompat);
    be64_put(buf + 80, compat);
    be64_put(buf + 88, autoclear);
    be32_put(buf + 96, (uint32_t)ctz64((uint64_t)p->refcount_bits));
    be32_put(buf + 100, 112);
    buf[104] = (uint8_t)p->compression;
    size_t off = 112;
    if (p->data_file) {
        size_t n = strlen(p->data_file);
        if (off + 8 + ((n + 7) & ~7ul) + 8 > cs) {
            free(buf);
            return -ENOSPC;
        }
        be32_put(buf + off, 0x44415441);
        be32_put(buf + off + 4, (uint32_t)n);
        memcpy(buf + off + 8, p->data_file, n);
        off += 8 + ((n + 7) & ~7ul);
    }
    be64_put(buf + cs, 2 * cs); /* reftable[0] -> refblock at cluster 2 */
    int r = qio_pwrite(q, buf, 3 * cs, 0);
    free(buf);
    return r < 0 ? r : 0;
}

/* The data file grew from 0 through file-posix's truncate (off, metadata: ftruncate;
 * falloc: fallocate), which then writes the first block: the same allocation on disk */
static void first_block(const char *path, uint64_t size)
{
    qio_t *q;
    if (qio_open_file(path, QIO_RDWR, &q) < 0)
        return;
    file_allocate_first_block(q, size);
    qio_close(q);
}

/* qemu's raw_co_delete_file through bdrv_co_delete_file_noerr: a name that is no longer a
 * regular file (a data file that was the image itself, deleted just before) is reported,
 * with qemu's ENOENT whatever the cause, and left alone. */
static void delete_file(const char *name)
{
    struct stat st;
    if (stat(name, &st) != 0 || !S_ISREG(st.st_mode)) {
        err_report("%s is not a regular file: %s", name, strerror(ENOENT));
        return;
    }
    unlink(name);
}

static bool same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* *made: which files exist for the cleanup (1 image, 2 data file too) */
static int build(const char *filename, const struct qparams *p, char **errmsg, int *made)
{
    int r = file_create(filename, 0, NULL, errmsg);
    if (r < 0)
        return r;
    *made = 1;
    if (p->data_file) {
        r = file_create(p->data_file, 0, NULL, errmsg);
        if (r < 0)
            return r;
        *made = 2;
        /* a data file naming the image itself (or a link to it): qemu opens both protocol
         * nodes of the one file, and the qcow2 node, which takes RESIZE unshared on its
         * file, cannot attach the second one */
        if (same_file(filename, p->data_file)) {
            *errmsg = qio_lock_msg("resize", true, p->data_file);
            return -EAGAIN;
        }
    }
    qio_t *q = NULL;
    r = qio_open_file(filename, QIO_RDWR, &q);
    if (r < 0)
        return r;
    r = write_initial(q, p);
    qio_close(q);
    if (r < 0)
        return r;

    image_t *img = NULL;
    char *msg = NULL;
    r = image_open(filename, "qcow2", IMG_OPEN_RDWR | IMG_OPEN_NO_BACKING, &img, &msg);
    if (r < 0) {
        *errmsg = msg;
        return r;
    }
    struct qcow2_state *s = img->priv;
    struct qcow2_image *m = &s->m;
    int64_t at = qcow2_alloc_clusters(m, 3 * p->cs);
    if (at < 0) {
        r = (int)at;
        goto out;
    }
    r = qcow2_image_update_header(m);
    if (r < 0)
        goto out;
    if (p->size > INT64_MAX) {
        /* bdrv_co_truncate's int64_t */
        *errmsg = xstrdup("Could not resize image: Image size cannot be negative");
        r = -EINVAL;
        goto out;
    }
    r = image_truncate(img, p->size, p->prealloc, errmsg);
    if (r < 0)
        goto out;
    if (p->aes) {
        m->h.crypt_method = QCOW2_CRYPT_AES;
        if ((r = qcow2_image_update_header(m)) < 0)
            goto out;
    }
    if (p->backing) {
        free(m->backing_name);
        m->backing_name = xstrdup(p->backing);
        m->h.backing_file_offset = 1; /* "has a name": the header build places it */
        if (p->bfmt) {
            m->ext.has_backing_format = true;
            snprintf(m->ext.backing_format, sizeof(m->ext.backing_format), "%s", p->bfmt);
        }
        r = qcow2_image_update_header(m);
        if (r < 0) {
            free(*errmsg);
            *errmsg = NULL;
            size_t n = strlen(p->backing) + strlen(p->bfmt ? p->bfmt : "") + 64;
            *errmsg = xmalloc(n);
            snprintf(*errmsg, n, "Could not assign backing file '%s' with format '%s'",
                     p->backing, p->bfmt ? p->bfmt : "");
            goto out;
        }
    }
    if (p->luks && (r = set_up_luks(img, p, errmsg)) < 0)
        goto out;
    r = image_flush(img);
out:
    image_close(img);
    if (r == 0 && p->data_file && p->size > 0 &&
        (p->prealloc == IMG_PREALLOC_OFF || p->prealloc == IMG_PREALLOC_METADATA ||
         p->prealloc == IMG_PREALLOC_FALLOC))
        first_block(p->data_file, p->size);
    return r;
}

int qcow2_create(const char *filename, const struct copts *o, char **errmsg)
{
    struct qparams p;
    int made = 0;
    /* qemu creates the files before its option checks (qcow2_co_create_opts) */
    int r = validate(o, &p, errmsg);
    if (r < 0) {
        /* ... both, unless creating one of them fails (then that error is shown) */
        char *m2 = NULL;
        int r1 = file_create(filename, 0, NULL, &m2);
        if (r1 == 0) {
            made = 1;
            if (p.data_file && (r1 = file_create(p.data_file, 0, NULL, &m2)) == 0)
                made = 2;
        }
        if (r1 < 0) {
            free(*errmsg);
            *errmsg = m2;
            r = r1;
        } else {
            free(m2);
        }
    } else {
        r = build(filename, &p, errmsg, &made);
    }
    if (r < 0) {
        /* qemu deletes what it created (even a file that was there before); a file it
         * could not create (in use: lock refused) stays untouched */
        if (made >= 1)
            delete_file(filename);
        if (made >= 2)
            delete_file(p.data_file);
    }
    return r;
}
