/* Refcount table entries and refcount blocks at every width (refcount_order 0..6).
 * Walks the reftable named by the header bytes and every refblock it points to inside the
 * input, reading every entry at every width; then get/set round trips on a copy. */
#include <errno.h>
#include <string.h>

#include "format/qcow2_refcount.h"
#include "fuzz/fuzz_common.h"

static void block(const uint8_t *blk, size_t len, unsigned order_hint)
{
    uint8_t copy[4096];
    size_t clen = len < sizeof(copy) ? len : sizeof(copy);
    for (unsigned order = 0; order <= 7; order++) {
        uint64_t n = qcow2_refblock_entries(len, order);
        uint64_t max = order <= 6 ? qcow2_refcount_max(order) : 0;
        if (order <= 6) {
            FUZZ_ASSERT(n == (uint64_t)len * 8 / (1u << order));
            FUZZ_ASSERT(order == 6 ? max == UINT64_MAX : max == (1ull << (1u << order)) - 1);
        }
        /* reading every entry of a big block at all 7 widths is the bulk of the work:
         * do all entries at the header's width, a sample at the others */
        uint64_t step = order == order_hint ? 1 : 1 + n / 64;
        for (uint64_t i = 0; i < n; i += step) {
            uint64_t v = 0;
            int r = qcow2_refblock_get(blk, len, order, i, &v);
            FUZZ_ASSERT(r == 0);
            FUZZ_ASSERT(v <= max);
        }
        uint64_t v;
        FUZZ_ASSERT(qcow2_refblock_get(blk, len, order, n, &v) == -EINVAL);
        FUZZ_ASSERT(qcow2_refblock_get(blk, len, order, UINT64_MAX, &v) == -EINVAL);
        if (order > 6)
            continue;
        /* set then get, neighbours unchanged */
        memcpy(copy, blk, clen);
        uint64_t cn = qcow2_refblock_entries(clen, order);
        if (cn < 3)
            continue;
        uint64_t idx = (blk[0] | (uint64_t)blk[clen - 1] << 8) % (cn - 2) + 1;
        uint64_t before = 0, after = 0, want = 0, got = 0;
        qcow2_refblock_get(copy, clen, order, idx - 1, &before);
        qcow2_refblock_get(copy, clen, order, idx + 1, &after);
        size_t span = clen > 8 ? clen - 8 : 1;
        memcpy(&want, blk + idx % span, 8);
        want &= max;
        FUZZ_ASSERT(qcow2_refblock_set(copy, clen, order, idx, want) == 0);
        FUZZ_ASSERT(qcow2_refblock_get(copy, clen, order, idx, &got) == 0 && got == want);
        qcow2_refblock_get(copy, clen, order, idx - 1, &v);
        FUZZ_ASSERT(v == before);
        qcow2_refblock_get(copy, clen, order, idx + 1, &v);
        FUZZ_ASSERT(v == after);
        if (order < 6)
            FUZZ_ASSERT(qcow2_refblock_set(copy, clen, order, idx, max + 1) == -EINVAL);
        FUZZ_ASSERT(qcow2_refblock_set(copy, clen, order, cn, 0) == -EINVAL);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t cb = fz_cluster_bits(data, size);
    uint64_t cs = 1ull << cb;
    uint32_t version = fz_be32(data, size, 4);
    unsigned order = version >= 3 ? fz_be32(data, size, 96) % 7 : 4;
    uint64_t rt_off = fz_be64(data, size, 48);
    uint64_t rt_len = (uint64_t)fz_be32(data, size, 56) << cb;
    struct fmt_error e;
    if (rt_off < size) {
        for (uint64_t p = 0; p < rt_len && rt_off + p + 8 <= size; p += 8) {
            uint64_t entry = be64_get(data + rt_off + p);
            struct qcow2_reft_entry re;
            qcow2_reft_decode(entry, &re);
            FUZZ_ASSERT(re.offset == (entry & QCOW2_REFT_OFFSET_MASK));
            FUZZ_ASSERT(re.reserved == (entry & QCOW2_REFT_RESERVED_MASK));
            int r = qcow2_reft_validate(entry, cb, rt_off + p, &e);
            FUZZ_ASSERT(r == 0 || r == -EINVAL);
            if (r == 0 && re.offset)
                FUZZ_ASSERT(re.reserved == 0 && (re.offset & (cs - 1)) == 0);
            if (re.offset && re.offset < size && size - re.offset >= 8) {
                uint64_t len = size - re.offset < cs ? size - re.offset : cs;
                block(data + re.offset, (size_t)len, order);
            }
            uint64_t ti, bi;
            qcow2_refcount_locate(p / 8 * 1000003u, cb + 3 - order, &ti, &bi);
        }
    }
    /* the input itself as one block (small inputs, mutated freely) */
    if (size >= 8 && size <= 8192)
        block(data, size, order);
    return 0;
}
