/* `qimg bitmap`: qemu-img 7.2's img_bitmap. The operations are applied in the order given,
 * each as qemu's QMP command does it (block/monitor/bitmap-qmp-cmds.c) on the persistent
 * bitmaps of a qcow2 image opened read-write without its backing chain: the bitmaps are
 * loaded at the open and stored at the close by the model (qcow2/bitmap_store.h); --remove
 * rewrites the directory at once (qcow2_co_remove_persistent_dirty_bitmap). The first
 * failing operation stops the run with qemu's "Operation OP on bitmap NAME failed: ..."
 * and exit 1; the image is still closed normally, so the operations before it are kept,
 * as in qemu. Beyond qemu-img: --dry-run and --journal FILE (cmd/ported.h): the whole run
 * (open, operations, close) on the planned overlay; the plan is printed or journaled even
 * when an operation failed, since qemu's image gets those writes too. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "block/blockspec.h"
#include "block/image.h"
#include "block/qcow2_model.h"
#include "cmd/commands.h"
#include "cmd/ported.h"
#include "io/lock.h"
#include "format/qcow2_bitmap.h"
#include "format/qcow2_ext.h"
#include "qcow2/bitmap_store.h"
#include "util/err.h"
#include "util/opts.h"
#include "util/secrets.h"
#include "util/size.h"
#include "util/xalloc.h"

enum { OPT_ADD = OPT_CMD, OPT_REMOVE, OPT_CLEAR, OPT_ENABLE, OPT_DISABLE, OPT_MERGE,
       OPT_DRY_RUN, OPT_JOURNAL };

enum act { ACT_ADD, ACT_REMOVE, ACT_CLEAR, ACT_ENABLE, ACT_DISABLE, ACT_MERGE };
static const char *const act_name[] = { "add", "remove", "clear", "enable", "disable",
                                        "merge" };

struct action {
    enum act act;
    const char *src;   /* merge: the source bitmap */
};

struct job {
    struct action *v;
    size_t n;
    const char *bitmap;
    bool has_granularity;
    uint32_t granularity;   /* qemu passes its int64_t as the QMP uint32_t: truncated */
    const char *src_filename, *src_fmt;
    image_t *src;           /* -b: the merge source image, read-only; NULL: the image */
};

static void help(void)
{
    printf("usage: %s bitmap [--object OBJ] [--image-opts] (--merge SOURCE | --add | --remove"
           " | --clear | --enable | --disable)... [-b SOURCE_FILE [-F SOURCE_FMT]]"
           " [-g GRANULARITY] [-f FMT] [--dry-run] [--journal FILE] FILENAME BITMAP\n",
           qimg_progname);
}

/* qemu's auto-generated node name of the image's format node (id_generate: "#block",
 * the node counter, which is 1 for it, and two random digits). */
static const char *node_name(void)
{
    static char buf[16];
    if (!buf[0])
        snprintf(buf, sizeof(buf), "#block1%02u",
                 (unsigned)(((unsigned long)time(NULL) ^ (unsigned long)getpid()) % 100));
    return buf;
}

/* bdrv_dirty_bitmap_check with BDRV_BITMAP_INCONSISTENT: the message and qemu's hint */
static char *inconsistent_msg(const struct qcow2_dbitmap *b)
{
    return xasprintf("Bitmap '%s' is inconsistent and cannot be used\n"
                     "Try block-dirty-bitmap-remove to delete this bitmap from disk", b->name);
}

/* block_dirty_bitmap_lookup: NULL with qemu's message */
static struct qcow2_dbitmap *lookup(struct qcow2_image *m, const char *name, char **msg)
{
    struct qcow2_dbitmap *b = m ? qcow2_dbitmap_find(m, name) : NULL;
    if (!b)
        *msg = xasprintf("Dirty bitmap '%s' not found", name);
    return b;
}

/* bdrv_get_default_bitmap_granularity: the cluster size within [4K, 64K], else 64K */
static uint32_t default_granularity(const image_t *img)
{
    uint32_t g = img->cluster_size ? img->cluster_size : 65536;
    return g < 4096 ? 4096 : g > 65536 ? 65536 : g;
}

/* qmp_block_dirty_bitmap_add(persistent=true), with qcow2_co_can_store_new_dirty_bitmap */
static int do_add(image_t *img, struct qcow2_image *m, const struct job *jb, char **msg)
{
    const char *name = jb->bitmap;
    if (!name[0]) {
        *msg = xstrdup("Bitmap name cannot be empty");
        return -EINVAL;
    }
    uint32_t g = jb->granularity;
    if (jb->has_granularity) {
        if (g < 512 || (g & (g - 1))) {
            *msg = xstrdup("Granularity must be power of 2 and at least 512");
            return -EINVAL;
        }
    } else {
        g = default_granularity(img);
    }
    if (!m) {
        *msg = xasprintf("Can't store persistent bitmaps to %s: %s", node_name(),
                         strerror(ENOTSUP));
        return -ENOTSUP;
    }
    if (qcow2_dbitmap_find(m, name)) {
        *msg = xasprintf("Bitmap already exists: %s", name);
        return -EEXIST;
    }
    const char *why = NULL;
    uint32_t bits = (uint32_t)__builtin_ctz(g);
    uint64_t len = img->size;
    uint64_t bytes = ((len + g - 1) / g + 7) / 8;   /* get_bitmap_bytes_needed */
    if (m->h.version < 3) {
        why = "Cannot store dirty bitmaps in qcow2 v2 files";
    } else if (bits > QCOW2_BME_MAX_GRANULARITY || bits < QCOW2_BME_MIN_GRANULARITY) {
        why = "Granularity is out of range";   /* cannot happen: 512 <= g <= 2^31 */
    } else if (bytes > QCOW2_BME_MAX_PHYS_SIZE ||
               bytes > (uint64_t)QCOW2_BME_MAX_TABLE_SIZE * m->cs) {
        why = "Too much space will be occupied by the bitmap. Use larger granularity";
    } else if (strlen(name) > QCOW2_BME_MAX_NAME_SIZE) {
        why = "Name length exceeds maximum (1023 characters)";
    } else {
        /* every persistent bitmap in memory, this one too */
        uint64_t nb = 1, dir = qcow2_bitmap_dirent_size((uint32_t)strlen(name), 0);
        for (uint32_t i = 0; m->dbm && i < m->dbm->n; i++) {
            nb++;
            dir += qcow2_bitmap_dirent_size((uint32_t)strlen(m->dbm->v[i].name), 0);
        }
        if (nb > QCOW2_MAX_BITMAPS)
            why = "Maximum number of persistent bitmaps is already reached";
        else if (dir > QCOW2_MAX_BITMAP_DIR_SIZE)
            why = "Not enough space in the bitmap directory";
    }
    if (why) {
        *msg = xasprintf("Can't make bitmap '%s' persistent in '%s': %s", name, node_name(),
                         why);
        return -EINVAL;
    }
    if (!qcow2_dbitmap_add(m, name, bits, true)) {
        *msg = xstrdup("Cannot allocate memory");
        return -ENOMEM;
    }
    return 0;
}

/* hbitmap_merge into dst: the same granularity ORs the words; another one sets, for each
 * dirty granule of src, the bytes it covers (hbitmap_sparse_merge). */
static void merge_bits(struct qcow2_dbitmap *dst, const struct qcow2_dbitmap *src,
                       uint64_t size)
{
    if (dst->gran_bits == src->gran_bits) {
        for (uint64_t i = 0; i < dst->nbytes && i < src->nbytes; i++)
            dst->bits[i] |= src->bits[i];
        return;
    }
    for (uint64_t k = 0; k < src->nbits; k++) {
        if (!(src->bits[k / 8] & (1u << (k % 8)))) {
            if (!(k % 8) && !src->bits[k / 8])
                k += 7;
            continue;
        }
        uint64_t from = k << src->gran_bits, to = (k + 1) << src->gran_bits;
        if (to > size)
            to = size;
        for (uint64_t d = from >> dst->gran_bits; d <= (to - 1) >> dst->gran_bits &&
             d < dst->nbits; d++)
            dst->bits[d / 8] |= (uint8_t)(1u << (d % 8));
    }
}

/* block_dirty_bitmap_merge with one external source */
static int do_merge(image_t *img, struct qcow2_image *m, const struct job *jb,
                    const char *src_name, char **msg)
{
    struct qcow2_dbitmap *dst = lookup(m, jb->bitmap, msg);
    if (!dst)
        return -ENOENT;
    image_t *simg = jb->src ? jb->src : img;
    struct qcow2_image *sm = jb->src ? qcow2_model_of(jb->src) : m;
    struct qcow2_dbitmap *src = lookup(sm, src_name, msg);
    if (!src)
        return -ENOENT;
    /* bdrv_merge_dirty_bitmap: dst BDRV_BITMAP_DEFAULT, src BDRV_BITMAP_ALLOW_RO */
    if (dst->inconsistent) {
        *msg = inconsistent_msg(dst);
        return -EINVAL;
    }
    if (src->inconsistent) {
        *msg = inconsistent_msg(src);
        return -EINVAL;
    }
    if (img->size != simg->size) {
        *msg = xasprintf("Bitmaps are of different sizes (destination size is %llu, source "
                         "size is %llu) and can't be merged", (unsigned long long)img->size,
                         (unsigned long long)simg->size);
        return -EINVAL;
    }
    if (dst != src)
        merge_bits(dst, src, img->size);
    return 0;
}

static int do_action(image_t *img, const struct job *jb, const struct action *a, char **msg)
{
    struct qcow2_image *m = qcow2_model_of(img);
    struct qcow2_dbitmap *b;
    switch (a->act) {
    case ACT_ADD:
        return do_add(img, m, jb, msg);
    case ACT_MERGE:
        return do_merge(img, m, jb, a->src, msg);
    case ACT_REMOVE:
        if (!(b = lookup(m, jb->bitmap, msg)))
            return -ENOENT;
        return qcow2_bitmap_remove(m, jb->bitmap, msg);
    case ACT_CLEAR:
    case ACT_ENABLE:
    case ACT_DISABLE:
        if (!(b = lookup(m, jb->bitmap, msg)))
            return -ENOENT;
        if (b->inconsistent) {
            *msg = inconsistent_msg(b);
            return -EINVAL;
        }
        if (a->act == ACT_CLEAR)
            memset(b->bits, 0, (size_t)b->nbytes);
        else
            b->enabled = a->act == ACT_ENABLE;
        return 0;
    }
    return -EINVAL;
}

/* The operations in order; the first failure ends them. 0 or 1. */
static int run_actions(image_t *img, void *ctx)
{
    struct job *jb = ctx;
    for (size_t i = 0; i < jb->n; i++) {
        char *msg = NULL;
        if (do_action(img, jb, &jb->v[i], &msg) < 0) {
            err_report("Operation %s on bitmap %s failed: %s", act_name[jb->v[i].act],
                       jb->bitmap, msg ? msg : "");
            free(msg);
            return 1;
        }
    }
    return 0;
}

/* A merge source of another image: its persistent bitmaps read into memory, read-only. */
static image_t *open_source(const struct job *jb)
{
    image_t *s = image_open_or_report(jb->src_filename, jb->src_fmt, IMG_OPEN_NO_BACKING);
    struct qcow2_image *sm = qcow2_model_of(s);
    char *msg = NULL;
    if (sm && qcow2_bitmaps_load_ro(sm, &msg) < 0) {
        err_report("Could not open '%s': %s", jb->src_filename, msg ? msg : "");
        free(msg);
        image_close(s);
        return NULL;
    }
    return s;
}

/* --journal: the writer's lock is tried before any work, so that an image in use is
 * refused with qemu's message alone (the journal's writer takes it again to apply). */
static int journal_lock_free(const char *filename)
{
    qio_t *q;
    const char *perm;
    int r = qio_open_file(filename, QIO_RDWR, &q);
    if (r < 0) {
        err_report("Could not open '%s': %s", filename, strerror(-r));
        return -1;
    }
    if ((r = qio_lock_for_repair(q, &perm)) < 0) {
        if (r == -EBUSY)
            err_report("Could not open '%s': Failed to get \"%s\" lock\n"
                       "Is another process using the image [%s]?", filename, perm, filename);
        else
            err_report("Could not open '%s': %s", filename, strerror(-r));
    }
    qio_close(q);
    return r < 0 ? -1 : 0;
}

/* The run on the planned overlay of the image (orig: open read-only). */
static int run_ported(image_t *orig, const char *filename, struct job *jb, bool dry_run,
                      const char *journal)
{
    if (journal && journal_lock_free(filename) < 0)
        return 1;
    struct ported pt;
    image_t *img;
    char *msg = NULL;
    if (ported_open(&pt, orig, filename, &img, &msg) < 0) {
        err_report("%s", msg);
        free(msg);
        return 1;
    }
    /* the freed bitmap clusters qemu punches: their zeros planned, so the bytes are qemu's */
    ported_record_discards(&pt);
    int ret = run_actions(img, jb);
    if (ported_finish(&pt, filename, true, dry_run, journal, "Bitmap", &msg) < 0) {
        if (msg)
            err_report("%s", msg);
        free(msg);
        ret = 1;
    }
    return ret;
}

int cmd_bitmap(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, 0, 'h' },
        { "object", required_argument, 0, OPT_OBJECT },
        { "image-opts", no_argument, 0, OPT_IMAGE_OPTS },
        { "add", no_argument, 0, OPT_ADD },
        { "remove", no_argument, 0, OPT_REMOVE },
        { "clear", no_argument, 0, OPT_CLEAR },
        { "enable", no_argument, 0, OPT_ENABLE },
        { "disable", no_argument, 0, OPT_DISABLE },
        { "merge", required_argument, 0, OPT_MERGE },
        { "granularity", required_argument, 0, 'g' },
        { "source-file", required_argument, 0, 'b' },
        { "source-format", required_argument, 0, 'F' },
        { "dry-run", no_argument, 0, OPT_DRY_RUN },
        { "journal", required_argument, 0, OPT_JOURNAL },
        { 0, 0, 0, 0 },
    };
    struct job jb = { 0 };
    const char *fmt = NULL, *journal = NULL;
    bool add = false, merge = false, dry_run = false, image_opts = false;
    int64_t granularity = 0;
    int c, ret = 1;
    jb.v = xcalloc((size_t)argc + 1, sizeof(*jb.v));
    opts_start();
    while ((c = opts_next(argc, argv, ":b:f:F:g:h", longopts, help)) != -1) {
        switch (c) {
        case 'b': jb.src_filename = optarg; break;
        case 'f': fmt = optarg; break;
        case 'F': jb.src_fmt = optarg; break;
        case 'g':
            if (cvtnum("granularity", optarg, &granularity) < 0)
                goto out_free;
            break;
        case OPT_ADD: jb.v[jb.n++].act = ACT_ADD; add = true; break;
        case OPT_REMOVE: jb.v[jb.n++].act = ACT_REMOVE; break;
        case OPT_CLEAR: jb.v[jb.n++].act = ACT_CLEAR; break;
        case OPT_ENABLE: jb.v[jb.n++].act = ACT_ENABLE; break;
        case OPT_DISABLE: jb.v[jb.n++].act = ACT_DISABLE; break;
        case OPT_MERGE:
            jb.v[jb.n].act = ACT_MERGE;
            jb.v[jb.n++].src = optarg;
            merge = true;
            break;
        case OPT_DRY_RUN: dry_run = true; break;
        case OPT_JOURNAL: journal = optarg; break;
        case OPT_OBJECT:
            if (secrets_add_object(optarg) < 0)
                goto out_free;
            break;
        case OPT_IMAGE_OPTS: image_opts = true; break;  /* the image; -b stays a name */
        }
    }
    if (jb.n == 0) {
        err_report("Need at least one of --add, --remove, --clear, --enable, --disable, "
                   "or --merge");
        goto out_free;
    }
    if (granularity && !add) {
        err_report("granularity only supported with --add");
        goto out_free;
    }
    if (jb.src_fmt && !jb.src_filename) {
        err_report("-F only supported with -b");
        goto out_free;
    }
    if (jb.src_filename && !merge) {
        err_report("Merge bitmap source file only supported with --merge");
        goto out_free;
    }
    if (optind != argc - 2) {
        err_report("Expecting filename and bitmap name");
        goto out_free;
    }
    if (!ported_modes_ok(dry_run, journal))
        goto out_free;
    const char *filename = argv[optind];
    jb.bitmap = argv[optind + 1];
    jb.has_granularity = granularity != 0;
    jb.granularity = (uint32_t)granularity;

    /* the bitmaps live in this image alone: no backing chain (BDRV_O_NO_BACKING) */
    bool ported = dry_run || journal;
    int flags = IMG_OPEN_NO_BACKING |
                (ported ? (journal ? IMG_OPEN_SHARE : 0) : IMG_OPEN_RDWR);
    if (blockspec_check_image_opts_fmt(image_opts, fmt) < 0)
        goto out_free;
    image_t *img = image_open_or_report(filename, fmt,
                                        flags | (image_opts ? IMG_OPEN_IMAGE_OPTS : 0));
    if (!img)
        goto out_free;
    /* the plan and the journal name the image's file, not an option list */
    if (image_opts || blockspec_has_protocol(filename))
        filename = img->filename;
    if (jb.src_filename && !(jb.src = open_source(&jb)))
        goto out;
    if (ported)
        ret = run_ported(img, filename, &jb, dry_run, journal);
    else
        ret = run_actions(img, &jb);
out:
    image_close(jb.src);
    image_close(img);
out_free:
    free(jb.v);
    return ret;
}
