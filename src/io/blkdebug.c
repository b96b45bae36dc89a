/* blkdebug's rules (qemu's blkdebug_debug_event / process_rule / rule_check), on a wrapped
 * file or, above the format, on the image (block/image.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/blkdebug.h"
#include "util/xalloc.h"

static const char *const event_names[BLKDBG_N_EVENTS] = {
    "read_aio", "l1_update", "empty_image_prepare", "reftable_update", "refblock_alloc",
    "cluster_free", "write_aio", "none",
};

static const char *const iotype_names[BLKDBG_IO_N] = {
    "read", "write", "write-zeroes", "discard", "flush", "block-status",
};

#define DEFAULT_IOTYPES                                                                    \
    ((1u << BLKDBG_IO_READ) | (1u << BLKDBG_IO_WRITE) | (1u << BLKDBG_IO_WRITE_ZEROES) |   \
     (1u << BLKDBG_IO_DISCARD) | (1u << BLKDBG_IO_FLUSH))

int blkdebug_rule_start(struct blkdebug_rules *r, bool set_state)
{
    r->v = xreallocarray(r->v, r->n + 1, sizeof(*r->v));
    struct blkdebug_rule *u = &r->v[r->n++];
    memset(u, 0, sizeof(*u));
    u->event = BLKDBG_N_EVENTS; /* none yet */
    u->error = EIO;
    u->sector = -1;
    u->iotypes = DEFAULT_IOTYPES;
    u->set_state = set_state;
    return 0;
}

static int number(const char *v, int64_t *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || errno)
        return -1;
    *out = x;
    return 0;
}

static int boolean(const char *v, bool *out)
{
    if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "yes"))
        *out = true;
    else if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "no"))
        *out = false;
    else
        return -1;
    return 0;
}

int blkdebug_rule_set(struct blkdebug_rules *r, const char *key, const char *val,
                      char **errmsg)
{
    struct blkdebug_rule *u = &r->v[r->n - 1];
    int64_t x = 0;
    int bad = 0;
    if (!strcmp(key, "event")) {
        u->event = BLKDBG_N_EVENTS;
        for (int i = 0; i < BLKDBG_N_EVENTS; i++)
            if (!strcmp(val, event_names[i]))
                u->event = (enum blkdebug_event)i;
        if (u->event == BLKDBG_N_EVENTS) {
            /* an event no qimg driver announces: the rule would never act; the opener
             * refuses it where guest I/O could happen (blkdebug_rules_check) */
            u->event = BLKDBG_NEVER;
            if (!r->unsupported)
                r->unsupported = xstrdup(val);
        }
        return 0;
    }
    if (!strcmp(key, "iotype") && !u->set_state) {
        for (int i = 0; i < BLKDBG_IO_N; i++)
            if (!strcmp(val, iotype_names[i])) {
                u->iotypes = 1u << i;
                return 0;
            }
        *errmsg = xasprintf("invalid parameter value: %s", val); /* qapi_enum_parse */
        return -1;
    }
    if (!strcmp(key, "state"))
        bad = number(val, &x) < 0 || (u->state = (int)x, 0);
    else if (!strcmp(key, "new_state") && u->set_state)
        bad = number(val, &x) < 0 || (u->new_state = (int)x, 0);
    else if (!strcmp(key, "errno") && !u->set_state)
        bad = number(val, &x) < 0 || x <= 0 || x > 4095 || (u->error = (int)x, 0);
    else if (!strcmp(key, "sector") && !u->set_state)
        bad = number(val, &x) < 0 || (u->sector = x, 0);
    else if (!strcmp(key, "once") && !u->set_state)
        bad = boolean(val, &u->once);
    else if (!strcmp(key, "immediately") && !u->set_state) {
        bool b;
        bad = boolean(val, &b); /* only when the error comes: no difference here */
    } else {
        *errmsg = xasprintf("blkdebug option '%s' is not supported by qimg", key);
        return -1;
    }
    if (bad) {
        *errmsg = xasprintf("Parameter '%s' expects a number", key);
        return -1;
    }
    return 0;
}

int blkdebug_rule_done(struct blkdebug_rules *r, char **errmsg)
{
    if (r->v[r->n - 1].event == BLKDBG_N_EVENTS) {
        *errmsg = xstrdup("Parameter 'event' is missing");
        return -1;
    }
    return 0;
}

void blkdebug_rules_free(struct blkdebug_rules *r)
{
    free(r->v);
    free(r->unsupported);
    memset(r, 0, sizeof(*r));
}

int blkdebug_read_config(const char *path, struct blkdebug_rules *r, char **errmsg)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        *errmsg = xasprintf("Could not read blkdebug config file: %s", strerror(errno));
        return -1;
    }
    char line[1024];
    bool in_rule = false;
    int ret = 0;
    while (ret == 0 && fgets(line, sizeof(line), f)) {
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        p[strcspn(p, "\r\n")] = '\0';
        if (!*p || *p == '#')
            continue;
        if (*p == '[') {
            if (in_rule && blkdebug_rule_done(r, errmsg) < 0) {
                ret = -1;
                break;
            }
            in_rule = true;
            if (!strncmp(p, "[inject-error]", 14)) {
                blkdebug_rule_start(r, false);
            } else if (!strncmp(p, "[set-state]", 11)) {
                blkdebug_rule_start(r, true);
            } else {
                *errmsg = xasprintf("blkdebug config section %s is not supported by qimg", p);
                ret = -1;
            }
            continue;
        }
        char *eq = strchr(p, '=');
        if (!in_rule || !eq) {
            *errmsg = xstrdup("Could not read blkdebug config file: Invalid argument");
            ret = -1;
            break;
        }
        char *k = p, *v = eq + 1, *ke = eq;
        while (ke > k && (ke[-1] == ' ' || ke[-1] == '\t'))
            ke--;
        *ke = '\0';
        while (*v == ' ' || *v == '\t')
            v++;
        size_t vl = strlen(v);
        while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
            v[--vl] = '\0';
        if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') {
            v[vl - 1] = '\0';
            v++;
        }
        if (blkdebug_rule_set(r, k, v, errmsg) < 0)
            ret = -1;
    }
    if (ret == 0 && in_rule && blkdebug_rule_done(r, errmsg) < 0)
        ret = -1;
    fclose(f);
    return ret;
}

/* ---- the rule engine ---- */

void blkdebug_state_init(struct blkdebug_state *b, struct blkdebug_rules *r)
{
    b->rules = *r;
    memset(r, 0, sizeof(*r));
    b->state = 1;
    b->active = xcalloc(b->rules.n + 1, sizeof(size_t));
    b->n_active = 0;
    blkdebug_state_event(b, BLKDBG_NONE);
}

void blkdebug_state_free(struct blkdebug_state *b)
{
    blkdebug_rules_free(&b->rules);
    free(b->active);
    b->active = NULL;
    b->n_active = 0;
}

int blkdebug_state_check(struct blkdebug_state *b, uint64_t off, uint64_t n,
                         enum blkdebug_iotype io)
{
    for (size_t i = 0; i < b->n_active; i++) {
        struct blkdebug_rule *u = &b->rules.v[b->active[i]];
        if (!(u->iotypes & (1u << io)))
            continue;
        if (u->sector >= 0) {
            uint64_t s = (uint64_t)u->sector * 512;
            if (n == 0 || s < off || s - off >= n)
                continue;
        }
        int e = u->error;
        if (u->once) {
            memmove(b->active + i, b->active + i + 1, (b->n_active - i - 1) * sizeof(size_t));
            b->n_active--;
        }
        return -e;
    }
    return 0;
}

void blkdebug_state_event(struct blkdebug_state *b, int ev)
{
    int new_state = b->state;
    bool injected = false;
    for (size_t i = 0; i < b->rules.n; i++) {
        struct blkdebug_rule *u = &b->rules.v[i];
        if ((int)u->event != ev || (u->state && u->state != b->state))
            continue;
        if (u->set_state) {
            new_state = u->new_state;
            continue;
        }
        if (!injected) { /* qemu: the rules armed by an earlier event are dropped */
            b->n_active = 0;
            injected = true;
        }
        memmove(b->active + 1, b->active, b->n_active * sizeof(size_t));
        b->active[0] = i;
        b->n_active++;
    }
    b->state = new_state;
}

/* ---- the wrapped file ---- */

struct bd {
    qio_t q;                 /* first: the qio handed out */
    qio_t *inner;
    struct blkdebug_state st;
};

static int check(struct bd *b, uint64_t off, uint64_t n, enum blkdebug_iotype io)
{
    return blkdebug_state_check(&b->st, off, n, io);
}

static int bd_pread(qio_t *q, void *buf, size_t n, uint64_t off)
{
    struct bd *b = (struct bd *)q;
    int r = check(b, off, n, BLKDBG_IO_READ);
    return r < 0 ? r : qio_pread(b->inner, buf, n, off);
}

static int bd_pwrite(qio_t *q, const void *buf, size_t n, uint64_t off)
{
    struct bd *b = (struct bd *)q;
    int r = check(b, off, n, BLKDBG_IO_WRITE);
    return r < 0 ? r : qio_pwrite(b->inner, buf, n, off);
}

static int bd_size(qio_t *q, uint64_t *out)
{
    return qio_size(((struct bd *)q)->inner, out);
}

static int bd_truncate(qio_t *q, uint64_t size)
{
    return qio_truncate(((struct bd *)q)->inner, size);
}

static int bd_flush(qio_t *q)
{
    struct bd *b = (struct bd *)q;
    int r = check(b, 0, 0, BLKDBG_IO_FLUSH);
    return r < 0 ? r : qio_flush(b->inner);
}

static int bd_extent(qio_t *q, uint64_t off, bool *is_data, uint64_t *len)
{
    return qio_extent(((struct bd *)q)->inner, off, is_data, len);
}

static int bd_allocated(qio_t *q, uint64_t *out)
{
    (void)q, (void)out;
    return -ENOTSUP; /* blkdebug has no bdrv_get_allocated_file_size: "unavailable" */
}

static void bd_event(qio_t *q, int ev)
{
    blkdebug_state_event(&((struct bd *)q)->st, ev);
}

static void bd_close(qio_t *q)
{
    struct bd *b = (struct bd *)q;
    qio_close(b->inner);
    blkdebug_state_free(&b->st); /* qio_close frees the path and b itself */
}

static const struct qio_ops bd_ops = {
    .pread = bd_pread,
    .pwrite = bd_pwrite,
    .size = bd_size,
    .truncate = bd_truncate,
    .flush = bd_flush,
    .extent = bd_extent,
    .allocated = bd_allocated,
    .close = bd_close,
    .event = bd_event,
};

qio_t *qio_blkdebug_wrap(qio_t *inner, struct blkdebug_rules *r)
{
    struct bd *b = xcalloc(1, sizeof(*b));
    b->q.ops = &bd_ops;
    b->q.fd = inner->fd; /* locks and fstat see the real file */
    b->q.path = inner->path ? xstrdup(inner->path) : NULL;
    b->q.writable = inner->writable;
    b->q.align = inner->align;
    b->inner = inner;
    blkdebug_state_init(&b->st, r);
    return &b->q;
}
