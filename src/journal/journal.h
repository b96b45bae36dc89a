/* The repair journal: an SQLite database that holds, before each write is made, the
 * write's offset, old and new bytes and reason, plus the image's identity, so
 * `qimg undo JOURNAL IMAGE` can put the image back byte for byte. Schema (README,
 * "Repair journal"):
 *
 *   meta(key TEXT PRIMARY KEY, value)  schema_version, qimg_version, image, created,
 *                                      pre_size, pre_header_sha256, header_hash_len,
 *                                      status ('applying' | 'complete' | 'failed' |
 *                                      'undone'), post_size, post_header_sha256,
 *                                      post_mtime; failed_seq (a write that failed
 *                                      part-way), undo_next (an undo in progress)
 *   writes(seq INTEGER PRIMARY KEY, op TEXT, class TEXT, offset INTEGER, length INTEGER,
 *          old_size INTEGER, new_size INTEGER, old BLOB, new BLOB, reason TEXT)
 *
 * Every row is committed (synchronous=FULL) before the image write it describes. */
#ifndef QIMG_JOURNAL_JOURNAL_H
#define QIMG_JOURNAL_JOURNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "io/qio.h"
#include "journal/plan.h"

#define JOURNAL_HEADER_HASH_LEN 65536u   /* bytes of the image hashed as its "header" */

typedef struct journal journal_t;

/* Creates path with O_CREAT|O_EXCL|O_NOFOLLOW (refusing an existing file or a symlink)
 * and records the image's identity. 0 or -errno; messages are printed; on failure no
 * file is left behind. */
int journal_create(const char *path, const char *image, qio_t *q, journal_t **out);
/* Commit the next entry (seq 1, 2, ...) before it is applied; its seq to *seq_out. */
int journal_record(journal_t *j, const struct plan_entry *e, uint64_t new_size,
                   uint64_t *seq_out);
/* Entry seq failed part-way: its range may hold any mix of its old and new bytes. */
int journal_mark_failed(journal_t *j, uint64_t seq);
/* Record the image's identity after the repair and mark the journal complete (or failed:
 * the repair stopped on a write error, every write it made is journaled). */
int journal_finish(journal_t *j, qio_t *q, bool complete);
void journal_close(journal_t *j);
/* Close and remove a journal that recorded nothing worth keeping (the file only if it is
 * still the one journal_create made). */
void journal_discard(journal_t *j);
/* The image file's modification time as "sec.nsec": any later write changes it. */
int journal_mtime(qio_t *q, char out[48]);

/* sha256 hex of the first JOURNAL_HEADER_HASH_LEN bytes (or the whole file if shorter). */
int journal_header_hash(qio_t *q, char out[65]);

#endif
