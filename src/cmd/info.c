/* qimg info: qemu-img 7.2's img_info. Each layer is opened on its own (no backing, no I/O),
 * its ImageInfo is built as a JSON object in qemu's field set, and printed either with the
 * JSON writer or in qemu's human layout (bdrv_image_info_dump). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "block/blockspec.h"
#include "block/driver.h"
#include "block/snapshot.h"
#include "cmd/commands.h"
#include "io/nbd.h"
#include "io/ssh.h"
#include "io/null.h"
#include "io/quorum.h"
#include "util/err.h"
#include "util/secrets.h"
#include "util/json.h"
#include "util/opts.h"
#include "util/size.h"
#include "util/xalloc.h"

enum { OPT_BACKING_CHAIN = OPT_CMD };

/* Everything info prints about one layer. */
struct layer_info {
    json_t *json;               /* ImageInfo, as --output=json prints it */
    snapshot_info_t *snaps;     /* for the human table */
    size_t n_snaps;
    char *next, *next_fmt;      /* --backing-chain: what to open next */
    bool no_full;               /* a backing name without an absolute form (over NBD) */
};

static json_t *snapshot_json(const snapshot_info_t *sn)
{
    json_t *o = json_object();
    json_set(o, "id", json_string(sn->id));
    json_set(o, "name", json_string(sn->name));
    json_set(o, "vm-state-size", json_int((int64_t)sn->vm_state_size));
    json_set(o, "date-sec", json_int(sn->date_sec));
    json_set(o, "date-nsec", json_int(sn->date_nsec));
    json_set(o, "vm-clock-sec", json_int((int64_t)(sn->vm_clock_nsec / 1000000000u)));
    json_set(o, "vm-clock-nsec", json_int((int64_t)(sn->vm_clock_nsec % 1000000000u)));
    if (sn->icount != UINT64_MAX)
        json_set(o, "icount", json_int((int64_t)sn->icount));
    return o;
}

/* qemu's bdrv_query_image_info(). */
static void query(image_t *img, struct layer_info *li)
{
    json_t *o = json_object();
    json_set(o, "filename", json_string(image_name(img)));
    json_set(o, "format", json_string(img->format));
    json_set(o, "virtual-size", json_int((int64_t)img->size));
    int64_t actual = image_allocated_size(img);
    if (actual >= 0)
        json_set(o, "actual-size", json_int(actual));
    /* a blkdebug filter on top (qemu's node is the filter): no format-specific block, no
     * backing file of its own */
    bool filter = img->top_bd != NULL;
    json_t *spec = img->drv->format_specific && !filter ? img->drv->format_specific(img)
                                                        : NULL;
    if (img->encrypted)
        json_set(o, "encrypted", json_bool(true));
    if (img->cluster_size)
        json_set(o, "cluster-size", json_int(img->cluster_size));
    /* qemu: the nbd and ssh drivers have no bdrv_get_info, and raw's asks its file; bochs has none;
     * nor have null-co and quorum (as nodes of their own or under raw, also through a
     * blkdebug filter, which asks its image) */
    bool no_info_file = qio_is_null(img->file) || qio_is_quorum(img->file);
    if (!img->drv->no_get_info && !(no_info_file && img->drv == &raw_driver) &&
        (!(qio_is_nbd(img->file) || qio_is_ssh(img->file)) ||
        (strcmp(img->format, "nbd") != 0 && strcmp(img->format, "ssh") != 0 &&
         strcmp(img->format, "raw") != 0)))
        json_set(o, "dirty-flag", json_bool(img->dirty));
    if (spec)
        json_set(o, "format-specific", spec);
    if (img->backing_file && !filter) {
        json_set(o, "backing-filename", json_string(img->backing_file));
        if (img->backing_full) /* NULL: relative name under an NBD image */
            json_set(o, "full-backing-filename", json_string(img->backing_full));
        if (img->backing_format)
            json_set(o, "backing-filename-format", json_string(img->backing_format));
        li->next = img->backing_full ? xstrdup(img->backing_full) : NULL;
        li->no_full = !img->backing_full;
        li->next_fmt = img->backing_format ? xstrdup(img->backing_format) : NULL;
    }
    if (!filter && img->drv->snapshots && img->drv->snapshots(img, &li->snaps, &li->n_snaps) == 0 &&
        li->n_snaps) {
        json_t *list = json_array();
        for (size_t i = 0; i < li->n_snaps; i++)
            json_append(list, snapshot_json(&li->snaps[i]));
        json_set(o, "snapshots", list);
    }
    li->json = o;
}

static const char *jstr(const json_t *o, const char *key);
static int64_t jint(const json_t *o, const char *key);

/* qemu's bdrv_image_info_dump(). */
static void dump_human(const struct layer_info *li)
{
    const json_t *o = li->json;
    char a[32], b[32];
    int64_t vsize = jint(o, "virtual-size");
    printf("image: %s\nfile format: %s\nvirtual size: %s (%" PRId64 " bytes)\ndisk size: %s\n",
           jstr(o, "filename"), jstr(o, "format"), size_to_str((uint64_t)vsize, a), vsize,
           json_get(o, "actual-size") ? size_to_str((uint64_t)jint(o, "actual-size"), b)
                                      : "unavailable");
    if (json_get(o, "encrypted"))
        printf("encrypted: yes\n");
    if (json_get(o, "cluster-size"))
        printf("cluster_size: %" PRId64 "\n", jint(o, "cluster-size"));
    const json_t *dirty = json_get(o, "dirty-flag");
    if (dirty && json_int_value(dirty))
        printf("cleanly shut down: no\n");
    const char *bf = jstr(o, "backing-filename");
    if (bf) {
        const char *full = jstr(o, "full-backing-filename");
        printf("backing file: %s", bf);
        if (!full)
            printf(" (cannot determine actual path)");
        else if (strcmp(bf, full))
            printf(" (actual path: %s)", full);
        printf("\n");
    }
    if (jstr(o, "backing-filename-format"))
        printf("backing file format: %s\n", jstr(o, "backing-filename-format"));
    if (li->n_snaps) {
        printf("Snapshot list:\n");
        snapshot_dump_header();
        for (size_t i = 0; i < li->n_snaps; i++)
            snapshot_dump_row(&li->snaps[i]);
    }
    const json_t *spec = json_get(o, "format-specific");
    if (spec) {
        printf("Format specific information:\n");
        json_print_human(stdout, json_get(spec, "data"), 1);
    }
}

/* Small typed readers over the ImageInfo object we built ourselves. */
static const char *jstr(const json_t *o, const char *key)
{
    const json_t *v = json_get(o, key);
    return v ? json_string_value(v) : NULL;
}

static int64_t jint(const json_t *o, const char *key)
{
    const json_t *v = json_get(o, key);
    return v ? json_int_value(v) : 0;
}

static void free_layers(struct layer_info *l, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        json_free(l[i].json);
        snapshot_list_free(l[i].snaps, l[i].n_snaps);
        free(l[i].next);
        free(l[i].next_fmt);
    }
    free(l);
}

/* qemu's collect_image_info_list(). Returns the number of layers, or -1 after reporting. */
static long collect(const char *filename, const char *fmt, bool chain, int flags,
                    struct layer_info **out)
{
    struct layer_info *l = NULL;
    size_t n = 0;
    char **names = NULL;
    struct stat *ids = NULL;
    const char *next = filename, *next_fmt = fmt;
    while (next) {
        struct stat st;
        bool have_st = stat(next, &st) == 0;
        for (size_t i = 0; i < n; i++) {
            if (!strcmp(names[i], next) ||
                (have_st && st.st_dev == ids[i].st_dev && st.st_ino == ids[i].st_ino)) {
                err_report("Backing file '%s' creates an infinite loop.", next);
                goto fail;
            }
        }
        image_t *img = image_open_or_report(next, next_fmt, flags);
        if (!img)
            goto fail;
        l = xreallocarray(l, n + 1, sizeof(*l));
        names = xreallocarray(names, n + 1, sizeof(*names));
        ids = xreallocarray(ids, n + 1, sizeof(*ids));
        memset(&l[n], 0, sizeof(l[n]));
        memset(&ids[n], 0, sizeof(ids[n]));
        names[n] = xstrdup(next);
        fstat(img->file->fd, &ids[n]);
        query(img, &l[n]);
        image_close(img);
        n++;
        if (chain && l[n - 1].no_full) {
            err_report("Could not determine absolute backing filename, but backing filename "
                       "'%s' present", jstr(l[n - 1].json, "backing-filename"));
            goto fail;
        }
        next = chain ? l[n - 1].next : NULL;
        next_fmt = chain ? l[n - 1].next_fmt : NULL;
        flags &= ~IMG_OPEN_IMAGE_OPTS; /* backing names are names, not option lists */
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(ids);
    *out = l;
    return (long)n;
fail:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(ids);
    free_layers(l, n);
    return -1;
}

static void help(void)
{
    printf("usage: %s info [--object objectdef] [--image-opts] [-f fmt] [--output=ofmt] "
           "[--backing-chain] [-U] filename\n", qimg_progname);
}

int cmd_info(int argc, char **argv)
{
    static const struct option longopts[] = {
        OPTS_LONG_COMMON,
        OPTS_LONG_FORMAT_OUTPUT,
        { "backing-chain", no_argument, 0, OPT_BACKING_CHAIN },
        { 0, 0, 0, 0 },
    };
    const char *fmt = NULL, *output = NULL;
    bool chain = false, share = false, image_opts = false;
    int c;
    opts_start();
    while ((c = opts_next(argc, argv, ":f:hU", longopts, help)) != -1) {
        switch (c) {
        case 'f': fmt = optarg; break;
        case 'U': share = true; break;
        case OPT_OUTPUT: output = optarg; break;
        case OPT_BACKING_CHAIN: chain = true; break;
        case OPT_IMAGE_OPTS: image_opts = true; break;
        case OPT_OBJECT:
            if (secrets_add_object(optarg) < 0)
                return 1;
            break;
        }
    }
    const char *filename = opts_one_file(argc, argv);
    bool json;
    if (opts_output_json(output, &json) < 0)
        return 1;
    if (blockspec_check_image_opts_fmt(image_opts, fmt) < 0)
        return 1;
    int flags = IMG_OPEN_NO_BACKING | IMG_OPEN_NO_IO | (share ? IMG_OPEN_SHARE : 0) |
                (image_opts ? IMG_OPEN_IMAGE_OPTS : 0);
    struct layer_info *l;
    long n = collect(filename, fmt, chain, flags, &l);
    if (n < 0)
        return 1;
    if (json && chain) {
        json_t *arr = json_array();
        for (long i = 0; i < n; i++) {
            json_append(arr, l[i].json);
            l[i].json = NULL;
        }
        json_print(stdout, arr);
        printf("\n");
        json_free(arr);
    } else if (json) {
        json_print(stdout, l[0].json);
        printf("\n");
    } else {
        for (long i = 0; i < n; i++) {
            if (i)
                printf("\n");
            dump_human(&l[i]);
        }
    }
    free_layers(l, (size_t)n);
    return 0;
}
