/* qimg convert -l and --bitmaps (see convert_extra.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/bitmap_copy.h"
#include "block/measure.h"
#include "cmd/convert_extra.h"
#include "util/err.h"
#include "util/xalloc.h"

/* qemu_opts_parse_noisily on internal_snapshot_opts (keys snapshot.id, snapshot.name):
 * ",," escapes a comma, a key without '=' is a deprecated short-form boolean ("noX" = off).
 * Fills id/name (malloc'd, last one wins) unless NULL; -1 with *why on an unknown key. */
static int parse_sn_opts(const char *optstr, char **id, char **name, bool warn, char **why)
{
    const char *p = optstr;
    while (*p) {
        /* one element, with ",," unescaped */
        size_t cap = strlen(p) + 1, n = 0;
        char *el = xmalloc(cap);
        while (*p) {
            if (*p == ',') {
                if (p[1] == ',') {
                    el[n++] = ',';
                    p += 2;
                    continue;
                }
                p++;
                break;
            }
            el[n++] = *p++;
        }
        el[n] = 0;
        char *eq = strchr(el, '=');
        const char *key = el, *val;
        if (eq) {
            *eq = 0;
            val = eq + 1;
        } else {
            bool off = !strncmp(el, "no", 2);
            key = off ? el + 2 : el;
            val = off ? "off" : "on";
            if (warn)
                fprintf(stderr, "%s: warning: short-form boolean option '%s' deprecated\n"
                        "Please use %s=%s instead\n", qimg_progname, key, key, val);
        }
        char **dst = !strcmp(key, "snapshot.id") ? id : !strcmp(key, "snapshot.name") ? name
                                                                                     : NULL;
        if (!dst && strcmp(key, "snapshot.id") && strcmp(key, "snapshot.name")) {
            *why = xasprintf("Invalid parameter '%s'", key);
            free(el);
            return -1;
        }
        if (dst) {
            free(*dst);
            *dst = xstrdup(val);
        }
        free(el);
    }
    return 0;
}

int convert_snapshot_opts_check(const char *optstr, char **why)
{
    return parse_sn_opts(optstr, NULL, NULL, true, why);
}

int convert_snapshot_load(image_t *img, const char *sn_opts, const char *id_or_name,
                          char **why)
{
    int r;
    if (sn_opts) {
        char *id = NULL, *name = NULL;
        r = parse_sn_opts(sn_opts, &id, &name, false, why);
        if (r == 0)
            r = image_snapshot_load_tmp(img, id, name, why);
        free(id);
        free(name);
    } else {
        /* qemu's bdrv_snapshot_load_tmp_by_id_or_name: as an ID, then as a name */
        r = image_snapshot_load_tmp(img, id_or_name, NULL, why);
        if (r == -ENOENT || r == -EINVAL) {
            free(*why);
            *why = NULL;
            r = image_snapshot_load_tmp(img, NULL, id_or_name, why);
        }
    }
    return r < 0 ? -1 : 0;
}

int convert_check_bitmaps(image_t *src, bool skip_broken)
{
    if (!image_supports_persistent_bitmaps(src)) {
        err_report("Source lacks bitmap support");
        return -1;
    }
    struct image_bitmap *l;
    size_t n;
    image_bitmaps_list(src, &l, &n);
    for (size_t i = 0; i < n; i++) {
        if (!skip_broken && l[i].inconsistent) {
            err_report("Cannot copy inconsistent bitmap '%s'", l[i].name);
            fprintf(stderr, "Try --skip-broken-bitmaps, or use 'qemu-img bitmap --remove' to "
                    "delete it\n");
            free(l);
            return -1;
        }
    }
    free(l);
    return 0;
}

int convert_copy_bitmaps(image_t *src, image_t *dst, bool skip_broken)
{
    struct image_bitmap *l;
    size_t n;
    image_bitmaps_list(src, &l, &n);
    bool *want = xcalloc(n ? n : 1, sizeof(*want));
    for (size_t i = 0; i < n; i++) {
        if (skip_broken && l[i].inconsistent) {
            fprintf(stderr, "%s: warning: Skipping inconsistent bitmap '%s'\n", qimg_progname,
                    l[i].name);
            continue;
        }
        want[l[i].index] = true;
    }
    char *why = NULL;
    int r = image_bitmaps_copy(src, dst, want, n, &why);
    if (r < 0) {
        err_report("%s", why);
        free(why);
    }
    free(want);
    free(l);
    return r < 0 ? -1 : 0;
}
