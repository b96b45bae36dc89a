#include "util/size.h"

#include "util/err.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

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

/* qemu 7.2's do_strtosz(): strtoull's decimal (leading blanks and '+' allowed, any '-'
 * refused), an optional fraction that needs a suffix, or 0x hex without a fraction. Hex with a
 * suffix still works in 7.2 but warns ("deprecated"), as qemu does, from here. The fraction
 * is held as 64.64 fixed point and the product rounded half up, so "0.9999999999k" is 1024
 * as in qemu, not 1023 as a double truncation would give. */
int parse_size_ex(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long ip = strtoull(s, &end, 10);
    if (end == s)
        return -EINVAL;
    if (errno)
        return -ERANGE;
    if (memchr(s, '-', (size_t)(end - s)))
        return -EINVAL;
    bool hex = false;
    uint64_t frac = 0; /* fraction * 2^64 */
    if (ip == 0 && (*end == 'x' || *end == 'X')) {
        errno = 0;
        ip = strtoull(s, &end, 16);
        if (errno)
            return -ERANGE;
        if (*end == '.')
            return -EINVAL;
        hex = true;
    } else if (*end == '.') {
        char *fend;
        errno = 0;
        double f = strtod(end, &fend);
        if (fend == end || errno || !isfinite(f)) {
            end++; /* "1.k": a bare point */
        } else {
            for (const char *q = end; q < fend; q++)
                if (*q == 'e' || *q == 'E')
                    return -EINVAL; /* qemu refuses exponents */
            frac = f >= 1.0 ? UINT64_MAX : (uint64_t)(f * 0x1p64);
            end = fend;
        }
    }
    uint64_t mul = suffix_mul(*end);
    if (mul) {
        if (hex)
            fprintf(stderr, "%s: warning: Using a multiplier suffix on hex numbers is "
                    "deprecated: %s\n", qimg_progname, s);
        end++;
    } else {
        mul = 1;
    }
    if (*end)
        return -EINVAL;
    if (mul == 1) {
        if (frac)
            return -EINVAL; /* fractional bytes need a scale */
        *out = ip;
        return 0;
    }
    unsigned __int128 v = (unsigned __int128)ip * mul;
    unsigned __int128 fv = (unsigned __int128)frac * mul; /* 64.64 */
    v += fv >> 64;
    v += ((uint64_t)fv) >> 63; /* round half up */
    if (v > UINT64_MAX)
        return -ERANGE;
    *out = (uint64_t)v;
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

int cvtnum_full(const char *name, const char *value, int64_t min, int64_t max, int64_t *out)
{
    uint64_t v;
    int r = parse_size_ex(value, &v);
    if (r == -EINVAL) {
        err_report("Invalid %s specified. You may use k, M, G, T, P or E suffixes for", name);
        err_report("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
        return -1;
    }
    if (r < 0 || v > (uint64_t)max || (int64_t)v < min) {
        err_report("Invalid %s specified. Must be between %lld and %lld.", name,
                   (long long)min, (long long)max);
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

int cvtnum(const char *name, const char *value, int64_t *out)
{
    return cvtnum_full(name, value, 0, INT64_MAX, out);
}
