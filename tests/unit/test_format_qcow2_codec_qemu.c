/* The codec against the real qemu-img: `qemu-img convert -c` a raw image of mixed clusters
 * (text, random, zero, half and half, nearly incompressible, a short last cluster) with zlib
 * and zstd at 4 KiB, 64 KiB and 2 MiB clusters, then compress every guest cluster with
 * qcow2_compress and demand qemu's choice byte for byte: the same compressed bytes at the
 * descriptor's offset and the same sector count, or "does not fit" exactly where qemu wrote
 * the cluster plainly. qemu's bytes also decompress to the guest data with our decoder.
 * Skipped (visibly) when qemu-img is not installed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "test_format_helpers.h"
#include "format/qcow2_codec.h"
#include "format/qcow2_header.h"
#include "format/qcow2_l2.h"

static char dir[] = "/tmp/qimg-codec-XXXXXX";

static uint64_t rng;
static uint8_t next_byte(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint8_t)(rng >> 24);
}

static void fill_cluster(uint8_t *p, size_t cs, uint64_t i)
{
    static const char text[] = "the quick brown qcow2 cluster jumps over the lazy refcount ";
    memset(p, 0, cs);
    switch (i % 6) {
    case 0: /* text with random words: compresses well */
        for (size_t k = 0; k < cs; k++)
            p[k] = (next_byte() & 7) ? (uint8_t)text[k % (sizeof(text) - 1)] : next_byte();
        break;
    case 1: /* random: does not fit */
        for (size_t k = 0; k < cs; k++)
            p[k] = next_byte();
        break;
    case 2: /* zeros: qemu-img convert leaves the cluster unallocated */
        break;
    case 3: /* half random, half zeros */
        for (size_t k = 0; k < cs / 2; k++)
            p[k] = next_byte();
        break;
    case 4: /* random but for 16 bytes: too little saving to fit */
        for (size_t k = 16; k < cs; k++)
            p[k] = next_byte();
        break;
    default: /* a few bytes in a zero cluster */
        for (size_t k = 0; k < cs; k += 997)
            p[k] = next_byte();
        break;
    }
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void against_qemu(const char *ctype, unsigned type, unsigned cluster_bits,
                         uint64_t nclusters)
{
    size_t cs = (size_t)1 << cluster_bits;
    uint64_t size = nclusters * cs - cs / 2;   /* the last cluster is short: qemu pads it */
    char raw[64], img[64], cmd[512];
    snprintf(raw, sizeof(raw), "%s/guest.raw", dir);
    snprintf(img, sizeof(img), "%s/c.qcow2", dir);
    uint8_t *guest = malloc(nclusters * cs);
    rng = 0x9e3779b97f4a7c15ull ^ cluster_bits ^ ((uint64_t)type << 32);
    for (uint64_t i = 0; i < nclusters; i++)
        fill_cluster(guest + i * cs, cs, i);
    memset(guest + size, 0, nclusters * cs - size);
    FILE *f = fopen(raw, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(guest, 1, size, f), size);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "qemu-img convert -q -f raw -O qcow2 -c -o "
             "cluster_size=%zu,compression_type=%s %s %s", cs, ctype, raw, img);
    assert_int_equal(system(cmd), 0);

    size_t flen;
    uint8_t *file = slurp(img, &flen);
    struct qcow2_header h;
    assert_int_equal(qcow2_header_decode(file, flen, 0, &h, NULL), 0);
    assert_int_equal(h.cluster_bits, cluster_bits);
    assert_int_equal(h.compression_type, type);
    uint8_t *out = malloc(cs), *back = malloc(cs);
    unsigned compressed = 0, plain = 0;
    for (uint64_t g = 0; g < nclusters; g++) {
        const uint8_t *data = guest + g * cs;
        uint64_t l1i = g >> (cluster_bits - 3), l2i = g & ((cs / 8) - 1);
        assert_true(l1i < h.l1_size);
        uint64_t l2off = be64_get(file + h.l1_table_offset + l1i * 8) & QCOW2_L2E_OFFSET_MASK;
        uint64_t e = l2off ? be64_get(file + l2off + l2i * 8) : 0;
        ssize_t n = qcow2_compress(type, out, data, cs);
        bool zero = true;
        for (size_t k = 0; k < cs && zero; k++)
            zero = !data[k];
        if (zero) {
            assert_int_equal(e, 0);   /* not written at all */
            continue;
        }
        if (n > 0) {
            assert_true(e & QCOW2_OFLAG_COMPRESSED);
            struct qcow2_compressed c;
            qcow2_compressed_decode(cluster_bits, e, &c);
            uint64_t sectors = ((c.host_offset + (uint64_t)n - 1) >> 9) - (c.host_offset >> 9) + 1;
            assert_int_equal(c.nb_sectors, sectors);
            assert_true(c.host_offset + (uint64_t)n <= flen);
            assert_memory_equal(file + c.host_offset, out, (size_t)n);
            size_t avail = c.host_offset + c.csize <= flen ? c.csize : flen - c.host_offset;
            assert_int_equal(qcow2_decompress(type, back, cs, file + c.host_offset, avail),
                             QCOW2_INFLATE_EXACT);
            assert_memory_equal(back, data, cs);
            compressed++;
        } else {
            assert_int_equal(n, -ENOSPC);
            assert_false(e & QCOW2_OFLAG_COMPRESSED);
            uint64_t off = e & QCOW2_L2E_OFFSET_MASK;
            assert_true(off && off + cs <= flen);
            assert_memory_equal(file + off, data, cs);
            plain++;
        }
    }
    /* the image really has both kinds, so the comparison above has something to fail on */
    assert_true(compressed >= nclusters / 3 && plain >= nclusters / 6);
    free(out);
    free(back);
    free(file);
    free(guest);
}

static int have_qemu(void)
{
    return system("qemu-img --version >/dev/null 2>&1") == 0;
}

#define CASE(name, ctype, type, bits, n)                        \
    static void name(void **state)                              \
    {                                                           \
        (void)state;                                            \
        if (!have_qemu())                                       \
            skip();                                             \
        against_qemu(ctype, type, bits, n);                     \
    }
CASE(test_zlib_4k, "zlib", QCOW2_COMPRESSION_ZLIB, 12, 60)
CASE(test_zlib_64k, "zlib", QCOW2_COMPRESSION_ZLIB, 16, 30)
CASE(test_zlib_2m, "zlib", QCOW2_COMPRESSION_ZLIB, 21, 12)
CASE(test_zstd_4k, "zstd", QCOW2_COMPRESSION_ZSTD, 12, 60)
CASE(test_zstd_64k, "zstd", QCOW2_COMPRESSION_ZSTD, 16, 30)
CASE(test_zstd_2m, "zstd", QCOW2_COMPRESSION_ZSTD, 21, 12)

static int setup(void **state)
{
    (void)state;
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zlib_4k),  cmocka_unit_test(test_zlib_64k),
        cmocka_unit_test(test_zlib_2m),  cmocka_unit_test(test_zstd_4k),
        cmocka_unit_test(test_zstd_64k), cmocka_unit_test(test_zstd_2m),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
