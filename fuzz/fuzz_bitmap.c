/* Bitmap directory walk as qemu's bitmap_list_load(): entries from the bitmaps extension's
 * directory (parsed through the header/extension decoders; if there is none, the input
 * from byte 112 is the directory), each decoded and validated, and each bitmap table's
 * entries inside the input decoded and validated. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "format/qcow2_bitmap.h"
#include "format/qcow2_ext.h"
#include "format/qcow2_header.h"
#include "fuzz/fuzz_common.h"

static void table(const uint8_t *data, size_t size, const struct qcow2_bitmap_dirent *d,
                  uint32_t cb)
{
    struct fmt_error e;
    uint64_t off = d->bitmap_table_offset;
    for (uint64_t i = 0; i < d->bitmap_table_size && off < size && size - off >= 8 * (i + 1); i++) {
        uint64_t entry = be64_get(data + off + 8 * i);
        struct qcow2_bitmap_tentry t;
        qcow2_bitmap_tentry_decode(entry, &t);
        FUZZ_ASSERT((t.offset & ~QCOW2_BME_TABLE_OFFSET_MASK) == 0);
        int r = qcow2_bitmap_tentry_validate(entry, cb, off + 8 * i, &e);
        FUZZ_ASSERT(r == 0 || r == -EINVAL);
        if (r == 0)
            FUZZ_ASSERT((t.offset & ((1ull << cb) - 1)) == 0 && !(t.all_ones && t.offset));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct qcow2_header h;
    struct qcow2_ext x;
    struct fmt_error e;
    memset(&x, 0, sizeof(x));
    uint32_t cb = fz_cluster_bits(data, size);
    uint64_t vsize = fz_be64(data, size, 24);
    uint64_t dir_off = 112, dir_size = size > 112 ? size - 112 : 0;
    uint32_t nb = 8;
    if (qcow2_header_decode(data, size, QCOW2_HDR_CHECK, &h, &e) == 0 &&
        qcow2_ext_parse(&h, data, size, &x, &e) == 0 && (x.has_bitmaps || x.bitmaps_ignored)) {
        cb = h.cluster_bits;
        vsize = h.size;
        dir_off = x.bitmap_directory_offset;
        dir_size = x.bitmap_directory_size;
        nb = x.nb_bitmaps;
    }
    qcow2_ext_free(&x);
    if (dir_off >= size)
        return 0;
    if (dir_size > size - dir_off)
        dir_size = size - dir_off;
    const uint8_t *buf = data + dir_off;
    uint64_t pos = 0;
    for (uint32_t i = 0; i < nb && pos < dir_size; i++) {
        struct qcow2_bitmap_dirent *d = malloc(sizeof(*d));
        FUZZ_ASSERT(d);
        uint64_t elen = 0;
        int r = qcow2_bitmap_dirent_decode(buf + pos, (size_t)(dir_size - pos), dir_off + pos, d,
                                           &elen, &e);
        if (r < 0) {
            FUZZ_ASSERT(r == -EINVAL && e.code == r);
            free(d);
            break;
        }
        FUZZ_ASSERT(elen > 0 && elen % 8 == 0);
        FUZZ_ASSERT(elen == qcow2_bitmap_dirent_size(d->name_size, d->extra_data_size));
        FUZZ_ASSERT(strlen(d->name) <= QCOW2_BME_MAX_NAME_SIZE);
        r = qcow2_bitmap_dirent_validate(d, cb, vsize, dir_off + pos, &e);
        if (r == 0)
            table(data, size, d, cb);
        else
            FUZZ_ASSERT(e.code == r);
        free(d);
        if (elen > dir_size - pos)
            break;
        pos += elen;
    }
    return 0;
}
