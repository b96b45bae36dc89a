/* qimg convert: the state the command line (convert.c) hands to the copy engine
 * (convert_copy.c), after qemu-img 7.2's ImgConvertState. Counts are in 512-byte sectors as
 * qemu's are, so every split point is qemu's. */
#ifndef QIMG_CMD_CONVERT_H
#define QIMG_CMD_CONVERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "block/image.h"

#define CONVERT_SECTOR 512
#define CONVERT_IO_BUF_SECTORS 4096      /* qemu-img's IO_BUF_SIZE (2 MiB) */
#define CONVERT_MAX_BUF_SECTORS 32768    /* qemu-img's MAX_BUF_SECTORS (16 MiB) */
#define CONVERT_MAX_COROUTINES 16

/* qemu's ImgConvertBlockStatus */
enum convert_status { CONVERT_DATA, CONVERT_ZERO, CONVERT_BACKING };

struct convert;

/* THE SOURCE-READ SEAM. Every guest read of a source goes through this one function: n
 * bytes of source idx at off (within that source) into buf; 0 or -errno. The default is
 * image_read(); a salvage reader (reading around damaged metadata) replaces it by setting
 * convert.read / convert.read_ctx before convert_do_copy(). qemu's --salvage retry (one
 * sector at a time, zeros and a warning for what fails) sits above it, in convert_read(). */
typedef int (*convert_read_fn)(struct convert *s, int idx, uint64_t off, void *buf, size_t n);

/* The same seam for block status (qemu's bdrv_block_status_above on a source). */
typedef int (*convert_status_fn)(struct convert *s, int idx, uint64_t off, uint64_t bytes,
                                 block_status_t *st);

struct convert_src {
    image_t *img;
    const char *name;
    int64_t sectors;   /* blk_nb_sectors: size rounded up to 512 */
    int alignment;     /* sectors: request alignment and cluster size (qemu src_alignment) */
};

struct convert {
    struct convert_src *src;
    int src_num;
    int64_t total_sectors;
    int64_t allocated_sectors, allocated_done;

    image_t *target;
    bool has_zero_init;
    bool compressed;
    bool target_is_new;
    bool target_has_backing;
    int64_t target_backing_sectors; /* negative if unknown */
    bool wr_in_order;
    bool copy_range;
    bool salvage;
    bool quiet;
    int min_sparse;          /* sectors; 0 = fully allocated (-S 0) */
    int alignment;           /* sectors; target write alignment for zero detection */
    int64_t cluster_sectors; /* target cluster size (compressed writes go per cluster) */
    int64_t buf_sectors;
    int num_coroutines;      /* -m: accepted; the copy keeps qemu's order whatever it is */
    uint64_t rate_limit;     /* -r: bytes per second written, 0 = none */

    convert_read_fn read;
    void *read_ctx;
    convert_status_fn status_fn;

    /* iteration state (qemu's s->status, s->sector_next_status) */
    enum convert_status status;
    int64_t sector_next_status;
};

/* Fills in the default seams (image_read, image_block_status_above). */
void convert_init_io(struct convert *s);

/* qemu's convert_do_copy: counts the sectors to copy (progress), then copies in qemu's
 * chunks and order. Prints qemu's error line for a failed read or write and returns
 * -errno; 0 on success. */
int convert_do_copy(struct convert *s);

#endif
