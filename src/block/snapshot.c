/* Internal snapshots at the block layer: see snapshot.h. */
#include "block/snapshot.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "block/qcow2_int.h"
#include "qcow2/header_write.h"
#include "qcow2/overlap.h"
#include "qcow2/snapshot_write.h"
#include "util/err.h"
#include "util/size.h"
#include "util/xalloc.h"

void snapshot_dump_header(void)
{
    printf("%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK",
           "ICOUNT");
}

void snapshot_dump_row(const snapshot_info_t *sn)
{
    char date[64] = "", clock[128], icount[64] = "", vm[32];
    time_t t = (time_t)sn->date_sec;
    struct tm tm;
    if (localtime_r(&t, &tm))
        strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
    int64_t secs = (int64_t)(sn->vm_clock_nsec / 1000000000u);
    snprintf(clock, sizeof(clock), "%02d:%02d:%02d.%03d", (int)(secs / 3600),
             (int)((secs / 60) % 60), (int)(secs % 60),
             (int)((sn->vm_clock_nsec / 1000000) % 1000));
    if (sn->icount != UINT64_MAX)
        snprintf(icount, sizeof(icount), "%" PRId64, (int64_t)sn->icount);
    printf("%-9s %-16s %8s%20s%13s%11s\n", sn->id, sn->name, size_to_str(sn->vm_state_size, vm),
           date, clock, icount);
}

int image_snapshot_find(image_t *img, const char *s, char **id, char **name)
{
    snapshot_info_t *l = NULL;
    size_t n = 0;
    if (!img->drv->snapshots || img->drv->snapshots(img, &l, &n) < 0)
        return -ENOENT;
    size_t i;
    for (i = 0; i < n && strcmp(l[i].name, s); i++)
        ;
    int r = -ENOENT;
    if (i < n) {
        *id = xstrdup(l[i].id);
        *name = xstrdup(l[i].name);
        r = 0;
    }
    snapshot_list_free(l, n);
    return r;
}

static struct qcow2_image *model(image_t *img)
{
    return img->drv == &qcow2_driver ? &((struct qcow2_state *)img->priv)->m : NULL;
}

/* qemu's qcow2_signal_corruption(fatal) after a snapshot operation: the event printed, the
 * image unusable and, on v3, marked corrupt. */
static int after(image_t *img, int r, char *corrupt)
{
    struct qcow2_image *m = model(img);
    if (r == -EIO && qcow2_overlap_refused(m, NULL, NULL, NULL)) {
        img->broken = true;   /* the guard printed the event and set the bit */
        img->corruption_signaled = true;
    } else if (r == -EIO && corrupt) {
        image_corrupt(img, "%s", corrupt);
        if (m->h.version >= 3 && !(m->h.incompatible_features & QCOW2_INCOMPAT_CORRUPT))
            (void)qcow2_image_mark_corrupt(m);
    }
    free(corrupt);
    return r;
}

int image_snapshot_create(image_t *img, const char *name, uint32_t date_sec, uint32_t date_nsec)
{
    struct qcow2_image *m = model(img);
    if (!m)
        return -ENOTSUP;
    char *corrupt = NULL;
    int r = qcow2_snapshot_create(m, name, date_sec, date_nsec, &corrupt);
    return after(img, r, corrupt);
}

int image_snapshot_goto(image_t *img, const char *s, char **errmsg)
{
    struct qcow2_state *st = img->priv;
    struct qcow2_image *m = model(img);
    *errmsg = NULL;
    /* bdrv_snapshot_goto: loaded persistent bitmaps are the device's dirty bitmaps */
    if (m && st->nb_bm) {
        *errmsg = xstrdup("Device has active dirty bitmaps");
        return -EBUSY;
    }
    if (!m) {
        /* qemu falls back to the protocol layer: the format driver is closed and opened
         * again around that, and a probed raw image warns again */
        image_warn_probed_raw(img, img->filename);
        *errmsg = xstrdup("Block driver does not support snapshots");
        return -ENOTSUP;
    }
    int r;
    char *corrupt = NULL;
    long i = -1;
    if (m->geom.data_file) {
        r = -ENOTSUP;
        goto fail;
    }
    if ((i = qcow2_snapshot_find_id_or_name(m, s)) < 0) {
        r = -ENOENT;
        goto fail;
    }
    const char *why;
    if ((r = qcow2_snapshot_validate_l1(m, (uint32_t)i, &why)) < 0) {
        err_report("%s", why);
        goto fail;
    }
    uint64_t disk = m->sn[i].disk_size;
    if (disk != (img->size & ~(uint64_t)511)) {
        char *msg = NULL;
        if ((r = image_truncate(img, disk, IMG_PREALLOC_OFF, &msg)) < 0) {
            if (msg)
                err_report("%s", msg);
            free(msg);
            goto fail;
        }
    }
    r = qcow2_snapshot_goto_at(m, (uint32_t)i, &corrupt);
    r = after(img, r, corrupt);
    if (r == 0)
        return 0;
fail:
    *errmsg = xasprintf("Failed to load snapshot: %s", strerror(-r));
    return r;
}

int image_snapshot_delete(image_t *img, const char *id, const char *name, char **errmsg)
{
    struct qcow2_image *m = model(img);
    *errmsg = NULL;
    if (!m) {
        *errmsg = xasprintf("Block format '%s' used by device '' does not support internal "
                            "snapshot deletion", img->format);
        return -ENOTSUP;
    }
    if (m->geom.data_file)
        return -ENOTSUP;   /* qemu sets no message */
    long i = qcow2_snapshot_find(m, id, name);
    if (i < 0) {
        *errmsg = xstrdup("Can't find the snapshot");
        return -ENOENT;
    }
    const char *why;
    int r = qcow2_snapshot_validate_l1(m, (uint32_t)i, &why);
    if (r < 0) {
        *errmsg = xstrdup(why);
        return r;
    }
    char *corrupt = NULL;
    r = qcow2_snapshot_delete_at(m, (uint32_t)i, &why, &corrupt);
    r = after(img, r, corrupt);
    if (r < 0 && why)
        *errmsg = xasprintf("%s: %s", why, strerror(-r));
    return r;
}
