/* Amend of LUKS key slots at the block layer: the -o options as qemu's QAPI visitor reads
 * them (block_crypto_amend_opts_init), and the luks format's amend
 * (block_crypto_amend_options_luks). qcow2's encrypt.* amend (qcow2_amend.c) uses the
 * same reader with the "encrypt." prefix. The slot logic is crypto/luks_amend.c. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/create_opts.h"
#include "block/luks.h"
#include "crypto/luks_amend.h"
#include "util/xalloc.h"

static const char *get(const struct copts *o, const char *prefix, const char *name)
{
    char key[64];
    snprintf(key, sizeof(key), "%s%s", prefix, name);
    for (size_t i = 0; i < o->n; i++)
        if (!strcmp(o->desc[i]->name, key))
            return o->str[i];
    return NULL;
}

/* The visitor's int: the whole string as an int64 (qemu's qemu_strtoi64, base 0). */
static int visit_int(const char *name, const char *v, int64_t *out, char **errmsg)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 0);
    if (!*v || *end || errno) {
        *errmsg = xasprintf("Parameter '%s' expects integer", name);
        return -EINVAL;
    }
    *out = x;
    return 0;
}

int luks_amend_opts_read(const struct copts *o, const char *prefix,
                         struct luks_amend_opts *out, char **errmsg)
{
    memset(out, 0, sizeof(*out));
    /* QCryptoBlockAmendOptionsLUKS in member order: state, new-secret, old-secret,
     * keyslot, iter-time */
    const char *state = get(o, prefix, "state");
    if (!state) {
        *errmsg = xstrdup("Parameter 'state' is missing");
        return -EINVAL;
    }
    if (!strcmp(state, "active")) {
        out->active = true;
    } else if (strcmp(state, "inactive")) {
        *errmsg = xasprintf("Parameter 'state' does not accept value '%s'", state);
        return -EINVAL;
    }
    out->new_secret = get(o, prefix, "new-secret");
    out->old_secret = get(o, prefix, "old-secret");
    const char *v;
    int64_t x;
    if ((v = get(o, prefix, "keyslot"))) {
        if (visit_int("keyslot", v, &x, errmsg) < 0)
            return -EINVAL;
        out->has_keyslot = true;
        out->keyslot = (int)(uint32_t)(uint64_t)x;   /* qemu's int keyslot = opts->keyslot */
    }
    if ((v = get(o, prefix, "iter-time"))) {
        if (visit_int("iter-time", v, &x, errmsg) < 0)
            return -EINVAL;
        out->has_iter_time = true;
        out->iter_time = (uint64_t)x;
    }
    return 0;
}

/* block_crypto_read_func / block_crypto_write_func over the image file */
static int file_read(void *opaque, uint64_t off, void *buf, size_t len, char **errmsg)
{
    int r = qio_pread(opaque, buf, len, off);
    if (r < 0)
        *errmsg = xasprintf("Could not read encryption header: %s", strerror(-r));
    return r;
}

static int file_write(void *opaque, uint64_t off, const void *buf, size_t len, char **errmsg)
{
    int r = qio_pwrite(opaque, buf, len, off);
    if (r < 0)
        *errmsg = xasprintf("Could not write encryption header: %s", strerror(-r));
    return r;
}

static int file_flush(void *opaque, char **errmsg)
{
    int r = qio_flush(opaque);
    if (r < 0)
        *errmsg = xasprintf("Could not flush encryption header: %s", strerror(-r));
    return r;
}

int luks_format_amend(image_t *img, const struct copts *o, bool force, char **errmsg)
{
    struct luks_amend_opts lo;
    int r = luks_amend_opts_read(o, "", &lo, errmsg);
    if (r < 0)
        return r;
    struct luks_io io = { file_read, file_write, file_flush, img->file };
    return luks_amend(luks_image_header(img), &io, &lo, img->key_secret, force, errmsg);
}
