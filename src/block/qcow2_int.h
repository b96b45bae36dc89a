/* qcow2 driver state, shared by qcow2.c (open, info), qcow2_map.c (L1/L2 lookup, block
 * status) and qcow2_read.c (guest reads). Not a public header. */
#ifndef QIMG_BLOCK_QCOW2_INT_H
#define QIMG_BLOCK_QCOW2_INT_H

#include "block/driver.h"
#include "format/luks_header.h"
#include "format/qcow2_ext.h"
#include "format/qcow2_header.h"
#include "format/qcow2_l2.h"
#include "qcow2/image.h"

/* Bounded L2 cache: at most this many bytes of tables, and at least 2 tables. */
/* L2 cache: at most this much per image, and at most QCOW2_L2_CACHE_TOTAL for all open
 * qcow2 layers together, so that a chain of thousands of images stays in bounded memory
 * (a layer beyond the total reads its tables into one shared scratch buffer instead). */
#define QCOW2_L2_CACHE_BYTES (8u << 20)
#define QCOW2_L2_CACHE_TOTAL (32u << 20)

struct l2_slot {
    uint64_t offset; /* host offset of the table; 0 = empty slot */
    uint64_t used;   /* LRU stamp */
    uint8_t *data;   /* one cluster, big-endian entries */
};

struct qcow2_state {
    /* the image model (qcow2/image.h), opened READ or RDWR: s->m, and its fields as s->h,
     * s->ext, s->l1 (all l1_size entries), s->rt (loaded for metadata preallocation
     * detection only, and freed after it) ... */
    QCOW2_IMAGE_EMBED;

    struct l2_slot *l2c;
    size_t l2c_n;
    size_t l2c_filled;   /* slots 0..l2c_filled-1 hold a table (counted in the process-wide
                            total); each slot's buffer is allocated when first filled */
    uint64_t l2c_tick;

    int prealloc; /* -1 not yet detected, else 0/1 */

    /* compressed cluster: input buffer and the last decompressed cluster */
    uint8_t *cbuf;
    size_t cbuf_len;
    uint8_t *dbuf;
    uint64_t dbuf_entry; /* L2 entry it came from; 0 = none */

    struct luks_header *luks; /* LUKS encryption header, read by info's NO_IO open */
};

/* What one run of guest bytes maps to (qemu's qcow2_get_host_offset). */
struct qcow2_run {
    enum qcow2_subcluster_type type;
    uint64_t bytes;       /* length of the run from the queried offset */
    uint64_t host;        /* host offset of the queried byte (NORMAL/ZERO_ALLOC/UNALLOC_ALLOC)
                             or the whole L2 entry (COMPRESSED) */
};

/* Largest run we look up at once: the rest of one L2 table, capped like qemu's INT_MAX. */
int qcow2_get_run(image_t *img, uint64_t off, uint64_t bytes, struct qcow2_run *run);

int qcow2_block_status(image_t *img, uint64_t off, uint64_t bytes, block_status_t *st);
int qcow2_read(image_t *img, uint64_t off, void *buf, size_t n);

/* Metadata loaded at open (qcow2_meta.c). errmsg like driver open. */
int qcow2_load_snapshots(image_t *img, char **errmsg);
struct json *qcow2_format_specific(image_t *img);
int qcow2_snapshots(image_t *img, snapshot_info_t **list, size_t *count);

void qcow2_map_free(struct qcow2_state *s);

#endif
