/* --image-opts and json: image names (qemu's bdrv_open options: keyval/QemuOpts for
 * --image-opts, parse_json_filename + qdict_flatten for json:), for the subset qimg opens:
 * one format driver over the file protocol, optionally an external data file. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/spec.h"
#include "io/blkdebug.h"
#include "util/xalloc.h"

struct kv {
    char **k, **v;
    size_t n;
};

static void kv_add(struct kv *l, char *k, char *v)
{
    l->k = xreallocarray(l->k, l->n + 1, sizeof(*l->k));
    l->v = xreallocarray(l->v, l->n + 1, sizeof(*l->v));
    l->k[l->n] = k;
    l->v[l->n] = v;
    l->n++;
}

static void kv_free(struct kv *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->k[i]);
        free(l->v[i]);
    }
    free(l->k);
    free(l->v);
}

/* "key=value,..." with ",," for a comma (QemuOpts); a bare first element is the value of
 * "file" (qemu's implied key), a later bare key is "on". */
static void parse_opts(const char *s, struct kv *l)
{
    bool first = true;
    while (*s) {
        size_t cap = strlen(s) + 1, n = 0;
        char *buf = xmalloc(cap);
        for (; *s; s++) {
            if (*s == ',') {
                if (s[1] != ',')
                    break;
                s++;
            }
            buf[n++] = *s;
        }
        buf[n] = '\0';
        if (*s == ',')
            s++;
        char *eq = strchr(buf, '=');
        if (eq) {
            *eq = '\0';
            kv_add(l, xstrdup(buf), xstrdup(eq + 1));
        } else if (n && first) {
            kv_add(l, xstrdup("file"), xstrdup(buf));
        } else if (n) {
            kv_add(l, xstrdup(buf), xstrdup("on"));
        }
        first = false;
        free(buf);
    }
}

/* A small JSON reader for qemu's dialect (strings in '...' or "..."), flattening objects
 * into "a.b" keys; scalars keep their text. Arrays are refused (no option qimg takes has
 * one). -1 with *err set on failure. */
struct jp {
    const char *p;
    const char *err;
};

static void ws(struct jp *j)
{
    while (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')
        j->p++;
}

static char *jstring(struct jp *j)
{
    char q = *j->p++;
    size_t cap = strlen(j->p) + 1, n = 0;
    char *out = xmalloc(cap);
    while (*j->p && *j->p != q) {
        char c = *j->p++;
        if (c == '\\') {
            c = *j->p++;
            switch (c) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case '"': case '\'': case '\\': case '/': break;
            default:
                free(out);
                j->err = "JSON parse error, invalid escape";
                return NULL;
            }
        }
        out[n++] = c;
    }
    if (*j->p != q) {
        free(out);
        j->err = "JSON parse error, premature EOI";
        return NULL;
    }
    j->p++;
    out[n] = '\0';
    return out;
}

static int jobject(struct jp *j, const char *prefix, struct kv *l);

static int jvalue(struct jp *j, const char *key, struct kv *l)
{
    ws(j);
    char c = *j->p;
    if (c == '{')
        return jobject(j, key, l);
    if (c == '"' || c == '\'') {
        char *s = jstring(j);
        if (!s)
            return -1;
        kv_add(l, xstrdup(key), s);
        return 0;
    }
    if (c == '[') { /* elements flatten to "key.0", "key.1", ... as qdict_flatten's */
        j->p++;
        ws(j);
        if (*j->p == ']') {
            j->p++;
            return 0;
        }
        for (unsigned i = 0;; i++) {
            char *k = xasprintf("%s.%u", key, i);
            int r = jvalue(j, k, l);
            free(k);
            if (r < 0)
                return r;
            ws(j);
            if (*j->p == ',') {
                j->p++;
                continue;
            }
            if (*j->p == ']') {
                j->p++;
                return 0;
            }
            j->err = *j->p ? "JSON parse error, expecting ',' or ']'"
                           : "JSON parse error, premature EOI";
            return -1;
        }
    }
    const char *start = j->p;
    while (*j->p && !strchr(",}] \t\r\n", *j->p))
        j->p++;
    if (j->p == start) {
        j->err = *j->p ? "JSON parse error, invalid token" : "JSON parse error, premature EOI";
        return -1;
    }
    kv_add(l, xstrdup(key), xasprintf("%.*s", (int)(j->p - start), start));
    return 0;
}

static int jobject(struct jp *j, const char *prefix, struct kv *l)
{
    j->p++; /* '{' */
    ws(j);
    if (*j->p == '}') {
        j->p++;
        return 0;
    }
    for (;;) {
        ws(j);
        if (*j->p != '"' && *j->p != '\'') {
            j->err = *j->p ? "JSON parse error, invalid token" : "JSON parse error, premature EOI";
            return -1;
        }
        char *k = jstring(j);
        if (!k)
            return -1;
        ws(j);
        if (*j->p != ':') {
            free(k);
            j->err = *j->p ? "JSON parse error, expecting ':'" : "JSON parse error, premature EOI";
            return -1;
        }
        j->p++;
        char *full = prefix ? xasprintf("%s.%s", prefix, k) : xstrdup(k);
        free(k);
        int r = jvalue(j, full, l);
        free(full);
        if (r < 0)
            return r;
        ws(j);
        if (*j->p == ',') {
            j->p++;
            continue;
        }
        if (*j->p == '}') {
            j->p++;
            return 0;
        }
        j->err = *j->p ? "JSON parse error, expecting ',' or '}'" : "JSON parse error, premature EOI";
        return -1;
    }
}

bool image_spec_is_json(const char *name)
{
    return !strncmp(name, "json:", 5);
}

/* blkdebug's own options besides its rules (block/blkdebug.c runtime_opts). */
static bool blkdebug_limit(const char *k)
{
    static const char *const limits[] = {
        "align", "max-transfer", "opt-write-zero", "max-write-zero", "opt-discard",
        "max-discard", "take-child-perms", "unshare-child-perms", "driver", NULL,
    };
    for (size_t i = 0; limits[i]; i++)
        if (!strcmp(k, limits[i]) || (!strncmp(k, limits[i], strlen(limits[i])) &&
                                      k[strlen(limits[i])] == '.'))
            return true;
    return false;
}

/* One rule option, "inject-error.N.key" or "set-state.N.key" (N: the rule's index in its
 * list; a new N starts a new rule). 1 if k is one, 0 if not, -1 on a bad rule. */
static int rule_option(struct blkdebug_rules *r, const char *k, const char *v, char *cur,
                       size_t curlen, char **errmsg)
{
    bool set = !strncmp(k, "set-state.", 10);
    if (!set && strncmp(k, "inject-error.", 13))
        return 0;
    const char *idx = k + (set ? 10 : 13);
    const char *dot = strchr(idx, '.');
    if (!dot) {
        *errmsg = xasprintf("Invalid parameter '%s'", k);
        return -1;
    }
    char id[64];
    snprintf(id, sizeof(id), "%c%.*s", set ? 's' : 'i', (int)(dot - idx), idx);
    if (strcmp(id, cur)) {
        if (cur[0] && blkdebug_rule_done(r, errmsg) < 0)
            return -1;
        blkdebug_rule_start(r, set);
        snprintf(cur, curlen, "%s", id);
    }
    return blkdebug_rule_set(r, dot + 1, v, errmsg) < 0 ? -1 : 1;
}

/* A blkdebug filter node at prefix ("" for the top, "file." or "data-file.") is taken out:
 * its "image.X" options become the node's "X", its limits are dropped, its rules (and
 * config file) collected into rules. 1 if there was one, 0 if not, -1 on a bad rule. */
static int strip_blkdebug(struct kv *l, const char *prefix, struct blkdebug_rules *rules,
                          char **errmsg)
{
    size_t pl = strlen(prefix);
    bool is_blkdebug = false;
    for (size_t i = 0; i < l->n; i++)
        if (!strncmp(l->k[i], prefix, pl) && !strcmp(l->k[i] + pl, "driver") &&
            !strcmp(l->v[i], "blkdebug"))
            is_blkdebug = true;
    if (!is_blkdebug)
        return 0;
    size_t o = 0;
    int r = 1;
    char cur[64] = "";
    for (size_t i = 0; i < l->n; i++) {
        char *k = l->k[i];
        int ro = 0;
        if (!strncmp(k, prefix, pl) && !strncmp(k + pl, "image.", 6)) {
            char *nk = xasprintf("%s%s", prefix, k + pl + 6);
            free(k);
            l->k[o] = nk;
            l->v[o++] = l->v[i];
            continue;
        }
        if (!strncmp(k, prefix, pl) && r > 0 && !strcmp(k + pl, "config")) {
            if (blkdebug_read_config(l->v[i], rules, errmsg) < 0)
                r = -1;
            ro = 1;
        } else if (!strncmp(k, prefix, pl) && r > 0) {
            ro = rule_option(rules, k + pl, l->v[i], cur, sizeof(cur), errmsg);
            if (ro < 0)
                r = -1;
        }
        if (ro != 0 || (!strncmp(k, prefix, pl) && blkdebug_limit(k + pl))) {
            free(k);
            free(l->v[i]);
        } else {
            l->k[o] = k;
            l->v[o++] = l->v[i];
        }
    }
    l->n = o;
    if (r > 0 && cur[0] && blkdebug_rule_done(rules, errmsg) < 0)
        r = -1;
    return r;
}

/* Options that do not change what qimg reads or prints. */
static const char *const ignored[] = {
    "cache.no-flush", "file.cache.no-flush",
    "read-only", "auto-read-only", "discard", "detect-zeroes", "file.locking", "file.aio",
    "data-file.cache.direct", "data-file.cache.no-flush", "data-file.locking", NULL,
};

int image_spec_parse(const char *name, bool image_opts, struct image_spec *sp, char **errmsg)
{
    memset(sp, 0, sizeof(*sp));
    struct kv l = { 0 };
    if (image_opts) {
        parse_opts(name, &l);
    } else {
        struct jp j = { name + 5, NULL };
        ws(&j);
        if (*j.p != '{') {
            *errmsg = xstrdup(*j.p ? "Invalid JSON object given"
                                   : "Could not parse the JSON options: JSON parse error, "
                                     "premature EOI");
            return -EINVAL;
        }
        if (jobject(&j, NULL, &l) < 0) {
            *errmsg = xasprintf("Could not parse the JSON options: %s", j.err);
            kv_free(&l);
            return -EINVAL;
        }
    }
    /* rules on the file's blkdebug act (events come from the format driver); the other
     * places' rules are kept only to say they exist */
    struct blkdebug_rules other = { 0 };
    int r = strip_blkdebug(&l, "", &other, errmsg);
    if (r >= 0) {
        for (size_t i = 0; i < l.n; i++)
            if (!strcmp(l.k[i], "file.config"))
                sp->file_config = xstrdup(l.v[i]);
        size_t inline_keys = 0;
        for (size_t i = 0; i < l.n; i++)
            inline_keys += !strncmp(l.k[i], "file.inject-error.", 18) ||
                           !strncmp(l.k[i], "file.set-state.", 15);
        r = strip_blkdebug(&l, "file.", &sp->rules, errmsg);
        sp->file_blkdebug = r > 0;
        sp->file_inline_rules = inline_keys > 0;
    }
    int data_blkdebug = r >= 0 ? strip_blkdebug(&l, "data-file.", &other, errmsg) : 0;
    if (data_blkdebug < 0)
        r = -1;
    sp->other_rules = other.n > 0;
    blkdebug_rules_free(&other);
    if (r < 0) {
        kv_free(&l);
        image_spec_free(sp);
        return -EINVAL;
    }
    r = 0;
    for (size_t i = 0; i < l.n && r == 0; i++) {
        const char *k = l.k[i], *v = l.v[i];
        char **dst = NULL;
        if (!strcmp(k, "driver"))
            dst = &sp->driver;
        else if (!strcmp(k, "file.filename") || !strcmp(k, "filename"))
            dst = &sp->filename;
        else if (!strcmp(k, "data-file.filename"))
            dst = &sp->data_file;
        else if (!strcmp(k, "encrypt.key-secret") || !strcmp(k, "key-secret"))
            dst = &sp->key_secret;
        else if (!strcmp(k, "encrypt.format"))
            dst = &sp->encrypt_format;
        if (dst) {
            free(*dst);
            *dst = xstrdup(v);
            continue;
        }
        if (!strcmp(k, "cache.direct") || !strcmp(k, "file.cache.direct")) {
            if (strcmp(v, "on") && strcmp(v, "off")) {
                *errmsg = xasprintf("Parameter '%s' expects 'on' or 'off'", k);
                r = -EINVAL;
                break;
            }
            sp->direct = !strcmp(v, "on");
            continue;
        }
        if (!strcmp(k, "file")) { /* a node reference: qimg has no other nodes */
            *errmsg = xasprintf("Cannot find device='%s' nor node-name='%s'", v, v);
            r = -ENODEV;
            break;
        }
        if ((!strcmp(k, "file.driver") || !strcmp(k, "data-file.driver")) &&
            !strcmp(v, "file"))
            continue;
        bool skip = false;
        for (size_t n = 0; ignored[n]; n++)
            skip |= !strcmp(k, ignored[n]);
        if (skip)
            continue;
        *errmsg = xasprintf("the image option '%s' is not supported by qimg", k);
        r = -ENOTSUP;
    }
    kv_free(&l);
    if (r == 0 && sp->data_file)  /* blkdebug_refresh_filename: "blkdebug:CONFIG:IMAGE" */
        sp->data_label = data_blkdebug ? xasprintf("blkdebug::%s", sp->data_file)
                                       : xstrdup(sp->data_file);
    if (r == 0 && !sp->filename) {
        *errmsg = xstrdup("A block device must be specified for \"file\"");
        r = -EINVAL;
    }
    if (r < 0)
        image_spec_free(sp);
    return r;
}

void image_spec_free(struct image_spec *sp)
{
    free(sp->driver);
    free(sp->filename);
    free(sp->data_file);
    free(sp->data_label);
    free(sp->key_secret);
    free(sp->encrypt_format);
    blkdebug_rules_free(&sp->rules);
    free(sp->file_config);
    memset(sp, 0, sizeof(*sp));
}
