/* Salvage reader: the guest view of a damaged qcow2 image that qemu refuses to open.
 *
 * The image is opened in the model's SALVAGE mode (qcow2/image.h: CHECK's tolerance, no
 * refcount structures at all), read-only, and never written. At open one pass over the
 * active L1 and its L2 tables finds every guest range whose bytes cannot be had and why
 * (L1 entries past EOF or beyond a too small L1, L2 tables unaligned, past EOF or over the
 * header or the L1 table, data clusters unaligned, past EOF or over live metadata, invalid
 * subcluster bitmaps, compressed clusters with a data file or over metadata); reads then
 * give every other byte as qemu's reader would and zeros for the lost ones, and add what
 * only a read finds (a compressed cluster that does not decompress, an I/O error of the
 * file). Damaged refcount structures, snapshot tables and bitmaps cost no data: salvage does
 * not read them. A host cluster mapped by two guest clusters (or an L2 table by two L1
 * entries) is copied but reported as suspect: one of them holds the other's bytes.
 *
 * The result is an image_t (driver "qcow2", read-only) that any reader uses like another:
 * image_read, image_block_status (lost ranges read as zeros, BS_ZERO), a backing chain
 * below it (a backing file that does not open loses the unallocated ranges instead). */
#ifndef QIMG_BLOCK_SALVAGE_H
#define QIMG_BLOCK_SALVAGE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "block/image.h"

/* Why a guest range was lost (or, for SV_SUSPECT_*, copied but suspect). */
enum salvage_reason {
    SV_L1_PAST_EOF,          /* the L1 table entry lies past the end of the file */
    SV_L1_TOO_SMALL,         /* l1_size does not cover the virtual size */
    SV_L2_UNALIGNED,         /* L2 table offset not cluster aligned */
    SV_L2_PAST_EOF,          /* the L2 table (or this part of it) lies past EOF */
    SV_L2_OVERLAP,           /* the L2 table lies on the header or the active L1 table */
    SV_DATA_UNALIGNED,       /* data cluster offset not cluster aligned */
    SV_DATA_PAST_EOF,        /* data cluster (or this part of it) past the end of its file */
    SV_DATA_OVERLAP,         /* data cluster lies on live metadata (header, L1, L2) */
    SV_SUBCLUSTER_INVALID,   /* extended L2 bitmap with both allocated and zero bits */
    SV_COMPRESSED_DATA_FILE, /* compressed cluster in an image with an external data file */
    SV_COMPRESSED_OVERLAP,   /* compressed data lies on live metadata */
    SV_COMPRESSED_BAD,       /* compressed cluster does not decompress */
    SV_READ_ERROR,           /* the file read failed */
    SV_NO_BACKING,           /* unallocated, and the backing file did not open */
    SV_SUSPECT_SHARED_DATA,  /* (suspect) host cluster mapped by more than one guest cluster */
    SV_SUSPECT_SHARED_L2,    /* (suspect) L2 table used by more than one L1 entry */
    SV__COUNT
};

struct salvage_range {
    uint64_t off, len;       /* guest bytes */
    enum salvage_reason reason;
    uint64_t host;           /* host offset the reason is about (first of a merged run) */
    int err;                 /* SV_READ_ERROR: the errno */
};

/* Opens filename (a qcow2 image: other formats are refused) for salvage, with flags
 * IMG_OPEN_SHARE or 0. 0, or -errno with *errmsg (malloc'd, "Could not open 'F': ...").
 * The backing chain is opened as image_open does; its failure is not an error here. */
int salvage_open(const char *filename, int flags, image_t **out, char **errmsg);

/* True for an image from salvage_open. */
bool image_is_salvage(const image_t *img);

/* The lost (suspect = false) or suspect ranges found so far, sorted by guest offset,
 * adjacent ranges of one reason merged; valid until the next read or the close. Complete
 * once every range holding data was read (block status DATA); the pass at open already
 * found everything but compressed clusters that fail to decompress and read errors. */
size_t salvage_ranges(image_t *img, bool suspect, const struct salvage_range **v);

/* The reason in words, with the host offset where it has one ("data cluster at host
 * offset 0x50000 lies past the end of the image file"). */
void salvage_reason_text(const image_t *img, const struct salvage_range *r, char *buf,
                         size_t len);

/* Why the backing file did not open (qemu's message), or NULL. */
const char *salvage_backing_error(const image_t *img);

/* Prints one line per lost range, then one per suspect range, to f (OFF: the guest offset
 * in this image, LEN bytes, both also in hex):
 *   "<prog>: FILE: salvage: lost 0xOFF+0xLEN (LEN bytes): REASON" /
 *   "<prog>: FILE: salvage: suspect 0xOFF+0xLEN (LEN bytes): REASON"
 * and returns the exit code convert --salvage gives for it: 0 nothing lost or suspect,
 * 2 something lost (zeros written there), 3 nothing lost but suspect ranges copied. */
int salvage_report(image_t *img, FILE *f);

#endif
