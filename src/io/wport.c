/* The write port's backends (see wport.h). */
#include "io/wport.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/xalloc.h"

static int init_file(struct wport *w, enum wport_kind kind, qio_t *q, journal_t *j)
{
    memset(w, 0, sizeof(*w));
    w->kind = kind;
    w->q = q;
    w->j = j;
    w->cls = PC_HEADER;
    return qio_size(q, &w->size);
}

int wport_init_direct(struct wport *w, qio_t *q)
{
    return init_file(w, WPORT_DIRECT, q, NULL);
}

int wport_init_journal(struct wport *w, qio_t *q, journal_t *j)
{
    return init_file(w, WPORT_JOURNAL, q, j);
}

void wport_init_plan(struct wport *w, struct plan *p)
{
    memset(w, 0, sizeof(*w));
    w->kind = WPORT_PLAN;
    w->p = p;
    w->cls = PC_HEADER;
}

void wport_label(struct wport *w, enum plan_class cls, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->reason, sizeof(w->reason), fmt, ap);
    va_end(ap);
    w->cls = cls;
}

uint64_t wport_size(const struct wport *w)
{
    return w->kind == WPORT_PLAN ? w->p->size : w->size;
}

/* One entry on the file: journaled first (journal backend), then written. A truncate
 * shrinks the file only if shrink (the direct backend's wport_truncate); a plan's never
 * does. *write_failed tells a failed file write from a failed journal row. */
static int do_entry(struct wport *w, const struct plan_entry *e, bool shrink,
                    bool *write_failed)
{
    uint64_t new_size = w->size, seq = 0;
    int rc;
    *write_failed = false;
    if (e->op == PLAN_WRITE && e->offset + e->len > w->size)
        new_size = e->offset + e->len;
    if (e->op == PLAN_TRUNCATE && e->offset > w->size)
        new_size = e->offset;
    if (w->j && (rc = journal_record(w->j, e, new_size, &seq)) < 0)
        return rc;
    if (e->op == PLAN_WRITE)
        rc = qio_pwrite(w->q, e->new_bytes, (size_t)e->len, e->offset);
    else if (e->offset > w->size || (shrink && e->offset < w->size))
        rc = qio_truncate(w->q, e->offset);
    else
        rc = 0;
    if (rc < 0) {
        /* a short write may have changed part of the range: say so in the journal */
        *write_failed = true;
        if (w->j)
            journal_mark_failed(w->j, seq);
        return rc;
    }
    w->size = e->op == PLAN_TRUNCATE && shrink ? e->offset : new_size;
    return 0;
}

int wport_pwrite(struct wport *w, uint64_t off, const void *buf, size_t len)
{
    if (!len)
        return 0;
    if (off > INT64_MAX || len > INT64_MAX - off)
        return -EINVAL;
    if (w->kind == WPORT_PLAN)
        return plan_write(w->p, w->cls, off, buf, len, "%s", w->reason);
    struct plan_entry e = {
        .op = PLAN_WRITE, .cls = w->cls, .offset = off, .len = len, .cap = len,
        .new_bytes = (uint8_t *)buf, .old_size = w->size, .reason = w->reason,
    };
    if (w->j) {
        /* the bytes there now (zeros past EOF, as undo restores them) */
        e.old_bytes = xcalloc(1, len);
        uint64_t in = off >= w->size ? 0 : w->size - off < len ? w->size - off : len;
        int rc = qio_pread(w->q, e.old_bytes, (size_t)in, off);
        if (rc < 0) {
            free(e.old_bytes);
            return rc;
        }
    }
    bool wf;
    int rc = do_entry(w, &e, false, &wf);
    free(e.old_bytes);
    return rc;
}

int wport_truncate(struct wport *w, uint64_t size)
{
    if (w->kind == WPORT_PLAN)
        return size < w->p->size ? -ENOTSUP
                                 : plan_truncate(w->p, w->cls, size, "%s", w->reason);
    if (w->j && size < w->size)
        return -ENOTSUP;   /* the journal keeps no bytes of a cut */
    struct plan_entry e = {
        .op = PLAN_TRUNCATE, .cls = w->cls, .offset = size, .old_size = w->size,
        .reason = w->reason,
    };
    bool wf;
    return do_entry(w, &e, w->kind == WPORT_DIRECT, &wf);
}

int wport_flush(struct wport *w)
{
    return w->kind == WPORT_PLAN ? 0 : qio_flush(w->q);
}

int wport_apply(struct wport *w, const struct plan *p, const struct plan_entry **failed)
{
    *failed = NULL;
    if (w->kind == WPORT_PLAN)
        return -EINVAL;
    int rc;
    for (size_t i = 0; i < p->n; i++) {
        const struct plan_entry *e = &p->v[i];
        if (i && e->cls != p->v[i - 1].cls && (rc = qio_flush(w->q)) < 0)
            return rc;
        bool wf;
        if ((rc = do_entry(w, e, false, &wf)) < 0) {
            if (wf)
                *failed = e;
            return rc;
        }
    }
    return qio_flush(w->q);
}
