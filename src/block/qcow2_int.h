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

struct qcow2_state {
    /* the image model (qcow2/image.h), opened READ or RDWR: s->m, and its fields as s->h,
     * s->ext, s->l1 (all l1_size entries), s->rt (loaded for metadata preallocation
     * detection only, and freed after it) ... */
    QCOW2_IMAGE_EMBED;

    int prealloc; /* -1 not yet detected, else 0/1 */
    bool packing_freed; /* the compressed-packing cluster (free_byte_offset) was freed */

    /* compressed cluster: input buffer and the last decompressed cluster */
    uint8_t *cbuf;
    size_t cbuf_len;
    uint8_t *dbuf;
    uint64_t dbuf_entry; /* L2 entry it came from; 0 = none */

    struct luks_header *luks; /* LUKS encryption header, read by info's NO_IO open */
    struct qcrypt *crypt;     /* the data cipher once a key-secret unlocked the image */
    bool crypt_physical;      /* IVs from host offsets (LUKS) or guest offsets (AES), as
                                 qemu's crypt_physical_offset */
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

/* qemu's qcow2_get_subcluster_range_type(): the type at sc_from and how many subclusters
 * from there have it (-EINVAL for an invalid entry). */
int qcow2_range_type(const struct qcow2_state *s, uint64_t entry, uint64_t bitmap,
                     unsigned sc_from, enum qcow2_subcluster_type *type);

/* Write side (qcow2_write.c): the driver's write ops. */
int qcow2_write(image_t *img, uint64_t off, const void *buf, size_t n);
int qcow2_write_zeroes(image_t *img, uint64_t off, uint64_t n, bool may_unmap);
int qcow2_write_compressed(image_t *img, uint64_t off, const void *buf, size_t n);
int qcow2_discard(image_t *img, uint64_t off, uint64_t n);
int qcow2_flush(image_t *img);
/* qemu's qcow2_subcluster_zeroize without unmapping: off subcluster-aligned, the end too
 * unless it is the image's. */
int qcow2_zeroize(image_t *img, uint64_t off, uint64_t n);
/* After a read-write open: the writer's caches and allocator state. 0 or -errno (*errmsg). */
int qcow2_writer_init(image_t *img, char **errmsg);
/* At close, after qcow2_image_inactivate (the caches): the files flushed. */
void qcow2_writer_close(image_t *img);
/* qemu's qcow2_cluster_discard(QCOW2_DISCARD_ALWAYS, full_discard): off cluster-aligned,
 * the end too unless it is the image's. */
int qcow2_discard_full(image_t *img, uint64_t off, uint64_t n);
/* qemu's preallocate_co for metadata preallocation of [off, end). errmsg as truncate. */
int qcow2_preallocate(image_t *img, uint64_t off, uint64_t end, char **errmsg);
/* falloc/full growth: nb clusters allocated at host mapped from guest's cluster on
 * (prealloc false: their subclusters marked allocated). */
int qcow2_link_preallocated(image_t *img, uint64_t guest, uint64_t host, uint64_t nb,
                            bool prealloc, char **errmsg);
/* qcow2_truncate.c */
int qcow2_truncate(image_t *img, uint64_t size, enum img_prealloc prealloc, char **errmsg);

int qcow2_block_status(image_t *img, uint64_t off, uint64_t bytes, block_status_t *st);
int qcow2_read(image_t *img, uint64_t off, void *buf, size_t n);

/* Metadata loaded at open (qcow2_meta.c). errmsg like driver open. */
int qcow2_load_snapshots(image_t *img, char **errmsg);
struct json *qcow2_format_specific(image_t *img);
int qcow2_snapshots(image_t *img, snapshot_info_t **list, size_t *count);

void qcow2_map_free(struct qcow2_state *s);

#endif
