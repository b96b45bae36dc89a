/* Sizes the way qemu-img reads and prints them. */
#ifndef QIMG_UTIL_SIZE_H
#define QIMG_UTIL_SIZE_H

#include <stdint.h>

/* qemu's size_to_str(): "%0.3g <prefix>B" with binary prefixes; writes into buf (>= 32). */
const char *size_to_str(uint64_t val, char buf[32]);

/* qemu_strtosz(): "1G", "512k", "1.5M", "4096" (bytes), suffixes B K M G T P E, case-insensitive.
 * Returns 0, or -1 on a malformed or out-of-range value. */
int parse_size(const char *s, uint64_t *out);

/* qemu 7.2's qemu_strtosz() itself: also "0x1f" hex ("0x1fk" too, with qemu's deprecation
 * warning on stderr), "+1", fractions rounded as qemu rounds them; 0, -EINVAL (malformed) or
 * -ERANGE (>= 2^64). */
int parse_size_ex(const char *s, uint64_t *out);

/* qemu-img's cvtnum(name, value): a size in [0, INT64_MAX], or prints qemu's two-line
 * "Invalid <name> specified. ..." / range message and returns -1. */
int cvtnum(const char *name, const char *value, int64_t *out);

/* qemu-img's cvtnum_full(name, value, min, max): the same with a range [min, max], min >= 0
 * ("Invalid <name> specified. Must be between MIN and MAX."). */
int cvtnum_full(const char *name, const char *value, int64_t min, int64_t max, int64_t *out);

#endif
