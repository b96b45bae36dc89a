/* qimg undo JOURNAL IMAGE: put an image back as it was before `check -r --journal`. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cmd/commands.h"
#include "repair/undo.h"
#include "util/err.h"

int cmd_undo(int argc, char **argv)
{
    static const struct option longopts[] = { { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 } };
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        if (c == 'h') {
            printf("usage: %s undo JOURNAL IMAGE\n", qimg_progname);
            return 0;
        }
        err_usage("unrecognized option '%s'", argv[optind - 1]);
    }
    if (argc - optind != 2)
        err_usage("Expecting a journal file and an image file name");
    return repair_undo(argv[optind], argv[optind + 1]);
}
