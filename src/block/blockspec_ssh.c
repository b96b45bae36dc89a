/* ssh image names and options: see blockspec_ssh.h. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/blockspec.h"
#include "block/blockspec_ssh.h"
#include "util/xalloc.h"

bool blockspec_is_ssh_name(const char *name)
{
    return !strncmp(name, "ssh:", 4);
}

static int hexval(int c)
{
    return isdigit(c) ? c - '0' : isxdigit(c) ? (tolower(c) - 'a' + 10) : -1;
}

/* %XX unescaping of one URI component (qemu's uri_string_unescape) */
static char *unescape(const char *s, size_t n)
{
    char *o = xcalloc(1, n + 1), *p = o;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            *p++ = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else {
            *p++ = s[i];
        }
    }
    return o;
}

int blockspec_ssh_parse_name(const char *name, struct bspec *o, char **errmsg)
{
    const char *p = name + 4; /* after "ssh:" */
    const char *auth = NULL;
    size_t alen = 0;
    if (!strncmp(p, "//", 2)) {
        auth = p + 2;
        alen = strcspn(auth, "/?#");
        p = auth + alen;
    }
    size_t plen = strcspn(p, "?#");
    const char *path = p;
    const char *query = path[plen] == '?' ? path + plen + 1 : NULL;
    size_t qlen = query ? strcspn(query, "#") : 0;

    /* authority: [USER@]HOST[:PORT], HOST kept as written ("[::1]" with its brackets) */
    const char *at = auth ? memchr(auth, '@', alen) : NULL;
    const char *host = at ? at + 1 : auth;
    size_t hlen = auth ? alen - (size_t)(host - auth) : 0;
    const char *colon = NULL;
    if (host) {
        const char *rb = hlen && host[0] == '[' ? memchr(host, ']', hlen) : NULL;
        colon = memchr(rb ? rb : host, ':', hlen - (size_t)((rb ? rb : host) - host));
    }
    long port = 0;
    if (colon) {
        /* qemu's uri_parse fails on a port that is not all digits: no options, no error */
        for (const char *c = colon + 1; c < host + hlen; c++) {
            if (!isdigit((unsigned char)*c) || port > 65535)
                return 0;
            port = port * 10 + (*c - '0');
        }
        hlen = (size_t)(colon - host);
    }
    if (!hlen) {
        *errmsg = xstrdup("missing hostname in URI");
        return -EINVAL;
    }
    if (!plen) {
        *errmsg = xstrdup("missing remote path in URI");
        return -EINVAL;
    }
    if (at && at > auth) {
        char *u = unescape(auth, (size_t)(at - auth));
        bspec_put_str(o, "user", u, true);
        free(u);
    }
    char *h = unescape(host, hlen);
    bspec_put_str(o, "server.host", h, true);
    free(h);
    char *ps = xasprintf("%ld", port ? port : 22); /* qemu: a port of 0 is no port */
    bspec_put_str(o, "server.port", ps, true);
    free(ps);
    char *pa = unescape(path, plen);
    bspec_put_str(o, "path", pa, true);
    free(pa);
    /* the one query parameter qemu understands; the rest is ignored */
    for (const char *q = query; q && q < query + qlen;) {
        size_t l = strcspn(q, "&;#");
        if (l > 15 && !strncmp(q, "host_key_check=", 15)) {
            char *v = unescape(q + 15, l - 15);
            bspec_put_str(o, "host_key_check", v, true);
            free(v);
        }
        q += l;
        if (*q != '&' && *q != ';')
            break;
        q++;
    }
    return 0;
}

bool blockspec_ssh_name_conflict(const struct bspec *o)
{
    static const char *const k[] = { "user", "host", "port", "path", "host_key_check" };
    for (size_t i = 0; i < sizeof(k) / sizeof(k[0]); i++)
        if (bspec_get(o, k[i]))
            return true;
    return false;
}

/* QEMU_OPT_NUMBER (qemu_strtou64 with base 0): the whole text one unsigned number */
static bool opt_number(const char *s)
{
    char *end;
    errno = 0;
    while (isspace((unsigned char)*s))
        s++;
    (void)strtoull(s, &end, 0);
    return end != s && !*end && errno == 0;
}

static bool any_prefixed(const struct bspec *o, const char *prefix)
{
    size_t n = strlen(prefix);
    for (size_t i = 0; i < o->n; i++)
        if (!strncmp(o->v[i].key, prefix, n))
            return true;
    return false;
}

static int missing(char **errmsg, const char *what)
{
    *errmsg = xasprintf("Parameter '%s' is missing", what);
    return -EINVAL;
}

int blockspec_ssh_take(struct bspec *o, struct qio_ssh_addr *a, char **errmsg)
{
    memset(a, 0, sizeof(*a));
    int rc = -EINVAL;
    /* ssh_runtime_opts (host, port as a number, host_key_check), then
     * ssh_process_legacy_options turns them into server.* and host-key-check.* */
    char *host = bspec_take_str(o, "host"), *port = bspec_take_str(o, "port");
    char *hkc = bspec_take_str(o, "host_key_check");
    if (port && !opt_number(port)) {
        *errmsg = xstrdup("Parameter 'port' expects a number");
        goto out;
    }
    if (!host && port) {
        *errmsg = xstrdup("port may not be used without host");
        goto out;
    }
    if (host) {
        bspec_put_str(o, "server.host", host, true);
        bspec_put_str(o, "server.port", port ? port : "22", true);
    }
    if (hkc) {
        static const char *const types[] = { "md5", "sha1", "sha256" };
        size_t t = 0;
        for (; t < 3; t++)
            if (!strncmp(hkc, types[t], strlen(types[t])) && hkc[strlen(types[t])] == ':')
                break;
        if (!strcmp(hkc, "no")) {
            bspec_put_str(o, "host-key-check.mode", "none", true);
        } else if (t < 3) {
            bspec_put_str(o, "host-key-check.mode", "hash", true);
            bspec_put_str(o, "host-key-check.type", types[t], true);
            bspec_put_str(o, "host-key-check.hash", hkc + strlen(types[t]) + 1, true);
        } else if (!strcmp(hkc, "yes")) {
            bspec_put_str(o, "host-key-check.mode", "known_hosts", true);
        } else {
            *errmsg = xasprintf("unknown host_key_check setting (%s)", hkc);
            goto out;
        }
        a->legacy_hkc = hkc, hkc = NULL;
    }
    /* BlockdevOptionsSsh, members in qemu's order: server, path, user, host-key-check */
    if (!any_prefixed(o, "server.")) {
        rc = missing(errmsg, "server");
        goto out;
    }
    if (!(a->host = bspec_take_str(o, "server.host"))) {
        rc = missing(errmsg, "server.host");
        goto out;
    }
    if (!(a->port = bspec_take_str(o, "server.port"))) {
        rc = missing(errmsg, "server.port");
        goto out;
    }
    /* InetSocketAddress's other members: accepted; qimg connects as qemu does without them */
    static const char *const inet_opts[] = { "server.numeric", "server.to", "server.ipv4",
                                             "server.ipv6", "server.keep-alive",
                                             "server.mptcp" };
    for (size_t i = 0; i < sizeof(inet_opts) / sizeof(inet_opts[0]); i++)
        free(bspec_take_str(o, inet_opts[i]));
    if (!(a->path = bspec_take_str(o, "path"))) {
        rc = missing(errmsg, "path");
        goto out;
    }
    a->user = bspec_take_str(o, "user");
    if (any_prefixed(o, "host-key-check.")) {
        char *mode = bspec_take_str(o, "host-key-check.mode");
        if (!mode) {
            rc = missing(errmsg, "host-key-check.mode");
            goto out;
        }
        if (!strcmp(mode, "none")) {
            a->hkc = QIO_SSH_HKC_NONE;
        } else if (!strcmp(mode, "known_hosts")) {
            a->hkc = QIO_SSH_HKC_KNOWN_HOSTS;
        } else if (!strcmp(mode, "hash")) {
            a->hkc = QIO_SSH_HKC_HASH;
            a->hkc_type = bspec_take_str(o, "host-key-check.type");
            if (!a->hkc_type) {
                free(mode);
                rc = missing(errmsg, "host-key-check.type");
                goto out;
            }
            if (strcmp(a->hkc_type, "md5") && strcmp(a->hkc_type, "sha1") &&
                strcmp(a->hkc_type, "sha256")) {
                *errmsg = xasprintf("Parameter 'type' does not accept value '%s'", a->hkc_type);
                free(mode);
                goto out;
            }
            a->hkc_hash = bspec_take_str(o, "host-key-check.hash");
            if (!a->hkc_hash) {
                free(mode);
                rc = missing(errmsg, "host-key-check.hash");
                goto out;
            }
        } else {
            *errmsg = xasprintf("Parameter 'mode' does not accept value '%s'", mode);
            free(mode);
            goto out;
        }
        free(mode);
    }
    rc = 0;
out:
    free(host);
    free(port);
    free(hkc);
    if (rc < 0)
        qio_ssh_addr_free(a);
    return rc;
}
