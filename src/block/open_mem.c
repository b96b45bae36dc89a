/* Opening an image from an already open qio_t (for example a byte buffer from
 * qio_open_mem()), without a backing chain: for the fuzz targets and unit tests that run
 * the read path on memory. The rules are open.c's for one layer. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/driver.h"
#include "block/open_mem.h"
#include "format/probe.h"
#include "util/xalloc.h"

int image_open_qio(qio_t *q, const char *filename, const char *fmt, int flags, image_t **out,
                   char **errmsg)
{
    return image_open_qio_keyed(q, filename, fmt, flags, NULL, NULL, out, errmsg);
}

int image_open_qio_keyed(qio_t *q, const char *filename, const char *fmt, int flags,
                         const char *key_secret, const char *encrypt_format, image_t **out,
                         char **errmsg)
{
    *out = NULL;
    *errmsg = NULL;
    image_t *img = xcalloc(1, sizeof(*img));
    img->filename = xstrdup(filename);
    img->key_secret = key_secret ? xstrdup(key_secret) : NULL;
    img->encrypt_format = encrypt_format ? xstrdup(encrypt_format) : NULL;
    img->flags = flags | IMG_OPEN_NO_BACKING;
    img->file = q;
    int r = 0;
    if (!fmt) {
        uint64_t size = 0;
        uint8_t buf[PROBE_BUF_SIZE];
        if ((r = qio_size(q, &size)) < 0 || (size && (r = qio_pread(q, buf, sizeof(buf), 0)) < 0)) {
            *errmsg = xasprintf("Could not read image for determining its format: %s",
                                strerror(-r));
            goto fail;
        }
        fmt = size ? probe_format(buf, sizeof(buf)) : "raw";
        img->probed = true;
    }
    img->drv = driver_find(fmt);
    if (!img->drv) {
        *errmsg = xasprintf("Unknown driver '%s'", fmt);
        r = -ENOTSUP;
        goto fail;
    }
    img->format = img->drv->name;
    img->data_file = img->file;
    if ((r = img->drv->open(img, errmsg)) < 0)
        goto fail;
    if (img->size > IMG_MAX_LENGTH) {
        *errmsg = xstrdup("Could not refresh total sector count: File too large");
        r = -EFBIG;
        goto fail;
    }
    *out = img;
    return 0;
fail:
    if (!*errmsg)
        *errmsg = xstrdup(strerror(-r));
    image_close(img); /* closes q too */
    return r;
}
