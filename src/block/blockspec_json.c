/* json: image names, parsed with jansson and flattened as qemu's qdict_flatten does.
 *
 * Why jansson (Debian's libjansson-dev) and not json-c: its decoder is strict RFC 8259 by
 * default, as qemu's parser is (json-c's default mode accepts comments, trailing commas,
 * NaN), it can reject duplicate keys (qemu: "JSON parse error, duplicate key"), keeps object
 * keys in document order, and reports an error code and position that map onto qemu's
 * messages. qemu's one extension, single-quoted strings, is rewritten to double quotes
 * before jansson sees the text. qimg's own JSON output (util/json.c) stays separate: it must
 * print qemu's layout byte for byte. (jansson's json_t and util/json.h's json_t collide,
 * which is why this file is the only one that includes jansson.h.) */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "block/blockspec.h"
#include "util/xalloc.h"

/* qemu's lexer accepts 'single-quoted' strings (with \' inside): rewrite them as JSON
 * strings; everything else is copied. */
static char *dequote(const char *t)
{
    size_t n = strlen(t);
    char *o = xmalloc(2 * n + 1), *w = o;
    const char *p = t;
    while (*p) {
        if (*p == '"') { /* a JSON string: copy it as it is */
            *w++ = *p++;
            while (*p && *p != '"') {
                if (*p == '\\' && p[1])
                    *w++ = *p++;
                *w++ = *p++;
            }
            if (*p)
                *w++ = *p++;
        } else if (*p == '\'') {
            *w++ = '"';
            p++;
            while (*p && *p != '\'') {
                if (*p == '\\' && p[1] == '\'') {
                    *w++ = '\'';
                    p += 2;
                    continue;
                }
                if (*p == '\\' && p[1]) {
                    *w++ = *p++;
                } else if (*p == '"') {
                    *w++ = '\\';
                }
                *w++ = *p++;
            }
            if (*p) {
                *w++ = '"';
                p++;
            }
        } else {
            *w++ = *p++;
        }
    }
    *w = 0;
    return o;
}

/* jansson's complaint in qemu's words (json-parser.c / json-streamer.c). */
static char *parse_error(const json_error_t *e)
{
    const char *t = e->text;
    const char *near = strstr(t, "near '");
    char tok[64] = "";
    if (near) {
        near += 6;
        size_t n = strlen(near);
        if (n && near[n - 1] == '\'')
            n--;
        if (n >= sizeof(tok))
            n = sizeof(tok) - 1;
        memcpy(tok, near, n);
        tok[n] = 0;
    }
    const char *detail;
    switch (json_error_code(e)) {
    case json_error_end_of_input_expected:
        return xstrdup("Expecting at most one JSON value");
    case json_error_duplicate_key:
        detail = "duplicate key";
        break;
    case json_error_premature_end_of_input:
        if (tok[0] == '"' || tok[0] == '\'')
            return xasprintf("JSON parse error, stray '%s'", tok);
        detail = "premature EOI";
        break;
    default:
        if (strstr(t, "':' expected")) {
            detail = "missing : in object pair";
        } else if (strstr(t, "string or '}' expected")) {
            detail = tok[0] && strchr(",}]", tok[0]) ? "expecting value"
                                                   : "key is not a string in object";
        } else if (strstr(t, "'}' expected")) {
            detail = "expected separator in dict";
        } else if (strstr(t, "']' expected")) {
            detail = "expected separator in list";
        } else if (strstr(t, "invalid escape")) {
            detail = "invalid escape sequence in string";
        } else if (strstr(t, "unexpected token")) {
            detail = "expecting value";
        } else if (strstr(t, "invalid token") && tok[0]) {
            bool word = (tok[0] >= 'a' && tok[0] <= 'z') || (tok[0] >= 'A' && tok[0] <= 'Z');
            return xasprintf("JSON parse error, %s '%s'", word ? "invalid keyword" : "stray",
                             tok);
        } else {
            return xasprintf("JSON parse error, %s", t);
        }
    }
    return xasprintf("JSON parse error, %s", detail);
}

static void put(struct bspec *o, const char *key, json_t *v, bool overwrite);

/* qemu's qdict_flatten: nested objects and arrays become dotted keys ("file.filename",
 * "a.0"); empty ones stay as they are. Entries that came out of a nested object overwrite a
 * dotted key already there; top-level dotted keys never overwrite. */
static void flatten(struct bspec *o, const char *prefix, json_t *v)
{
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) {
            char *full = xasprintf("%s.%s", prefix, k);
            put(o, full, x, true);
            free(full);
        }
    } else {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            char *full = xasprintf("%s.%zu", prefix, i);
            put(o, full, x, true);
            free(full);
        }
    }
}

static void put(struct bspec *o, const char *key, json_t *v, bool overwrite)
{
    struct bsv b = { .key = (char *)key };
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        if (json_object_size(v)) {
            flatten(o, key, v);
            return;
        }
        b.type = BSV_EMPTY_DICT;
        break;
    case JSON_ARRAY:
        if (json_array_size(v)) {
            flatten(o, key, v);
            return;
        }
        b.type = BSV_EMPTY_LIST;
        break;
    case JSON_STRING:
        b.type = BSV_STR;
        b.s = (char *)json_string_value(v);
        break;
    case JSON_INTEGER:
        b.type = BSV_INT;
        b.i = (int64_t)json_integer_value(v);
        break;
    case JSON_REAL:
        b.type = BSV_DOUBLE;
        b.d = json_real_value(v);
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        b.type = BSV_BOOL;
        b.b = json_is_true(v);
        break;
    case JSON_NULL:
        b.type = BSV_NULL;
        break;
    }
    bspec_put(o, &b, overwrite);
}

int bspec_parse_json(const char *text, struct bspec *o, char **errmsg)
{
    if (!text[strspn(text, " \t\r\n")]) {
        *errmsg = xstrdup("Could not parse the JSON options: Expecting a JSON value");
        return -1;
    }
    char *t = dequote(text);
    json_error_t e;
    json_t *root = json_loads(t, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &e);
    free(t);
    if (!root) {
        char *d = parse_error(&e);
        *errmsg = xasprintf("Could not parse the JSON options: %s", d);
        free(d);
        return -1;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        *errmsg = xstrdup("Invalid JSON object given");
        return -1;
    }
    const char *k;
    json_t *x;
    json_object_foreach(root, k, x)
        put(o, k, x, false);
    json_decref(root);
    return 0;
}
