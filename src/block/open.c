/* Opening an image and its backing chain the way qemu does: protocol file, format probe or
 * forced format, driver open, then the backing file named by the image (format from the image
 * or probed, name relative to the image's directory). Messages are qemu's. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#include "block/driver.h"
#include "block/spec.h"
#include "format/probe.h"
#include "io/blkdebug.h"
#include "io/lock.h"
#include "util/err.h"
#include "util/xalloc.h"

bool image_path_has_protocol(const char *name)
{
    return name[strcspn(name, ":/")] == ':';
}

/* qemu's bdrv_make_absolute_filename + path_combine(): a name with a protocol prefix or an
 * absolute one stays as it is; else it is taken from the directory of base (after base's
 * own protocol prefix, if any). */
char *image_path_combine(const char *base, const char *name)
{
    if (name[0] == '/' || image_path_has_protocol(name))
        return xstrdup(name);
    const char *p = base;
    if (image_path_has_protocol(base))
        p = strchr(base, ':') + 1;
    const char *slash = strrchr(base, '/');
    if (slash && slash + 1 > p)
        p = slash + 1;
    return xasprintf("%.*s%s", (int)(p - base), base, name);
}

/* Protocols qemu 7.2 (Debian's build, without the extra modules) knows besides "file".
 * qimg does not open them (yet): such names are left as they are and fail to open. */
static const char *const other_protocols[] = {
    "json", "nbd", "nbd+tcp", "nbd+unix", "nbd+vsock", "host_device", "host_cdrom",
    "null-co", "null-aio", "blkdebug", "blkverify", "fat", "nvme", NULL,
};

int image_file_path(const char *name, char **path, char **errmsg)
{
    *path = NULL;
    if (!image_path_has_protocol(name)) {
        *path = xstrdup(name);
        return 0;
    }
    size_t n = strcspn(name, ":");
    if (n == 4 && !strncmp(name, "file", 4)) {
        /* bdrv_parse_filename_strip_prefix: a rest that would again look like a protocol
         * prefix gets "./" in front */
        const char *rest = name + 5;
        *path = image_path_has_protocol(rest) ? xasprintf("./%s", rest) : xstrdup(rest);
        return 0;
    }
    for (size_t i = 0; other_protocols[i]; i++) {
        if (strlen(other_protocols[i]) == n && !strncmp(name, other_protocols[i], n)) {
            *path = xstrdup(name);
            return 0;
        }
    }
    *errmsg = xasprintf("Unknown protocol '%.*s'", (int)n, name);
    return -ENOENT;
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

/* Opens one layer, not its backing file. errmsg gets the text qemu prints after the
 * prefixes ("Could not open 'TOP': " and one "Could not open backing file: " per level). */
static int open_layer(const char *filename, const char *fmt, int flags, struct chain_ids *ids,
                      const struct image_spec *spec, image_t **out, char **errmsg)
{
    *out = NULL;
    if (fmt && !driver_find(fmt)) { /* qemu looks the driver up before opening the file */
        *errmsg = xasprintf("Unknown driver '%s'", fmt);
        return -EINVAL;
    }
    char *path = NULL, *display = NULL;
    struct blkdebug_rules rules = { 0 };
    bool blkdebug = false;
    int r = 0;
    if (spec) {
        rules.n = spec->rules.n; /* a copy: the spec keeps and frees its own */
        rules.unsupported = spec->rules.unsupported ? xstrdup(spec->rules.unsupported) : NULL;
        rules.v = rules.n ? xreallocarray(NULL, rules.n, sizeof(*rules.v)) : NULL;
        if (rules.n)
            memcpy(rules.v, spec->rules.v, rules.n * sizeof(*rules.v));
        blkdebug = spec->file_blkdebug;
        /* blkdebug_refresh_filename; with inline rules qemu shows a json: name instead */
        if (blkdebug && !spec->file_inline_rules)
            display = xasprintf("blkdebug:%s:%s", spec->file_config ? spec->file_config : "",
                                spec->filename);
    } else if (!strncmp(filename, "blkdebug:", 9)) {
        /* blkdebug_parse_filename: "blkdebug:CONFIG:IMAGE" (CONFIG may be empty) */
        const char *cfg = filename + 9, *colon = strchr(cfg, ':');
        if (!colon) {
            *errmsg = xstrdup("Invalid filename: no colon after the blkdebug config file");
            return -EINVAL;
        }
        if (colon > cfg) {
            char *c = xasprintf("%.*s", (int)(colon - cfg), cfg);
            r = blkdebug_read_config(c, &rules, errmsg);
            free(c);
            if (r < 0)
                return -EINVAL;
        }
        r = image_file_path(colon + 1, &path, errmsg);
        blkdebug = true;
        if (r == 0)
            display = xasprintf("blkdebug:%.*s:%s", (int)(colon - cfg), cfg, path);
    } else {
        r = image_file_path(filename, &path, errmsg);
    }
    if (r == 0 && rules.unsupported && !(flags & IMG_OPEN_NO_IO)) {
        /* a metadata-only open (info, create's backing) does no guest I/O; anything else
         * would silently miss the rule's errors */
        *errmsg = xasprintf("blkdebug event '%s' is not supported by qimg", rules.unsupported);
        r = -ENOTSUP;
    }
    if (r < 0) {
        blkdebug_rules_free(&rules);
        free(display);
        return r;
    }
    image_t *img = xcalloc(1, sizeof(*img));
    img->display_name = display;
    img->filename = spec ? xstrdup(spec->filename) : path;
    if (spec && spec->data_file)
        img->data_file_opt = xstrdup(spec->data_file);
    if (spec && spec->data_label)
        img->data_file_label = xstrdup(spec->data_label);
    if (spec && spec->key_secret)
        img->key_secret = xstrdup(spec->key_secret);
    if (spec && spec->encrypt_format)
        img->encrypt_format = xstrdup(spec->encrypt_format);
    filename = img->filename; /* the file's own name from here on, as qemu's file node */
    img->flags = flags;
    r = qio_open_image(filename, (flags & IMG_OPEN_RDWR) ? QIO_RDWR : QIO_RDONLY,
                           &img->file, errmsg);
    if (r < 0)
        goto fail;
    if (spec && spec->direct && (r = qio_probe_direct_align(filename, &img->file->align)) < 0) {
        *errmsg = xasprintf("Could not open '%s': %s", filename, strerror(-r));
        goto fail;
    }
    if (blkdebug)
        img->file = qio_blkdebug_wrap(img->file, &rules);
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
    img->format = img->drv->name;
    /* qemu's permissions (raw: the parent's, all shared; formats with metadata keep others
     * from writing or resizing the file under them), taken when the format attaches its
     * file, before reading it; -U shares everything. */
    r = qio_lock_image(img->file, flags & IMG_OPEN_RDWR, strcmp(img->format, "raw") != 0,
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
    if (img->probed && !strcmp(img->format, "raw") && (flags & IMG_OPEN_RDWR))
        fprintf(stderr, "WARNING: Image format was not specified for '%s' and probing guessed "
                "raw.\n         Automatically detecting the format is dangerous for raw "
                "images, write operations on block 0 will be restricted.\n         Specify "
                "the 'raw' format explicitly to remove the restrictions.\n", filename);
    *out = img;
    return 0;
fail:
    blkdebug_rules_free(&rules);
    image_close(img);
    return r;
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
    for (; img->backing_file; img = img->backing) {
        if (++level > IMG_MAX_BACKING) {
            *errmsg = xasprintf("Backing chain too deep: more than %d backing files",
                                IMG_MAX_BACKING);
            return -ELOOP;
        }
        char *inner = NULL;
        int r = open_layer(img->backing_full, img->backing_format, flags & ~IMG_OPEN_RDWR, ids,
                           NULL, &img->backing, &inner);
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
    struct chain_ids ids = { 0 };
    char *inner = NULL;
    image_t *img = NULL;
    struct image_spec spec;
    bool image_opts = (flags & IMG_OPEN_IMAGE_OPTS) != 0; /* even a "json:" string */
    bool opts = image_opts || image_spec_is_json(filename);
    flags &= ~IMG_OPEN_IMAGE_OPTS;
    int r = 0;
    if (opts) {
        r = image_spec_parse(filename, image_opts, &spec, &inner);
        if (r == 0 && spec.other_rules && !(flags & IMG_OPEN_NO_IO)) {
            /* rules of a blkdebug above the format or on its data file: no qimg driver
             * announces events there; a metadata-only open (info, create's backing) does
             * no guest I/O, anything else would silently lose them */
            image_spec_free(&spec);
            inner = xstrdup("blkdebug error injection is only supported on the image's "
                            "file by qimg");
            r = -ENOTSUP;
        }
        if (r == 0 && spec.driver)
            fmt = spec.driver;
    }
    if (r == 0) {
        r = open_layer(filename, fmt, flags, &ids, opts ? &spec : NULL, &img, &inner);
        if (opts)
            image_spec_free(&spec); /* fmt pointed into it: not used below */
    }
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
    struct chain_ids ids = { 0 };
    ids_add(&ids, top);
    /* a stand-in for the top image so that open_chain() nests the messages */
    image_t stub = { 0 };
    stub.backing_file = (char *)path;
    stub.backing_full = (char *)path;
    stub.backing_format = (char *)fmt;
    int r = open_chain(&stub, flags, &ids, errmsg);
    free(ids.v);
    if (r < 0) {
        image_close(stub.backing);
        stub.backing = NULL;
    }
    *out = stub.backing;
    return r;
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
        free(img->data_file_name);
        free(img->data_file_opt);
        free(img->key_secret);
        free(img->encrypt_format);
        free(img->data_file_label);
        free(img->backing_file);
        free(img->backing_full);
        free(img->backing_format);
        free(img);
        img = below;
    }
}
