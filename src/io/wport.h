/* The write port: how a command's in-place writes reach an image file, whatever its format
 * (the qcow2 model writes its metadata through it, qcow2/port.h; QED's check -r writes its
 * fixes through it directly). One port per open file, with one of three backends:
 *
 *   direct   writes the file; wport_flush is a real barrier (fdatasync)
 *   journal  records each write (offset, old and new bytes, class, reason) in the SQLite
 *            undo journal (journal/journal.h) and commits the row before making the write,
 *            so `qimg undo JOURNAL IMAGE` can put every byte back
 *   plan     records each write in a plan (journal/plan.h) instead of making it: a dry run
 *            prints the plan; reads through plan_overlay_qio see the planned bytes, so the
 *            code that planned a write reads it back as if it had been made
 *
 * A plan is made real by replaying it through a direct or journaled port (wport_apply):
 * repair plans on a first pass and then applies, the way every --dry-run / --journal
 * command can. Each write carries a label, class and reason (wport_label), which the plan
 * prints and the journal stores (the journal's class column: plan_class_name).
 *
 * Growth: a write past EOF grows the file; wport_truncate grows it explicitly. Shrinking
 * is for the direct backend only (the plan and the journal record growth; undo cuts the
 * file back to its size before the first write). The plan and journal stores live in
 * src/journal/ beside undo, which reads them; repair/ sits above the port and uses it. */
#ifndef QIMG_IO_WPORT_H
#define QIMG_IO_WPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/qio.h"
#include "journal/journal.h"
#include "journal/plan.h"

enum wport_kind { WPORT_DIRECT, WPORT_JOURNAL, WPORT_PLAN };

/* The class of a header write made outside any caller's label (the guard's corrupt bit). */
#define WPORT_CLASS_HEADER PC_HEADER

struct wport {
    enum wport_kind kind;
    qio_t *q;                 /* direct, journal: the file written */
    journal_t *j;             /* journal */
    struct plan *p;           /* plan */
    uint64_t size;            /* direct, journal: file size as the writes left it */
    enum plan_class cls;      /* label of the writes that follow */
    char reason[512];
};

/* 0 or -errno (the file's size cannot be had). */
int wport_init_direct(struct wport *w, qio_t *q);
int wport_init_journal(struct wport *w, qio_t *q, journal_t *j);
void wport_init_plan(struct wport *w, struct plan *p);

/* The class and reason (printf-style) of the writes that follow. */
void wport_label(struct wport *w, enum plan_class cls, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* 0 or -errno. A journal that cannot record the write prints why and returns -EIO before
 * anything is written; a failed or short file write is marked in the journal (its range
 * may hold a mix of old and new bytes). */
int wport_pwrite(struct wport *w, uint64_t off, const void *buf, size_t len);
int wport_truncate(struct wport *w, uint64_t size);
/* Barrier: everything written before is on disk before anything written after (plan: a
 * no-op; a plan is applied with a flush between classes and at the end). */
int wport_flush(struct wport *w);
/* The file's size as the writes so far leave it (plan: with the plan applied). */
uint64_t wport_size(const struct wport *w);

/* Make plan p real through w (direct or journal): every entry in order, a flush between
 * entries of different classes and at the end. 0 or -errno; when the file write of an
 * entry fails, *failed is that entry (else NULL: the journal, which printed its message,
 * or a flush failed). Prints nothing itself. */
int wport_apply(struct wport *w, const struct plan *p, const struct plan_entry **failed);

#endif
