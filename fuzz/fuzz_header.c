/* qcow2 header, header extensions, backing name, layout checks, probe; encode round trip;
 * the LUKS header decoder. */
#include <string.h>

#include "format/luks_header.h"
#include "format/probe.h"
#include "format/qcow1_header.h"
#include "format/qcow2_ext.h"
#include "format/qcow2_header.h"
#include "fuzz/fuzz_common.h"

static void one(const uint8_t *data, size_t size, unsigned flags)
{
    struct qcow2_header h;
    struct fmt_error e;
    char msg[FMT_ERROR_MSG_MAX + 256];
    memset(&h, 0, sizeof(h));
    int r = qcow2_header_decode(data, size, flags, &h, &e);
    if (r < 0) {
        FUZZ_ASSERT(e.code == r);
        fmt_error_format(&e, msg, sizeof(msg));
        fmt_error_user_msg(&e, msg, sizeof(msg));
        return;
    }
    FUZZ_ASSERT(h.cluster_bits >= QCOW2_MIN_CLUSTER_BITS && h.cluster_bits <= QCOW2_MAX_CLUSTER_BITS);
    FUZZ_ASSERT(h.cluster_size == 1ull << h.cluster_bits);
    FUZZ_ASSERT(h.header_length <= h.cluster_size);
    FUZZ_ASSERT(h.refcount_order <= 6);
    FUZZ_ASSERT(h.ext_end <= h.cluster_size);

    struct qcow2_ext x;
    memset(&x, 0, sizeof(x));
    r = qcow2_ext_parse(&h, data, size, &x, &e);
    if (r == 0) {
        for (size_t i = 0; i < x.n_all; i++)
            FUZZ_ASSERT(x.all[i].offset + 8 + x.all[i].len <= h.ext_end);
        for (unsigned t = 0; t < 3; t++)
            for (unsigned b = 0; b < 64; b += 7)
                qcow2_ext_feature_name(&x, t, b);
        FUZZ_ASSERT(!x.has_backing_format || strlen(x.backing_format) < QCOW2_BACKING_FORMAT_MAX);
    } else {
        fmt_error_user_msg(&e, msg, sizeof(msg));
    }
    qcow2_ext_free(&x);

    char name[QCOW2_MAX_BACKING_NAME + 1];
    uint32_t name_len = 0;
    bool has_backing = false;
    if (qcow2_backing_name(&h, data, size, name, &name_len, &has_backing, &e) == 0 && has_backing)
        FUZZ_ASSERT(name_len <= QCOW2_MAX_BACKING_NAME && name[name_len] == 0);

    qcow2_header_check_layout(&h, size, &e);
    qcow2_header_check_layout(&h, UINT64_MAX, &e);
    qcow2_size_to_l1(&h, h.size);
    qcow2_size_to_l1(&h, UINT64_MAX);

    /* Encode what we decoded; decoding that must give the same fields. */
    uint8_t enc[QCOW2_HDR_V3_LEN];
    int n = qcow2_header_encode(&h, enc, sizeof(enc));
    FUZZ_ASSERT(n > 0 && (size_t)n <= sizeof(enc));
    struct qcow2_header h2;
    r = qcow2_header_decode(enc, (size_t)n, flags & ~QCOW2_HDR_STRICT, &h2, &e);
    FUZZ_ASSERT(r == 0);
    FUZZ_ASSERT(h2.version == h.version && h2.cluster_bits == h.cluster_bits &&
                h2.size == h.size && h2.l1_size == h.l1_size &&
                h2.l1_table_offset == h.l1_table_offset &&
                h2.refcount_table_offset == h.refcount_table_offset &&
                h2.refcount_table_clusters == h.refcount_table_clusters &&
                h2.nb_snapshots == h.nb_snapshots && h2.snapshots_offset == h.snapshots_offset &&
                h2.incompatible_features == h.incompatible_features &&
                h2.compatible_features == h.compatible_features &&
                h2.autoclear_features == h.autoclear_features &&
                h2.refcount_order == h.refcount_order &&
                h2.compression_type == h.compression_type);
}

/* A LUKS header that decodes names only known algorithms and a payload past the header,
 * and encodes back to the same bytes. */
static void luks(const uint8_t *data, size_t size)
{
    struct luks_header h;
    struct fmt_error e;
    char msg[FMT_ERROR_MSG_MAX + 256];
    if (luks_header_decode(data, size, &h, &e) < 0) {
        fmt_error_user_msg(&e, msg, sizeof(msg));
        return;
    }
    FUZZ_ASSERT(h.cipher_alg && h.cipher_mode_name && h.ivgen_alg && h.hash_alg);
    FUZZ_ASSERT(h.payload_offset >= 4096 && strlen(h.uuid) <= 40);
    for (int i = 0; i < LUKS_NUM_SLOTS; i++)
        FUZZ_ASSERT(h.slots[i].stripes == LUKS_STRIPES);
    /* the encoder (amend's header writes) gives back every byte of a valid header */
    uint8_t enc[LUKS_HEADER_LEN];
    luks_header_encode(&h, enc);
    FUZZ_ASSERT(memcmp(enc, data, LUKS_HEADER_LEN) == 0);
}

/* qcow v1: a decoded header has qemu's ranges and an L1 size within qemu's limit. */
static void one_qcow1(const uint8_t *data, size_t size)
{
    struct qcow1_header h;
    struct fmt_error e;
    char msg[FMT_ERROR_MSG_MAX + 256];
    int r = qcow1_header_decode(data, size, &h, &e);
    if (r < 0) {
        FUZZ_ASSERT(e.code == r);
        fmt_error_user_msg(&e, msg, sizeof(msg));
        return;
    }
    FUZZ_ASSERT(h.cluster_bits >= 9 && h.cluster_bits <= 16);
    FUZZ_ASSERT(h.l2_bits >= 6 && h.l2_bits <= 13);
    FUZZ_ASSERT(h.size >= 2 && h.l1_size >= 1 && h.l1_size <= 268435455u);
    FUZZ_ASSERT(h.l1_size << (h.cluster_bits + h.l2_bits) >= h.size);
    uint64_t entry = size >= 56 ? be64_get(data + 48) : 0;
    struct qcow1_entry x = qcow1_entry(&h, entry);
    if (x.kind == QCOW1_COMPRESSED)
        FUZZ_ASSERT(x.csize < h.cluster_size && x.coffset <= h.cluster_offset_mask);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    probe_format(data, size);
    luks(data, size);
    one_qcow1(data, size);
    one(data, size, 0);
    one(data, size, QCOW2_HDR_CHECK);
    one(data, size, QCOW2_HDR_RDWR | QCOW2_HDR_STRICT);
    return 0;
}
