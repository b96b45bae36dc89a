/* luks format (qemu's block/crypto.c): a LUKS v1 header, key material, then the encrypted
 * payload. Without a key-secret only info's metadata-only open (IMG_OPEN_NO_IO) succeeds,
 * as qemu's QCRYPTO_BLOCK_OPEN_NO_IO does. With one, the master key is unlocked
 * (crypto/luks_key.c) and guest sectors are decrypted on read and encrypted on write, the
 * IV being the guest sector number (block_crypto_co_preadv). The header decoder is
 * src/format/luks_header.c. */
#include "block/luks.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/driver.h"
#include "crypto/luks_key.h"
#include "crypto/sector.h"
#include "util/secrets.h"
#include "util/xalloc.h"

json_t *luks_info_json(const struct luks_header *h, const char *format)
{
    /* QCryptoBlockInfoLUKS members in QAPI order (a union's discriminator first); the
     * writer prints them in QDict order */
    json_t *o = json_object();
    if (format)
        json_set(o, "format", json_string(format));
    json_set(o, "cipher-alg", json_string(h->cipher_alg));
    json_set(o, "cipher-mode", json_string(h->cipher_mode_name));
    json_set(o, "ivgen-alg", json_string(h->ivgen_alg));
    if (h->ivgen_hash_alg)
        json_set(o, "ivgen-hash-alg", json_string(h->ivgen_hash_alg));
    json_set(o, "hash-alg", json_string(h->hash_alg));
    json_set(o, "payload-offset", json_int((int64_t)h->payload_offset));
    json_set(o, "master-key-iters", json_int(h->master_key_iterations));
    json_set(o, "uuid", json_string(h->uuid));
    json_t *slots = json_array();
    for (unsigned i = 0; i < LUKS_NUM_SLOTS; i++) {
        const struct luks_slot *s = &h->slots[i];
        json_t *so = json_object();
        bool active = s->active == LUKS_SLOT_ENABLED;
        json_set(so, "active", json_bool(active));
        if (active) {
            json_set(so, "iters", json_int(s->iterations));
            json_set(so, "stripes", json_int(s->stripes));
        }
        json_set(so, "key-offset", json_int((int64_t)s->key_offset_sector * LUKS_SECTOR));
        json_append(slots, so);
    }
    json_set(o, "slots", slots);
    return o;
}

int luks_read_header(qio_t *q, uint64_t off, struct luks_header *h, char **errmsg)
{
    uint8_t buf[LUKS_HEADER_LEN];
    int r = qio_pread(q, buf, sizeof(buf), off);
    if (r < 0) {
        *errmsg = xasprintf("Could not read encryption header: %s", strerror(-r));
        return r;
    }
    struct fmt_error e;
    fmt_error_clear(&e);
    r = luks_header_decode(buf, sizeof(buf), h, &e);
    if (r < 0) {
        char tmp[FMT_ERROR_MSG_MAX];
        *errmsg = xstrdup(fmt_error_user_msg(&e, tmp, sizeof(tmp)));
    }
    return r;
}

int luks_open_key(const char *key_secret, const char *missing_msg,
                  const struct luks_header *h,
                  int (*rd)(void *, uint64_t, void *, size_t, char **), void *opaque,
                  struct qcrypt **c, char **errmsg)
{
    if (!key_secret) {
        *errmsg = xstrdup(missing_msg);
        return -EINVAL;
    }
    unsigned char *pass;
    size_t plen;
    int r = secrets_get(key_secret, &pass, &plen, errmsg);
    if (r < 0)
        return r;
    uint8_t *mk = NULL;
    r = luks_unlock(h, rd, opaque, pass, plen, &mk, errmsg);
    memset(pass, 0, plen);
    free(pass);
    if (r < 0)
        return r;
    *c = qcrypt_new(h->cipher_alg, h->cipher_mode_name, h->ivgen_alg, h->ivgen_hash_alg, mk,
                    h->key_bytes, errmsg);
    memset(mk, 0, h->key_bytes);
    free(mk);
    return *c ? 0 : -ENOTSUP;
}

int qcow_aes_open_key(const char *key_secret, const char *missing_msg, struct qcrypt **c,
                      char **errmsg)
{
    if (!key_secret) {
        *errmsg = xstrdup(missing_msg);
        return -EINVAL;
    }
    unsigned char *pass;
    size_t plen;
    int r = secrets_get(key_secret, &pass, &plen, errmsg);
    if (r < 0)
        return r;
    uint8_t key[16] = { 0 };
    memcpy(key, pass, plen < sizeof(key) ? plen : sizeof(key));
    memset(pass, 0, plen);
    free(pass);
    *c = qcrypt_new("aes-128", "cbc", "plain64", NULL, key, sizeof(key), errmsg);
    memset(key, 0, sizeof(key));
    return *c ? 0 : -ENOTSUP;
}

int crypt_format_check(const char *given, const char *header, char **errmsg)
{
    if (!given || (header && !strcmp(given, header)))
        return 0;
    /* any other value, known or not, is a mismatch (qcow2_update_options_prepare) */
    if (!header)
        *errmsg = xasprintf("No encryption in image header, but options specified format '%s'",
                            given);
    else
        *errmsg = xasprintf("Header reported '%s' encryption format but options specify '%s'",
                            header, given);
    return -EINVAL;
}

struct luks_state {
    struct luks_header h;
    qcrypt_t *c;       /* NULL when opened without a key (info) */
};

struct luks_header *luks_image_header(image_t *img)
{
    return &((struct luks_state *)img->priv)->h;
}

static int luks_probe_drv(const uint8_t *buf, size_t len, const char *filename)
{
    (void)filename;
    return luks_probe(buf, len) ? 100 : 0;
}

/* block_crypto_read_func: the header's bytes from the file (zeros past its end). */
static int file_read(void *opaque, uint64_t off, void *buf, size_t len, char **errmsg)
{
    int r = qio_pread(opaque, buf, len, off);
    if (r < 0)
        *errmsg = xasprintf("Could not read encryption header: %s", strerror(-r));
    return r;
}

static int luks_open(image_t *img, char **errmsg)
{
    bool no_io = (img->flags & IMG_OPEN_NO_IO) != 0;
    /* qemu asks for the secret before it reads the header */
    if (!no_io && !img->key_secret) {
        *errmsg = xstrdup(LUKS_NO_KEY_MSG);
        return -EINVAL;
    }
    struct luks_state *s = xcalloc(1, sizeof(*s));
    img->priv = s;
    int r = luks_read_header(img->file, 0, &s->h, errmsg);
    if (r < 0)
        return r;
    img->encrypted = true;
    if (!no_io && (r = luks_open_key(img->key_secret, LUKS_NO_KEY_MSG, &s->h, file_read,
                                     img->file, &s->c, errmsg)) < 0)
        return r;
    /* block_crypto_co_getlength: the file's length (whole sectors) less the payload offset */
    uint64_t size;
    if ((r = qio_size(img->file, &size)) < 0) {
        *errmsg = xasprintf("Could not get the size of '%s': %s", img->filename, strerror(-r));
        return r;
    }
    size = size > UINT64_MAX - 511 ? size & ~(uint64_t)511 : (size + 511) & ~(uint64_t)511;
    if (s->h.payload_offset > size) {
        *errmsg = xstrdup("Could not refresh total sector count: Input/output error");
        return -EIO;
    }
    img->size = size - s->h.payload_offset;
    return 0;
}

static void luks_close(image_t *img)
{
    struct luks_state *s = img->priv;
    if (s)
        qcrypt_free(s->c);
    free(s);
    img->priv = NULL;
}

/* Guest sectors [first, first+count) decrypted into buf (count * 512 bytes). */
static int read_sectors(image_t *img, uint64_t first, size_t count, uint8_t *buf)
{
    struct luks_state *s = img->priv;
    int r = qio_pread(img->file, buf, count * QCRYPT_SECTOR,
                      s->h.payload_offset + first * QCRYPT_SECTOR);
    if (r < 0)
        return r;
    qcrypt_decrypt(s->c, first, buf, count * QCRYPT_SECTOR);
    return 0;
}

/* Whole sectors at a time, at most this many bytes of bounce buffer per step. */
#define LUKS_STEP (1u << 20)

static int luks_read(image_t *img, uint64_t off, void *buf, size_t n)
{
    struct luks_state *s = img->priv;
    if (!s->c)
        return -ENOMEDIUM;
    uint8_t *out = buf;
    uint8_t *bounce = xmalloc(LUKS_STEP);
    int r = 0;
    while (n > 0 && r == 0) {
        uint64_t first = off / QCRYPT_SECTOR;
        size_t skip = (size_t)(off % QCRYPT_SECTOR);
        size_t want = skip + n > LUKS_STEP ? LUKS_STEP : skip + n;
        size_t count = (want + QCRYPT_SECTOR - 1) / QCRYPT_SECTOR;
        r = read_sectors(img, first, count, bounce);
        size_t k = want - skip;
        memcpy(out, bounce + skip, k);
        out += k;
        off += k;
        n -= k;
    }
    free(bounce);
    return r;
}

/* block_crypto_co_pwritev: each sector encrypted; a partial one read, merged, rewritten. */
static int luks_write(image_t *img, uint64_t off, const void *buf, size_t n)
{
    struct luks_state *s = img->priv;
    if (!s->c)
        return -ENOMEDIUM;
    const uint8_t *in = buf;
    uint8_t *bounce = xmalloc(LUKS_STEP);
    int r = 0;
    while (n > 0 && r == 0) {
        uint64_t first = off / QCRYPT_SECTOR;
        size_t skip = (size_t)(off % QCRYPT_SECTOR);
        size_t want = skip + n > LUKS_STEP ? LUKS_STEP : skip + n;
        size_t count = (want + QCRYPT_SECTOR - 1) / QCRYPT_SECTOR;
        size_t k = want - skip;
        if (skip || k % QCRYPT_SECTOR)
            r = read_sectors(img, first, count, bounce);
        if (r < 0)
            break;
        memcpy(bounce + skip, in, k);
        qcrypt_encrypt(s->c, first, bounce, count * QCRYPT_SECTOR);
        r = qio_pwrite(img->file, bounce, count * QCRYPT_SECTOR,
                       s->h.payload_offset + first * QCRYPT_SECTOR);
        in += k;
        off += k;
        n -= k;
    }
    free(bounce);
    return r;
}

/* block_crypto_co_truncate: the file resized to payload + size (whole sectors). */
static int luks_truncate(image_t *img, uint64_t size, enum img_prealloc prealloc,
                         char **errmsg)
{
    struct luks_state *s = img->priv;
    if (size > UINT64_MAX - s->h.payload_offset) {
        *errmsg = xstrdup("The requested file size is too large");
        return -EFBIG;
    }
    if (prealloc != IMG_PREALLOC_OFF) {
        *errmsg = xstrdup("qimg resizes luks images with preallocation=off only");
        return -ENOTSUP;
    }
    int r = qio_truncate(img->file, s->h.payload_offset + size);
    if (r < 0) {
        *errmsg = xasprintf("Could not resize file: %s", strerror(-r));
        return r;
    }
    img->size = size;
    return 0;
}

/* No block status in block/crypto.c: qemu's generic answer, data everywhere, no offset. */
static int luks_block_status(image_t *img, uint64_t off, uint64_t bytes, block_status_t *st)
{
    (void)img;
    (void)off;
    st->flags = BS_DATA;
    st->pnum = bytes;
    return 0;
}

static json_t *luks_format_specific(image_t *img)
{
    struct luks_state *s = img->priv;
    json_t *spec = json_object();
    json_set(spec, "type", json_string("luks"));
    json_set(spec, "data", luks_info_json(&s->h, NULL));
    return spec;
}

const struct driver luks_driver = {
    .name = "luks",
    .probe = luks_probe_drv,
    .open = luks_open,
    .close = luks_close,
    .read = luks_read,
    .block_status = luks_block_status,
    .format_specific = luks_format_specific,
    .write = luks_write,
    .truncate = luks_truncate,
};
