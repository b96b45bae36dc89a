#include "journal/plan.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "util/json.h"
#include "util/xalloc.h"

/* Writes merge into their predecessor only up to this size, so one entry stays small. */
#define MERGE_MAX (64u << 10)

/* --- page overlay -------------------------------------------------------------------
 * The planned content of every 4 KiB page some write touched, in an open-addressing hash
 * keyed by page number. Without it a read would apply every entry of the plan, and a
 * repair making N small writes (each reading its old bytes first) would cost O(N^2). */
#define PG_BITS 12
#define PG_SIZE ((size_t)1 << PG_BITS)

struct plan_pages {
    uint64_t *key;     /* page number + 1; 0 = empty slot */
    uint8_t **data;    /* PG_SIZE bytes each */
    size_t cap, n;     /* cap is a power of two */
};

static size_t pg_slot(const struct plan_pages *t, uint64_t pg)
{
    uint64_t h = (pg + 1) * 0x9E3779B97F4A7C15ull;
    size_t i = (size_t)(h >> 20) & (t->cap - 1);
    while (t->key[i] && t->key[i] != pg + 1)
        i = (i + 1) & (t->cap - 1);
    return i;
}

static uint8_t *pg_find(const struct plan_pages *t, uint64_t pg)
{
    if (!t || !t->n)
        return NULL;
    size_t i = pg_slot(t, pg);
    return t->key[i] ? t->data[i] : NULL;
}

static void pg_grow(struct plan_pages *t)
{
    struct plan_pages o = *t;
    t->cap = o.cap ? o.cap * 2 : 64;
    t->key = xcalloc(t->cap, sizeof(*t->key));
    t->data = xcalloc(t->cap, sizeof(*t->data));
    for (size_t i = 0; i < o.cap; i++)
        if (o.key[i]) {
            size_t j = pg_slot(t, o.key[i] - 1);
            t->key[j] = o.key[i];
            t->data[j] = o.data[i];
        }
    free(o.key);
    free(o.data);
}

/* The base image's bytes of page pg (zeros past its end). */
static int pg_read_base(struct plan *p, uint64_t pg, uint8_t *buf)
{
    uint64_t off = pg << PG_BITS;
    memset(buf, 0, PG_SIZE);
    if (off >= p->base_size)
        return 0;
    size_t in = p->base_size - off < PG_SIZE ? (size_t)(p->base_size - off) : PG_SIZE;
    return qio_pread(p->base, buf, in, off);
}

/* The page's planned bytes, created from the base when no write touched it yet. */
static int pg_get(struct plan *p, uint64_t pg, uint8_t **out)
{
    if (!p->pages)
        p->pages = xcalloc(1, sizeof(*p->pages));
    struct plan_pages *t = p->pages;
    if ((t->n + 1) * 4 > t->cap * 3)
        pg_grow(t);
    size_t i = pg_slot(t, pg);
    if (!t->key[i]) {
        uint8_t *d = xmalloc(PG_SIZE);
        int rc = pg_read_base(p, pg, d);
        if (rc < 0) {
            free(d);
            return rc;
        }
        t->key[i] = pg + 1;
        t->data[i] = d;
        t->n++;
    }
    *out = t->data[i];
    return 0;
}

/* Copy buf (len bytes at off) into the overlay pages. */
static int pg_write(struct plan *p, uint64_t off, const uint8_t *buf, uint64_t len)
{
    while (len) {
        uint64_t pg = off >> PG_BITS;
        size_t in = (size_t)(off & (PG_SIZE - 1));
        size_t k = PG_SIZE - in < len ? PG_SIZE - in : (size_t)len;
        uint8_t *d;
        int rc = pg_get(p, pg, &d);
        if (rc < 0)
            return rc;
        memcpy(d + in, buf, k);
        buf += k;
        off += k;
        len -= k;
    }
    return 0;
}

static void pg_free(struct plan_pages *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->cap; i++)
        free(t->data[i]);
    free(t->key);
    free(t->data);
    free(t);
}

void plan_init(struct plan *p, qio_t *base)
{
    memset(p, 0, sizeof(*p));
    p->base = base;
    if (qio_size(base, &p->base_size) < 0)
        p->base_size = 0;
    p->size = p->base_size;
    p->lo = UINT64_MAX;
}

void plan_free(struct plan *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->v[i].new_bytes);
        free(p->v[i].old_bytes);
        free(p->v[i].reason);
    }
    free(p->v);
    pg_free(p->pages);
    memset(p, 0, sizeof(*p));
}

static void apply_entry(const struct plan_entry *e, uint8_t *buf, size_t n, uint64_t off)
{
    if (e->op != PLAN_WRITE || e->offset >= off + n || e->offset + e->len <= off)
        return;
    uint64_t s = e->offset > off ? e->offset : off;
    uint64_t end = e->offset + e->len < off + n ? e->offset + e->len : off + n;
    memcpy(buf + (s - off), e->new_bytes + (s - e->offset), (size_t)(end - s));
}

int plan_read(struct plan *p, void *buf, size_t n, uint64_t off)
{
    if (!n)
        return 0;
    if (off >= p->base_size) {
        memset(buf, 0, n);
    } else {
        size_t in = p->base_size - off < n ? (size_t)(p->base_size - off) : n;
        int rc = qio_pread(p->base, buf, in, off);
        if (rc < 0)
            return rc;
        memset((uint8_t *)buf + in, 0, n - in);
    }
    if (!p->n || off >= p->hi || off + n <= p->lo || !p->pages)
        return 0;
    uint64_t a = off > p->lo ? off : p->lo, b = off + n < p->hi ? off + n : p->hi;
    for (uint64_t pg = a >> PG_BITS; pg <= (b - 1) >> PG_BITS; pg++) {
        const uint8_t *d = pg_find(p->pages, pg);
        if (!d)
            continue;
        uint64_t s = pg << PG_BITS > off ? pg << PG_BITS : off;
        uint64_t e = (pg + 1) << PG_BITS < off + n ? (pg + 1) << PG_BITS : off + n;
        memcpy((uint8_t *)buf + (s - off), d + (s - (pg << PG_BITS)), (size_t)(e - s));
    }
    return 0;
}

static struct plan_entry *push(struct plan *p)
{
    if (p->n == p->alloc) {
        p->alloc = p->alloc ? p->alloc * 2 : 16;
        p->v = xreallocarray(p->v, p->alloc, sizeof(*p->v));
    }
    struct plan_entry *e = &p->v[p->n++];
    memset(e, 0, sizeof(*e));
    e->old_size = p->size;
    return e;
}

static char *vfmt(const char *fmt, va_list ap)
{
    char tmp[512];
    vsnprintf(tmp, sizeof(tmp), fmt, ap);
    return xstrdup(tmp);
}

static void touch(struct plan *p, uint64_t off, uint64_t len)
{
    if (off < p->lo)
        p->lo = off;
    if (off + len > p->hi)
        p->hi = off + len;
    if (off + len > p->size)
        p->size = off + len;
}

int plan_write(struct plan *p, enum plan_class cls, uint64_t off, const void *buf, size_t len,
               const char *fmt, ...)
{
    if (!len)
        return 0;
    if (off > INT64_MAX || len > INT64_MAX - off)
        return -EINVAL;
    uint8_t *old = xmalloc(len);
    int rc = plan_read(p, old, len, off);
    if (rc < 0) {
        free(old);
        return rc;
    }
    struct plan_entry *last = p->n ? &p->v[p->n - 1] : NULL;
    /* contiguous continuation of the previous write of the same class: one entry */
    if (last && !p->no_merge && last->op == PLAN_WRITE && last->cls == cls &&
        last->offset + last->len == off && last->len + len <= MERGE_MAX &&
        off + len <= p->size) {
        if (last->len + len > last->cap) {
            /* geometric growth: thousands of 2-byte refcount writes merge into one entry
             * in linear time, not by copying the growing buffer each time */
            uint64_t cap = last->cap * 2 > last->len + len ? last->cap * 2 : last->len + len;
            if (cap > MERGE_MAX)
                cap = MERGE_MAX;
            last->new_bytes = xreallocarray(last->new_bytes, (size_t)cap, 1);
            last->old_bytes = xreallocarray(last->old_bytes, (size_t)cap, 1);
            last->cap = cap;
        }
        memcpy(last->new_bytes + last->len, buf, len);
        memcpy(last->old_bytes + last->len, old, len);
        last->len += len;
        free(old);
        va_list ap;
        va_start(ap, fmt);
        char *r = vfmt(fmt, ap);
        va_end(ap);
        size_t rl = strlen(last->reason);
        if (rl < 240) {
            char *j = xasprintf("%s; %s", last->reason, r);
            free(last->reason);
            last->reason = j;
        } else if (rl < 4 || strcmp(last->reason + rl - 3, "...")) {
            char *j = xasprintf("%s; ...", last->reason);
            free(last->reason);
            last->reason = j;
        }
        free(r);
        touch(p, off, len);
        return pg_write(p, off, buf, len);
    }
    p->no_merge = false;
    struct plan_entry *e = push(p);
    e->op = PLAN_WRITE;
    e->cls = cls;
    e->offset = off;
    e->len = e->cap = len;
    e->new_bytes = xmalloc(len);
    memcpy(e->new_bytes, buf, len);
    e->old_bytes = old;
    va_list ap;
    va_start(ap, fmt);
    e->reason = vfmt(fmt, ap);
    va_end(ap);
    touch(p, off, len);
    return pg_write(p, off, buf, len);
}

int plan_truncate(struct plan *p, enum plan_class cls, uint64_t size, const char *fmt, ...)
{
    struct plan_entry *e = push(p);
    e->op = PLAN_TRUNCATE;
    e->cls = cls;
    e->offset = size;
    va_list ap;
    va_start(ap, fmt);
    e->reason = vfmt(fmt, ap);
    va_end(ap);
    /* only growing truncations are planned; a shrink would read back as zeros anyway */
    if (size > p->size)
        p->size = size;
    return 0;
}

int plan_prepend_write(struct plan *p, enum plan_class cls, uint64_t off, const void *buf,
                       size_t len, const char *reason)
{
    push(p);
    memmove(p->v + 1, p->v, (p->n - 1) * sizeof(*p->v));
    struct plan_entry *e = &p->v[0];
    memset(e, 0, sizeof(*e));
    e->op = PLAN_WRITE;
    e->cls = cls;
    e->offset = off;
    e->len = e->cap = len;
    e->old_size = p->base_size;
    e->new_bytes = xmalloc(len);
    memcpy(e->new_bytes, buf, len);
    e->old_bytes = xmalloc(len);
    int rc = qio_pread(p->base, e->old_bytes, len, off);
    e->reason = xstrdup(reason);
    /* later entries' old bytes were taken without this write: patch the overlap */
    for (size_t i = 1; i < p->n; i++) {
        struct plan_entry *x = &p->v[i];
        if (x->op == PLAN_WRITE)
            apply_entry(e, x->old_bytes, (size_t)x->len, x->offset);
    }
    touch(p, off, len);
    if (rc < 0)
        return rc;
    /* the new write lies under every later one: rebuild its pages from the base */
    for (uint64_t pg = off >> PG_BITS; pg <= (off + len - 1) >> PG_BITS; pg++) {
        uint8_t *d;
        if ((rc = pg_get(p, pg, &d)) < 0 || (rc = pg_read_base(p, pg, d)) < 0)
            return rc;
        for (size_t i = 0; i < p->n; i++)
            apply_entry(&p->v[i], d, PG_SIZE, pg << PG_BITS);
    }
    return 0;
}

/* --- overlay qio ------------------------------------------------------------------ */

struct overlay {
    struct qio q;   /* must be first: the qio functions see this */
    struct plan *p;
};

static int ov_pread(qio_t *q, void *buf, size_t n, uint64_t off)
{
    return plan_read(((struct overlay *)q)->p, buf, n, off);
}

static int ov_pwrite(qio_t *q, const void *buf, size_t n, uint64_t off)
{
    (void)q; (void)buf; (void)n; (void)off;
    return -EROFS;   /* fixes go through plan_write, never through the qio */
}

static int ov_size(qio_t *q, uint64_t *out)
{
    *out = ((struct overlay *)q)->p->size;
    return 0;
}

static int ov_truncate(qio_t *q, uint64_t size)
{
    (void)q; (void)size;
    return -EROFS;
}

static int ov_flush(qio_t *q)
{
    (void)q;
    return 0;
}

static int ov_extent(qio_t *q, uint64_t off, bool *is_data, uint64_t *len)
{
    struct plan *p = ((struct overlay *)q)->p;
    *is_data = off < p->size;
    *len = off < p->size ? p->size - off : 0;
    return 0;
}

static int ov_allocated(qio_t *q, uint64_t *out)
{
    *out = ((struct overlay *)q)->p->size;
    return 0;
}

static void ov_close(qio_t *q)
{
    (void)q;
}

static const struct qio_ops overlay_ops = {
    .pread = ov_pread, .pwrite = ov_pwrite, .size = ov_size, .truncate = ov_truncate,
    .flush = ov_flush, .extent = ov_extent, .allocated = ov_allocated, .close = ov_close,
};

qio_t *plan_overlay_qio(struct plan *p)
{
    struct overlay *o = xcalloc(1, sizeof(*o));
    o->q.ops = &overlay_ops;
    o->q.fd = -1;
    o->q.path = xstrdup(p->base->path ? p->base->path : "");
    o->p = p;
    return &o->q;
}

const char *plan_class_name(enum plan_class c)
{
    static const char *const names[] = { "guard", "snapshot", "l2-zero", "grow", "rebuild",
                                         "rebuild-header", "refcount", "copied", "header",
                                         "table" };
    return (unsigned)c < sizeof(names) / sizeof(names[0]) ? names[c] : "?";
}

uint64_t plan_bytes(const struct plan *p)
{
    uint64_t t = 0;
    for (size_t i = 0; i < p->n; i++)
        t += p->v[i].op == PLAN_WRITE ? p->v[i].len : 0;
    return t;
}

void plan_print(const struct plan *p, FILE *out)
{
    fprintf(out, "Repair plan (dry run, nothing was written): %zu write%s, %" PRIu64 " bytes\n",
            p->n, p->n == 1 ? "" : "s", plan_bytes(p));
    for (size_t i = 0; i < p->n; i++) {
        const struct plan_entry *e = &p->v[i];
        if (e->op == PLAN_TRUNCATE)
            fprintf(out, "  %4zu  grow file %" PRIu64 " -> %" PRIu64 " bytes  [%s] %s\n", i + 1,
                    e->old_size, e->offset, plan_class_name(e->cls), e->reason);
        else
            fprintf(out, "  %4zu  offset 0x%" PRIx64 " length %" PRIu64 "  [%s] %s\n", i + 1,
                    e->offset, e->len, plan_class_name(e->cls), e->reason);
    }
    if (p->size != p->base_size)
        fprintf(out, "The image file would grow from %" PRIu64 " to %" PRIu64 " bytes.\n",
                p->base_size, p->size);
}

void plan_add_json(json_t *j, const void *ctx)
{
    const struct plan *p = ctx;
    json_t *a = json_array();
    for (size_t i = 0; i < p->n; i++) {
        const struct plan_entry *e = &p->v[i];
        json_t *w = json_object_ordered(); /* qimg's own: op, offset, length, class, reason */
        json_set(w, "op", json_string(e->op == PLAN_WRITE ? "write" : "truncate"));
        json_set(w, "offset", json_uint(e->offset));
        json_set(w, "length", json_uint(e->op == PLAN_WRITE ? e->len : 0));
        json_set(w, "class", json_string(plan_class_name(e->cls)));
        json_set(w, "reason", json_string(e->reason));
        json_append(a, w);
    }
    json_set(j, "repair-plan", a);
}
