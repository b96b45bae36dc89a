/* Error reporting in qemu-img's style: every message is prefixed with the basename of argv[0]. */
#ifndef QIMG_UTIL_ERR_H
#define QIMG_UTIL_ERR_H

#include <stdarg.h>

/* Basename of argv[0]; "qimg" until err_set_progname() is called. */
extern const char *qimg_progname;

void err_set_progname(const char *argv0);

/* "<prog>: <msg>\n" on stderr. */
void err_report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void err_vreport(const char *fmt, va_list ap);

/* qemu-img's error_exit(): message, then "Try '<prog> --help' for more information", exit 1. */
_Noreturn void err_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Diagnostic lines that qemu prints without a program prefix (check's ERROR/Leaked lines). */
void err_plain(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
