#include "util/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *qimg_progname = "qimg";

void err_set_progname(const char *argv0)
{
    if (!argv0 || !*argv0)
        return;
    const char *slash = strrchr(argv0, '/');
    qimg_progname = slash ? slash + 1 : argv0;
}

void err_vreport(const char *fmt, va_list ap)
{
    fprintf(stderr, "%s: ", qimg_progname);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void err_report(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_vreport(fmt, ap);
    va_end(ap);
}

void err_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_vreport(fmt, ap);
    va_end(ap);
    fprintf(stderr, "Try '%s --help' for more information\n", qimg_progname);
    exit(1);
}

void err_plain(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}
