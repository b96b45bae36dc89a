/* qimg undo JOURNAL IMAGE: put an image back as it was before `check -r --journal`. */
#include <stdio.h>

#include "cmd/commands.h"
#include "repair/undo.h"
#include "util/err.h"
#include "util/opts.h"

static void help(void)
{
    printf("usage: %s undo JOURNAL IMAGE\n", qimg_progname);
}

int cmd_undo(int argc, char **argv)
{
    static const struct option longopts[] = { { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 } };
    opts_start();
    opts_next(argc, argv, ":h", longopts, help); /* -h is the only option: returns -1 */
    if (argc - optind != 2)
        err_usage("Expecting a journal file and an image file name");
    return repair_undo(argv[optind], argv[optind + 1]);
}
