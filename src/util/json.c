#include "util/json.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "util/xalloc.h"

enum json_kind { J_OBJ, J_ARR, J_STR, J_INT, J_UINT, J_BOOL };

struct member {
    char *key;
    json_t *val;
    unsigned bucket;
    size_t seq; /* insertion order, newest prints first within a bucket */
};

struct json {
    enum json_kind kind;
    union {
        struct { struct member *m; size_t n, cap, seq; bool ordered; } obj;
        struct { json_t **v; size_t n, cap; } arr;
        struct { char *s; size_t len; } str;
        int64_t i;
        uint64_t u;
        bool b;
    };
};

#define QDICT_BUCKETS 512

unsigned json_qdict_hash(const char *key)
{
    unsigned v = 0x238F13AFu * (unsigned)strlen(key);
    for (unsigned i = 0; key[i]; i++)
        v += (unsigned)(unsigned char)key[i] << (i * 5 % 24);
    return 1103515243u * v + 12345u;
}

static json_t *node(enum json_kind k)
{
    json_t *j = xcalloc(1, sizeof(*j));
    j->kind = k;
    return j;
}

json_t *json_object(void) { return node(J_OBJ); }

json_t *json_object_ordered(void)
{
    json_t *j = node(J_OBJ);
    j->obj.ordered = true;
    return j;
}
json_t *json_array(void) { return node(J_ARR); }

json_t *json_string_len(const char *s, size_t len)
{
    json_t *j = node(J_STR);
    j->str.s = xmalloc(len + 1);
    memcpy(j->str.s, s, len);
    j->str.s[len] = 0;
    j->str.len = len;
    return j;
}

json_t *json_string(const char *s) { return json_string_len(s, strlen(s)); }
json_t *json_int(int64_t v) { json_t *j = node(J_INT); j->i = v; return j; }
json_t *json_uint(uint64_t v) { json_t *j = node(J_UINT); j->u = v; return j; }
json_t *json_bool(bool v) { json_t *j = node(J_BOOL); j->b = v; return j; }

void json_set(json_t *obj, const char *key, json_t *val)
{
    for (size_t i = 0; i < obj->obj.n; i++) {
        if (strcmp(obj->obj.m[i].key, key) == 0) {
            json_free(obj->obj.m[i].val);
            obj->obj.m[i].val = val;
            return;
        }
    }
    if (obj->obj.n == obj->obj.cap) {
        obj->obj.cap = obj->obj.cap ? obj->obj.cap * 2 : 8;
        obj->obj.m = xreallocarray(obj->obj.m, obj->obj.cap, sizeof(struct member));
    }
    struct member *m = &obj->obj.m[obj->obj.n++];
    m->key = xstrdup(key);
    m->val = val;
    m->bucket = json_qdict_hash(key) % QDICT_BUCKETS;
    m->seq = obj->obj.seq++;
}

void json_append(json_t *arr, json_t *val)
{
    if (arr->arr.n == arr->arr.cap) {
        arr->arr.cap = arr->arr.cap ? arr->arr.cap * 2 : 8;
        arr->arr.v = xreallocarray(arr->arr.v, arr->arr.cap, sizeof(json_t *));
    }
    arr->arr.v[arr->arr.n++] = val;
}

size_t json_array_len(const json_t *arr) { return arr->arr.n; }

void json_free(json_t *v)
{
    if (!v)
        return;
    switch (v->kind) {
    case J_OBJ:
        for (size_t i = 0; i < v->obj.n; i++) {
            free(v->obj.m[i].key);
            json_free(v->obj.m[i].val);
        }
        free(v->obj.m);
        break;
    case J_ARR:
        for (size_t i = 0; i < v->arr.n; i++)
            json_free(v->arr.v[i]);
        free(v->arr.v);
        break;
    case J_STR:
        free(v->str.s);
        break;
    default:
        break;
    }
    free(v);
}

static int member_order(const void *a, const void *b)
{
    const struct member *x = a, *y = b;
    if (x->bucket != y->bucket)
        return x->bucket < y->bucket ? -1 : 1;
    return x->seq > y->seq ? -1 : (x->seq < y->seq);
}

/* Members in print order: QEMU's QDict order, or insertion order for ordered objects. */
static struct member *members_sorted(const json_t *v)
{
    struct member *sorted = xreallocarray(NULL, v->obj.n ? v->obj.n : 1, sizeof(*sorted));
    memcpy(sorted, v->obj.m, v->obj.n * sizeof(*sorted));
    if (!v->obj.ordered)
        qsort(sorted, v->obj.n, sizeof(*sorted), member_order);
    return sorted;
}

/* One code point as qemu's mod_utf8_codepoint decodes it for its JSON output (qemu's
 * qjson.c to_json): always consumes at least one byte and returns how many; *cp is -1 for
 * an invalid sequence (printed as U+FFFD). A bad lead byte or continuation byte costs one
 * byte; a sequence broken by a non-continuation byte costs the bytes before it; bytes past
 * the end read as NUL, as at the end of qemu's C string. Modified UTF-8 is accepted as qemu
 * accepts it (C0 80 is NUL; 5- and 6-byte forms decode and then fail the range check);
 * surrogates, noncharacters and overlong forms are invalid. */
static size_t utf8_next(const unsigned char *s, size_t left, int32_t *cp)
{
    static const uint32_t min_cp[5] = { 0x80, 0x800, 0x10000, 0x200000, 0x4000000 };
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = (int32_t)c;
        return 1;
    }
    if (c >= 0xfe || !(c & 0x40)) { /* impossible byte, or a stray continuation byte */
        *cp = -1;
        return 1;
    }
    unsigned len = 0, mask;
    for (mask = 0x80; c & mask; mask >>= 1)
        len++;
    uint32_t v = c & (mask - 1);
    size_t used = 1;
    for (unsigned i = 1; i < len; i++) {
        unsigned b = used < left ? s[used] : 0;
        if ((b & 0xc0) != 0x80) {
            *cp = -1;
            return used;
        }
        used++;
        v = (v << 6) | (b & 0x3f);
    }
    if (v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff) || (v >= 0xfdd0 && v <= 0xfdef) ||
        (v & 0xfffe) == 0xfffe ||
        (v < min_cp[len - 2] && !(v == 0 && len == 2)))
        *cp = -1;
    else
        *cp = (int32_t)v;
    return used;
}

static void print_string(FILE *f, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    fputc('"', f);
    for (size_t i = 0; i < len && p[i];) {
        int32_t c;
        i += utf8_next(p + i, len - i, &c);
        uint32_t cp = c < 0 ? 0xfffd : (uint32_t)c;
        switch (cp) {
        case '"': fputs("\\\"", f); continue;
        case '\\': fputs("\\\\", f); continue;
        case '\b': fputs("\\b", f); continue;
        case '\f': fputs("\\f", f); continue;
        case '\n': fputs("\\n", f); continue;
        case '\r': fputs("\\r", f); continue;
        case '\t': fputs("\\t", f); continue;
        default: break;
        }
        if (cp < 0x20 || cp >= 0x7f) {
            if (cp >= 0x10000) {
                cp -= 0x10000;
                fprintf(f, "\\u%04X\\u%04X", 0xd800 | (cp >> 10), 0xdc00 | (cp & 0x3ff));
            } else {
                fprintf(f, "\\u%04X", cp);
            }
        } else {
            fputc((int)cp, f);
        }
    }
    fputc('"', f);
}

static void newline(FILE *f, int depth)
{
    fprintf(f, "\n%*s", 4 * depth, "");
}

static void print_value(FILE *f, const json_t *v, int depth)
{
    switch (v->kind) {
    case J_OBJ: {
        struct member *sorted = members_sorted(v);
        fputc('{', f);
        for (size_t i = 0; i < v->obj.n; i++) {
            if (i)
                fputc(',', f);
            newline(f, depth + 1);
            print_string(f, sorted[i].key, strlen(sorted[i].key));
            fputs(": ", f);
            print_value(f, sorted[i].val, depth + 1);
        }
        newline(f, depth);
        fputc('}', f);
        free(sorted);
        break;
    }
    case J_ARR:
        fputc('[', f);
        for (size_t i = 0; i < v->arr.n; i++) {
            if (i)
                fputc(',', f);
            newline(f, depth + 1);
            print_value(f, v->arr.v[i], depth + 1);
        }
        newline(f, depth);
        fputc(']', f);
        break;
    case J_STR: print_string(f, v->str.s, v->str.len); break;
    case J_INT: fprintf(f, "%" PRId64, v->i); break;
    case J_UINT: fprintf(f, "%" PRIu64, v->u); break;
    case J_BOOL: fputs(v->b ? "true" : "false", f); break;
    }
}

void json_print(FILE *f, const json_t *v)
{
    print_value(f, v, 0);
}

/* qemu's dump_qobject() (block/qapi.c), used for info's "Format specific information". */
static void dump_human(FILE *f, const json_t *v, int indent);

static void dump_member(FILE *f, const char *key, const json_t *val, int indent)
{
    bool composite = val->kind == J_OBJ || val->kind == J_ARR;
    fprintf(f, "%*s", indent * 4, "");
    if (key) {
        for (const char *k = key; *k; k++)
            fputc(*k == '-' ? ' ' : *k, f);
    }
    fputc(':', f);
    fputc(composite ? '\n' : ' ', f);
    dump_human(f, val, indent + 1);
    if (!composite)
        fputc('\n', f);
}

static void dump_human(FILE *f, const json_t *v, int indent)
{
    switch (v->kind) {
    case J_OBJ: {
        struct member *sorted = members_sorted(v);
        for (size_t i = 0; i < v->obj.n; i++)
            dump_member(f, sorted[i].key, sorted[i].val, indent);
        free(sorted);
        break;
    }
    case J_ARR:
        for (size_t i = 0; i < v->arr.n; i++) {
            char idx[32];
            snprintf(idx, sizeof(idx), "[%zu]", i);
            dump_member(f, idx, v->arr.v[i], indent);
        }
        break;
    case J_STR: fputs(v->str.s, f); break;
    case J_INT: fprintf(f, "%" PRId64, v->i); break;
    case J_UINT: fprintf(f, "%" PRIu64, v->u); break;
    case J_BOOL: fputs(v->b ? "true" : "false", f); break;
    }
}

void json_print_human(FILE *f, const json_t *v, int indent)
{
    dump_human(f, v, indent);
}

const json_t *json_get(const json_t *obj, const char *key)
{
    if (!obj || obj->kind != J_OBJ)
        return NULL;
    for (size_t i = 0; i < obj->obj.n; i++)
        if (!strcmp(obj->obj.m[i].key, key))
            return obj->obj.m[i].val;
    return NULL;
}

const char *json_string_value(const json_t *v)
{
    return v && v->kind == J_STR ? v->str.s : NULL;
}

int64_t json_int_value(const json_t *v)
{
    if (!v)
        return 0;
    switch (v->kind) {
    case J_INT: return v->i;
    case J_UINT: return (int64_t)v->u;
    case J_BOOL: return v->b;
    default: return 0;
    }
}
