/* raw creation: file-posix's raw_co_create (the file made, emptied, then sized with the
 * preallocation asked for), and the dispatch from a format name to its creator. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/blockspec.h"
#include "block/create.h"
#include "io/lock.h"
#include "io/qio.h"
#include "util/xalloc.h"

static char *msgf(const char *fmt, const char *a, int e)
{
    char buf[1024];
    snprintf(buf, sizeof(buf), fmt, a, strerror(e));
    return xstrdup(buf);
}

void file_allocate_first_block(qio_t *q, uint64_t size)
{
    static const uint8_t zeros[4096];
    if (q)   /* failures ignored, as qemu ignores them */
        (void)qio_pwrite(q, zeros, size < sizeof(zeros) ? 512 : sizeof(zeros), 0);
}

/* raw_regular_truncate's falloc/full/off growth of fd from cur to size; q is the same file
 * (NULL: it could not be opened, and the best-effort first block is skipped) */
static int grow(int fd, qio_t *q, uint64_t cur, uint64_t size, int mode, char **errmsg)
{
    if (mode == 1) {
        if (size == cur)
            return 0; /* posix_fallocate refuses an empty range; qemu skips it */
        int e = posix_fallocate(fd, (off_t)cur, (off_t)(size - cur));
        if (e) {
            *errmsg = msgf("Could not preallocate new data%s: %s", "", e);
            return -e;
        }
        if (cur == 0)   /* the fallocated area would read fine unaligned: as qemu */
            file_allocate_first_block(q, size);
        return 0;
    }
    if (ftruncate(fd, (off_t)size) < 0) {
        int e = errno;
        *errmsg = msgf("Could not resize file%s: %s", "", e);
        return -e;
    }
    if (mode == 0 && cur == 0 && size > 0) {
        file_allocate_first_block(q, size);
        return 0;
    }
    if (mode == 2) {
        static const uint8_t zero[65536];
        for (uint64_t off = cur; off < size;) {
            size_t n = size - off < sizeof(zero) ? (size_t)(size - off) : sizeof(zero);
            ssize_t w = pwrite(fd, zero, n, (off_t)off);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                int e = errno;
                *errmsg = msgf("Could not write zeros for preallocation%s: %s", "", e);
                return -e;
            }
            off += (uint64_t)w;
        }
        if (fsync(fd) < 0) {
            int e = errno;
            *errmsg = msgf("Could not flush file to disk%s: %s", "", e);
            return -e;
        }
    }
    return 0;
}

static int create_locked(int fd, qio_t *q, uint64_t size, const char *prealloc, int mode,
                         char **errmsg);

int file_create(const char *filename, uint64_t size, const char *prealloc, char **errmsg)
{
    if (size <= UINT64_MAX - 511)
        size = (size + 511) & ~511ull; /* raw_co_create rounds up to whole sectors */
    int mode = 0;
    if (prealloc && !strcmp(prealloc, "falloc"))
        mode = 1;
    else if (prealloc && !strcmp(prealloc, "full"))
        mode = 2;
    else if (prealloc && strcmp(prealloc, "off")) {
        if (strcmp(prealloc, "metadata")) {
            char buf[512];
            snprintf(buf, sizeof(buf), "invalid parameter value: %s", prealloc);
            *errmsg = xstrdup(buf);
            return -EINVAL;
        }
    }
    int fd = open(filename, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        *errmsg = msgf("Could not create '%s': %s", filename, e);
        return -e;
    }
    /* raw_co_create: take WRITE and RESIZE, share everything but RESIZE, and check that
     * nobody else conflicts, before the file is emptied (an image in use stays intact) */
    qio_t *lq = NULL;
    if (qio_open_file(filename, QIO_RDWR, &lq) == 0) {
        const char *pn = NULL;
        bool shared = false;
        int lr = qio_lock_perms(lq, QIO_PERM_WRITE | QIO_PERM_RESIZE, QIO_PERM_RESIZE, &pn,
                                &shared);
        if (lr == -EBUSY) {
            *errmsg = qio_lock_msg(pn, shared, filename);
            qio_close(lq);
            close(fd);
            return lr;
        }
    }
    int r = create_locked(fd, lq, size, prealloc, mode, errmsg);
    if (lq)
        qio_close(lq);
    close(fd);
    return r;
}

static int create_locked(int fd, qio_t *q, uint64_t size, const char *prealloc, int mode,
                         char **errmsg)
{
    if (prealloc && !strcmp(prealloc, "metadata")) {
        *errmsg = xstrdup("Unsupported preallocation mode: metadata");
        return -ENOTSUP;
    }
    if (ftruncate(fd, 0) < 0) {
        int e = errno;
        *errmsg = msgf("Could not clear the file%s: %s", "", e);
        return -e;
    }
    return grow(fd, q, 0, size, mode, errmsg);
}

int raw_create(const char *filename, const struct copts *o, char **errmsg)
{
    return file_create(filename, copts_num(o, "size", 0),
                       copts_isset(o, "preallocation") ? copts_str(o, "preallocation") : NULL,
                       errmsg);
}

int block_create(const char *fmt, const char *filename, const struct copts *o, char **errmsg)
{
    /* a protocol qimg opens but cannot create on (nbd, ssh): qemu's bdrv_create there is
     * not qimg's; say so rather than create a local file of that name */
    char *path = NULL, *perr = NULL;
    int pr = blockspec_plain_path(filename, &path, &perr);
    free(path);
    if (pr == -ENOTSUP) {
        *errmsg = perr;
        return pr;
    }
    free(perr);
    if (!strcmp(fmt, "raw"))
        return raw_create(filename, o, errmsg);
    if (!strcmp(fmt, "qcow2"))
        return qcow2_create(filename, o, errmsg);
    if (!strcmp(fmt, "qed"))
        return qed_create(filename, o, errmsg);
    if (!strcmp(fmt, "vdi"))
        return vdi_create(filename, o, errmsg);
    if (!strcmp(fmt, "luks"))
        return luks_create_image(filename, o, errmsg);
    *errmsg = xstrdup("qimg cannot create images of this format yet");
    return -ENOTSUP;
}
