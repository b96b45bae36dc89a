/* The generic block layer: rules qemu's block/io.c applies on top of every driver (clamping
 * to the virtual size, ALLOCATED/ZERO/EOF, walking the backing chain). */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/driver.h"
#include "io/blkdebug.h"
#include "io/nbd.h"
#include "util/xalloc.h"

const struct driver *const drivers[] = { &qcow2_driver, &qcow1_driver, &qed_driver, &vdi_driver,
                                          &luks_driver, &bochs_driver,
                                          &raw_driver, NULL };

const struct driver *driver_find(const char *name)
{
    for (size_t i = 0; drivers[i]; i++)
        if (!strcmp(drivers[i]->name, name))
            return drivers[i];
    return NULL;
}

void snapshot_list_free(snapshot_info_t *list, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        free(list[i].id);
        free(list[i].name);
    }
    free(list);
}

void image_corrupt(image_t *img, const char *fmt, ...)
{
    bool fatal = (img->flags & IMG_OPEN_RDWR) != 0;
    if (img->corruption_signaled && !fatal)
        return;
    va_list ap;
    va_start(ap, fmt);
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (fatal)
        fprintf(stderr, "%s: Marking image as corrupt: %s; further corruption events will be "
                "suppressed\n", img->format, msg);
    else
        fprintf(stderr, "%s: Image is corrupt: %s; further non-fatal corruption events will "
                "be suppressed\n", img->format, msg);
    if (fatal)
        img->broken = true;
    img->corruption_signaled = true;
}

int image_chain_length(const image_t *img)
{
    int n = 0;
    for (; img; img = img->backing)
        n++;
    return n;
}

int64_t image_allocated_size(image_t *img)
{
    uint64_t a;
    if (img->top_bd)
        return -ENOTSUP; /* blkdebug has no bdrv_get_allocated_file_size: "unavailable" */
    int r = qio_allocated(img->file, &a);
    if (r < 0)
        return r;
    return (int64_t)a;
}

/* Split so drivers see bounded requests (their buffers are sized by this). */
static int64_t read_chunk(image_t *img, uint64_t off, uint8_t *p, size_t n)
{
    const size_t chunk = 64u << 20;
    size_t k = n < chunk ? n : chunk;
    int r = img->drv->read(img, off, p, k);
    return r < 0 ? r : (int64_t)k;
}

/* The rules of a blkdebug filter above the format (blkdebug_co_preadv etc.), 0 without. */
static int top_check(image_t *img, uint64_t off, uint64_t n, enum blkdebug_iotype io)
{
    return img->top_bd ? blkdebug_state_check(img->top_bd, off, n, io) : 0;
}

int image_read(image_t *img, uint64_t off, void *buf, size_t n)
{
    unsigned char *p = buf;
    if (img->broken)
        return -ENOMEDIUM;
    int r = top_check(img, off, n, BLKDBG_IO_READ);
    if (r < 0)
        return r;
    if (off >= img->size) {
        memset(p, 0, n);
        return 0;
    }
    if (n > img->size - off) { /* past the virtual size reads as zeros */
        size_t in = (size_t)(img->size - off);
        memset(p + in, 0, n - in);
        n = in;
    }
    return read_in_steps(img, off, p, n, read_chunk);
}

int image_file_status(qio_t *file, uint64_t off, uint64_t bytes, unsigned *flags,
                      uint64_t *pnum)
{
    uint64_t real, size;
    int r = qio_size(file, &real);
    if (r < 0)
        return r;
    /* qemu's lengths are in sectors: the last partial sector counts, past the real end */
    size = real > UINT64_MAX - 511 ? real & ~(uint64_t)511 : (real + 511) & ~(uint64_t)511;
    *pnum = 0;
    if (off >= size) {
        *flags = BS_EOF;
        return 0;
    }
    if (bytes > size - off)
        bytes = size - off;
    if (file->ops->status) {
        /* a protocol with its own block status (NBD): data/zero as the server says,
         * allocated when either (qemu's bdrv_co_block_status) */
        unsigned st;
        if ((r = file->ops->status(file, off, bytes, &st, pnum)) < 0)
            return r;
        *flags = (st & QIO_ST_DATA ? BS_DATA : 0) | (st & QIO_ST_ZERO ? BS_ZERO : 0) |
                 BS_OFFSET_VALID;
        if (*flags & (BS_DATA | BS_ZERO))
            *flags |= BS_ALLOCATED;
        if (off + *pnum == size)
            *flags |= BS_EOF;
        return 0;
    }
    /* bdrv_co_block_status asks the driver for the request widened to the request
     * alignment (1 unless cache.direct=on), then cuts the answer back to the request */
    uint64_t a = file->align > 1 ? file->align : 1;
    uint64_t aoff = off / a * a;
    uint64_t abytes = (off + bytes - aoff + a - 1) / a * a;
    bool is_data = false;
    uint64_t len = 0;
    r = qio_extent(file, aoff, &is_data, &len);
    if (r < 0 || len == 0 || (!is_data && aoff + len >= real)) {
        /* no information: data (file-posix's guess); a trailing hole (SEEK_DATA's ENXIO)
         * reaches the rounded end */
        is_data = r < 0; /* the other two cases are holes */
        len = abytes;
    } else if (is_data && len % a) {
        len = (len + a - 1) / a * a; /* raw_co_block_status: a partial block at EOF */
    }
    len = len > off - aoff ? len - (off - aoff) : 1; /* qemu asserts it is more */
    *pnum = len < bytes ? len : bytes;
    *flags = (is_data ? BS_DATA : BS_ZERO) | BS_OFFSET_VALID | BS_ALLOCATED;
    if (off + *pnum == size)
        *flags |= BS_EOF;
    return 0;
}

int image_block_status(image_t *img, uint64_t off, uint64_t bytes, block_status_t *st)
{
    memset(st, 0, sizeof(*st));
    st->layer = img;
    if (img->broken)
        return -ENOMEDIUM;
    if (off >= img->size) {
        st->flags = BS_EOF;
        return 0;
    }
    if (bytes == 0)
        return 0;
    if (bytes > img->size - off)
        bytes = img->size - off;

    int r = top_check(img, off, bytes, BLKDBG_IO_BLOCK_STATUS);
    if (r < 0)
        return r;
    r = img->drv->block_status(img, off, bytes, st);
    if (r < 0)
        return r;
    if (st->pnum == 0 || st->pnum > bytes)
        return -EIO; /* driver bug; never let a caller loop forever */
    st->layer = img;
    unsigned f = st->flags;
    if (f & (BS_DATA | BS_ZERO)) {
        f |= BS_ALLOCATED;
    } else if (img->drv->supports_backing) {
        if (!img->backing)
            f |= BS_ZERO; /* as qemu: also when NO_BACKING left the backing closed */
        else if (off >= img->backing->size) {
            f |= BS_ZERO;
        }
    }
    /* RECURSE (metadata preallocation): ask the file whether the host range is a hole, and
     * combine as qemu's bdrv_co_block_status() does. */
    if ((f & BS_RECURSE) && (f & BS_DATA) && !(f & BS_ZERO) && (f & BS_OFFSET_VALID) &&
        st->file) {
        unsigned ff;
        uint64_t fpnum;
        if (image_file_status(st->file, st->map, st->pnum, &ff, &fpnum) == 0) {
            if ((ff & BS_EOF) && (fpnum == 0 || (ff & BS_ZERO))) {
                /* past the file's end, or a hole up to it: zeros, the format's run kept */
                f |= BS_ZERO;
            } else {
                st->pnum = fpnum;
                f |= ff & BS_ZERO;
            }
        }
    }
    /* qemu-img never sees RECURSE: strict compare of a qcow2 with metadata preallocation
     * (or any image past the detection threshold) against raw finds equal words. */
    f &= ~(unsigned)BS_RECURSE;
    if (off + st->pnum == img->size)
        f |= BS_EOF;
    st->flags = f;
    return 0;
}

int image_block_status_above(image_t *img, image_t *base, uint64_t off, uint64_t bytes,
                             block_status_t *st)
{
    int r = image_block_status(img, off, bytes, st);
    if (r < 0 || st->pnum == 0 || (st->flags & BS_ALLOCATED) || img == base)
        return r;
    uint64_t eof = (st->flags & BS_EOF) ? off + st->pnum : UINT64_MAX;
    bytes = st->pnum;
    int depth = 0;
    for (image_t *p = img->backing; p && p != base; p = p->backing) {
        depth++;
        block_status_t s;
        r = image_block_status(p, off, bytes, &s);
        if (r < 0)
            return r;
        if (s.pnum == 0) {
            /* a short backing layer: its synthesized zeros count as allocated there */
            memset(st, 0, sizeof(*st));
            st->flags = BS_ZERO | BS_ALLOCATED;
            st->pnum = bytes;
            st->layer = p;
            st->depth = depth;
            break;
        }
        *st = s;
        st->depth = depth;
        if (s.flags & BS_ALLOCATED) {
            st->flags &= ~(unsigned)BS_EOF;
            break;
        }
        bytes = s.pnum;
    }
    if (off + st->pnum == eof)
        st->flags |= BS_EOF;
    return 0;
}

/* ---- Writes: qemu's blk_check_byte_request + bdrv_check_request, then the driver ---- */

int image_check_request(const image_t *img, uint64_t off, uint64_t n)
{
    if (off > IMG_MAX_LENGTH || n > IMG_MAX_LENGTH - off)
        return -EIO;
    if (off > img->size || n > img->size - off)
        return -EIO;
    return 0;
}

static int write_check(const image_t *img, uint64_t off, uint64_t n)
{
    if (img->broken)
        return -ENOMEDIUM;
    int r = image_check_request(img, off, n);
    if (r < 0)
        return r;
    return (img->flags & IMG_OPEN_RDWR) ? 0 : -EPERM;
}

int image_write(image_t *img, uint64_t off, const void *buf, size_t n)
{
    int r = write_check(img, off, n);
    if (r == 0 && n)
        r = top_check(img, off, n, BLKDBG_IO_WRITE);
    if (r < 0 || n == 0)
        return r;
    return img->drv->write ? img->drv->write(img, off, buf, n) : -ENOTSUP;
}

int image_write_zeroes(image_t *img, uint64_t off, uint64_t n, bool may_unmap)
{
    int r = write_check(img, off, n);
    if (r == 0 && n)
        r = top_check(img, off, n, BLKDBG_IO_WRITE_ZEROES);
    if (r < 0 || n == 0)
        return r;
    r = img->drv->write_zeroes ? img->drv->write_zeroes(img, off, n, may_unmap) : -ENOTSUP;
    if (r != -ENOTSUP || !img->drv->write)
        return r;
    /* qemu's fallback: zero buffers of at most MAX_WRITE_ZEROES_BOUNCE_BUFFER (16 MiB) */
    const size_t chunk = 16u << 20;
    uint8_t *zeros = xcalloc(1, n < chunk ? (size_t)n : chunk);
    r = 0;
    while (n && r == 0) {
        size_t k = n < chunk ? (size_t)n : chunk;
        r = img->drv->write(img, off, zeros, k);
        off += k;
        n -= k;
    }
    free(zeros);
    return r;
}

int image_write_compressed(image_t *img, uint64_t off, const void *buf, size_t n)
{
    int r = write_check(img, off, n);
    if (r == 0)
        r = top_check(img, off, n, BLKDBG_IO_WRITE);
    if (r < 0)
        return r;
    return img->drv->write_compressed ? img->drv->write_compressed(img, off, buf, n)
                                      : -ENOTSUP;
}

int image_discard(image_t *img, uint64_t off, uint64_t n)
{
    int r = write_check(img, off, n);
    if (r == 0 && n)
        r = top_check(img, off, n, BLKDBG_IO_DISCARD);
    if (r < 0 || n == 0 || !img->drv->discard)
        return r;
    return img->drv->discard(img, off, n);
}

void image_hint_filling(image_t *img)
{
    qio_hint_filling(img->file);
    if (img->data_file && img->data_file != img->file)
        qio_hint_filling(img->data_file);
}

int image_flush(image_t *img)
{
    /* qemu's bdrv_co_flush: nothing to do on a read-only or dead node */
    if (img->broken || !(img->flags & IMG_OPEN_RDWR))
        return 0;
    int r = top_check(img, 0, 0, BLKDBG_IO_FLUSH);
    if (r < 0)
        return r;
    r = img->drv->flush ? img->drv->flush(img) : 0;
    if (r == 0)
        r = qio_flush(img->file);
    if (r == 0 && img->data_file && img->data_file != img->file)
        r = qio_flush(img->data_file);
    return r;
}

int image_truncate(image_t *img, uint64_t size, enum img_prealloc prealloc, char **errmsg)
{
    *errmsg = NULL;
    if (img->broken) {
        *errmsg = xstrdup("No medium inserted");
        return -ENOMEDIUM;
    }
    if (size > IMG_MAX_LENGTH) {
        *errmsg = xasprintf("offset(%" PRIu64 ") exceeds maximum(%" PRIu64 ")", size,
                            (uint64_t)IMG_MAX_LENGTH);
        return -EFBIG;
    }
    if (!(img->flags & IMG_OPEN_RDWR)) {
        *errmsg = xstrdup("Image is read-only");
        return -EACCES;
    }
    if (!img->drv->truncate) {
        *errmsg = xstrdup("Image format driver does not support resize");
        return -ENOTSUP;
    }
    int r = img->drv->truncate(img, size, prealloc, errmsg);
    if (r < 0 && !*errmsg)
        *errmsg = xasprintf("%s", strerror(-r));
    return r;
}
