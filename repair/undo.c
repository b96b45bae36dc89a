/* `qimg undo JOURNAL IMAGE`: verify the image still holds what the repair wrote, then
 * write back every journaled write's old bytes, newest first, and truncate to the
 * pre-repair size. Replaying all before-images in reverse restores every byte to the
 * value of its first write's old bytes, i.e. the original, however far the repair got. */
#include "repair/undo.h"

#include <errno.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "io/lock.h"
#include "io/qio.h"
#include "repair/journal.h"
#include "util/err.h"
#include "util/xalloc.h"

struct row {
    bool write;
    uint64_t off, len;
    uint8_t *old, *new_;
};

struct span { uint64_t a, b; };

struct claimed {
    struct span *v;
    size_t n, alloc;
};

/* Parts of [a, b) not yet claimed go to cb; then [a, b) is claimed. */
static int walk_unclaimed(struct claimed *c, uint64_t a, uint64_t b,
                          int (*cb)(void *, uint64_t, uint64_t), void *op)
{
    uint64_t pos = a;
    int rc = 0;
    for (size_t i = 0; i < c->n && pos < b && rc == 0; i++) {
        if (c->v[i].b <= pos || c->v[i].a >= b)
            continue;
        if (c->v[i].a > pos)
            rc = cb(op, pos, c->v[i].a);
        if (c->v[i].b > pos)
            pos = c->v[i].b;
    }
    if (rc == 0 && pos < b)
        rc = cb(op, pos, b);
    /* insert, keeping spans sorted and merged */
    if (c->n == c->alloc) {
        c->alloc = c->alloc ? c->alloc * 2 : 16;
        c->v = xreallocarray(c->v, c->alloc, sizeof(*c->v));
    }
    size_t k = 0;
    while (k < c->n && c->v[k].b < a)
        k++;
    size_t e = k;
    uint64_t na = a, nb = b;
    while (e < c->n && c->v[e].a <= b) {
        na = c->v[e].a < na ? c->v[e].a : na;
        nb = c->v[e].b > nb ? c->v[e].b : nb;
        e++;
    }
    memmove(c->v + k + 1, c->v + e, (c->n - e) * sizeof(*c->v));
    c->n = c->n - (e - k) + 1;
    c->v[k].a = na;
    c->v[k].b = nb;
    return rc;
}

struct cmp_op {
    qio_t *q;
    const struct row *r;
    const uint8_t *want;
};

static int cmp_range(void *opaque, uint64_t a, uint64_t b)
{
    struct cmp_op *o = opaque;
    uint8_t *buf = xmalloc((size_t)(b - a));
    int rc = qio_pread(o->q, buf, (size_t)(b - a), a);
    if (rc == 0 && memcmp(buf, o->want + (a - o->r->off), (size_t)(b - a)))
        rc = 1;
    free(buf);
    return rc;
}

/* Does the image hold the state after rows [0, k) (the last with its old bytes when
 * last_undone)? 0 yes, 1 no, <0 error. */
static int holds_state(qio_t *q, const struct row *rows, size_t k, bool last_undone)
{
    struct claimed c = { NULL, 0, 0 };
    int rc = 0;
    for (size_t i = k; i-- > 0 && rc == 0;) {
        if (!rows[i].write)
            continue;
        struct cmp_op o = { q, &rows[i], (last_undone && i == k - 1) ? rows[i].old : rows[i].new_ };
        rc = walk_unclaimed(&c, rows[i].off, rows[i].off + rows[i].len, cmp_range, &o);
    }
    free(c.v);
    return rc;
}

static char *meta(sqlite3 *db, const char *key)
{
    sqlite3_stmt *st;
    char *v = NULL;
    if (sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = ?", -1, &st, NULL) != SQLITE_OK)
        return NULL;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
        v = xstrdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return v;
}

static int load_rows(sqlite3 *db, struct row **out, size_t *n)
{
    sqlite3_stmt *st;
    *out = NULL;
    *n = 0;
    if (sqlite3_prepare_v2(db, "SELECT op, offset, length, old, new FROM writes ORDER BY seq",
                           -1, &st, NULL) != SQLITE_OK)
        return -EINVAL;
    size_t alloc = 0;
    int rc = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (*n == alloc) {
            alloc = alloc ? alloc * 2 : 16;
            *out = xreallocarray(*out, alloc, sizeof(**out));
        }
        struct row *r = &(*out)[(*n)++];
        memset(r, 0, sizeof(*r));
        r->write = !strcmp((const char *)sqlite3_column_text(st, 0), "write");
        sqlite3_int64 off = sqlite3_column_int64(st, 1), len = sqlite3_column_int64(st, 2);
        if (!r->write)
            continue;
        if (off < 0 || len <= 0 || sqlite3_column_bytes(st, 3) != len ||
            sqlite3_column_bytes(st, 4) != len) {
            rc = -EINVAL;   /* a journal we did not write, or a damaged one */
            break;
        }
        r->off = (uint64_t)off;
        r->len = (uint64_t)len;
        r->old = xmalloc((size_t)len);
        r->new_ = xmalloc((size_t)len);
        memcpy(r->old, sqlite3_column_blob(st, 3), (size_t)len);
        memcpy(r->new_, sqlite3_column_blob(st, 4), (size_t)len);
    }
    sqlite3_finalize(st);
    return rc;
}

int repair_undo(const char *journal, const char *image)
{
    sqlite3 *db = NULL;
    struct row *rows = NULL;
    size_t n = 0;
    qio_t *q = NULL;
    char *status = NULL, *pre_size = NULL, *pre_hash = NULL, *post_size = NULL,
         *post_hash = NULL, *post_mtime = NULL;
    int ret = 1, rc;
    if (sqlite3_open_v2(journal, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        err_report("Could not open journal '%s': %s", journal, db ? sqlite3_errmsg(db) : "");
        goto out;
    }
    status = meta(db, "status");
    pre_size = meta(db, "pre_size");
    pre_hash = meta(db, "pre_header_sha256");
    post_size = meta(db, "post_size");
    post_hash = meta(db, "post_header_sha256");
    post_mtime = meta(db, "post_mtime");
    if (!status || !pre_size || !pre_hash || load_rows(db, &rows, &n) < 0) {
        err_report("'%s' is not a qimg repair journal (or it is damaged)", journal);
        goto out;
    }
    if (!strcmp(status, "undone")) {
        err_report("the repair recorded in '%s' has already been undone", journal);
        goto out;
    }
    if ((rc = qio_open_file(image, QIO_RDWR, &q)) < 0) {
        err_report("Could not open '%s': %s", image, strerror(-rc));
        goto out;
    }
    const char *perm;
    if ((rc = qio_lock_for_repair(q, &perm)) < 0) {
        err_report("Could not open '%s': Failed to get \"%s\" lock\nIs another process using "
                   "the image [%s]?", image, perm, image);
        goto out;
    }
    /* the image must hold exactly what the repair left (or, after a crash, what it had
     * written so far): anything else means it changed since */
    bool same;
    if (!strcmp(status, "complete")) {
        char hash[65], mt[48];
        uint64_t size = 0;
        /* an in-place guest write touches no journaled byte: the mtime shows it */
        same = (!post_mtime || (journal_mtime(q, mt) == 0 && !strcmp(mt, post_mtime))) &&
               post_size && post_hash && qio_size(q, &size) == 0 &&
               size == strtoull(post_size, NULL, 10) && journal_header_hash(q, hash) == 0 &&
               !strcmp(hash, post_hash) && holds_state(q, rows, n, false) == 0;
    } else {
        same = holds_state(q, rows, n, false) == 0 || (n && holds_state(q, rows, n, true) == 0);
    }
    if (!same) {
        err_report("'%s' has changed since the repair recorded in '%s'; refusing to undo it",
                   image, journal);
        goto out;
    }
    for (size_t i = n; i-- > 0;) {
        if (rows[i].write && (rc = qio_pwrite(q, rows[i].old, (size_t)rows[i].len, rows[i].off)) < 0) {
            err_report("Could not write '%s': %s", image, strerror(-rc));
            goto out;
        }
    }
    uint64_t size = 0, want = strtoull(pre_size, NULL, 10);
    if (qio_size(q, &size) == 0 && size != want && (rc = qio_truncate(q, want)) < 0) {
        err_report("Could not truncate '%s': %s", image, strerror(-rc));
        goto out;
    }
    if ((rc = qio_flush(q)) < 0) {
        err_report("Could not flush '%s': %s", image, strerror(-rc));
        goto out;
    }
    char hash[65];
    if (journal_header_hash(q, hash) < 0 || strcmp(hash, pre_hash)) {
        err_report("'%s' was restored from '%s', but its header does not match the recorded "
                   "pre-repair header", image, journal);
        goto out;
    }
    sqlite3_exec(db, "INSERT OR REPLACE INTO meta(key, value) VALUES('status', 'undone')",
                 NULL, NULL, NULL);
    printf("Restored '%s' to its state before the repair (%zu write%s undone).\n", image, n,
           n == 1 ? "" : "s");
    ret = 0;
out:
    for (size_t i = 0; i < n; i++) {
        free(rows[i].old);
        free(rows[i].new_);
    }
    free(rows);
    free(status);
    free(pre_size);
    free(pre_hash);
    free(post_size);
    free(post_hash);
    free(post_mtime);
    if (q)
        qio_close(q);
    sqlite3_close(db);
    return ret;
}
