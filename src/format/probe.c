/* Format probing: the magic tests of qemu's driver probes, each needing its header. */
#include "format/probe.h"

#include <string.h>

#include "format/be.h"
#include "format/luks_header.h"

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
    if (buf_len >= 8 && memcmp(buf, "vhdxfile", 8) == 0)
        return "vhdx";
    if (buf_len >= 8 && memcmp(buf, "conectix", 8) == 0)
        return "vpc";
    return "raw";
}
