/* -f luks creation (qemu's block_crypto_co_create_opts_luks): the options checked as
 * qemu's QAPI visitor does, the file created, the secret looked up, then the LUKS header
 * and slot 0's key material (crypto/luks_key.c) written in front of a payload of the
 * virtual size (sparse, or preallocated as the file protocol's preallocation says). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/create.h"
#include "crypto/luks_key.h"
#include "io/qio.h"
#include "util/secrets.h"
#include "util/xalloc.h"

static bool one_of(const char *v, const char *const *names)
{
    for (size_t i = 0; names[i]; i++)
        if (!strcmp(v, names[i]))
            return true;
    return false;
}

/* QAPI enum values qemu accepts for each option (QCryptoCipherAlgorithm, ...). */
static int check_enums(const struct copts *o, const char *prefix, char **errmsg)
{
    static const char *const algs[] = { "aes-128", "aes-192", "aes-256", "des", "3des",
        "cast5-128", "serpent-128", "serpent-192", "serpent-256", "twofish-128",
        "twofish-192", "twofish-256", "sm4", NULL };
    static const char *const modes[] = { "ecb", "cbc", "xts", "ctr", NULL };
    static const char *const ivgens[] = { "plain", "plain64", "essiv", NULL };
    static const char *const hashes[] = { "md5", "sha1", "sha224", "sha256", "sha384",
        "sha512", "ripemd160", NULL };
    static const struct { const char *name; const char *const *vals; } t[] = {
        { "cipher-alg", algs }, { "cipher-mode", modes }, { "ivgen-alg", ivgens },
        { "ivgen-hash-alg", hashes }, { "hash-alg", hashes },
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        char key[64];
        snprintf(key, sizeof(key), "%s%s", prefix, t[i].name);
        if (copts_isset(o, key) && !one_of(copts_str(o, key), t[i].vals)) {
            *errmsg = xasprintf("Parameter '%s' does not accept value '%s'", t[i].name,
                                copts_str(o, key));
            return -EINVAL;
        }
    }
    return 0;
}

/* The creation options with qemu's defaults (aes-256 xts plain64, sha256, 2000 ms); prefix
 * is "" for -f luks and "encrypt." for qcow2. */
int luks_options(const struct copts *o, const char *prefix, struct luks_create_opts *lo,
                 char **errmsg)
{
    int r = check_enums(o, prefix, errmsg);
    if (r < 0)
        return r;
    char k[64];
#define GET(name, def) \
    (snprintf(k, sizeof(k), "%s%s", prefix, name), copts_isset(o, k) ? copts_str(o, k) : def)
    lo->cipher_alg = GET("cipher-alg", "aes-256");
    lo->cipher_mode = GET("cipher-mode", "xts");
    lo->ivgen_alg = GET("ivgen-alg", "plain64");
    lo->ivgen_hash = GET("ivgen-hash-alg", NULL);
    lo->hash_alg = GET("hash-alg", "sha256");
#undef GET
    if (!lo->ivgen_hash && !strcmp(lo->ivgen_alg, "essiv"))
        lo->ivgen_hash = "sha256";
    snprintf(k, sizeof(k), "%siter-time", prefix);
    lo->iter_time_ms = copts_num(o, k, 2000);
    return 0;
}

static int build(const char *filename, const struct copts *o,
                 const struct luks_create_opts *lo, const char *prealloc, char **errmsg);

/* block_crypto_co_create_opts_luks: a failure after the file was created deletes it */
int luks_create_image(const char *filename, const struct copts *o, char **errmsg)
{
    struct luks_create_opts lo;
    int r = luks_options(o, "", &lo, errmsg);
    if (r < 0)
        return r;
    const char *prealloc = copts_isset(o, "preallocation") ? copts_str(o, "preallocation")
                                                           : NULL;
    if (prealloc && !strcmp(prealloc, "metadata"))
        prealloc = NULL; /* block/crypto.c: metadata is off for a luks volume */
    if ((r = file_create(filename, 0, prealloc, errmsg)) < 0)
        return r;
    if ((r = build(filename, o, &lo, prealloc, errmsg)) < 0)
        unlink(filename);
    return r;
}

static int build(const char *filename, const struct copts *o,
                 const struct luks_create_opts *lo, const char *prealloc, char **errmsg)
{
    int r;
    uint64_t size = copts_num(o, "size", 0);
    if (!copts_isset(o, "key-secret")) {
        *errmsg = xstrdup("Parameter 'key-secret' is required for cipher");
        return -EINVAL;
    }
    unsigned char *pass;
    size_t plen;
    if ((r = secrets_get(copts_str(o, "key-secret"), &pass, &plen, errmsg)) < 0)
        return r;
    uint8_t hdr[LUKS_HEADER_LEN];
    uint8_t *km = NULL, *mk = NULL;
    size_t km_len = 0, mk_len = 0;
    uint64_t km_off = 0, payload = 0;
    r = luks_create(lo, pass, plen, hdr, &km, &km_len, &km_off, &mk, &mk_len, &payload,
                    errmsg);
    memset(pass, 0, plen);
    free(pass);
    if (r < 0)
        return r;
    memset(mk, 0, mk_len);
    free(mk);
    /* block_crypto_co_create_generic's init: the file sized to header + payload */
    if (size > UINT64_MAX - payload - 511) {
        free(km);
        return -EFBIG;
    }
    if ((r = file_create(filename, payload + size, prealloc, errmsg)) < 0) {
        free(km);
        return r;
    }
    qio_t *q = NULL;
    if ((r = qio_open_file(filename, QIO_RDWR, &q)) < 0) {
        *errmsg = xasprintf("Could not open '%s': %s", filename, strerror(-r));
        free(km);
        return r;
    }
    r = qio_pwrite(q, hdr, sizeof(hdr), 0);
    if (r == 0)
        r = qio_pwrite(q, km, km_len, km_off);
    if (r == 0)
        r = qio_flush(q);
    if (r < 0)
        *errmsg = xasprintf("Could not write encryption header: %s", strerror(-r));
    qio_close(q);
    memset(km, 0, km_len);
    free(km);
    return r;
}

int luks_measure_payload(const struct copts *o, const char *prefix, uint64_t *len,
                         char **errmsg)
{
    struct luks_create_opts lo;
    int r = luks_options(o, prefix, &lo, errmsg);
    if (r < 0)
        return r;
    char k[64];
    snprintf(k, sizeof(k), "%skey-secret", prefix);
    if (!copts_isset(o, k)) {
        *errmsg = xasprintf("Parameter '%s' is required for cipher", k);
        return -EINVAL;
    }
    if (!secrets_have(copts_str(o, k))) {
        *errmsg = xasprintf("No secret with id '%s'", copts_str(o, k));
        return -EINVAL;
    }
    return luks_payload_len(&lo, len, errmsg);
}
