/* qio backend for real files: pread/pwrite loops that survive EINTR and short transfers,
 * SEEK_DATA/SEEK_HOLE for sparse files. */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "io/qio.h"
#include "util/xalloc.h"

/* Test-only crash injection (QIMG_FAULT_AFTER_WRITES=N): the process dies, without
 * flushing or cleaning up, right after its Nth completed write, truncate or fallocate to
 * a file opened read-write, as if killed or powered off there. Exit status 86. One count
 * for the whole process, so a cut can fall between any two writes of an image and its
 * data file. */
static long fault_writes_left = -1; /* -1: QIMG_FAULT_AFTER_WRITES not read yet */

static void crash_point(qio_t *q)
{
    (void)q;
    if (fault_writes_left > 0 && --fault_writes_left == 0)
        _exit(86);
}

static int file_pread(qio_t *q, void *buf, size_t n, uint64_t off)
{
    unsigned char *p = buf;
    while (n) {
        ssize_t r = pread(q->fd, p, n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0) {
            memset(p, 0, n); /* past EOF reads as zeros */
            return 0;
        }
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

/* Writes at least this long allocate their range first when the file is being filled. */
#define FILL_ALLOC_MIN (64u << 10)

static int file_pwrite(qio_t *q, const void *buf, size_t n, uint64_t off)
{
    const unsigned char *p = buf;
    /* A buffered write into a hole of an ext4 file reserves and records a delayed
     * allocation block by block (ext4_da_map_blocks for every 4 KiB); into blocks
     * fallocate(2) already allocated (unwritten extents, one extent-status entry) it only
     * copies. The range is the one this write allocates anyway, so the file ends up with
     * the same allocation (and holes) either way. A failure is left to the write to
     * report; a file system without the call stops being asked. */
    if (q->alloc_writes && n >= FILL_ALLOC_MIN &&
        fallocate(q->fd, 0, (off_t)off, (off_t)n) < 0 &&
        (errno == EOPNOTSUPP || errno == ENOSYS || errno == ENODEV))
        q->alloc_writes = false;
    while (n) {
        ssize_t r = pwrite(q->fd, p, n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    crash_point(q);
    return 0;
}

/* qemu's raw_getlength() on Linux: the end offset, for files and devices alike (a file
 * such as /proc/self/mem has no end: EINVAL). Every read is a pread, so moving the file
 * offset is harmless. */
static int file_size(qio_t *q, uint64_t *out)
{
    off_t end = lseek(q->fd, 0, SEEK_END);
    if (end < 0)
        return -errno;
    *out = (uint64_t)end;
    return 0;
}

static int file_truncate(qio_t *q, uint64_t size)
{
    if (ftruncate(q->fd, (off_t)size) < 0)
        return -errno;
    crash_point(q);
    return 0;
}

static int file_flush(qio_t *q)
{
    if (!q->writable)
        return 0;
    return fdatasync(q->fd) < 0 ? -errno : 0;
}

static int file_extent(qio_t *q, uint64_t off, bool *is_data, uint64_t *len)
{
    uint64_t size = 0;
    int r = file_size(q, &size);
    if (r < 0)
        return r;
    if (off >= size) {
        *is_data = false;
        *len = 0;
        return 0;
    }
    off_t d = lseek(q->fd, (off_t)off, SEEK_DATA);
    if (d < 0) {
        if (errno == ENXIO) { /* only a hole up to EOF */
            *is_data = false;
            *len = size - off;
            return 0;
        }
        /* no SEEK_DATA support: everything is data */
        *is_data = true;
        *len = size - off;
        return 0;
    }
    if ((uint64_t)d > off) {
        *is_data = false;
        *len = (uint64_t)d - off;
        return 0;
    }
    off_t h = lseek(q->fd, (off_t)off, SEEK_HOLE);
    if (h < 0 || (uint64_t)h <= off)
        h = (off_t)size;
    *is_data = true;
    *len = (uint64_t)h - off;
    return 0;
}

static int file_allocated(qio_t *q, uint64_t *out)
{
    struct stat st;
    if (fstat(q->fd, &st) < 0)
        return -errno;
    *out = (uint64_t)st.st_blocks * 512;
    return 0;
}

/* qemu's do_fallocate(): EINTR retried; "not supported" in any spelling is -ENOTSUP. */
static int file_fallocate(qio_t *q, enum qio_falloc mode, uint64_t off, uint64_t len)
{
    int m = mode == QIO_FALLOC_ZERO_RANGE   ? FALLOC_FL_ZERO_RANGE
            : mode == QIO_FALLOC_PUNCH_HOLE ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
                                            : 0;
    int r;
    do {
        r = fallocate(q->fd, m, (off_t)off, (off_t)len);
    } while (r < 0 && errno == EINTR);
    if (r < 0)
        return errno == ENODEV || errno == ENOSYS || errno == EOPNOTSUPP ? -ENOTSUP : -errno;
    crash_point(q);
    return 0;
}

static void file_close(qio_t *q)
{
    if (q->fd >= 0)
        close(q->fd);
}

static const struct qio_ops file_ops = {
    .pread = file_pread,
    .pwrite = file_pwrite,
    .size = file_size,
    .truncate = file_truncate,
    .flush = file_flush,
    .extent = file_extent,
    .allocated = file_allocated,
    .fallocate = file_fallocate,
    .close = file_close,
};

/* open(2) that never blocks: a FIFO without a writer would block a plain O_RDONLY open
 * forever. O_NONBLOCK is dropped again once the file is open, so reads of a device block
 * as they would in qemu. */
static int open_fd(const char *path, int flags, struct stat *st)
{
    int fd = open(path, ((flags & QIO_RDWR) ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    int fl = fcntl(fd, F_GETFL);
    if (fstat(fd, st) < 0 || fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

static qio_t *wrap_fd(int fd, const char *path, int flags)
{
    qio_t *q = xcalloc(1, sizeof(*q));
    q->ops = &file_ops;
    q->fd = fd;
    q->path = xstrdup(path);
    q->writable = (flags & QIO_RDWR) != 0;
    if (q->writable && fault_writes_left < 0) { /* test-only crash injection */
        const char *fault = getenv("QIMG_FAULT_AFTER_WRITES");
        fault_writes_left = fault ? strtol(fault, NULL, 10) : 0;
    }
    return q;
}

#ifndef EXT4_SUPER_MAGIC
#define EXT4_SUPER_MAGIC 0xEF53
#endif

void qio_hint_filling(qio_t *q)
{
    struct stat st;
    struct statfs fs;
    /* measured on ext4 only (README, convert's Speed): elsewhere writes stay plain;
     * QIMG_NO_FILL_ALLOC=1 leaves allocation to ext4 (more contiguous, slower) */
    if (getenv("QIMG_NO_FILL_ALLOC") || q->ops != &file_ops || !q->writable ||
        fstat(q->fd, &st) < 0 || !S_ISREG(st.st_mode) || fstatfs(q->fd, &fs) < 0 ||
        fs.f_type != EXT4_SUPER_MAGIC)
        return;
    q->alloc_writes = true;
}

int qio_open_file(const char *path, int flags, qio_t **out)
{
    struct stat st;
    int fd = open_fd(path, flags, &st);
    if (fd < 0)
        return fd;
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return -EISDIR;
    }
    *out = wrap_fd(fd, path, flags);
    return 0;
}

/* qemu picks the 'host_device' protocol driver for character and block devices and the
 * 'file' driver for everything else (hdev_probe_device); raw_open_common() then refuses
 * a 'file' that is not a regular file, and bdrv_open_driver() asks for the length at once
 * (bdrv_refresh_total_sectors). */
int qio_open_image(const char *path, int flags, qio_t **out, char **errmsg)
{
    struct stat st;
    int fd = open_fd(path, flags, &st);
    if (fd < 0) {
        *errmsg = xasprintf("Could not open '%s': %s", path, strerror(-fd));
        return fd;
    }
    if (!S_ISREG(st.st_mode) && !S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode)) {
        close(fd);
        *errmsg = xasprintf("'file' driver requires '%s' to be a regular file", path);
        return -EINVAL;
    }
    qio_t *q = wrap_fd(fd, path, flags);
    uint64_t size;
    int r = file_size(q, &size);
    if (r < 0) {
        *errmsg = xasprintf("Could not refresh total sector count: %s", strerror(-r));
        qio_close(q);
        return r;
    }
    *out = q;
    return 0;
}

int qio_probe_direct_align(const char *path, uint32_t *align)
{
    int fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    void *buf = NULL;
    if (posix_memalign(&buf, 4096, 4096) != 0) {
        close(fd);
        return -ENOMEM;
    }
    static const uint32_t sizes[] = { 512, 1024, 2048, 4096 };
    *align = 4096;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        if (pread(fd, buf, sizes[i], 0) >= 0) {
            *align = sizes[i];
            break;
        }
    }
    free(buf);
    close(fd);
    return 0;
}
