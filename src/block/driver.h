/* Format driver table. A driver turns its on-disk metadata into guest reads and block status;
 * the generic rules (backing chain, EOF, ALLOCATED) live in image.c, not in drivers.
 *
 * Write-side operations are declared now so repair/convert/commit can plug in; a NULL op means
 * "not supported by this driver" and image.c returns -ENOTSUP. */
#ifndef QIMG_BLOCK_DRIVER_H
#define QIMG_BLOCK_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "block/image.h"
#include "util/json.h"

/* One internal snapshot as info and snapshot -l show it (qemu's QEMUSnapshotInfo). */
typedef struct snapshot_info {
    char *id;
    char *name;
    uint64_t vm_state_size;
    uint32_t date_sec, date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t icount; /* UINT64_MAX: none */
} snapshot_info_t;

struct driver {
    const char *name;
    bool supports_backing; /* unallocated ranges defer to a backing image */
    bool no_get_info;      /* no bdrv_get_info in qemu: info shows no dirty-flag */

    /* Probe score for the first bytes of a file (qemu's bdrv_probe): 0 = not this format. */
    int (*probe)(const uint8_t *buf, size_t len, const char *filename);

    /* Reads metadata and fills img->size, cluster_size, dirty, backing_file,
     * backing_format, data_file(_name). img->file is open; img->flags set. On failure sets
     * *errmsg to the text after "Could not open 'F': " and returns -errno. */
    int (*open)(image_t *img, char **errmsg);
    void (*close)(image_t *img);

    /* Guest read of [off, off+n) within img->size, including the backing chain (drivers use
     * image_read(img->backing, ...) for unallocated ranges). */
    int (*read)(image_t *img, uint64_t off, void *buf, size_t n);

    /* Driver-level block status of [off, off+bytes) (bytes > 0, off+bytes <= size): fills
     * st->flags with DATA/ZERO/OFFSET_VALID/RECURSE/RAW only, st->pnum (0 < pnum <= bytes),
     * st->map and st->file/filename when OFFSET_VALID. Generic rules are added by the caller.
     * st->file stays NULL when map is what qemu reports but not where the guest bytes are
     * read from (qcow v1 ORs the in-cluster offset into an unaligned cluster offset): no
     * caller then reads the file at map directly. */
    int (*block_status)(image_t *img, uint64_t off, uint64_t bytes, block_status_t *st);

    /* info: {"type": fmt, "data": {...}} for format-specific, or NULL when none. */
    struct json *(*format_specific)(image_t *img);
    /* info: internal snapshots (count may be 0). Caller frees with snapshot_list_free. */
    int (*snapshots)(image_t *img, snapshot_info_t **list, size_t *count);

    /* Write side (image.c checks the request first: in range, image writable). write_zeroes
     * returns -ENOTSUP to have image.c write zero buffers; a NULL discard is a no-op; a NULL
     * flush flushes the layer's files; truncate sets img->size and, on failure, *errmsg. */
    int (*write)(image_t *img, uint64_t off, const void *buf, size_t n);
    int (*write_zeroes)(image_t *img, uint64_t off, uint64_t n, bool may_unmap);
    int (*write_compressed)(image_t *img, uint64_t off, const void *buf, size_t n);
    int (*discard)(image_t *img, uint64_t off, uint64_t n);
    int (*flush)(image_t *img);
    int (*truncate)(image_t *img, uint64_t size, enum img_prealloc prealloc, char **errmsg);
};

extern const struct driver raw_driver;
extern const struct driver qcow2_driver;
extern const struct driver qed_driver;
extern const struct driver qcow1_driver; /* "qcow", version 1 */
extern const struct driver vdi_driver;
extern const struct driver luks_driver;
extern const struct driver bochs_driver; /* read-only, as qemu's */

/* All drivers, in probe order, NULL-terminated. */
extern const struct driver *const drivers[];

/* By name (-f, backing format); NULL when unknown. */
const struct driver *driver_find(const char *name);

void snapshot_list_free(snapshot_info_t *list, size_t count);

/* One step of a guest read: fills p with the guest bytes at off, at most n (n > 0), and
 * returns how many it filled (> 0) or -errno. Each driver says how far one lookup goes. */
typedef int64_t (*read_step_fn)(image_t *img, uint64_t off, uint8_t *p, size_t n);

/* Fills [off, off+n) with one step after another: the loop every read shares. */
int read_in_steps(image_t *img, uint64_t off, void *buf, size_t n, read_step_fn step);

/* file-posix's handle_aiocb_write_zeroes(_unmap) on a file (raw.c): 0, or -ENOTSUP when no
 * fallocate mode worked (the caller then writes zero buffers unless qemu would not). */
int posix_write_zeroes(qio_t *f, uint64_t off, uint64_t n, bool may_unmap);

/* Guest bytes this layer does not hold: the backing image's, zeros without one. */
int read_from_backing(image_t *img, uint64_t off, void *buf, size_t n);

#endif
