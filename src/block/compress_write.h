/* Compressed writes split in two, so a caller can compress clusters on its own threads
 * (convert -c on every core) and still write them in order: compress with
 * qcow2_compress(type, ...) (format/qcow2_codec.h), then hand the result here. The bytes on
 * disk are the same as image_write_compressed()'s. */
#ifndef QIMG_BLOCK_COMPRESS_WRITE_H
#define QIMG_BLOCK_COMPRESS_WRITE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "block/image.h"

/* The target's compression type (QCOW2_COMPRESSION_*) and cluster size; -ENOTSUP when its
 * compressed writes cannot be prepared elsewhere (not qcow2, external data file). */
int image_compress_params(image_t *img, unsigned *type, size_t *cluster);

/* Writes one cluster at off (cluster-aligned; n the cluster size, or less for the image's
 * last cluster) whose bytes buf were compressed into cbuf/clen by qcow2_compress (clen
 * -ENOSPC: did not shrink, buf is written plainly, as qemu does). 0 or -errno. */
int image_write_precompressed(image_t *img, uint64_t off, const void *buf, size_t n,
                              const void *cbuf, ssize_t clen);

#endif
