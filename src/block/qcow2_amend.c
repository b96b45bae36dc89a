/* `qimg amend` for qcow2: qemu 7.2's qcow2_amend_options (block/qcow2.c) with
 * qcow2_upgrade, qcow2_downgrade (qcow2_expand_zero_clusters: qcow2_expand.c) and
 * qcow2_change_refcount_order (qcow2/refcount_order.c), in qemu's order: upgrade, refcount
 * width, header (data file name, data-file-raw), backing check, lazy refcounts, size,
 * downgrade. Progress goes through qemu's qcow2_amend_helper_cb arithmetic so that -p
 * prints the same lines. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "block/amend.h"
#include "block/luks.h"
#include "block/qcow2_amend.h"
#include "block/qcow2_int.h"
#include "qcow2/alloc.h"
#include "qcow2/header_write.h"
#include "qcow2/overlap.h"
#include "qcow2/port.h"
#include "qcow2/refcount_order.h"
#include "qcow2/snapshot_write.h"
#include "crypto/luks_amend.h"
#include "util/xalloc.h"

/* qemu's qcow2_amend_opts: the LUKS keyslot options, then QCOW_COMMON_OPTIONS */
static const struct copt_desc amend_list[] = {
    { "encrypt.state", COPT_STR, "Select new state of affected keyslots (active/inactive)",
      NULL },
    { "encrypt.keyslot", COPT_NUM, "Select a single keyslot to modify explicitly", NULL },
    { "encrypt.old-secret", COPT_STR, "Select all keyslots that match this password", NULL },
    { "encrypt.new-secret", COPT_STR,
      "New secret to set in the matching keyslots. Empty string to erase", NULL },
    { "encrypt.iter-time", COPT_NUM, "Time to spend in PBKDF in milliseconds", NULL },
    { "size", COPT_SIZE, "Virtual disk size", NULL },
    { "compat", COPT_STR, "Compatibility level (v2 [0.10] or v3 [1.1])", NULL },
    { "backing_file", COPT_STR, "File name of a base image", NULL },
    { "backing_fmt", COPT_STR, "Image format of the base image", NULL },
    { "data_file", COPT_STR, "File name of an external data file", NULL },
    { "data_file_raw", COPT_BOOL, "The external data file must stay valid as a raw image",
      NULL },
    { "lazy_refcounts", COPT_BOOL, "Postpone refcount updates", "off" },
    { "refcount_bits", COPT_NUM, "Width of a reference count entry in bits", "16" },
    { NULL, 0, NULL, NULL },
};

/* block/crypto.c's block_crypto_amend_opts_luks */
static const struct copt_desc luks_amend_list[] = {
    { "state", COPT_STR, "Select new state of affected keyslots (active/inactive)", NULL },
    { "keyslot", COPT_NUM, "Select a single keyslot to modify explicitly", NULL },
    { "old-secret", COPT_STR, "Select all keyslots that match this password", NULL },
    { "new-secret", COPT_STR,
      "New secret to set in the matching keyslots. Empty string to erase", NULL },
    { "iter-time", COPT_NUM, "Time to spend in PBKDF in milliseconds", NULL },
    { NULL, 0, NULL, NULL },
};

void amend_opts_init(struct copts *o, const char *fmt, bool with_create)
{
    bool luks = !strcmp(fmt, "luks");
    memset(o, 0, sizeof(*o));
    o->fmt = luks ? "luks" : "qcow2";
    for (const struct copt_desc *d = luks ? luks_amend_list : amend_list; d->name; d++)
        o->desc[o->n++] = d;
    if (!with_create)
        return;
    struct copts c;
    copts_init(&c, o->fmt, false);
    for (size_t i = 0; i < c.n && o->n < COPTS_MAX; i++) {
        bool have = false;
        for (size_t k = 0; k < o->n && !have; k++)
            have = !strcmp(o->desc[k]->name, c.desc[i]->name);
        if (!have)
            o->desc[o->n++] = c.desc[i];
    }
    copts_free(&c);
}

bool amend_format_supported(const char *fmt)
{
    return !strcmp(fmt, "qcow2") || !strcmp(fmt, "luks");
}

/* qemu's Qcow2AmendHelperCBInfo and qcow2_amend_helper_cb */
enum amend_op { OP_NONE, OP_UPGRADING, OP_ENCRYPTION, OP_REFCOUNT_ORDER, OP_DOWNGRADING };

struct helper {
    amend_status_fn cb;
    void *opaque;
    enum amend_op current, last;
    int total_ops, ops_done;
    int64_t offset_done, last_work;
};

static void helper_cb(void *opaque, int64_t off, int64_t work)
{
    struct helper *h = opaque;
    if (h->current != h->last) {
        if (h->last != OP_NONE) {
            h->offset_done += h->last_work;
            h->ops_done++;
        }
        h->last = h->current;
    }
    if (h->total_ops <= 0 || h->ops_done >= h->total_ops)
        return;   /* qemu asserts */
    h->last_work = work;
    int64_t cur = h->offset_done + work;
    int64_t projected = cur * (h->total_ops - h->ops_done - 1) / (h->ops_done + 1);
    if (h->cb)
        h->cb(h->opaque, h->offset_done + off, cur + projected);
}

static char *errno_msg(const char *what, int r)
{
    return xasprintf("%s: %s", what, strerror(-r));
}

/* qemu's qcow2_upgrade (v2 -> v3) */
static int upgrade(image_t *img, struct helper *h, char **errmsg)
{
    struct qcow2_state *s = img->priv;
    helper_cb(h, 0, 2);
    /* v3 wants the 64-bit VM state size and the disk size in every snapshot */
    bool rewrite = false;
    for (uint32_t i = 0; i < s->nb_sn; i++)
        if (s->sn[i].extra_data_size < 16)
            rewrite = true;
    int r;
    if (rewrite && (r = qcow2_write_snapshots(&s->m)) < 0) {
        *errmsg = errno_msg("Failed to update the snapshot table", r);
        return r;
    }
    helper_cb(h, 1, 2);
    s->h.version = 3;
    if ((r = qcow2_image_update_header(&s->m)) < 0) {
        s->h.version = 2;
        s->h.header_length = QCOW2_HDR_V2_LEN;
        *errmsg = errno_msg("Failed to update the image header", r);
        return r;
    }
    helper_cb(h, 2, 2);
    return 0;
}

/* qemu's qcow2_has_compressed_clusters: the active image's mapping only */
static int has_compressed(image_t *img)
{
    uint64_t off = 0, bytes = img->size;
    while (bytes) {
        struct qcow2_run run;
        int r = qcow2_get_run(img, off, bytes, &run);
        if (r < 0)
            return r;
        if (run.type == QCOW2_SUBCLUSTER_COMPRESSED)
            return 1;
        off += run.bytes;
        bytes -= run.bytes;
    }
    return 0;
}

/* qemu's qcow2_downgrade (v3 -> v2) */
static int downgrade(image_t *img, struct helper *h, char **errmsg)
{
    struct qcow2_state *s = img->priv;
    int r;
    if (s->h.refcount_order != 4) {
        *errmsg = xstrdup("compat=0.10 requires refcount_bits=16");
        return -ENOTSUP;
    }
    if (s->geom.data_file) {
        *errmsg = xstrdup("Cannot downgrade an image with a data file");
        return -ENOTSUP;
    }
    for (uint32_t i = 0; i < s->nb_sn; i++) {
        if (s->sn[i].vm_state_size > UINT32_MAX || s->sn[i].disk_size != img->size) {
            *errmsg = xstrdup("Internal snapshots prevent downgrade of image");
            return -ENOTSUP;
        }
    }
    if ((s->h.incompatible_features & QCOW2_INCOMPAT_DIRTY) &&
        (r = qcow2_image_mark_clean(&s->m)) < 0) {
        *errmsg = errno_msg("Failed to make the image clean", r);
        return r;
    }
    uint64_t bad = s->h.incompatible_features & ~(uint64_t)QCOW2_INCOMPAT_COMPRESSION;
    if (bad) {
        *errmsg = xasprintf("Cannot downgrade an image with incompatible features 0x%" PRIx64
                            " set", bad);
        return -ENOTSUP;
    }
    /* qemu clears these in memory now; they reach the disk with the v2 header (which has
     * no such fields) or, if the downgrade fails later, with a later header write */
    s->h.compatible_features = 0;
    s->h.autoclear_features = 0;
    if ((r = qcow2_expand_zero_clusters(img, helper_cb, h)) < 0) {
        *errmsg = errno_msg("Failed to turn zero into data clusters", r);
        return r;
    }
    if (s->h.incompatible_features & QCOW2_INCOMPAT_COMPRESSION) {
        r = has_compressed(img);
        if (r < 0) {
            *errmsg = xstrdup("Failed to check block status");
            return -EINVAL;
        }
        if (r) {
            *errmsg = xstrdup("Cannot downgrade an image with zstd compression type and "
                              "existing compressed clusters");
            return -ENOTSUP;
        }
        s->h.incompatible_features &= ~(uint64_t)QCOW2_INCOMPAT_COMPRESSION;
        s->h.compression_type = 0;
    }
    s->h.version = 2;
    if ((r = qcow2_image_update_header(&s->m)) < 0) {
        s->h.version = 3;
        *errmsg = errno_msg("Failed to update the image header", r);
        return r;
    }
    return 0;
}

static bool opt_set(const struct copts *o, size_t i)
{
    return o->str[i] != NULL;
}

/* qcow2_crypto_hdr_read_func / qcow2_crypto_hdr_write_func: the LUKS header region is the
 * crypto header extension's range; writes go through the metadata write port (guarded:
 * the range must not overlap qcow2 metadata) */
static int hdr_range(const struct qcow2_state *s, uint64_t off, size_t len, char **errmsg)
{
    if (off > s->ext.crypto_length || len > s->ext.crypto_length - off) {
        *errmsg = xstrdup("Request for data outside of extension header");
        return -EINVAL;
    }
    return 0;
}

static int crypt_hdr_read(void *opaque, uint64_t off, void *buf, size_t len, char **errmsg)
{
    image_t *img = opaque;
    struct qcow2_state *s = img->priv;
    int r = hdr_range(s, off, len, errmsg);
    if (r == 0 && (r = qio_pread(s->m.q, buf, len, s->ext.crypto_offset + off)) < 0)
        *errmsg = xasprintf("Could not read encryption header: %s", strerror(-r));
    return r;
}

static int crypt_hdr_write(void *opaque, uint64_t off, const void *buf, size_t len,
                           char **errmsg)
{
    image_t *img = opaque;
    struct qcow2_state *s = img->priv;
    int r = hdr_range(s, off, len, errmsg);
    if (r == 0 &&
        (r = qcow2_meta_pwrite(&s->m, QCOW2_OL_NONE, s->ext.crypto_offset + off, buf, len)) < 0)
        *errmsg = xasprintf("Could not read encryption header: %s", strerror(-r)); /* qemu's */
    return r;
}

static int crypt_hdr_flush(void *opaque, char **errmsg)
{
    image_t *img = opaque;
    struct qcow2_state *s = img->priv;
    int r = qcow2_meta_flush(&s->m);
    if (r < 0)
        *errmsg = xasprintf("Could not flush encryption header: %s", strerror(-r));
    return r;
}

/* qcow2_amend_options' encryption update: the encrypt.* options to the LUKS block */
static int update_encryption(image_t *img, const struct copts *o, bool force, char **errmsg)
{
    struct qcow2_state *s = img->priv;
    struct luks_amend_opts lo;
    int r = luks_amend_opts_read(o, "encrypt.", &lo, errmsg);
    if (r < 0)
        return r;
    struct luks_io io = { crypt_hdr_read, crypt_hdr_write, crypt_hdr_flush, img };
    return luks_amend(s->luks, &io, &lo, img->key_secret, force, errmsg);
}

int image_amend(image_t *img, const struct copts *o, bool force, amend_status_fn cb,
                void *opaque, char **errmsg)
{
    if (!strcmp(img->format, "luks"))
        return luks_format_amend(img, o, force, errmsg);
    struct qcow2_state *s = img->priv;
    int old_version = (int)s->h.version, new_version = old_version;
    uint64_t new_size = 0;
    const char *backing_file = NULL, *backing_fmt = NULL, *data_file = NULL;
    bool lazy = qcow2_image_lazy_refcounts(&s->m);
    bool raw_now = (s->h.autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW) != 0;
    bool data_file_raw = raw_now;
    int refcount_bits = (int)s->h.refcount_bits;
    bool encryption_update = false;
    int r;

    /* in desc order, only what was given, as qemu's loop */
    for (size_t i = 0; i < o->n; i++) {
        if (!opt_set(o, i))
            continue;
        const char *name = o->desc[i]->name, *v = o->str[i];
        if (!strcmp(name, "compat")) {
            if (!strcmp(v, "0.10") || !strcmp(v, "v2")) {
                new_version = 2;
            } else if (!strcmp(v, "1.1") || !strcmp(v, "v3")) {
                new_version = 3;
            } else {
                *errmsg = xasprintf("Unknown compatibility level %s", v);
                return -EINVAL;
            }
        } else if (!strcmp(name, "size")) {
            new_size = o->val[i];
        } else if (!strcmp(name, "backing_file")) {
            backing_file = v;
        } else if (!strcmp(name, "backing_fmt")) {
            backing_fmt = v;
        } else if (!strncmp(name, "encrypt.", 8)) {
            if (s->h.crypt_method == 0) {
                *errmsg = xstrdup("Can't amend encryption options - encryption not present");
                return -EINVAL;
            }
            if (s->h.crypt_method != QCOW2_CRYPT_LUKS) {
                *errmsg = xstrdup("Only LUKS encryption options can be amended");
                return -ENOTSUP;
            }
            encryption_update = true;
        } else if (!strcmp(name, "lazy_refcounts")) {
            lazy = o->val[i] != 0;
        } else if (!strcmp(name, "refcount_bits")) {
            refcount_bits = (int)o->val[i];   /* qemu keeps it in an int */
            if (refcount_bits <= 0 || refcount_bits > 64 ||
                (refcount_bits & (refcount_bits - 1))) {
                *errmsg = xstrdup("Refcount width must be a power of two and may not exceed "
                                  "64 bits");
                return -EINVAL;
            }
        } else if (!strcmp(name, "data_file")) {
            data_file = v;
            if (!s->geom.data_file) {
                *errmsg = xstrdup("data-file can only be set for images that use an "
                                  "external data file");
                return -EINVAL;
            }
        } else if (!strcmp(name, "data_file_raw")) {
            data_file_raw = o->val[i] != 0;
            if (data_file_raw && !raw_now) {
                *errmsg = xstrdup("data-file-raw cannot be set on existing images");
                return -EINVAL;
            }
        }
    }

    struct helper h = {
        .cb = cb, .opaque = opaque,
        .total_ops = (new_version != old_version) + (refcount_bits != (int)s->h.refcount_bits) +
                     encryption_update,
    };

    if (new_version > old_version) {
        h.current = OP_UPGRADING;
        if ((r = upgrade(img, &h, errmsg)) < 0)
            return r;
    }
    if (encryption_update) {
        h.current = OP_ENCRYPTION;   /* qemu reports no progress for it */
        if ((r = update_encryption(img, o, force, errmsg)) < 0)
            return r;
    }
    if (refcount_bits != (int)s->h.refcount_bits) {
        if (new_version < 3 && refcount_bits != 16) {
            *errmsg = xstrdup("Refcount widths other than 16 bits require compatibility "
                              "level 1.1 or above (use compat=1.1 or greater)");
            return -EINVAL;
        }
        h.current = OP_REFCOUNT_ORDER;
        unsigned order = 0;
        while ((1 << order) < refcount_bits)
            order++;
        if ((r = qcow2_change_refcount_order(&s->m, order, helper_cb, &h, errmsg)) < 0)
            return r;
    }

    /* data-file-raw blocks backing files, so it is cleared first (qemu's comment) */
    if (data_file_raw)
        s->h.autoclear_features |= QCOW2_AUTOCLEAR_DATA_FILE_RAW;
    else
        s->h.autoclear_features &= ~(uint64_t)QCOW2_AUTOCLEAR_DATA_FILE_RAW;
    if (data_file) {
        free(s->ext.data_file);
        s->ext.data_file = NULL;
        s->ext.data_file_len = 0;
        s->ext.has_data_file = *data_file != 0;
        if (*data_file) {
            s->ext.data_file = xstrdup(data_file);
            s->ext.data_file_len = (uint32_t)strlen(data_file);
        }
    }
    if ((r = qcow2_image_update_header(&s->m)) < 0) {
        *errmsg = errno_msg("Failed to update the image header", r);
        return r;
    }

    if (backing_file || backing_fmt) {
        const char *cur_fmt = s->ext.has_backing_format ? s->ext.backing_format : NULL;
        const char *cur_file = s->h.backing_file_offset ?
                               (s->backing_name ? s->backing_name : "") : NULL;
        bool file_differs = (backing_file == NULL) != (cur_file == NULL) ||
                            (backing_file && strcmp(backing_file, cur_file));
        bool fmt_differs = (backing_fmt == NULL) != (cur_fmt == NULL) ||
                           (backing_fmt && strcmp(backing_fmt, cur_fmt));
        if (file_differs || fmt_differs) {
            *errmsg = xstrdup("Cannot amend the backing file\n"
                              "You can use 'qemu-img rebase' instead.");
            return -EINVAL;
        }
    }

    if (qcow2_image_lazy_refcounts(&s->m) != lazy) {
        if (lazy) {
            if (new_version < 3) {
                *errmsg = xstrdup("Lazy refcounts only supported with compatibility level "
                                  "1.1 and above (use compat=1.1 or greater)");
                return -EINVAL;
            }
            s->h.compatible_features |= QCOW2_COMPAT_LAZY_REFCOUNTS;
            if ((r = qcow2_image_update_header(&s->m)) < 0) {
                s->h.compatible_features &= ~(uint64_t)QCOW2_COMPAT_LAZY_REFCOUNTS;
                *errmsg = errno_msg("Failed to update the image header", r);
                return r;
            }
        } else {
            if ((r = qcow2_image_mark_clean(&s->m)) < 0) {
                *errmsg = errno_msg("Failed to make the image clean", r);
                return r;
            }
            s->h.compatible_features &= ~(uint64_t)QCOW2_COMPAT_LAZY_REFCOUNTS;
            if ((r = qcow2_image_update_header(&s->m)) < 0) {
                s->h.compatible_features |= QCOW2_COMPAT_LAZY_REFCOUNTS;
                *errmsg = errno_msg("Failed to update the image header", r);
                return r;
            }
        }
    }

    if (new_size) {
        /* blk_truncate(exact=true, PREALLOC_MODE_OFF) */
        if ((r = image_truncate(img, new_size, IMG_PREALLOC_OFF, errmsg)) < 0)
            return r;
    }

    if (new_version < old_version) {
        h.current = OP_DOWNGRADING;
        if ((r = downgrade(img, &h, errmsg)) < 0)
            return r;
    }
    return 0;
}
