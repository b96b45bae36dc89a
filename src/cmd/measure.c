/* qimg measure: qemu-img's img_measure. The size a new image of format -O (default raw)
 * needs, for a virtual size (--size) or for the data of a source image (its backing chain
 * included, optionally an internal snapshot -l). Errors are reported in qemu's order: the
 * options as getopt meets them, the operands, the source, the target format, -o, the
 * measurement. Every error exits 1. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/blockspec.h"
#include "block/create_opts.h"
#include "block/image.h"
#include "block/measure.h"
#include "cmd/commands.h"
#include "qcow2/measure.h"
#include "block/create.h"
#include "util/err.h"
#include "util/secrets.h"
#include "util/json.h"
#include "util/opts.h"
#include "util/size.h"
#include "util/xalloc.h"

enum { OPT_SIZE = OPT_CMD };

struct measure_info {
    uint64_t required, fully_allocated, bitmaps;
    bool has_bitmaps;
};

static uint64_t round_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

/* qemu's raw_measure: a raw image is as large as its virtual disk. */
static int raw_measure(struct copts *o, image_t *in, struct measure_info *info)
{
    info->required = in ? in->size : round_up(copts_num(o, "size", 0), 512);
    info->fully_allocated = info->required;
    return 0;
}

/* qemu's qcow2_opt_get_version_del: only the QemuOpts spellings (create also takes v2/v3,
 * which its QAPI path knows; measure refuses them as qemu's does) */
static int qcow2_version(struct copts *o)
{
    const char *v = copts_isset(o, "compat") ? copts_str(o, "compat") : NULL;
    if (!v || !strcmp(v, "1.1"))
        return 3;
    if (!strcmp(v, "0.10"))
        return 2;
    err_report("Invalid compatibility level: '%s'", v);
    return -1;
}

/* The qcow2 source's clusters that hold data, as qcow2_measure counts them: block status
 * over the whole chain; zero ranges are skipped, allocated data ranges count every cluster
 * they touch (from the start of the first one). */
static int count_data(image_t *in, uint64_t cs, uint64_t *required)
{
    uint64_t size = in->size, pnum;
    for (uint64_t off = 0; off < size; off += pnum) {
        block_status_t st;
        int r = image_block_status_above(in, NULL, off, size - off, &st);
        if (r < 0) {
            err_report("Unable to get block status: %s", strerror(-r));
            return -1;
        }
        pnum = st.pnum;
        if (pnum == 0) {
            err_report("Unable to get block status: %s", strerror(EIO));
            return -1; /* cannot happen below the size; never loop */
        }
        if (st.flags & BS_ZERO)
            continue;
        if ((st.flags & (BS_DATA | BS_ALLOCATED)) == (BS_DATA | BS_ALLOCATED)) {
            pnum = round_up(off + pnum, cs) - off;
            *required += off % cs + pnum;
        }
    }
    return 0;
}

/* qemu's qcow2_measure (option parsing order and messages included). */
static int qcow2_measure(struct copts *o, image_t *in, struct measure_info *info)
{
    bool extended_l2 = copts_bool(o, "extended_l2", false);
    uint64_t cs = copts_num(o, "cluster_size", 65536);
    if (cs < 512 || cs > 2 * 1024 * 1024 || (cs & (cs - 1))) {
        err_report("Cluster size must be a power of two between 512 and 2048k");
        return -1;
    }
    if (extended_l2 && cs < 16384) {
        err_report("Extended L2 entries are only supported with cluster sizes of at least "
                   "16384 bytes");
        return -1;
    }
    int version = qcow2_version(o);
    if (version < 0)
        return -1;
    uint64_t refbits = copts_num(o, "refcount_bits", 16);
    if (refbits > 64 || refbits == 0 || (refbits & (refbits - 1))) {
        err_report("Refcount width must be a power of two and may not exceed 64 bits");
        return -1;
    }
    if (version < 3 && refbits != 16) {
        err_report("Different refcount widths than 16 bits require compatibility level 1.1 "
                   "or above (use compat=1.1 or greater)");
        return -1;
    }
    const char *pa = copts_isset(o, "preallocation") ? copts_str(o, "preallocation") : "off";
    bool full = !strcmp(pa, "full") || !strcmp(pa, "falloc");
    if (!full && strcmp(pa, "off") && strcmp(pa, "metadata")) {
        err_report("invalid parameter value: %s", pa);
        return -1;
    }
    bool has_backing = copts_isset(o, "backing_file");
    const char *ef = copts_isset(o, "encrypt.format") ? copts_str(o, "encrypt.format") : NULL;
    uint64_t luks_payload = 0;
    if (ef && !strcmp(ef, "luks")) {
        /* the LUKS header's clusters come first (qcow2_measure's luks_payload_size) */
        char *msg = NULL;
        if (luks_measure_payload(o, "encrypt.", &luks_payload, &msg) < 0) {
            err_report("%s", msg);
            free(msg);
            return -1;
        }
        luks_payload = round_up(luks_payload, cs);
    }

    /* the size check looks at the size option (0 with a source), as qemu's does */
    uint64_t virtual_size = round_up(copts_num(o, "size", 0), cs);
    if (!qcow2_measure_l1_ok(virtual_size, cs, extended_l2)) {
        err_report("The image size is too large (try using a larger cluster size)");
        return -1;
    }
    uint64_t required = 0;
    if (in) {
        virtual_size = round_up(in->size, cs);
        if (has_backing)
            required = virtual_size; /* the new backing file may share nothing */
        else if (count_data(in, cs, &required) < 0)
            return -1;
    }
    if (full)
        required = virtual_size;
    unsigned order = 0;
    while ((1u << order) < refbits)
        order++;
    info->fully_allocated = luks_payload +
                            qcow2_calc_prealloc_size(virtual_size, cs, order, extended_l2);
    info->required = info->fully_allocated - virtual_size + required;
    info->has_bitmaps = version >= 3 && in && image_supports_persistent_bitmaps(in);
    if (info->has_bitmaps) {
        struct qcow2_measure_bitmap *bm;
        size_t n;
        image_measure_bitmaps(in, &bm, &n);
        info->bitmaps = qcow2_measure_bitmaps(bm, n, in->size, cs);
        free(bm);
    }
    return 0;
}

/* Offset of the first "help" or "?" element of a -o string (",," is an escaped comma), or
 * -1. qemu's measure parses -o without help support, so such an element is an unknown
 * parameter once the elements before it passed; the shared parser skips it (for create). */
static long help_element(const char *s)
{
    const char *e = s;
    while (*e) {
        const char *p = e;
        while (*p && !(*p == ',' && p[1] != ','))
            p += (*p == ',') ? 2 : 1;
        size_t len = (size_t)(p - e);
        if ((len == 4 && !strncmp(e, "help", 4)) || (len == 1 && *e == '?'))
            return e - s;
        e = *p ? p + 1 : p;
    }
    return -1;
}

/* copts_parse, then the help element refused as qemu_opts_do_parse refuses it. */
static int parse_measure_opts(struct copts *o, const char *options, char *err, size_t errlen)
{
    long h = help_element(options);
    char *head = xstrdup(options);
    if (h >= 0)
        head[h > 0 ? h - 1 : 0] = '\0';
    int r = copts_parse(o, head, err, errlen);
    free(head);
    if (r < 0)
        return r;
    if (h >= 0) {
        snprintf(err, errlen, "Invalid parameter '%s'", options[h] == '?' ? "?" : "help");
        return -1;
    }
    return 0;
}

/* Target formats qemu-img 7.2 can create but not measure (bdrv_measure is NULL). */
static const char *const no_measure[] = {
    "qed", "vdi", "vmdk", "vhdx", "vpc", "qcow", "parallels", "file", "host_device",
    "host_cdrom", "nbd", "nvme", NULL,
};

/* Formats qemu-img 7.2 knows but cannot create (no create_opts). */
static bool in_list(const char *const *list, const char *s)
{
    for (size_t i = 0; list[i]; i++)
        if (!strcmp(list[i], s))
            return true;
    return false;
}

static void help(void)
{
    printf("usage: %s measure [--output=human|json] [-O OUTPUT_FMT] [-o OPTIONS]"
           " [--size N | [--object OBJ] [--image-opts] [-f FMT] [-l SNAPSHOT_PARAM] FILENAME]\n",
           qimg_progname);
}

/* -l snapshot.id=ID,snapshot.name=NAME (qemu's internal_snapshot_opts). */
static int parse_snapshot_param(const char *arg, char **id, char **name)
{
    char *s = xstrdup(arg), *p = s;
    int ret = 0;
    while (*p) {
        char *end = p, *w = p;
        /* one element; ",," is a literal comma */
        while (*end && !(*end == ',' && end[1] != ',')) {
            if (*end == ',')
                end++;
            *w++ = *end++;
        }
        bool more = *end == ',';
        *w = '\0';
        char *eq = strchr(p, '=');
        const char *value = "on"; /* qemu's short form "key" means key=on */
        if (!eq) {
            err_report("warning: short-form boolean option '%s' deprecated", p);
            fprintf(stderr, "Please use %s=on instead\n", p);
        } else {
            *eq = '\0';
            value = eq + 1;
        }
        char **dst = !strcmp(p, "snapshot.id") ? id : !strcmp(p, "snapshot.name") ? name : NULL;
        if (!dst) {
            err_report("Invalid parameter '%s'", p);
            ret = -1;
            break;
        }
        free(*dst);
        *dst = xstrdup(value);
        p = more ? end + 1 : end;
    }
    free(s);
    if (ret < 0)
        err_report("Failed in parsing snapshot param '%s'", arg);
    return ret;
}

int cmd_measure(int argc, char **argv)
{
    static const struct option longopts[] = {
        OPTS_LONG_COMMON,
        { "output", required_argument, 0, OPT_OUTPUT },
        { "size", required_argument, 0, OPT_SIZE },
        { 0, 0, 0, 0 },
    };
    const char *fmt = NULL, *out_fmt = "raw", *snapshot_name = NULL;
    char *options = NULL, *sn_id = NULL, *sn_name = NULL;
    bool share = false, json = false, sn_opts = false, image_opts = false;
    uint64_t img_size = UINT64_MAX;
    image_t *in = NULL;
    struct copts o = { 0 };
    bool have_opts = false;
    int ret = 1, c;

    opts_start();
    while ((c = opts_next(argc, argv, ":hf:O:o:l:U", longopts, help)) != -1) {
        switch (c) {
        case 'f': fmt = optarg; break;
        case 'O': out_fmt = optarg; break;
        case 'o':
            if (opts_accumulate(&options, optarg) < 0)
                goto out;
            break;
        case 'l':
            if (!strncmp(optarg, "snapshot.", 9)) {
                free(sn_id);
                free(sn_name);
                sn_id = sn_name = NULL;
                if (parse_snapshot_param(optarg, &sn_id, &sn_name) < 0)
                    goto out;
                sn_opts = true;
            } else {
                snapshot_name = optarg;
            }
            break;
        case 'U': share = true; break;
        case OPT_IMAGE_OPTS: image_opts = true; break;
        case OPT_OBJECT:
            if (secrets_add_object(optarg) < 0)
                goto out;
            break;
        case OPT_OUTPUT:
            if (opts_output_json(optarg, &json) < 0)
                goto out;
            break;
        case OPT_SIZE: {
            int64_t v;
            if (cvtnum("image size", optarg, &v) < 0)
                goto out;
            img_size = (uint64_t)v;
            break;
        }
        }
    }

    const char *filename = NULL;
    if (argc - optind > 1) {
        err_report("At most one filename argument is allowed.");
        goto out;
    } else if (argc - optind == 1) {
        filename = argv[optind];
    }
    if (!filename && (image_opts || fmt || snapshot_name || sn_opts)) {
        err_report("--image-opts, -f, and -l require a filename argument.");
        goto out;
    }
    if (filename && img_size != UINT64_MAX) {
        err_report("--size N cannot be used together with a filename.");
        goto out;
    }
    if (!filename && img_size == UINT64_MAX) {
        err_report("Either --size N or one filename must be specified.");
        goto out;
    }

    if (filename) {
        if (blockspec_check_image_opts_fmt(image_opts, fmt) < 0)
            goto out;
        in = image_open_or_report(filename, fmt, (share ? IMG_OPEN_SHARE : 0) |
                                  (image_opts ? IMG_OPEN_IMAGE_OPTS : 0));
        if (!in)
            goto out;
        char *msg = NULL;
        int r = 0;
        if (sn_opts) {
            r = image_snapshot_load_tmp(in, sn_id, sn_name, &msg);
        } else if (snapshot_name) {
            /* qemu's bdrv_snapshot_load_tmp_by_id_or_name: as an id, then as a name */
            r = image_snapshot_load_tmp(in, snapshot_name, NULL, &msg);
            if (r == -ENOENT || r == -EINVAL) {
                free(msg);
                msg = NULL;
                r = image_snapshot_load_tmp(in, NULL, snapshot_name, &msg);
            }
        }
        if (r < 0) {
            err_report("Failed to load snapshot: %s", msg);
            free(msg);
            goto out;
        }
    }

    bool creatable = copts_format_known(out_fmt);
    if (copts_format_no_create(out_fmt)) {
        err_report("Format driver '%s' does not support image creation", out_fmt);
        goto out;
    }
    if (!creatable && !in_list(no_measure, out_fmt) && strcmp(out_fmt, "luks")) {
        err_report("Unknown file format '%s'", out_fmt);
        goto out;
    }
    if (creatable) {
        /* the target's create options plus the file protocol's, as qemu's measure */
        copts_init(&o, out_fmt, true);
        have_opts = true;
        if (options) {
            char err[1024];
            if (parse_measure_opts(&o, options, err, sizeof(err)) < 0) {
                err_report("%s", err);
                err_report("Invalid options for file format '%s'", out_fmt);
                goto out;
            }
        }
        if (img_size != UINT64_MAX)
            copts_set_number(&o, "size", img_size);
    }

    struct measure_info info = { 0 };
    int r;
    if (!strcmp(out_fmt, "raw"))
        r = raw_measure(&o, in, &info);
    else if (!strcmp(out_fmt, "qcow2"))
        r = qcow2_measure(&o, in, &info);
    else if (!strcmp(out_fmt, "luks")) {
        /* block_crypto_measure: the header, then the guest bytes as they are */
        char *msg = NULL;
        uint64_t payload = 0;
        r = luks_measure_payload(&o, "", &payload, &msg);
        if (r < 0) {
            err_report("%s", msg);
            free(msg);
        } else {
            info.required = payload + (in ? in->size : copts_num(&o, "size", 0));
            info.fully_allocated = info.required;
        }
    } else {
        /* qimg knows no option list for the formats it cannot create, so -o is not checked
         * for them before this message (qemu checks it first) */
        err_report("Block driver '%s' does not support size measurement", out_fmt);
        r = -1;
    }
    if (r < 0)
        goto out;

    if (!json) {
        printf("required size: %llu\n", (unsigned long long)info.required);
        printf("fully allocated size: %llu\n", (unsigned long long)info.fully_allocated);
        if (info.has_bitmaps)
            printf("bitmaps size: %llu\n", (unsigned long long)info.bitmaps);
    } else {
        json_t *j = json_object();
        /* BlockMeasureInfo's members are QAPI ints: qemu prints them as int64_t (a raw
         * image of INT64_MAX bytes rounds up to -9223372036854775808 in JSON) */
        if (info.has_bitmaps)
            json_set(j, "bitmaps", json_int((int64_t)info.bitmaps));
        json_set(j, "required", json_int((int64_t)info.required));
        json_set(j, "fully-allocated", json_int((int64_t)info.fully_allocated));
        json_print(stdout, j);
        putchar('\n');
        json_free(j);
    }
    ret = 0;
out:
    fflush(stdout);
    if (have_opts)
        copts_free(&o);
    image_close(in);
    free(options);
    free(sn_id);
    free(sn_name);
    return ret;
}
