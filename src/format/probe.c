/* Format probing: the magic tests of qemu's driver probes, each needing its header. */
#include "format/probe.h"

#include <string.h>

#include "format/be.h"
#include "format/luks_header.h"

/* a fixed-size header field holding exactly the string s (qemu compares with strcmp) */
static bool field_is(const uint8_t *f, size_t len, const char *s)
{
    size_t n = strlen(s);
    return n < len && !memcmp(f, s, n) && f[n] == 0;
}

bool bochs_header_ok(const uint8_t *b, size_t len)
{
    if (len < 512)
        return false;
    uint32_t v = le32_get(b + 64);
    return field_is(b, 32, "Bochs Virtual HD Image") && field_is(b + 32, 16, "Redolog") &&
           field_is(b + 48, 16, "Growing") && (v == 0x00010000u || v == 0x00020000u);
}

const char *probe_format(const uint8_t *buf, size_t buf_len)
{
    /* qcow2/qcow share a magic; qemu's probes need the whole header struct. */
    if (buf_len >= 112 && be32_get(buf) == 0x514649fbu && be32_get(buf + 4) >= 2)
        return "qcow2";
    if (buf_len >= 48 && be32_get(buf) == 0x514649fbu && be32_get(buf + 4) == 1)
        return "qcow";
    if (buf_len >= 64 && memcmp(buf, "QED\0", 4) == 0)
        return "qed";
    /* VDI: little-endian signature 0xbeda107f after the 64-byte text, 512-byte header. */
    if (buf_len >= 512 && le32_get(buf + 0x40) == 0xbeda107fu)
        return "vdi";
    if (luks_probe(buf, buf_len))   /* magic and version 1 */
        return "luks";
    if (bochs_header_ok(buf, buf_len))
        return "bochs";
    if (buf_len >= 8 && memcmp(buf, "vhdxfile", 8) == 0)
        return "vhdx";
    if (buf_len >= 8 && memcmp(buf, "conectix", 8) == 0)
        return "vpc";
    return "raw";
}
