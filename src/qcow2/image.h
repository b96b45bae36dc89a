/* The one model of an open qcow2 image, shared by the checker (checker/, struct qc2), repair
 * (repair/, through the checker's state) and the block driver (src/block/qcow2*.c, struct
 * qcow2_state).
 *
 * An image is opened once, by qcow2_image_open, in qemu's qcow2_do_open order and with its
 * messages, in one of three modes:
 *   READ   info, map, compare, backing files: the L1 table is loaded whole (zeros past EOF);
 *          with no_io (info) the data file is not opened and no key is asked for
 *   CHECK  qemu's BDRV_O_CHECK: tolerant, loads what it can and leaves judging to the
 *          checker (tables cut by EOF load partly, the reftable is loaded at open, the
 *          snapshot table is left to the checker's snapshot pass)
 *   RDWR   as READ, the corrupt bit refused (qemu's "Image is corrupt; cannot be opened
 *          read/write"); the user then loads the snapshot table and calls
 *          qcow2_image_activate (qcow2/header_write.h: unknown autoclear bits cleared, the
 *          header rewritten as qemu does) and repairs a dirty image
 * The model holds what every user reads: header, extensions, L2 geometry, file and data file
 * handles, active L1, refcount table with the refblock cache (qcow2/refcount.h), the
 * snapshot table (qcow2_image_read_snapshots: the driver reads it right after open, the
 * checker in its snapshot pass, so that a bad table is a finding there; repair in qemu's
 * repair mode, QCOW2_SN_READ_REPAIR) and the bitmap directory (qcow2_image_load_bitmaps,
 * qcow2/bitmaps.h: the driver shows it in info, the checker counts its references). Tables
 * are read by the one loader (qcow2/table.h). Left to the checker: the backing chain.
 *
 * Users embed the model with QCOW2_IMAGE_EMBED, which also lets their code name the model's
 * fields directly (s->h, s->l1) while &s->m is the model passed to model functions. */
#ifndef QIMG_QCOW2_IMAGE_H
#define QIMG_QCOW2_IMAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "format/qcow2_ext.h"
#include "format/qcow2_header.h"
#include "format/qcow2_l2.h"
#include "format/qcow2_snapshot.h"
#include "io/qio.h"
#include "qcow2/refcount.h"

struct qcow2_port;
struct qcow2_l2_cache;
struct qcow2_bitmap_dirent;
struct qcow2_dbitmaps;

/* Host ranges to discard, in order (qcow2/alloc.c). */
struct qcow2_discards {
    uint64_t *off, *len;
    size_t n, cap;
};

#define QCOW2_IMAGE_FIELDS                                                                 \
    qio_t *q;                    /* the image file (not owned) */                          \
    qio_t *data;                 /* external data file, NULL if none (owned by the user) */ \
    const char *filename;                                                                  \
    struct qcow2_header h;                                                                 \
    struct qcow2_ext ext;                                                                  \
    struct qcow2_l2_geom geom;                                                             \
    uint64_t file_size;                                                                    \
    uint64_t cs;                 /* cluster size */                                        \
    bool has_data_file;          /* data is open */                                        \
    bool size_wraps;             /* size waived at decode: the user refuses it at the end */ \
    /* cluster 0 as read at open (CHECK, RDWR): the unknown header tail and extensions   \
     * that a header rewrite keeps (qcow2/header_write.h) */                               \
    uint8_t *c0;                                                                           \
    size_t c0_len;                                                                         \
    /* the writer's caches (qcow2_image_flush_caches): write its dirty L2 tables / refcount \
     * blocks; NULL while it caches none */                                                \
    int (*l2_flush)(struct qcow2_image *);                                                 \
    int (*rb_flush)(struct qcow2_image *);                                                 \
    bool active;                 /* open read-write and activated: the close writes */    \
    char *backing_name;          /* stored backing file name, NULL if none */             \
    struct qcow2_overlap *ol;    /* the overlap guard's state (qcow2/overlap.h), lazily */ \
    /* active L1, host order; CHECK: entries past l1_loaded lie beyond EOF and read as 0; \
     * READ/RDWR: all l1_size entries (zeros past EOF) */                                  \
    uint64_t *l1;                                                                          \
    uint64_t l1_loaded;                                                                    \
    /* reftable, host order, entries past rt_loaded read as 0 (qemu's refcount_table_size \
     * is rt_entries); CHECK and RDWR (whole) load it at open, READ when it is needed */    \
    uint64_t *rt;                                                                          \
    uint64_t rt_loaded;                                                                    \
    uint64_t rt_entries;                                                                   \
    struct qcow2_rb_cache rb;    /* stored refcounts (repair patches it to mirror its plan) */ \
    /* snapshot table (qcow2_image_read_snapshots): nb_sn entries read; its offset and,    \
     * once read whole, its size */                                                        \
    struct qcow2_snapshot *sn;                                                             \
    uint32_t nb_sn;                                                                        \
    uint64_t sn_offset, sn_size;                                                           \
    /* bitmap directory (qcow2_image_load_bitmaps): nb_bm entries, in directory order */  \
    struct qcow2_bitmap_dirent *bm;                                                        \
    uint32_t nb_bm;                                                                        \
    /* their contents in memory, writable images (qcow2/bitmap_store.h); NULL if none */   \
    struct qcow2_dbitmaps *dbm;                                                            \
    /* writing (RDWR): the allocator's search start and compressed-byte packing point    \
     * (qcow2/alloc.h), which freed clusters qemu would discard (indexed by               \
     * enum qcow2_discard_type), and the metadata write port (qcow2/port.h; NULL: direct) */ \
    uint64_t free_cluster_index, free_byte_offset;                                         \
    bool discard_passthrough[5];                                                           \
    /* qemu's s->cache_discards / s->discards: while set, freed clusters' discards are    \
     * collected (merged) and passed down at the end of the operation (qcow2/alloc.h) */  \
    bool cache_discards;                                                                   \
    struct qcow2_discards discards;                                                        \
    struct qcow2_port *port;                                                               \
    struct qcow2_l2_cache *l2cache; /* L2 tables (qcow2/l2.h), NULL until used */

struct qcow2_image {
    QCOW2_IMAGE_FIELDS
};

/* In a user's struct: the model as s->m, its fields also as s->FIELD (same storage). */
#define QCOW2_IMAGE_EMBED                                                                  \
    union {                                                                                \
        struct qcow2_image m;                                                              \
        struct {                                                                           \
            QCOW2_IMAGE_FIELDS                                                             \
        };                                                                                 \
    }

/* SALVAGE (block/salvage.c): CHECK's tolerance, and no refcount table at all (neither
 * validated nor loaded: salvage reads guest data only); l1 holds min(l1_size, 4 Mi) entries
 * as far as the file has them. */
enum qcow2_open_mode { QCOW2_MODE_READ, QCOW2_MODE_CHECK, QCOW2_MODE_RDWR, QCOW2_MODE_SALVAGE };

struct qcow2_open_opts {
    enum qcow2_open_mode mode;
    bool no_io;              /* READ for info (qemu's BDRV_O_NO_IO): no data file, no key */
    bool no_warnings;        /* the bitmaps-inconsistent warning was given already */
    bool has_key;            /* encryption options were given: the image layer unlocks an
                                encrypted image after the open instead of refusing it */
    unsigned data_flags;     /* qio_open_image flags for the data file */
    bool data_lock_write;    /* lock the data file as a writer */
    const char *data_file;   /* the data-file.filename option: opened instead of the name
                                in the header (qemu's "data-file" child), or NULL */
};

/* Opens the qcow2 image on q (m zeroed by the caller). 0, or -errno with *errmsg (malloc'd)
 * the text qemu prints after "Could not open 'F': ". On failure the caller still calls
 * qcow2_image_close (and closes m->data). */
int qcow2_image_open(struct qcow2_image *m, qio_t *q, const char *filename,
                     const struct qcow2_open_opts *o, char **errmsg);
/* Reads the image's metadata again after someone else wrote it (the repair of a dirty
 * image at a read-write open): the model closed and opened again with o, keeping q, the
 * open data file, the port and the writer's hooks. The snapshot table is the user's to
 * read again. 0 or -errno with *errmsg as qcow2_image_open. */
int qcow2_image_reload(struct qcow2_image *m, const struct qcow2_open_opts *o, char **errmsg);
/* Frees what the model holds (not q, not data). */
void qcow2_image_close(struct qcow2_image *m);

/* Why qcow2_image_read_snapshots stopped; each user words it (the driver as qemu's open,
 * the checker as findings). */
enum qcow2_sn_stop {
    QCOW2_SN_TOO_BIG,        /* the table passes 64 MiB after entry index */
    QCOW2_SN_OVERFLOW,       /* entry index would start past 2^64 */
    QCOW2_SN_EXTRA_TOO_LARGE,/* entry index: extra data too large (-EFBIG, e says it) */
    QCOW2_SN_BAD_ENTRY,      /* entry index: another decoding error (e says it) */
    QCOW2_SN_READ_ERROR,     /* entry index: the file read failed (err) */
};
struct qcow2_sn_error {
    enum qcow2_sn_stop kind;
    int err;
    uint32_t index;
    uint32_t extra;          /* TOO_BIG: the dropped entry's extra_data_size as stored (qemu's
                              * repair counts that entry's truncated extra data too) */
    struct fmt_error e;
};

/* qemu's qcow2_read_snapshots: reads the h.nb_snapshots entries at h.snapshots_offset one
 * at a time into m->sn (memory follows the entries, not the header's claims), m->nb_sn
 * counting those read; sn_size is set when all are. 0, or -errno with *why filled. The
 * caller validates the table's count and offset first (the header decoder does outside
 * CHECK mode). */
int qcow2_image_read_snapshots(struct qcow2_image *m, struct qcow2_sn_error *why);

/* qemu's repair mode of qcow2_read_snapshots (qcow2_check_read_snapshot_table under -r all):
 * extra data past 1024 bytes is truncated (the entry's extra_truncated says so) instead of
 * refused. A table that passes 64 MiB (truncated extra data counted as 1024 bytes) or
 * INT_MAX bytes is still -EFBIG with why->kind QCOW2_SN_TOO_BIG in either mode; the entries
 * before why->index are then kept as a whole table (nb_sn, sn_size), which repair keeps. */
#define QCOW2_SN_READ_REPAIR 0x1u

/* qcow2_image_read_snapshots for nb entries (at most h.nb_snapshots: repair may cut the
 * count first) with flags QCOW2_SN_READ_*. */
int qcow2_image_read_snapshots_opt(struct qcow2_image *m, uint32_t nb, unsigned flags,
                                   struct qcow2_sn_error *why);

/* qemu's qcow2_load_dirty_bitmaps at open (bitmap_list_load, then each bitmap's table as
 * load_bitmap reads it): m->bm, m->nb_bm. 0, or -errno with *errmsg (malloc'd) the text
 * qemu prints after "Could not open 'F': ". Memory: one entry (about 1 KiB) per bitmap,
 * at most 65535. */
int qcow2_image_load_bitmaps(struct qcow2_image *m, char **errmsg);

/* Loads the refcount table if not loaded (the driver loads it on demand). 0 or -errno. */
int qcow2_image_load_reftable(struct qcow2_image *m);

/* The stored refcount of cluster k (qemu's qcow2_get_refcount): 0 or -errno (-EIO for an
 * unaligned refblock offset, which qemu reports as corruption). */
static inline int qcow2_image_refcount(struct qcow2_image *m, uint64_t k, uint64_t *out)
{
    uint64_t n = m->rt_entries < m->rt_loaded ? m->rt_entries : m->rt_loaded;
    return qcow2_rb_cache_refcount(&m->rb, m->q, m->cs, m->h.refcount_order,
                                   m->h.refcount_block_bits, m->rt, n, k, out);
}

#endif
