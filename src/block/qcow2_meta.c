/* qcow2 metadata that open reads besides the mapping: the snapshot table (qemu's
 * qcow2_read_snapshots, through the model) with its open's messages, and the format-specific
 * info built from it and the model's bitmap directory (qcow2_get_specific_info). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/luks.h"
#include "block/qcow2_int.h"
#include "format/be.h"
#include "format/qcow2_bitmap.h"
#include "format/qcow2_snapshot.h"
#include "util/json.h"
#include "util/xalloc.h"

/* qemu copies ids and names into fixed QEMUSnapshotInfo fields (128 and 256 bytes). */
static char *bounded_dup(const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    return xasprintf("%.*s", (int)n, s);
}

/* qemu's qcow2_read_snapshots through the model, with its open's messages. */
int qcow2_load_snapshots(image_t *img, char **errmsg)
{
    struct qcow2_state *s = img->priv;
    struct qcow2_sn_error why;
    int r = qcow2_image_read_snapshots(&s->m, &why);
    if (r >= 0)
        return 0;
    char tmp[FMT_ERROR_MSG_MAX];
    switch (why.kind) {
    case QCOW2_SN_READ_ERROR:
        *errmsg = xasprintf("Failed to read snapshot table: %s", strerror(-r));
        break;
    case QCOW2_SN_EXTRA_TOO_LARGE:
        *errmsg = xasprintf("%s\nYou can force-remove this extra metadata with qemu-img "
                            "check -r all", fmt_error_user_msg(&why.e, tmp, sizeof(tmp)));
        break;
    case QCOW2_SN_BAD_ENTRY:
        *errmsg = xstrdup(fmt_error_user_msg(&why.e, tmp, sizeof(tmp)));
        break;
    case QCOW2_SN_TOO_BIG:
        *errmsg = xasprintf("Snapshot table is too big\nYou can force-remove all %u "
                            "overhanging snapshots with qemu-img check -r all",
                            s->h.nb_snapshots - why.index);
        break;
    case QCOW2_SN_OVERFLOW:
        *errmsg = xstrdup("Snapshot table is too big");
        break;
    }
    return r;
}

int qcow2_snapshots(image_t *img, snapshot_info_t **list, size_t *count)
{
    struct qcow2_state *s = img->priv;
    *list = NULL;
    *count = 0;
    /* qemu's qcow2_snapshot_list (and every snapshot operation) answers -ENOTSUP for an
     * image with an external data file, whatever its snapshot table holds: info shows none */
    if (s->geom.data_file)
        return -ENOTSUP;
    if (!s->nb_sn)
        return 0;
    *list = xcalloc(s->nb_sn, sizeof(**list));
    for (uint32_t i = 0; i < s->nb_sn; i++) {
        const struct qcow2_snapshot *sn = &s->sn[i];
        snapshot_info_t *o = &(*list)[i];
        o->id = bounded_dup(sn->id_str, 127);
        o->name = bounded_dup(sn->name, 255);
        o->vm_state_size = sn->vm_state_size;
        o->date_sec = sn->date_sec;
        o->date_nsec = sn->date_nsec;
        o->vm_clock_nsec = sn->vm_clock_nsec;
        o->icount = sn->icount;
    }
    *count = s->nb_sn;
    return 0;
}

/* qemu's qcow2_get_specific_info(); keys are set in QAPI field order, the JSON writer
 * then orders them like qemu's QDict. */
json_t *qcow2_format_specific(image_t *img)
{
    struct qcow2_state *s = img->priv;
    json_t *data = json_object();
    if (s->h.version == 2) {
        json_set(data, "compat", json_string("0.10"));
        json_set(data, "compression-type", json_string("zlib"));
        json_set(data, "refcount-bits", json_int(s->h.refcount_bits));
    } else {
        json_set(data, "compat", json_string("1.1"));
        json_set(data, "lazy-refcounts",
                 json_bool(s->h.compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS));
        if (s->nb_bm) {
            json_t *list = json_array();
            for (uint32_t i = 0; i < s->nb_bm; i++) {
                const struct qcow2_bitmap_dirent *e = &s->bm[i];
                json_t *b = json_object();
                json_t *flags = json_array();
                if (e->flags & QCOW2_BME_FLAG_IN_USE)
                    json_append(flags, json_string("in-use"));
                if (e->flags & QCOW2_BME_FLAG_AUTO)
                    json_append(flags, json_string("auto"));
                json_set(b, "flags", flags);
                json_set(b, "name", json_string(e->name));
                json_set(b, "granularity", json_uint(1ull << e->granularity_bits));
                json_append(list, b);
            }
            json_set(data, "bitmaps", list);
        }
        json_set(data, "refcount-bits", json_int(s->h.refcount_bits));
        if (s->ext.has_data_file) /* qemu reports the name even without the feature bit */
            json_set(data, "data-file", json_string(s->ext.data_file));
        if (s->geom.data_file)
            json_set(data, "data-file-raw",
                     json_bool(s->h.autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW));
        json_set(data, "corrupt", json_bool(s->h.incompatible_features & QCOW2_INCOMPAT_CORRUPT));
        json_set(data, "extended-l2", json_bool(s->geom.extended_l2));
        json_set(data, "compression-type",
                 json_string(s->h.compression_type == QCOW2_COMPRESSION_ZSTD ? "zstd" : "zlib"));
    }
    /* qemu shows what its crypto layer opened: AES always, LUKS only with its header
     * extension (without one, info has no encrypt block but still says encrypted) */
    if (s->h.crypt_method == QCOW2_CRYPT_AES) {
        json_t *enc = json_object();
        json_set(enc, "format", json_string("aes"));
        json_set(data, "encrypt", enc);
    } else if (s->h.crypt_method == QCOW2_CRYPT_LUKS && s->luks) {
        json_set(data, "encrypt", luks_info_json(s->luks, "luks"));
    }
    json_t *spec = json_object();
    json_set(spec, "type", json_string("qcow2"));
    json_set(spec, "data", data);
    return spec;
}
