/* The one error type of every decoder in src/format/.
 *
 * Convention: decoders return 0 on success or a negative errno (the value qemu would
 * return, e.g. -EINVAL, -ENOTSUP, -EFBIG, -EACCES) and fill a struct fmt_error when one
 * is passed (it may be NULL). Two texts are kept apart:
 *   qemu_msg  the exact qemu 7.2 message, used verbatim in "Could not open 'F': <msg>";
 *             empty when qemu has no such check (our own, stricter rules).
 *   the rich description built by fmt_error_format():
 *             "qcow2 header: field cluster_bits=22 at offset 0x14: must be 9..21"
 */
#ifndef QIMG_FORMAT_FMT_ERROR_H
#define QIMG_FORMAT_FMT_ERROR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FMT_ERROR_MSG_MAX 4096   /* qemu's feature list can name many features */

struct fmt_error {
    int code;                /* negative errno, same as the decoder's return value */
    const char *structure;   /* static string: "qcow2 header", "L2 entry", ... */
    const char *field;       /* static string: "cluster_bits"; NULL if not one field */
    uint64_t value;          /* the offending value (or a length, for strings/ranges) */
    uint64_t offset;         /* file offset of the field, if has_offset */
    bool has_offset;
    char rule[192];          /* what the value must satisfy: "must be 9..21" */
    char qemu_msg[FMT_ERROR_MSG_MAX];
};

/* Fill *e (if e != NULL) and return code. rule is a printf format. */
int fmt_error_set(struct fmt_error *e, int code, const char *structure, const char *field,
                  uint64_t value, bool has_offset, uint64_t offset, const char *rule, ...)
    __attribute__((format(printf, 8, 9)));

/* Set e->qemu_msg (printf format); no-op when e is NULL. */
void fmt_error_qemu(struct fmt_error *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Reset to "no error". */
void fmt_error_clear(struct fmt_error *e);

/* One line, no newline: "<structure>: field <field>=<value> at offset 0x<off>: <rule>".
 * Parts that are absent are left out. Returns snprintf's result. */
int fmt_error_format(const struct fmt_error *e, char *buf, size_t len);

/* The text to show a user in qemu's place: qemu_msg if set, else the rich line. */
const char *fmt_error_user_msg(const struct fmt_error *e, char *buf, size_t len);

#endif
