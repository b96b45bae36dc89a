#include "journal/undo_model.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/xalloc.h"

#define CHUNK (1u << 20)   /* image bytes compared per read */

static int cmp_start(const void *a, const void *b)
{
    const struct undo_run *x = a, *y = b;
    return x->a < y->a ? -1 : x->a > y->a;
}

/* Merge the write ranges into sorted runs and place them in the byte arrays. */
static void make_runs(struct undo_model *m)
{
    size_t k = 0;
    m->runs = xcalloc(m->n ? m->n : 1, sizeof(*m->runs));
    for (size_t i = 0; i < m->n; i++)
        if (m->rows[i].write) {
            m->runs[k].a = m->rows[i].off;
            m->runs[k].b = m->rows[i].off + m->rows[i].len;
            k++;
        }
    qsort(m->runs, k, sizeof(*m->runs), cmp_start);
    size_t out = 0;
    for (size_t i = 0; i < k; i++) {
        if (out && m->runs[i].a <= m->runs[out - 1].b) {
            if (m->runs[i].b > m->runs[out - 1].b)
                m->runs[out - 1].b = m->runs[i].b;
        } else {
            m->runs[out++] = m->runs[i];
        }
    }
    m->nruns = out;
    m->bytes = 0;
    for (size_t i = 0; i < out; i++) {
        m->runs[i].pos = m->bytes;
        m->bytes += m->runs[i].b - m->runs[i].a;
    }
}

/* Position of a write row's first byte in the arrays (a row lies inside one run). */
static uint64_t pos_of(const struct undo_model *m, uint64_t off)
{
    size_t lo = 0, hi = m->nruns;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->runs[mid].a <= off)
            lo = mid;
        else
            hi = mid;
    }
    return m->runs[lo].pos + (off - m->runs[lo].a);
}

int undo_model_build(struct undo_model *m, const struct undo_row *rows, size_t n,
                     uint64_t pre_size, uint64_t failed_seq, char *why, size_t whylen)
{
    memset(m, 0, sizeof(*m));
    m->rows = rows;
    m->n = n;
    m->pre_size = pre_size;
    uint64_t size = pre_size;
    for (size_t i = 0; i < n; i++) {
        const struct undo_row *r = &rows[i];
        uint64_t want = r->write && r->off + r->len > r->old_size ? r->off + r->len : r->old_size;
        /* after a write that failed part-way the file may have grown only part-way */
        bool after_failed = i && i == failed_seq && r->old_size >= rows[i - 1].old_size &&
                            r->old_size <= size;
        if (i == 0 && r->old_size != size) {
            snprintf(why, whylen, "pre_size %" PRIu64 " is not the size %" PRIu64 " the first "
                     "write found", pre_size, r->old_size);
            return -EINVAL;
        }
        if (r->old_size != size && !after_failed) {
            snprintf(why, whylen, "write %zu: old_size %" PRIu64 " is not the size %" PRIu64
                     " the file had before it", i + 1, r->old_size, size);
            return -EINVAL;
        }
        if (r->write ? r->new_size != want : r->new_size < r->old_size) {
            snprintf(why, whylen, "write %zu: new_size %" PRIu64 " does not follow from its "
                     "old_size %" PRIu64 " and range", i + 1, r->new_size, r->old_size);
            return -EINVAL;
        }
        size = r->new_size;
    }
    make_runs(m);
    m->orig = xmalloc(m->bytes ? m->bytes : 1);
    uint8_t *cur = xmalloc(m->bytes ? m->bytes : 1);
    uint8_t *seen = xcalloc(1, m->bytes ? m->bytes : 1);   /* 1 written, 2 by failed_seq */
    const struct undo_row *fr = failed_seq ? &rows[failed_seq - 1] : NULL;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct undo_row *r = &rows[i];
        if (!r->write)
            continue;
        uint64_t p = pos_of(m, r->off);
        for (uint64_t b = 0; b < r->len; b++) {
            uint64_t x = p + b, off = r->off + b;
            uint8_t o = r->old[b];
            if (!seen[x]) {
                if (off >= pre_size && o) {
                    snprintf(why, whylen, "write %zu: old byte at 0x%" PRIx64 " is not zero, "
                             "but lies past the pre-repair size %" PRIu64, i + 1, off, pre_size);
                    rc = -EINVAL;
                    break;
                }
                m->orig[x] = o;
            } else if (o != cur[x] &&
                       !(seen[x] == 2 && o == fr->old[off - fr->off])) {
                snprintf(why, whylen, "write %zu: old byte at 0x%" PRIx64 " is not the byte "
                         "the writes before it left there", i + 1, off);
                rc = -EINVAL;
                break;
            }
            cur[x] = r->new_[b];
            seen[x] = i + 1 == failed_seq ? 2 : 1;
        }
    }
    free(cur);
    free(seen);
    if (rc < 0)
        undo_model_free(m);
    return rc;
}

void undo_model_free(struct undo_model *m)
{
    free(m->runs);
    free(m->orig);
    memset(m, 0, sizeof(*m));
}

/* S_k on the covered bytes. */
static uint8_t *state(const struct undo_model *m, uint64_t k)
{
    uint8_t *s = xmalloc(m->bytes ? m->bytes : 1);
    memcpy(s, m->orig, m->bytes);
    for (size_t i = 0; i < k && i < m->n; i++)
        if (m->rows[i].write)
            memcpy(s + pos_of(m, m->rows[i].off), m->rows[i].new_, m->rows[i].len);
    return s;
}

int undo_model_holds(const struct undo_model *m, uint64_t k, const uint64_t *u, size_t nu,
                     undo_read_fn rd, void *opaque, uint64_t *where)
{
    uint8_t *want = state(m, k);
    uint8_t *buf = xmalloc(CHUNK);
    int rc = 0;
    for (size_t r = 0; r < m->nruns && rc == 0; r++) {
        for (uint64_t a = m->runs[r].a; a < m->runs[r].b && rc == 0; a += CHUNK) {
            size_t len = m->runs[r].b - a < CHUNK ? (size_t)(m->runs[r].b - a) : CHUNK;
            const uint8_t *w = want + m->runs[r].pos + (a - m->runs[r].a);
            if ((rc = rd(opaque, buf, len, a)) < 0)
                break;
            if (!memcmp(buf, w, len))
                continue;
            for (size_t b = 0; b < len && rc == 0; b++) {
                if (buf[b] == w[b])
                    continue;
                uint64_t off = a + b;
                bool ok = false;
                for (size_t j = 0; j < nu && !ok; j++) {
                    const struct undo_row *x = u[j] && u[j] <= k ? &m->rows[u[j] - 1] : NULL;
                    ok = x && x->write && off >= x->off && off - x->off < x->len &&
                         buf[b] == x->old[off - x->off];
                }
                if (!ok) {
                    *where = off;
                    rc = 1;
                }
            }
        }
    }
    free(buf);
    free(want);
    return rc;
}

int undo_model_original(const struct undo_model *m, uint8_t *buf, size_t len, undo_read_fn rd,
                        void *opaque)
{
    int rc = rd(opaque, buf, len, 0);
    if (rc < 0)
        return rc;
    for (size_t r = 0; r < m->nruns && m->runs[r].a < len; r++) {
        uint64_t end = m->runs[r].b < len ? m->runs[r].b : len;
        memcpy(buf + m->runs[r].a, m->orig + m->runs[r].pos, (size_t)(end - m->runs[r].a));
    }
    return 0;
}
