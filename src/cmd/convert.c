/* qimg convert: qemu-img 7.2's img_convert. The command line and its checks in qemu's
 * order (so each bad combination gets qemu's message and exit code), the target created
 * through the create engine as qemu's bdrv_create creates it (no "Formatting" line, the
 * size the sources add up to), then the copy (convert_copy.c, convert_pipe.c) and the
 * persistent bitmaps (convert_bitmaps.c). */
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/blockspec.h"
#include "block/create.h"
#include "block/create_opts.h"
#include "block/image.h"
#include "block/measure.h"
#include "cmd/commands.h"
#include "cmd/convert_salvage.h"
#include "io/lock.h"
#include "cmd/convert.h"
#include "cmd/convert_extra.h"
#include "util/cache.h"
#include "util/err.h"
#include "util/opts.h"
#include "util/progress.h"
#include "util/secrets.h"
#include "util/size.h"
#include "util/xalloc.h"

enum {
    OPT_TARGET_IMAGE_OPTS = OPT_CMD,
    OPT_SALVAGE,
    OPT_TARGET_IS_ZERO,
    OPT_BITMAPS,
    OPT_SKIP_BROKEN,
};

static void help(void)
{
    printf("usage: %s convert [--object objectdef] [--image-opts] [--target-image-opts]"
           " [--target-is-zero] [--bitmaps [--skip-broken-bitmaps]] [-U] [-C] [-c] [-p] [-q]"
           " [-n] [-f fmt] [-t cache] [-T src_cache] [-O output_fmt] [-B backing_file"
           " [-F backing_fmt]] [-o options] [-l snapshot_param] [-S sparse_size] [-r rate_limit]"
           " [-m num_coroutines] [-W] [--salvage] filename [filename2 [...]] output_filename\n",
           qimg_progname);
}

/* qemu's qemu_strtol(optarg, NULL, 0, &n) for -m: the whole string a number */
static bool parse_long(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 0);
    if (errno || end == s || *end)
        return false;
    *out = v;
    return true;
}

/* bdrv_has_zero_init of a new target without backing file: raw, qcow2, qed and vdi on a
 * regular file start out reading zeros, as qemu's do. A raw LUKS volume does not (zeros on
 * disk decrypt to noise; qemu's crypto driver has no has_zero_init), so its zeros are
 * written. */
static bool target_zero_init(const image_t *t, const char *prealloc)
{
    if (!strcmp(t->format, "luks"))
        return false;
    /* qcow2_has_zero_init: preallocated clusters of an encrypted image read as noise too */
    return !(t->encrypted && prealloc && strcmp(prealloc, "off"));
}

/* qemu-img convert opens its sources with BDRV_O_NO_SHARE: nobody else may write or resize
 * them while they are read, raw ones included (so a target naming a source is refused by
 * the creation's locks instead of emptying it). */
static int lock_source(image_t *img, const char *name)
{
    const char *perm = NULL;
    bool shared = false;
    int r = qio_lock_perms(img->file, QIO_PERM_READ, QIO_PERM_WRITE | QIO_PERM_RESIZE, &perm,
                           &shared);
    if (r == -EBUSY) {
        char *msg = qio_lock_msg(perm, shared, name);
        err_report("Could not open '%s': %s", name, msg);
        free(msg);
    } else if (r < 0) {
        err_report("Could not open '%s': %s", name, strerror(-r));
    }
    return r;
}

/* The create options whose name ends in "key-secret" (encrypt.key-secret, luks'
 * key-secret), as options for the target's open (qemu's img_add_key_secrets). */
static void convert_key_secret_opts(const struct copts *o, struct bspec *kopts)
{
    static const char suffix[] = "key-secret";
    for (size_t i = 0; i < o->n; i++) {
        const char *name = o->desc[i]->name;
        size_t len = strlen(name);
        if (o->str[i] && len >= sizeof(suffix) - 1 &&
            !strcmp(name + len - (sizeof(suffix) - 1), suffix))
            bspec_put_str(kopts, name, o->str[i], true);
    }
}

int cmd_convert(int argc, char **argv)
{
    static const struct option longopts[] = {
        OPTS_LONG_COMMON,
        { "target-image-opts", no_argument, 0, OPT_TARGET_IMAGE_OPTS },
        { "salvage", optional_argument, 0, OPT_SALVAGE }, /* =reader: convert_salvage.h */
        { "target-is-zero", no_argument, 0, OPT_TARGET_IS_ZERO },
        { "bitmaps", no_argument, 0, OPT_BITMAPS },
        { "skip-broken-bitmaps", no_argument, 0, OPT_SKIP_BROKEN },
        { 0, 0, 0, 0 },
    };
    const char *fmt = NULL, *out_fmt = NULL, *cache = "unsafe", *src_cache = "writeback";
    const char *out_baseimg = NULL, *backing_fmt = NULL, *snapshot_name = NULL;
    char *sn_opts = NULL;
    char *options = NULL;
    bool image_opts = false, tgt_image_opts = false, skip_create = false, progress = false;
    bool force_share = false, explicit_min_sparse = false, bitmaps = false,
         skip_broken = false, salvage_reader = false;
    int64_t rate_limit = 0;
    struct convert s = {
        .min_sparse = 8, /* at least 4k of zeros for sparse detection */
        .buf_sectors = CONVERT_IO_BUF_SECTORS,
        .wr_in_order = true,
        .num_coroutines = 8,
    };
    int ret = 1, c;
    struct copts o;
    bool have_opts = false;
    image_t *target = NULL;

    opts_start();
    while ((c = opts_next(argc, argv, ":hf:O:B:CcF:o:l:S:pt:T:qnm:WUr:", longopts, help)) !=
           -1) {
        switch (c) {
        case 'f': fmt = optarg; break;
        case 'O': out_fmt = optarg; break;
        case 'B': out_baseimg = optarg; break;
        case 'F': backing_fmt = optarg; break;
        case 'C': s.copy_range = true; break;
        case 'c': s.compressed = true; break;
        case 'o':
            if (opts_accumulate(&options, optarg) < 0)
                goto fail_getopt;
            break;
        case 'l':
            if (!strncmp(optarg, "snapshot.", 9)) {
                char *why = NULL;
                if (convert_snapshot_opts_check(optarg, &why) < 0) {
                    err_report("%s", why);
                    err_report("Failed in parsing snapshot param '%s'", optarg);
                    free(why);
                    goto fail_getopt;
                }
                free(sn_opts);
                sn_opts = xstrdup(optarg);
            } else {
                snapshot_name = optarg;
            }
            break;
        case 'S': {
            int64_t v;
            if (cvtnum("buffer size for sparse output", optarg, &v) < 0)
                goto fail_getopt;
            if (v % CONVERT_SECTOR || v / CONVERT_SECTOR > CONVERT_MAX_BUF_SECTORS) {
                err_report("Invalid buffer size for sparse output specified. Valid sizes are "
                           "multiples of %d up to %d. Select 0 to disable sparse detection "
                           "(fully allocates output).", CONVERT_SECTOR,
                           CONVERT_MAX_BUF_SECTORS * CONVERT_SECTOR);
                goto fail_getopt;
            }
            s.min_sparse = (int)(v / CONVERT_SECTOR);
            explicit_min_sparse = true;
            break;
        }
        case 'p': progress = true; break;
        case 't': cache = optarg; break;
        case 'T': src_cache = optarg; break;
        case 'q': s.quiet = true; break;
        case 'n': skip_create = true; break;
        case 'm': {
            long v;
            if (!parse_long(optarg, &v) || v < 1 || v > CONVERT_MAX_COROUTINES) {
                err_report("Invalid number of coroutines. Allowed number of coroutines is "
                           "between 1 and %d", CONVERT_MAX_COROUTINES);
                goto fail_getopt;
            }
            s.num_coroutines = (int)v;
            break;
        }
        case 'W': s.wr_in_order = false; break;
        case 'U': force_share = true; break;
        case 'r':
            if (cvtnum("rate limit", optarg, &rate_limit) < 0)
                goto fail_getopt;
            break;
        case OPT_OBJECT:
            if (secrets_add_object(optarg) < 0)
                goto fail_getopt;
            break;
        case OPT_IMAGE_OPTS: image_opts = true; break;
        case OPT_TARGET_IMAGE_OPTS: tgt_image_opts = true; break;
        case OPT_SALVAGE: s.salvage = true; salvage_reader = convert_salvage_arg(optarg); break;
        case OPT_TARGET_IS_ZERO: s.has_zero_init = true; break;
        case OPT_BITMAPS: bitmaps = true; break;
        case OPT_SKIP_BROKEN: skip_broken = true; break;
        }
    }

    if (!out_fmt && !tgt_image_opts)
        out_fmt = "raw";
    if (skip_broken && !bitmaps) {
        err_report("Use of --skip-broken-bitmaps requires --bitmaps");
        goto fail_getopt;
    }
    if (s.compressed && s.copy_range) {
        err_report("Cannot enable copy offloading when -c is used");
        goto fail_getopt;
    }
    if (explicit_min_sparse && s.copy_range) {
        err_report("Cannot enable copy offloading when -S is used");
        goto fail_getopt;
    }
    if (s.copy_range && s.salvage) {
        err_report("Cannot use copy offloading in salvaging mode");
        goto fail_getopt;
    }
    if (tgt_image_opts && !skip_create) {
        err_report("--target-image-opts requires use of -n flag");
        goto fail_getopt;
    }
    if (skip_create && options) {
        err_report("-o has no effect when skipping image creation");
        goto fail_getopt;
    }
    if (s.has_zero_init && !skip_create) {
        err_report("--target-is-zero requires use of -n flag");
        goto fail_getopt;
    }

    s.src_num = argc - optind - 1;
    const char *out_filename = s.src_num >= 1 ? argv[argc - 1] : NULL;

    if (options && copts_has_help(options)) {
        if (out_fmt) {
            if (copts_format_no_create(out_fmt)) { /* print_block_option_help */
                err_report("Format driver '%s' does not support image creation", out_fmt);
                goto fail_getopt;
            }
            if (!copts_format_known(out_fmt)) {
                err_report("Unknown file format '%s'", out_fmt);
                goto fail_getopt;
            }
            copts_print_help(out_fmt, out_filename != NULL);
            ret = 0;
        } else {
            err_report("Option help requires a format be specified");
        }
        goto fail_getopt;
    }
    if (s.src_num < 1) {
        err_report("Must specify image file name");
        goto fail_getopt;
    }
    if (!cache_mode_valid(src_cache)) {
        err_report("Invalid source cache option: %s", src_cache);
        goto fail_getopt;
    }

    if (s.quiet)
        progress = false;
    progress_init(progress, 1.0f);
    progress_print(0, 100);

    s.src = xcalloc((size_t)s.src_num, sizeof(*s.src));
    for (int i = 0; i < s.src_num; i++) {
        const char *name = argv[optind + i];
        if (blockspec_check_image_opts_fmt(image_opts, fmt) < 0) /* img_open's first check */
            goto out;
        image_t *img = convert_open_source(name, fmt, (force_share ? IMG_OPEN_SHARE : 0) |
                                                      (image_opts ? IMG_OPEN_IMAGE_OPTS : 0),
                                           s.salvage, salvage_reader);
        if (!img)
            goto out;
        s.src[i].img = img;
        s.src[i].name = name;
        if (!force_share && lock_source(img, name) < 0)
            goto out;
        s.src[i].sectors = (int64_t)((img->size + CONVERT_SECTOR - 1) / CONVERT_SECTOR);
        s.src[i].alignment = 1;
        if (img->cluster_size / CONVERT_SECTOR > 1)
            s.src[i].alignment = (int)(img->cluster_size / CONVERT_SECTOR);
        s.total_sectors += s.src[i].sectors;
    }

    if (sn_opts || snapshot_name) {
        if (!sn_opts && s.src_num > 1) {
            err_report("No support for concatenating multiple snapshot");
            goto out;
        }
        char *why = NULL;
        if (convert_snapshot_load(s.src[0].img, sn_opts, snapshot_name, &why) < 0) {
            err_report("Failed to load snapshot: %s", why);
            free(why);
            goto out;
        }
        s.src[0].sectors = (int64_t)((s.src[0].img->size + CONVERT_SECTOR - 1) /
                                     CONVERT_SECTOR);
        s.total_sectors = 0;
        for (int i = 0; i < s.src_num; i++)
            s.total_sectors += s.src[i].sectors;
    }

    const char *out_baseimg_param = NULL;
    /* a target on an NBD export: created through it; a raw one does not read zeros by
     * itself (qemu's nbd driver has no has_zero_init; a new qcow2 over it reads zeros from
     * its empty tables, as qcow2_has_zero_init says) */
    bool out_nbd = !tgt_image_opts && block_create_is_nbd(out_filename);
    if (!skip_create) {
        char err[1024];
        if (copts_format_no_create(out_fmt)) { /* a known driver without create_opts */
            err_report("Format driver '%s' does not support image creation", out_fmt);
            goto out;
        }
        if (copts_init(&o, out_fmt, true) < 0) {
            err_report("Unknown file format '%s'", out_fmt);
            goto out;
        }
        have_opts = true;
        if (options && copts_parse(&o, options, err, sizeof(err)) < 0) {
            err_report("%s", err);
            goto out;
        }
        copts_set_number(&o, "size", (uint64_t)s.total_sectors * CONVERT_SECTOR);
        if (out_baseimg && copts_set(&o, "backing_file", out_baseimg) < 0) {
            err_report("Backing file not supported for file format '%s'", out_fmt);
            goto out;
        }
        if (backing_fmt && copts_set(&o, "backing_fmt", backing_fmt) < 0) {
            err_report("Backing file format not supported for file format '%s'", out_fmt);
            goto out;
        }
        if (copts_isset(&o, "backing_file"))
            out_baseimg_param = copts_str(&o, "backing_file");
    }
    if (out_baseimg_param)
        out_baseimg = out_baseimg_param;
    s.target_has_backing = out_baseimg != NULL;

    if (s.has_zero_init && s.target_has_backing) {
        err_report("Cannot use --target-is-zero when the destination image has a backing file");
        ret = 0; /* qemu-img 7.2 leaves its status at 0 on this path */
        goto out;
    }
    if (s.src_num > 1 && out_baseimg) {
        err_report("Having a backing file for the target makes no sense when concatenating "
                   "multiple input images");
        goto out;
    }
    if (out_baseimg_param && !copts_isset(&o, "backing_fmt")) {
        err_report("Use of backing file requires explicit backing format");
        goto out;
    }
    if (s.compressed) {
        if (!skip_create && strcmp(out_fmt, "qcow2")) {
            err_report("Compression not supported for this file format");
            goto out;
        }
        if (have_opts && ((copts_isset(&o, "encrypt") && copts_bool(&o, "encrypt", false)) ||
                          copts_isset(&o, "encrypt.format"))) {
            err_report("Compression and encryption not supported at the same time");
            goto out;
        }
        const char *pre = have_opts && copts_isset(&o, "preallocation")
                              ? copts_str(&o, "preallocation") : NULL;
        if (pre && strcmp(pre, "off")) {
            err_report("Compression and preallocation not supported at the same time");
            goto out;
        }
    }
    if (bitmaps) {
        if (s.src_num > 1) {
            err_report("Copying bitmaps only possible with single source");
            goto out;
        }
        if (convert_check_bitmaps(s.src[0].img, skip_broken) < 0)
            goto out;
    }

    if (!skip_create) {
        char *msg = NULL;
        int r = out_nbd ? block_create_nbd(out_fmt, out_filename, &o, &msg)
                        : block_create(out_fmt, out_filename, &o, &msg);
        if (r < 0) {
            if (r == -EFBIG)
                err_report("%s: error while converting %s: The image size is too large for "
                           "file format '%s'%s", out_filename, out_fmt, out_fmt,
                           copts_num(&o, "cluster_size", 0)
                               ? " (try using a larger cluster size)" : "");
            else
                err_report("%s: error while converting %s: %s", out_filename, out_fmt,
                           msg ? msg : strerror(-r));
            free(msg);
            goto out;
        }
    }
    s.target_is_new = !skip_create;

    if (!cache_mode_valid(cache)) {
        err_report("Invalid cache option: %s", cache);
        goto out;
    }
    if (skip_create) {
        /* -n: the target is any name, or an option list with --target-image-opts */
        if (blockspec_check_image_opts_fmt(tgt_image_opts, out_fmt) < 0)
            goto out;
        target = image_open_or_report(out_filename, out_fmt,
                                      IMG_OPEN_RDWR | (tgt_image_opts ? IMG_OPEN_IMAGE_OPTS : 0));
    } else {
        /* the new target opens with the key-secret options it was created with (qemu's
         * img_add_key_secrets): an encrypted target is written through its key */
        struct bspec kopts = { 0 };
        convert_key_secret_opts(&o, &kopts);
        char *msg = NULL;
        if (image_open_opts(out_filename, &kopts, out_fmt, IMG_OPEN_RDWR, &target, &msg) < 0) {
            err_report("%s", msg);
            free(msg);
        }
        bspec_free(&kopts);
    }
    if (!target)
        goto out;
    s.target = target;
    /* a target qimg just created is filled from scratch (a -n target may hold data) */
    if (s.target_is_new)
        image_hint_filling(target);
    /* -t unsafe (convert's default): qemu's BDRV_O_NO_FLUSH, no flush reaches the disk */
    if (!strcmp(cache, "unsafe")) {
        target->file->no_flush = true;
        if (target->data_file)
            target->data_file->no_flush = true;
    }

    if (bitmaps && !image_supports_persistent_bitmaps(target)) {
        err_report("Format driver '%s' does not support bitmaps", target->format);
        goto out;
    }
    if (s.compressed && strcmp(target->format, "qcow2")) {
        err_report("Compression not supported for this file format");
        goto out;
    }
    /* qemu's buffer: 2 MiB, or the target's discard alignment when larger (qcow2's
     * cluster size, at most 2 MiB) */
    s.alignment = 1;
    if (s.min_sparse) {
        int a = 1;
        while (a * 2 <= s.min_sparse)
            a *= 2;
        s.alignment = a;
    }
    if (skip_create) {
        int64_t out_sectors = (int64_t)((target->size + CONVERT_SECTOR - 1) / CONVERT_SECTOR);
        if (out_sectors < s.total_sectors) {
            err_report("output file is smaller than input file");
            goto out;
        }
    }
    s.target_backing_sectors = -1;
    if (s.target_has_backing && s.target_is_new && target->backing)
        s.target_backing_sectors =
            (int64_t)((target->backing->size + CONVERT_SECTOR - 1) / CONVERT_SECTOR);
    /* bdrv_get_info: raw has none (cluster_sectors stays 0) */
    if (strcmp(target->format, "raw"))
        s.cluster_sectors = target->cluster_size / CONVERT_SECTOR;
    s.rate_limit = (uint64_t)rate_limit;

    if (!s.has_zero_init && s.target_is_new && s.min_sparse && !s.target_has_backing &&
        !(out_nbd && !strcmp(target->format, "raw")))
        s.has_zero_init = target_zero_init(target, have_opts && copts_isset(&o, "preallocation")
                                                       ? copts_str(&o, "preallocation") : NULL);

    int r = convert_do_copy(&s);
    if (r == 0 && bitmaps)
        r = convert_copy_bitmaps(s.src[0].img, target, skip_broken);
    if (r == 0) {
        r = image_flush(target);
        if (r < 0)
            err_report("%s: %s", out_filename, strerror(-r));
    }
    ret = r < 0 ? 1 : 0;

out:
    if (ret == 0)
        progress_print(100, 0);
    progress_end();
    fflush(stdout);
    if (ret == 0 && s.src) /* sources from the salvage reader: lost ranges, exit 2 or 3 */
        for (int i = 0; i < s.src_num; i++)
            ret = convert_salvage_finish(s.src[i].img, ret);
    if (target)
        image_close(target);
    if (s.src)
        for (int i = 0; i < s.src_num; i++)
            image_close(s.src[i].img);
    free(s.src);
    if (have_opts)
        copts_free(&o);
fail_getopt:
    free(sn_opts);
    free(options);
    return ret;
}
