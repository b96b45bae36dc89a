/* Image creation options as qemu-img 7.2 knows them (QemuOptsList create_opts of each format
 * driver, merged with the "file" protocol's): the per-format lists, -o parsing, -o help and the
 * "Formatting ..." line. Shared by create, measure and amend. */
#ifndef QIMG_BLOCK_CREATE_OPTS_H
#define QIMG_BLOCK_CREATE_OPTS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

enum copt_type { COPT_STR, COPT_BOOL, COPT_NUM, COPT_SIZE };

struct copt_desc {
    const char *name;
    enum copt_type type;
    const char *help;
    const char *def; /* qemu's def_value_str, or NULL */
};

#define COPTS_MAX 32

/* One format's merged option list and the values set so far (qemu's QemuOpts). */
struct copts {
    const char *fmt;
    const struct copt_desc *desc[COPTS_MAX];
    size_t n;
    char *str[COPTS_MAX];  /* as given (NULL: not set); for bools the word given */
    uint64_t val[COPTS_MAX]; /* parsed SIZE/NUM value, BOOL 0/1 */
};

/* Is fmt one of the formats qimg can create (qcow2, raw, qed, vdi)? */
bool copts_format_known(const char *fmt);

/* Is fmt a driver qemu-img 7.2 knows that has no creation (no create_opts: bochs, blkdebug,
 * null-co, ...)? qemu-img says "Format driver 'X' does not support image creation". */
bool copts_format_no_create(const char *fmt);

/* The format's list; with_protocol appends the file protocol's options (size, nocow,
 * preallocation, extent_size_hint), as qemu-img does when a file name is given. Returns -1
 * for an unknown format. */
int copts_init(struct copts *o, const char *fmt, bool with_protocol);
void copts_free(struct copts *o);

/* qemu's has_help_option(): is "help" or "?" one of the comma-separated elements? */
bool copts_has_help(const char *optstr);

/* -o help: qemu-img's print_block_option_help() (sorted list; with_filename gives the merged
 * list under "Supported options:", without it the format's own plus the protocol hint). */
void copts_print_help(const char *fmt, bool with_filename);

/* Parses one -o string (qemu_opts_do_parse: ",," escapes a comma, "name" means name=on and
 * "noname" name=off). Later values replace earlier ones. On error returns -1 and writes
 * qemu's message into err (possibly several lines, no program prefix, no final newline). */
int copts_parse(struct copts *o, const char *optstr, char *err, size_t errlen);

/* Sets a value as qemu_opt_set / qemu_opt_set_number do (no validation beyond the type). */
int copts_set(struct copts *o, const char *name, const char *value);
void copts_set_number(struct copts *o, const char *name, uint64_t v);

/* Lookups: is it set (explicitly), its string (set or default, else NULL), its parsed value
 * (set, else default parsed, else def). */
bool copts_isset(const struct copts *o, const char *name);
const char *copts_str(const struct copts *o, const char *name);
uint64_t copts_num(const struct copts *o, const char *name, uint64_t def);
bool copts_bool(const struct copts *o, const char *name, bool def);
/* Forget a value (qemu_opt_unset). */
void copts_unset(struct copts *o, const char *name);

/* qemu_opts_print(opts, " "): every option set or with a default, in list order. */
void copts_print(const struct copts *o, FILE *f);

/* qemu's BlockdevDriver enum: the values backing-fmt accepts in the QAPI creation options
 * (else "Parameter 'backing-fmt' does not accept value 'X'"). */
bool copts_backing_fmt_known(const char *fmt);

#endif
