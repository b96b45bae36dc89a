#include "util/size.h"

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

int parse_size(const char *s, uint64_t *out)
{
    const char *p = s;
    while (isspace((unsigned char)*p))
        p++;
    if (*p == '-' || !isdigit((unsigned char)*p))
        return -1;
    errno = 0;
    char *end;
    unsigned long long ip = strtoull(p, &end, 10);
    if (errno)
        return -1;
    double frac = 0;
    if (*end == '.') {
        char *fend;
        frac = strtod(end, &fend);
        if (fend == end + 1)
            return -1;
        end = fend;
    }
    unsigned shift = 0;
    switch (toupper((unsigned char)*end)) {
    case 'B': shift = 0; end++; break;
    case 'K': shift = 10; end++; break;
    case 'M': shift = 20; end++; break;
    case 'G': shift = 30; end++; break;
    case 'T': shift = 40; end++; break;
    case 'P': shift = 50; end++; break;
    case 'E': shift = 60; end++; break;
    case 0: break;
    default: return -1;
    }
    if (*end)
        return -1;
    if (frac != 0 && shift == 0)
        return -1; /* fractional bytes make no sense */
    if (shift && ip > (UINT64_MAX >> shift))
        return -1;
    uint64_t v = (uint64_t)ip << shift;
    double fv = frac * (double)(1ULL << shift);
    if (fv + (double)v >= 18446744073709551616.0)
        return -1;
    v += (uint64_t)fv;
    if (v > INT64_MAX)
        return -1;
    *out = v;
    return 0;
}
