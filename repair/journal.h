/* The repair journal: an SQLite database that holds, before each write is made, the
 * write's offset, old and new bytes and reason, plus the image's identity, so
 * `qimg undo JOURNAL IMAGE` can put the image back byte for byte. Schema (README,
 * "Repair journal"):
 *
 *   meta(key TEXT PRIMARY KEY, value)  schema_version, qimg_version, image, created,
 *                                      pre_size, pre_header_sha256, header_hash_len,
 *                                      status ('applying' | 'complete' | 'undone'),
 *                                      post_size, post_header_sha256, post_mtime
 *   writes(seq INTEGER PRIMARY KEY, op TEXT, class TEXT, offset INTEGER, length INTEGER,
 *          old_size INTEGER, new_size INTEGER, old BLOB, new BLOB, reason TEXT)
 *
 * Every row is committed (synchronous=FULL) before the image write it describes. */
#ifndef QIMG_REPAIR_JOURNAL_H
#define QIMG_REPAIR_JOURNAL_H

#include <stdint.h>

#include "io/qio.h"
#include "repair/plan.h"

#define JOURNAL_HEADER_HASH_LEN 65536u   /* bytes of the image hashed as its "header" */

typedef struct journal journal_t;

/* Creates path (refusing an existing file) and records the image's identity. 0 or
 * -errno; messages are printed. */
int journal_create(const char *path, const char *image, qio_t *q, journal_t **out);
/* Commit entry seq (1-based) before it is applied. */
int journal_record(journal_t *j, uint64_t seq, const struct plan_entry *e, uint64_t new_size);
/* Record the image's identity after the repair and mark the journal complete. */
int journal_finish(journal_t *j, qio_t *q);
void journal_close(journal_t *j);
/* The image file's modification time as "sec.nsec": any later write changes it. */
int journal_mtime(qio_t *q, char out[48]);

/* sha256 hex of the first JOURNAL_HEADER_HASH_LEN bytes (or the whole file if shorter). */
int journal_header_hash(qio_t *q, char out[65]);

#endif
