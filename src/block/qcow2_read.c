/* qcow2 guest reads: one lookup per run of same-type, host-contiguous clusters (so big
 * sequential reads become one pread per run), backing file for unallocated runs, and
 * compressed clusters decompressed one at a time (format/qcow2_codec.c, qemu's rule). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/qcow2_int.h"
#include "crypto/sector.h"
#include "format/qcow2_codec.h"
#include "format/qcow2_l2.h"
#include "io/blkdebug.h"
#include "util/xalloc.h"

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
    r = qcow2_decompress(s->h.compression_type, s->dbuf, s->h.cluster_size, s->cbuf, c.csize);
    if (!qcow2_inflate_qemu_ok(r))
        return r == -ENOMEM ? r : -EIO;
    s->dbuf_entry = entry;
    return 0;
}

/* Guest bytes [off, off+k) at host, decrypted (qcow2_co_preadv_encrypted): the enclosing
 * 512-byte sectors are read and decrypted whole, their IVs numbered by host offset (LUKS)
 * or guest offset (AES). Clusters are sector-aligned, so both offsets share the in-sector
 * position. */
static int read_encrypted(image_t *img, uint64_t off, uint64_t host, uint8_t *p, size_t k)
{
    struct qcow2_state *s = img->priv;
    size_t skip = (size_t)(off % QCRYPT_SECTOR);
    size_t len = (skip + k + QCRYPT_SECTOR - 1) / QCRYPT_SECTOR * QCRYPT_SECTOR;
    uint8_t *b = xmalloc(len);
    int r = qio_pread(img->data_file, b, len, host - skip);
    if (r == 0) {
        uint64_t iv = (s->crypt_physical ? host - skip : off - skip) / QCRYPT_SECTOR;
        qcrypt_decrypt(s->crypt, iv, b, len);
        memcpy(p, b + skip, k);
    }
    free(b);
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
        qio_event(img->file, BLKDBG_READ_AIO); /* on the file, even with a data file */
        if (!img->data_file)
            r = -ENOMEDIUM;
        else if (s->crypt)
            r = read_encrypted(img, off, run.host, p, k);
        else
            r = qio_pread(img->data_file, p, k, run.host);
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
    if (s->h.crypt_method != 0 && !s->crypt)
        return -ENOTSUP; /* encrypted data needs a key */
    return read_in_steps(img, off, buf, n, qcow2_read_step);
}
