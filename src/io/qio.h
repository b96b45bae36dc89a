/* File access behind one interface, so the same code runs on a real file and, for fuzzing and
 * unit tests, on a byte buffer in memory. Reads past the end of the file return zeros (as qemu's
 * file protocol does); every operation returns 0 or a negative errno. */
#ifndef QIMG_IO_QIO_H
#define QIMG_IO_QIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* qemu's BDRV_MAX_LENGTH (INT64_MAX rounded down to 1 GiB): a request that ends past it
 * fails with -EIO before any I/O, as qemu's request check does; images whose virtual size
 * exceeds it do not open. */
#define QIO_MAX_LENGTH (((uint64_t)INT64_MAX) & ~((uint64_t)(1u << 30) - 1))

enum {
    QIO_RDONLY = 0,
    QIO_RDWR = 1 << 0,
    QIO_SHARE = 1 << 1, /* -U: do not take or test image locks */
};

typedef struct qio qio_t;

/* fallocate(2) modes for qio_fallocate(), as qemu's file-posix uses them. */
enum qio_falloc {
    QIO_FALLOC_ALLOCATE,   /* mode 0: allocate, growing the file past its end */
    QIO_FALLOC_ZERO_RANGE, /* FALLOC_FL_ZERO_RANGE: zeros, blocks stay allocated */
    QIO_FALLOC_PUNCH_HOLE, /* FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE: zeros, unmapped */
};

struct qio_ops {
    int (*pread)(qio_t *q, void *buf, size_t n, uint64_t off);
    int (*pwrite)(qio_t *q, const void *buf, size_t n, uint64_t off);
    int (*size)(qio_t *q, uint64_t *out);
    int (*truncate)(qio_t *q, uint64_t size);
    int (*flush)(qio_t *q);
    /* Allocation of [off, end): *is_data and the length of the run starting at off
     * (0 when off is at or past the end). */
    int (*extent)(qio_t *q, uint64_t off, bool *is_data, uint64_t *len);
    /* Bytes of storage actually allocated (st_blocks * 512). */
    int (*allocated)(qio_t *q, uint64_t *out);
    /* fallocate(2) of [off, off+len); NULL: -ENOTSUP (callers fall back to writing zeros). */
    int (*fallocate)(qio_t *q, enum qio_falloc mode, uint64_t off, uint64_t len);
    void (*close)(qio_t *q);
    /* A driver event (io/blkdebug.h); NULL: ignored. */
    void (*event)(qio_t *q, int ev);
    /* Protocols that report block status themselves (NBD): QIO_ST_* flags of the run at
     * off (at most bytes long) in *st and its length in *pnum. NULL: files, which answer
     * through extent. */
    int (*status)(qio_t *q, uint64_t off, uint64_t bytes, unsigned *st, uint64_t *pnum);
};

struct qio {
    const struct qio_ops *ops;
    char *path;
    bool writable;
    bool no_flush;  /* qemu's cache=unsafe (BDRV_O_NO_FLUSH): flushes succeed doing nothing */
    int fd;
    /* memory backend */
    unsigned char *mem;
    size_t mem_len, mem_cap, mem_max;
    /* memory backend: fail the writes after this many with EIO (tests); 0 = off. The file
     * backend's crash injection (QIMG_FAULT_AFTER_WRITES) counts per process, in file.c. */
    long writes_left;
    /* qemu's block-status cache (bdrv_bsc_*): the last data extent [bsc_lo, bsc_hi) found by
     * qio_extent, so a file without holes costs one SEEK_DATA/SEEK_HOLE pair, not one per
     * query; dropped by every write and truncate. Empty when bsc_hi <= bsc_lo. */
    uint64_t bsc_lo, bsc_hi;
    /* qemu's request_alignment for block status: 1, or what an O_DIRECT open
     * (cache.direct=on) needs (qio_probe_direct_align) */
    uint32_t align;
    /* qio_hint_filling: large writes allocate their range first (file backend, ext4) */
    bool alloc_writes;
    void *priv; /* backend state (the NBD connection) */
};

/* Opens path (never blocks, even on a FIFO); a directory gives -EISDIR; on failure
 * returns -errno. */
int qio_open_file(const char *path, int flags, qio_t **out);
/* Opens an image, backing or data file as qemu's protocol layer does: besides a failed open
 * ("Could not open 'P': <strerror>"), anything but a regular file or a device is refused
 * ("'file' driver requires 'P' to be a regular file", also a FIFO, never waiting for a
 * writer) and so is a file whose length cannot be had ("Could not refresh total sector
 * count: <strerror>", e.g. /proc/self/mem). Returns 0 or -errno with *errmsg set (malloc'd)
 * to that text, which callers prefix as qemu does ("Could not open 'TOP': ..."). */
int qio_open_image(const char *path, int flags, qio_t **out, char **errmsg);
/* qemu's raw_probe_alignment for a file opened with O_DIRECT (cache.direct=on): the
 * smallest of 512, 1024, 2048, 4096 bytes an O_DIRECT read at offset 0 accepts (4096 when
 * none does). -errno when path cannot be opened with O_DIRECT. Reads nothing else. */
int qio_probe_direct_align(const char *path, uint32_t *align);
/* Tells the file that it is being filled with new data (convert's and dd's target): on
 * ext4, each large write then allocates its range with fallocate(2) just before writing
 * it (file.c says why). Ignored by other backends and file systems. */
void qio_hint_filling(qio_t *q);
/* Announces a driver event to the file (qemu's BLKDBG_EVENT): only a blkdebug file acts on
 * it. */
void qio_event(qio_t *q, int ev);
/* A copy of data in memory; writes may grow it up to max_len bytes. */
qio_t *qio_open_mem(const void *data, size_t len, bool writable, size_t max_len);

int qio_pread(qio_t *q, void *buf, size_t n, uint64_t off);
/* qio_pread in the shape of the readers' pread callbacks (format/qcow2_snapshot.h,
 * qcow2/bitmaps.h): ctx is the qio_t, a length beyond size_t is -EINVAL. The one such
 * wrapper: the model, the checker and the driver all read through it. */
int qio_pread_cb(void *q, void *buf, uint64_t len, uint64_t off);
int qio_pwrite(qio_t *q, const void *buf, size_t n, uint64_t off);
int qio_size(qio_t *q, uint64_t *out);
int qio_truncate(qio_t *q, uint64_t size);
int qio_flush(qio_t *q);
int qio_extent(qio_t *q, uint64_t off, bool *is_data, uint64_t *len);
int qio_allocated(qio_t *q, uint64_t *out);
/* 0, -ENOTSUP (backend or file system cannot), or -errno as fallocate(2) gives it. */
int qio_fallocate(qio_t *q, enum qio_falloc mode, uint64_t off, uint64_t len);
void qio_close(qio_t *q);

#endif
