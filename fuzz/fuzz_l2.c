/* L1 entries, L2 entries (standard and extended), subcluster types and compressed
 * descriptors, with the geometry taken from the header bytes (cluster_bits, incompat
 * bits). Walks the L1 table and the L2 tables it names inside the input, then every 8-byte
 * word of the first 4 KiB as an L1 and an L2 entry (both geometries). Checks decode/encode round trips. */
#include <errno.h>
#include <string.h>

#include "format/qcow2_header.h"
#include "format/qcow2_l2.h"
#include "fuzz/fuzz_common.h"

static void l1e(uint64_t entry)
{
    struct qcow2_l1e a, b;
    qcow2_l1e_decode(entry, &a);
    FUZZ_ASSERT((a.l2_offset & ~QCOW2_L1E_OFFSET_MASK) == 0);
    FUZZ_ASSERT(a.reserved == (entry & QCOW2_L1E_RESERVED_MASK));
    FUZZ_ASSERT(a.copied == !!(entry >> 63));
    qcow2_l1e_decode(qcow2_l1e_encode(a.l2_offset, a.copied), &b);
    FUZZ_ASSERT(b.l2_offset == a.l2_offset && b.copied == a.copied && b.reserved == 0);
}

static void l2e(const struct qcow2_l2_geom *g, uint64_t entry, uint64_t bitmap, uint64_t off)
{
    struct fmt_error e;
    enum qcow2_cluster_type t = qcow2_l2e_type(g, entry);
    FUZZ_ASSERT(t <= QCOW2_CLUSTER_COMPRESSED);
    FUZZ_ASSERT(qcow2_cluster_type_name(t) != NULL);
    if (t == QCOW2_CLUSTER_COMPRESSED)
        FUZZ_ASSERT(entry & QCOW2_OFLAG_COMPRESSED);
    unsigned nsc = g->extended_l2 ? 32 : 1;
    for (unsigned i = 0; i <= nsc; i++) {
        enum qcow2_subcluster_type st = qcow2_l2e_subcluster_type(g, entry, bitmap, i);
        FUZZ_ASSERT(st <= QCOW2_SUBCLUSTER_INVALID);
        FUZZ_ASSERT(qcow2_subcluster_type_name(st) != NULL);
        if (i == nsc)
            FUZZ_ASSERT(st == QCOW2_SUBCLUSTER_INVALID);
    }
    int r = qcow2_l2e_validate(g, entry, bitmap, off, &e);
    FUZZ_ASSERT(r == 0 || r == -EINVAL);
    if (r < 0)
        FUZZ_ASSERT(e.code == r);

    if (t == QCOW2_CLUSTER_COMPRESSED) {
        struct qcow2_compressed c, c2;
        qcow2_compressed_decode(g->cluster_bits, entry, &c);
        uint32_t x = 62 - (g->cluster_bits - 8);
        FUZZ_ASSERT(c.host_offset < (1ull << x));
        FUZZ_ASSERT(c.nb_sectors >= 1 && c.nb_sectors <= (1ull << (g->cluster_bits - 8)));
        FUZZ_ASSERT(c.csize == c.nb_sectors * 512 - (c.host_offset & 511));
        uint64_t first, last;
        qcow2_compressed_clusters(g->cluster_bits, &c, &first, &last);
        FUZZ_ASSERT(first <= last);
        FUZZ_ASSERT(first == c.host_offset >> g->cluster_bits);
        uint64_t enc;
        if (qcow2_compressed_encode(g->cluster_bits, c.host_offset, c.csize, &enc) == 0) {
            qcow2_compressed_decode(g->cluster_bits, enc, &c2);
            FUZZ_ASSERT(c2.host_offset == c.host_offset && c2.csize == c.csize &&
                        c2.nb_sectors == c.nb_sectors && !c2.copied);
        }
    } else {
        uint64_t host = qcow2_l2e_offset(entry);
        uint64_t enc = qcow2_l2e_encode(host, entry & (QCOW2_OFLAG_COPIED | QCOW2_OFLAG_ZERO));
        FUZZ_ASSERT(qcow2_l2e_offset(enc) == host && qcow2_l2e_reserved(enc) == 0);
        FUZZ_ASSERT((enc & (QCOW2_OFLAG_COPIED | QCOW2_OFLAG_ZERO)) ==
                    (entry & (QCOW2_OFLAG_COPIED | QCOW2_OFLAG_ZERO)));
    }
}

static void l2_table(const struct qcow2_l2_geom *g, const uint8_t *d, size_t n, uint64_t off,
                     uint64_t len)
{
    unsigned es = g->extended_l2 ? 16 : 8;
    for (uint64_t p = 0; p + es <= len && off + p + es <= n; p += es) {
        uint64_t entry = be64_get(d + off + p);
        uint64_t bitmap = g->extended_l2 ? be64_get(d + off + p + 8) : 0;
        l2e(g, entry, bitmap, off + p);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct qcow2_l2_geom g;
    g.cluster_bits = fz_cluster_bits(data, size);
    uint64_t incompat = fz_be64(data, size, 72);
    g.extended_l2 = (incompat & QCOW2_INCOMPAT_EXTL2) != 0;
    g.data_file = (incompat & QCOW2_INCOMPAT_DATA_FILE) != 0;
    uint64_t cs = 1ull << g.cluster_bits;

    uint64_t l1_off = fz_be64(data, size, 40);
    uint64_t l1_size = fz_be32(data, size, 36);
    if (l1_off < size) {
        for (uint64_t i = 0; i < l1_size && l1_off + i * 8 + 8 <= size; i++) {
            uint64_t entry = be64_get(data + l1_off + i * 8);
            l1e(entry);
            struct qcow2_l1e a;
            qcow2_l1e_decode(entry, &a);
            if (a.l2_offset && a.l2_offset < size)
                l2_table(&g, data, size, a.l2_offset, cs);
        }
    }
    /* Every word of the input as an L1 and an L2 entry, under both geometries. */
    size_t flat = size < 4096 ? size : 4096;
    for (size_t p = 0; p + 8 <= flat; p += 8)
        l1e(be64_get(data + p));
    l2_table(&g, data, flat, 0, flat);
    g.extended_l2 = !g.extended_l2;
    g.data_file = !g.data_file;
    l2_table(&g, data, flat, 0, flat);
    return 0;
}
