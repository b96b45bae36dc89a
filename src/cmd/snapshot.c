/* `qimg snapshot`: qemu-img 7.2's img_snapshot. -l lists the internal snapshots (the table
 * info shows), -c creates one (disk only, dated now), -a applies one, -d deletes one; the
 * work is the block layer's (block/snapshot.h) over the qcow2 engine
 * (qcow2/snapshot_write.h). qemu-img 7.2's snapshot takes no -f: the format is always
 * probed. Without an action the image is opened read-write and closed, as
 * qemu-img does. Beyond qemu-img: --dry-run and --journal FILE for -c/-a/-d
 * (cmd/ported.h; the discards of freed clusters recorded as zeros). */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "block/blockspec.h"
#include "block/driver.h"
#include "block/snapshot.h"
#include "cmd/commands.h"
#include "cmd/ported.h"
#include "util/err.h"
#include "util/opts.h"
#include "util/secrets.h"
#include "util/xalloc.h"

enum { OPT_DRY_RUN = OPT_CMD, OPT_JOURNAL };
enum action { NONE, LIST, CREATE, APPLY, DELETE };

static void help(void)
{
    printf("usage: %s snapshot [--object objectdef] [--image-opts] [-U] [-q] [-l | -a snapshot"
           " | -c snapshot | -d snapshot] [--dry-run | --journal FILE] filename\n",
           qimg_progname);
}

struct job {
    enum action action;
    const char *name;
};

/* qemu-img's dump_snapshots */
static void list(image_t *img)
{
    snapshot_info_t *l = NULL;
    size_t n = 0;
    if (!img->drv->snapshots || img->drv->snapshots(img, &l, &n) < 0 || n == 0)
        return;
    printf("Snapshot list:\n");
    snapshot_dump_header();
    for (size_t i = 0; i < n; i++)
        snapshot_dump_row(&l[i]);
    snapshot_list_free(l, n);
}

/* The action on an image open read-write: 0, or 1 after qemu-img's message. */
static int act(image_t *img, void *ctx)
{
    const struct job *j = ctx;
    char *msg = NULL;
    int r = 0;
    switch (j->action) {
    case NONE:
    case LIST:
        break;
    case CREATE: {
        /* qemu's g_get_real_time(): microseconds */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        r = image_snapshot_create(img, j->name, (uint32_t)ts.tv_sec,
                                  (uint32_t)(ts.tv_nsec / 1000 * 1000));
        if (r < 0)
            err_report("Could not create snapshot '%s': %d (%s)", j->name, r, strerror(-r));
        break;
    }
    case APPLY:
        r = image_snapshot_goto(img, j->name, &msg);
        if (r < 0)
            err_report("Could not apply snapshot '%s': %s", j->name, msg ? msg : strerror(-r));
        break;
    case DELETE: {
        char *id, *name;
        if (image_snapshot_find(img, j->name, &id, &name) < 0) {
            err_report("Could not delete snapshot '%s': snapshot not found", j->name);
            return 1;
        }
        r = image_snapshot_delete(img, id, name, &msg);
        /* qemu-img judges by the message: an error without one passes */
        if (r < 0 && msg)
            err_report("Could not delete snapshot '%s': %s", j->name, msg);
        else
            r = 0;
        free(id);
        free(name);
        break;
    }
    }
    free(msg);
    return r < 0 ? 1 : 0;
}

/* -c/-a/-d on a plan overlay (cmd/ported.h): printed or journaled; a failing action
 * writes nothing (qemu's may leave partial writes). 0 or 1 after reporting. */
static int ported_act(image_t *img, const char *filename, const struct job *j, bool dry_run,
                      const char *journal)
{
    struct ported pt;
    image_t *w;
    char *msg = NULL;
    if (ported_open(&pt, img, filename, &w, &msg) < 0) {
        err_report("%s", msg);
        free(msg);
        return 1;
    }
    ported_record_discards(&pt);
    int ret = act(w, (void *)j);
    int r = ported_finish(&pt, filename, ret == 0, dry_run, journal, "Snapshot", &msg);
    if (r < 0 && ret == 0) {
        if (msg)
            err_report("%s", msg);
        ret = 1;
    }
    free(msg);
    return ret;
}

int cmd_snapshot(int argc, char **argv)
{
    static const struct option longopts[] = {
        OPTS_LONG_COMMON,
        { "dry-run", no_argument, 0, OPT_DRY_RUN },
        { "journal", required_argument, 0, OPT_JOURNAL },
        { 0, 0, 0, 0 },
    };
    struct job j = { NONE, NULL };
    const char *journal = NULL;
    bool force_share = false, dry_run = false, image_opts = false;
    int c;
    opts_start();
    while ((c = opts_next(argc, argv, ":la:c:d:hqU", longopts, help)) != -1) {
        switch (c) {
        case 'q': break;   /* nothing to silence: qemu-img prints no progress here */
        case 'U': force_share = true; break;
        case 'l': case 'a': case 'c': case 'd':
            if (j.action != NONE)
                err_usage("Cannot mix '-l', '-a', '-c', '-d'");
            j.action = c == 'l' ? LIST : c == 'a' ? APPLY : c == 'c' ? CREATE : DELETE;
            j.name = c == 'l' ? NULL : optarg;
            break;
        case OPT_DRY_RUN: dry_run = true; break;
        case OPT_JOURNAL: journal = optarg; break;
        case OPT_OBJECT:
            if (secrets_add_object(optarg) < 0)
                return 1;
            break;
        case OPT_IMAGE_OPTS: image_opts = true; break;
        }
    }
    if (optind != argc - 1)
        err_usage("Expecting one image file name");
    const char *filename = argv[optind];
    bool ported = dry_run || journal;
    if (!ported_modes_ok(dry_run, journal))
        return 1;
    if (ported && (j.action == NONE || j.action == LIST)) {
        err_report("--%s needs -c, -a or -d", dry_run ? "dry-run" : "journal");
        return 1;
    }
    if (force_share && j.action != LIST) {
        err_report("Could not open '%s': force-share=on can only be used with read-only images",
                   filename);
        return 1;
    }
    int flags = j.action == LIST ? (force_share ? IMG_OPEN_SHARE : 0)
                : dry_run ? 0 : journal ? IMG_OPEN_SHARE : IMG_OPEN_RDWR;
    image_t *img = image_open_or_report(filename, NULL,
                                        flags | (image_opts ? IMG_OPEN_IMAGE_OPTS : 0));
    if (!img)
        return 1;
    int ret;
    if (j.action == LIST) {
        list(img);
        ret = 0;
    } else if (ported) {
        /* the plan and the journal name the image's file, not an option list */
        ret = ported_act(img, image_opts || blockspec_has_protocol(filename) ? img->filename
                                                                        : filename,
                         &j, dry_run, journal);
    } else {
        ret = act(img, &j);
    }
    image_close(img);
    return ret;
}
