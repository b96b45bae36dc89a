/* What a repair journal says the image held at each step, for `qimg undo`: no I/O of its
 * own, so every rule is unit-testable with byte arrays.
 *
 * Rows are the journal's writes in seq order. S_k is the image after rows 1..k: on every
 * byte some row wrote, the new bytes of the newest row <= k that covers it, or (no such
 * row) the old bytes of the oldest row that covers it, i.e. the byte before the repair.
 * Undoing rows n..k+1 newest first leaves S_k, so an interrupted repair and an
 * interrupted undo are both "S_k, with the rows in flight possibly half-written".
 *
 * Memory: the covered ranges, merged, are laid out once (orig) and once more per state
 * asked for; both bounded by the bytes the journal itself holds. */
#ifndef QIMG_JOURNAL_UNDO_MODEL_H
#define QIMG_JOURNAL_UNDO_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct undo_row {
    bool write;                  /* false: the file was grown (a truncate row) */
    uint64_t off, len;           /* write: file range */
    uint64_t old_size, new_size; /* file size before and after the row */
    uint8_t *old, *new_;         /* write: len bytes each */
};

struct undo_run {                /* a merged range of covered bytes */
    uint64_t a, b;               /* file offsets [a, b) */
    uint64_t pos;                /* where its bytes start in the model's arrays */
};

struct undo_model {
    const struct undo_row *rows;
    size_t n;
    uint64_t pre_size;
    struct undo_run *runs;
    size_t nruns;
    uint64_t bytes;              /* covered bytes in all */
    uint8_t *orig;               /* each covered byte before the repair */
};

/* Reads image bytes (past the end: zeros). 0 or -errno. */
typedef int (*undo_read_fn)(void *opaque, void *buf, size_t n, uint64_t off);

/* Check that the rows agree with each other and with pre_size: sizes chain from pre_size
 * (a write grows the file to its end, a truncate row never shrinks it), each row's old
 * bytes are what the rows before it left there (a row's or, for the row failed_seq that
 * may have been written part-way, either its old or its new bytes), bytes at or past
 * pre_size were zero. 0, or -EINVAL with the reason in why. failed_seq 0: none. */
int undo_model_build(struct undo_model *m, const struct undo_row *rows, size_t n,
                     uint64_t pre_size, uint64_t failed_seq, char *why, size_t whylen);
void undo_model_free(struct undo_model *m);

/* Does the image hold S_k, allowing on the range of each row seq u[i] <= k (in flight)
 * its old bytes, byte for byte? 0 yes, 1 no (*where: first offset that differs), <0 a
 * read error. */
int undo_model_holds(const struct undo_model *m, uint64_t k, const uint64_t *u, size_t nu,
                     undo_read_fn rd, void *opaque, uint64_t *where);

/* The first len bytes of the file as they were before the repair: the image's bytes with
 * every covered byte put back. 0 or -errno. */
int undo_model_original(const struct undo_model *m, uint8_t *buf, size_t len, undo_read_fn rd,
                        void *opaque);

#endif
