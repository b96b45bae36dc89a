#include "util/size.h"

#include "util/err.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

const char *size_to_str(uint64_t val, char buf[32])
{
    static const char *const suffixes[] = { "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei" };
    int exp;
    /* floor(log2(val * 1024 / 1000)) picks the unit that keeps the value under 1000. */
    frexp((double)val / (1000.0 / 1024.0), &exp);
    int i = (exp - 1) / 10;
    if (i < 0)
        i = 0;
    if (i > 6)
        i = 6;
    uint64_t div = 1ULL << (i * 10);
    snprintf(buf, 32, "%0.3g %sB", (double)val / (double)div, suffixes[i]);
    return buf;
}

static uint64_t suffix_mul(char c)
{
    switch (toupper((unsigned char)c)) {
    case 'B': return 1;
    case 'K': return 1ULL << 10;
    case 'M': return 1ULL << 20;
    case 'G': return 1ULL << 30;
    case 'T': return 1ULL << 40;
    case 'P': return 1ULL << 50;
    case 'E': return 1ULL << 60;
    }
    return 0;
}

/* qemu's do_strtosz(): decimal with optional fraction and suffix, or 0x hex without either. */
int parse_size_ex(const char *s, uint64_t *out)
{
    const char *p = s;
    while (isspace((unsigned char)*p))
        p++;
    if (*p == '-' || !isdigit((unsigned char)*p))
        return -EINVAL;
    errno = 0;
    char *end;
    unsigned long long ip = strtoull(p, &end, 10);
    if (errno)
        return -ERANGE;
    double frac = 0;
    if (ip == 0 && (*end == 'x' || *end == 'X')) {
        if (!isxdigit((unsigned char)end[1]))
            return -EINVAL;
        errno = 0;
        ip = strtoull(p, &end, 16);
        if (errno)
            return -ERANGE;
        if (*end == '.' || suffix_mul(*end))
            return -EINVAL;
    } else if (*end == '.') {
        char *fend;
        frac = strtod(end, &fend);
        for (const char *q = end; q < fend; q++)
            if (*q == 'e' || *q == 'E')
                return -EINVAL; /* qemu refuses exponents */
        end = fend > end ? fend : end + 1;
    }
    uint64_t mul = suffix_mul(*end);
    if (mul)
        end++;
    else
        mul = 1;
    if (*end)
        return -EINVAL;
    if (mul == 1 && frac != 0)
        return -EINVAL; /* fractional bytes need a scale */
    uint64_t fv = (uint64_t)(frac * (double)mul);
    if (ip > (UINT64_MAX - fv) / mul)
        return -ERANGE;
    *out = (uint64_t)ip * mul + fv;
    return 0;
}

int parse_size(const char *s, uint64_t *out)
{
    uint64_t v;
    if (parse_size_ex(s, &v) < 0 || v > INT64_MAX)
        return -1;
    *out = v;
    return 0;
}

int cvtnum(const char *name, const char *value, int64_t *out)
{
    uint64_t v;
    int r = parse_size_ex(value, &v);
    if (r == -EINVAL) {
        err_report("Invalid %s specified. You may use k, M, G, T, P or E suffixes for", name);
        err_report("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
        return -1;
    }
    if (r < 0 || v > INT64_MAX) {
        err_report("Invalid %s specified. Must be between 0 and %lld.", name,
                   (long long)INT64_MAX);
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}
