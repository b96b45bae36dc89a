/* --object secret: the ids and the checks qemu's user_creatable_add_qapi and
 * qcrypto_secret_load_data make (the values are not needed by what qimg creates). */
#include <stdlib.h>
#include <string.h>

#include "util/err.h"
#include "util/secrets.h"
#include "util/xalloc.h"

static char **ids;
static size_t n_ids;

/* The value of key in a QemuOpts string ("type,key=value,..."; ",," escapes a comma), or
 * NULL; malloc'd. */
static char *opt_value(const char *spec, const char *key, char **type)
{
    char *found = NULL;
    size_t kl = strlen(key);
    bool first = true;
    const char *s = spec;
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
        if (first && type && !strchr(buf, '='))
            *type = xstrdup(buf);
        else if (!strncmp(buf, key, kl) && buf[kl] == '=') {
            free(found);
            found = xstrdup(buf + kl + 1);
        } else if (first && type && !strncmp(buf, "qom-type=", 9))
            *type = xstrdup(buf + 9);
        first = false;
        free(buf);
    }
    return found;
}

int secrets_add_object(const char *spec)
{
    char *type = NULL;
    char *id = opt_value(spec, "id", &type);
    char *data = opt_value(spec, "data", NULL);
    char *file = opt_value(spec, "file", NULL);
    int r = -1;
    if (!type) {
        err_report("Parameter 'qom-type' is missing");
    } else if (strcmp(type, "secret")) {
        err_report("Parameter 'qom-type' does not accept value '%s'", type);
    } else if (!id) {
        err_report("Parameter 'id' is missing");
    } else if (!data && !file) {
        err_report("Either 'file' or 'data' must be provided");
    } else if (secrets_have(id)) {
        err_report("attempt to add duplicate property '%s' to object (type 'container')", id);
    } else {
        ids = xreallocarray(ids, n_ids + 1, sizeof(*ids));
        ids[n_ids++] = id;
        id = NULL;
        r = 0;
    }
    free(type);
    free(id);
    free(data);
    free(file);
    return r;
}

bool secrets_have(const char *id)
{
    for (size_t i = 0; i < n_ids; i++)
        if (!strcmp(ids[i], id))
            return true;
    return false;
}
