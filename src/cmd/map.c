/* qimg map: qemu-img's img_map (digest §8). One block-status query per step, descending the
 * backing chain one layer at a time; adjacent equal entries merge; human output prints only
 * data ranges. Output is streamed, so an error leaves what was already printed, as qemu's. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "block/blockspec.h"
#include "block/image.h"
#include "cmd/commands.h"
#include "util/err.h"
#include "util/secrets.h"
#include "util/opts.h"
#include "util/size.h"

struct map_entry {
    int64_t start, length, offset;
    int depth;
    bool data, zero, present, has_offset;
    const char *filename; /* NULL: none */
};

/* qemu's get_block_status(): the first layer that says DATA or ZERO decides. */
static int entry_at(image_t *img, int64_t off, int64_t bytes, struct map_entry *e)
{
    block_status_t st;
    unsigned flags;
    int depth = 0;
    for (;;) {
        int r = image_block_status(img, (uint64_t)off, (uint64_t)bytes, &st);
        if (r < 0)
            return r;
        if (st.pnum == 0)
            return -EIO; /* cannot happen below the virtual size; never loop */
        bytes = (int64_t)st.pnum;
        flags = st.flags;
        if (flags & (BS_ZERO | BS_DATA))
            break;
        img = img->backing;
        if (!img) {
            flags = 0;
            break;
        }
        depth++;
    }
    memset(e, 0, sizeof(*e));
    e->start = off;
    e->length = bytes;
    e->data = flags & BS_DATA;
    e->zero = flags & BS_ZERO;
    e->present = flags & BS_ALLOCATED;
    e->has_offset = flags & BS_OFFSET_VALID;
    e->offset = e->has_offset ? (int64_t)st.map : 0;
    e->depth = depth;
    e->filename = e->has_offset ? st.filename : NULL;
    return 0;
}

static bool mergeable(const struct map_entry *a, const struct map_entry *b)
{
    if (a->length == 0)
        return false;
    if (a->zero != b->zero || a->data != b->data || a->depth != b->depth ||
        a->present != b->present || !a->filename != !b->filename ||
        a->has_offset != b->has_offset)
        return false;
    if (a->filename && strcmp(a->filename, b->filename))
        return false;
    if (a->has_offset && a->offset + a->length != b->offset)
        return false;
    return true;
}

/* qemu's dump_map_entry(); next (may be NULL) is normalised for human coalescing. */
static int dump_entry(bool json, const struct map_entry *e, struct map_entry *next)
{
    if (!json) {
        if (e->data && !e->has_offset) {
            err_report("File contains external, encrypted or compressed clusters.");
            return -1;
        }
        if (e->data && !e->zero) {
            char a[24], b[24], c[24];
            /* %#llx prints 0 as "0", as qemu's %#-16 PRIx64 does */
            snprintf(a, sizeof(a), "%#llx", (unsigned long long)e->start);
            snprintf(b, sizeof(b), "%#llx", (unsigned long long)e->length);
            snprintf(c, sizeof(c), "%#llx", (unsigned long long)(e->has_offset ? e->offset : 0));
            printf("%-16s%-16s%-16s%s\n", a, b, c, e->filename ? e->filename : "");
        }
        if (next && (!next->data || next->zero)) {
            next->data = false;
            next->zero = true;
        }
        return 0;
    }
    printf("{ \"start\": %lld, \"length\": %lld, \"depth\": %d, \"present\": %s, "
           "\"zero\": %s, \"data\": %s", (long long)e->start, (long long)e->length, e->depth,
           e->present ? "true" : "false", e->zero ? "true" : "false",
           e->data ? "true" : "false");
    if (e->has_offset)
        printf(", \"offset\": %lld", (long long)e->offset);
    putchar('}');
    if (next)
        puts(",");
    return 0;
}

static void help(void)
{
    printf("usage: %s map [--object OBJ] [--image-opts] [-f FMT] [--start-offset=OFFSET]"
           " [--max-length=LEN] [--output=human|json] [-U] FILENAME\n", qimg_progname);
}

int cmd_map(int argc, char **argv)
{
    static const struct option longopts[] = {
        OPTS_LONG_COMMON,
        OPTS_LONG_FORMAT_OUTPUT,
        { "start-offset", required_argument, 0, 's' },
        { "max-length", required_argument, 0, 'l' },
        { 0, 0, 0, 0 },
    };
    const char *fmt = NULL, *output = NULL;
    bool share = false, image_opts = false;
    int64_t start = 0, max_len = -1;
    int c;
    opts_start();
    while ((c = opts_next(argc, argv, ":f:s:l:hU", longopts, help)) != -1) {
        switch (c) {
        case 'f': fmt = optarg; break;
        case 'U': share = true; break;
        case OPT_OUTPUT: output = optarg; break;
        case 's':
            if (cvtnum("start offset", optarg, &start) < 0)
                return 1;
            break;
        case 'l':
            if (cvtnum("max length", optarg, &max_len) < 0)
                return 1;
            break;
        case OPT_OBJECT:
            if (secrets_add_object(optarg) < 0)
                return 1;
            break;
        case OPT_IMAGE_OPTS: image_opts = true; break;
        }
    }
    const char *filename = opts_one_file(argc, argv);
    bool json;
    if (opts_output_json(output, &json) < 0)
        return 1;
    if (blockspec_check_image_opts_fmt(image_opts, fmt) < 0)
        return 1;

    image_t *img = image_open_or_report(filename, fmt, (share ? IMG_OPEN_SHARE : 0) |
                                        (image_opts ? IMG_OPEN_IMAGE_OPTS : 0));
    if (!img)
        return 1;
    image_skip_filters(img); /* get_block_status: bdrv_skip_filters */
    if (json)
        putchar('[');
    else
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");

    int64_t length = (int64_t)img->size;
    if (max_len != -1) {
        /* qemu adds in int64_t; wrap-around (then nothing is mapped) is kept */
        int64_t end = (int64_t)((uint64_t)start + (uint64_t)max_len);
        if (end < length)
            length = end;
    }

    struct map_entry curr = { .start = start }, next;
    int ret = 0;
    while (curr.start + curr.length < length) {
        int64_t off = curr.start + curr.length;
        ret = entry_at(img, off, length - off, &next);
        if (ret < 0) {
            err_report("Could not read file metadata: %s", strerror(-ret));
            goto out;
        }
        if (mergeable(&curr, &next)) {
            curr.length += next.length;
            continue;
        }
        if (curr.length > 0) {
            ret = dump_entry(json, &curr, &next);
            if (ret < 0)
                goto out;
        }
        curr = next;
    }
    ret = dump_entry(json, &curr, NULL);
    if (json)
        puts("]");
out:
    fflush(stdout);
    image_close(img);
    return ret < 0;
}
