#include "checker/qcow2_l2read.h"

#include <stdlib.h>
#include <string.h>

#include "checker/qcow2_check.h"
#include "util/hugebuf.h"
#include "util/xalloc.h"

void l2_reader_init(struct l2_reader *r, uint64_t cs, uint64_t file_size)
{
    memset(r, 0, sizeof(*r));
    uint64_t cap = file_size < L2_BATCH_BYTES ? file_size : L2_BATCH_BYTES;
    cap = cap < cs ? cs : (cap + cs - 1) / cs * cs;
    r->cap = cap;
    r->buf = bigbuf_alloc((size_t)cap);   /* 2 MiB: 1 huge-page fault instead of 512 */
}

void l2_reader_free(struct l2_reader *r)
{
    l2_reader_end_walk(r);
    bigbuf_free(r->buf, (size_t)r->cap);
    r->buf = NULL;
    if (r->ring)
        bigbuf_free(r->ring, (size_t)r->ring_bytes);
    r->ring = NULL;
    free(r->slots);
    r->slots = NULL;
}

/* One reader: the batch starting at the table of l1[i] (tables that follow it on disk,
 * for the L1 entries that follow, up to cap bytes); returns its length. */
static uint64_t batch_len(const uint64_t *l1, uint64_t l1_n, uint64_t i, uint64_t off,
                          uint64_t cs, uint64_t cap, uint64_t *end)
{
    uint64_t len = cs, j = i + 1;
    if (!(off & (cs - 1))) {
        for (uint64_t prev = off; j < l1_n && len + cs <= cap; j++) {
            uint64_t o = l1[j] & QCOW2_L1E_OFFSET_MASK;
            if (o != prev + cs)
                break;
            len += cs;
            prev = o;
        }
    }
    *end = j;
    return len;
}

static int get_serial(struct qc2 *s, struct l2_reader *r, const uint64_t *l1, uint64_t l1_n,
                      uint64_t i, uint64_t off, const uint8_t **out)
{
    uint64_t cs = s->cs, end;
    if (r->len && off >= r->off && off - r->off <= r->len - cs && !((off - r->off) & (cs - 1))) {
        *out = r->buf + (off - r->off);
        return 0;
    }
    uint64_t len = batch_len(l1, l1_n, i, off, cs, r->cap, &end);
    int rc = qc2_read(s, r->buf, len, off);
    if (rc < 0) {
        r->len = 0;
        return rc;
    }
    r->off = off;
    r->len = len;
    *out = r->buf;
    return 0;
}

/* ---- two readers ------------------------------------------------------------------ */

enum claim { CLAIMED, RING_FULL, NONE_LEFT };

/* Under mu: cut the next batch from the cursor into the slot of the next sequence number. */
static enum claim claim(struct l2_reader *r, struct l2_slot **out)
{
    uint64_t c = r->cursor;
    while (c < r->l1_n && !r->l1[c])
        c++;
    r->cursor = c;
    if (r->stop || c >= r->l1_n)
        return NONE_LEFT;
    if (r->next_seq >= r->cur + r->nslots)
        return RING_FULL;
    struct l2_slot *sl = &r->slots[r->next_seq % r->nslots];
    sl->seq = r->next_seq++;
    sl->first = c;
    sl->off = r->l1[c] & QCOW2_L1E_OFFSET_MASK;
    sl->len = batch_len(r->l1, r->l1_n, c, sl->off, r->s->cs, r->slot_bytes, &sl->end);
    sl->ready = false;
    r->cursor = sl->end;
    *out = sl;
    return CLAIMED;
}

/* Called with mu held; drops it for the read itself. */
static void read_slot(struct l2_reader *r, struct l2_slot *sl)
{
    uint8_t *dst = r->ring + (sl->seq % r->nslots) * r->slot_bytes;
    uint64_t off = sl->off, len = sl->len;
    pthread_mutex_unlock(&r->mu);
    int rc = qc2_read(r->s, dst, len, off);
    pthread_mutex_lock(&r->mu);
    sl->rc = rc;
    sl->ready = true;
    if (r->main_waiting)
        pthread_cond_signal(&r->ready_cv);
}

static void *helper_main(void *arg)
{
    struct l2_reader *r = arg;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        struct l2_slot *sl;
        enum claim c = claim(r, &sl);
        if (c == NONE_LEFT)
            break;
        if (c == RING_FULL) {
            r->helper_waiting = true;
            pthread_cond_wait(&r->space_cv, &r->mu);
            r->helper_waiting = false;
            continue;
        }
        read_slot(r, sl);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

void l2_reader_begin_walk(struct qc2 *s, struct l2_reader *r, const uint64_t *l1,
                          uint64_t l1_n, bool parallel)
{
    l2_reader_end_walk(r);
    r->len = 0;
    const char *env = getenv("QIMG_CHECK_THREADS");
    if (!parallel || (env && !strcmp(env, "1")))
        return;
    uint64_t bytes = 0;
    for (uint64_t i = 0; i < l1_n && bytes < L2_PAR_MIN_BYTES; i++)
        if (l1[i])
            bytes += s->cs;
    if (bytes < L2_PAR_MIN_BYTES)
        return;
    if (!r->ring) {
        r->slot_bytes = s->cs > L2_SLOT_BYTES ? s->cs : L2_SLOT_BYTES;
        r->nslots = (unsigned)(L2_BATCH_BYTES / r->slot_bytes);
        if (r->nslots < 4)
            r->nslots = 4;    /* one being checked, one read by each thread, one spare */
        r->ring_bytes = r->slot_bytes * r->nslots;
        r->ring = bigbuf_alloc((size_t)r->ring_bytes);
        r->slots = xcalloc(r->nslots, sizeof(*r->slots));
    }
    r->s = s;
    r->l1 = l1;
    r->l1_n = l1_n;
    r->cursor = r->next_seq = r->cur = 0;
    r->stop = r->main_waiting = r->helper_waiting = false;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->ready_cv, NULL);
    pthread_cond_init(&r->space_cv, NULL);
    if (pthread_create(&r->helper, NULL, helper_main, r) != 0) {
        pthread_cond_destroy(&r->space_cv);
        pthread_cond_destroy(&r->ready_cv);
        pthread_mutex_destroy(&r->mu);
        return;       /* no thread: one reader, as below the threshold */
    }
    r->par = true;
}

void l2_reader_end_walk(struct l2_reader *r)
{
    if (!r->par)
        return;
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_broadcast(&r->space_cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->helper, NULL);
    pthread_cond_destroy(&r->space_cv);
    pthread_cond_destroy(&r->ready_cv);
    pthread_mutex_destroy(&r->mu);
    r->par = false;
}

/* The walking thread: the slot holding l1[i]'s table, taking slots in order. false if i
 * is in no batch (a caller outside the documented order): the serial path serves it. */
static bool get_par(struct l2_reader *r, uint64_t i, uint64_t off, const uint8_t **out,
                    int *rc)
{
    bool found = false;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        struct l2_slot *sl = &r->slots[r->cur % r->nslots], *other;
        if (r->cur < r->next_seq && sl->ready) {
            if (i >= sl->end) {          /* done with this batch: free its slot */
                r->cur++;
                if (r->helper_waiting)
                    pthread_cond_signal(&r->space_cv);
                continue;
            }
            uint64_t k = i - sl->first;
            if (i >= sl->first && sl->off + k * r->s->cs == off) {
                *rc = sl->rc;
                *out = r->ring + (sl->seq % r->nslots) * r->slot_bytes + k * r->s->cs;
                found = true;
            }
            break;
        }
        enum claim c = claim(r, &other);
        if (c == CLAIMED) {
            read_slot(r, other);         /* a later batch, or this one if unclaimed */
            continue;
        }
        if (r->cur >= r->next_seq)
            break;                       /* nothing claimed and nothing left */
        r->main_waiting = true;          /* the helper is reading this batch */
        pthread_cond_wait(&r->ready_cv, &r->mu);
        r->main_waiting = false;
    }
    pthread_mutex_unlock(&r->mu);
    return found;
}

int l2_reader_get(struct qc2 *s, struct l2_reader *r, const uint64_t *l1, uint64_t l1_n,
                  uint64_t i, uint64_t off, const uint8_t **out)
{
    int rc = 0;
    if (r->par && l1 == r->l1 && get_par(r, i, off, out, &rc))
        return rc;
    return get_serial(s, r, l1, l1_n, i, off, out);
}
