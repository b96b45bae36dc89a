/* raw format: the file is the guest disk. Block status is the file's own allocation
 * (SEEK_DATA/SEEK_HOLE), as qemu's raw format passes through to file-posix. */
#include <errno.h>
#include <string.h>

#include "block/driver.h"
#include "util/xalloc.h"

static int raw_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)buf, (void)len, (void)filename;
    return 1; /* the fallback */
}

static int raw_open(image_t *img, char **errmsg)
{
    uint64_t size;
    int r = qio_size(img->file, &size);
    if (r < 0) {
        *errmsg = xasprintf("Could not get the size of '%s': %s", img->filename, strerror(-r));
        return r;
    }
    /* qemu keeps lengths in 512-byte sectors, rounding the file size up */
    img->size = size > UINT64_MAX - 511 ? size & ~(uint64_t)511 : (size + 511) & ~(uint64_t)511;
    return 0;
}

static int raw_read(image_t *img, uint64_t off, void *buf, size_t n)
{
    return qio_pread(img->file, buf, n, off);
}

static int raw_block_status(image_t *img, uint64_t off, uint64_t bytes, block_status_t *st)
{
    /* qemu's raw format answers RAW and the generic layer asks the file */
    unsigned f;
    int r = image_file_status(img->file, off, bytes, &f, &st->pnum);
    if (r < 0)
        return r;
    if (st->pnum == 0) { /* the file shrank since open: the rest reads as zeros */
        st->pnum = bytes;
        f = BS_ZERO | BS_OFFSET_VALID;
    }
    st->flags = f & (BS_DATA | BS_ZERO | BS_OFFSET_VALID);
    st->map = off;
    st->file = img->file;
    st->filename = img->filename;
    return 0;
}

static int raw_write(image_t *img, uint64_t off, const void *buf, size_t n)
{
    return qio_pwrite(img->file, buf, n, off);
}

static int raw_flush(image_t *img)
{
    return qio_flush(img->file);
}

static int raw_truncate(image_t *img, uint64_t size)
{
    int r = qio_truncate(img->file, size);
    if (r == 0)
        img->size = size;
    return r;
}

const struct driver raw_driver = {
    .name = "raw",
    .supports_backing = false,
    .probe = raw_probe,
    .open = raw_open,
    .read = raw_read,
    .block_status = raw_block_status,
    .write = raw_write,
    .flush = raw_flush,
    .truncate = raw_truncate,
};
