/* raw format: the file is the guest disk. Block status is the file's own allocation
 * (SEEK_DATA/SEEK_HOLE), as qemu's raw format passes through to file-posix. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/create.h"
#include "block/driver.h"
#include "format/probe.h"
#include "io/blkdebug.h"
#include "io/nbd.h"
#include "io/ssh.h"
#include "util/err.h"
#include "util/xalloc.h"

static int raw_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)buf, (void)len, (void)filename;
    return 1; /* the fallback */
}

/* qemu keeps lengths in 512-byte sectors, rounding the file size up */
static uint64_t sectors_up(uint64_t size)
{
    return size > UINT64_MAX - 511 ? size & ~(uint64_t)511 : (size + 511) & ~(uint64_t)511;
}

static int raw_open(image_t *img, char **errmsg)
{
    uint64_t size;
    int r = qio_size(img->file, &size);
    if (r < 0) {
        *errmsg = xasprintf("Could not get the size of '%s': %s", img->filename, strerror(-r));
        return r;
    }
    if (img->raw_window) {
        /* qemu's raw_apply_options(): the offset/size window must lie inside the file */
        bool has_size = img->raw_size != UINT64_MAX;
        if (img->raw_offset > size) {
            *errmsg = xasprintf("Offset (%" PRIu64 ") cannot be greater than size of the "
                                "containing file (%" PRIu64 ")", img->raw_offset, size);
            return -EINVAL;
        }
        if (has_size && size - img->raw_offset < img->raw_size) {
            *errmsg = xasprintf("The sum of offset (%" PRIu64 ") and size (%" PRIu64 ") has "
                                "to be smaller or equal to the  actual size of the containing "
                                "file (%" PRIu64 ")", img->raw_offset, img->raw_size, size);
            return -EINVAL;
        }
        if (has_size && img->raw_size % 512) {
            *errmsg = xstrdup("Specified size is not multiple of 512");
            return -EINVAL;
        }
        size = has_size ? img->raw_size : size - img->raw_offset;
    }
    img->size = sectors_up(size);
    return 0;
}

static int raw_read(image_t *img, uint64_t off, void *buf, size_t n)
{
    qio_event(img->file, BLKDBG_READ_AIO); /* raw_co_preadv */
    return qio_pread(img->file, buf, n, off + img->raw_offset);
}

static int raw_block_status(image_t *img, uint64_t off, uint64_t bytes, block_status_t *st)
{
    /* qemu's raw format answers RAW and the generic layer asks the file */
    unsigned f;
    int r = image_file_status(img->file, off + img->raw_offset, bytes, &f, &st->pnum);
    if (r < 0)
        return r;
    if (st->pnum == 0) { /* the file shrank since open: the rest reads as zeros */
        st->pnum = bytes;
        f = BS_ZERO | BS_OFFSET_VALID;
    }
    st->flags = f & (BS_DATA | BS_ZERO | BS_OFFSET_VALID);
    st->map = off + img->raw_offset;
    st->file = img->file;
    st->filename = image_file_name(img);
    return 0;
}

/* A probed raw image (qemu's bs->probed): qemu raises the request alignment to 512, so an
 * unaligned write becomes a read-modify-write of whole sectors, and refuses (-EPERM) a write
 * that would make sector 0 probe as another format (raw_co_pwritev), so that a guest cannot
 * turn the file into, say, a qcow2 image with a backing file of its choosing. */
static int raw_write_probed(image_t *img, uint64_t off, const void *buf, size_t n)
{
    uint64_t lo = off & ~(uint64_t)511, hi = sectors_up(off + n);
    size_t len = (size_t)(hi - lo);
    uint8_t *b = xmalloc(len);
    int r = 0;
    if (lo != off || hi != off + n)
        r = qio_pread(img->file, b, len, lo); /* zeros past the end */
    if (r == 0) {
        memcpy(b + (off - lo), buf, n);
        if (lo == 0 && strcmp(probe_format(b, 512), "raw") != 0)
            r = -EPERM;
    }
    if (r == 0) {
        qio_event(img->file, BLKDBG_WRITE_AIO); /* raw_co_pwritev */
        r = qio_pwrite(img->file, b, len, lo);
    }
    free(b);
    return r;
}

static int raw_write(image_t *img, uint64_t off, const void *buf, size_t n)
{
    if (img->probed)
        return raw_write_probed(img, off, buf, n);
    qio_event(img->file, BLKDBG_WRITE_AIO); /* raw_co_pwritev */
    return qio_pwrite(img->file, buf, n, off + img->raw_offset);
}

static bool no_fallocate(int r)
{
    return r == -ENOTSUP || r == -EINVAL; /* EINVAL: file systems that refuse odd ranges */
}

/* file-posix's handle_aiocb_write_zeroes(_unmap), step for step: with may_unmap first a
 * punched hole; then FALLOC_FL_ZERO_RANGE; then a punched hole re-allocated with
 * fallocate(0); then, past the file's end, fallocate(0) alone. -ENOTSUP when none worked:
 * image.c then writes zero buffers, as qemu's generic layer does. */
int posix_write_zeroes(qio_t *f, uint64_t off, uint64_t n, bool may_unmap)
{
    int r;
    if (may_unmap) {
        r = qio_fallocate(f, QIO_FALLOC_PUNCH_HOLE, off, n);
        if (!no_fallocate(r) && r != -EBUSY)
            return r;
    }
    r = qio_fallocate(f, QIO_FALLOC_ZERO_RANGE, off, n);
    if (!no_fallocate(r))
        return r;
    r = qio_fallocate(f, QIO_FALLOC_PUNCH_HOLE, off, n);
    if (r == 0) {
        r = qio_fallocate(f, QIO_FALLOC_ALLOCATE, off, n);
        if (r != -ENOTSUP)
            return r;
    } else if (!no_fallocate(r)) {
        return r;
    }
    uint64_t size;
    if (qio_size(f, &size) == 0 && off >= size) {
        r = qio_fallocate(f, QIO_FALLOC_ALLOCATE, off, n);
        if (r != -ENOTSUP)
            return r;
    }
    return -ENOTSUP;
}

static int raw_write_zeroes(image_t *img, uint64_t off, uint64_t n, bool may_unmap)
{
    return posix_write_zeroes(img->file, off + img->raw_offset, n, may_unmap);
}

/* handle_aiocb_discard: a punched hole; a file system that cannot punch makes discard the
 * no-op it may be (qemu's bdrv_co_pdiscard ignores -ENOTSUP). */
static int raw_discard(image_t *img, uint64_t off, uint64_t n)
{
    int r = qio_fallocate(img->file, QIO_FALLOC_PUNCH_HOLE, off + img->raw_offset, n);
    return r == -ENOTSUP ? 0 : r;
}

/* file-posix's handle_aiocb_truncate for a regular file (raw_co_truncate always resizes to
 * exactly size): off = ftruncate, falloc = allocate the new tail, full = ftruncate then
 * write zeros over the new tail and fsync; preallocation refuses to shrink; a failed
 * preallocation restores the old length. */
static int raw_truncate(image_t *img, uint64_t size, enum img_prealloc prealloc,
                        char **errmsg)
{
    if (img->raw_window) {
        /* qemu's raw_co_truncate refuses a fixed size; qimg also leaves an offset window
         * alone rather than move the file's end under it */
        *errmsg = xstrdup("Cannot resize fixed-size raw disks");
        return -ENOTSUP;
    }
    uint64_t cur;
    int r = qio_size(img->file, &cur);
    if (r < 0) {
        *errmsg = xasprintf("Could not stat file: %s", strerror(-r));
        return r;
    }
    if (size < cur && qio_is_ssh(img->file)) {
        /* qemu's ssh_co_truncate */
        *errmsg = xstrdup("ssh driver does not support shrinking files");
        return -ENOTSUP;
    }
    if (size != cur && qio_is_nbd(img->file)) {
        /* qemu's nbd_co_truncate (raw passes exact=true on) */
        *errmsg = xstrdup("Cannot resize NBD nodes");
        return -ENOTSUP;
    }
    if (cur > size && prealloc != IMG_PREALLOC_OFF) {
        *errmsg = xstrdup("Cannot use preallocation for shrinking files");
        return -ENOTSUP;
    }
    switch (prealloc) {
    case IMG_PREALLOC_OFF:
        r = qio_truncate(img->file, size);
        if (r < 0) {
            *errmsg = xasprintf("Could not resize file: %s", strerror(-r));
            return r;
        }
        if (cur == 0 && size > 0)
            file_allocate_first_block(img->file, size);
        break;
    case IMG_PREALLOC_FALLOC:
        if (size != cur) {
            r = qio_fallocate(img->file, QIO_FALLOC_ALLOCATE, cur, size - cur);
            if (r < 0) {
                *errmsg = xasprintf("Could not preallocate new data: %s", strerror(-r));
                break;
            }
            if (cur == 0)
                file_allocate_first_block(img->file, size);
        }
        break;
    case IMG_PREALLOC_FULL: {
        r = qio_truncate(img->file, size);
        if (r < 0) {
            *errmsg = xasprintf("Could not resize file: %s", strerror(-r));
            break;
        }
        static const uint8_t zeros[65536];
        for (uint64_t o = cur; o < size && r == 0;) {
            size_t k = size - o < sizeof(zeros) ? (size_t)(size - o) : sizeof(zeros);
            r = qio_pwrite(img->file, zeros, k, o);
            if (r < 0)
                *errmsg = xasprintf("Could not write zeros for preallocation: %s",
                                    strerror(-r));
            o += k;
        }
        if (r == 0 && (r = qio_flush(img->file)) < 0)
            *errmsg = xasprintf("Could not flush file to disk: %s", strerror(-r));
        break;
    }
    default:
        *errmsg = xstrdup("Unsupported preallocation mode: metadata");
        return -ENOTSUP;
    }
    if (r < 0 && prealloc != IMG_PREALLOC_OFF) {
        if (qio_truncate(img->file, cur) < 0)
            fprintf(stderr, "%s: Failed to restore old file length: %s\n", qimg_progname,
                    strerror(errno));
        return r;
    }
    /* qemu's refresh_total_sectors(): the file's new length, in whole sectors */
    if ((r = qio_size(img->file, &cur)) < 0) {
        *errmsg = xasprintf("Could not stat file: %s", strerror(-r));
        return r;
    }
    img->size = sectors_up(cur);
    return 0;
}

const struct driver raw_driver = {
    .name = "raw",
    .supports_backing = false,
    .probe = raw_probe,
    .open = raw_open,
    .read = raw_read,
    .block_status = raw_block_status,
    .write = raw_write,
    .write_zeroes = raw_write_zeroes,
    .discard = raw_discard,
    .truncate = raw_truncate,
};
