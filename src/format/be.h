/* Big-endian loads/stores and overflow-checked arithmetic for on-disk structures.
 * Every decoder reads image bytes through these helpers, never through casts, so
 * alignment and host endianness never matter. */
#ifndef QIMG_FORMAT_BE_H
#define QIMG_FORMAT_BE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

static inline uint16_t be16_get(const uint8_t *p)
{
    return (uint16_t)((uint16_t)p[0] << 8 | p[1]);
}

static inline uint32_t be32_get(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t be64_get(const uint8_t *p)
{
    return (uint64_t)be32_get(p) << 32 | be32_get(p + 4);
}

static inline void be16_put(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void be32_put(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline void be64_put(uint8_t *p, uint64_t v)
{
    be32_put(p, (uint32_t)(v >> 32));
    be32_put(p + 4, (uint32_t)v);
}

/* Little-endian, for the formats that use it (QED, VDI). */
static inline uint32_t le32_get(const uint8_t *p)
{
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static inline uint64_t le64_get(const uint8_t *p)
{
    return (uint64_t)le32_get(p + 4) << 32 | le32_get(p);
}

static inline void le32_put(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline void le64_put(uint8_t *p, uint64_t v)
{
    le32_put(p, (uint32_t)v);
    le32_put(p + 4, (uint32_t)(v >> 32));
}

/* True on overflow; *out is then unspecified. */
static inline bool u64_add_overflow(uint64_t a, uint64_t b, uint64_t *out)
{
    return __builtin_add_overflow(a, b, out);
}

static inline bool u64_mul_overflow(uint64_t a, uint64_t b, uint64_t *out)
{
    return __builtin_mul_overflow(a, b, out);
}

/* True if [off, off+len) does not fit inside a buffer of buf_len bytes. */
static inline bool range_outside(uint64_t off, uint64_t len, uint64_t buf_len)
{
    uint64_t end;
    return u64_add_overflow(off, len, &end) || end > buf_len;
}

/* Round up to a multiple of 8 (snapshot and extension padding); false on overflow. */
static inline bool u64_align8(uint64_t v, uint64_t *out)
{
    if (v > UINT64_MAX - 7)
        return false;
    *out = (v + 7) & ~(uint64_t)7;
    return true;
}

#endif
