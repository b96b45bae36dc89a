/* vdi creation as qemu 7.2's vdi_co_create_opts + vdi_co_do_create: the protocol file made
 * first (it gets the -o options vdi does not know, e.g. preallocation), then the 512-byte
 * header, the block map (all unallocated; static=on: every block mapped in order and the
 * file sized to hold them) and random image/snapshot UUIDs (qemu_uuid_generate, stored byte
 * swapped as vdi_header_to_le does). Like qemu, a failure leaves the file it made. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/create.h"
#include "format/be.h"
#include "format/vdi_header.h"
#include "io/qio.h"
#include "util/xalloc.h"

#define VDI_BLOCK 0x100000u
#define VDI_SIZE_MAX 0x1fffff8000000ull /* qemu's VDI_DISK_SIZE_MAX */

/* a version 4 UUID in the byte order vdi stores it (fields little-endian) */
static int uuid(uint8_t *u)
{
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, u, 16);
    close(fd);
    if (n != 16)
        return -EIO;
    u[7] = (uint8_t)((u[7] & 0x0f) | 0x40);
    u[8] = (uint8_t)((u[8] & 0x3f) | 0x80);
    return 0;
}

int vdi_create(const char *filename, const struct copts *o, char **errmsg)
{
    uint64_t size = copts_num(o, "size", 0);
    if (size <= UINT64_MAX - 511)
        size = (size + 511) & ~511ull; /* vdi_co_create_opts rounds up to sectors */
    bool stat = copts_bool(o, "static", false);
    int r = file_create(filename, 0,
                        copts_isset(o, "preallocation") ? copts_str(o, "preallocation") : NULL,
                        errmsg);
    if (r < 0)
        return r;
    if (size > VDI_SIZE_MAX) {
        char buf[160];
        snprintf(buf, sizeof(buf), "Unsupported VDI image size (size is 0x%llx, max supported "
                 "is 0x%llx)", (unsigned long long)size, (unsigned long long)VDI_SIZE_MAX);
        *errmsg = xstrdup(buf);
        return -EINVAL;
    }
    uint32_t blocks = (uint32_t)((size + VDI_BLOCK - 1) / VDI_BLOCK);
    uint32_t bmap_size = (blocks * 4u + 511u) & ~511u;
    uint8_t h[512] = { 0 };
    static const char text[] = "<<< QEMU VM Virtual Disk Image >>>\n";
    memcpy(h, text, sizeof(text) - 1);
    le32_put(h + 0x40, VDI_SIGNATURE);
    le32_put(h + 0x44, VDI_VERSION_1_1);
    le32_put(h + 0x48, 0x180);
    le32_put(h + 0x4c, stat ? 2 : 1);
    le32_put(h + 0x154, 0x200);
    le32_put(h + 0x158, 0x200 + bmap_size);
    le32_put(h + 0x168, 512);
    le64_put(h + 0x170, size);
    le32_put(h + 0x178, VDI_BLOCK);
    le32_put(h + 0x180, blocks);
    if (stat)
        le32_put(h + 0x184, blocks);
    if ((r = uuid(h + 0x188)) < 0 || (r = uuid(h + 0x198)) < 0)
        return r;
    qio_t *q = NULL;
    r = qio_open_file(filename, QIO_RDWR, &q);
    if (r < 0)
        return r;
    r = qio_pwrite(q, h, sizeof(h), 0);
    if (r >= 0 && bmap_size) {
        uint8_t *bmap = xcalloc(1, bmap_size);
        for (uint32_t i = 0; i < blocks; i++)
            le32_put(bmap + 4 * (size_t)i, stat ? i : VDI_UNALLOCATED);
        r = qio_pwrite(q, bmap, bmap_size, 0x200);
        free(bmap);
    }
    if (r >= 0 && stat)
        r = qio_truncate(q, 0x200ull + bmap_size + (uint64_t)blocks * VDI_BLOCK);
    if (r >= 0)
        r = qio_flush(q);
    qio_close(q);
    return r < 0 ? r : 0;
}
