/* qed creation as qemu 7.2's bdrv_qed_co_create_opts + bdrv_qed_co_create: the file made
 * empty, the 64-byte header with the backing file name right after it, and a zeroed L1
 * table in the cluster after the first. A failed check leaves the empty file (qemu does not
 * delete it). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/create.h"
#include "format/be.h"
#include "io/qio.h"
#include "util/xalloc.h"

static int fail(char **errmsg, const char *msg)
{
    *errmsg = xstrdup(msg);
    return -EINVAL;
}

static bool pow2(uint64_t v)
{
    return v && !(v & (v - 1));
}

int qed_create(const char *filename, const struct copts *o, char **errmsg)
{
    uint64_t size = copts_num(o, "size", 0);
    if (size <= UINT64_MAX - 511)
        size = (size + 511) & ~511ull; /* bdrv_qed_co_create_opts: silently rounded up */
    const char *backing = copts_isset(o, "backing_file") ? copts_str(o, "backing_file") : NULL;
    const char *bfmt = copts_isset(o, "backing_fmt") ? copts_str(o, "backing_fmt") : NULL;
    uint64_t cs = copts_num(o, "cluster_size", 65536);
    uint64_t ts = copts_isset(o, "table_size") ? copts_num(o, "table_size", 4) : 4;

    /* bdrv_create_file first (with the -o options qed does not know, e.g. preallocation):
     * the protocol file exists (emptied) before any check */
    int r = file_create(filename, 0,
                        copts_isset(o, "preallocation") ? copts_str(o, "preallocation") : NULL,
                        errmsg);
    if (r < 0)
        return r;
    char buf[256];
    if (bfmt && !copts_backing_fmt_known(bfmt)) {
        snprintf(buf, sizeof(buf), "Parameter 'backing-fmt' does not accept value '%s'", bfmt);
        return fail(errmsg, buf);
    }
    if (!pow2(cs) || cs < 4096 || cs > 64 * 1024 * 1024)
        return fail(errmsg, "QED cluster size must be within range [4096, 67108864] and power "
                    "of 2");
    if (!pow2(ts) || ts > 16)
        return fail(errmsg, "QED table size must be within range [1, 16] and power of 2");
    /* qed_max_image_size: table entries squared times the cluster size (u64, wrapping) */
    uint64_t entries = ts * cs / 8;
    uint64_t max = entries * entries * cs;
    if (size % 512 || size > max) {
        snprintf(buf, sizeof(buf), "QED image size must be a non-zero multiple of cluster "
                 "size and less than %llu bytes", (unsigned long long)max);
        return fail(errmsg, buf);
    }
    size_t blen = backing ? strlen(backing) : 0;
    uint8_t h[64] = { 0 };
    le32_put(h + 0, 0x00444551); /* "QED\0" */
    le32_put(h + 4, (uint32_t)cs);
    le32_put(h + 8, (uint32_t)ts);
    le32_put(h + 12, 1);                  /* header_size (clusters) */
    uint64_t features = 0;
    if (backing) {
        features |= 1;                /* QED_F_BACKING_FILE */
        if (bfmt && !strcmp(bfmt, "raw"))
            features |= 4;            /* QED_F_BACKING_FORMAT_NO_PROBE */
        le32_put(h + 56, 64);
        le32_put(h + 60, (uint32_t)blen);
    }
    le64_put(h + 16, features);
    le64_put(h + 40, cs);                 /* l1_table_offset */
    le64_put(h + 48, size);
    qio_t *q = NULL;
    r = qio_open_file(filename, QIO_RDWR, &q);
    if (r < 0)
        return r;
    r = qio_pwrite(q, h, sizeof(h), 0);
    if (r >= 0 && blen)
        r = qio_pwrite(q, backing, blen, 64);
    if (r >= 0) {
        uint8_t *l1 = xcalloc(ts, cs);
        r = qio_pwrite(q, l1, ts * cs, cs);
        free(l1);
    }
    if (r >= 0)
        r = qio_flush(q);
    qio_close(q);
    return r < 0 ? r : 0;
}
