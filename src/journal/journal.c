#include "journal/journal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <stdbool.h>

#include "cmd/commands.h"
#include "util/err.h"
#include "util/sha256.h"
#include "util/xalloc.h"

struct journal {
    sqlite3 *db;
    sqlite3_stmt *ins;
    char *path;
    dev_t dev;      /* the file journal_create made, so only that one is ever unlinked */
    ino_t ino;
    uint64_t next_seq;
};

int journal_header_hash(qio_t *q, char out[65])
{
    uint64_t size;
    int rc = qio_size(q, &size);
    if (rc < 0)
        return rc;
    size_t n = size < JOURNAL_HEADER_HASH_LEN ? (size_t)size : JOURNAL_HEADER_HASH_LEN;
    uint8_t *b = xmalloc(n ? n : 1);
    rc = qio_pread(q, b, n, 0);
    if (rc == 0) {
        struct sha256 c;
        uint8_t d[32];
        sha256_init(&c);
        sha256_update(&c, b, n);
        sha256_final(&c, d);
        sha256_hex(d, out);
    }
    free(b);
    return rc;
}

static int fail(journal_t *j, const char *what)
{
    err_report("journal '%s': %s: %s", j->path, what, sqlite3_errmsg(j->db));
    return -EIO;
}

static int exec(journal_t *j, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(j->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        err_report("journal '%s': %s", j->path, msg ? msg : "error");
        sqlite3_free(msg);
        return -EIO;
    }
    return 0;
}

static int set_meta(journal_t *j, const char *k, const char *v)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(j->db, "INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", -1,
                           &st, NULL) != SQLITE_OK)
        return fail(j, "prepare");
    sqlite3_bind_text(st, 1, k, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, v, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : fail(j, "write meta");
    sqlite3_finalize(st);
    return rc;
}

static int set_meta_u(journal_t *j, const char *k, uint64_t v)
{
    char b[32];
    snprintf(b, sizeof(b), "%" PRIu64, v);
    return set_meta(j, k, b);
}

/* Is path (not followed) still the file we created? */
static bool still_ours(const journal_t *j)
{
    struct stat st;
    return lstat(j->path, &st) == 0 && S_ISREG(st.st_mode) && st.st_dev == j->dev &&
           st.st_ino == j->ino;
}

void journal_discard(journal_t *j)
{
    if (!j)
        return;
    bool ours = still_ours(j);
    char *path = xstrdup(j->path);
    journal_close(j);
    if (ours)
        unlink(path);
    free(path);
}

/* The file is made here with O_CREAT|O_EXCL|O_NOFOLLOW (never an existing file, never
 * through a symlink), then opened by name with SQLITE_OPEN_NOFOLLOW (sqlite opens its own
 * side files with O_NOFOLLOW too) and checked to be the same inode once the schema is on
 * disk. Any failure removes the file again, so a failed creation leaves nothing behind. */
int journal_create(const char *path, const char *image, qio_t *q, journal_t **out)
{
    *out = NULL;
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        struct stat st;
        if (e == EEXIST && lstat(path, &st) == 0 && S_ISLNK(st.st_mode))
            err_report("journal '%s' is a symbolic link; refusing to follow it", path);
        else if (e == EEXIST)
            err_report("journal '%s' already exists; refusing to overwrite it", path);
        else
            err_report("journal '%s': cannot create: %s", path, strerror(e));
        return -e;
    }
    struct stat st;
    int frc = fstat(fd, &st);
    close(fd);
    journal_t *j = xcalloc(1, sizeof(*j));
    j->path = xstrdup(path);
    j->next_seq = 1;
    if (frc < 0) {
        int e = errno;
        err_report("journal '%s': %s", path, strerror(e));
        unlink(path);
        journal_close(j);
        return -e;
    }
    j->dev = st.st_dev;
    j->ino = st.st_ino;
    if (sqlite3_open_v2(path, &j->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW, NULL) !=
        SQLITE_OK) {
        int rc = fail(j, "cannot create");
        journal_discard(j);
        return rc;
    }
    char hash[65], buf[64];
    uint64_t size = 0;
    int rc = exec(j, "PRAGMA synchronous=FULL;"
                     "CREATE TABLE meta(key TEXT PRIMARY KEY, value);"
                     "CREATE TABLE writes(seq INTEGER PRIMARY KEY, op TEXT NOT NULL,"
                     " class TEXT NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL,"
                     " old_size INTEGER NOT NULL, new_size INTEGER NOT NULL, old BLOB, new BLOB,"
                     " reason TEXT);");
    if (rc == 0)
        rc = qio_size(q, &size);
    if (rc == 0)
        rc = journal_header_hash(q, hash);
    snprintf(buf, sizeof(buf), "%lld", (long long)time(NULL));
    if (rc == 0)
        rc = exec(j, "BEGIN");
    if (rc == 0)
        rc = set_meta(j, "schema_version", "1");
    if (rc == 0)
        rc = set_meta(j, "qimg_version", QIMG_VERSION);
    if (rc == 0)
        rc = set_meta(j, "image", image);
    if (rc == 0)
        rc = set_meta(j, "created", buf);
    if (rc == 0)
        rc = set_meta_u(j, "pre_size", size);
    if (rc == 0)
        rc = set_meta(j, "pre_header_sha256", hash);
    if (rc == 0)
        rc = set_meta_u(j, "header_hash_len", JOURNAL_HEADER_HASH_LEN);
    if (rc == 0)
        rc = set_meta(j, "status", "applying");
    if (rc == 0)
        rc = exec(j, "COMMIT");
    if (rc == 0 && !still_ours(j)) {
        err_report("journal '%s' was replaced while it was being created", path);
        rc = -EEXIST;
    }
    if (rc == 0 && sqlite3_prepare_v2(j->db, "INSERT INTO writes(seq, op, class, offset, length,"
                                      " old_size, new_size, old, new, reason) VALUES(?,?,?,?,?,?,"
                                      "?,?,?,?)", -1, &j->ins, NULL) != SQLITE_OK)
        rc = fail(j, "prepare");
    if (rc < 0) {
        if (!still_ours(j)) {   /* not ours to remove */
            journal_close(j);
            return rc;
        }
        journal_discard(j);
        return rc;
    }
    *out = j;
    return 0;
}

int journal_record(journal_t *j, const struct plan_entry *e, uint64_t new_size, uint64_t *seq_out)
{
    sqlite3_stmt *st = j->ins;
    uint64_t seq = j->next_seq;
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, (sqlite3_int64)seq);
    sqlite3_bind_text(st, 2, e->op == PLAN_WRITE ? "write" : "truncate", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, plan_class_name(e->cls), -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)(e->op == PLAN_WRITE ? e->offset : 0));
    sqlite3_bind_int64(st, 5, (sqlite3_int64)(e->op == PLAN_WRITE ? e->len : 0));
    sqlite3_bind_int64(st, 6, (sqlite3_int64)e->old_size);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)new_size);
    if (e->op == PLAN_WRITE) {
        sqlite3_bind_blob64(st, 8, e->old_bytes, e->len, SQLITE_STATIC);
        sqlite3_bind_blob64(st, 9, e->new_bytes, e->len, SQLITE_STATIC);
    } else {
        sqlite3_bind_null(st, 8);
        sqlite3_bind_null(st, 9);
    }
    sqlite3_bind_text(st, 10, e->reason, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : fail(j, "write entry");
    sqlite3_clear_bindings(st);
    if (rc == 0) {
        j->next_seq++;
        if (seq_out)
            *seq_out = seq;
    }
    return rc;
}

int journal_mtime(qio_t *q, char out[48])
{
    struct stat st;
    if (q->fd < 0 || fstat(q->fd, &st) < 0)
        return -errno;
    snprintf(out, 48, "%lld.%09ld", (long long)st.st_mtim.tv_sec, (long)st.st_mtim.tv_nsec);
    return 0;
}

int journal_mark_failed(journal_t *j, uint64_t seq)
{
    return set_meta_u(j, "failed_seq", seq);
}

int journal_finish(journal_t *j, qio_t *q, bool complete)
{
    char mt[48];
    char hash[65];
    uint64_t size = 0;
    int rc = qio_size(q, &size);
    if (rc == 0)
        rc = journal_header_hash(q, hash);
    if (rc == 0)
        rc = exec(j, "BEGIN");
    if (rc == 0)
        rc = set_meta_u(j, "post_size", size);
    if (rc == 0)
        rc = set_meta(j, "post_header_sha256", hash);
    if (rc == 0 && journal_mtime(q, mt) == 0)
        rc = set_meta(j, "post_mtime", mt);
    if (rc == 0)
        rc = set_meta(j, "status", complete ? "complete" : "failed");
    if (rc == 0)
        rc = exec(j, "COMMIT");
    else
        sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

void journal_close(journal_t *j)
{
    if (!j)
        return;
    sqlite3_finalize(j->ins);
    sqlite3_close(j->db);
    free(j->path);
    free(j);
}
