/* Image names: the json: parser (jansson plus qemu's flattening), the --image-opts parser,
 * qemu's JSON text of an option list, and the resolution of a name into a file, format and
 * options. Invariants: errors come with qemu's message prefixes; whatever parses prints as
 * JSON that parses again. */
#include <stdbool.h>
#include <string.h>

#include "block/blockspec.h"
#include "fuzz/fuzz_common.h"
#include "util/xalloc.h"

static void json_name(const char *s)
{
    struct bspec o = { 0 };
    char *e = NULL;
    if (bspec_parse_json(s, &o, &e) == 0) {
        FUZZ_ASSERT(!e);
        char *j = bspec_to_json(&o);
        struct bspec o2 = { 0 };
        char *e2 = NULL;
        FUZZ_ASSERT(bspec_parse_json(j, &o2, &e2) == 0);
        free(j);
        bspec_free(&o2);
    } else {
        FUZZ_ASSERT(e && (!strncmp(e, "Could not parse the JSON options: ", 34) ||
                          !strcmp(e, "Invalid JSON object given")));
        free(e);
    }
    size_t *idx = xcalloc(o.n + 1, sizeof(*idx));
    bspec_qdict_order(&o, idx);
    free(idx);
    bspec_free(&o);
}

static void resolve(const char *name, const struct bspec *opts)
{
    struct bs_resolved r;
    char *e = NULL;
    if (blockspec_resolve(name, opts, NULL, true, &r, &e) == 0) {
        FUZZ_ASSERT(r.path && !e);
        free(blockspec_file_unknown_msg(&r));
        free(blockspec_format_unknown_msg(&r, r.format ? r.format : "qcow2"));
        blockspec_resolved_free(&r);
    } else {
        FUZZ_ASSERT(e && *e);
        free(e);
    }
}

/* A bare KEY after the first item warns on stderr (qemu's deprecation warning): such inputs
 * skip the keyval step so that fuzz logs stay small. Conservative: any comma followed by a
 * segment without '=' counts. */
static bool would_warn(const char *s)
{
    for (const char *p = strchr(s, ','); p; p = strchr(p + 1, ',')) {
        size_t n = strcspn(p + 1, ",");
        if (!memchr(p + 1, '=', n) && n)
            return true;
    }
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = xmalloc(size + 6);
    memcpy(s, "json:", 5);
    memcpy(s + 5, data, size);
    s[size + 5] = 0; /* an embedded NUL just ends the name, as on a command line */
    json_name(s + 5);
    resolve(s, NULL);
    resolve(s + 5, NULL);
    if (!would_warn(s + 5)) {
        struct bspec kv = { 0 };
        bspec_parse_keyval(s + 5, &kv);
        resolve(NULL, &kv);
        bspec_free(&kv);
    }
    free(s);
    return 0;
}
