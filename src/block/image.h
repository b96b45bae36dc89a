/* The image handle: one open layer of a disk image (qemu's BlockDriverState, simplified).
 *
 * An image is a format driver (raw, qcow2) on top of a file, optionally with an external data
 * file and a backing image below it. Opening an image opens its whole backing chain unless
 * IMG_OPEN_NO_BACKING is given. Everything here is read-only unless IMG_OPEN_RDWR is given.
 *
 * Error convention: functions return 0 or a negative errno. Open additionally hands back a
 * message in qemu's words ("Could not open 'F': ..."), which the command prints with
 * err_report("%s", msg). A driver that meets corrupt metadata during I/O reports qemu's
 * corruption event once per image on stderr (see image_corrupt()) and returns -EIO. A
 * read-only image stays usable (qemu: non-fatal event); a writable one becomes unusable and
 * every later operation returns -ENOMEDIUM, as qemu's does. */
#ifndef QIMG_BLOCK_IMAGE_H
#define QIMG_BLOCK_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/qio.h"

struct driver;
struct json;
struct bspec;
struct blkdebug_state;

/* Open flags. */
enum {
    IMG_OPEN_RDWR = 1 << 0,       /* open for writing (default: read-only) */
    IMG_OPEN_NO_BACKING = 1 << 1, /* do not open the backing chain (info does this per layer) */
    IMG_OPEN_SHARE = 1 << 2,      /* -U / force-share: take no locks, tolerate others' locks */
    IMG_OPEN_NO_IO = 1 << 3,      /* metadata only (info): a missing external data file is
                                     tolerated, guest I/O then fails with -ENOMEDIUM */
    IMG_OPEN_CHECK = 1 << 4,      /* opened by check (qemu's BDRV_O_CHECK): no repair at
                                     open, check does it (QED's NEED_CHECK) */
    IMG_OPEN_IMAGE_OPTS = 1 << 5, /* the name is an --image-opts key=value list */
};

/* Most backing files below an image. qemu-img 7.2 has no designed limit (its compare
 * overflows a coroutine stack near 1090 images; check of 4000 takes minutes). A guest read
 * descends the chain recursively, about 450 bytes of stack per layer, so 10000 layers stay
 * far inside the usual 8 MiB stack; deeper chains are refused with a message instead of a
 * crash. */
#define IMG_MAX_BACKING 10000

/* qemu's BDRV_MAX_LENGTH: larger virtual sizes fail to open. */
#define IMG_MAX_LENGTH QIO_MAX_LENGTH

typedef struct image image_t;

struct image {
    const struct driver *drv;
    char *filename;        /* the file the image was opened from (the protocol node's name:
                              "file:"/json: wrappers removed): map's File column, the base
                              of relative backing names */
    char *display_name;    /* qemu's bs->filename when it is not filename: the json:{...}
                              qemu reconstructs for a node with strong options; else NULL.
                              image_name() gives the one to print. */
    char *file_display;    /* the file node's name when it is not filename ("blkdebug:C:F"
                              over a blkdebug filter), else NULL: image_file_name() */
    const char *format;    /* driver name: "raw", "qcow2" */
    bool probed;           /* format came from probing, not from -f / the backing format */
    int flags;             /* IMG_OPEN_* it was opened with */
    uint64_t size;         /* virtual size in bytes (qemu: total_sectors * 512) */
    uint32_t cluster_size; /* 0 when the format has none (raw) */
    bool dirty;            /* dirty flag as info reports it */
    bool encrypted;        /* qemu's bs->encrypted: info's "encrypted: yes" */

    qio_t *file;           /* the image file itself */
    qio_t *data_file;      /* where guest data lives: == file, or the external data file;
                              NULL only with IMG_OPEN_NO_IO and a missing data file */
    char *data_file_name;  /* resolved path of an external data file, else NULL */
    char *data_file_opt;   /* the "data-file.filename" option, else NULL: opened in place of
                              the name the image stores */
    char *data_file_label; /* how qemu names that node ("blkdebug::F" through blkdebug) */

    char *key_secret;      /* the open options' key-secret (an --object secret id), or NULL:
                              encrypted images then open only for info (NO_IO) */
    char *encrypt_format;  /* the open options' encrypt.format, or NULL */

    char *backing_file;    /* backing file name as stored in the image, or NULL */
    char *backing_full;    /* that name resolved against the image's directory, or NULL */
    char *backing_format;  /* backing format from the image (extension), or NULL */
    image_t *backing;      /* opened backing image, NULL when none or NO_BACKING */

    bool backing_none;     /* "backing": null: the backing image is not opened */
    struct bspec *backing_opts; /* backing.* options for the backing image, or NULL */
    uint64_t raw_offset;   /* raw's offset/size options: the guest disk is this window */
    uint64_t raw_size;     /* of the file; raw_size 0 with !raw_window: the whole file */
    bool raw_window;

    struct blkdebug_state *top_bd; /* a blkdebug filter above the format (json: driver=
                              blkdebug with an "image"): its rules fail this layer's guest
                              requests (io/blkdebug.h); info shows format "blkdebug" */
    bool broken;           /* writable image hit corruption: further I/O gives -ENOMEDIUM */
    bool corruption_signaled;
    void *priv;            /* driver state */
};

/* Opens filename as fmt (NULL: probe as qemu does). filename is any name qemu-img takes
 * (plain, "file:NAME", "json:{...}"; with IMG_OPEN_IMAGE_OPTS an --image-opts list), see
 * block/blockspec.h; messages name it as given. Opens with IMG_OPEN_* flags and, unless
 * IMG_OPEN_NO_BACKING, its backing chain (backing format from the image, else probed;
 * relative backing names resolved against the directory of the image that names them).
 * Chains of up to IMG_MAX_BACKING backing files open (file descriptors are the other
 * limit, as in qemu); a backing file that is already in the chain is refused ("Backing
 * file 'B' creates an infinite loop.", where qemu recurses until it runs out of
 * resources). On failure returns -errno and sets *errmsg (malloc'd, to free) to qemu's
 * complete message,
 * e.g. "Could not open 'x.qcow2': Image is not in qcow2 format". */
int image_open(const char *filename, const char *fmt, int flags, image_t **out, char **errmsg);

/* image_open() with options added to the name's (qemu's img_open_file with an options
 * QDict): extra (may be NULL) wins over the same keys of an --image-opts list. convert
 * opens its new target with the key-secret options it was created with, commit reopens
 * an encrypted base with its key. */
int image_open_opts(const char *filename, const struct bspec *extra, const char *fmt, int flags,
                    image_t **out, char **errmsg);

/* Opens the backing chain of an image opened by other means (check's own qcow2 opener):
 * path (already resolved against the image's directory), fmt (NULL: probe), flags as for
 * image_open(); top is the image's own file, so a chain that leads back to it is a loop.
 * On failure returns -errno and sets *errmsg to qemu's text after "Could not open 'TOP': "
 * ("Could not open backing file: ..."). */
int image_open_backing_of(qio_t *top, const char *path, const char *fmt, int flags,
                          image_t **out, char **errmsg);

/* image_open_backing_of() with the backing.* options of the top image's open (NULL: none),
 * as open_chain uses them (a backing.encrypt.key-secret, a backing.driver). */
int image_open_backing_with(qio_t *top, const char *path, const char *fmt,
                            const struct bspec *opts, int flags, image_t **out, char **errmsg);

/* The name info prints for img (qemu's bs->filename). */
const char *image_name(const image_t *img);

/* The name of img's file node as qemu prints it (map's File column). */
const char *image_file_name(const image_t *img);

/* qemu's raw_open warning for a writable raw image whose format was probed (printed by
 * image_open, and again where qemu opens the raw driver a second time). */
void image_warn_probed_raw(const image_t *img, const char *filename);

/* image_open() for commands: prints the message as qemu-img does; NULL after reporting. */
image_t *image_open_or_report(const char *filename, const char *fmt, int flags);

/* qemu's path_combine(): name as seen from the directory of base (absolute names and names
 * with a protocol prefix unchanged). This is how backing and data file names are resolved.
 * Returns a malloc'd string. */
char *image_path_combine(const char *base, const char *name);
/* The backing file name of img as opened: image_path_combine() with img's file name, or
 * NULL when name is relative and img's file has no directory (qemu's bdrv_dirname: "Cannot
 * generate a base directory for NBD nodes", also for quorum nodes). */
char *image_backing_path(const image_t *img, const char *name);
/* The same for an image known by its file name only (check's own opener: plain files and
 * NBD). */
char *image_backing_path_name(const char *base, const char *name);
/* "NBD" or "quorum" when img's file has no directory, else NULL. */
const char *image_no_dirname(const image_t *img);

/* qemu's bdrv_skip_filters for a command that works on the node below a filter (map):
 * the rules of a blkdebug above the format stop acting on img. */
void image_skip_filters(image_t *img);

/* Closes img and its backing chain. NULL is fine. */
void image_close(image_t *img);

/* Reads n bytes of the guest view at off: this layer, then the backing chain; bytes past a
 * shorter backing image and past the virtual size read as zeros. Returns 0 or -errno
 * (-EIO on corrupt metadata, after the corruption event was printed). Large reads are
 * split internally; any n is fine. */
int image_read(image_t *img, uint64_t off, void *buf, size_t n);

/* Bytes allocated on disk for this image: file plus external data file (qemu's actual-size,
 * the sum of st_blocks*512). Negative errno if unknown. */
int64_t image_allocated_size(image_t *img);

/* qemu's qcow2_signal_corruption(fatal=true): read-only images print "qcow2: Image is
 * corrupt: MSG; further non-fatal corruption events will be suppressed" once; writable ones
 * print "qcow2: Marking image as corrupt: MSG; further corruption events will be suppressed"
 * and become broken (marking the corrupt bit on disk is the write side's job). */
void image_corrupt(image_t *img, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- Writes --------------------------------------------------------------------------------
 * On an image opened with IMG_OPEN_RDWR (backing layers stay read-only). The generic request
 * rules are qemu's BlockBackend ones (blk_check_byte_request, bdrv_check_request): a request
 * that ends past the virtual size or past IMG_MAX_LENGTH fails with -EIO before any I/O
 * (a zero-length one at the very end is fine); a read-only image refuses with -EPERM; a
 * broken one with -ENOMEDIUM; a driver without the operation with -ENOTSUP. */

/* The request check above, for callers that must refuse a read past the end as qemu-io does
 * (image_read itself reads zeros there). 0 or -EIO. */
int image_check_request(const image_t *img, uint64_t off, uint64_t n);

int image_write(image_t *img, uint64_t off, const void *buf, size_t n);

/* Zeros over [off, off+n). may_unmap lets the driver deallocate (qemu's BDRV_REQ_MAY_UNMAP;
 * qimg always opens as qemu's discard=unmap). A driver that cannot zero efficiently
 * (-ENOTSUP) gets zero-filled writes instead, as qemu's bdrv_co_do_pwrite_zeroes does. */
int image_write_zeroes(image_t *img, uint64_t off, uint64_t n, bool may_unmap);

/* qemu's BDRV_REQ_WRITE_COMPRESSED: -ENOTSUP for formats that cannot compress. */
int image_write_compressed(image_t *img, uint64_t off, const void *buf, size_t n);

/* qemu's bdrv_co_pdiscard: a hint. A driver without discard succeeds doing nothing (qemu). */
int image_discard(image_t *img, uint64_t off, uint64_t n);

/* Driver state, then every file of this layer to disk (fdatasync). */
int image_flush(image_t *img);

/* The image was just created and is being filled (convert's and dd's target): its files
 * take qio_hint_filling. */
void image_hint_filling(image_t *img);

/* Preallocation modes of image_truncate (qemu's PreallocMode). */
enum img_prealloc { IMG_PREALLOC_OFF, IMG_PREALLOC_METADATA, IMG_PREALLOC_FALLOC,
                    IMG_PREALLOC_FULL };

/* qemu's bdrv_co_truncate(exact=false): resizes the virtual disk to size. On failure returns
 * -errno and sets *errmsg (malloc'd) to qemu's message, e.g. "Image format driver does not
 * support resize". */
int image_truncate(image_t *img, uint64_t size, enum img_prealloc prealloc, char **errmsg);

/* ---- Block status ------------------------------------------------------------------------
 * Flags, with qemu's values (BDRV_BLOCK_*), so strict compare can compare status words. */
enum {
    BS_DATA = 0x01,         /* reads return data from the returned file/offset (or decompress) */
    BS_ZERO = 0x02,         /* reads return zeros */
    BS_OFFSET_VALID = 0x04, /* st.map / st.file locate the bytes */
    BS_RAW = 0x08,          /* driver-internal: "ask st.file at st.map" (raw format); never
                               returned by image_block_status() */
    BS_ALLOCATED = 0x10,    /* the content is decided by this layer (not the backing) */
    BS_EOF = 0x20,          /* the range reaches the end of the layer that answered */
    BS_RECURSE = 0x40,      /* driver hint: ask the file whether the host range is a hole;
                               consumed by image_block_status(), never returned (qemu-img's
                               status words never show it: see strict compare tests) */
};

typedef struct block_status {
    unsigned flags;         /* BS_* */
    uint64_t pnum;          /* length of the run with this status, > 0 unless off >= size */
    uint64_t map;           /* host offset in *file of byte off; valid iff BS_OFFSET_VALID */
    qio_t *file;            /* file the data lives in (image file, data file, or a backing
                               layer's); valid iff BS_OFFSET_VALID */
    const char *filename;   /* qemu's filename of that node (map's "filename"), or NULL */
    image_t *layer;         /* the layer that answered */
    int depth;              /* image_block_status_above: layers descended (0 = img itself) */
} block_status_t;

/* qemu's bdrv_block_status() with want_zero on ONE layer (the generic layer's rules applied
 * on top of the driver's answer):
 *   - off >= size: flags = BS_EOF, pnum = 0.
 *   - bytes is clamped to size - off; pnum <= bytes.
 *   - DATA or ZERO from the driver adds ALLOCATED.
 *   - an unallocated run in a format with backing support: no open backing image (none, or
 *     NO_BACKING) adds ZERO; a backing image of length <= off adds ZERO (not ALLOCATED).
 *   - raw: the file's SEEK_DATA/SEEK_HOLE answer: data = DATA|OFFSET_VALID|ALLOCATED,
 *     hole = ZERO|OFFSET_VALID|ALLOCATED, map = off, file = the raw file.
 *   - qcow2 (qemu's qcow2_co_block_status): NORMAL = DATA|OFFSET_VALID, ZERO_ALLOC =
 *     ZERO|OFFSET_VALID, ZERO_PLAIN = ZERO, UNALLOCATED_ALLOC (extended L2) = OFFSET_VALID,
 *     UNALLOCATED = 0, COMPRESSED = DATA; runs never cross an L2 table, a type change or a
 *     host discontinuity. With metadata preallocation detected, DATA|OFFSET_VALID runs get
 *     RECURSE and the file is asked: a hole (or past the file's end) adds ZERO, and pnum is
 *     cut to the file's run.
 *   - EOF is added when off + pnum == size.
 * Returns 0 or -errno (-EIO after a corruption event). */
int image_block_status(image_t *img, uint64_t off, uint64_t bytes, block_status_t *st);

/* qemu's bdrv_co_block_status() on a file (protocol) node, file-posix's SEEK_DATA/SEEK_HOLE
 * answer: flags DATA or ZERO, with OFFSET_VALID|ALLOCATED, and EOF when the run reaches the
 * file's length rounded up to 512 bytes (flags = EOF, pnum = 0 at or past it); bytes are
 * clamped to that length. Between the real end and the rounded one is a hole. Granularity
 * is the file system's (bytes; qemu's request alignment is 1 for buffered files). */
int image_file_status(qio_t *file, uint64_t off, uint64_t bytes, unsigned *flags,
                      uint64_t *pnum);

/* qemu's bdrv_block_status_above(img, base, ...) with want_zero: walks from img down the
 * chain, stopping above base (NULL: walk to the bottom). The first layer whose answer has
 * ALLOCATED gives the result (EOF dropped, then re-added only if the run reaches the end of
 * img's own first answer); each deeper layer narrows pnum. A backing layer shorter than off
 * answers ZERO|ALLOCATED for the rest of the run. If no layer allocates, the result is the
 * last layer's answer (which has ZERO when the bottom has no backing). st->depth counts the
 * layers queried minus one; st->layer is the answering layer. */
int image_block_status_above(image_t *img, image_t *base, uint64_t off, uint64_t bytes,
                             block_status_t *st);

/* Number of layers in the chain from img down (1 = no backing). */
int image_chain_length(const image_t *img);

#endif
