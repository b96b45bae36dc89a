/* --object secret: ids checked as qemu's user_creatable_add_qapi does, values loaded as
 * qcrypto_secret_load_data does (data=, or file= read whole) and base64-decoded when the
 * object is completed, as qcrypto_secret_complete does. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/err.h"
#include "util/secrets.h"
#include "util/xalloc.h"

struct secret {
    char *id;
    unsigned char *data;
    size_t len;
    bool base64;
};

static struct secret *secrets;
static size_t n_secrets;

/* Largest secret file read (a passphrase or key; qemu has no limit but reads it whole). */
#define SECRET_FILE_MAX (64u << 20)

/* The value of key in a QemuOpts string ("type,key=value,..."; ",," escapes a comma), or
 * NULL; malloc'd. With type, the first bare word (or qom-type=) goes there and any key
 * outside known[] is reported in *unknown. */
static char *opt_value(const char *spec, const char *key, char **type, char **unknown)
{
    static const char *const known[] = { "id", "data", "file", "format", "keyid", "iv",
                                         "qom-type", NULL };
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
        else if (unknown && !*unknown) {
            char *eq = strchr(buf, '=');
            size_t kn = eq ? (size_t)(eq - buf) : strlen(buf);
            bool ok = false;
            for (size_t i = 0; known[i]; i++)
                ok |= strlen(known[i]) == kn && !strncmp(known[i], buf, kn);
            if (!ok)
                *unknown = xasprintf("%.*s", (int)kn, buf);
        }
        first = false;
        free(buf);
    }
    return found;
}

/* g_file_get_contents as qcrypto_secret_load_data uses it; its message on failure. */
static int read_file(const char *path, unsigned char **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        err_report("Unable to read %s: Failed to open file \u201c%s\u201d: %s", path, path,
                   strerror(errno));
        return -1;
    }
    size_t cap = 4096, n = 0;
    unsigned char *buf = xmalloc(cap + 1);
    for (;;) {
        size_t k = fread(buf + n, 1, cap - n, f);
        n += k;
        if (k == 0)
            break;
        if (n == cap) {
            if (cap >= SECRET_FILE_MAX) {
                err_report("Unable to read %s: secret file larger than %u bytes", path,
                           SECRET_FILE_MAX);
                fclose(f);
                free(buf);
                return -1;
            }
            cap *= 2;
            buf = xreallocarray(buf, cap + 1, 1);
        }
    }
    if (ferror(f)) {
        err_report("Unable to read %s: Failed to read from file \u201c%s\u201d: %s", path, path,
                   strerror(errno));
        fclose(f);
        free(buf);
        return -1;
    }
    fclose(f);
    buf[n] = 0;
    *data = buf;
    *len = n;
    return 0;
}

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* qbase64_decode: only base64 characters (and '='), then glib's lenient decoding (a
 * trailing partial group yields its whole bytes). */
static int base64_decode(const unsigned char *in, size_t n, unsigned char **out, size_t *olen,
                         char **errmsg)
{
    if (memchr(in, 0, n)) {
        *errmsg = xstrdup("Base64 data contains embedded NUL characters");
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++)
        if (b64val(in[i]) < 0 && in[i] != '=') {
            *errmsg = xstrdup("Base64 data contains invalid characters");
            return -EINVAL;
        }
    unsigned char *o = xmalloc(n / 4 * 3 + 4);
    size_t k = 0;
    unsigned acc = 0, bits = 0;
    for (size_t i = 0; i < n && in[i] != '='; i++) {
        acc = (acc << 6) | (unsigned)b64val(in[i]);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[k++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    o[k] = 0;
    *out = o;
    *olen = k;
    return 0;
}

/* user_creatable_help_func: "--object help" lists the types, "--object secret,help" the
 * secret's options; qemu-img then exits 0. The list is Debian qemu-img 7.2's. */
static bool object_help(const char *spec)
{
    static const char *const types[] = { "authz-list", "authz-list-file", "authz-simple",
        "main-loop", "pr-manager-helper", "secret", "secret_keyring", "thread-context",
        "throttle-group", "tls-cipher-suites", "tls-creds-anon", "tls-creds-psk",
        "tls-creds-x509", NULL };
    size_t tl = strcspn(spec, ",");
    bool help = !strncmp(spec, "help", tl) && tl == 4;
    if (!help && !strcmp(spec + tl, ",help") && tl == 6 && !strncmp(spec, "secret", 6)) {
        printf("secret options:\n  data=<string>\n  file=<string>\n"
               "  format=<QCryptoSecretFormat>\n  iv=<string>\n  keyid=<string>\n");
        return true;
    }
    if (!help)
        return false;
    printf("List of user creatable objects:\n");
    for (size_t i = 0; types[i]; i++)
        printf("  %s\n", types[i]);
    return true;
}

/* qemu's id_wellformed (user_creatable_add_type checks it once the options parsed): a
 * letter, then letters, digits, '-', '.', '_'. */
static bool id_wellformed(const char *id)
{
    if (!isalpha((unsigned char)id[0]))
        return false;
    for (const char *p = id + 1; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("-._", *p))
            return false;
    return true;
}

int secrets_add_object(const char *spec)
{
    if (object_help(spec)) {
        fflush(stdout);
        exit(0);
    }
    char *type = NULL, *unknown = NULL;
    char *id = opt_value(spec, "id", &type, &unknown);
    char *data = opt_value(spec, "data", NULL, NULL);
    char *file = opt_value(spec, "file", NULL, NULL);
    char *format = opt_value(spec, "format", NULL, NULL);
    int r = -1;
    if (!type) {
        err_report("Parameter 'qom-type' is missing");
    } else if (strcmp(type, "secret")) {
        err_report("Parameter 'qom-type' does not accept value '%s'", type);
    } else if (!id) {
        err_report("Parameter 'id' is missing");
    } else if (unknown) {
        err_report("Parameter '%s' is unexpected", unknown);
    } else if (format && strcmp(format, "raw") && strcmp(format, "base64")) {
        err_report("Parameter 'format' does not accept value '%s'", format);
    } else if (!id_wellformed(id)) {
        err_report("Parameter 'id' expects an identifier");
        fprintf(stderr, "Identifiers consist of letters, digits, '-', '.', '_', starting with "
                "a letter.\n");
    } else if (data && file) {
        err_report("'data' and 'file' are mutually exclusive");
    } else if (!data && !file) {
        err_report("Either 'file' or 'data' must be provided");
    } else if (secrets_have(id)) {
        err_report("attempt to add duplicate property '%s' to object (type 'container')", id);
    } else {
        struct secret sc = { .id = id, .base64 = format && !strcmp(format, "base64") };
        if (file) {
            if (read_file(file, &sc.data, &sc.len) < 0)
                goto out;
        } else {
            sc.len = strlen(data);
            sc.data = (unsigned char *)data;
            data = NULL;
        }
        if (sc.base64) {
            /* qcrypto_secret_complete decodes at once: bad base64 fails the object */
            unsigned char *raw;
            size_t rl;
            char *msg = NULL;
            int br = base64_decode(sc.data, sc.len, &raw, &rl, &msg);
            free(sc.data);
            if (br < 0) {
                err_report("%s", msg);
                free(msg);
                goto out;
            }
            sc.data = raw;
            sc.len = rl;
            sc.base64 = false;
        }
        secrets = xreallocarray(secrets, n_secrets + 1, sizeof(*secrets));
        secrets[n_secrets++] = sc;
        id = NULL;
        r = 0;
    }
out:
    free(type);
    free(unknown);
    free(id);
    free(data);
    free(file);
    free(format);
    return r;
}

bool secrets_have(const char *id)
{
    for (size_t i = 0; i < n_secrets; i++)
        if (!strcmp(secrets[i].id, id))
            return true;
    return false;
}

int secrets_get(const char *id, unsigned char **data, size_t *len, char **errmsg)
{
    for (size_t i = 0; i < n_secrets; i++) {
        struct secret *s = &secrets[i];
        if (strcmp(s->id, id))
            continue;
        *data = xmalloc(s->len + 1);
        memcpy(*data, s->data, s->len);
        (*data)[s->len] = 0;
        *len = s->len;
        return 0;
    }
    *errmsg = xasprintf("No secret with id '%s'", id);
    return -EINVAL;
}
