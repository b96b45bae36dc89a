/* Rewriting the stored backing file name and format (see backing_change.h). */
#include "block/backing_change.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "block/driver.h"
#include "block/qcow2_int.h"
#include "block/qed_int.h"
#include "qcow2/header_write.h"
#include "util/xalloc.h"

/* qemu's qcow2_change_backing_file: the model's name and format replaced, header rebuilt. */
static int qcow2_change(image_t *img, const char *name, const char *fmt)
{
    struct qcow2_state *s = img->priv;
    if (name && (s->h.autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW) && s->geom.data_file)
        return -EINVAL;   /* a raw data file alone would no longer say what the guest sees */
    if (name && strlen(name) > 1023)
        return -EINVAL;
    char *old_name = s->backing_name;
    struct qcow2_ext old_ext = s->ext;
    uint64_t old_off = s->h.backing_file_offset;
    s->backing_name = name ? xstrdup(name) : NULL;
    /* qemu keeps the format in a 16-byte buffer (pstrcpy): longer names are cut */
    s->ext.has_backing_format = fmt != NULL;
    memset(s->ext.backing_format, 0, sizeof(s->ext.backing_format));
    if (fmt)
        strncpy(s->ext.backing_format, fmt, sizeof(s->ext.backing_format) - 1);
    /* any non-zero value: the builder places the name after the extensions */
    s->h.backing_file_offset = name ? 1 : 0;
    int r = qcow2_image_update_header(&s->m);
    if (r < 0) {
        free(s->backing_name);
        s->backing_name = old_name;
        s->ext = old_ext;
        s->h.backing_file_offset = old_off;
        return r;
    }
    free(old_name);
    return 0;
}

/* qemu's bdrv_qed_change_backing_file: 64-byte header then the name, one synced write. */
static int qed_change(image_t *img, const char *name, const char *fmt)
{
    struct qed_state *s = img->priv;
    if (name && s->h.compat_features)   /* qemu knows no compat feature */
        return -ENOTSUP;
    struct qed_header h = s->h;
    h.features &= ~(QED_F_BACKING_FILE | QED_F_BACKING_FORMAT_NO_PROBE);
    size_t len = name ? strlen(name) : 0;
    if (name) {
        h.features |= QED_F_BACKING_FILE;
        if (fmt && !strcmp(fmt, "raw"))
            h.features |= QED_F_BACKING_FORMAT_NO_PROBE;
    }
    h.backing_filename_offset = QED_HEADER_LEN;
    h.backing_filename_size = (uint32_t)len;
    if (QED_HEADER_LEN + len > (uint64_t)h.header_size * h.cluster_size)
        return -ENOSPC;
    uint8_t *buf = xmalloc(QED_HEADER_LEN + len);
    qed_header_encode(&h, buf);
    if (len)
        memcpy(buf + QED_HEADER_LEN, name, len);
    wport_label(&s->w, PC_HEADER, "QED header and backing file name");
    int r = wport_pwrite(&s->w, 0, buf, QED_HEADER_LEN + len);
    if (r == 0)
        r = wport_flush(&s->w);
    free(buf);
    if (r == 0)
        s->h = h;
    return r;
}

int image_change_backing_file(image_t *img, const char *name, const char *fmt, bool require)
{
    if (fmt && !name)
        return -EINVAL;
    if (require && name && !fmt)
        return -EINVAL;
    int r;
    if (!strcmp(img->format, "qcow2"))
        r = qcow2_change(img, name, fmt);
    else if (!strcmp(img->format, "qed"))
        r = qed_change(img, name, fmt);
    else
        return -ENOTSUP;
    if (r < 0)
        return r;
    free(img->backing_file);
    free(img->backing_full);
    free(img->backing_format);
    img->backing_file = name ? xstrdup(name) : NULL;
    img->backing_full = name ? image_path_combine(img->filename, name) : NULL;
    img->backing_format = fmt ? xstrdup(fmt) : NULL;
    return 0;
}

/* qemu's bdrv_find_backing_image for a plain file name: the layer below the first image of
 * top's chain whose stored backing name, resolved against it, is the same file as
 * real_path resolved against that image (realpath both; either failing skips the image). */
image_t *image_find_backing_image(image_t *top, const char *real_path)
{
    char a[PATH_MAX], b[PATH_MAX];
    for (image_t *cur = top; cur && cur->backing; cur = cur->backing) {
        char *tmp = image_path_combine(cur->filename, real_path);
        bool ok = realpath(tmp, a) != NULL;
        free(tmp);
        if (!ok || !cur->backing_full || !realpath(cur->backing_full, b))
            continue;
        if (!strcmp(a, b))
            return cur->backing;
    }
    return NULL;
}

