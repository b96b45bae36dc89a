/* qio backend on an NBD export through libnbd. libnbd (Debian's libnbd-dev) is the NBD
 * client of the nbdkit/libguestfs projects: handshake (newstyle, structured replies, meta
 * contexts), request limits and the wire format are its job, not hand-written here.
 *
 * The behaviour follows qemu's block/nbd.c: requests of at most 32 MiB (qemu's
 * NBD_MAX_BUFFER_SIZE), block status with NBD_CMD_FLAG_REQ_ONE from base:allocation or the
 * x-dirty-bitmap context (whose bits are read as base:allocation's, as qemu does), and
 * everything DATA when the server has no such context. */
#include <errno.h>
#include <libnbd.h>
#include <limits.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "io/nbd.h"
#include "util/dl.h"
#include "util/xalloc.h"

/* libnbd is loaded when the first NBD name is opened (dlopen), not linked: it pulls in
 * gnutls, libxml2 and ICU (tens of MiB of mappings), which every qimg run on a plain file
 * would otherwise map, and which fail to load under a small address-space limit (the
 * out-of-memory behaviour tests/py/test_open_hostile.py checks). The calls below go
 * through these pointers under libnbd's own names. */
#define NBD_FUNCS(X)                                                                        \
    X(add_meta_context) X(aio_connect_tcp) X(aio_connect_unix) X(aio_is_connecting)         \
    X(aio_is_created) X(aio_is_ready) X(block_status) X(can_flush) X(can_meta_context)      \
    X(can_zero) X(close) X(create) X(flush) X(get_errno) X(get_error) X(get_size)           \
    X(is_read_only) X(poll) X(pread) X(pwrite) X(set_export_name) X(shutdown) X(zero)

static struct {
    void *dl;
#define DECL(f) __typeof__(&nbd_##f) f;
    NBD_FUNCS(DECL)
#undef DECL
} L;
#define nbd_add_meta_context L.add_meta_context
#define nbd_aio_connect_tcp L.aio_connect_tcp
#define nbd_aio_connect_unix L.aio_connect_unix
#define nbd_aio_is_connecting L.aio_is_connecting
#define nbd_aio_is_created L.aio_is_created
#define nbd_aio_is_ready L.aio_is_ready
#define nbd_block_status L.block_status
#define nbd_can_flush L.can_flush
#define nbd_can_meta_context L.can_meta_context
#define nbd_can_zero L.can_zero
#define nbd_close L.close
#define nbd_create L.create
#define nbd_flush L.flush
#define nbd_get_errno L.get_errno
#define nbd_get_error L.get_error
#define nbd_get_size L.get_size
#define nbd_is_read_only L.is_read_only
#define nbd_poll L.poll
#define nbd_pread L.pread
#define nbd_pwrite L.pwrite
#define nbd_set_export_name L.set_export_name
#define nbd_shutdown L.shutdown
#define nbd_zero L.zero

/* 0, or -ENOTSUP with *errmsg when libnbd cannot be loaded */
static int load_libnbd(char **errmsg)
{
#define SYM(f) { "nbd_" #f, (void **)&L.f },
    static const struct dl_sym syms[] = { NBD_FUNCS(SYM) };
#undef SYM
    return dl_load(&L.dl, "libnbd.so.0", "NBD", "libnbd (Debian's libnbd0)", syms,
                   sizeof(syms) / sizeof(syms[0]), errmsg);
}

#define NBD_MAX_REQUEST (32u << 20)

struct nbd_state {
    struct nbd_handle *h;
    const char *meta; /* the context block status reads, NULL: none agreed */
    char *meta_buf;
    uint64_t size;
};

static struct nbd_handle *H(qio_t *q) { return ((struct nbd_state *)q->priv)->h; }

static int nbd_err(void)
{
    int e = nbd_get_errno();
    return -(e > 0 ? e : EIO);
}

static int n_pread(qio_t *q, void *buf, size_t n, uint64_t off)
{
    struct nbd_state *s = q->priv;
    unsigned char *p = buf;
    /* past the export's end reads as zeros, as for files */
    if (off >= s->size) {
        memset(p, 0, n);
        return 0;
    }
    if (n > s->size - off) {
        memset(p + (s->size - off), 0, n - (size_t)(s->size - off));
        n = (size_t)(s->size - off);
    }
    while (n) {
        size_t k = n < NBD_MAX_REQUEST ? n : NBD_MAX_REQUEST;
        if (nbd_pread(s->h, p, k, off, 0) < 0)
            return nbd_err();
        p += k, off += k, n -= k;
    }
    return 0;
}

static int n_pwrite(qio_t *q, const void *buf, size_t n, uint64_t off)
{
    struct nbd_state *s = q->priv;
    const unsigned char *p = buf;
    if (off > s->size || n > s->size - off)
        return -EINVAL; /* an export cannot grow: qemu fails such a write so */
    while (n) {
        size_t k = n < NBD_MAX_REQUEST ? n : NBD_MAX_REQUEST;
        if (nbd_pwrite(s->h, p, k, off, 0) < 0)
            return nbd_err();
        p += k, off += k, n -= k;
    }
    return 0;
}

static int n_size(qio_t *q, uint64_t *out)
{
    *out = ((struct nbd_state *)q->priv)->size;
    return 0;
}

static int n_truncate(qio_t *q, uint64_t size)
{
    /* qemu's nbd_co_truncate: only to the current size (or smaller without exact) */
    return size == ((struct nbd_state *)q->priv)->size ? 0 : -ENOTSUP;
}

static int n_flush(qio_t *q)
{
    if (nbd_can_flush(H(q)) != 1)
        return 0;
    return nbd_flush(H(q), 0) < 0 ? nbd_err() : 0;
}

struct status_ctx {
    const char *meta;
    uint64_t len;
    uint32_t flags;
    bool got;
};

static int status_cb(void *user, const char *metacontext, uint64_t offset, uint32_t *entries,
                     size_t nr_entries, int *error)
{
    struct status_ctx *c = user;
    (void)offset;
    (void)error;
    if (c->got || strcmp(metacontext, c->meta) != 0 || nr_entries < 2)
        return 0;
    c->len = entries[0];
    c->flags = entries[1];
    c->got = true;
    return 0;
}

static int n_status(qio_t *q, uint64_t off, uint64_t bytes, unsigned *st, uint64_t *pnum)
{
    struct nbd_state *s = q->priv;
    *pnum = 0;
    *st = 0;
    if (off >= s->size)
        return 0;
    if (bytes > s->size - off)
        bytes = s->size - off;
    if (!s->meta) { /* qemu: no block status from the server means all data */
        *pnum = bytes;
        *st = QIO_ST_DATA;
        return 0;
    }
    uint64_t ask = bytes < (uint64_t)INT_MAX + 1 - 512 ? bytes : (uint64_t)INT_MAX + 1 - 512;
    struct status_ctx c = { .meta = s->meta };
    nbd_extent_callback cb = { .callback = status_cb, .user_data = &c };
    if (nbd_block_status(s->h, ask, off, cb, LIBNBD_CMD_FLAG_REQ_ONE) < 0)
        return nbd_err();
    if (!c.got || c.len == 0)
        return -EIO; /* qemu: "server did not reply with any status extents" */
    *pnum = c.len < bytes ? c.len : bytes;
    *st = (c.flags & LIBNBD_STATE_HOLE ? 0 : QIO_ST_DATA) |
          (c.flags & LIBNBD_STATE_ZERO ? QIO_ST_ZERO : 0);
    return 0;
}

static int n_extent(qio_t *q, uint64_t off, bool *is_data, uint64_t *len)
{
    unsigned st;
    int r = n_status(q, off, UINT64_MAX, &st, len);
    *is_data = st & QIO_ST_DATA;
    return r;
}

static int n_allocated(qio_t *q, uint64_t *out)
{
    (void)q;
    (void)out;
    return -ENOTSUP; /* info: "disk size: unavailable" */
}

static int n_fallocate(qio_t *q, enum qio_falloc mode, uint64_t off, uint64_t len)
{
    struct nbd_state *s = q->priv;
    if (off > s->size || len > s->size - off)
        return -ENOTSUP;
    while (len) {
        uint64_t k = len < NBD_MAX_REQUEST ? len : NBD_MAX_REQUEST;
        int r;
        if (mode == QIO_FALLOC_ALLOCATE)
            return -ENOTSUP;
        if (nbd_can_zero(s->h) != 1)
            return -ENOTSUP;
        r = nbd_zero(s->h, k, off, mode == QIO_FALLOC_ZERO_RANGE ? LIBNBD_CMD_FLAG_NO_HOLE : 0);
        if (r < 0)
            return nbd_err();
        off += k, len -= k;
    }
    return 0;
}

static void n_close(qio_t *q)
{
    struct nbd_state *s = q->priv;
    if (!s)
        return;
    nbd_shutdown(s->h, 0);
    nbd_close(s->h);
    free(s->meta_buf);
    free(s);
    q->priv = NULL;
}

static const struct qio_ops nbd_ops = {
    .pread = n_pread, .pwrite = n_pwrite, .size = n_size, .truncate = n_truncate,
    .flush = n_flush, .extent = n_extent, .allocated = n_allocated,
    .fallocate = n_fallocate, .close = n_close, .status = n_status,
};

bool qio_is_nbd(const qio_t *q)
{
    return q && q->ops == &nbd_ops;
}

void qio_nbd_addr_free(struct qio_nbd_addr *a)
{
    if (!a)
        return;
    free(a->type);
    free(a->host);
    free(a->port);
    free(a->path);
    free(a->export);
    free(a->bitmap);
    memset(a, 0, sizeof(*a));
}

char *qio_nbd_name(const struct qio_nbd_addr *a)
{
    bool unix_ = a->type && !strcmp(a->type, "unix");
    if (unix_ && a->export)
        return xasprintf("nbd+unix:///%s?socket=%s", a->export, a->path);
    if (unix_)
        return xasprintf("nbd+unix://?socket=%s", a->path);
    if (a->export)
        return xasprintf("nbd://%s:%s/%s", a->host, a->port, a->export);
    return xasprintf("nbd://%s:%s", a->host, a->port);
}

static char *addr_text(const struct qio_nbd_addr *a)
{
    if (!strcmp(a->type, "unix"))
        return xstrdup(a->path);
    return xasprintf("%s:%s", a->host, a->port);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int qio_open_nbd(const struct qio_nbd_addr *a, int flags, qio_t **out, char **errmsg)
{
    *out = NULL;
    int lr = load_libnbd(errmsg);
    if (lr < 0)
        return lr;
    struct nbd_handle *h = nbd_create();
    if (!h) {
        *errmsg = xasprintf("%s", nbd_get_error());
        return -ENOMEM;
    }
    const char *meta = a->bitmap ? a->bitmap : LIBNBD_CONTEXT_BASE_ALLOCATION;
    int r = 0;
    double limit = 30;
    const char *t = getenv("QIMG_NBD_CONNECT_TIMEOUT");
    if (t && atof(t) > 0)
        limit = atof(t);
    if (nbd_set_export_name(h, a->export ? a->export : "") < 0 ||
        nbd_add_meta_context(h, meta) < 0)
        goto fail_setup;
    if (strcmp(a->type, "unix") != 0) {
        /* qemu's inet_connect_saddr resolves the address first, with its own message */
        struct addrinfo hints = { .ai_flags = AI_CANONNAME | AI_V4MAPPED | AI_ADDRCONFIG,
                                  .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
        struct addrinfo *res = NULL;
        int g = getaddrinfo(a->host, a->port, &hints, &res);
        if (g != 0) {
            *errmsg = xasprintf("address resolution failed for %s:%s: %s", a->host, a->port,
                                gai_strerror(g));
            nbd_close(h);
            return -EINVAL;
        }
        freeaddrinfo(res);
    }
    /* the connect and handshake are non-blocking so a silent server cannot hang us */
    r = !strcmp(a->type, "unix") ? nbd_aio_connect_unix(h, a->path)
                                 : nbd_aio_connect_tcp(h, a->host, a->port);
    if (r < 0)
        goto fail_connect;
    double end = now() + limit;
    while (nbd_aio_is_connecting(h) == 1) {
        double left = end - now();
        if (left <= 0) {
            char *at = addr_text(a);
            *errmsg = xasprintf("Failed to connect to '%s': %s", at, strerror(ETIMEDOUT));
            free(at);
            nbd_close(h);
            return -ETIMEDOUT;
        }
        if (nbd_poll(h, left > 1 ? 1000 : (int)(left * 1000) + 1) < 0)
            goto fail_connect;
    }
    if (nbd_aio_is_ready(h) != 1)
        goto fail_connect;
    int64_t size = nbd_get_size(h);
    if (size < 0)
        goto fail_connect;
    if ((flags & QIO_RDWR) && nbd_is_read_only(h) == 1) {
        /* qemu: bdrv_apply_auto_read_only fails without a message of its own */
        *errmsg = xstrdup("Could not open image: Permission denied");
        nbd_close(h);
        return -EACCES;
    }
    struct nbd_state *s = xcalloc(1, sizeof(*s));
    s->h = h;
    s->size = (uint64_t)size;
    if (nbd_can_meta_context(h, meta) == 1) {
        s->meta_buf = xstrdup(meta);
        s->meta = s->meta_buf;
    } else if (a->bitmap) {
        /* qemu: nbd_handle_updated_info fails without a message of its own */
        *errmsg = xstrdup("Could not open image: Invalid argument");
        nbd_close(h);
        free(s);
        return -EINVAL;
    }
    qio_t *q = xcalloc(1, sizeof(*q));
    q->ops = &nbd_ops;
    q->fd = -1;
    q->writable = flags & QIO_RDWR;
    q->path = qio_nbd_name(a);
    q->priv = s;
    *out = q;
    return 0;

fail_connect:;
    int e = nbd_get_errno();
    const char *le = nbd_get_error();
    if (le && strstr(le, "handshake: server has no export")) {
        /* qemu's message, with the text qemu-nbd sends for NBD_REP_ERR_UNKNOWN */
        *errmsg = xasprintf("Requested export not available\nserver reported: export '%s' "
                            "not present", a->export ? a->export : "");
    } else if (le && strstr(le, "handshake: ")) {
        *errmsg = xstrdup(strstr(le, "handshake: ") + 11);
    } else if (nbd_aio_is_connecting(h) == 1 || nbd_aio_is_created(h) == 1 || e == ECONNREFUSED ||
        e == ENOENT || e == EHOSTUNREACH || e == ENETUNREACH || e == ECONNRESET) {
        char *at = addr_text(a);
        *errmsg = xasprintf("Failed to connect to '%s': %s", at, strerror(e > 0 ? e : EIO));
        free(at);
    } else {
        *errmsg = xasprintf("%s", nbd_get_error() ? nbd_get_error() : strerror(e > 0 ? e : EIO));
    }
    nbd_close(h);
    return -(e > 0 ? e : EIO);
fail_setup:
    *errmsg = xasprintf("%s", nbd_get_error());
    nbd_close(h);
    return -EINVAL;
}
