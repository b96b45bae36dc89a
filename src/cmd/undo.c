/* qimg undo JOURNAL IMAGE: put an image back as it was before `check -r --journal`. The
 * journal is validated first (journal/undo.h), then the image opened read-write and locked
 * as for a repair, then restored. */
#include <stdio.h>
#include <string.h>

#include "cmd/commands.h"
#include "io/lock.h"
#include "io/qio.h"
#include "journal/undo.h"
#include "util/err.h"
#include "util/opts.h"

static void help(void)
{
    printf("usage: %s undo JOURNAL IMAGE\n", qimg_progname);
}

/* The image opened read-write and locked as a repair locks it; NULL after the message. */
static qio_t *open_image(const char *image)
{
    qio_t *q;
    int rc = qio_open_file(image, QIO_RDWR, &q);
    if (rc < 0) {
        err_report("Could not open '%s': %s", image, strerror(-rc));
        return NULL;
    }
    const char *perm;
    if (qio_lock_for_repair(q, &perm) < 0) {
        err_report("Could not open '%s': Failed to get \"%s\" lock\nIs another process using "
                   "the image [%s]?", image, perm, image);
        qio_close(q);
        return NULL;
    }
    return q;
}

int cmd_undo(int argc, char **argv)
{
    static const struct option longopts[] = { { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 } };
    opts_start();
    opts_next(argc, argv, ":h", longopts, help); /* -h is the only option: returns -1 */
    if (argc - optind != 2)
        err_usage("Expecting a journal file and an image file name");
    const char *journal = argv[optind], *image = argv[optind + 1];
    struct undo *u;
    int ret = undo_open(journal, image, &u);
    if (ret)
        return ret;
    qio_t *q = open_image(image);
    ret = q ? undo_restore(u, q) : 1;
    if (ret == 0) {
        size_t n = undo_writes(u);
        printf("Restored '%s' to its state before the repair (%zu write%s undone).\n", image, n,
               n == 1 ? "" : "s");
    }
    if (q)
        qio_close(q);
    undo_close(u);
    return ret;
}
