/* Command-line conventions every qimg command shares with qemu-img: getopt errors, the
 * single FILENAME operand and --output=human|json. One copy, so messages cannot drift. */
#ifndef QIMG_UTIL_OPTS_H
#define QIMG_UTIL_OPTS_H

#include <getopt.h>
#include <stdbool.h>

/* Long-option values the commands share; a command's own values start at OPT_CMD. */
enum { OPT_OUTPUT = 256, OPT_OBJECT, OPT_IMAGE_OPTS, OPT_CMD };

/* The long options every image command takes (qemu-img repeats them in each table). */
#define OPTS_LONG_COMMON                                \
    { "help", no_argument, 0, 'h' },                    \
    { "object", required_argument, 0, OPT_OBJECT },     \
    { "image-opts", no_argument, 0, OPT_IMAGE_OPTS },   \
    { "force-share", no_argument, 0, 'U' }

/* --format and --output, for the commands that take one image. */
#define OPTS_LONG_FORMAT_OUTPUT                         \
    { "format", required_argument, 0, 'f' },            \
    { "output", required_argument, 0, OPT_OUTPUT }

/* Resets getopt for a command's argv (argv[0] is the command name). */
void opts_start(void);

/* getopt_long() for a shortopts beginning with ':'. -h/--help (option value 'h') prints
 * help() and exits 0; a missing argument or an unknown option exits with qemu-img's usage
 * error. Callers so only see their own options. */
int opts_next(int argc, char **argv, const char *shortopts, const struct option *longopts,
              void (*help)(void));

/* The one operand left after the options; otherwise qemu-img's usage error. */
const char *opts_one_file(int argc, char **argv);

/* qemu-img's accumulate_options for -o: list must be a valid option list
 * (is_valid_option_list: not empty, no leading comma, no unescaped trailing one), else
 * "Invalid option list: LIST" is reported and -1 returned; repeated lists join with ','
 * into *options (malloc'd). */
int opts_accumulate(char **options, const char *list);

/* --output: NULL or "human" -> *json false, "json" -> true; anything else is reported
 * as qemu-img does and -1 returned (the command exits 1). */
int opts_output_json(const char *output, bool *json);

#endif
