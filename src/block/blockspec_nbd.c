/* NBD image names and options (qemu's block/nbd.c: nbd_parse_filename, nbd_parse_uri,
 * nbd_process_legacy_socket_options and the SocketAddress checks of nbd_config), turned
 * into the flat options of the one name parser (blockspec.c) and then into the address
 * the NBD backend (io/nbd.c) connects to. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/blockspec.h"
#include "block/blockspec_nbd.h"
#include "util/xalloc.h"

bool blockspec_is_nbd_name(const char *name)
{
    return !strncmp(name, "nbd:", 4) || !strncmp(name, "nbd+tcp:", 8) ||
           !strncmp(name, "nbd+unix:", 9);
}

static int hexval(int c)
{
    return isdigit(c) ? c - '0' : isxdigit(c) ? (tolower(c) - 'a' + 10) : -1;
}

/* %XX unescaping of one URI component (qemu's uri_string_unescape). */
static char *unescape(const char *s, size_t n)
{
    char *o = xcalloc(1, n + 1), *p = o;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n &&
            hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            *p++ = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else {
            *p++ = s[i];
        }
    }
    return o;
}

/* nbd[+tcp]://HOST[:PORT]/EXPORT and nbd+unix:///EXPORT?socket=PATH */
static int parse_uri(const char *name, struct bspec *o)
{
    bool is_unix = !strncmp(name, "nbd+unix://", 11);
    const char *p = strstr(name, "://") + 3;
    size_t alen = strcspn(p, "/?#");
    const char *auth = p;
    p += alen;
    size_t plen = strcspn(p, "?#");
    const char *path = p;
    p += plen;
    const char *query = *p == '?' ? p + 1 : NULL;
    size_t qlen = query ? strcspn(query, "#") : 0;
    if (*path == '/')
        path++, plen--;
    if (plen) {
        char *e = unescape(path, plen);
        bspec_put_str(o, "export", e, true);
        free(e);
    }
    /* query parameters: '&' or ';' separated; exactly one (socket=) for unix, none else */
    size_t nq = 0;
    const char *q0 = NULL;
    size_t q0len = 0;
    for (const char *q = query; q && q < query + qlen;) {
        size_t l = strcspn(q, "&;#");
        if (l > 0) {
            if (!nq)
                q0 = q, q0len = l;
            nq++;
        }
        q += l;
        if (*q == '&' || *q == ';')
            q++;
        else
            break;
    }
    if (nq > 1 || (is_unix && nq == 0) || (!is_unix && nq > 0))
        return -1;
    if (is_unix) {
        if (alen || q0len < 7 || strncmp(q0, "socket=", 7) != 0)
            return -1;
        char *v = unescape(q0 + 7, q0len - 7);
        bspec_put_str(o, "server.type", "unix", true);
        bspec_put_str(o, "server.path", v, true);
        free(v);
        return 0;
    }
    if (!alen)
        return -1;
    /* HOST[:PORT], HOST may be [v6] */
    char *host;
    const char *port = NULL;
    size_t plen2 = 0;
    if (auth[0] == '[') {
        const char *rb = memchr(auth, ']', alen);
        if (!rb)
            return -1;
        host = xasprintf("%.*s", (int)(rb - auth - 1), auth + 1);
        if ((size_t)(rb + 1 - auth) < alen) {
            if (rb[1] != ':') {
                free(host);
                return -1;
            }
            port = rb + 2;
            plen2 = alen - (size_t)(rb + 2 - auth);
        }
    } else {
        const char *c = memchr(auth, ':', alen);
        size_t hl = c ? (size_t)(c - auth) : alen;
        char *h = unescape(auth, hl);
        host = h;
        if (c) {
            port = c + 1;
            plen2 = alen - hl - 1;
        }
    }
    long pn = 0;
    for (size_t i = 0; i < plen2; i++) {
        if (!isdigit((unsigned char)port[i]) || pn > 65535) {
            free(host);
            return -1;
        }
        pn = pn * 10 + (port[i] - '0');
    }
    if (!*host) {
        free(host);
        return -1;
    }
    char *ps = xasprintf("%ld", pn ? pn : 10809);
    bspec_put_str(o, "server.type", "inet", true);
    bspec_put_str(o, "server.host", host, true);
    bspec_put_str(o, "server.port", ps, true);
    free(host);
    free(ps);
    return 0;
}

/* qemu's inet_parse() for "HOST:PORT" and "[V6]:PORT" (options after a comma ignored). */
static int inet_parse(const char *s, char **host, char **port)
{
    size_t n = strcspn(s, ",");
    const char *colon;
    if (s[0] == '[') {
        const char *rb = memchr(s, ']', n);
        if (!rb || rb[1] != ':')
            return -1;
        *host = xasprintf("%.*s", (int)(rb - s - 1), s + 1);
        colon = rb + 1;
    } else {
        colon = NULL;
        for (const char *c = s; c < s + n; c++)
            if (*c == ':')
                colon = c;
        if (!colon)
            return -1;
        *host = xasprintf("%.*s", (int)(colon - s), s);
    }
    *port = xasprintf("%.*s", (int)(s + n - colon - 1), colon + 1);
    if (!**port) {
        free(*host);
        free(*port);
        return -1;
    }
    return 0;
}

int blockspec_nbd_parse_name(const char *name, struct bspec *o, char **errmsg)
{
    if (strstr(name, "://")) {
        if (parse_uri(name, o) < 0) {
            *errmsg = xstrdup("No valid URL specified");
            return -EINVAL;
        }
        return 0;
    }
    char *file = xstrdup(name);
    char *en = strstr(file, ":exportname=");
    int rc = 0;
    if (en) {
        if (!en[12])
            goto out; /* qemu: no export and no address: "NBD server address missing" */
        *en = 0;
        bspec_put_str(o, "export", en + 12, true);
    }
    if (strncmp(file, "nbd:", 4) != 0) {
        *errmsg = xstrdup("File name string for NBD must start with 'nbd:'");
        rc = -EINVAL;
        goto out;
    }
    const char *spec = file + 4;
    if (!*spec)
        goto out;
    if (!strncmp(spec, "unix:", 5)) {
        bspec_put_str(o, "server.type", "unix", true);
        bspec_put_str(o, "server.path", spec + 5, true);
    } else {
        char *h, *p;
        if (inet_parse(spec, &h, &p) < 0) {
            *errmsg = xasprintf("error parsing address '%s'", spec);
            rc = -EINVAL;
            goto out;
        }
        bspec_put_str(o, "server.type", "inet", true);
        bspec_put_str(o, "server.host", h, true);
        bspec_put_str(o, "server.port", p, true);
        free(h);
        free(p);
    }
out:
    free(file);
    return rc;
}

int blockspec_nbd_take(struct bspec *o, struct qio_nbd_addr *a, char **errmsg)
{
    memset(a, 0, sizeof(*a));
    /* legacy host/port/path (nbd_process_legacy_socket_options) */
    char *lpath = bspec_take_str(o, "path"), *lhost = bspec_take_str(o, "host"), *lport = bspec_take_str(o, "port");
    bool server = false;
    for (size_t i = 0; i < o->n; i++)
        server |= !strncmp(o->v[i].key, "server.", 7);
    int rc = -EINVAL;
    if ((lpath || lhost || lport) && server) {
        *errmsg = xstrdup("Cannot use 'server' and path/host/port at the same time");
        goto out;
    }
    if (lpath && lhost) {
        *errmsg = xstrdup("path and host may not be used at the same time");
        goto out;
    }
    if (lpath) {
        if (lport) {
            *errmsg = xstrdup("port may not be used without host");
            goto out;
        }
        a->type = xstrdup("unix");
        a->path = lpath, lpath = NULL;
    } else if (lhost) {
        a->type = xstrdup("inet");
        a->host = lhost, lhost = NULL;
        a->port = lport ? lport : xstrdup("10809");
        lport = NULL;
    } else if (server) {
        a->type = bspec_take_str(o, "server.type");
        if (!a->type) {
            *errmsg = xstrdup("Parameter 'type' is missing");
            goto out;
        }
        if (!strcmp(a->type, "unix")) {
            a->path = bspec_take_str(o, "server.path");
            if (!a->path) {
                *errmsg = xstrdup("Parameter 'path' is missing");
                goto out;
            }
            free(bspec_take_str(o, "server.abstract"));
            free(bspec_take_str(o, "server.tight"));
        } else if (!strcmp(a->type, "inet")) {
            a->host = bspec_take_str(o, "server.host");
            if (!a->host) {
                *errmsg = xstrdup("Parameter 'host' is missing");
                goto out;
            }
            a->port = bspec_take_str(o, "server.port");
            if (!a->port) {
                *errmsg = xstrdup("Parameter 'port' is missing");
                goto out;
            }
        } else {
            *errmsg = xasprintf("Parameter 'type' does not accept value '%s'", a->type);
            goto out;
        }
    } else {
        *errmsg = xstrdup("NBD server address missing");
        goto out;
    }
    a->export = bspec_take_str(o, "export");
    a->bitmap = bspec_take_str(o, "x-dirty-bitmap");
    /* accepted without effect here: qimg neither reconnects nor waits */
    free(bspec_take_str(o, "reconnect-delay"));
    free(bspec_take_str(o, "open-timeout"));
    free(bspec_take_str(o, "node-name"));
    rc = 0;
out:
    free(lpath);
    free(lhost);
    free(lport);
    if (rc < 0)
        qio_nbd_addr_free(a);
    return rc;
}
