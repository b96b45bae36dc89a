/* The read path on an in-memory image: open (probe, format decoders), block status over
 * the whole guest range, and a read of every run (the whole range when the image is small,
 * the head of each run otherwise). Cross-checks: runs are non-empty and stay inside the
 * request, a ZERO-only run reads as zeros, a DATA run with a host offset in the image file
 * reads the bytes stored there. */
#include <stdlib.h>
#include <string.h>

#include "block/image.h"
#include "block/open_mem.h"
#include "fuzz/fuzz_common.h"
#include "io/qio.h"

#define CHUNK 65536u

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_enter_scratch_dir();
    return 0;
}

static uint8_t buf[CHUNK], host[CHUNK];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (4u << 20))
        return 0;
    image_t *img;
    char *msg = NULL;
    qio_t *q = qio_open_mem(data, size, false, size);
    /* fuzz.qcow2 -> a relative data file "df.raw" opens the scratch dir's file */
    if (image_open_qio(q, "fuzz.qcow2", NULL, IMG_OPEN_SHARE, &img, &msg) < 0) {
        FUZZ_ASSERT(msg != NULL);
        free(msg);
        return 0;
    }
    uint64_t vsize = img->size;
    uint64_t off = 0;
    /* bounded work per input: at most 2048 status calls and 16 MiB of reads */
    uint64_t read_budget = 16u << 20;
    for (int iter = 0; off < vsize && iter < 2048; iter++) {
        block_status_t st;
        memset(&st, 0, sizeof(st));
        int r = image_block_status(img, off, vsize - off, &st);
        if (r < 0)
            break;
        FUZZ_ASSERT(st.pnum > 0 && st.pnum <= vsize - off);
        FUZZ_ASSERT(!(st.flags & BS_RAW));
        if ((st.flags & BS_EOF))
            FUZZ_ASSERT(off + st.pnum == vsize);
        uint64_t want = st.pnum < CHUNK ? st.pnum : CHUNK;
        if (want > read_budget)
            want = read_budget;
        read_budget -= want;
        if (want && image_read(img, off, buf, (size_t)want) == 0) {
            if ((st.flags & BS_ZERO) && !(st.flags & BS_DATA))
                for (uint64_t i = 0; i < want; i++)
                    FUZZ_ASSERT(buf[i] == 0);
            if ((st.flags & BS_DATA) && (st.flags & BS_OFFSET_VALID) && st.file == img->file &&
                !(st.flags & BS_ZERO) && strcmp(img->format, "raw") != 0) {
                FUZZ_ASSERT(qio_pread(img->file, host, (size_t)want, st.map) == 0);
                FUZZ_ASSERT(memcmp(buf, host, (size_t)want) == 0);
            }
        }
        off += st.pnum;
    }
    /* a few unaligned reads across the range, including past the end */
    uint64_t probes[4] = { 0, vsize / 3 + 7, vsize ? vsize - 1 : 0, vsize + 512 };
    for (int i = 0; i < 4; i++)
        image_read(img, probes[i], buf, 4097);
    image_close(img);
    return 0;
}
