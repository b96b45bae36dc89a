/* qcow version 1 driver ("qcow", read-only): qemu 7.2's qcow_open checks via the pure
 * decoder, then guest reads and block status one cluster at a time, as qemu's
 * get_cluster_offset() / qcow_co_block_status() / qcow_co_preadv() do. qemu validates no
 * table or cluster offset here, so neither do we beyond its own rules: reads that end past
 * qemu's maximum length fail with EIO, an uncompressed cluster offset that is not
 * 512-aligned fails a read with EIO, a compressed cluster must inflate to exactly one
 * cluster. Encrypted (AES) images open for I/O with a key-secret (aes-128-cbc, guest
 * sector IVs, as qemu's qcow), else only for info, as qemu-img's. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/driver.h"
#include "block/luks.h"
#include "crypto/sector.h"
#include "format/be.h"
#include "format/qcow1_header.h"
#include "format/qcow2_codec.h"
#include "format/qcow2_header.h" /* QCOW2_NO_KEY_MSG: the same crypto layer message */
#include "util/xalloc.h"

struct qcow1_state {
    struct qcow1_header h;
    uint64_t *l1;            /* the entries the file holds; later ones read as 0 */
    uint64_t l1_stored;
    uint8_t *l2;             /* one L2 table, cached by offset */
    uint64_t l2_offset;
    bool l2_valid;
    uint8_t *cdata, *cluster; /* compressed bytes, and the inflated cluster cached */
    uint64_t cluster_coffset;
    bool cluster_valid;
    struct qcrypt *crypt;    /* AES, once a key-secret unlocked the image */
};

static int qcow1_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)filename;
    return len >= QCOW1_HEADER_LEN && be32_get(buf) == QCOW1_MAGIC &&
           be32_get(buf + 4) == QCOW1_VERSION ? 100 : 0;
}

/* qemu's bdrv_open_driver() message for a failed read without its own text */
static int io_fail(image_t *img, char **errmsg, int r)
{
    *errmsg = xasprintf("Could not open '%s': %s", img->filename, strerror(-r));
    return r;
}

static bool read_ok(uint64_t off, uint64_t n)
{
    return off <= QIO_MAX_LENGTH && n <= QIO_MAX_LENGTH - off;
}

static int load_l1(image_t *img, struct qcow1_state *s, uint64_t file_size, char **errmsg)
{
    uint64_t off = s->h.l1_table_offset, bytes = s->h.l1_size * 8;
    if (bytes > QCOW1_MAX_READ || !read_ok(off, bytes))
        return io_fail(img, errmsg, -EIO);
    /* past the end of the file the table reads as zeros: keep only what the file holds,
     * so memory is bounded by the file, not by the header's size */
    uint64_t have = 0;
    if (file_size > off)
        have = (file_size - off + 7) / 8;
    if (have > s->h.l1_size)
        have = s->h.l1_size;
    s->l1_stored = have;
    s->l1 = xmalloc(have ? have * 8 : 1);
    if (!have)
        return 0;
    uint8_t *raw = xmalloc(have * 8);
    int r = qio_pread(img->file, raw, have * 8, off);
    if (r == 0)
        for (uint64_t i = 0; i < have; i++)
            s->l1[i] = be64_get(raw + i * 8);
    free(raw);
    return r < 0 ? io_fail(img, errmsg, r) : 0;
}

static int load_backing_name(image_t *img, struct qcow1_state *s, char **errmsg)
{
    if (!s->h.backing_file_offset)
        return 0;
    uint32_t len = s->h.backing_file_size;
    if (len > QCOW1_MAX_BACKING_NAME) {
        *errmsg = xstrdup("Backing file name too long");
        return -EINVAL;
    }
    if (!read_ok(s->h.backing_file_offset, len))
        return io_fail(img, errmsg, -EIO);
    char *name = xcalloc(1, (size_t)len + 1);
    int r = qio_pread(img->file, name, len, s->h.backing_file_offset);
    if (r < 0) {
        free(name);
        return io_fail(img, errmsg, r);
    }
    if (name[0]) { /* a C string: up to the first NUL; empty means no backing file */
        img->backing_file = name;
        img->backing_full = image_backing_path(img, name);
    } else {
        free(name);
    }
    return 0;
}

static int qcow1_open(image_t *img, char **errmsg)
{
    struct qcow1_state *s = xcalloc(1, sizeof(*s));
    img->priv = s;
    uint64_t file_size;
    int r = qio_size(img->file, &file_size);
    if (r < 0)
        return io_fail(img, errmsg, r);
    uint8_t buf[QCOW1_HEADER_LEN];
    r = qio_pread(img->file, buf, sizeof(buf), 0); /* zero-filled past EOF, as qemu's read */
    if (r < 0)
        return io_fail(img, errmsg, r);
    struct fmt_error e;
    fmt_error_clear(&e);
    r = qcow1_header_decode(buf, sizeof(buf), &s->h, &e);
    if (r < 0) {
        char tmp[FMT_ERROR_MSG_MAX];
        const char *m = fmt_error_user_msg(&e, tmp, sizeof(tmp));
        bool hint = r == -ENOTSUP && (s->h.version == 2 || s->h.version == 3);
        *errmsg = hint ? xasprintf("%s\nTry the 'qcow2' driver instead.", m) : xstrdup(m);
        return r;
    }
    if ((r = crypt_format_check(img->encrypt_format,
                                s->h.crypt_method == QCOW1_CRYPT_AES ? "aes" : NULL, errmsg)) < 0)
        return r;
    if (s->h.crypt_method == QCOW1_CRYPT_AES) {
        img->encrypted = true;
        if (!(img->flags & IMG_OPEN_NO_IO) &&
            (r = qcow_aes_open_key(img->key_secret, QCOW2_NO_KEY_MSG, &s->crypt, errmsg)) < 0)
            return r;
    }
    if ((r = load_l1(img, s, file_size, errmsg)) < 0 ||
        (r = load_backing_name(img, s, errmsg)) < 0)
        return r;
    s->l2 = xmalloc((size_t)s->h.l2_size * 8);
    s->cdata = xmalloc(s->h.cluster_size);
    s->cluster = xmalloc(s->h.cluster_size);
    img->size = s->h.size & ~(uint64_t)511; /* qemu: total_sectors = size / 512 */
    img->cluster_size = s->h.cluster_size;
    return 0;
}

static void qcow1_close(image_t *img)
{
    struct qcow1_state *s = img->priv;
    if (!s)
        return;
    free(s->l1);
    free(s->l2);
    free(s->cdata);
    free(s->cluster);
    qcrypt_free(s->crypt);
    free(s);
    img->priv = NULL;
}

/* qemu's get_cluster_offset() without allocation: the L2 entry of guest offset off. */
static int lookup(image_t *img, uint64_t off, struct qcow1_entry *out)
{
    struct qcow1_state *s = img->priv;
    uint64_t l1i = qcow1_l1_index(&s->h, off);
    uint64_t l2_off = l1i < s->l1_stored ? s->l1[l1i] : 0;
    uint64_t entry = 0;
    if (l2_off) {
        if (!s->l2_valid || s->l2_offset != l2_off) {
            s->l2_valid = false;
            int r = qio_pread(img->file, s->l2, (size_t)s->h.l2_size * 8, l2_off);
            if (r < 0)
                return r;
            s->l2_offset = l2_off;
            s->l2_valid = true;
        }
        entry = be64_get(s->l2 + (size_t)qcow1_l2_index(&s->h, off) * 8);
    }
    *out = qcow1_entry(&s->h, entry);
    return 0;
}

/* qemu's decompress_cluster(): the inflated cluster, cached by its compressed offset. */
static int decompress(image_t *img, const struct qcow1_entry *e)
{
    struct qcow1_state *s = img->priv;
    if (s->cluster_valid && s->cluster_coffset == e->coffset)
        return 0;
    s->cluster_valid = false;
    /* qemu's decompress_buffer has qcow2's zlib rule: the cluster filled, Z_STREAM_END or
     * Z_BUF_ERROR */
    if (qio_pread(img->file, s->cdata, e->csize, e->coffset) < 0 ||
        !qcow2_inflate_qemu_ok(qcow2_decompress(QCOW2_COMPRESSION_ZLIB, s->cluster,
                                                s->h.cluster_size, s->cdata, e->csize)))
        return -EIO;
    s->cluster_coffset = e->coffset;
    s->cluster_valid = true;
    return 0;
}

/* qcow_co_preadv with encryption: the enclosing sectors read and decrypted, IVs from the
 * guest sector numbers (clusters are sector-aligned, so host and guest share the
 * in-sector position). */
static int read_encrypted(image_t *img, uint64_t off, uint64_t host, uint8_t *p, size_t n)
{
    struct qcow1_state *s = img->priv;
    size_t skip = (size_t)(off % QCRYPT_SECTOR);
    size_t len = (skip + n + QCRYPT_SECTOR - 1) / QCRYPT_SECTOR * QCRYPT_SECTOR;
    uint8_t *b = xmalloc(len);
    int r = qio_pread(img->file, b, len, host - skip);
    if (r == 0) {
        qcrypt_decrypt(s->crypt, (off - skip) / QCRYPT_SECTOR, b, len);
        memcpy(p, b + skip, n);
    }
    free(b);
    return r;
}

/* The rest of one cluster of a read (qcow_co_preadv's loop body). */
static int64_t qcow1_read_step(image_t *img, uint64_t off, uint8_t *p, size_t n)
{
    struct qcow1_state *s = img->priv;
    uint32_t in = (uint32_t)(off & (s->h.cluster_size - 1));
    size_t len = s->h.cluster_size - in;
    if (len > n)
        len = n;
    struct qcow1_entry e;
    int r = lookup(img, off, &e);
    if (r < 0)
        return r;
    switch (e.kind) {
    case QCOW1_UNALLOCATED:
        r = read_from_backing(img, off, p, len);
        break;
    case QCOW1_COMPRESSED:
        r = decompress(img, &e);
        if (r == 0)
            memcpy(p, s->cluster + in, len);
        break;
    case QCOW1_NORMAL:
        if (e.host & 511)
            r = -EIO;
        else if (s->crypt)
            r = read_encrypted(img, off, e.host + in, p, len);
        else
            r = qio_pread(img->file, p, len, e.host + in);
        break;
    }
    return r < 0 ? r : (int64_t)len;
}

static int qcow1_read(image_t *img, uint64_t off, void *buf, size_t n)
{
    return read_in_steps(img, off, buf, n, qcow1_read_step);
}

/* Unallocated clusters from off on, at most bytes: whole L2 ranges with a zero L1 entry
 * and runs of zero L2 entries. qemu answers one cluster per call, which makes map of a
 * large empty image take hours; the merged answer gives the same map and compare output. */
static uint64_t unallocated_run(image_t *img, uint64_t off, uint64_t bytes)
{
    struct qcow1_state *s = img->priv;
    const uint64_t cs = s->h.cluster_size, span = cs << s->h.l2_bits;
    uint64_t done = 0;
    while (done < bytes) {
        uint64_t pos = off + done;
        uint64_t l1i = qcow1_l1_index(&s->h, pos);
        uint64_t step;
        if (l1i >= s->l1_stored || !s->l1[l1i]) {
            step = span - (pos & (span - 1));
        } else {
            struct qcow1_entry e;
            /* an unreadable table ends the run: the next call reports it, after the
             * run, where qemu's per-cluster calls meet it */
            if (lookup(img, pos, &e) < 0 || e.kind != QCOW1_UNALLOCATED)
                break;
            step = cs - (pos & (cs - 1));
        }
        done += step < bytes - done ? step : bytes - done;
    }
    return done;
}

static int qcow1_block_status(image_t *img, uint64_t off, uint64_t bytes, block_status_t *st)
{
    struct qcow1_state *s = img->priv;
    uint32_t in = (uint32_t)(off & (s->h.cluster_size - 1));
    st->pnum = s->h.cluster_size - in < bytes ? s->h.cluster_size - in : bytes;
    struct qcow1_entry e;
    int r = lookup(img, off, &e);
    if (r < 0)
        return r;
    if (e.kind == QCOW1_UNALLOCATED) {
        st->flags = 0;
        st->pnum = unallocated_run(img, off, bytes);
    } else if (e.kind == QCOW1_COMPRESSED || s->crypt) {
        st->flags = BS_DATA; /* qcow_co_block_status: no offset for encrypted data */
    } else {
        st->flags = BS_DATA | BS_OFFSET_VALID;
        st->map = e.host | in; /* qemu ORs; reads add (they differ for unaligned offsets) */
        st->file = (e.host & (s->h.cluster_size - 1)) ? NULL : img->file;
        st->filename = img->filename;
    }
    return 0;
}

const struct driver qcow1_driver = {
    .name = "qcow",
    .supports_backing = true,
    .probe = qcow1_probe,
    .open = qcow1_open,
    .close = qcow1_close,
    .read = qcow1_read,
    .block_status = qcow1_block_status,
};
