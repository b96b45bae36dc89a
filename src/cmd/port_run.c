/* Runs a command's image work on a planned overlay (see port_run.h). What a plan cannot
 * hold is refused: images with an external data file (a second file). The plan keeps the
 * file's length on a cut (the journal holds no bytes of one); a discarded range (qcow2
 * frees the old bitmap clusters with a hole punched) becomes zeros written, so the bytes
 * are qemu's though the blocks stay allocated. */
#include "cmd/port_run.h"

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
struct pov {
    struct qio q;              /* first: the qio functions see this */
    struct plan *p;
    const char *what;
    enum plan_class cls;       /* alternates at each barrier */
    bool dirty;                /* writes since the last barrier */
};

static int pov_pread(qio_t *q, void *buf, size_t n, uint64_t off)
{
    return plan_read(((struct pov *)q)->p, buf, n, off);
}

static int pov_pwrite(qio_t *q, const void *buf, size_t n, uint64_t off)
{
    struct pov *o = (struct pov *)q;
    o->dirty = true;
    return plan_write(o->p, o->cls, off, buf, n, "%s", o->what);
}

static int pov_size(qio_t *q, uint64_t *out)
{
    *out = ((struct pov *)q)->p->size;
    return 0;
}

static int pov_truncate(qio_t *q, uint64_t size)
{
    struct pov *o = (struct pov *)q;
    if (size <= o->p->size)
        return 0;
    o->dirty = true;
    return plan_truncate(o->p, o->cls, size, "%s: grow the file", o->what);
}

static int pov_flush(qio_t *q)
{
    struct pov *o = (struct pov *)q;
    if (o->dirty) {
        o->cls = o->cls == PC_REFCOUNT ? PC_COPIED : PC_REFCOUNT;
        o->dirty = false;
    }
    return 0;
}

static int pov_extent(qio_t *q, uint64_t off, bool *is_data, uint64_t *len)
{
    struct plan *p = ((struct pov *)q)->p;
    *is_data = off < p->size;
    *len = off < p->size ? p->size - off : 0;
    return 0;
}

static int pov_allocated(qio_t *q, uint64_t *out)
{
    *out = ((struct pov *)q)->p->size;
    return 0;
}

/* A punched hole or zeroed range reads as zeros: planned as zeros written (journaled, so
 * undone), the range past the planned end left alone as the kernel does (KEEP_SIZE).
 * Allocation (mode 0) is refused: callers then write zeros themselves. */
static int pov_fallocate(qio_t *q, enum qio_falloc mode, uint64_t off, uint64_t len)
{
    struct pov *o = (struct pov *)q;
    if (mode == QIO_FALLOC_ALLOCATE)
        return -ENOTSUP;
    uint64_t end = off + len < o->p->size ? off + len : o->p->size;
    static const uint8_t zeros[65536];
    for (uint64_t at = off; at < end;) {
        size_t n = end - at < sizeof(zeros) ? (size_t)(end - at) : sizeof(zeros);
        o->dirty = true;
        int r = plan_write(o->p, o->cls, at, zeros, n, "%s: discard", o->what);
        if (r < 0)
            return r;
        at += n;
    }
    return 0;
}

static void pov_close(qio_t *q)
{
    (void)q;   /* qio_close frees the path and the struct */
}

static const struct qio_ops pov_ops = {
    .pread = pov_pread, .pwrite = pov_pwrite, .size = pov_size, .truncate = pov_truncate,
    .flush = pov_flush, .extent = pov_extent, .allocated = pov_allocated,
    .fallocate = pov_fallocate, .close = pov_close,
};

static qio_t *pov_open(struct plan *p, const char *path, const char *what)
{
    struct pov *o = xcalloc(1, sizeof(*o));
    o->q.ops = &pov_ops;
    o->q.fd = -1;
    o->q.path = xstrdup(path);
    o->q.writable = true;
    o->p = p;
    o->what = what;
    o->cls = PC_REFCOUNT;
    return &o->q;
}

static void print_plan(const struct plan *p, const char *what)
{
    printf("%c%s plan (dry run, nothing was written): %zu write%s, %" PRIu64 " bytes\n",
           what[0] >= 'a' && what[0] <= 'z' ? what[0] - 'a' + 'A' : what[0], what + 1, p->n,
           p->n == 1 ? "" : "s", plan_bytes(p));
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

/* The journal's own read-write descriptor, locked as a writer before any work is done, so
 * that an image in use is refused with qemu's message alone. NULL after printing why. */
static qio_t *open_locked(const char *filename)
{
    qio_t *wq;
    const char *perm;
    int r;
    if ((r = qio_open_file(filename, QIO_RDWR, &wq)) < 0) {
        err_report("Could not open '%s': %s", filename, strerror(-r));
        return NULL;
    }
    if ((r = qio_lock_for_repair(wq, &perm)) < 0) {
        if (r == -EBUSY)
            err_report("Could not open '%s': Failed to get \"%s\" lock\n"
                       "Is another process using the image [%s]?", filename, perm, filename);
        else
            err_report("Could not open '%s': %s", filename, strerror(-r));
        qio_close(wq);
        return NULL;
    }
    return wq;
}

/* The plan through the journaled port on wq. 0 or 1 after printing why. */
static int apply_journaled(const struct plan *plan, qio_t *wq, const char *filename,
                           const char *journal)
{
    journal_t *j;
    if (journal_create(journal, filename, wq, &j) < 0)   /* it printed why */
        return 1;
    struct wport w;
    const struct plan_entry *failed = NULL;
    int r = wport_init_journal(&w, wq, j);
    if (r == 0)
        r = wport_apply(&w, plan, &failed);
    if (r < 0 && failed)
        err_report("Could not write '%s': %s", filename, strerror(-r));
    journal_finish(j, wq, r == 0);
    journal_close(j);
    return r < 0 ? 1 : 0;
}

int port_run(image_t *orig, const char *filename, int flags, const char *what, port_fn fn,
             void *ctx, bool dry_run, const char *journal)
{
    if (orig->data_file_name) {
        err_report("--%s is not supported for images with an external data file",
                   dry_run ? "dry-run" : "journal");
        return 1;
    }
    qio_t *wq = NULL;
    if (!dry_run && !(wq = open_locked(filename)))
        return 1;
    struct plan plan;
    plan_init(&plan, orig->file);
    image_t *img;
    char *msg = NULL;
    int ret = 1;
    int r = image_open_qio(pov_open(&plan, filename, what), filename, orig->format,
                           IMG_OPEN_RDWR | flags, &img, &msg);
    if (r < 0) {
        err_report("Could not open '%s': %s", filename, msg ? msg : strerror(-r));
        free(msg);
        goto out;
    }
    ret = fn(img, ctx);
    image_close(img);   /* the close-time writes (qcow2: the bitmaps) are planned too */
    if (dry_run)
        print_plan(&plan, what);
    else if (apply_journaled(&plan, wq, filename, journal))
        ret = 1;
out:
    plan_free(&plan);
    if (wq)
        qio_close(wq);
    return ret;
}
