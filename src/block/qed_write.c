/* QED driver, write side: qemu 7.2's qed_aio_write_data / _alloc / _inplace, its zero
 * writes (bdrv_qed_co_pwrite_zeroes) and truncate (bdrv_qed_co_truncate).
 *
 * Allocation is qemu's qed_alloc_clusters: new data clusters and L2 tables go at the end of
 * the file (s->h.file_size, the size at open rounded down to a cluster), data clusters of a
 * request first, then the L2 table they need. An allocating write sets QED_F_NEED_CHECK in
 * the header first when the image has no backing file (qed_should_set_need_check; with one,
 * the data is flushed before the L2 update instead); a read-write close clears it (qed.c).
 *
 * The block layer's part is done here too, so the bytes on disk are qemu's: QED is a
 * sector-based driver (request_alignment 512), so an unaligned write is widened to whole
 * sectors read through the image first (bdrv_padding_rmw_read), and zero writes follow
 * bdrv_co_do_pwrite_zeroes with pwrite_zeroes_alignment = cluster size: cluster-aligned
 * parts become zero clusters (offset 1), the rest is written as zero buffers.
 *
 * Metadata (header, L1, L2) goes through the write port s->w; guest data to the file. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "block/driver.h"
#include "block/qed_int.h"
#include "util/xalloc.h"

#define SECTOR 512u
#define BOUNCE_MAX (16u << 20) /* qemu's MAX_BOUNCE_BUFFER for zero-buffer fallbacks */

int qed_write_header(struct qed_state *s)
{
    uint8_t hb[QED_HEADER_LEN];
    qed_header_encode(&s->h, hb);
    wport_label(&s->w, PC_HEADER, "QED header");
    return wport_pwrite(&s->w, 0, hb, sizeof(hb));
}

/* qemu's qed_write_table: entries [index, index+n) of the table at off, widened to whole
 * 512-byte sectors of the table. */
static int write_table_part(struct qed_state *s, uint64_t off, const uint64_t *t,
                            uint32_t index, uint32_t n, const char *what)
{
    const uint32_t per = SECTOR / 8;
    uint32_t start = index & ~(per - 1);
    uint64_t end = ((uint64_t)index + n + per - 1) & ~(uint64_t)(per - 1);
    if (end > s->h.table_nelems)
        end = s->h.table_nelems;
    size_t len = (size_t)(end - start) * 8;
    uint8_t *raw = xmalloc(len);
    for (uint32_t i = start; i < end; i++)
        for (int b = 0; b < 8; b++)
            raw[(size_t)(i - start) * 8 + b] = (uint8_t)(t[i] >> (8 * b));
    wport_label(&s->w, PC_TABLE, "QED %s table at %" PRIu64, what, off);
    int r = wport_pwrite(&s->w, off + (uint64_t)start * 8, raw, len);
    free(raw);
    return r;
}

/* qemu's qed_alloc_clusters: n clusters at the end of the file. */
static int alloc_clusters(struct qed_state *s, uint64_t n, uint64_t *off)
{
    uint64_t bytes = n * s->h.cluster_size;
    if (n > INT64_MAX / s->h.cluster_size || s->h.file_size > (uint64_t)INT64_MAX - bytes)
        return -EFBIG;
    *off = s->h.file_size;
    s->h.file_size += bytes;
    return 0;
}

/* qemu's qed_copy_from_backing_file: guest bytes [pos, pos+len) from the backing image
 * (zeros without one) into the file at off. */
static int copy_from_backing(image_t *img, uint64_t pos, uint64_t len, uint64_t off)
{
    if (len == 0)
        return 0;
    uint8_t *buf = xmalloc((size_t)len);
    int r = read_from_backing(img, pos, buf, (size_t)len);
    if (r == 0)
        r = qio_pwrite(img->file, buf, (size_t)len, off);
    free(buf);
    return r;
}

/* The untouched part [pos, pos+len) of a newly allocated cluster. Deliberately unlike qemu
 * 7.2 for a zero cluster (offset 1): qemu copies the backing image's bytes there, so a
 * partial write into a zeroed cluster brings back the backing data around it; we write
 * zeros, which is what the guest read there before (README, "Differences"). */
static int cow_from(image_t *img, int kind, uint64_t pos, uint64_t len, uint64_t off)
{
    if (kind != QED_ZERO)
        return copy_from_backing(img, pos, len, off);
    if (len == 0)
        return 0;
    uint8_t *zeros = xcalloc(1, (size_t)len);
    int r = qio_pwrite(img->file, zeros, (size_t)len, off);
    free(zeros);
    return r;
}

/* qemu's qed_aio_write_l2_update (+ qed_aio_write_l1_update): n entries from pos on now
 * point at cluster (1: zero clusters). A missing L2 table is allocated, written whole and
 * flushed before the L1 entry names it. */
static int update_l2(image_t *img, uint64_t pos, uint64_t n, uint64_t cluster)
{
    struct qed_state *s = img->priv;
    uint64_t l1i = pos >> s->h.l1_shift;
    uint32_t idx = (uint32_t)((pos >> s->h.l2_shift) & (s->h.table_nelems - 1));
    bool need_alloc = s->l1[l1i] == 0;
    int r;
    if (need_alloc) {
        uint64_t l2off;
        if ((r = alloc_clusters(s, s->h.table_size, &l2off)) < 0)
            return r;
        memset(s->l2, 0, (size_t)s->h.table_nelems * 8);
        s->l2_offset = l2off;
    }
    for (uint64_t i = idx; i < idx + n; i++) {
        s->l2[i] = cluster;
        if (cluster > 1)
            cluster += s->h.cluster_size;
    }
    if (!need_alloc) {
        r = write_table_part(s, s->l2_offset, s->l2, idx, (uint32_t)n, "L2");
        if (r < 0)
            s->l2_offset = 0; /* the cached table may now differ from the file */
        return r;
    }
    r = write_table_part(s, s->l2_offset, s->l2, 0, s->h.table_nelems, "new L2");
    if (r == 0)
        r = wport_flush(&s->w);
    if (r < 0) {
        s->l2_offset = 0;
        return r;
    }
    s->l1[l1i] = s->l2_offset;
    r = write_table_part(s, s->h.l1_table_offset, s->l1, (uint32_t)l1i, 1, "L1");
    if (r < 0)
        s->l1[l1i] = 0;
    return r;
}

/* One run of a write (qemu's qed_aio_write_data): in place, or allocating. buf NULL with
 * zero: a cluster-aligned zero write. Returns the bytes done or -errno. */
static int64_t write_step(image_t *img, uint64_t pos, const uint8_t *buf, uint64_t n,
                          bool zero)
{
    struct qed_state *s = img->priv;
    uint64_t cs = s->h.cluster_size, len = n, host = 0;
    int t = qed_find_cluster(img, pos, &len, &host);
    if (t < 0)
        return t;
    uint64_t in = pos & (cs - 1);
    int r;
    if (t == QED_FOUND) { /* qed_aio_write_inplace */
        uint8_t *zeros = zero ? xcalloc(1, (size_t)len) : NULL;
        r = qio_pwrite(img->file, zero ? zeros : buf, (size_t)len, host + in);
        free(zeros);
        return r < 0 ? r : (int64_t)len;
    }
    if (zero && t == QED_ZERO)
        return (int64_t)len; /* already zero */
    /* qed_aio_write_alloc */
    uint64_t ncl = (in + len + cs - 1) / cs, cluster = 1;
    if (!zero && (r = alloc_clusters(s, ncl, &cluster)) < 0)
        return r;
    if (!img->backing && !(s->h.features & QED_F_NEED_CHECK)) {
        s->h.features |= QED_F_NEED_CHECK;
        if ((r = qed_write_header(s)) < 0)
            return r;
    }
    if (!zero) { /* qed_aio_write_cow: head and tail of the clusters, then the data */
        uint64_t tail = pos + len, tail_len = ((tail + cs - 1) & ~(cs - 1)) - tail;
        if ((r = cow_from(img, t, pos - in, in, cluster)) < 0 ||
            (r = cow_from(img, t, tail, tail_len, cluster + in + len)) < 0 ||
            (r = qio_pwrite(img->file, buf, (size_t)len, cluster + in)) < 0)
            return r;
        if (img->backing && (r = qio_flush(img->file)) < 0)
            return r;
    }
    r = update_l2(img, pos, ncl, cluster);
    return r < 0 ? r : (int64_t)len;
}

/* qemu's qed_aio_next_io loop over [off, off+n), sector-aligned (the block layer's part is
 * done by the callers). buf NULL: zero clusters. */
static int write_runs(image_t *img, uint64_t off, const uint8_t *buf, uint64_t n, bool zero)
{
    while (n) {
        int64_t k = write_step(img, off, buf, n, zero);
        if (k < 0)
            return (int)k;
        off += (uint64_t)k;
        n -= (uint64_t)k;
        if (buf)
            buf += k;
    }
    return 0;
}

/* The block layer's sector padding (bdrv_pad_request): an unaligned write becomes a write
 * of whole sectors, the bytes around it read through the image first. */
int qed_write(image_t *img, uint64_t off, const void *buf, size_t n)
{
    uint64_t a = off & ~(uint64_t)(SECTOR - 1);
    uint64_t e = (off + n + SECTOR - 1) & ~(uint64_t)(SECTOR - 1);
    if (a == off && e == off + n)
        return write_runs(img, off, buf, n, false);
    if (e > img->size) /* image_size is a multiple of 512 (decoder-checked) */
        return -EIO;
    uint8_t *pad = xmalloc((size_t)(e - a));
    int r = 0;
    if (a != off)
        r = image_read(img, a, pad, SECTOR);
    if (r == 0 && e != off + n)
        r = image_read(img, e - SECTOR, pad + (e - SECTOR - a), SECTOR);
    if (r == 0) {
        memcpy(pad + (off - a), buf, n);
        r = write_runs(img, a, pad, e - a, false);
    }
    free(pad);
    return r;
}

/* One sector [a, a+512) with [off, off+n) inside it zeroed: read, zero, write. */
static int zero_in_sector(image_t *img, uint64_t a, uint64_t off, uint64_t n)
{
    uint8_t sec[SECTOR];
    int r = image_read(img, a, sec, SECTOR);
    if (r < 0)
        return r;
    memset(sec + (off - a), 0, (size_t)n);
    return write_runs(img, a, sec, SECTOR, false);
}

/* Zero buffers through the data path, at most BOUNCE_MAX bytes a write. */
static int zero_buffers(image_t *img, uint64_t off, uint64_t n)
{
    uint8_t *zeros = xcalloc(1, n < BOUNCE_MAX ? (size_t)n : BOUNCE_MAX);
    int r = 0;
    while (n && r == 0) {
        uint64_t k = n < BOUNCE_MAX ? n : BOUNCE_MAX;
        r = write_runs(img, off, zeros, k, false);
        off += k;
        n -= k;
    }
    free(zeros);
    return r;
}

/* bdrv_co_do_zero_pwritev (sector padding) around bdrv_co_do_pwrite_zeroes (split at
 * cluster alignment): bdrv_qed_co_pwrite_zeroes takes only whole clusters and refuses the
 * rest, which the block layer then writes as zero buffers. Never -ENOTSUP: image.c's own
 * fallback would not split the request as qemu does. */
int qed_write_zeroes(image_t *img, uint64_t off, uint64_t n, bool may_unmap)
{
    struct qed_state *s = img->priv;
    (void)may_unmap; /* QED has no unmapping zero write */
    int r;
    if (off & (SECTOR - 1)) {
        uint64_t a = off & ~(uint64_t)(SECTOR - 1);
        uint64_t k = a + SECTOR - off < n ? a + SECTOR - off : n;
        if (a + SECTOR > img->size)
            return -EIO;
        if ((r = zero_in_sector(img, a, off, k)) < 0)
            return r;
        off += k;
        n -= k;
    }
    uint64_t mid = n & ~(uint64_t)(SECTOR - 1), cs = s->h.cluster_size;
    uint64_t head = off & (cs - 1), tail = (off + mid) & (cs - 1);
    while (mid) {
        uint64_t num = mid;
        if (head) {
            num = cs - head < mid ? cs - head : mid;
            head = (head + num) & (cs - 1);
        } else if (tail && num > cs) {
            num -= tail;
        }
        if ((off & (cs - 1)) == 0 && (num & (cs - 1)) == 0)
            r = write_runs(img, off, NULL, num, true);
        else
            r = zero_buffers(img, off, num);
        if (r < 0)
            return r;
        off += num;
        mid -= num;
        n -= num;
    }
    if (n) {
        if (off + SECTOR > img->size)
            return -EIO;
        return zero_in_sector(img, off, off, n);
    }
    return 0;
}

/* bdrv_co_truncate's checks before the driver, then bdrv_qed_co_truncate: growth within
 * the size the L1 table can map, a header write; no shrinking. */
int qed_truncate(image_t *img, uint64_t size, enum img_prealloc prealloc, char **errmsg)
{
    static const char *const modes[] = {"off", "metadata", "falloc", "full"};
    struct qed_state *s = img->priv;
    uint64_t old = s->h.image_size;
    if (size > old && img->backing) {
        /* the block layer asks for zeroed growth over a longer backing image, a flag
         * QED does not take */
        uint64_t blen = img->backing->size;
        if (blen > old) {
            *errmsg = xstrdup("Block driver does not support requested flags");
            return -ENOTSUP;
        }
    }
    if (prealloc != IMG_PREALLOC_OFF) {
        *errmsg = xasprintf("Unsupported preallocation mode '%s'", modes[prealloc]);
        return -ENOTSUP;
    }
    uint64_t n = s->h.table_nelems;
    if (size % SECTOR || size / n / n > s->h.cluster_size ||
        (size / n / n == s->h.cluster_size && size % (n * n))) {
        *errmsg = xstrdup("Invalid image size specified");
        return -EINVAL;
    }
    if (size < old) {
        *errmsg = xstrdup("Shrinking images is currently not supported");
        return -ENOTSUP;
    }
    s->h.image_size = size;
    int r = qed_write_header(s);
    if (r < 0) {
        s->h.image_size = old;
        *errmsg = xasprintf("Failed to update the image size: %s", strerror(-r));
        return r;
    }
    img->size = size;
    return 0;
}

