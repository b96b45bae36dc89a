/* The data of a compare is read from the page cache, so copying it out of the kernel is
 * the cost; pieces small enough that read and memcmp stay in the CPU cache make the memcmp
 * nearly free. Reads go straight to the files block status named, skipping the block
 * layer's per-read lookups. (A second thread for half of each step was tried: with the
 * cores busy it cost more CPU than it saved.) */
#include "cmd/compare_fast.h"

#include <stdlib.h>
#include <string.h>

#include "util/hugebuf.h"
#include "util/xalloc.h"

#define PIECE (256u << 10)

struct fastcmp {
    uint8_t *buf_a, *buf_b;
};

static bool is_zero(const uint8_t *p, size_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

fastcmp_t *fastcmp_new(void)
{
    fastcmp_t *f = xmalloc(sizeof(*f));
    f->buf_a = hugebuf_alloc(2 * PIECE); /* both pieces in one huge page: one fault */
    f->buf_b = f->buf_a + PIECE;
    return f;
}

void fastcmp_free(fastcmp_t *f)
{
    if (!f)
        return;
    hugebuf_free(f->buf_a, 2 * PIECE);
    free(f);
}

bool fastcmp_equal(fastcmp_t *f, qio_t *a, uint64_t ma, qio_t *b, uint64_t mb, size_t n)
{
    for (size_t done = 0; done < n; done += PIECE) {
        size_t k = n - done < PIECE ? n - done : PIECE;
        if (qio_pread(a, f->buf_a, k, ma + done) < 0)
            return false;
        if (b) {
            if (qio_pread(b, f->buf_b, k, mb + done) < 0 || memcmp(f->buf_a, f->buf_b, k))
                return false;
        } else if (!is_zero(f->buf_a, k)) {
            return false;
        }
    }
    return true;
}
