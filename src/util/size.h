/* Sizes the way qemu-img reads and prints them. */
#ifndef QIMG_UTIL_SIZE_H
#define QIMG_UTIL_SIZE_H

#include <stdint.h>

/* qemu's size_to_str(): "%0.3g <prefix>B" with binary prefixes; writes into buf (>= 32). */
const char *size_to_str(uint64_t val, char buf[32]);

/* qemu_strtosz(): "1G", "512k", "1.5M", "4096" (bytes), suffixes B K M G T P E, case-insensitive.
 * Returns 0, or -1 on a malformed or out-of-range value. */
int parse_size(const char *s, uint64_t *out);

#endif
