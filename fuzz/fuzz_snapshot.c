/* Snapshot table walk as qemu's qcow2_read_snapshots() does it: nb_snapshots entries from
 * snapshots_offset (header bytes, unvalidated; an offset outside the input walks from byte
 * 112 instead), 8-byte aligned, with the 64 MiB running limit; both decode modes. Each
 * decoded entry is re-encoded and decoded again. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "format/qcow2_snapshot.h"
#include "fuzz/fuzz_common.h"

static void walk(const uint8_t *data, size_t size, uint64_t off, uint32_t nb, unsigned version,
                 uint64_t vsize, unsigned flags)
{
    const uint8_t *buf = data + off;
    size_t len = size - (size_t)off;
    uint64_t pos = 0;
    for (uint32_t i = 0; i < nb && i < 65536; i++) {
        if (!u64_align8(pos, &pos) || pos >= len)
            return;
        struct qcow2_snapshot sn;
        struct fmt_error e;
        uint64_t elen = 0;
        memset(&sn, 0, sizeof(sn));
        int r = qcow2_snapshot_decode(buf + pos, len - (size_t)pos, off + pos, i, version,
                                      vsize, flags, &sn, &elen, &e);
        if (r < 0) {
            FUZZ_ASSERT(r == -EINVAL || r == -EFBIG);
            FUZZ_ASSERT(e.code == r);
            qcow2_snapshot_free(&sn);
            return;
        }
        FUZZ_ASSERT(elen >= QCOW2_SN_HDR_SIZE && elen <= len - pos);
        FUZZ_ASSERT(sn.id_str && strlen(sn.id_str) <= sn.id_str_size);
        FUZZ_ASSERT(sn.name && strlen(sn.name) <= sn.name_size);
        FUZZ_ASSERT(sn.unknown_extra_len <= QCOW2_MAX_SNAPSHOT_EXTRA - QCOW2_SN_EXTRA_KNOWN);
        FUZZ_ASSERT(!sn.extra_truncated || (flags & QCOW2_SN_TRUNCATE_EXTRA));

        uint64_t esz = qcow2_snapshot_encoded_size(&sn);
        uint8_t *enc = malloc(esz + 8);
        FUZZ_ASSERT(enc);
        int64_t w = qcow2_snapshot_encode(&sn, enc, esz + 8);
        FUZZ_ASSERT(w == (int64_t)esz);
        struct qcow2_snapshot sn2;
        uint64_t elen2 = 0;
        memset(&sn2, 0, sizeof(sn2));
        r = qcow2_snapshot_decode(enc, (size_t)w, 0, i, version, vsize, 0, &sn2, &elen2, &e);
        FUZZ_ASSERT(r == 0 && elen2 == (uint64_t)w);
        FUZZ_ASSERT(sn2.l1_table_offset == sn.l1_table_offset && sn2.l1_size == sn.l1_size);
        FUZZ_ASSERT(sn2.id_str_size == sn.id_str_size && sn2.name_size == sn.name_size);
        FUZZ_ASSERT(!memcmp(sn2.id_str, sn.id_str, sn.id_str_size));
        FUZZ_ASSERT(!memcmp(sn2.name, sn.name, sn.name_size));
        FUZZ_ASSERT(sn2.vm_state_size == sn.vm_state_size && sn2.disk_size == sn.disk_size &&
                    sn2.icount == sn.icount);
        FUZZ_ASSERT(sn2.date_sec == sn.date_sec && sn2.date_nsec == sn.date_nsec &&
                    sn2.vm_clock_nsec == sn.vm_clock_nsec);
        qcow2_snapshot_free(&sn2);
        free(enc);
        qcow2_snapshot_free(&sn);
        pos += elen;
        if (qcow2_snapshot_table_too_big(pos))
            return;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned version = fz_be32(data, size, 4) == 2 ? 2 : 3;
    uint64_t vsize = fz_be64(data, size, 24);
    uint32_t nb = fz_be32(data, size, 60);
    uint64_t off = fz_be64(data, size, 64);
    if (off >= size) {
        off = size < 112 ? size : 112;
        nb = nb ? nb : 4;
    }
    walk(data, size, off, nb, version, vsize, 0);
    walk(data, size, off, nb, version, vsize, QCOW2_SN_TRUNCATE_EXTRA);
    return 0;
}
