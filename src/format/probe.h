/* Image format probing from the first bytes of a file, as qemu's driver probes do
 * (qemu reads up to 2048 bytes; pass what you have). */
#ifndef QIMG_FORMAT_PROBE_H
#define QIMG_FORMAT_PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROBE_BUF_SIZE 2048u

/* Returns a static qemu format name: "qcow2", "qcow", "qed", "vdi", "luks", "bochs", "vpc",
 * "vhdx", or "raw" when nothing matches. Like qemu, each probe needs its whole header
 * in buf (qcow2 112 bytes, qed 64, vdi 512), else the file counts as raw. */
const char *probe_format(const uint8_t *buf, size_t buf_len);

/* qemu's bochs_probe: a 512-byte Bochs growing ("redolog") header, version 1 or 2. */
bool bochs_header_ok(const uint8_t *buf, size_t buf_len);

#endif
