/* QED driver (read side): qemu 7.2's bdrv_qed_do_open checks via the pure decoder, then
 * guest reads and block status through the two-level table (qed_find_cluster semantics:
 * runs stop at an L2 boundary and at any break in a contiguous host run; only the first
 * cluster of a run is validated, as in qemu).
 *
 * The write side is qed_write.c; a read-write open outside `check` repairs an image left
 * with NEED_CHECK first, as qemu does (repair_at_open). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/driver.h"
#include "block/qed_int.h"
#include "checker/blk_check.h"
#include "format/be.h"
#include "util/xalloc.h"

static int qed_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)filename;
    return len >= QED_HEADER_LEN && le32_get(buf) == QED_MAGIC ? 100 : 0;
}

int qed_read_table(qio_t *f, const struct qed_header *h, uint64_t off, uint64_t *out)
{
    uint8_t *raw = xmalloc(h->table_bytes);
    int r = qio_pread(f, raw, h->table_bytes, off);
    if (r == 0)
        for (uint32_t i = 0; i < h->table_nelems; i++)
            out[i] = le64_get(raw + (size_t)i * 8);
    free(raw);
    return r;
}

int qed_load_header(qio_t *f, struct qed_header *h, char **errmsg)
{
    uint64_t size;
    int r = qio_size(f, &size);
    if (r < 0) {
        *errmsg = xstrdup("Failed to get file length");
        return r;
    }
    uint8_t buf[QED_HEADER_LEN];
    r = qio_pread(f, buf, sizeof(buf), 0); /* zero-filled past EOF, as qemu's read */
    if (r < 0) {
        *errmsg = xstrdup("Failed to read QED header");
        return r;
    }
    struct fmt_error e;
    fmt_error_clear(&e);
    r = qed_header_decode(buf, sizeof(buf), size, h, &e);
    if (r < 0) {
        char tmp[FMT_ERROR_MSG_MAX];
        *errmsg = xstrdup(fmt_error_user_msg(&e, tmp, sizeof(tmp)));
    }
    return r;
}

static int read_backing_name(image_t *img, const struct qed_header *h, char **errmsg)
{
    uint32_t n = h->backing_filename_size; /* <= QED_MAX_BACKING_NAME, decoder-checked */
    char *name = xmalloc((size_t)n + 1);
    int r = qio_pread(img->file, name, n, h->backing_filename_offset);
    if (r < 0) {
        free(name);
        *errmsg = xstrdup("Failed to read backing filename");
        return r;
    }
    name[n] = 0;
    if (name[0]) { /* qemu treats an empty name as no backing file */
        img->backing_file = name;
        img->backing_full = image_backing_path(img, name);
        if (h->features & QED_F_BACKING_FORMAT_NO_PROBE)
            img->backing_format = xstrdup("raw");
    } else {
        free(name);
    }
    return 0;
}

/* bdrv_qed_do_open: an image left with NEED_CHECK is checked with fixes (invalid table
 * entries zeroed, NEED_CHECK cleared when nothing is left; leaks stay) before a read-write
 * open uses it, silently. */
static int repair_at_open(image_t *img)
{
    struct check_run run;
    memset(&run, 0, sizeof(run));
    findings_init(&run.findings, 0);
    run.format = "qed";
    int r = qed_check_pass_port(img, 1, &run, &((struct qed_state *)img->priv)->w);
    check_run_free(&run);
    return r;
}

static int qed_open(image_t *img, char **errmsg)
{
    struct qed_state *s = xcalloc(1, sizeof(*s));
    img->priv = s;
    int r = qed_load_header(img->file, &s->h, errmsg);
    if (r < 0)
        return r;
    if (s->h.features & QED_F_BACKING_FILE) {
        r = read_backing_name(img, &s->h, errmsg);
        if (r < 0)
            return r;
    }
    if ((img->flags & IMG_OPEN_RDWR) && (r = wport_init_direct(&s->w, img->file)) < 0) {
        *errmsg = xstrdup("Failed to get file length");
        return r;
    }
    /* qemu knocks out unknown autoclear bits when it may write */
    if ((img->flags & IMG_OPEN_RDWR) &&
        (s->h.autoclear_features & ~QED_AUTOCLEAR_FEATURE_MASK)) {
        s->h.autoclear_features &= QED_AUTOCLEAR_FEATURE_MASK;
        r = qed_write_header(s);
        if (r < 0) {
            *errmsg = xstrdup("Failed to update header");
            return r;
        }
        wport_flush(&s->w);
    }
    /* the L1 table lies inside the file (decoder-checked), so this is bounded by it */
    s->l1 = xmalloc((size_t)s->h.table_nelems * 8);
    r = qed_read_table(img->file, &s->h, s->h.l1_table_offset, s->l1);
    if (r < 0) {
        *errmsg = xasprintf("Failed to read L1 table: %s", strerror(-r));
        return r;
    }
    s->l2 = xmalloc((size_t)s->h.table_nelems * 8);
    if ((img->flags & IMG_OPEN_RDWR) && !(img->flags & IMG_OPEN_CHECK) &&
        (s->h.features & QED_F_NEED_CHECK) && (r = repair_at_open(img)) < 0) {
        *errmsg = xstrdup(strerror(-r)); /* qemu: "Could not open 'F': <strerror>" */
        return r;
    }
    img->size = s->h.image_size;
    img->cluster_size = s->h.cluster_size;
    return 0;
}

static void qed_close(image_t *img)
{
    struct qed_state *s = img->priv;
    if (!s)
        return;
    /* qemu's bdrv_qed_close: a read-write close marks the image clean, even when a
     * check -r left corruptions behind */
    if ((img->flags & IMG_OPEN_RDWR) && s->l1 && (s->h.features & QED_F_NEED_CHECK)) {
        wport_flush(&s->w); /* the data and tables before the header that vouches for them */
        s->h.features &= ~QED_F_NEED_CHECK;
        (void)qed_write_header(s); /* qemu ignores a failure too */
    }
    free(s->l1);
    free(s->l2);
    free(s);
    img->priv = NULL;
}

/* qemu's qed_find_cluster(): classify the run starting at pos, at most *len bytes. */
int qed_find_cluster(image_t *img, uint64_t pos, uint64_t *len, uint64_t *host)
{
    struct qed_state *s = img->priv;
    const struct qed_header *h = &s->h;
    uint64_t l1_span = (uint64_t)1 << h->l1_shift;
    uint64_t to_l2_end = l1_span - (pos & (l1_span - 1));
    if (*len > to_l2_end)
        *len = to_l2_end;
    uint64_t l1_idx = pos >> h->l1_shift; /* < table_nelems since image_size <= max */
    if (l1_idx >= h->table_nelems)
        return -EINVAL;
    uint64_t l2_off = s->l1[l1_idx];
    if (l2_off == 0)
        return QED_UNALLOC;
    if (!qed_table_offset_ok(h, l2_off))
        return -EINVAL;
    if (s->l2_offset != l2_off) {
        s->l2_offset = 0;
        int r = qed_read_table(img->file, h, l2_off, s->l2);
        if (r < 0)
            return r;
        s->l2_offset = l2_off;
    }
    uint64_t cs = h->cluster_size;
    uint64_t in = pos & (cs - 1);
    uint32_t idx = (uint32_t)((pos >> h->l2_shift) & (h->table_nelems - 1));
    uint64_t want = (in + *len + cs - 1) / cs;
    uint64_t end = idx + want < h->table_nelems ? idx + want : h->table_nelems;
    uint64_t first = s->l2[idx], last = first;
    uint64_t i;
    for (i = idx + 1; i < end; i++) {
        uint64_t e = s->l2[i];
        if (first == 0 || first == 1) {
            if (e != first)
                break;
        } else {
            if (e != last + cs)
                break;
            last = e;
        }
    }
    uint64_t run = (i - idx) * cs - in;
    if (*len > run)
        *len = run;
    *host = first;
    if (first == 0)
        return QED_UNALLOC;
    if (first == 1)
        return QED_ZERO;
    return qed_cluster_offset_ok(h, first) ? QED_FOUND : -EINVAL;
}

/* One cluster run of a read: this file, zeros or the backing image. */
static int64_t qed_read_step(image_t *img, uint64_t off, uint8_t *p, size_t n)
{
    struct qed_state *s = img->priv;
    uint64_t len = n, host = 0;
    int t = qed_find_cluster(img, off, &len, &host);
    if (t < 0)
        return t;
    int r = 0;
    if (t == QED_FOUND)
        r = qio_pread(img->file, p, len, host + (off & (s->h.cluster_size - 1)));
    else if (t == QED_ZERO)
        memset(p, 0, len);
    else
        r = read_from_backing(img, off, p, len);
    return r < 0 ? r : (int64_t)len;
}

static int qed_read(image_t *img, uint64_t off, void *buf, size_t n)
{
    return read_in_steps(img, off, buf, n, qed_read_step);
}

static int qed_block_status(image_t *img, uint64_t off, uint64_t bytes, block_status_t *st)
{
    struct qed_state *s = img->priv;
    uint64_t len = bytes, host = 0;
    int t = qed_find_cluster(img, off, &len, &host);
    if (t < 0)
        return t;
    st->pnum = len;
    if (t == QED_FOUND) {
        st->flags = BS_DATA | BS_OFFSET_VALID;
        st->map = host + (off & (s->h.cluster_size - 1));
        st->file = img->file;
        st->filename = img->filename;
    } else {
        st->flags = t == QED_ZERO ? BS_ZERO : 0;
    }
    return 0;
}

const struct driver qed_driver = {
    .name = "qed",
    .supports_backing = true,
    .probe = qed_probe,
    .open = qed_open,
    .close = qed_close,
    .read = qed_read,
    .block_status = qed_block_status,
    .write = qed_write,
    .write_zeroes = qed_write_zeroes,
    .truncate = qed_truncate,
};
