/* --dry-run / --journal through a plan overlay: see overlay_run.h. */
#include "cmd/overlay_run.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/open_mem.h"
#include "io/lock.h"
#include "io/qio.h"
#include "io/wport.h"
#include "repair/journal.h"
#include "repair/plan.h"
#include "util/err.h"
#include "util/xalloc.h"

/* The writable overlay: reads see the plan applied, writes and growth are recorded. */
struct ov {
    struct qio q;              /* first: the qio functions see this */
    struct plan *p;
    enum plan_class cls;       /* alternates at each barrier */
    bool dirty;                /* writes since the last barrier */
    const char *what;
};

static int ov_pread(qio_t *q, void *buf, size_t n, uint64_t off)
{
    return plan_read(((struct ov *)q)->p, buf, n, off);
}

static int ov_pwrite(qio_t *q, const void *buf, size_t n, uint64_t off)
{
    struct ov *o = (struct ov *)q;
    o->dirty = true;
    return plan_write(o->p, o->cls, off, buf, n, "%s", o->what);
}

static int ov_size(qio_t *q, uint64_t *out)
{
    *out = ((struct ov *)q)->p->size;
    return 0;
}

static int ov_truncate(qio_t *q, uint64_t size)
{
    struct ov *o = (struct ov *)q;
    if (size <= o->p->size)
        return 0;   /* a cut is not made: the journal keeps no bytes of one */
    o->dirty = true;
    return plan_truncate(o->p, o->cls, size, "%s: grow the file", o->what);
}

static int ov_flush(qio_t *q)
{
    struct ov *o = (struct ov *)q;
    if (o->dirty) {
        o->cls = o->cls == PC_REFCOUNT ? PC_COPIED : PC_REFCOUNT;
        o->dirty = false;
    }
    return 0;
}

static int ov_extent(qio_t *q, uint64_t off, bool *is_data, uint64_t *len)
{
    struct plan *p = ((struct ov *)q)->p;
    *is_data = off < p->size;
    *len = off < p->size ? p->size - off : 0;
    return 0;
}

static int ov_allocated(qio_t *q, uint64_t *out)
{
    *out = ((struct ov *)q)->p->size;
    return 0;
}

/* A punched hole or zeroed range is recorded as zeros written (the journal can restore
 * bytes, not allocation), within the file as FALLOC_FL_KEEP_SIZE keeps it: the result
 * reads as qemu's, whose discards punch holes. */
static int ov_fallocate(qio_t *q, enum qio_falloc mode, uint64_t off, uint64_t len)
{
    struct ov *o = (struct ov *)q;
    if (mode == QIO_FALLOC_ALLOCATE)
        return -ENOTSUP;
    if (off >= o->p->size)
        return 0;
    if (len > o->p->size - off)
        len = o->p->size - off;
    static const uint8_t zeros[1 << 16];
    for (uint64_t done = 0; done < len;) {
        size_t n = len - done < sizeof(zeros) ? (size_t)(len - done) : sizeof(zeros);
        int r = ov_pwrite(q, zeros, n, off + done);
        if (r < 0)
            return r;
        done += n;
    }
    return 0;
}

static void ov_close(qio_t *q)
{
    (void)q;   /* qio_close frees the path and the struct */
}

static const struct qio_ops ov_ops = {
    .pread = ov_pread, .pwrite = ov_pwrite, .size = ov_size, .truncate = ov_truncate,
    .flush = ov_flush, .extent = ov_extent, .allocated = ov_allocated, .fallocate = ov_fallocate,
    .close = ov_close,
};

static qio_t *ov_open(struct plan *p, const char *path, const char *what)
{
    struct ov *o = xcalloc(1, sizeof(*o));
    o->q.ops = &ov_ops;
    o->q.fd = -1;
    o->q.path = xstrdup(path);
    o->q.writable = true;
    o->p = p;
    o->cls = PC_REFCOUNT;
    o->what = what;
    return &o->q;
}

static void print_plan(const struct plan *p, const char *what)
{
    printf("%s plan (dry run, nothing was written): %zu write%s, %" PRIu64 " bytes\n", what,
           p->n, p->n == 1 ? "" : "s", plan_bytes(p));
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

/* The work on the overlay: open, fn, flush, close (the close-time writes of the driver,
 * e.g. qcow2 bitmaps, belong to the command too). */
static int run_on_plan(struct plan *p, image_t *orig, const char *filename, const char *what,
                       overlay_fn fn, void *ctx)
{
    image_t *img;
    char *msg = NULL;
    int r = image_open_qio(ov_open(p, filename, what), filename, orig->format, IMG_OPEN_RDWR,
                           &img, &msg);
    if (r < 0) {
        err_report("Could not open '%s': %s", filename, msg ? msg : strerror(-r));
        free(msg);
        return r;
    }
    if (orig->backing) {
        img->backing = orig->backing;
        orig->backing = NULL;
    }
    r = fn(img, ctx);
    if (r == 0 && (r = image_flush(img)) < 0)
        err_report("Could not flush '%s': %s", filename, strerror(-r));
    orig->backing = img->backing;
    img->backing = NULL;
    image_close(img);
    return r;
}

int overlay_run(image_t *orig, const char *filename, const char *what, bool dry_run,
                const char *journal, overlay_fn fn, void *ctx)
{
    const char *opt = dry_run ? "dry-run" : "journal";
    if (orig->data_file_name) {
        err_report("--%s is not supported for images with an external data file", opt);
        return -ENOTSUP;
    }
    struct plan plan;
    plan_init(&plan, orig->file);
    /* a command that fails writes nothing at all (qemu's leaves its partial writes) */
    int r = run_on_plan(&plan, orig, filename, what, fn, ctx);
    if (r != 0)
        goto out;
    if (dry_run) {
        print_plan(&plan, what);
        goto out;
    }
    /* the journal's own read-write descriptor, locked as a writer (orig holds no locks) */
    qio_t *wq;
    const char *perm;
    if ((r = qio_open_file(filename, QIO_RDWR, &wq)) < 0) {
        err_report("Could not open '%s': %s", filename, strerror(-r));
        goto out;
    }
    if ((r = qio_lock_for_repair(wq, &perm)) < 0) {
        if (r == -EBUSY)
            err_report("Could not open '%s': Failed to get \"%s\" lock\n"
                       "Is another process using the image [%s]?", filename, perm, filename);
        else
            err_report("Could not open '%s': %s", filename, strerror(-r));
        qio_close(wq);
        goto out;
    }
    journal_t *j;
    if ((r = journal_create(journal, filename, wq, &j)) < 0) {
        r = -EIO;   /* journal_create printed why */
        qio_close(wq);
        goto out;
    }
    struct wport w;
    const struct plan_entry *failed = NULL;
    if ((r = wport_init_journal(&w, wq, j)) == 0)
        r = wport_apply(&w, &plan, &failed);
    if (r < 0)
        err_report("Could not write '%s': %s", filename, strerror(-r));
    journal_finish(j, wq, r == 0);
    journal_close(j);
    qio_close(wq);
out:
    plan_free(&plan);
    return r;
}
