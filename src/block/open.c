/* Opening an image and its backing chain the way qemu does: protocol file, format probe or
 * forced format, driver open, then the backing file named by the image (format from the image
 * or probed, name relative to the image's directory). Messages are qemu's. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "block/driver.h"
#include "format/probe.h"
#include "io/lock.h"
#include "util/err.h"
#include "util/xalloc.h"

/* qemu's path_combine(): name relative to the directory part of base. */
char *image_path_combine(const char *base, const char *name)
{
    if (name[0] == '/')
        return xstrdup(name);
    const char *slash = strrchr(base, '/');
    size_t dir = slash ? (size_t)(slash - base) + 1 : 0;
    return xasprintf("%.*s%s", (int)dir, base, name);
}

static int open_file(const char *path, int flags, qio_t **out, char **errmsg)
{
    int r = qio_open_file(path, (flags & IMG_OPEN_RDWR) ? QIO_RDWR : QIO_RDONLY, out);
    if (r == -EISDIR)
        *errmsg = xasprintf("'file' driver requires '%s' to be a regular file", path);
    else if (r < 0)
        *errmsg = xasprintf("Could not open '%s': %s", path, strerror(-r));
    return r;
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

struct seen {
    dev_t dev;
    ino_t ino;
};

/* Opens one layer (and, recursively, those below it). errmsg gets the text qemu prints after
 * the top-level "Could not open 'F': " prefix. */
static int open_layer(const char *filename, const char *fmt, int flags, struct seen *seen,
                      int depth, image_t **out, char **errmsg)
{
    *out = NULL;
    if (depth >= IMG_MAX_CHAIN) {
        *errmsg = xasprintf("Backing chain too deep (more than %d images)", IMG_MAX_CHAIN);
        return -ELOOP;
    }
    if (fmt && !driver_find(fmt)) { /* qemu looks the driver up before opening the file */
        *errmsg = xasprintf("Unknown driver '%s'", fmt);
        return -EINVAL;
    }
    image_t *img = xcalloc(1, sizeof(*img));
    img->filename = xstrdup(filename);
    img->flags = flags;
    int r = open_file(filename, flags, &img->file, errmsg);
    if (r < 0)
        goto fail;

    struct stat st;
    if (fstat(img->file->fd, &st) == 0) {
        for (int i = 0; i < depth; i++) {
            if (seen[i].dev == st.st_dev && seen[i].ino == st.st_ino) {
                *errmsg = xasprintf("Backing file '%s' creates an infinite loop.", filename);
                r = -ELOOP;
                goto fail;
            }
        }
        seen[depth].dev = st.st_dev;
        seen[depth].ino = st.st_ino;
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

    if (img->backing_file && !(flags & IMG_OPEN_NO_BACKING)) {
        char *inner = NULL;
        /* The backing image is opened read-only: only commit writes into it. */
        r = open_layer(img->backing_full, img->backing_format, flags & ~IMG_OPEN_RDWR, seen,
                       depth + 1, &img->backing, &inner);
        if (r < 0) {
            *errmsg = xasprintf("Could not open backing file: %s", inner);
            free(inner);
            goto fail;
        }
    }
    *out = img;
    return 0;
fail:
    image_close(img);
    return r;
}

int image_open(const char *filename, const char *fmt, int flags, image_t **out, char **errmsg)
{
    struct seen seen[IMG_MAX_CHAIN];
    char *inner = NULL;
    int r = open_layer(filename, fmt, flags, seen, 0, out, &inner);
    if (r < 0) {
        *errmsg = xasprintf("Could not open '%s': %s", filename, inner);
        free(inner);
    }
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
        free(img->data_file_name);
        free(img->backing_file);
        free(img->backing_full);
        free(img->backing_format);
        free(img);
        img = below;
    }
}
