/* A command's in-place change made through a plan (see ported.h). The driver's flushes are
 * barriers in the plan: each flush after writes starts a new plan class, and wport_apply
 * flushes between classes, so the replay keeps the write order the command relies on. A
 * file cut (shrink) is not recorded: the file keeps its length. */
#include "cmd/ported.h"

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
#include "util/xalloc.h"

struct wov {
    struct qio q;              /* first: the qio functions see this */
    struct plan *p;
    enum plan_class cls;       /* alternates at each barrier */
    bool dirty;                /* writes since the last barrier */
    const char *title;
};

static int wov_pread(qio_t *q, void *buf, size_t n, uint64_t off)
{
    return plan_read(((struct wov *)q)->p, buf, n, off);
}

static int wov_pwrite(qio_t *q, const void *buf, size_t n, uint64_t off)
{
    struct wov *o = (struct wov *)q;
    o->dirty = true;
    return plan_write(o->p, o->cls, off, buf, n, o->title);
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
        return 0;
    o->dirty = true;
    return plan_truncate(o->p, o->cls, size, "%s: grow the file", o->title);
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

static void wov_close(qio_t *q)
{
    (void)q;
}

static const struct qio_ops wov_ops = {
    .pread = wov_pread, .pwrite = wov_pwrite, .size = wov_size, .truncate = wov_truncate,
    .flush = wov_flush, .extent = wov_extent, .allocated = wov_allocated, .close = wov_close,
};

static qio_t *wov_open(struct plan *p, const char *path, const char *title)
{
    struct wov *o = xcalloc(1, sizeof(*o));
    o->q.ops = &wov_ops;
    o->q.fd = -1;
    o->q.path = xstrdup(path);
    o->q.writable = true;
    o->p = p;
    o->cls = PC_REFCOUNT;
    o->title = title;
    return &o->q;
}

static void print_plan(const struct plan *p, const char *title)
{
    printf("%s plan (dry run, nothing was written): %zu write%s, %" PRIu64 " bytes\n", title,
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

static int plan_work(struct plan *p, image_t *orig, const char *filename, const char *title,
                     ported_fn fn, void *ctx, char **errmsg)
{
    image_t *img;
    int r = image_open_qio(wov_open(p, filename, title), filename, orig->format,
                           IMG_OPEN_RDWR, &img, errmsg);
    if (r < 0) {
        char *m = *errmsg;
        *errmsg = xasprintf("Could not open '%s': %s", filename, m ? m : strerror(-r));
        free(m);
        return r;
    }
    if (orig->backing) {
        img->backing = orig->backing;
        orig->backing = NULL;
    }
    r = fn(img, ctx, errmsg);
    if (r == 0)
        r = image_flush(img);
    orig->backing = img->backing;
    img->backing = NULL;
    image_close(img);
    return r;
}

int ported_run(image_t *orig, const char *filename, const char *title, ported_fn fn,
               void *ctx, bool dry_run, const char *journal, char **errmsg)
{
    if (orig->data_file_name) {
        *errmsg = xasprintf("--%s is not supported for images with an external data file",
                            dry_run ? "dry-run" : "journal");
        return -ENOTSUP;
    }
    struct plan plan;
    plan_init(&plan, orig->file);
    int r = plan_work(&plan, orig, filename, title, fn, ctx, errmsg);
    if (r < 0)
        goto out;
    if (dry_run) {
        print_plan(&plan, title);
        goto out;
    }
    qio_t *wq;
    const char *perm;
    if ((r = qio_open_file(filename, QIO_RDWR, &wq)) < 0) {
        *errmsg = xasprintf("Could not open '%s': %s", filename, strerror(-r));
        goto out;
    }
    if ((r = qio_lock_for_repair(wq, &perm)) < 0) {
        if (r == -EBUSY)
            *errmsg = xasprintf("Could not open '%s': Failed to get \"%s\" lock\n"
                                "Is another process using the image [%s]?", filename, perm,
                                filename);
        else
            *errmsg = xasprintf("Could not open '%s': %s", filename, strerror(-r));
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
    if (r < 0 && failed)
        *errmsg = xasprintf("Could not write '%s': %s", filename, strerror(-r));
    journal_finish(j, wq, r == 0);
    journal_close(j);
    qio_close(wq);
out:
    plan_free(&plan);
    return r;
}
