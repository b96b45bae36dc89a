/* Sector ciphers over nettle (see sector.h): qemu's qcrypto_block_cipher_{en,de}crypt_helper
 * with its ivgen (crypto/ivgen-plain.c, ivgen-plain64.c, ivgen-essiv.c). */
#include "crypto/sector.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <nettle/aes.h>
#include <nettle/cbc.h>
#include <nettle/ctr.h>
#include <nettle/hmac.h>
#include <nettle/nettle-meta.h>
#include <nettle/pbkdf2.h>
#include <nettle/serpent.h>
#include <nettle/twofish.h>
#include <nettle/xts.h>

#include "util/xalloc.h"

#define BLOCK 16 /* every cipher here has 16-byte blocks */

union cctx {
    struct aes128_ctx a128;
    struct aes192_ctx a192;
    struct aes256_ctx a256;
    struct serpent_ctx serpent;
    struct twofish_ctx twofish;
};

typedef void setkey_fn(union cctx *c, size_t len, const uint8_t *key);

static void aes_enc_key(union cctx *c, size_t len, const uint8_t *k)
{
    if (len == 16) aes128_set_encrypt_key(&c->a128, k);
    else if (len == 24) aes192_set_encrypt_key(&c->a192, k);
    else aes256_set_encrypt_key(&c->a256, k);
}
static void aes_dec_key(union cctx *c, size_t len, const uint8_t *k)
{
    if (len == 16) aes128_set_decrypt_key(&c->a128, k);
    else if (len == 24) aes192_set_decrypt_key(&c->a192, k);
    else aes256_set_decrypt_key(&c->a256, k);
}
static void serpent_key(union cctx *c, size_t len, const uint8_t *k)
{
    serpent_set_key(&c->serpent, len, k);
}
static void twofish_key(union cctx *c, size_t len, const uint8_t *k)
{
    twofish_set_key(&c->twofish, len, k);
}

struct alg {
    const char *name;
    size_t keylen;
    setkey_fn *enc_key, *dec_key;
    nettle_cipher_func *enc, *dec;
};

static const struct alg algs[] = {
    { "aes-128", 16, aes_enc_key, aes_dec_key, (nettle_cipher_func *)aes128_encrypt,
      (nettle_cipher_func *)aes128_decrypt },
    { "aes-192", 24, aes_enc_key, aes_dec_key, (nettle_cipher_func *)aes192_encrypt,
      (nettle_cipher_func *)aes192_decrypt },
    { "aes-256", 32, aes_enc_key, aes_dec_key, (nettle_cipher_func *)aes256_encrypt,
      (nettle_cipher_func *)aes256_decrypt },
    { "serpent-128", 16, serpent_key, serpent_key, (nettle_cipher_func *)serpent_encrypt,
      (nettle_cipher_func *)serpent_decrypt },
    { "serpent-192", 24, serpent_key, serpent_key, (nettle_cipher_func *)serpent_encrypt,
      (nettle_cipher_func *)serpent_decrypt },
    { "serpent-256", 32, serpent_key, serpent_key, (nettle_cipher_func *)serpent_encrypt,
      (nettle_cipher_func *)serpent_decrypt },
    { "twofish-128", 16, twofish_key, twofish_key, (nettle_cipher_func *)twofish_encrypt,
      (nettle_cipher_func *)twofish_decrypt },
    { "twofish-192", 24, twofish_key, twofish_key, (nettle_cipher_func *)twofish_encrypt,
      (nettle_cipher_func *)twofish_decrypt },
    { "twofish-256", 32, twofish_key, twofish_key, (nettle_cipher_func *)twofish_encrypt,
      (nettle_cipher_func *)twofish_decrypt },
};

enum mode { M_ECB, M_CBC, M_XTS, M_CTR };
enum ivgen { IV_PLAIN, IV_PLAIN64, IV_ESSIV };

struct qcrypt {
    const struct alg *alg;
    enum mode mode;
    enum ivgen ivgen;
    union cctx enc, dec;    /* the data key (xts: its first half) */
    union cctx tweak;       /* xts: the second half, encrypt direction */
    const struct alg *essiv_alg;
    union cctx essiv;       /* essiv: the hashed key, encrypt direction */
};

static const struct alg *alg_find(const char *name)
{
    for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++)
        if (!strcmp(algs[i].name, name))
            return &algs[i];
    return NULL;
}

const struct nettle_hash *qcrypt_hash(const char *name)
{
    static const struct { const char *n; const struct nettle_hash *h; } t[] = {
        { "md5", &nettle_md5 }, { "sha1", &nettle_sha1 }, { "sha224", &nettle_sha224 },
        { "sha256", &nettle_sha256 }, { "sha384", &nettle_sha384 },
        { "sha512", &nettle_sha512 }, { "ripemd160", &nettle_ripemd160 },
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        if (name && !strcmp(t[i].n, name))
            return t[i].h;
    return NULL;
}

qcrypt_t *qcrypt_new(const char *alg, const char *mode, const char *ivgen, const char *ivhash,
                     const uint8_t *key, size_t keylen, char **errmsg)
{
    qcrypt_t *c = xcalloc(1, sizeof(*c));
    c->alg = alg_find(alg);
    if (!c->alg) {
        *errmsg = xasprintf("Cipher '%s' is not supported by qimg", alg);
        goto fail;
    }
    if (!strcmp(mode, "ecb")) c->mode = M_ECB;
    else if (!strcmp(mode, "cbc")) c->mode = M_CBC;
    else if (!strcmp(mode, "xts")) c->mode = M_XTS;
    else if (!strcmp(mode, "ctr")) c->mode = M_CTR;
    else {
        *errmsg = xasprintf("Cipher mode '%s' not supported", mode);
        goto fail;
    }
    size_t want = c->alg->keylen * (c->mode == M_XTS ? 2 : 1);
    if (keylen != want) {
        *errmsg = xasprintf("Cipher key length %zu should be %zu", keylen, want);
        goto fail;
    }
    c->alg->enc_key(&c->enc, c->alg->keylen, key);
    c->alg->dec_key(&c->dec, c->alg->keylen, key);
    if (c->mode == M_XTS)
        c->alg->enc_key(&c->tweak, c->alg->keylen, key + c->alg->keylen);
    if (!strcmp(ivgen, "plain")) c->ivgen = IV_PLAIN;
    else if (!strcmp(ivgen, "plain64")) c->ivgen = IV_PLAIN64;
    else if (!strcmp(ivgen, "essiv")) {
        c->ivgen = IV_ESSIV;
        /* qcrypto_ivgen_essiv_init: the IV cipher is the same family keyed with
         * hash(key), its key size the digest's (luks_header.c checked one exists) */
        const struct nettle_hash *h = qcrypt_hash(ivhash);
        uint8_t salt[64]; /* the largest digest (sha512) */
        char name[32];
        const char *dash = strchr(alg, '-');
        if (!h || !dash) {
            *errmsg = xasprintf("Hash algorithm '%s' not supported", ivhash ? ivhash : "");
            goto fail;
        }
        snprintf(name, sizeof(name), "%.*s-%u", (int)(dash - alg), alg, h->digest_size * 8);
        c->essiv_alg = alg_find(name);
        if (!c->essiv_alg) {
            *errmsg = xasprintf("Cipher '%s' is not supported by qimg", name);
            goto fail;
        }
        void *hc = xmalloc(h->context_size);
        h->init(hc);
        h->update(hc, keylen, key);
        h->digest(hc, h->digest_size, salt);
        free(hc);
        c->essiv_alg->enc_key(&c->essiv, c->essiv_alg->keylen, salt);
    } else {
        *errmsg = xasprintf("IV generator '%s' not supported", ivgen);
        goto fail;
    }
    return c;
fail:
    free(c);
    return NULL;
}

void qcrypt_free(qcrypt_t *c)
{
    if (c)
        memset(c, 0, sizeof(*c)); /* key schedules */
    free(c);
}

/* The IV of a sector: its number little-endian (plain: 32 bits of it), zero padded;
 * essiv encrypts that with the hashed key. */
static void make_iv(const qcrypt_t *c, uint64_t sector, uint8_t iv[BLOCK])
{
    memset(iv, 0, BLOCK);
    unsigned n = c->ivgen == IV_PLAIN ? 4 : 8;
    for (unsigned i = 0; i < n; i++)
        iv[i] = (uint8_t)(sector >> (8 * i));
    if (c->ivgen == IV_ESSIV)
        c->essiv_alg->enc(&c->essiv, BLOCK, iv, iv);
}

static void crypt_sectors(qcrypt_t *c, uint64_t sector, uint8_t *buf, size_t len, bool enc)
{
    uint8_t iv[BLOCK];
    for (size_t off = 0; off < len; off += QCRYPT_SECTOR, sector++) {
        uint8_t *p = buf + off;
        size_t n = len - off < QCRYPT_SECTOR ? len - off : QCRYPT_SECTOR;
        make_iv(c, sector, iv);
        switch (c->mode) {
        case M_ECB:
            (enc ? c->alg->enc : c->alg->dec)(enc ? &c->enc : &c->dec, n, p, p);
            break;
        case M_CBC:
            if (enc)
                cbc_encrypt(&c->enc, c->alg->enc, BLOCK, iv, n, p, p);
            else
                cbc_decrypt(&c->dec, c->alg->dec, BLOCK, iv, n, p, p);
            break;
        case M_XTS:
            if (enc)
                xts_encrypt_message(&c->enc, &c->tweak, c->alg->enc, iv, n, p, p);
            else
                xts_decrypt_message(&c->dec, &c->tweak, c->alg->dec, c->alg->enc, iv, n, p, p);
            break;
        case M_CTR:
            ctr_crypt(&c->enc, c->alg->enc, BLOCK, iv, n, p, p);
            break;
        }
    }
}

void qcrypt_decrypt(qcrypt_t *c, uint64_t sector, uint8_t *buf, size_t len)
{
    crypt_sectors(c, sector, buf, len, false);
}

void qcrypt_encrypt(qcrypt_t *c, uint64_t sector, uint8_t *buf, size_t len)
{
    crypt_sectors(c, sector, buf, len, true);
}

/* nettle's generic HMAC state for pbkdf2()'s update/digest callbacks. */
struct hmac_any {
    const struct nettle_hash *h;
    void *outer, *inner, *state;
};

static void hmac_any_update(void *ctx, size_t len, const uint8_t *data)
{
    struct hmac_any *m = ctx;
    hmac_update(m->state, m->h, len, data);
}

static void hmac_any_digest(void *ctx, size_t len, uint8_t *out)
{
    struct hmac_any *m = ctx;
    hmac_digest(m->outer, m->inner, m->state, m->h, len, out);
}

void qcrypt_pbkdf2(const struct nettle_hash *h, const uint8_t *pass, size_t passlen,
                   const uint8_t *salt, size_t saltlen, unsigned iters, uint8_t *out,
                   size_t outlen)
{
    struct hmac_any m = { h, xmalloc(h->context_size), xmalloc(h->context_size),
                          xmalloc(h->context_size) };
    hmac_set_key(m.outer, m.inner, m.state, h, passlen, pass);
    pbkdf2(&m, hmac_any_update, hmac_any_digest, h->digest_size, iters, saltlen, salt,
           outlen, out);
    free(m.outer);
    free(m.inner);
    free(m.state);
}

int qcrypt_random(uint8_t *buf, size_t len)
{
    while (len) {
        ssize_t k = getrandom(buf, len, 0);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        buf += k;
        len -= (size_t)k;
    }
    return 0;
}
