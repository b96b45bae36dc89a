/* Creating an image on an NBD export (block/create.h): qemu's nbd driver has no creation,
 * so bdrv_create_file falls back to bdrv_co_create_opts_simple: the export is opened (its
 * size is fixed: a truncate without exact= only checks it), its first sector zeroed, and
 * the format writes its metadata through it. qimg's formatters write files, so the image
 * is formatted into a private temporary file and its data extents copied onto the export:
 * the same bytes reach the same offsets, the rest of the export is left as it was. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/blockspec.h"
#include "block/create.h"
#include "io/nbd.h"
#include "io/qio.h"
#include "util/xalloc.h"

#define COPY_CHUNK (1u << 20)

bool block_create_is_nbd(const char *filename)
{
    if (!blockspec_has_protocol(filename))
        return false;
    struct bs_resolved res = { 0 };
    char *msg = NULL;
    bool nbd = blockspec_resolve(filename, NULL, NULL, false, &res, &msg) == 0 && res.nbd;
    blockspec_resolved_free(&res);
    free(msg);
    return nbd;
}

/* The data extents of fd (SEEK_DATA/SEEK_HOLE) onto q. 0 or -errno. */
static int copy_extents(int fd, qio_t *q)
{
    uint8_t *buf = xmalloc(COPY_CHUNK);
    off_t end = lseek(fd, 0, SEEK_END), off = 0;
    int r = 0;
    while (r == 0 && off < end) {
        off_t data = lseek(fd, off, SEEK_DATA);
        if (data < 0)
            break;   /* ENXIO: only a hole is left */
        off_t hole = lseek(fd, data, SEEK_HOLE);
        if (hole < 0)
            hole = end;
        for (off = data; r == 0 && off < hole;) {
            size_t n = (size_t)(hole - off < COPY_CHUNK ? hole - off : COPY_CHUNK);
            ssize_t got = pread(fd, buf, n, off);
            if (got <= 0) {
                r = got < 0 ? -errno : -EIO;
                break;
            }
            r = qio_pwrite(q, buf, (size_t)got, (uint64_t)off);
            off += got;
        }
    }
    free(buf);
    return r;
}

int block_create_nbd(const char *fmt, const char *filename, const struct copts *o,
                     char **errmsg)
{
    /* bdrv_co_create_opts_simple takes no preallocation (raw hands it to the protocol) */
    const char *pre = copts_isset(o, "preallocation") ? copts_str(o, "preallocation") : NULL;
    if (!strcmp(fmt, "raw") && pre && strcmp(pre, "off")) {
        *errmsg = xasprintf("Unsupported preallocation mode '%s'", pre);
        return -ENOTSUP;
    }
    struct bs_resolved res;
    char *msg = NULL;
    int r = blockspec_resolve(filename, NULL, NULL, false, &res, &msg);
    if (r < 0) {
        *errmsg = msg;
        return r;
    }
    qio_t *q = NULL;
    r = qio_open_nbd(res.nbd, QIO_RDWR, &q, &msg);
    blockspec_resolved_free(&res);
    if (r < 0) {
        *errmsg = xasprintf("Protocol driver 'nbd' does not support image creation, and "
                            "opening the image failed: %s", msg ? msg : strerror(-r));
        free(msg);
        return r;
    }
    char dir[] = "/tmp/qimg-create-XXXXXX";
    if (!mkdtemp(dir)) {
        r = -errno;
        *errmsg = xasprintf("Could not create a temporary directory: %s", strerror(-r));
        qio_close(q);
        return r;
    }
    char *tmp = xasprintf("%s/image", dir);
    static const uint8_t zero[512];
    if ((r = qio_pwrite(q, zero, sizeof(zero), 0)) < 0) {  /* zero_first_sector */
        *errmsg = xasprintf("Could not write to the new file: %s", strerror(-r));
        goto out;
    }
    if (!strcmp(fmt, "qed")) {
        /* qed_co_create truncates its file exactly, which an export cannot do */
        *errmsg = xstrdup("Cannot resize NBD nodes");
        r = -ENOTSUP;
        goto out;
    }
    if ((r = block_create(fmt, tmp, o, errmsg)) < 0)
        goto out;
    int fd = open(tmp, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        r = -errno;
        *errmsg = xasprintf("Could not open '%s': %s", tmp, strerror(-r));
        goto out;
    }
    r = copy_extents(fd, q);
    close(fd);
    if (r == 0)
        r = qio_flush(q);
    if (r < 0)
        *errmsg = xasprintf("Could not write to '%s': %s", filename, strerror(-r));
out:
    unlink(tmp);
    rmdir(dir);
    free(tmp);
    qio_close(q);
    return r;
}
