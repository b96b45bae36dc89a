#include "util/opts.h"

#include <stdlib.h>
#include <string.h>

#include "util/err.h"
#include "util/xalloc.h"

void opts_start(void)
{
    optind = 0; /* 0, not 1: glibc then also forgets state left by an earlier parse */
    opterr = 0;
}

int opts_next(int argc, char **argv, const char *shortopts, const struct option *longopts,
              void (*help)(void))
{
    int c = getopt_long(argc, argv, shortopts, longopts, NULL);
    if (c == 'h') {
        help();
        exit(0);
    }
    if (c == ':')
        err_usage("missing argument for option '%s'", argv[optind - 1]);
    if (c == '?')
        err_usage("unrecognized option '%s'", argv[optind - 1]);
    return c;
}

const char *opts_one_file(int argc, char **argv)
{
    if (optind != argc - 1)
        err_usage("Expecting one image file name");
    return argv[optind];
}

int opts_output_json(const char *output, bool *json)
{
    *json = output && !strcmp(output, "json");
    if (output && !*json && strcmp(output, "human")) {
        err_report("--output must be used with human or json as argument.");
        return -1;
    }
    return 0;
}

int opts_accumulate(char **options, const char *list)
{
    size_t len = strlen(list), i;
    for (i = len; i > 0 && list[i - 1] == ','; i--)
        ;
    if (!list[0] || list[0] == ',' || (len - i) % 2) {
        err_report("Invalid option list: %s", list);
        return -1;
    }
    char *n = *options ? xasprintf("%s,%s", *options, list) : xstrdup(list);
    free(*options);
    *options = n;
    return 0;
}
