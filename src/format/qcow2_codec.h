/* The one codec for qcow2 compressed clusters, both directions, as qemu 7.2's
 * block/qcow2-threads.c: zlib raw deflate (window 2^12, no header) and zstd.
 *
 * Pure (no I/O) like the other decoders here: the guest read path, the deep check and the
 * compressed-cluster writer all call it, so qemu's acceptance rule and the deep check's
 * stricter one are two readings of one decode (see enum qcow2_inflate). The qcow v1 format
 * uses the same zlib stream (window 2^12, raw): it may call this with QCOW2_COMPRESSION_ZLIB. */
#ifndef QIMG_FORMAT_QCOW2_CODEC_H
#define QIMG_FORMAT_QCOW2_CODEC_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Result of decoding one compressed cluster (cs bytes out). */
enum qcow2_inflate {
    QCOW2_INFLATE_EXACT = 0,  /* fills the cluster; the stream ends there (or at most
                               * padding follows): both rules accept */
    QCOW2_INFLATE_LONG = 1,   /* fills the cluster but the zlib stream would yield more:
                               * qemu reads the first cluster's worth and accepts it,
                               * the deep check reports it. (Never for zstd: qemu already
                               * refuses a frame that goes on past the cluster, and what
                               * follows a finished frame is the next cluster's data.) */
    QCOW2_INFLATE_BAD = -EIO, /* qemu's qcow2_zlib/zstd_decompress fail (-EIO): a read error,
                               * and corruption for the deep check */
};

/* Decode src (the compressed descriptor's csize bytes: the stream, then whatever follows it
 * up to the sector end) into exactly cs bytes at dst. type: QCOW2_COMPRESSION_ZLIB or _ZSTD.
 * Returns an enum qcow2_inflate value, or -ENOMEM / -EINVAL (unknown type, cs 0). dst is
 * undefined unless the result is EXACT or LONG. */
int qcow2_decompress(unsigned type, uint8_t *dst, size_t cs, const uint8_t *src,
                     size_t src_len);

/* qemu's rule (qcow2_co_decompress succeeds): what guest reads accept. */
static inline bool qcow2_inflate_qemu_ok(int r)
{
    return r == QCOW2_INFLATE_EXACT || r == QCOW2_INFLATE_LONG;
}

/* The deep check's rule: qemu's, and the stream must not go on past one cluster. */
static inline bool qcow2_inflate_strict_ok(int r)
{
    return r == QCOW2_INFLATE_EXACT;
}

/* Compress one whole cluster (cs bytes; a short last cluster zero-padded by the caller, as
 * qemu pads it) the way qemu's qcow2_co_pwritev_compressed_task does: the output is limited
 * to cs - 1 bytes, so dst must hold cs - 1 bytes. Returns the compressed length
 * (1 .. cs - 1; zlib: .. cs - 2, since deflate says Z_OK, "more to come", when its stream
 * exactly fills the space, and qemu takes that as "does not fit"); -ENOSPC when it does not
 * fit (the writer then writes the cluster plainly, as qemu does); -EIO, -ENOMEM, -EINVAL
 * (unknown type, cs < 2). Byte-identical to qemu-img convert -c with the same zlib and
 * libzstd. */
ssize_t qcow2_compress(unsigned type, uint8_t *dst, const uint8_t *src, size_t cs);

/* The same bytes from a context reused across clusters (one per thread; NULL: fresh
 * contexts as qcow2_compress), saving the codecs' allocation per cluster. */
struct qcow2_compressor;
struct qcow2_compressor *qcow2_compressor_new(void);
void qcow2_compressor_free(struct qcow2_compressor *c);
ssize_t qcow2_compress_with(struct qcow2_compressor *c, unsigned type, uint8_t *dst,
                            const uint8_t *src, size_t cs);

#endif
