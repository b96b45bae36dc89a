/* The engine of `qimg undo JOURNAL IMAGE` (the command, src/cmd/undo.c, opens and locks
 * the image between the first step and the others, and prints), in three steps, and
 * nothing is written before the last:
 *
 * 1. the journal alone: schema version, status, every row's op, class, offset, length,
 *    sizes and blob lengths in bounds, sizes chained from pre_size, old bytes consistent
 *    with the rows before them (journal/undo_model.h);
 * 2. the journal against the image: the image holds what the repair (or an interrupted
 *    undo) left there, and the old bytes put back give the recorded pre-repair header;
 * 3. the restore: every write's old bytes, newest first, then the pre-repair size. The
 *    progress is committed to the journal (undo_next) before each write, after a flush
 *    of the image, so an interrupted undo is found in a known state and run again.
 *
 * Exit codes (README): 0 restored; 1 the image (cannot be opened, changed since the
 * repair, already restored, I/O error while restoring); 2 the journal (cannot be opened,
 * not a qimg journal, fails validation, cannot record progress); 2 writes nothing. */
#include "journal/undo.h"

#include <errno.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "io/qio.h"
#include "journal/journal.h"
#include "journal/plan.h"
#include "journal/undo_model.h"
#include "util/err.h"
#include "util/sha256.h"
#include "util/xalloc.h"

/* Bounds of a journal row: qcow2 host offsets have 56 bits, and no repair write is larger
 * than a snapshot table (64 MiB); the limit leaves room. */
#define UNDO_MAX_OFFSET (1ull << 56)
#define UNDO_MAX_WRITE (256ull << 20)

enum { UNDO_OK = 0, UNDO_IMAGE = 1, UNDO_JOURNAL = 2 };

struct meta {
    char *status;
    uint64_t pre_size, post_size, failed_seq, undo_next;
    bool has_post, has_failed, has_undo;
    char pre_hash[65], post_hash[65];
    char *post_mtime;
};

struct undo {
    const char *jpath, *image;
    sqlite3 *db;
    struct meta m;
    struct undo_row *rows;
    size_t n;
    struct undo_model model;
    qio_t *q;
};

static int invalid(const struct undo *u, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int invalid(const struct undo *u, const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    err_report("journal '%s' is invalid: %s; nothing was written", u->jpath, why);
    return UNDO_JOURNAL;
}

/* meta value as text (NULL if absent); integers are accepted as their decimal text. */
static int meta_get(struct undo *u, const char *key, char **out)
{
    sqlite3_stmt *st;
    *out = NULL;
    if (sqlite3_prepare_v2(u->db, "SELECT value FROM meta WHERE key = ?", -1, &st, NULL) !=
        SQLITE_OK)
        return invalid(u, "not a qimg repair journal (%s)", sqlite3_errmsg(u->db));
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st), ret = 0;
    if (rc == SQLITE_ROW) {
        int t = sqlite3_column_type(st, 0);
        if (t == SQLITE_TEXT || t == SQLITE_INTEGER)
            *out = xstrdup((const char *)sqlite3_column_text(st, 0));
        else
            ret = invalid(u, "meta '%s' is not text", key);
    } else if (rc != SQLITE_DONE) {
        ret = invalid(u, "cannot read meta '%s': %s", key, sqlite3_errmsg(u->db));
    }
    sqlite3_finalize(st);
    return ret;
}

/* Decimal, no sign, no junk, <= max. */
static bool parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (!s || !*s || strlen(s) > 20)
        return false;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9' || v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
            return false;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *out = v;
    return v <= max;
}

static bool is_sha256_hex(const char *s)
{
    if (!s || strlen(s) != 64)
        return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return false;
    return true;
}

/* A required or optional numeric meta key. */
static int meta_u64(struct undo *u, const char *key, bool required, uint64_t max,
                    uint64_t *out, bool *present)
{
    char *v;
    int rc = meta_get(u, key, &v);
    if (rc)
        return rc;
    if (present)
        *present = v != NULL;
    if (!v) {
        free(v);
        return required ? invalid(u, "meta '%s' is missing", key) : 0;
    }
    if (!parse_u64(v, max, out))
        rc = invalid(u, "meta '%s' = '%.40s' is not a number in [0, %" PRIu64 "]", key, v, max);
    free(v);
    return rc;
}

static int meta_hash(struct undo *u, const char *key, bool required, char out[65], bool *present)
{
    char *v;
    int rc = meta_get(u, key, &v);
    if (rc)
        return rc;
    if (present)
        *present = v != NULL;
    if (!v)
        return required ? invalid(u, "meta '%s' is missing", key) : 0;
    if (!is_sha256_hex(v))
        rc = invalid(u, "meta '%s' is not a sha256 in hex", key);
    else
        memcpy(out, v, 65);
    free(v);
    return rc;
}

static int load_meta(struct undo *u)
{
    struct meta *m = &u->m;
    char *v;
    uint64_t hlen;
    bool has_hash;
    int rc = meta_get(u, "schema_version", &v);
    if (rc)
        return rc;
    if (!v)
        return invalid(u, "not a qimg repair journal (no schema_version)");
    bool ok = !strcmp(v, "1");
    if (!ok)
        rc = invalid(u, "schema_version '%.40s' is not one this qimg knows (1)", v);
    free(v);
    if (rc)
        return rc;
    if ((rc = meta_get(u, "status", &m->status)))
        return rc;
    if (!m->status)
        return invalid(u, "meta 'status' is missing");
    if (strcmp(m->status, "applying") && strcmp(m->status, "complete") &&
        strcmp(m->status, "failed") && strcmp(m->status, "undone"))
        return invalid(u, "unknown status '%.40s'", m->status);
    if ((rc = meta_u64(u, "pre_size", true, UNDO_MAX_OFFSET, &m->pre_size, NULL)) ||
        (rc = meta_hash(u, "pre_header_sha256", true, m->pre_hash, NULL)) ||
        (rc = meta_u64(u, "header_hash_len", true, UINT64_MAX, &hlen, NULL)))
        return rc;
    if (hlen != JOURNAL_HEADER_HASH_LEN)
        return invalid(u, "header_hash_len %" PRIu64 " is not %u", hlen, JOURNAL_HEADER_HASH_LEN);
    if ((rc = meta_u64(u, "post_size", false, UNDO_MAX_OFFSET, &m->post_size, &m->has_post)) ||
        (rc = meta_hash(u, "post_header_sha256", false, m->post_hash, &has_hash)) ||
        (rc = meta_u64(u, "failed_seq", false, UNDO_MAX_OFFSET, &m->failed_seq,
                       &m->has_failed)) ||
        (rc = meta_u64(u, "undo_next", false, UNDO_MAX_OFFSET, &m->undo_next, &m->has_undo)) ||
        (rc = meta_get(u, "post_mtime", &m->post_mtime)))
        return rc;
    bool finished = !strcmp(m->status, "complete") || !strcmp(m->status, "failed");
    if (finished && (!m->has_post || !has_hash))
        return invalid(u, "status '%s' without post_size and post_header_sha256", m->status);
    if (m->post_mtime) {
        size_t i = 0, len = strlen(m->post_mtime);
        while (i < len && m->post_mtime[i] >= '0' && m->post_mtime[i] <= '9')
            i++;
        if (!i || i + 10 != len || m->post_mtime[i] != '.' ||
            strspn(m->post_mtime + i + 1, "0123456789") != 9)
            return invalid(u, "post_mtime '%.40s' is not sec.nsec", m->post_mtime);
    }
    return 0;
}

static int col_u64(sqlite3_stmt *st, int c, uint64_t max, uint64_t *out)
{
    if (sqlite3_column_type(st, c) != SQLITE_INTEGER)
        return -1;
    sqlite3_int64 v = sqlite3_column_int64(st, c);
    if (v < 0 || (uint64_t)v > max)
        return -1;
    *out = (uint64_t)v;
    return 0;
}

static bool known_class(const char *c)
{
    for (int k = PC_GUARD; k <= PC_LAST; k++)
        if (!strcmp(c, plan_class_name((enum plan_class)k)))
            return true;
    return false;
}

static int load_rows(struct undo *u)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(u->db, "SELECT seq, op, class, offset, length, old_size, new_size,"
                           " old, new FROM writes ORDER BY seq", -1, &st, NULL) != SQLITE_OK)
        return invalid(u, "not a qimg repair journal (%s)", sqlite3_errmsg(u->db));
    size_t alloc = 0;
    int rc = 0, s;
    while (rc == 0 && (s = sqlite3_step(st)) == SQLITE_ROW) {
        size_t i = u->n;
        uint64_t seq = 0, off = 0, len = 0;
        const char *op = (const char *)sqlite3_column_text(st, 1);
        const char *cls = (const char *)sqlite3_column_text(st, 2);
        struct undo_row r;
        memset(&r, 0, sizeof(r));
        if (col_u64(st, 0, UINT64_MAX, &seq) < 0 || seq != i + 1) {
            rc = invalid(u, "write %zu is numbered %lld: rows must be numbered 1, 2, ...",
                         i + 1, (long long)sqlite3_column_int64(st, 0));
            break;
        }
        if (!op || (strcmp(op, "write") && strcmp(op, "truncate"))) {
            rc = invalid(u, "write %zu: unknown op '%.40s'", i + 1, op ? op : "(null)");
            break;
        }
        if (!cls || !known_class(cls)) {
            rc = invalid(u, "write %zu: unknown class '%.40s'", i + 1, cls ? cls : "(null)");
            break;
        }
        r.write = !strcmp(op, "write");
        if (col_u64(st, 3, UNDO_MAX_OFFSET, &off) < 0 ||
            col_u64(st, 4, UNDO_MAX_WRITE, &len) < 0 || off + len > UNDO_MAX_OFFSET ||
            col_u64(st, 5, UNDO_MAX_OFFSET, &r.old_size) < 0 ||
            col_u64(st, 6, UNDO_MAX_OFFSET, &r.new_size) < 0) {
            rc = invalid(u, "write %zu: offset, length or sizes out of range (offset and sizes "
                         "< 2^56, length <= %llu)", i + 1, UNDO_MAX_WRITE);
            break;
        }
        if (r.write) {
            if (!len || sqlite3_column_type(st, 7) != SQLITE_BLOB ||
                sqlite3_column_type(st, 8) != SQLITE_BLOB ||
                (uint64_t)sqlite3_column_bytes(st, 7) != len ||
                (uint64_t)sqlite3_column_bytes(st, 8) != len) {
                rc = invalid(u, "write %zu: old and new must be blobs of its length %" PRIu64,
                             i + 1, len);
                break;
            }
            r.off = off;
            r.len = len;
            r.old = xmalloc((size_t)len);
            r.new_ = xmalloc((size_t)len);
            memcpy(r.old, sqlite3_column_blob(st, 7), (size_t)len);
            memcpy(r.new_, sqlite3_column_blob(st, 8), (size_t)len);
        } else if (off || len || sqlite3_column_type(st, 7) != SQLITE_NULL ||
                   sqlite3_column_type(st, 8) != SQLITE_NULL) {
            rc = invalid(u, "write %zu: a truncate row has offset 0, length 0, no bytes", i + 1);
            break;
        }
        if (u->n == alloc) {
            alloc = alloc ? alloc * 2 : 16;
            u->rows = xreallocarray(u->rows, alloc, sizeof(*u->rows));
        }
        u->rows[u->n++] = r;
    }
    if (rc == 0 && s != SQLITE_DONE)
        rc = invalid(u, "cannot read its writes: %s", sqlite3_errmsg(u->db));
    sqlite3_finalize(st);
    return rc;
}

/* Step 1: everything the journal says, before the image is looked at. */
static int validate_journal(struct undo *u)
{
    sqlite3_stmt *st;
    int rc;
    if (sqlite3_prepare_v2(u->db, "PRAGMA quick_check", -1, &st, NULL) != SQLITE_OK)
        return invalid(u, "not an SQLite database (%s)", sqlite3_errmsg(u->db));
    rc = sqlite3_step(st);
    const char *res = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
    if (!res || strcmp(res, "ok")) {
        rc = invalid(u, "damaged database (%.80s)", res ? res : sqlite3_errmsg(u->db));
        sqlite3_finalize(st);
        return rc;
    }
    sqlite3_finalize(st);
    if ((rc = load_meta(u)) || (rc = load_rows(u)))
        return rc;
    struct meta *m = &u->m;
    if (m->has_failed && (m->failed_seq < 1 || m->failed_seq > u->n))
        return invalid(u, "failed_seq %" PRIu64 " is not one of its %zu writes", m->failed_seq,
                       u->n);
    if (m->has_undo && m->undo_next > u->n)
        return invalid(u, "undo_next %" PRIu64 " is not one of its %zu writes", m->undo_next,
                       u->n);
    uint64_t last = u->n ? u->rows[u->n - 1].new_size : m->pre_size;
    if (m->has_post && m->post_size != last)
        return invalid(u, "post_size %" PRIu64 " is not the size %" PRIu64 " its writes leave",
                       m->post_size, last);
    char why[200];
    if (undo_model_build(&u->model, u->rows, u->n, m->pre_size,
                         m->has_failed ? m->failed_seq : 0, why, sizeof(why)) < 0)
        return invalid(u, "%s", why);
    return 0;
}

static int read_image(void *opaque, void *buf, size_t n, uint64_t off)
{
    return qio_pread(opaque, buf, n, off);
}

static int changed(const struct undo *u, const char *what)
{
    err_report("'%s' has changed since the repair recorded in '%s' (%s); refusing to undo it",
               u->image, u->jpath, what);
    return UNDO_IMAGE;
}

/* Step 2: the image holds what the journal says the repair (or this undo) left. */
static int validate_image(struct undo *u)
{
    struct meta *m = &u->m;
    uint64_t size, where;
    int rc = qio_size(u->q, &size);
    if (rc < 0) {
        err_report("Could not read '%s': %s", u->image, strerror(-rc));
        return UNDO_IMAGE;
    }
    uint64_t k = u->n, un[2];
    size_t nu = 0;
    bool finished = !strcmp(m->status, "complete") || !strcmp(m->status, "failed");
    if (m->has_failed)
        un[nu++] = m->failed_seq;
    if (m->has_undo) {
        /* rows past undo_next are durably undone, undo_next itself may be half-way */
        k = m->undo_next;
        un[nu++] = k;
    } else if (!finished) {
        un[nu++] = u->n;   /* the repair stopped with its last journaled write in flight */
    }
    if (finished && !m->has_undo) {
        char hash[65], mt[48];
        if (size != m->post_size)
            return changed(u, "size");
        /* an in-place guest write touches no journaled byte: the mtime shows it */
        if (m->post_mtime && (journal_mtime(u->q, mt) < 0 || strcmp(mt, m->post_mtime)))
            return changed(u, "modification time");
        if (journal_header_hash(u->q, hash) < 0 || strcmp(hash, m->post_hash))
            return changed(u, "header");
    } else {
        uint64_t hi = u->n ? u->rows[u->n - 1].new_size : m->pre_size;
        if (size < m->pre_size || size > hi)
            return changed(u, "size");
    }
    rc = undo_model_holds(&u->model, k, un, nu, read_image, u->q, &where);
    if (rc < 0) {
        err_report("Could not read '%s': %s", u->image, strerror(-rc));
        return UNDO_IMAGE;
    }
    if (rc) {
        char what[64];
        snprintf(what, sizeof(what), "byte at 0x%" PRIx64, where);
        return changed(u, what);
    }
    /* the old bytes must give back the header the journal recorded before the repair */
    uint64_t hl = m->pre_size < JOURNAL_HEADER_HASH_LEN ? m->pre_size : JOURNAL_HEADER_HASH_LEN;
    uint8_t *h = xmalloc(JOURNAL_HEADER_HASH_LEN);
    rc = undo_model_original(&u->model, h, (size_t)hl, read_image, u->q);
    if (rc == 0) {
        struct sha256 c;
        uint8_t d[32];
        char hex[65];
        sha256_init(&c);
        sha256_update(&c, h, (size_t)hl);
        sha256_final(&c, d);
        sha256_hex(d, hex);
        rc = strcmp(hex, m->pre_hash) ? 1 : 0;
    }
    free(h);
    if (rc < 0) {
        err_report("Could not read '%s': %s", u->image, strerror(-rc));
        return UNDO_IMAGE;
    }
    if (rc)
        return invalid(u, "its old bytes do not give back the pre-repair header "
                       "(pre_header_sha256)");
    return 0;
}

static int set_progress(struct undo *u, const char *sql, uint64_t v)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(u->db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)v);
        rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
        sqlite3_finalize(st);
    }
    return rc == SQLITE_OK ? 0 : -1;
}

/* Commit "rows after seq are undone" (autocommit: durable before the write it precedes). */
static int record_next(struct undo *u, uint64_t seq)
{
    return set_progress(u, "INSERT OR REPLACE INTO meta(key, value) VALUES('undo_next', "
                        "CAST(? AS TEXT))", seq);
}

static int io_error(const struct undo *u, const char *what, int rc)
{
    err_report("Could not %s '%s': %s; run undo again to complete it", what, u->image,
               strerror(-rc));
    return UNDO_IMAGE;
}

/* Write back the part of r's range that does not hold its old bytes already (a write
 * that failed part-way, or was undone before an interruption, needs less or nothing: on
 * a full disk, rewriting bytes into a hole could fail again). 1 written, 0 nothing. */
static int put_back(struct undo *u, const struct undo_row *r)
{
    uint8_t *cur = xmalloc((size_t)r->len);
    int rc = qio_pread(u->q, cur, (size_t)r->len, r->off);
    if (rc == 0) {
        uint64_t a = 0, b = r->len;
        while (a < b && cur[a] == r->old[a])
            a++;
        while (b > a && cur[b - 1] == r->old[b - 1])
            b--;
        if (a < b)
            rc = qio_pwrite(u->q, r->old + a, (size_t)(b - a), r->off + a);
        rc = rc < 0 ? rc : a < b;
    }
    free(cur);
    return rc;
}

/* Step 3: the restore. */
static int restore(struct undo *u)
{
    struct meta *m = &u->m;
    uint64_t start = m->has_undo ? m->undo_next : u->n;
    int rc;
    bool dirty = false;
    for (uint64_t seq = start; seq >= 1; seq--) {
        const struct undo_row *r = &u->rows[seq - 1];
        if (!r->write)
            continue;
        if (dirty && (rc = qio_flush(u->q)) < 0)
            return io_error(u, "flush", rc);
        if (record_next(u, seq) < 0) {
            err_report("journal '%s': cannot record the undo's progress: %s%s", u->jpath,
                       sqlite3_errmsg(u->db), dirty ? "" : "; nothing was written");
            return dirty ? UNDO_IMAGE : UNDO_JOURNAL;
        }
        if ((rc = put_back(u, r)) < 0)
            return io_error(u, "write", rc);
        dirty |= rc > 0;
    }
    if ((rc = qio_flush(u->q)) < 0)
        return io_error(u, "flush", rc);
    if (record_next(u, 0) < 0) {
        err_report("journal '%s': cannot record the undo's progress: %s", u->jpath,
                   sqlite3_errmsg(u->db));
        return UNDO_IMAGE;
    }
    uint64_t size;
    if ((rc = qio_size(u->q, &size)) < 0)
        return io_error(u, "read", rc);
    if (size != m->pre_size && (rc = qio_truncate(u->q, m->pre_size)) < 0)
        return io_error(u, "truncate", rc);
    if ((rc = qio_flush(u->q)) < 0)
        return io_error(u, "flush", rc);
    char hash[65];
    if (journal_header_hash(u->q, hash) < 0 || strcmp(hash, m->pre_hash)) {
        err_report("'%s' was restored from '%s', but its header does not match the recorded "
                   "pre-repair header", u->image, u->jpath);
        return UNDO_IMAGE;
    }
    if (sqlite3_exec(u->db, "BEGIN; INSERT OR REPLACE INTO meta(key, value) VALUES('status', "
                     "'undone'); DELETE FROM meta WHERE key = 'undo_next'; COMMIT", NULL, NULL,
                     NULL) != SQLITE_OK) {
        err_report("journal '%s': '%s' is restored, but the journal cannot be marked undone: "
                   "%s", u->jpath, u->image, sqlite3_errmsg(u->db));
        sqlite3_exec(u->db, "ROLLBACK", NULL, NULL, NULL);
        return UNDO_IMAGE;
    }
    return 0;
}

int undo_open(const char *journal, const char *image, struct undo **out)
{
    struct undo *u = xcalloc(1, sizeof(*u));
    u->jpath = journal;
    u->image = image;
    *out = NULL;
    int ret;
    if (sqlite3_open_v2(journal, &u->db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        err_report("Could not open journal '%s': %s", journal,
                   u->db ? sqlite3_errmsg(u->db) : "out of memory");
        ret = UNDO_JOURNAL;
        goto fail;
    }
    sqlite3_exec(u->db, "PRAGMA synchronous=FULL", NULL, NULL, NULL);
    if ((ret = validate_journal(u)))
        goto fail;
    if (!strcmp(u->m.status, "undone")) {
        err_report("the repair recorded in '%s' has already been undone", journal);
        ret = UNDO_IMAGE;
        goto fail;
    }
    *out = u;
    return 0;
fail:
    undo_close(u);
    return ret;
}

int undo_restore(struct undo *u, qio_t *q)
{
    u->q = q;
    int ret = validate_image(u);
    if (!ret)
        ret = restore(u);
    u->q = NULL;
    return ret;
}

size_t undo_writes(const struct undo *u)
{
    return u->n;
}

void undo_close(struct undo *u)
{
    if (!u)
        return;
    undo_model_free(&u->model);
    for (size_t i = 0; i < u->n; i++) {
        free(u->rows[i].old);
        free(u->rows[i].new_);
    }
    free(u->rows);
    free(u->m.status);
    free(u->m.post_mtime);
    sqlite3_close(u->db);
    free(u);
}
