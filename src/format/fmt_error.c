/* Decoder error records: see fmt_error.h. */
#include "format/fmt_error.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int fmt_error_set(struct fmt_error *e, int code, const char *structure, const char *field,
                  uint64_t value, bool has_offset, uint64_t offset, const char *rule, ...)
{
    if (!e)
        return code;
    e->code = code;
    e->structure = structure;
    e->field = field;
    e->value = value;
    e->has_offset = has_offset;
    e->offset = offset;
    e->qemu_msg[0] = '\0';
    e->rule[0] = '\0';
    if (rule) {
        va_list ap;
        va_start(ap, rule);
        vsnprintf(e->rule, sizeof(e->rule), rule, ap);
        va_end(ap);
    }
    return code;
}

void fmt_error_qemu(struct fmt_error *e, const char *fmt, ...)
{
    if (!e)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->qemu_msg, sizeof(e->qemu_msg), fmt, ap);
    va_end(ap);
}

void fmt_error_clear(struct fmt_error *e)
{
    if (e)
        memset(e, 0, sizeof(*e));
}

int fmt_error_format(const struct fmt_error *e, char *buf, size_t len)
{
    char field[96] = "", at[40] = "";

    if (e->field)
        snprintf(field, sizeof(field), "field %s=%" PRIu64, e->field, e->value);
    if (e->has_offset)
        snprintf(at, sizeof(at), "%sat offset 0x%" PRIx64, e->field ? " " : "", e->offset);
    return snprintf(buf, len, "%s: %s%s%s%s", e->structure ? e->structure : "image",
                    field, at, (e->field || e->has_offset) ? ": " : "",
                    e->rule[0] ? e->rule : "invalid");
}

const char *fmt_error_user_msg(const struct fmt_error *e, char *buf, size_t len)
{
    if (e->qemu_msg[0])
        return e->qemu_msg;
    fmt_error_format(e, buf, len);
    return buf;
}
