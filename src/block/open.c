/* Opening an image and its backing chain the way qemu does: protocol file, format probe or
 * forced format, driver open, then the backing file named by the image (format from the image
 * or probed, name relative to the image's directory). Messages are qemu's. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#include "block/blockspec.h"
#include "block/blockspec_nbd.h"
#include "block/driver.h"
#include "format/probe.h"
#include "io/blkdebug.h"
#include "io/lock.h"
#include "io/null.h"
#include "io/quorum.h"
#include "util/err.h"
#include "util/xalloc.h"

/* qemu's bdrv_make_absolute_filename + path_combine(): absolute names and names with a
 * protocol prefix ("json:{...}", "file:x") as they are; others from the directory of base
 * (after base's own protocol prefix, if any). */
char *image_path_combine(const char *base, const char *name)
{
    if (name[0] == '/' || blockspec_has_protocol(name))
        return xstrdup(name);
    const char *p = base;
    if (blockspec_has_protocol(base))
        p = strchr(base, ':') + 1;
    const char *slash = strrchr(base, '/');
    if (slash && slash + 1 > p)
        p = slash + 1;
    return xasprintf("%.*s%s", (int)(p - base), base, name);
}

const char *image_no_dirname(const image_t *img)
{
    if (img->file && qio_is_quorum(img->file))
        return "quorum";
    return blockspec_is_nbd_name(img->filename) ? "NBD" : NULL;
}

char *image_backing_path(const image_t *img, const char *name)
{
    if (image_no_dirname(img) && name[0] != '/' && !blockspec_has_protocol(name))
        return NULL;
    return image_path_combine(img->filename, name);
}

char *image_backing_path_name(const char *base, const char *name)
{
    if (blockspec_is_nbd_name(base) && name[0] != '/' && !blockspec_has_protocol(name))
        return NULL;
    return image_path_combine(base, name);
}

static const char *probe(qio_t *f, int *err)
{
    uint64_t size;
    *err = qio_size(f, &size);
    if (*err < 0)
        return NULL;
    if (size == 0)
        return "raw"; /* qemu: empty files are raw without probing */
    uint8_t buf[PROBE_BUF_SIZE];
    *err = qio_pread(f, buf, sizeof(buf), 0); /* zero-filled past EOF, as qemu's read */
    if (*err < 0)
        return NULL;
    return probe_format(buf, sizeof(buf));
}

/* The files of the chain opened so far, by device and inode: a backing file that is one of
 * them closes a loop. (qemu has no such check and recurses until it runs out of memory or
 * file descriptors; qimg refuses the loop.) */
struct chain_ids {
    struct { dev_t dev; ino_t ino; } *v;
    size_t n, cap;
};

/* Adds q's file (an in-memory view of a file, such as repair's overlay, by its path);
 * false if it is already in the chain. */
static bool ids_add(struct chain_ids *ids, qio_t *q)
{
    struct stat st;
    if (q->fd >= 0 ? fstat(q->fd, &st) < 0 : !q->path || stat(q->path, &st) < 0)
        return true; /* cannot tell: no loop check for this one */
    for (size_t i = 0; i < ids->n; i++)
        if (ids->v[i].dev == st.st_dev && ids->v[i].ino == st.st_ino)
            return false;
    if (ids->n == ids->cap) {
        ids->cap = ids->cap ? ids->cap * 2 : 16;
        ids->v = xreallocarray(ids->v, ids->cap, sizeof(*ids->v));
    }
    ids->v[ids->n].dev = st.st_dev;
    ids->v[ids->n].ino = st.st_ino;
    ids->n++;
    return true;
}

/* The children of a quorum node (files, read-only, each locked as a reader), then the
 * node; its left-over options are reported after the children opened, as qemu does. */
static int open_quorum(const struct bs_resolved *res, const char *name, int flags, qio_t **out,
                       char **errmsg)
{
    if (flags & IMG_OPEN_RDWR) {
        *errmsg = xstrdup("Writing through a quorum node is not supported by qimg");
        return -ENOTSUP;
    }
    qio_t **ch = xcalloc(res->quorum_n, sizeof(*ch));
    int r = 0;
    size_t n = 0;
    for (; n < res->quorum_n && r == 0; n++) {
        const char *p = res->quorum_paths[n];
        r = qio_open_image(p, QIO_RDONLY, &ch[n], errmsg);
        if (r == 0 && (r = qio_lock_image(ch[n], false, false, flags & IMG_OPEN_SHARE, p,
                                          errmsg)) < 0)
            n++; /* close this one too */
        if (r < 0)
            break;
    }
    if (r == 0 && res->quorum_unknown) {
        *errmsg = xasprintf("Block format 'quorum' does not support the option '%s'",
                            res->quorum_unknown);
        r = -EINVAL;
    }
    if (r < 0) {
        for (size_t i = 0; i < n && i < res->quorum_n; i++)
            qio_close(ch[i]);
        free(ch);
        return r;
    }
    *out = qio_open_quorum(name, ch, res->quorum_n, res->quorum_threshold,
                           res->quorum_fifo);
    uint64_t size; /* quorum_co_getlength: the children must agree */
    if ((r = qio_size(*out, &size)) < 0) {
        *errmsg = xasprintf("Could not refresh total sector count: %s", strerror(-r));
        qio_close(*out);
        *out = NULL;
    }
    return r;
}

/* qemu's bdrv_refresh_filename: the key-secret is one of the strong options of qcow2, qcow
 * (encrypt.key-secret) and luks (key-secret), so a node opened with one is named by its
 * options, json:{...}, in info's "image:" line and wherever qemu prints bs->filename. */
static void key_display(image_t *img, const struct bs_resolved *res)
{
    if (img->display_name || img->file_display || !img->key_secret || res->nbd ||
        res->file_blkdebug)
        return;
    const char *k = !strcmp(img->format, "luks") ? "key-secret"
                    : !strcmp(img->format, "qcow2") || !strcmp(img->format, "qcow")
                        ? "encrypt.key-secret" : NULL;
    if (!k)
        return;
    /* qemu's qdict order of these keys: encrypt.key-secret first, key-secret last; the
     * key stays flat ("encrypt.key-secret" is one key), so it is added around the rest */
    struct bspec d = { 0 };
    bspec_put_str(&d, "driver", img->format, true);
    bspec_put_str(&d, "file.driver", "file", true);
    bspec_put_str(&d, "file.filename", img->filename, true);
    char *j = bspec_to_json(&d), *val = bspec_json_string(img->key_secret);
    int inner = (int)strlen(j) - 2; /* j without its braces */
    if (!strcmp(k, "key-secret"))
        img->display_name = xasprintf("json:{%.*s, \"%s\": %s}", inner, j + 1, k, val);
    else
        img->display_name = xasprintf("json:{\"%s\": %s, %.*s}", k, val, inner, j + 1);
    free(j);
    free(val);
    bspec_free(&d);
}

/* Opens one layer, not its backing file: name (any name, see blockspec.h; NULL with options
 * only) with options opts (NULL: none) and format fmt (NULL: from the options or probed).
 * errmsg gets the text qemu prints after the prefixes ("Could not open 'TOP': " and one
 * "Could not open backing file: " per level). */
static int open_layer(const char *name, const struct bspec *opts, const char *fmt, int flags,
                      struct chain_ids *ids, image_t **out, char **errmsg)
{
    *out = NULL;
    struct bs_resolved res;
    int r = blockspec_resolve(name, opts, fmt, !(flags & IMG_OPEN_NO_BACKING), &res, errmsg);
    if (r < 0)
        return r;
    fmt = res.protocol_only ? "raw" : res.format;
    const char *filename = res.path;
    if (fmt && !driver_find(fmt)) { /* qemu looks the driver up before opening the file */
        *errmsg = xasprintf("Unknown driver '%s'", fmt);
        blockspec_resolved_free(&res);
        return -EINVAL;
    }
    if ((r = blockspec_read_blkdebug(&res, errmsg)) < 0) {
        blockspec_resolved_free(&res);
        return r;
    }
    if (res.rules.unsupported && !(flags & IMG_OPEN_NO_IO)) {
        /* a metadata-only open (info, create's backing) does no guest I/O; anything else
         * would silently miss the rule's errors */
        *errmsg = xasprintf("blkdebug event '%s' is not supported by qimg",
                            res.rules.unsupported);
        blockspec_resolved_free(&res);
        return -ENOTSUP;
    }
    if (res.top_rules.unsupported && !(flags & IMG_OPEN_NO_IO)) {
        *errmsg = xasprintf("blkdebug event '%s' is not supported by qimg",
                            res.top_rules.unsupported);
        blockspec_resolved_free(&res);
        return -ENOTSUP;
    }
    if (res.other_rules && !(flags & IMG_OPEN_NO_IO)) {
        /* rules of a blkdebug on the data file: no qimg driver announces events there */
        *errmsg = xstrdup("blkdebug error injection is only supported on the image's file "
                          "by qimg");
        blockspec_resolved_free(&res);
        return -ENOTSUP;
    }
    image_t *img = xcalloc(1, sizeof(*img));
    img->filename = res.path; /* the file's own name from here on, as qemu's file node */
    res.path = NULL;
    filename = img->filename;
    img->key_secret = res.key_secret;
    res.key_secret = NULL;
    img->encrypt_format = res.encrypt_format;
    res.encrypt_format = NULL;
    img->flags = flags;
    img->display_name = res.display;
    res.display = NULL;
    img->file_display = res.file_display;
    res.file_display = NULL;
    img->backing_none = res.backing == BS_BACKING_NONE;
    img->data_file_opt = res.data_file;
    res.data_file = NULL;
    img->data_file_label = res.data_label;
    res.data_label = NULL;
    if (res.backing == BS_BACKING_OPTS) {
        img->backing_opts = xcalloc(1, sizeof(*img->backing_opts));
        *img->backing_opts = res.backing_opts;
        res.backing_opts = (struct bspec){ 0 };
    }
    img->raw_window = res.has_offset || res.has_size;
    img->raw_offset = res.offset;
    img->raw_size = res.has_size ? res.size : 0;
    if (img->raw_window && !res.has_size)
        img->raw_size = UINT64_MAX; /* to the end of the file */
    if (res.read_only && (flags & IMG_OPEN_RDWR)) {
        /* qemu: the node is read-only and the command wants to write it */
        *errmsg = xstrdup("Block node is read-only");
        r = -EACCES;
        goto fail;
    }
    if (res.quorum_n)
        r = open_quorum(&res, filename, flags, &img->file, errmsg);
    else if (res.null_drv)
        img->file = qio_open_null(filename, res.null_size, res.null_zeroes,
                                  (flags & IMG_OPEN_RDWR) ? QIO_RDWR : QIO_RDONLY);
    else if (res.nbd)
        r = qio_open_nbd(res.nbd, (flags & IMG_OPEN_RDWR) ? QIO_RDWR : QIO_RDONLY, &img->file,
                         errmsg);
    else if (res.ssh)
        r = qio_open_ssh(res.ssh, (flags & IMG_OPEN_RDWR) ? QIO_RDWR : QIO_RDONLY, &img->file,
                         errmsg);
    else
        r = qio_open_image(filename, (flags & IMG_OPEN_RDWR) ? QIO_RDWR : QIO_RDONLY,
                           &img->file, errmsg);
    if (r < 0)
        goto fail;
    if ((*errmsg = blockspec_file_unknown_msg(&res))) {
        r = -EINVAL;
        goto fail;
    }
    if (res.direct && !res.nbd && !res.ssh && !res.null_drv && !res.quorum_n &&
        (r = qio_probe_direct_align(filename, &img->file->align)) < 0) {
        *errmsg = xasprintf("Could not open '%s': %s", filename, strerror(-r));
        goto fail;
    }
    if (res.file_blkdebug) {
        img->file = qio_blkdebug_wrap(img->file, &res.rules);
        res.rules = (struct blkdebug_rules){ 0 };
    }
    if (!ids_add(ids, img->file)) {
        *errmsg = xasprintf("Backing file '%s' creates an infinite loop.", filename);
        r = -ELOOP;
        goto fail;
    }

    if (!fmt) {
        fmt = probe(img->file, &r);
        if (!fmt) {
            *errmsg = xasprintf("Could not read image for determining its format: %s",
                                strerror(-r));
            goto fail;
        }
        img->probed = true;
    }
    img->drv = driver_find(fmt);
    if (!img->drv) {
        *errmsg = img->probed ? xasprintf("Image format '%s' is not supported by qimg", fmt)
                              : xasprintf("Unknown driver '%s'", fmt);
        r = -ENOTSUP;
        goto fail;
    }
    img->format = !res.protocol_only ? img->drv->name
                  : res.nbd              ? "nbd"
                  : res.ssh              ? "ssh"
                  : res.null_drv         ? res.null_drv
                  : res.quorum_n         ? "quorum"
                                         : "file";
    /* qemu's permissions (raw: the parent's, all shared; formats with metadata keep others
     * from writing or resizing the file under them), taken when the format attaches its
     * file, before reading it; -U shares everything. */
    r = qio_lock_image(img->file, flags & IMG_OPEN_RDWR, strcmp(img->drv->name, "raw") != 0,
                       flags & IMG_OPEN_SHARE, filename, errmsg);
    if (r < 0)
        goto fail;
    img->data_file = img->file;
    r = img->drv->open(img, errmsg);
    if (r < 0)
        goto fail; /* close() frees what open() built so far */
    if (img->size > IMG_MAX_LENGTH) {
        *errmsg = xstrdup("Could not refresh total sector count: File too large");
        r = -EFBIG;
        goto fail;
    }
    if ((*errmsg = blockspec_format_unknown_msg(&res, img->format))) {
        r = -EINVAL;
        goto fail;
    }
    if (res.top_blkdebug) {
        /* the filter above the format: its rules on this layer's requests, its name */
        img->top_bd = xcalloc(1, sizeof(*img->top_bd));
        blkdebug_state_init(img->top_bd, &res.top_rules);
        img->format = "blkdebug";
        if (res.top_display) {
            free(img->display_name);
            img->display_name = res.top_display;
            res.top_display = NULL;
        }
    }
    key_display(img, &res);
    if (flags & IMG_OPEN_RDWR)
        image_warn_probed_raw(img, filename);
    blockspec_resolved_free(&res);
    *out = img;
    return 0;
fail:
    blockspec_resolved_free(&res);
    image_close(img);
    return r;
}

void image_warn_probed_raw(const image_t *img, const char *filename)
{
    if (img->probed && !strcmp(img->format, "raw"))
        fprintf(stderr, "WARNING: Image format was not specified for '%s' and probing guessed "
                "raw.\n         Automatically detecting the format is dangerous for raw "
                "images, write operations on block 0 will be restricted.\n         Specify "
                "the 'raw' format explicitly to remove the restrictions.\n", filename);
}

/* Opens the backing chain below img, one layer after the other (no recursion: qemu-img
 * opens chains of thousands of images and so does qimg, limited only by file descriptors
 * and memory, as qemu is). Backing images are opened read-only: only commit writes into
 * them. On failure img keeps the layers opened so far (image_close() frees them) and
 * errmsg gets "Could not open backing file: " once per level, then the failing layer's
 * text, as qemu nests them. */
static int open_chain(image_t *img, int flags, struct chain_ids *ids, char **errmsg)
{
    size_t level = 0;
    for (; img->backing_file || img->backing_opts; img = img->backing) {
        if (img->backing_none)
            break;
        if (++level > IMG_MAX_BACKING) {
            *errmsg = xasprintf("Backing chain too deep: more than %d backing files",
                                IMG_MAX_BACKING);
            return -ELOOP;
        }
        char *inner = NULL;
        /* qemu's bdrv_open_backing_hd(): backing.* options of the overlay's open first
         * (a backing.driver wins over the stored backing format), the stored name unless
         * the options name the file themselves */
        const struct bspec *bo = img->backing_opts;
        bool named = false;
        for (size_t i = 0; bo && i < bo->n; i++)
            named |= !strncmp(bo->v[i].key, "file", 4);
        if (!named && !img->backing_full) {
            /* a relative backing name under an image on NBD or a quorum
             * (image_backing_path) */
            inner = xasprintf("Cannot generate a base directory for %s nodes",
                              image_no_dirname(img) ? image_no_dirname(img) : "NBD");
            level--; /* qemu fails before it tries to open the backing file */
        }
        int r = inner ? -EINVAL
                      : open_layer(named ? NULL : img->backing_full, bo, img->backing_format,
                           flags & ~(IMG_OPEN_RDWR | IMG_OPEN_IMAGE_OPTS), ids, &img->backing,
                           &inner);
        if (r < 0) {
            const char *pre = "Could not open backing file: ";
            size_t plen = strlen(pre), ilen = strlen(inner);
            if (level > (SIZE_MAX - ilen - 1) / plen)
                xalloc_oom(SIZE_MAX);
            char *m = xmalloc(level * plen + ilen + 1);
            for (size_t i = 0; i < level; i++)
                memcpy(m + i * plen, pre, plen);
            memcpy(m + level * plen, inner, ilen + 1);
            free(inner);
            *errmsg = m;
            return r;
        }
    }
    return 0;
}

int image_open(const char *filename, const char *fmt, int flags, image_t **out, char **errmsg)
{
    return image_open_opts(filename, NULL, fmt, flags, out, errmsg);
}

int image_open_opts(const char *filename, const struct bspec *extra, const char *fmt, int flags,
                    image_t **out, char **errmsg)
{
    struct chain_ids ids = { 0 };
    char *inner = NULL;
    image_t *img;
    struct bspec kv = { 0 };
    if (flags & IMG_OPEN_IMAGE_OPTS)
        bspec_parse_keyval(filename, &kv);
    for (size_t i = 0; extra && i < extra->n; i++)
        bspec_put(&kv, &extra->v[i], true);
    int r;
    if (!filename[0] && !(flags & IMG_OPEN_IMAGE_OPTS)) {
        /* file-posix refuses an empty name before anything is tried */
        r = -EINVAL;
        img = NULL;
        inner = xstrdup("The 'file' block driver requires a file name");
    } else {
        r = open_layer((flags & IMG_OPEN_IMAGE_OPTS) ? NULL : filename, &kv, fmt, flags, &ids,
                       &img, &inner);
    }
    bspec_free(&kv);
    if (r == 0 && !(flags & IMG_OPEN_NO_BACKING)) {
        r = open_chain(img, flags, &ids, &inner);
        if (r < 0) {
            image_close(img);
            img = NULL;
        }
    }
    free(ids.v);
    *out = img;
    if (r < 0) {
        *errmsg = xasprintf("Could not open '%s': %s", filename, inner);
        free(inner);
    }
    return r;
}

int image_open_backing_of(qio_t *top, const char *path, const char *fmt, int flags,
                          image_t **out, char **errmsg)
{
    return image_open_backing_with(top, path, fmt, NULL, flags, out, errmsg);
}

int image_open_backing_with(qio_t *top, const char *path, const char *fmt,
                            const struct bspec *opts, int flags, image_t **out, char **errmsg)
{
    struct chain_ids ids = { 0 };
    ids_add(&ids, top);
    /* a stand-in for the top image so that open_chain() nests the messages */
    image_t stub = { 0 };
    stub.backing_file = (char *)path;
    stub.backing_full = (char *)path;
    stub.backing_format = (char *)fmt;
    stub.backing_opts = (struct bspec *)opts; /* only read */
    int r = open_chain(&stub, flags & ~IMG_OPEN_IMAGE_OPTS, &ids, errmsg);
    free(ids.v);
    if (r < 0) {
        image_close(stub.backing);
        stub.backing = NULL;
    }
    *out = stub.backing;
    return r;
}

const char *image_name(const image_t *img)
{
    return img->display_name ? img->display_name : image_file_name(img);
}

const char *image_file_name(const image_t *img)
{
    return img->file_display ? img->file_display : img->filename;
}

image_t *image_open_or_report(const char *filename, const char *fmt, int flags)
{
    image_t *img;
    char *msg = NULL;
    if (image_open(filename, fmt, flags, &img, &msg) < 0) {
        err_report("%s", msg);
        free(msg);
        return NULL;
    }
    return img;
}

void image_skip_filters(image_t *img)
{
    if (img->top_bd) {
        blkdebug_state_free(img->top_bd);
        free(img->top_bd);
        img->top_bd = NULL;
    }
}

void image_close(image_t *img)
{
    while (img) {
        image_t *below = img->backing;
        if (img->drv && img->drv->close)
            img->drv->close(img);
        if (img->data_file && img->data_file != img->file)
            qio_close(img->data_file);
        qio_close(img->file);
        free(img->filename);
        free(img->display_name);
        free(img->file_display);
        free(img->data_file_opt);
        if (img->backing_opts)
            bspec_free(img->backing_opts);
        free(img->backing_opts);
        free(img->data_file_name);
        free(img->key_secret);
        free(img->encrypt_format);
        free(img->data_file_label);
        if (img->top_bd)
            blkdebug_state_free(img->top_bd);
        free(img->top_bd);
        free(img->backing_file);
        free(img->backing_full);
        free(img->backing_format);
        free(img);
        img = below;
    }
}
