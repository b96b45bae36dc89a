/* qcow2 compressed clusters: zlib raw deflate and zstd, both directions, with the settings
 * and acceptance rules of qemu 7.2 (block/qcow2-threads.c, qcow2_co_pwritev_compressed_task). */
#include "format/qcow2_codec.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "format/qcow2_header.h"

/* qemu's window: 2^12 bytes, negative = raw deflate (no zlib header or checksum). */
#define QCOW2_ZLIB_WINDOW (-12)

/* qemu's qcow2_zlib_decompress: one inflate(Z_FINISH) must fill the cluster. Z_BUF_ERROR is
 * accepted once the output is full, because the descriptor gives the compressed length only
 * to the sector, so input may be left over. The deep check then asks for one byte more: a
 * stream that still yields data is longer than one cluster (LONG). */
static int zlib_decompress(uint8_t *dst, size_t cs, const uint8_t *src, size_t src_len)
{
    if (cs > UINT_MAX || src_len > UINT_MAX)
        return -EINVAL;   /* qcow2 bounds both by 2 MiB clusters; zlib counts in uInt */
    z_stream z;
    memset(&z, 0, sizeof(z));
    int zr = inflateInit2(&z, QCOW2_ZLIB_WINDOW);
    if (zr != Z_OK)
        return zr == Z_MEM_ERROR ? -ENOMEM : QCOW2_INFLATE_BAD;
    z.next_in = (Bytef *)src;
    z.avail_in = (uInt)src_len;
    z.next_out = dst;
    z.avail_out = (uInt)cs;
    zr = inflate(&z, Z_FINISH);
    int r;
    if (zr == Z_MEM_ERROR)
        r = -ENOMEM;
    else if ((zr != Z_STREAM_END && zr != Z_BUF_ERROR) || z.avail_out != 0)
        r = QCOW2_INFLATE_BAD;
    else if (zr == Z_STREAM_END)
        r = QCOW2_INFLATE_EXACT;
    else {
        uint8_t extra;
        z.next_out = &extra;
        z.avail_out = 1;
        (void)inflate(&z, Z_FINISH);
        r = z.avail_out == 0 ? QCOW2_INFLATE_LONG : QCOW2_INFLATE_EXACT;
    }
    inflateEnd(&z);
    return r;
}

/* qemu's qcow2_zstd_decompress: stream until the cluster is full, across as many frames as
 * it takes; a call that makes no progress (truncated input, nothing left) fails, and so does
 * a frame still unfinished when the cluster is full (it would produce more than one). */
static int zstd_decompress(uint8_t *dst, size_t cs, const uint8_t *src, size_t src_len)
{
    ZSTD_DCtx *d = ZSTD_createDCtx();
    if (!d)
        return -ENOMEM;
    ZSTD_outBuffer out = { dst, cs, 0 };
    ZSTD_inBuffer in = { src, src_len, 0 };
    size_t zr = 0;
    int r = QCOW2_INFLATE_EXACT;
    while (out.pos < out.size) {
        size_t in_pos = in.pos, out_pos = out.pos;
        zr = ZSTD_decompressStream(d, &out, &in);
        if (ZSTD_isError(zr) || (in.pos <= in_pos && out.pos <= out_pos)) {
            r = QCOW2_INFLATE_BAD;
            break;
        }
    }
    if (zr > 0)
        r = QCOW2_INFLATE_BAD;
    ZSTD_freeDCtx(d);
    return r;
}

int qcow2_decompress(unsigned type, uint8_t *dst, size_t cs, const uint8_t *src,
                     size_t src_len)
{
    if (cs == 0)
        return -EINVAL;
    switch (type) {
    case QCOW2_COMPRESSION_ZLIB: return zlib_decompress(dst, cs, src, src_len);
    case QCOW2_COMPRESSION_ZSTD: return zstd_decompress(dst, cs, src, src_len);
    default: return -EINVAL;
    }
}

/* qemu's qcow2_zlib_compress: level Z_DEFAULT_COMPRESSION, window 2^12 raw, memLevel 9,
 * default strategy, one deflate(Z_FINISH). Z_OK means the output space ran out. */
static ssize_t zlib_compress(uint8_t *dst, size_t cap, const uint8_t *src, size_t cs)
{
    if (cs > UINT_MAX)
        return -EINVAL;
    z_stream z;
    memset(&z, 0, sizeof(z));
    int zr = deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, QCOW2_ZLIB_WINDOW, 9,
                          Z_DEFAULT_STRATEGY);
    if (zr != Z_OK)
        return zr == Z_MEM_ERROR ? -ENOMEM : -EIO;
    z.next_in = (Bytef *)src;
    z.avail_in = (uInt)cs;
    z.next_out = dst;
    z.avail_out = (uInt)cap;
    zr = deflate(&z, Z_FINISH);
    ssize_t r = zr == Z_STREAM_END ? (ssize_t)(cap - z.avail_out) : zr == Z_OK ? -ENOSPC : -EIO;
    deflateEnd(&z);
    return r;
}

/* qemu's qcow2_zstd_compress: a fresh context with libzstd's defaults (level 3, no checksum),
 * one ZSTD_compressStream2(ZSTD_e_end) call, so one frame that records the content size.
 * A non-zero return larger than the space left (output too small, and every zstd error
 * code) is "does not fit", as in qemu: the cluster is then written plainly. */
static ssize_t zstd_compress(uint8_t *dst, size_t cap, const uint8_t *src, size_t cs)
{
    ZSTD_CCtx *c = ZSTD_createCCtx();
    if (!c)
        return -ENOMEM;
    ZSTD_outBuffer out = { dst, cap, 0 };
    ZSTD_inBuffer in = { src, cs, 0 };
    size_t zr = ZSTD_compressStream2(c, &out, &in, ZSTD_e_end);
    ZSTD_freeCCtx(c);
    if (zr != 0)
        return zr > out.size - out.pos ? -ENOSPC : -EIO;
    return (ssize_t)out.pos;
}

ssize_t qcow2_compress(unsigned type, uint8_t *dst, const uint8_t *src, size_t cs)
{
    if (cs < 2)
        return -EINVAL;
    /* qemu passes cluster_size - 1: a compressed cluster must save at least a byte */
    size_t cap = cs - 1;
    switch (type) {
    case QCOW2_COMPRESSION_ZLIB: return zlib_compress(dst, cap, src, cs);
    case QCOW2_COMPRESSION_ZSTD: return zstd_compress(dst, cap, src, cs);
    default: return -EINVAL;
    }
}

/* ---- a reusable compressor (one per thread) ---- */

struct qcow2_compressor {
    z_stream z;
    bool z_ready;
    ZSTD_CCtx *zc;
};

struct qcow2_compressor *qcow2_compressor_new(void)
{
    return calloc(1, sizeof(struct qcow2_compressor));
}

void qcow2_compressor_free(struct qcow2_compressor *c)
{
    if (!c)
        return;
    if (c->z_ready)
        deflateEnd(&c->z);
    ZSTD_freeCCtx(c->zc);
    free(c);
}

/* deflateReset and ZSTD_CCtx_reset(session) leave the state a fresh init would have, so the
 * bytes are qcow2_compress's; only the allocations are saved. */
ssize_t qcow2_compress_with(struct qcow2_compressor *c, unsigned type, uint8_t *dst,
                            const uint8_t *src, size_t cs)
{
    if (!c)
        return qcow2_compress(type, dst, src, cs);
    if (cs < 2 || cs > UINT_MAX)
        return -EINVAL;
    size_t cap = cs - 1;
    if (type == QCOW2_COMPRESSION_ZLIB) {
        int zr;
        if (!c->z_ready) {
            memset(&c->z, 0, sizeof(c->z));
            zr = deflateInit2(&c->z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, QCOW2_ZLIB_WINDOW, 9,
                              Z_DEFAULT_STRATEGY);
            if (zr != Z_OK)
                return zr == Z_MEM_ERROR ? -ENOMEM : -EIO;
            c->z_ready = true;
        } else if (deflateReset(&c->z) != Z_OK) {
            return -EIO;
        }
        c->z.next_in = (Bytef *)src;
        c->z.avail_in = (uInt)cs;
        c->z.next_out = dst;
        c->z.avail_out = (uInt)cap;
        zr = deflate(&c->z, Z_FINISH);
        return zr == Z_STREAM_END ? (ssize_t)(cap - c->z.avail_out) : zr == Z_OK ? -ENOSPC : -EIO;
    }
    if (type == QCOW2_COMPRESSION_ZSTD) {
        if (!c->zc && !(c->zc = ZSTD_createCCtx()))
            return -ENOMEM;
        ZSTD_CCtx_reset(c->zc, ZSTD_reset_session_only);
        ZSTD_outBuffer out = { dst, cap, 0 };
        ZSTD_inBuffer in = { src, cs, 0 };
        size_t zr = ZSTD_compressStream2(c->zc, &out, &in, ZSTD_e_end);
        if (zr != 0) {
            /* an error leaves the context mid-frame: start the next one afresh */
            ZSTD_CCtx_reset(c->zc, ZSTD_reset_session_only);
            return zr > out.size - out.pos ? -ENOSPC : -EIO;
        }
        return (ssize_t)out.pos;
    }
    return -EINVAL;
}
