/* Image names and block options: option list, --image-opts parsing, qemu's qdict order and
 * JSON text, and the resolution of a name into what the opener needs (see blockspec.h).
 * The json: text itself is parsed with jansson in blockspec_json.c. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/blockspec.h"
#include "block/blockspec_nbd.h"
#include "block/blockspec_ssh.h"
#include "io/null.h"
#include "util/err.h"
#include "util/size.h"
#include "util/xalloc.h"

/* ---- the option list ---------------------------------------------------------------------- */

static void bsv_clear(struct bsv *v)
{
    free(v->key);
    free(v->s);
}

void bspec_free(struct bspec *o)
{
    for (size_t i = 0; i < o->n; i++)
        bsv_clear(&o->v[i]);
    free(o->v);
    o->v = NULL;
    o->n = o->cap = 0;
}

static ssize_t find(const struct bspec *o, const char *key)
{
    for (size_t i = 0; i < o->n; i++)
        if (!strcmp(o->v[i].key, key))
            return (ssize_t)i;
    return -1;
}

const struct bsv *bspec_get(const struct bspec *o, const char *key)
{
    ssize_t i = o ? find(o, key) : -1;
    return i < 0 ? NULL : &o->v[i];
}

void bspec_put(struct bspec *o, const struct bsv *val, bool overwrite)
{
    ssize_t i = find(o, val->key);
    struct bsv copy = *val;
    copy.key = xstrdup(val->key);
    copy.s = val->s ? xstrdup(val->s) : NULL;
    if (i >= 0) {
        if (!overwrite) {
            bsv_clear(&copy);
            return;
        }
        bsv_clear(&o->v[i]);
        o->v[i] = copy;
        return;
    }
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 8;
        o->v = xreallocarray(o->v, o->cap, sizeof(*o->v));
    }
    o->v[o->n++] = copy;
}

void bspec_put_str(struct bspec *o, const char *key, const char *s, bool overwrite)
{
    struct bsv v = { .key = (char *)key, .type = BSV_STR, .s = (char *)s };
    bspec_put(o, &v, overwrite);
}

void bspec_del(struct bspec *o, const char *key)
{
    ssize_t i = find(o, key);
    if (i < 0)
        return;
    bsv_clear(&o->v[i]);
    memmove(&o->v[i], &o->v[i + 1], (o->n - (size_t)i - 1) * sizeof(*o->v));
    o->n--;
}

char *bspec_take_str(struct bspec *o, const char *key)
{
    const struct bsv *v = bspec_get(o, key);
    if (!v)
        return NULL;
    char *s = v->type == BSV_STR ? xstrdup(v->s)
              : v->type == BSV_INT ? xasprintf("%lld", (long long)v->i)
                                   : xstrdup("");
    bspec_del(o, key);
    return s;
}

/* ---- --image-opts --------------------------------------------------------------------------- */

/* One value up to an unescaped comma; ",," is a comma (qemu's get_opt_value). */
static const char *keyval_value(const char *p, char **out)
{
    size_t cap = strlen(p) + 1, n = 0;
    char *v = xmalloc(cap);
    while (*p) {
        if (*p == ',') {
            if (p[1] != ',')
                break;
            p++;
        }
        v[n++] = *p++;
    }
    v[n] = 0;
    *out = v;
    return p;
}

void bspec_parse_keyval(const char *text, struct bspec *o)
{
    const char *p = text;
    /* qemu-img's option list implies "file" for a first item without '=' (a node name) */
    if (*p && p[strcspn(p, "=,")] != '=') {
        char *val;
        p = keyval_value(p, &val);
        bspec_put_str(o, "file", val, true);
        free(val);
        if (*p == ',')
            p++;
    }
    while (*p) {
        size_t klen = strcspn(p, "=,");
        char *key = xasprintf("%.*s", (int)klen, p);
        p += klen;
        if (*p == '=') {
            char *val;
            p = keyval_value(p + 1, &val);
            bspec_put_str(o, key, val, true);
            free(val);
        } else if (klen) {
            /* qemu 7.2: the short form still works, with a deprecation warning */
            bool off = !strncmp(key, "no", 2);
            const char *name = off ? key + 2 : key;
            fprintf(stderr, "%s: warning: short-form boolean option '%s' deprecated\n"
                    "Please use %s=%s instead\n", qimg_progname, key, name, off ? "off" : "on");
            bspec_put_str(o, name, off ? "off" : "on", true);
        }
        free(key);
        if (*p == ',')
            p++;
    }
}

/* ---- qemu's qdict order and JSON text ------------------------------------------------------ */

/* qdict's bucket of a key (qdict.c's tdb_hash modulo QDICT_BUCKET_MAX = 512). */
static unsigned qdict_bucket(const char *key, size_t len)
{
    uint32_t v = 0x238F13AFu * (uint32_t)len;
    for (size_t i = 0; i < len; i++)
        v += (uint32_t)(unsigned char)key[i] << (i * 5 % 24);
    return (1103515243u * v + 12345u) % 512;
}

struct ord { size_t idx; unsigned bucket; };

/* qdict iterates buckets upwards, newest entry first within a bucket. */
static int ord_cmp(const void *a, const void *b)
{
    const struct ord *x = a, *y = b;
    if (x->bucket != y->bucket)
        return x->bucket < y->bucket ? -1 : 1;
    return x->idx > y->idx ? -1 : x->idx < y->idx;
}

void bspec_qdict_order(const struct bspec *o, size_t *idx)
{
    struct ord *t = xcalloc(o->n ? o->n : 1, sizeof(*t));
    for (size_t i = 0; i < o->n; i++) {
        t[i].idx = i;
        t[i].bucket = qdict_bucket(o->v[i].key, strlen(o->v[i].key));
    }
    qsort(t, o->n, sizeof(*t), ord_cmp);
    for (size_t i = 0; i < o->n; i++)
        idx[i] = t[i].idx;
    free(t);
}

struct sbuf { char *p; size_t n, cap; };

static void sb_put(struct sbuf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = xreallocarray(b->p, b->cap, 1);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_str(struct sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* One UTF-8 code point (qemu's mod_utf8_codepoint, strict): -1 for a bad sequence. */
static long utf8_cp(const unsigned char *s, size_t *len)
{
    unsigned c = s[0];
    int n = c < 0x80 ? 0 : c >= 0xC2 && c < 0xE0 ? 1 : c >= 0xE0 && c < 0xF0 ? 2
          : c >= 0xF0 && c < 0xF5 ? 3 : -1;
    *len = 1;
    if (n < 0)
        return -1;
    long cp = n == 0 ? c : (long)(c & (0x3F >> n));
    for (int i = 1; i <= n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return -1;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    static const long min[] = { 0, 0x80, 0x800, 0x10000 };
    *len = (size_t)n + 1;
    if (cp < min[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000))
        return -1;
    return cp;
}

/* qemu's to_json() for a string: ASCII printables as they are, the usual escapes, anything
 * else as \uXXXX (UTF-16, upper-case hex); bad UTF-8 becomes \uFFFD. */
static void sb_json_string(struct sbuf *b, const char *s)
{
    sb_str(b, "\"");
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        size_t len;
        long cp = utf8_cp(p, &len);
        char tmp[16];
        switch (cp) {
        case '"': sb_str(b, "\\\""); break;
        case '\\': sb_str(b, "\\\\"); break;
        case '\b': sb_str(b, "\\b"); break;
        case '\f': sb_str(b, "\\f"); break;
        case '\n': sb_str(b, "\\n"); break;
        case '\r': sb_str(b, "\\r"); break;
        case '\t': sb_str(b, "\\t"); break;
        default:
            if (cp < 0)
                cp = 0xFFFD;
            if (cp >= 0x10000) {
                long v = cp - 0x10000;
                snprintf(tmp, sizeof(tmp), "\\u%04lX\\u%04lX", 0xD800 + (v >> 10),
                         0xDC00 + (v & 0x3FF));
                sb_str(b, tmp);
            } else if (cp < 0x20 || cp >= 0x7F) {
                snprintf(tmp, sizeof(tmp), "\\u%04lX", cp);
                sb_str(b, tmp);
            } else {
                tmp[0] = (char)cp;
                sb_put(b, tmp, 1);
            }
        }
        p += len;
    }
    sb_str(b, "\"");
}

static void sb_value(struct sbuf *b, const struct bsv *v)
{
    char tmp[64];
    switch (v->type) {
    case BSV_STR: sb_json_string(b, v->s); return;
    case BSV_INT: snprintf(tmp, sizeof(tmp), "%" PRId64, v->i); break;
    case BSV_DOUBLE: snprintf(tmp, sizeof(tmp), "%.17g", v->d); break;
    case BSV_BOOL: snprintf(tmp, sizeof(tmp), "%s", v->b ? "true" : "false"); break;
    case BSV_NULL: snprintf(tmp, sizeof(tmp), "null"); break;
    case BSV_EMPTY_DICT: snprintf(tmp, sizeof(tmp), "{}"); break;
    case BSV_EMPTY_LIST: snprintf(tmp, sizeof(tmp), "[]"); break;
    }
    sb_str(b, tmp);
}

/* The entries under prefix (keys "prefix.X..."; prefix "" for all), as one JSON object:
 * first components in qdict order, each either a value or a nested object. */
static void sb_object(struct sbuf *b, const struct bspec *o, const char *prefix)
{
    size_t plen = strlen(prefix);
    /* the distinct first components, in order of first appearance */
    struct bspec comps = { 0 };
    for (size_t i = 0; i < o->n; i++) {
        const char *k = o->v[i].key;
        if (plen && (strncmp(k, prefix, plen) || k[plen] != '.'))
            continue;
        const char *rest = plen ? k + plen + 1 : k;
        size_t clen = strcspn(rest, ".");
        if (clen == 0) /* an empty component ("a..b", ".x" from --image-opts): the rest is
                          one key, so that the recursion always moves on */
            clen = strlen(rest);
        char *c = xasprintf("%.*s", (int)clen, rest);
        struct bsv marker = { .key = c, .type = BSV_NULL };
        bspec_put(&comps, &marker, false);
        free(c);
    }
    size_t *idx = xcalloc(comps.n ? comps.n : 1, sizeof(*idx));
    /* keys "0".."n-1" are a list (qdict_crumple), in index order */
    bool list = plen > 0 && comps.n > 0;
    for (size_t j = 0; list && j < comps.n; j++) {
        const char *c = comps.v[j].key;
        char *end;
        unsigned long x = strtoul(c, &end, 10);
        list = c[0] >= '0' && c[0] <= '9' && !*end && x < comps.n &&
               !(c[0] == '0' && c[1]);
        if (list)
            idx[x] = j;
    }
    if (!list)
        bspec_qdict_order(&comps, idx);
    sb_str(b, list ? "[" : "{");
    for (size_t j = 0; j < comps.n; j++) {
        const char *c = comps.v[idx[j]].key;
        char *full = plen ? xasprintf("%s.%s", prefix, c) : xstrdup(c);
        if (j)
            sb_str(b, ", ");
        if (!list) {
            sb_json_string(b, c);
            sb_str(b, ": ");
        }
        const struct bsv *v = bspec_get(o, full);
        if (v)
            sb_value(b, v);
        else
            sb_object(b, o, full);
        free(full);
    }
    sb_str(b, list ? "]" : "}");
    free(idx);
    bspec_free(&comps);
}

char *bspec_json_string(const char *s)
{
    struct sbuf b = { 0 };
    sb_json_string(&b, s);
    return b.p;
}

char *bspec_to_json(const struct bspec *o)
{
    struct sbuf b = { 0 };
    sb_object(&b, o, "");
    return b.p;
}

/* ---- resolution ------------------------------------------------------------------------------ */

bool blockspec_has_protocol(const char *name)
{
    return name[strcspn(name, ":/")] == ':';
}

int blockspec_check_image_opts_fmt(bool image_opts, const char *fmt)
{
    if (image_opts && fmt) {
        err_report("--image-opts and --format are mutually exclusive");
        return -1;
    }
    return 0;
}

static bool is_file_protocol(const char *d)
{
    return !strcmp(d, "file") || !strcmp(d, "host_device") || !strcmp(d, "host_cdrom");
}

static bool known_format(const char *d)
{
    static const char *const f[] = { "raw", "qcow2", "qed", "vdi", "qcow", "luks", "bochs",
                                     NULL };
    for (int i = 0; f[i]; i++)
        if (!strcmp(d, f[i]))
            return true;
    return false;
}

/* Drivers and protocols qemu 7.2 (Debian) has and qimg does not open (yet). */
static bool qemu_only_driver(const char *d)
{
    static const char *const q[] = {
        "blkdebug", "blklogwrites", "blkreplay", "blkverify", "cloop", "compress",
        "copy-before-write", "copy-on-read", "dmg", "ftp", "ftps", "gluster", "http", "https",
        "iscsi", "iser", "nfs", "null-aio", "null-co", "nvme", "parallels", "preallocate",
        "quorum", "rbd", "replication", "snapshot-access", "ssh", "throttle", "vhdx", "vmdk",
        "vpc", "vvfat", NULL };
    for (int i = 0; q[i]; i++)
        if (!strcmp(d, q[i]))
            return true;
    return false;
}

/* Options qemu's block layer takes on every node (bdrv_runtime_opts and friends). */
static bool generic_opt(const char *k)
{
    static const char *const g[] = { "node-name", "driver", "read-only", "auto-read-only",
        "force-share", "discard", "detect-zeroes", "cache.direct", "cache.no-flush", NULL };
    for (int i = 0; g[i]; i++)
        if (!strcmp(k, g[i]))
            return true;
    return false;
}

static bool file_opt(const char *k)
{
    static const char *const f[] = { "filename", "aio", "aio-max-batch", "locking",
        "pr-manager", "x-check-cache-dropped", "drop-cache", NULL };
    for (int i = 0; f[i]; i++)
        if (!strcmp(k, f[i]))
            return true;
    return generic_opt(k);
}

/* The runtime options of the format drivers qimg has (qemu's qcow2_runtime_opts etc.);
 * encrypt.* and data-file options wait for the secrets work. */
static bool format_opt(const char *fmt, const char *k)
{
    if (generic_opt(k))
        return true;
    if (!strcmp(fmt, "qcow2")) {
        static const char *const q[] = { "lazy-refcounts", "pass-discard-request",
            "pass-discard-snapshot", "pass-discard-other", "overlap-check", "cache-size",
            "l2-cache-size", "l2-cache-entry-size", "refcount-cache-size",
            "cache-clean-interval", NULL };
        for (int i = 0; q[i]; i++)
            if (!strcmp(k, q[i]))
                return true;
        if (!strncmp(k, "overlap-check.", 14))
            return true;
    }
    /* qcow2's and qcow's encrypt.* (qcow2_runtime_opts' crypto options), luks's key-secret */
    if ((!strcmp(fmt, "qcow2") || !strcmp(fmt, "qcow")) && !strncmp(k, "encrypt.", 8))
        return true;
    if (!strcmp(fmt, "luks"))
        return !strcmp(k, "key-secret");
    if (!strcmp(fmt, "raw"))
        return !strcmp(k, "offset") || !strcmp(k, "size");
    return false;
}

/* qemu's parse of a bool option (qapi_bool_parse via qemu_opt_get_bool). */
static int opt_bool(const struct bsv *v, bool *out, char **errmsg)
{
    if (v->type == BSV_BOOL) {
        *out = v->b;
        return 0;
    }
    if (v->type == BSV_STR) {
        if (!strcmp(v->s, "on") || !strcmp(v->s, "yes") || !strcmp(v->s, "true") ||
            !strcmp(v->s, "y")) {
            *out = true;
            return 0;
        }
        if (!strcmp(v->s, "off") || !strcmp(v->s, "no") || !strcmp(v->s, "false") ||
            !strcmp(v->s, "n")) {
            *out = false;
            return 0;
        }
    }
    *errmsg = xasprintf("Parameter '%s' expects 'on' or 'off'", v->key);
    return -EINVAL;
}

/* qemu's size option (qemu_opt_get_size via the QDict): a non-negative number. */
static int opt_size(const struct bsv *v, const char *name, uint64_t *out, char **errmsg)
{
    int ok = -1;
    if (v->type == BSV_INT && v->i >= 0) {
        *out = (uint64_t)v->i;
        ok = 0;
    } else if (v->type == BSV_DOUBLE && v->d >= 0 && v->d < 18446744073709551616.0) {
        *out = (uint64_t)v->d;
        ok = 0;
    } else if (v->type == BSV_STR) {
        ok = parse_size_ex(v->s, out) == 0 ? 0 : -1;
    }
    if (ok < 0)
        *errmsg = xasprintf("Parameter '%s' expects a non-negative number below 2^64\n"
                            "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, "
                            "tera-, peta-\nand exabytes, respectively.", name);
    return ok < 0 ? -EINVAL : 0;
}

static const char *str_of(const struct bsv *v)
{
    return v && v->type == BSV_STR ? v->s : NULL;
}

/* The first left-over key of o in qemu's order, or NULL. */
static char *first_key(const struct bspec *o)
{
    if (!o->n)
        return NULL;
    size_t *idx = xcalloc(o->n, sizeof(*idx));
    bspec_qdict_order(o, idx);
    char *k = xstrdup(o->v[idx[0]].key);
    free(idx);
    return k;
}

/* Moves the keys "prefix.X" of o into sub as "X". */
static void take_prefix(struct bspec *o, const char *prefix, struct bspec *sub)
{
    size_t plen = strlen(prefix);
    for (size_t i = 0; i < o->n;) {
        if (!strncmp(o->v[i].key, prefix, plen) && o->v[i].key[plen] == '.') {
            struct bsv v = o->v[i];
            v.key = o->v[i].key + plen + 1;
            bspec_put(sub, &v, true);
            bspec_del(o, o->v[i].key);
        } else {
            i++;
        }
    }
}

/* The name of a file given as "file:NAME" or plainly (qemu's protocol detection and
 * bdrv_parse_filename_strip_prefix()). */
int blockspec_plain_path(const char *name, char **path, char **errmsg)
{
    if (!strncmp(name, "file:", 5)) {
        const char *rest = name + 5;
        if (!*rest) {
            *errmsg = xstrdup("The 'file' block driver requires a file name");
            return -EINVAL;
        }
        /* a colon left in the rest would look like a protocol again: qemu adds "./" */
        *path = blockspec_has_protocol(rest) ? xasprintf("./%s", rest) : xstrdup(rest);
        return 0;
    }
    if (blockspec_has_protocol(name)) {
        size_t n = strcspn(name, ":");
        char *proto = xasprintf("%.*s", (int)n, name);
        int r;
        if (is_file_protocol(proto)) {
            *path = xstrdup(name + n + 1);
            r = 0;
        } else if (qemu_only_driver(proto) || !strcmp(proto, "nbd") ||
                   !strcmp(proto, "nbd+unix") || !strcmp(proto, "nbd+tcp")) {
            /* a protocol qemu has (NBD: qimg reads and writes it, but creates no image
             * there) */
            *errmsg = xasprintf("Protocol '%s' is not supported by qimg", proto);
            r = -ENOTSUP;
        } else {
            *errmsg = xasprintf("Unknown protocol '%s'", proto);
            r = -EINVAL;
        }
        free(proto);
        return r;
    }
    *path = xstrdup(name);
    return 0;
}

static int unsupported_driver(const char *d, char **errmsg)
{
    if (qemu_only_driver(d)) {
        *errmsg = xasprintf("Driver '%s' is not supported by qimg", d);
        return -ENOTSUP;
    }
    *errmsg = xasprintf("Unknown driver '%s'", d);
    return -EINVAL;
}

/* ---- blkdebug filters ------------------------------------------------------------------------ */

/* blkdebug's own options besides its rules and image (block/blkdebug.c runtime_opts): they
 * change no result qimg gives. */
static bool blkdebug_limit(const char *k)
{
    static const char *const limits[] = {
        "align", "max-transfer", "opt-write-zero", "max-write-zero", "opt-discard",
        "max-discard", "take-child-perms", "unshare-child-perms", "driver", "node-name", NULL,
    };
    for (size_t i = 0; limits[i]; i++) {
        size_t n = strlen(limits[i]);
        if (!strncmp(k, limits[i], n) && (!k[n] || k[n] == '.'))
            return true;
    }
    return false;
}

/* A value as blkdebug's option parser sees it (qemu's keyval/QDict strings). */
static char *bsv_text(const struct bsv *v)
{
    switch (v->type) {
    case BSV_STR: return xstrdup(v->s);
    case BSV_INT: return xasprintf("%" PRId64, v->i);
    case BSV_DOUBLE: return xasprintf("%.17g", v->d);
    case BSV_BOOL: return xstrdup(v->b ? "on" : "off");
    default: return xstrdup("");
    }
}

/* "inject-error.N.key" / "set-state.N.key": the rule's id ("i"/"s" plus N) and its key. */
static bool rule_key(const char *k, char *id, size_t idlen, const char **key)
{
    bool set = !strncmp(k, "set-state.", 10);
    if (!set && strncmp(k, "inject-error.", 13))
        return false;
    const char *idx = k + (set ? 10 : 13), *dot = strchr(idx, '.');
    snprintf(id, idlen, "%c%.*s", set ? 's' : 'i', dot ? (int)(dot - idx) : (int)strlen(idx),
             idx);
    *key = dot ? dot + 1 : NULL;
    return true;
}

/* A blkdebug filter at prefix ("" for the top, "file." or "data-file.") is taken out of o:
 * its "image.X" options become the node's "X", its limits are dropped, its rules
 * (inject-error / set-state lists, one rule per list index) go to rules, its config file's
 * name to *config (read by the opener: resolving a name touches no file). 1 if there was
 * one, 0 if not, -EINVAL with *errmsg on a bad rule. */
static int strip_blkdebug(struct bspec *o, const char *prefix, struct blkdebug_rules *rules,
                          char **config, char **errmsg)
{
    size_t pl = strlen(prefix);
    char *dk = xasprintf("%sdriver", prefix);
    const char *d = str_of(bspec_get(o, dk));
    free(dk);
    if (!d || strcmp(d, "blkdebug"))
        return 0;
    struct bspec out = { 0 }, rk = { 0 };
    int rc = 1;
    for (size_t i = 0; i < o->n; i++) {
        const struct bsv *v = &o->v[i];
        const char *k = v->key;
        if (strncmp(k, prefix, pl)) {
            bspec_put(&out, v, false);
            continue;
        }
        k += pl;
        char id[64];
        const char *rkey;
        if (!strncmp(k, "image.", 6)) {
            struct bsv nv = *v;
            nv.key = xasprintf("%s%s", prefix, k + 6);
            bspec_put(&out, &nv, true);
            free(nv.key);
        } else if (!strcmp(k, "config")) {
            free(*config);
            *config = bsv_text(v);
        } else if (rule_key(k, id, sizeof(id), &rkey)) {
            bspec_put(&rk, v, true);
        } else if (!blkdebug_limit(k)) {
            bspec_put(&out, v, false);
        }
    }
    /* one rule per list index, its keys together whatever order they came in */
    for (size_t i = 0; rc > 0 && i < rk.n; i++) {
        char id[64], id2[64];
        const char *key;
        rule_key(rk.v[i].key + pl, id, sizeof(id), &key);
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++) {
            rule_key(rk.v[j].key + pl, id2, sizeof(id2), &key);
            seen = !strcmp(id, id2);
        }
        if (seen)
            continue;
        blkdebug_rule_start(rules, id[0] == 's');
        for (size_t j = i; rc > 0 && j < rk.n; j++) {
            rule_key(rk.v[j].key + pl, id2, sizeof(id2), &key);
            if (strcmp(id, id2))
                continue;
            if (!key) {
                *errmsg = xasprintf("Invalid parameter '%s'", rk.v[j].key + pl);
                rc = -EINVAL;
                break;
            }
            char *val = bsv_text(&rk.v[j]);
            if (blkdebug_rule_set(rules, key, val, errmsg) < 0)
                rc = -EINVAL;
            free(val);
        }
        if (rc > 0 && blkdebug_rule_done(rules, errmsg) < 0)
            rc = -EINVAL;
    }
    bspec_free(&rk);
    bspec_free(o);
    *o = out;
    return rc;
}

/* "blkdebug:CONFIG:FILE" (qemu's blkdebug_parse_filename; CONFIG may be empty): *rest
 * points at FILE. */
static int blkdebug_plain(const char *name, struct bs_resolved *r, const char **rest,
                          char **errmsg)
{
    const char *c = name + 9, *colon = strchr(c, ':');
    if (!colon) {
        *errmsg = xstrdup("Invalid filename: no colon after the blkdebug config file");
        return -EINVAL;
    }
    if (colon > c)
        r->file_config = xasprintf("%.*s", (int)(colon - c), c);
    r->file_blkdebug = true;
    *rest = colon + 1;
    return 0;
}

/* The nbd protocol node's options out of o into r (address, name, left-over option). */
static int take_nbd(struct bspec *o, struct bs_resolved *r, char **errmsg)
{
    r->nbd = xcalloc(1, sizeof(*r->nbd));
    int rc = blockspec_nbd_take(o, r->nbd, errmsg);
    if (rc < 0)
        return rc;
    r->path = qio_nbd_name(r->nbd);
    r->file_proto = "nbd";
    for (size_t i = 0; i < o->n;)
        if (generic_opt(o->v[i].key))
            bspec_del(o, o->v[i].key);
        else
            i++;
    r->file_unknown = first_key(o);
    return 0;
}

/* The ssh protocol node's options out of o into r (address, name). qemu's ssh driver
 * visits all its options as one QAPI struct: a left-over option is "unexpected", not the
 * protocol's "doesn't support the option". */
static int take_ssh(struct bspec *o, struct bs_resolved *r, char **errmsg)
{
    bspec_del(o, "filename"); /* qemu: an option "filename" of an ssh node is dropped */
    r->ssh = xcalloc(1, sizeof(*r->ssh));
    int rc = blockspec_ssh_take(o, r->ssh, errmsg);
    if (rc < 0)
        return rc;
    r->path = qio_ssh_name(r->ssh);
    r->file_proto = "ssh";
    for (size_t i = 0; i < o->n; i++)
        if (!generic_opt(o->v[i].key)) {
            *errmsg = xasprintf("Parameter '%s' is unexpected", o->v[i].key);
            return -EINVAL;
        }
    return 0;
}

/* qemu's null protocol drivers (block/null.c) by name, or NULL. */
static const char *null_driver(const char *d)
{
    if (d && !strcmp(d, "null-co"))
        return "null-co";
    if (d && !strcmp(d, "null-aio"))
        return "null-aio";
    return NULL;
}

/* The null node's options out of o (null_opts: size, read-zeroes, latency-ns) into r. Its
 * name is "DRV://" (null_refresh_filename) unless a strong option (size, read-zeroes) was
 * given: then qemu names it by its options, which go to *strong (with "driver"). */
static int take_null(struct bspec *o, const char *drv, struct bs_resolved *r,
                     struct bspec *strong, char **errmsg)
{
    r->null_drv = drv;
    r->null_size = QIO_NULL_DEFAULT_SIZE;
    r->file_proto = drv;
    const struct bsv *v;
    if ((v = bspec_get(o, "size")) && opt_size(v, "size", &r->null_size, errmsg) < 0)
        return -EINVAL;
    if ((v = bspec_get(o, "read-zeroes")) && opt_bool(v, &r->null_zeroes, errmsg) < 0)
        return -EINVAL;
    if ((v = bspec_get(o, "latency-ns"))) {
        uint64_t ns; /* only the delay of each request: no result depends on it */
        if (v->type == BSV_STR ? parse_size_ex(v->s, &ns) != 0
                               : !(v->type == BSV_INT && v->i >= 0)) {
            *errmsg = xstrdup("Parameter 'latency-ns' expects a number");
            return -EINVAL;
        }
    }
    r->path = xasprintf("%s://", drv);
    bspec_put_str(strong, "driver", drv, true);
    static const char *const keys[] = { "size", "read-zeroes" };
    for (size_t i = 0; i < 2; i++)
        if ((v = bspec_get(o, keys[i])))
            bspec_put(strong, v, true);
    bspec_del(o, "size");
    bspec_del(o, "read-zeroes");
    bspec_del(o, "latency-ns");
    for (size_t i = 0; i < o->n;)
        if (generic_opt(o->v[i].key))
            bspec_del(o, o->v[i].key);
        else
            i++;
    r->file_unknown = first_key(o);
    return 0;
}

/* "json:" + the options of a node named by them, or NULL when only "driver" is there. */
static char *strong_name(const struct bspec *strong)
{
    if (strong->n <= 1)
        return NULL;
    char *j = bspec_to_json(strong);
    char *n = xasprintf("json:%s", j);
    free(j);
    return n;
}

/* The quorum node's options out of o (quorum_open: children first, then vote-threshold,
 * read-pattern, the threshold's range, blkverify / rewrite-corrupted) into r; its name
 * (json: of its options, as qemu names it) in r->path. Children must be files. */
static int take_quorum(struct bspec *o, struct bs_resolved *r, char **errmsg)
{
    struct bspec named = { 0 };
    for (size_t i = 0; i < o->n; i++)
        if (!generic_opt(o->v[i].key) || !strcmp(o->v[i].key, "driver"))
            bspec_put(&named, &o->v[i], true);
    char *j = bspec_to_json(&named);
    r->path = xasprintf("json:%s", j);
    free(j);
    bspec_free(&named);

    size_t n = 0;
    for (;; n++) {
        char *k = xasprintf("children.%zu", n);
        bool has = bspec_get(o, k) != NULL;
        for (size_t i = 0; !has && i < o->n; i++)
            has = !strncmp(o->v[i].key, k, strlen(k)) && o->v[i].key[strlen(k)] == '.';
        free(k);
        if (!has)
            break;
    }
    /* qdict_array_entries: every "children.X" must be one of the indexes 0..n-1 */
    for (size_t i = 0; i < o->n; i++) {
        const char *k = o->v[i].key;
        if (strncmp(k, "children.", 9))
            continue;
        char *end;
        unsigned long long x = strtoull(k + 9, &end, 10);
        if (k[9] < '0' || k[9] > '9' || (*end && *end != '.') || x >= n) {
            *errmsg = xstrdup("Option children is not a valid array");
            return -EINVAL;
        }
    }
    if (n < 1) {
        *errmsg = xstrdup("Number of provided children must be 1 or more");
        return -EINVAL;
    }
    const struct bsv *v = bspec_get(o, "vote-threshold");
    int64_t t = 0;
    if (v) {
        char *end = NULL;
        if (v->type == BSV_INT)
            t = v->i;
        else if (v->type == BSV_STR && v->s[0])
            t = strtoll(v->s, &end, 0);
        if (!(v->type == BSV_INT || (v->type == BSV_STR && v->s[0] && !*end))) {
            *errmsg = xstrdup("Parameter 'vote-threshold' expects a number");
            return -EINVAL;
        }
    }
    const char *rp = str_of(bspec_get(o, "read-pattern"));
    if (rp && strcmp(rp, "quorum") && strcmp(rp, "fifo")) {
        *errmsg = xstrdup("Please set read-pattern as fifo or quorum");
        return -EINVAL;
    }
    r->quorum_fifo = rp && !strcmp(rp, "fifo");
    if (r->quorum_fifo)
        t = 1; /* quorum_open: fifo reads one child, the threshold is 1 */
    if (t < 1) {
        *errmsg = xstrdup("Parameter 'vote-threshold' expects a value >= 1");
        return -EINVAL;
    }
    if ((uint64_t)t > n) {
        *errmsg = xstrdup("threshold may not exceed children count");
        return -EINVAL;
    }
    r->quorum_threshold = (int)t;
    bool bv = false, rw = false;
    if ((v = bspec_get(o, "blkverify")) && opt_bool(v, &bv, errmsg) < 0)
        return -EINVAL;
    if ((v = bspec_get(o, "rewrite-corrupted")) && opt_bool(v, &rw, errmsg) < 0)
        return -EINVAL;
    if (bv && (n != 2 || t != 2)) {
        *errmsg = xstrdup("blkverify=on can only be set if there are exactly two files and "
                          "vote-threshold is 2");
        return -EINVAL;
    }
    if (rw && bv) {
        *errmsg = xstrdup("rewrite-corrupted=on cannot be used with blkverify=on");
        return -EINVAL;
    }
    r->quorum_paths = xcalloc(n, sizeof(*r->quorum_paths));
    r->quorum_n = n;
    for (size_t c = 0; c < n; c++) {
        char *pre = xasprintf("children.%zu", c);
        struct bspec ch = { 0 };
        const struct bsv *ref = bspec_get(o, pre);
        if (ref && ref->type != BSV_STR) {
            *errmsg = xasprintf("A block device must be specified for \"%s\"", pre);
            free(pre);
            return -EINVAL;
        }
        if (ref && ref->type == BSV_STR) {
            *errmsg = xasprintf("Cannot find device='%s' nor node-name='%s'", ref->s, ref->s);
            free(pre);
            return -EINVAL;
        }
        take_prefix(o, pre, &ch);
        bspec_del(o, pre);
        free(pre);
        const char *cd = str_of(bspec_get(&ch, "driver"));
        const char *cf = str_of(bspec_get(&ch, "filename"));
        int rc = 0;
        if (!cd) {
            *errmsg = xstrdup("Must specify either driver or file");
            rc = -EINVAL;
        } else if (!is_file_protocol(cd)) {
            *errmsg = xasprintf("Quorum children of driver '%s' are not supported by qimg",
                                cd);
            rc = -ENOTSUP;
        } else if (!cf) {
            *errmsg = xasprintf("The '%s' block driver requires a file name", cd);
            rc = -EINVAL;
        }
        if (rc == 0) {
            r->quorum_paths[c] = xstrdup(cf);
            for (size_t i = 0; i < ch.n;)
                if (file_opt(ch.v[i].key))
                    bspec_del(&ch, ch.v[i].key);
                else
                    i++;
            if (ch.n && !r->file_unknown) {
                r->file_unknown = first_key(&ch);
                r->file_proto = "file";
            }
        }
        bspec_free(&ch);
        if (rc < 0)
            return rc;
    }
    static const char *const own[] = { "vote-threshold", "read-pattern", "blkverify",
                                       "rewrite-corrupted", NULL };
    for (int i = 0; own[i]; i++)
        bspec_del(o, own[i]);
    for (size_t i = 0; i < o->n;)
        if (generic_opt(o->v[i].key))
            bspec_del(o, o->v[i].key);
        else
            i++;
    r->quorum_unknown = first_key(o);
    return 0;
}

int blockspec_resolve(const char *filename, const struct bspec *opts, const char *fmt,
                      bool with_backing, struct bs_resolved *r, char **errmsg)
{
    memset(r, 0, sizeof(*r));
    struct bspec o = { 0 }, file = { 0 };
    char *fname = NULL;
    bool inline_rules = false, top_inline = false;
    struct bspec file_bd = { 0 }; /* the file's blkdebug options as given (its json: name) */
    int data_bd = 0;
    int rc = -EINVAL;
    if (opts)
        for (size_t i = 0; i < opts->n; i++)
            bspec_put(&o, &opts->v[i], true);
    if (fmt) /* -f and the backing format stored in the overlay win over json:'s driver */
        bspec_put_str(&o, "driver", fmt, false);
    if (filename && !strncmp(filename, "json:", 5)) {
        struct bspec j = { 0 };
        if (bspec_parse_json(filename + 5, &j, errmsg) < 0) {
            bspec_free(&j);
            goto out;
        }
        for (size_t i = 0; i < j.n; i++)
            bspec_put(&o, &j.v[i], false);
        bspec_free(&j);
        filename = NULL;
    }

    /* blkdebug filters are looked through (see blockspec.h) */
    if (filename && !strncmp(filename, "blkdebug:", 9) &&
        (rc = blkdebug_plain(filename, r, &filename, errmsg)) < 0)
        goto out;
    struct blkdebug_rules other = { 0 };
    file_bd = (struct bspec){ 0 };
    int sb = strip_blkdebug(&o, "", &r->top_rules, &r->top_config, errmsg);
    top_inline = r->top_rules.n > 0;
    if (sb > 0) {
        r->top_blkdebug = true;
        /* blkdebug_open: the image child is opened as a protocol node when it names no
         * driver */
        if (!bspec_get(&o, "driver"))
            bspec_put_str(&o, "driver", "file", true);
    }
    if (sb >= 0) {
        for (size_t i = 0; i < o.n; i++)
            inline_rules |= !strncmp(o.v[i].key, "file.inject-error.", 18) ||
                            !strncmp(o.v[i].key, "file.set-state.", 15);
        for (size_t i = 0; inline_rules && i < o.n; i++)
            if (!strncmp(o.v[i].key, "file.", 5))
                bspec_put(&file_bd, &o.v[i], true);
        sb = strip_blkdebug(&o, "file.", &r->rules, &r->file_config, errmsg);
        r->file_blkdebug |= sb > 0;
    }
    if (sb >= 0 && (data_bd = strip_blkdebug(&o, "data-file.", &other, &r->other_config[1],
                                             errmsg)) < 0)
        sb = data_bd;
    r->other_rules = other.n > 0;
    blkdebug_rules_free(&other);
    if (sb < 0) {
        rc = sb;
        goto out;
    }
    rc = -EINVAL;
    /* cache.direct of the node or of its file */
    static const char *const direct_keys[] = { "cache.direct", "file.cache.direct" };
    for (size_t i = 0; i < 2; i++) {
        const struct bsv *cd = bspec_get(&o, direct_keys[i]);
        bool on;
        if (cd && opt_bool(cd, &on, errmsg) < 0)
            goto out;
        if (cd)
            r->direct = on;
    }

    const struct bsv *fv = bspec_get(&o, "file");
    if (fv && fv->type == BSV_STR) { /* a node reference: qimg has no other nodes */
        bool more = false;
        for (size_t i = 0; i < o.n; i++)
            more |= !strncmp(o.v[i].key, "file.", 5);
        *errmsg = more ? xstrdup("Cannot reference an existing block device with additional "
                                 "options or a new filename")
                       : xasprintf("Cannot find device='%s' nor node-name='%s'", fv->s, fv->s);
        goto out;
    }
    const struct bsv *dv = bspec_get(&o, "driver");
    if (dv && dv->type != BSV_STR) {
        *errmsg = xstrdup("Invalid parameter type for 'driver', expected: string");
        goto out;
    }
    const char *drv = str_of(dv);
    if (filename && blockspec_is_nbd_name(filename)) {
        /* the nbd protocol's options, on the node itself with driver=nbd, else on the
         * protocol node under the (given or probed) format */
        struct bspec nb = { 0 };
        if ((rc = blockspec_nbd_parse_name(filename, &nb, errmsg)) < 0) {
            bspec_free(&nb);
            goto out;
        }
        bool top = drv && !strcmp(drv, "nbd");
        for (size_t i = 0; i < nb.n; i++) {
            struct bsv v = nb.v[i];
            char *k = top ? xstrdup(v.key) : xasprintf("file.%s", v.key);
            v.key = k;
            bspec_put(&o, &v, false);
            free(k);
        }
        if (!top)
            bspec_put_str(&o, "file.driver", "nbd", false);
        bspec_free(&nb);
        filename = NULL;
        rc = -EINVAL;
    }
    if (filename && blockspec_is_ssh_name(filename)) {
        /* ssh_parse_filename: the ssh driver's options, on the node itself with
         * driver=ssh, else on the protocol node under the (given or probed) format */
        bool top = drv && !strcmp(drv, "ssh");
        struct bspec given = { 0 }, nb = { 0 };
        for (size_t i = 0; !top && i < o.n; i++)
            if (!strncmp(o.v[i].key, "file.", 5)) {
                struct bsv v = o.v[i];
                v.key = o.v[i].key + 5;
                bspec_put(&given, &v, true);
            }
        bool conflict = blockspec_ssh_name_conflict(top ? &o : &given);
        bspec_free(&given);
        if (conflict) {
            *errmsg = xstrdup("user, host, port, path, host_key_check cannot be used at the "
                              "same time as a file option");
            goto out;
        }
        if ((rc = blockspec_ssh_parse_name(filename, &nb, errmsg)) < 0) {
            bspec_free(&nb);
            goto out;
        }
        for (size_t i = 0; i < nb.n; i++) {
            struct bsv v = nb.v[i];
            char *k = top ? xstrdup(v.key) : xasprintf("file.%s", v.key);
            v.key = k;
            bspec_put(&o, &v, false);
            free(k);
        }
        if (!top)
            bspec_put_str(&o, "file.driver", "ssh", false);
        bspec_free(&nb);
        filename = NULL;
        rc = -EINVAL;
    }
    const char *pnull = NULL;
    if (filename && blockspec_has_protocol(filename)) {
        size_t n = strcspn(filename, ":");
        pnull = n == 7 && !strncmp(filename, "null-co", n)    ? "null-co"
                : n == 8 && !strncmp(filename, "null-aio", n) ? "null-aio"
                                                              : NULL;
    }
    if (pnull) {
        /* null_file_parse_filename: the protocol's one name, the node itself with
         * driver=null-co, else the file under the (given or probed) format */
        if (strcmp(filename + strlen(pnull), "://")) {
            *errmsg = xasprintf("The only allowed filename for this driver is '%s://'", pnull);
            goto out;
        }
        if (!drv || strcmp(drv, pnull))
            bspec_put_str(&o, "file.driver", pnull, false);
        filename = NULL;
    }
    if (filename) {
        rc = blockspec_plain_path(filename, &fname, errmsg);
        if (rc < 0)
            goto out;
        rc = -EINVAL;
    }
    const struct bsv *ro = bspec_get(&o, "read-only");
    if (ro && (rc = opt_bool(ro, &r->read_only, errmsg)) < 0)
        goto out;
    rc = -EINVAL;

    if (drv && is_file_protocol(drv)) {
        /* the protocol node is the image ("file format: file") */
        const char *fn = str_of(bspec_get(&o, "filename"));
        if (!fn && !fname) {
            *errmsg = xasprintf("The '%s' block driver requires a file name", drv);
            goto out;
        }
        r->path = xstrdup(fn ? fn : fname);
        r->format = xstrdup("file");
        r->protocol_only = true;
        bspec_del(&o, "backing"); /* qemu drops it on every node */
        for (size_t i = 0; i < o.n;)
            if (file_opt(o.v[i].key))
                bspec_del(&o, o.v[i].key);
            else
                i++;
        r->file_unknown = first_key(&o);
        rc = 0;
        goto out;
    }
    if (drv && !strcmp(drv, "nbd")) {
        bspec_del(&o, "backing"); /* qemu drops it on every node */
        if ((rc = take_nbd(&o, r, errmsg)) < 0)
            goto out;
        r->format = xstrdup("nbd");
        r->protocol_only = true;
        goto out;
    }
    if (drv && !strcmp(drv, "ssh")) {
        bspec_del(&o, "backing"); /* qemu drops it on every node */
        if ((rc = take_ssh(&o, r, errmsg)) < 0)
            goto out;
        r->format = xstrdup("ssh");
        r->protocol_only = true;
        goto out;
    }
    if (drv && !strcmp(drv, "quorum")) {
        bspec_del(&o, "backing"); /* qemu drops it on every node */
        if ((rc = take_quorum(&o, r, errmsg)) < 0)
            goto out;
        r->format = xstrdup("quorum");
        r->protocol_only = true;
        goto out;
    }
    if (null_driver(drv)) {
        struct bspec strong = { 0 };
        bspec_del(&o, "backing"); /* qemu drops it on every node */
        rc = take_null(&o, null_driver(drv), r, &strong, errmsg);
        r->display = rc < 0 ? NULL : strong_name(&strong);
        bspec_free(&strong);
        if (rc < 0)
            goto out;
        r->format = xstrdup(r->null_drv);
        r->protocol_only = true;
        goto out;
    }
    if (drv && !known_format(drv)) {
        rc = unsupported_driver(drv, errmsg);
        goto out;
    }
    take_prefix(&o, "file", &file);
    bspec_del(&o, "file"); /* an empty "file": {} */
    if (file.n) {
        const char *fd = str_of(bspec_get(&file, "driver"));
        if (fd && !strcmp(fd, "nbd")) {
            if ((rc = take_nbd(&file, r, errmsg)) < 0)
                goto out;
            rc = -EINVAL;
        } else if (fd && !strcmp(fd, "ssh")) {
            if ((rc = take_ssh(&file, r, errmsg)) < 0)
                goto out;
            rc = -EINVAL;
        } else if (fd && !strcmp(fd, "quorum")) {
            /* the format node is named by its options, its file's among them */
            struct bspec d = { 0 };
            if (drv)
                bspec_put_str(&d, "driver", drv, true);
            for (size_t i = 0; i < file.n; i++)
                if (!generic_opt(file.v[i].key) || !strcmp(file.v[i].key, "driver")) {
                    struct bsv fv2 = file.v[i];
                    fv2.key = xasprintf("file.%s", file.v[i].key);
                    bspec_put(&d, &fv2, true);
                    free(fv2.key);
                }
            r->display = strong_name(&d);
            bspec_free(&d);
            if ((rc = take_quorum(&file, r, errmsg)) < 0)
                goto out;
            rc = -EINVAL;
        } else if (null_driver(fd)) {
            struct bspec strong = { 0 };
            rc = take_null(&file, null_driver(fd), r, &strong, errmsg);
            if (rc == 0 && drv && strong.n > 1) {
                /* the format node is named by its options, its file's among them */
                struct bspec d = { 0 };
                bspec_put_str(&d, "driver", drv, true);
                for (size_t i = 0; i < strong.n; i++) {
                    struct bsv fv2 = strong.v[i];
                    fv2.key = xasprintf("file.%s", strong.v[i].key);
                    bspec_put(&d, &fv2, true);
                    free(fv2.key);
                }
                r->display = strong_name(&d);
                bspec_free(&d);
            }
            bspec_free(&strong);
            if (rc < 0)
                goto out;
            rc = -EINVAL;
        } else if (fd && !is_file_protocol(fd)) {
            rc = known_format(fd) ? -EINVAL : unsupported_driver(fd, errmsg);
            if (known_format(fd))
                *errmsg = xstrdup("A block device must be specified for \"file\"");
            goto out;
        }
        const char *fn = str_of(bspec_get(&file, "filename"));
        if (r->nbd || r->ssh || r->null_drv || r->quorum_n) {
            /* taken above */
        } else if (!fn) {
            *errmsg = xasprintf("The '%s' block driver requires a file name", fd ? fd : "file");
            goto out;
        } else {
            r->path = xstrdup(fn);
            for (size_t i = 0; i < file.n;)
                if (file_opt(file.v[i].key))
                    bspec_del(&file, file.v[i].key);
                else
                    i++;
            r->file_unknown = first_key(&file);
        }
    } else if (fname) {
        r->path = xstrdup(fname);
    } else {
        *errmsg = xstrdup(drv ? "A block device must be specified for \"file\""
                              : "Must specify either driver or file");
        goto out;
    }
    r->format = drv ? xstrdup(drv) : NULL;

    /* backing: null, a reference, or options of its own */
    const struct bsv *bv = bspec_get(&o, "backing");
    if (bv && bv->type == BSV_NULL) {
        r->backing = BS_BACKING_NONE;
        bspec_del(&o, "backing");
    } else if (bv && bv->type == BSV_STR && with_backing) {
        /* qemu finds out when it opens the backing image */
        *errmsg = xasprintf("Could not open backing file: Cannot find device='%s' nor "
                            "node-name='%s'", bv->s, bv->s);
        goto out;
    }
    bool takes_backing = !drv || strcmp(drv, "raw") != 0;
    if (with_backing && takes_backing) {
        take_prefix(&o, "backing", &r->backing_opts);
        if (r->backing_opts.n)
            r->backing = BS_BACKING_OPTS;
    }

    /* qcow2's external data file: a file of its own, or null (qemu: no child) */
    const struct bsv *df = bspec_get(&o, "data-file");
    if (df && df->type == BSV_STR) {
        *errmsg = xasprintf("Cannot find device='%s' nor node-name='%s'", df->s, df->s);
        goto out;
    }
    if (df && df->type == BSV_NULL)
        bspec_del(&o, "data-file");
    if (!drv || !strcmp(drv, "qcow2")) {
        struct bspec dfo = { 0 };
        take_prefix(&o, "data-file", &dfo);
        const char *dd = str_of(bspec_get(&dfo, "driver"));
        const char *dn = str_of(bspec_get(&dfo, "filename"));
        if (dfo.n && dd && !is_file_protocol(dd)) {
            rc = unsupported_driver(dd, errmsg);
            bspec_free(&dfo);
            goto out;
        }
        if (dfo.n && !dn) {
            *errmsg = xasprintf("The '%s' block driver requires a file name", dd ? dd : "file");
            bspec_free(&dfo);
            goto out;
        }
        if (dn) {
            r->data_file = xstrdup(dn);
            /* blkdebug_refresh_filename: "blkdebug:CONFIG:IMAGE" */
            r->data_label = data_bd > 0 ? xasprintf("blkdebug::%s", dn) : xstrdup(dn);
        }
        bspec_free(&dfo);
    }

    if (drv && !strcmp(drv, "raw")) {
        const struct bsv *v;
        if ((v = bspec_get(&o, "offset"))) {
            if ((rc = opt_size(v, "offset", &r->offset, errmsg)) < 0)
                goto out;
            r->has_offset = true;
        }
        if ((v = bspec_get(&o, "size"))) {
            if ((rc = opt_size(v, "size", &r->size, errmsg)) < 0)
                goto out;
            r->has_size = true;
        }
        rc = -EINVAL;
        if (r->has_offset || r->has_size) {
            /* strong options: qemu names the node by its options (bdrv_refresh_filename) */
            struct bspec d = { 0 };
            bspec_put_str(&d, "driver", "raw", true);
            if ((v = bspec_get(&o, "offset")))
                bspec_put(&d, v, true);
            if ((v = bspec_get(&o, "size")))
                bspec_put(&d, v, true);
            bspec_put_str(&d, "file.driver", "file", true);
            bspec_put_str(&d, "file.filename", r->path, true);
            char *j = bspec_to_json(&d);
            r->display = xasprintf("json:%s", j);
            free(j);
            bspec_free(&d);
        }
    }
    /* blkdebug_refresh_filename; with inline rules qemu shows a json: name instead: the
     * format's driver and its file's options (qimg nests the rule lists that qemu prints
     * as flat "set-state.0.event" keys) */
    if (r->file_blkdebug && inline_rules && drv && !r->display) {
        struct bspec d = { 0 };
        bspec_put_str(&d, "driver", drv, true);
        for (size_t i = 0; i < file_bd.n; i++)
            bspec_put(&d, &file_bd.v[i], true);
        if (bspec_get(&d, "file.image.filename") && !bspec_get(&d, "file.image.driver"))
            bspec_put_str(&d, "file.image.driver", "file", true);
        r->display = strong_name(&d);
        bspec_free(&d);
    }
    if (r->file_blkdebug && !inline_rules)
        r->file_display = xasprintf("blkdebug:%s:%s", r->file_config ? r->file_config : "",
                                    r->path);
    /* the key of an encrypted image (the drivers unlock with it, util/secrets.h); the keys
     * stay in rest, where the format check takes them for the formats that have them */
    const struct bsv *ks = bspec_get(&o, "encrypt.key-secret");
    if (!ks)
        ks = bspec_get(&o, "key-secret");
    if (ks)
        r->key_secret = bsv_text(ks);
    if ((ks = bspec_get(&o, "encrypt.format")))
        r->encrypt_format = bsv_text(ks);
    /* what is left is checked against the format's options once the format is known */
    for (size_t i = 0; i < o.n; i++)
        bspec_put(&r->rest, &o.v[i], true);
    rc = 0;
out:
    bspec_free(&file_bd);
    if (rc == 0 && r->top_blkdebug && !top_inline) { /* blkdebug_refresh_filename */
        const char *inner = r->display ? r->display : r->path;
        struct bspec in = { 0 };
        char *ignored = NULL;
        if (strncmp(inner, "json:", 5)) {
            r->top_display = xasprintf("blkdebug:%s:%s", r->top_config ? r->top_config : "",
                                       inner);
        } else if (bspec_parse_json(inner + 5, &in, &ignored) == 0) {
            /* an image without a plain name: qemu names the filter by its options too */
            struct bspec d = { 0 };
            bspec_put_str(&d, "driver", "blkdebug", true);
            if (r->top_config)
                bspec_put_str(&d, "config", r->top_config, true);
            for (size_t i = 0; i < in.n; i++) {
                struct bsv v = in.v[i];
                v.key = xasprintf("image.%s", in.v[i].key);
                bspec_put(&d, &v, true);
                free(v.key);
            }
            r->top_display = strong_name(&d);
            bspec_free(&d);
        }
        free(ignored);
        bspec_free(&in);
    }
    if (rc < 0)
        blockspec_resolved_free(r);
    free(fname);
    bspec_free(&o);
    bspec_free(&file);
    return rc;
}

char *blockspec_file_unknown_msg(const struct bs_resolved *r)
{
    if (!r->file_unknown)
        return NULL;
    return xasprintf("Block protocol '%s' doesn't support the option '%s'",
                     r->file_proto ? r->file_proto : "file", r->file_unknown);
}

char *blockspec_format_unknown_msg(const struct bs_resolved *r, const char *format)
{
    struct bspec o = { 0 };
    for (size_t i = 0; i < r->rest.n; i++)
        if (!format_opt(format, r->rest.v[i].key))
            bspec_put(&o, &r->rest.v[i], true);
    char *k = first_key(&o);
    bspec_free(&o);
    if (!k)
        return NULL;
    char *m = xasprintf("Block format '%s' does not support the option '%s'", format, k);
    free(k);
    return m;
}

void blockspec_resolved_free(struct bs_resolved *r)
{
    free(r->format);
    free(r->path);
    free(r->file_unknown);
    free(r->data_file);
    free(r->display);
    free(r->file_display);
    free(r->data_label);
    free(r->key_secret);
    free(r->encrypt_format);
    free(r->file_config);
    free(r->other_config[0]);
    free(r->top_config);
    for (size_t i = 0; i < r->quorum_n; i++)
        free(r->quorum_paths[i]);
    free(r->quorum_paths);
    free(r->quorum_unknown);
    free(r->top_display);
    blkdebug_rules_free(&r->top_rules);
    free(r->other_config[1]);
    blkdebug_rules_free(&r->rules);
    if (r->nbd) {
        qio_nbd_addr_free(r->nbd);
        free(r->nbd);
    }
    if (r->ssh) {
        qio_ssh_addr_free(r->ssh);
        free(r->ssh);
    }
    bspec_free(&r->rest);
    bspec_free(&r->backing_opts);
    memset(r, 0, sizeof(*r));
}

/* Reads a blkdebug config file into *rules: the file's rules first, then the inline ones
 * already in *rules (qemu's order). */
static int read_config_rules(const char *config, struct blkdebug_rules *rules, char **errmsg)
{
    struct blkdebug_rules c = { 0 };
    if (blkdebug_read_config(config, &c, errmsg) < 0) {
        blkdebug_rules_free(&c);
        return -EINVAL;
    }
    if (rules->n) {
        c.v = xreallocarray(c.v, c.n + rules->n, sizeof(*c.v));
        memcpy(c.v + c.n, rules->v, rules->n * sizeof(*c.v));
        c.n += rules->n;
    }
    if (!c.unsupported && rules->unsupported)
        c.unsupported = xstrdup(rules->unsupported);
    blkdebug_rules_free(rules);
    *rules = c;
    return 0;
}

int blockspec_read_blkdebug(struct bs_resolved *r, char **errmsg)
{
    if (r->file_config && read_config_rules(r->file_config, &r->rules, errmsg) < 0)
        return -EINVAL;
    if (r->top_config && read_config_rules(r->top_config, &r->top_rules, errmsg) < 0)
        return -EINVAL;
    for (int i = 0; i < 2; i++) {
        if (!r->other_config[i])
            continue;
        struct blkdebug_rules c = { 0 };
        int rc = blkdebug_read_config(r->other_config[i], &c, errmsg);
        r->other_rules |= c.n > 0;
        blkdebug_rules_free(&c);
        if (rc < 0)
            return -EINVAL;
    }
    return 0;
}
