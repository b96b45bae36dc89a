/* The plan overlay and its replay (see ported.h). */
#include "cmd/ported.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/open_mem.h"
#include "io/lock.h"
#include "io/wport.h"
#include "repair/journal.h"
#include "util/err.h"
#include "util/xalloc.h"

static const struct qio_ops wov_ops;

struct wov {
    struct qio q;              /* first: the qio functions see this */
    struct plan *p;
    enum plan_class cls;       /* alternates at each barrier */
    bool dirty;                /* writes since the last barrier */
    const char *label;
    bool zero_discards;        /* ported_record_discards */
};

static int wov_pread(qio_t *q, void *buf, size_t n, uint64_t off)
{
    return plan_read(((struct wov *)q)->p, buf, n, off);
}

static int wov_pwrite(qio_t *q, const void *buf, size_t n, uint64_t off)
{
    struct wov *o = (struct wov *)q;
    o->dirty = true;
    return plan_write(o->p, o->cls, off, buf, n, "%s", o->label);
}

static int wov_size(qio_t *q, uint64_t *out)
{
    *out = ((struct wov *)q)->p->size;
    return 0;
}

static int wov_truncate(qio_t *q, uint64_t size)
{
    struct wov *o = (struct wov *)q;
    if (size <= o->p->size)
        return 0;   /* a cut is not made (see ported.h) */
    o->dirty = true;
    return plan_truncate(o->p, o->cls, size, "%s: grow the file", o->label);
}

static int wov_flush(qio_t *q)
{
    struct wov *o = (struct wov *)q;
    if (o->dirty) {
        o->cls = o->cls == PC_REFCOUNT ? PC_COPIED : PC_REFCOUNT;
        o->dirty = false;
    }
    return 0;
}

static int wov_extent(qio_t *q, uint64_t off, bool *is_data, uint64_t *len)
{
    struct plan *p = ((struct wov *)q)->p;
    *is_data = off < p->size;
    *len = off < p->size ? p->size - off : 0;
    return 0;
}

static int wov_allocated(qio_t *q, uint64_t *out)
{
    *out = ((struct wov *)q)->p->size;
    return 0;
}

/* A punched hole or zeroed range recorded as zeros written (the journal restores bytes,
 * not allocation), within the file as FALLOC_FL_KEEP_SIZE keeps it; only when the command
 * asked (ported_record_discards), else -ENOTSUP as without the op. */
static int wov_fallocate(qio_t *q, enum qio_falloc mode, uint64_t off, uint64_t len)
{
    struct wov *o = (struct wov *)q;
    if (!o->zero_discards || mode == QIO_FALLOC_ALLOCATE)
        return -ENOTSUP;
    if (off >= o->p->size)
        return 0;
    if (len > o->p->size - off)
        len = o->p->size - off;
    static const uint8_t zeros[1 << 16];
    for (uint64_t done = 0; done < len;) {
        size_t n = len - done < sizeof(zeros) ? (size_t)(len - done) : sizeof(zeros);
        int r = wov_pwrite(q, zeros, n, off + done);
        if (r < 0)
            return r;
        done += n;
    }
    return 0;
}

void ported_record_discards(struct ported *pt)
{
    if (pt->img && pt->img->file && pt->img->file->ops == &wov_ops)
        ((struct wov *)pt->img->file)->zero_discards = true;
}

static void wov_close(qio_t *q)
{
    (void)q;   /* qio_close frees the path and the struct */
}

static const struct qio_ops wov_ops = {
    .pread = wov_pread, .pwrite = wov_pwrite, .size = wov_size, .truncate = wov_truncate,
    .flush = wov_flush, .extent = wov_extent, .allocated = wov_allocated,
    .fallocate = wov_fallocate, .close = wov_close,
};

qio_t *ported_overlay(struct plan *p, const char *path, const char *label)
{
    struct wov *o = xcalloc(1, sizeof(*o));
    o->q.ops = &wov_ops;
    o->q.fd = -1;
    o->q.path = xstrdup(path);
    o->q.writable = true;
    o->p = p;
    o->cls = PC_REFCOUNT;
    o->label = label;
    return &o->q;
}

int ported_open(struct ported *pt, image_t *orig, const char *filename, image_t **out,
                char **errmsg)
{
    memset(pt, 0, sizeof(*pt));
    *errmsg = NULL;
    if (orig->data_file_name) {
        *errmsg = xstrdup("--dry-run and --journal are not supported for images with an "
                          "external data file");
        return -ENOTSUP;
    }
    plan_init(&pt->plan, orig->file);
    pt->orig = orig;
    /* an encrypted image unlocks with the key orig was opened with */
    int r = image_open_qio_keyed(ported_overlay(&pt->plan, filename, filename), filename,
                                 orig->format, IMG_OPEN_RDWR, orig->key_secret,
                                 orig->encrypt_format, &pt->img, errmsg);
    if (r < 0) {
        char *m = *errmsg;
        *errmsg = xasprintf("Could not open '%s': %s", filename, m ? m : strerror(-r));
        free(m);
        plan_free(&pt->plan);
        pt->img = NULL;
        return r;
    }
    /* COW reads and zeroing decisions need the chain: shared, orig keeps reading it */
    pt->img->backing = orig->backing;
    *out = pt->img;
    return 0;
}

static void print_plan(const struct plan *p, const char *title, const char *filename)
{
    printf("%s plan for '%s' (dry run, nothing was written): %zu write%s, %" PRIu64
           " bytes\n", title, filename, p->n, p->n == 1 ? "" : "s", plan_bytes(p));
    for (size_t i = 0; i < p->n; i++) {
        const struct plan_entry *e = &p->v[i];
        if (e->op == PLAN_TRUNCATE)
            printf("  %4zu  grow file %" PRIu64 " -> %" PRIu64 " bytes\n", i + 1, e->old_size,
                   e->offset);
        else
            printf("  %4zu  offset 0x%" PRIx64 " length %" PRIu64 "\n", i + 1, e->offset,
                   e->len);
    }
}

int ported_apply_journal(struct plan *plan, const char *filename, const char *journal,
                         char **errmsg)
{
    qio_t *wq;
    const char *perm;
    int r;
    if ((r = qio_open_file(filename, QIO_RDWR, &wq)) < 0) {
        *errmsg = xasprintf("Could not open '%s': %s", filename, strerror(-r));
        return r;
    }
    if ((r = qio_lock_for_repair(wq, &perm)) < 0) {
        if (r == -EBUSY)
            *errmsg = xasprintf("Could not open '%s': Failed to get \"%s\" lock\n"
                                "Is another process using the image [%s]?", filename, perm,
                                filename);
        else
            *errmsg = xasprintf("Could not open '%s': %s", filename, strerror(-r));
        qio_close(wq);
        return r;
    }
    journal_t *j;
    if ((r = journal_create(journal, filename, wq, &j)) < 0) {
        qio_close(wq);
        return -EIO;   /* journal_create printed why */
    }
    struct wport w;
    const struct plan_entry *failed = NULL;
    if ((r = wport_init_journal(&w, wq, j)) == 0)
        r = wport_apply(&w, plan, &failed);
    if (r < 0 && failed)
        *errmsg = xasprintf("Could not write '%s': %s", filename, strerror(-r));
    journal_finish(j, wq, r == 0);
    journal_close(j);
    qio_close(wq);
    return r;
}

int ported_finish(struct ported *pt, const char *filename, bool ok, bool dry_run,
                  const char *journal, const char *title, char **errmsg)
{
    *errmsg = NULL;
    int r = 0;
    if (pt->img) {
        pt->img->backing = NULL;   /* orig's */
        r = ok ? image_flush(pt->img) : 0;
        image_close(pt->img);
        pt->img = NULL;
    }
    if (ok && r == 0) {
        if (dry_run)
            print_plan(&pt->plan, title, filename);
        else if (journal)
            r = ported_apply_journal(&pt->plan, filename, journal, errmsg);
    }
    plan_free(&pt->plan);
    return r;
}

bool ported_modes_ok(bool dry_run, const char *journal)
{
    if (dry_run && journal) {
        err_report("--dry-run and --journal cannot be used together");
        return false;
    }
    return true;
}
