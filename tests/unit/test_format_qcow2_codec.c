/* The compressed-cluster codec on byte arrays: round trips at 4 KiB / 64 KiB / 2 MiB, the
 * cs - 1 output limit, and hostile streams (truncated, too long, too short, garbage, empty,
 * several zstd frames), each judged by qemu's rule and by the deep check's. */
#include <errno.h>
#include <stdlib.h>
#include <zlib.h>
#include <zstd.h>

#include "test_format_helpers.h"
#include "format/qcow2_codec.h"
#include "format/qcow2_header.h"

#define ZLIB QCOW2_COMPRESSION_ZLIB
#define ZSTD QCOW2_COMPRESSION_ZSTD

static uint64_t rng = 88172645463325252ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Text-like bytes: words drawn at random, compressible but not trivially. */
static void fill_text(uint8_t *p, size_t n)
{
    static const char *words[] = { "qcow2 ", "cluster ", "refcount ", "snapshot ", "L2 ",
                                   "table ", "zlib ", "zstd ", "\n", "0x1f000 " };
    size_t i = 0;
    while (i < n) {
        const char *w = words[next_rand() % 10];
        for (; *w && i < n; w++)
            p[i++] = (uint8_t)*w;
    }
}

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)next_rand();
}

/* A raw deflate stream (qemu's window) of n bytes of src, finished or only sync-flushed. */
static size_t raw_deflate(const uint8_t *src, size_t n, uint8_t *dst, size_t cap, bool finish)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY), Z_OK);
    z.next_in = (Bytef *)src;
    z.avail_in = (uInt)n;
    z.next_out = dst;
    z.avail_out = (uInt)cap;
    int zr = deflate(&z, finish ? Z_FINISH : Z_SYNC_FLUSH);
    assert_int_equal(zr, finish ? Z_STREAM_END : Z_OK);
    size_t len = cap - z.avail_out;
    deflateEnd(&z);
    return len;
}

static size_t zstd_frame(const uint8_t *src, size_t n, uint8_t *dst, size_t cap)
{
    size_t r = ZSTD_compress(dst, cap, src, n, 3);
    assert_false(ZSTD_isError(r));
    return r;
}

static void roundtrip(unsigned type, size_t cs)
{
    uint8_t *in = malloc(cs), *c = malloc(cs), *out = malloc(cs);
    fill_text(in, cs);
    ssize_t n = qcow2_compress(type, c, in, cs);
    assert_true(n > 0 && (size_t)n < cs);
    /* as read back: the stream, then the rest of its last sector (here zeros) */
    size_t padded = ((size_t)n + 511) & ~(size_t)511;
    uint8_t *src = calloc(1, padded);
    memcpy(src, c, (size_t)n);
    assert_int_equal(qcow2_decompress(type, out, cs, src, padded), QCOW2_INFLATE_EXACT);
    assert_memory_equal(in, out, cs);
    assert_int_equal(qcow2_decompress(type, out, cs, c, (size_t)n), QCOW2_INFLATE_EXACT);
    assert_memory_equal(in, out, cs);
    free(src);
    free(in);
    free(c);
    free(out);
}

static void test_roundtrip(void **state)
{
    (void)state;
    static const size_t sizes[] = { 512, 4096, 65536, 2u << 20 };
    for (unsigned i = 0; i < 4; i++) {
        roundtrip(ZLIB, sizes[i]);
        roundtrip(ZSTD, sizes[i]);
    }
}

/* qemu writes a cluster plainly unless it shrinks to cs - 1 bytes or fewer. */
static void test_does_not_fit(void **state)
{
    (void)state;
    const size_t cs = 65536;
    uint8_t *in = malloc(cs), *c = malloc(cs);
    fill_random(in, cs);
    assert_int_equal(qcow2_compress(ZLIB, c, in, cs), -ENOSPC);
    assert_int_equal(qcow2_compress(ZSTD, c, in, cs), -ENOSPC);
    /* the limit itself: random bytes then zeros, the random part growing byte by byte
     * across the point where the stream needs cs - 2, then cs - 1 bytes. A stream that
     * exactly fills the cs - 1 bytes does not fit either: deflate returns Z_OK, not
     * Z_STREAM_END, when it fills the output, and qemu, making the same call, writes that
     * cluster plainly. Shorter streams come out as deflate makes them unbounded. */
    uint8_t *big = malloc(2 * cs);
    bool seen_cap = false, seen_over = false;
    for (size_t k = cs - 128; k <= cs; k++) {
        memset(in, 0, cs);
        rng = 7;
        fill_random(in, k);
        z_stream z;
        memset(&z, 0, sizeof(z));
        assert_int_equal(deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9,
                                      Z_DEFAULT_STRATEGY), Z_OK);
        z.next_in = in;
        z.avail_in = (uInt)cs;
        z.next_out = big;
        z.avail_out = (uInt)(2 * cs);
        assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
        size_t u = 2 * cs - z.avail_out;
        deflateEnd(&z);
        ssize_t n = qcow2_compress(ZLIB, c, in, cs);
        if (u <= cs - 2) {
            assert_int_equal(n, (ssize_t)u);
            assert_memory_equal(c, big, u);
        } else {
            assert_int_equal(n, -ENOSPC);
        }
        seen_cap |= u == cs - 2;
        seen_over |= u == cs - 1;
    }
    assert_true(seen_cap && seen_over);
    free(big);
    memset(in, 0, cs);
    fill_random(in, cs / 2);
    ssize_t n = qcow2_compress(ZLIB, c, in, cs);
    assert_true(n > (ssize_t)cs / 2 && n < (ssize_t)cs);
    assert_int_equal(qcow2_compress(ZLIB, c, in, 1), -EINVAL);
    assert_int_equal(qcow2_compress(7, c, in, cs), -EINVAL);
    free(in);
    free(c);
}

static void test_zlib_hostile(void **state)
{
    (void)state;
    const size_t cs = 4096;
    uint8_t in[3 * 4096], c[3 * 4096 + 64], out[4096];
    fill_text(in, sizeof(in));
    size_t n = raw_deflate(in, cs, c, sizeof(c), true);

    /* truncated: not enough input to fill the cluster */
    assert_int_equal(qcow2_decompress(ZLIB, out, cs, c, n / 2), QCOW2_INFLATE_BAD);
    /* empty */
    assert_int_equal(qcow2_decompress(ZLIB, out, cs, c, 0), QCOW2_INFLATE_BAD);
    /* a stream of half a cluster */
    n = raw_deflate(in, cs / 2, c, sizeof(c), true);
    assert_int_equal(qcow2_decompress(ZLIB, out, cs, c, n), QCOW2_INFLATE_BAD);
    /* garbage: 0xff starts a block of the reserved type 3 */
    memset(c, 0xff, 512);
    assert_int_equal(qcow2_decompress(ZLIB, out, cs, c, 512), QCOW2_INFLATE_BAD);

    /* a stream that inflates past the cluster: qemu reads its first cluster, --deep flags */
    n = raw_deflate(in, 3 * cs, c, sizeof(c), true);
    int r = qcow2_decompress(ZLIB, out, cs, c, n);
    assert_int_equal(r, QCOW2_INFLATE_LONG);
    assert_true(qcow2_inflate_qemu_ok(r));
    assert_false(qcow2_inflate_strict_ok(r));
    assert_memory_equal(out, in, cs);
    /* the same stream cut right after the first cluster's data still yields more */
    assert_int_equal(qcow2_decompress(ZLIB, out, cs, c, n - 8), QCOW2_INFLATE_LONG);

    /* all data but no final block (Z_BUF_ERROR once the output is full): both accept */
    n = raw_deflate(in, cs, c, sizeof(c), false);
    r = qcow2_decompress(ZLIB, out, cs, c, n);
    assert_int_equal(r, QCOW2_INFLATE_EXACT);
    assert_true(qcow2_inflate_qemu_ok(r) && qcow2_inflate_strict_ok(r));
    assert_memory_equal(out, in, cs);

    /* a finished stream followed by another cluster's bytes: the stream ends, EXACT */
    n = raw_deflate(in, cs, c, sizeof(c), true);
    memset(c + n, 0xff, 64);
    assert_int_equal(qcow2_decompress(ZLIB, out, cs, c, n + 64), QCOW2_INFLATE_EXACT);
    assert_int_equal(qcow2_decompress(ZLIB, out, 0, c, n), -EINVAL);
    assert_int_equal(qcow2_decompress(9, out, cs, c, n), -EINVAL);
}

static void test_zstd_hostile(void **state)
{
    (void)state;
    const size_t cs = 4096;
    uint8_t in[2 * 4096], c[3 * 4096], out[4096];
    fill_text(in, sizeof(in));

    /* several frames: qemu reads on across frames until the cluster is full */
    size_t a = zstd_frame(in, 1000, c, sizeof(c));
    size_t b = zstd_frame(in + 1000, 2000, c + a, sizeof(c) - a);
    size_t d = zstd_frame(in + 3000, cs - 3000, c + a + b, sizeof(c) - a - b);
    int r = qcow2_decompress(ZSTD, out, cs, c, a + b + d);
    assert_int_equal(r, QCOW2_INFLATE_EXACT);
    assert_memory_equal(out, in, cs);
    /* ... with the next cluster's frame behind it in the same sector */
    size_t e = zstd_frame(in, 100, c + a + b + d, sizeof(c) - a - b - d);
    assert_int_equal(qcow2_decompress(ZSTD, out, cs, c, a + b + d + e), QCOW2_INFLATE_EXACT);
    /* frames that end before the cluster is full */
    assert_int_equal(qcow2_decompress(ZSTD, out, cs, c, a + b), QCOW2_INFLATE_BAD);
    /* truncated inside the last frame */
    assert_int_equal(qcow2_decompress(ZSTD, out, cs, c, a + b + d - 3), QCOW2_INFLATE_BAD);
    /* empty */
    assert_int_equal(qcow2_decompress(ZSTD, out, cs, c, 0), QCOW2_INFLATE_BAD);
    /* one frame holding two clusters: unfinished when the cluster is full, qemu refuses */
    size_t n = zstd_frame(in, 2 * cs, c, sizeof(c));
    r = qcow2_decompress(ZSTD, out, cs, c, n);
    assert_int_equal(r, QCOW2_INFLATE_BAD);
    assert_false(qcow2_inflate_qemu_ok(r));
    /* garbage: no zstd magic */
    memset(c, 0xff, 512);
    assert_int_equal(qcow2_decompress(ZSTD, out, cs, c, 512), QCOW2_INFLATE_BAD);
    /* a damaged byte inside a frame's compressed block */
    n = zstd_frame(in, cs, c, sizeof(c));
    c[n / 2] ^= 0x5a;
    c[n / 2 + 1] ^= 0xa5;
    r = qcow2_decompress(ZSTD, out, cs, c, n);
    assert_true(r == QCOW2_INFLATE_BAD || (r == QCOW2_INFLATE_EXACT && memcmp(out, in, cs)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_does_not_fit),
        cmocka_unit_test(test_zlib_hostile),
        cmocka_unit_test(test_zstd_hostile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
