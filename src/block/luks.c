/* luks format (qemu's block/crypto.c): a LUKS v1 header, key material, then the encrypted
 * payload. qimg holds no keys, so only info's metadata-only open (IMG_OPEN_NO_IO) succeeds,
 * as qemu's QCRYPTO_BLOCK_OPEN_NO_IO does; any open for I/O fails as qemu's does without a
 * key-secret. The header decoder is src/format/luks_header.c. */
#include "block/luks.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/driver.h"
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

static int luks_probe_drv(const uint8_t *buf, size_t len, const char *filename)
{
    (void)filename;
    return luks_probe(buf, len) ? 100 : 0;
}

static int luks_open(image_t *img, char **errmsg)
{
    /* qemu asks for the secret before it reads the header */
    if (!(img->flags & IMG_OPEN_NO_IO)) {
        *errmsg = xstrdup(LUKS_NO_KEY_MSG);
        return -EINVAL;
    }
    struct luks_header *h = xcalloc(1, sizeof(*h));
    img->priv = h;
    int r = luks_read_header(img->file, 0, h, errmsg);
    if (r < 0)
        return r;
    img->encrypted = true;
    /* block_crypto_co_getlength: the file's length (whole sectors) less the payload offset */
    uint64_t size;
    if ((r = qio_size(img->file, &size)) < 0) {
        *errmsg = xasprintf("Could not get the size of '%s': %s", img->filename, strerror(-r));
        return r;
    }
    size = size > UINT64_MAX - 511 ? size & ~(uint64_t)511 : (size + 511) & ~(uint64_t)511;
    if (h->payload_offset > size) {
        *errmsg = xstrdup("Could not refresh total sector count: Input/output error");
        return -EIO;
    }
    img->size = size - h->payload_offset;
    return 0;
}

static void luks_close(image_t *img)
{
    free(img->priv);
    img->priv = NULL;
}

static json_t *luks_format_specific(image_t *img)
{
    json_t *spec = json_object();
    json_set(spec, "type", json_string("luks"));
    json_set(spec, "data", luks_info_json(img->priv, NULL));
    return spec;
}

const struct driver luks_driver = {
    .name = "luks",
    .probe = luks_probe_drv,
    .open = luks_open,
    .close = luks_close,
    .format_specific = luks_format_specific,
};
