/* qcow2 guest reads: one lookup per run of same-type, host-contiguous clusters (so big
 * sequential reads become one pread per run), backing file for unallocated runs, and
 * compressed clusters (zlib raw deflate, window 12, or zstd) decompressed one at a time. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "block/qcow2_int.h"
#include "format/qcow2_l2.h"
#include "util/xalloc.h"

int inflate_cluster(uint8_t *dst, size_t dlen, const uint8_t *src, size_t slen)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (inflateInit2(&z, -12) != Z_OK)
        return -EIO;
    z.next_in = (Bytef *)src;
    z.avail_in = (uInt)slen;
    z.next_out = dst;
    z.avail_out = (uInt)dlen;
    int ret = inflate(&z, Z_FINISH);
    int r = ((ret == Z_STREAM_END || ret == Z_BUF_ERROR) && z.avail_out == 0) ? 0 : -EIO;
    inflateEnd(&z);
    return r;
}

/* qemu's qcow2_zstd_decompress: stream until the cluster is full; stalls and a frame that
 * would produce more than one cluster are errors. */
static int unzstd_cluster(uint8_t *dst, size_t dlen, const uint8_t *src, size_t slen)
{
    ZSTD_DCtx *d = ZSTD_createDCtx();
    if (!d)
        return -ENOMEM;
    ZSTD_outBuffer out = { dst, dlen, 0 };
    ZSTD_inBuffer in = { src, slen, 0 };
    size_t zr = 0;
    int r = 0;
    while (out.pos < out.size) {
        size_t in_pos = in.pos, out_pos = out.pos;
        zr = ZSTD_decompressStream(d, &out, &in);
        if (ZSTD_isError(zr) || (in_pos >= in.pos && out_pos >= out.pos)) {
            r = -EIO;
            break;
        }
    }
    if (r == 0 && zr > 0)
        r = -EIO;
    ZSTD_freeDCtx(d);
    return r;
}

static int load_compressed(image_t *img, uint64_t entry)
{
    struct qcow2_state *s = img->priv;
    if (s->dbuf && s->dbuf_entry == entry)
        return 0;
    struct qcow2_compressed c;
    qcow2_compressed_decode(s->h.cluster_bits, entry, &c);
    /* csize <= 2^(cluster_bits-8) sectors = 2 clusters: bounded by the geometry */
    if (c.csize > 2 * s->h.cluster_size || c.csize == 0)
        return -EIO;
    if (!s->cbuf) {
        s->cbuf_len = 2 * s->h.cluster_size;
        s->cbuf = xmalloc(s->cbuf_len);
        s->dbuf = xmalloc(s->h.cluster_size);
    }
    s->dbuf_entry = 0;
    int r = qio_pread(img->file, s->cbuf, c.csize, c.host_offset);
    if (r < 0)
        return r;
    if (s->h.compression_type == QCOW2_COMPRESSION_ZSTD)
        r = unzstd_cluster(s->dbuf, s->h.cluster_size, s->cbuf, c.csize);
    else
        r = inflate_cluster(s->dbuf, s->h.cluster_size, s->cbuf, c.csize);
    if (r == 0)
        s->dbuf_entry = entry;
    return r;
}

/* One run of same-type clusters: backing, zeros, data (file or data file) or one
 * compressed cluster. */
static int64_t qcow2_read_step(image_t *img, uint64_t off, uint8_t *p, size_t n)
{
    struct qcow2_state *s = img->priv;
    struct qcow2_run run;
    int r = qcow2_get_run(img, off, n, &run);
    if (r < 0)
        return r;
    size_t k = run.bytes < n ? (size_t)run.bytes : n;
    switch (run.type) {
    case QCOW2_SUBCLUSTER_UNALLOCATED_PLAIN:
    case QCOW2_SUBCLUSTER_UNALLOCATED_ALLOC:
        r = read_from_backing(img, off, p, k);
        break;
    case QCOW2_SUBCLUSTER_ZERO_PLAIN:
    case QCOW2_SUBCLUSTER_ZERO_ALLOC:
        memset(p, 0, k);
        break;
    case QCOW2_SUBCLUSTER_NORMAL:
        r = img->data_file ? qio_pread(img->data_file, p, k, run.host) : -ENOMEDIUM;
        break;
    case QCOW2_SUBCLUSTER_COMPRESSED:
        r = load_compressed(img, run.host);
        if (r == 0)
            memcpy(p, s->dbuf + (off & (s->h.cluster_size - 1)), k);
        break;
    default:
        r = -EIO;
        break;
    }
    return r < 0 ? r : (int64_t)k;
}

int qcow2_read(image_t *img, uint64_t off, void *buf, size_t n)
{
    struct qcow2_state *s = img->priv;
    if (s->h.crypt_method != 0)
        return -ENOTSUP; /* encrypted data needs a key; qimg has none */
    return read_in_steps(img, off, buf, n, qcow2_read_step);
}
