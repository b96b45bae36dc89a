/* The copy pipeline of qimg convert. qemu runs 8 coroutines that claim chunks in order,
 * read them concurrently and (by default) write them strictly in order. qimg keeps that
 * order with threads: the reader cuts and reads chunks into a ring of slots, compression
 * workers fill in compressed clusters out of order, and the calling thread writes slot
 * after slot. Only the reader touches the sources and only the writer the target, so
 * neither needs locking; the ring bounds memory (like qemu's 8 buffers). */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "block/compress_write.h"
#include "cmd/convert_pipe.h"
#include "format/qcow2_codec.h"
#include "util/err.h"
#include "util/hugebuf.h"
#include "util/progress.h"
#include "util/xalloc.h"

#define SECTOR CONVERT_SECTOR

enum slot_state { SLOT_FREE, SLOT_COMPRESS, SLOT_COMPRESSING, SLOT_READY };

struct slot {
    enum slot_state state;
    int64_t sector, n;
    enum convert_status status;
    int err;                   /* read error (-errno), reported by the writer in order */
    uint8_t *buf;              /* buf_sectors * 512 */
    const uint8_t *data;       /* the chunk's bytes: buf, or inside map */
    void *map;                 /* a mapping of the source file holding them, or NULL */
    size_t map_len;
    uint8_t *cbuf;             /* compressed output (compressed targets) */
    struct convert_cchunk cc;
};

struct pipe {
    struct convert *s;
    struct slot *slots;
    size_t nslots;
    size_t buf_bytes;
    pthread_mutex_t mu;
    pthread_cond_t free_cv;    /* a slot became free, or stop: the reader waits on it */
    pthread_cond_t work_cv;    /* a slot waits for compression, the reader ended, or stop */
    pthread_cond_t ready_cv;   /* a slot became ready, or the reader ended: the writer */
    bool stop;                 /* the writer failed: everyone ends */
    bool reader_done;
    int reader_err;            /* block status error: already reported */
    int64_t end_sector;        /* sectors planned so far by the reader */
    /* compression */
    bool compress;
    unsigned ctype;
    size_t csize;
    size_t next_compress;      /* ring index the workers look at first */
};

/* A chunk that is plain data of one raw-like source run (the bytes are the file's bytes at
 * st.map: no backing layer, no compression, no zeros from metadata) is mapped from the page
 * cache instead of copied into a buffer: the target write then copies it once, not twice.
 * Only with the default reader (a salvage reader sees every read). */
static bool map_chunk(struct convert *s, struct slot *sl, int64_t sector, int64_t n)
{
    /* small chunks (compressed clusters) read cheaper than a mapping costs to set up */
    if (s->read != convert_default_read || s->salvage || s->compressed ||
        n * SECTOR < (256 << 10))
        return false;
    int cur = 0;
    int64_t cur_off = 0;
    while (sector - cur_off >= s->src[cur].sectors)
        cur_off += s->src[cur++].sectors;
    if (sector + n - cur_off > s->src[cur].sectors)
        return false; /* spans two sources */
    uint64_t off = (uint64_t)(sector - cur_off) * SECTOR, len = (uint64_t)n * SECTOR;
    image_t *img = s->src[cur].img;
    if (off + len > img->size || img->top_bd)
        return false; /* a blkdebug filter's rules must see the read */
    block_status_t st;
    if (s->status_fn(s, cur, off, len, &st) < 0 || st.pnum < len || !st.file ||
        (st.flags & (BS_DATA | BS_ZERO | BS_OFFSET_VALID)) != (BS_DATA | BS_OFFSET_VALID) ||
        st.file->fd < 0 || st.file->mem || st.file->ops->event)
        return false; /* (a blkdebug file: its rules must see the read) */
    uint64_t fsize;
    if (qio_size(st.file, &fsize) < 0 || st.map + len > fsize)
        return false;
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    uint64_t delta = st.map & (page - 1);
    void *m = mmap(NULL, len + delta, PROT_READ, MAP_SHARED | MAP_POPULATE, st.file->fd,
                   (off_t)(st.map - delta));
    if (m == MAP_FAILED)
        return false;
    sl->map = m;
    sl->map_len = len + delta;
    sl->data = (const uint8_t *)m + delta;
    return true;
}

static void unmap_chunk(struct slot *sl)
{
    if (sl->map)
        munmap(sl->map, sl->map_len);
    sl->map = NULL;
    sl->data = sl->buf;
}

static void *reader_main(void *arg)
{
    struct pipe *p = arg;
    struct convert *s = p->s;
    int64_t sector = 0;
    size_t i = 0;
    while (sector < s->total_sectors) {
        struct slot *sl = &p->slots[i];
        pthread_mutex_lock(&p->mu);
        while (sl->state != SLOT_FREE && !p->stop)
            pthread_cond_wait(&p->free_cv, &p->mu);
        bool stop = p->stop;
        pthread_mutex_unlock(&p->mu);
        if (stop)
            break;
        /* the writer left the slot's previous mapping: unmapping (page tables, TLB) is
         * the reader's work, off the writer's path */
        unmap_chunk(sl);
        int n = convert_iteration_sectors(s, sector);
        if (n < 0) {
            pthread_mutex_lock(&p->mu);
            p->reader_err = n;
            pthread_mutex_unlock(&p->mu);
            break;
        }
        enum convert_status status = s->status;
        if (!s->min_sparse && status == CONVERT_ZERO && n > s->buf_sectors)
            n = (int)s->buf_sectors;
        sl->sector = sector;
        sl->n = n;
        sl->status = status;
        sl->err = 0;
        sl->data = sl->buf;
        if (status == CONVERT_DATA) {
            if (!map_chunk(s, sl, sector, n))
                sl->err = convert_read(s, sector, n, sl->buf);
        } else if (!s->min_sparse && status == CONVERT_ZERO) {
            memset(sl->buf, 0, (size_t)n * SECTOR);
        }
        sector += n;
        pthread_mutex_lock(&p->mu);
        sl->state = (p->compress && status == CONVERT_DATA && !sl->err) ? SLOT_COMPRESS
                                                                         : SLOT_READY;
        p->end_sector = sector;
        pthread_cond_signal(sl->state == SLOT_READY ? &p->ready_cv : &p->work_cv);
        if (sl->state == SLOT_COMPRESS)
            pthread_cond_signal(&p->ready_cv); /* the writer may compress it itself */
        pthread_mutex_unlock(&p->mu);
        if (sl->err)
            break; /* qemu stops claiming chunks after a failed read */
        i = (i + 1) % p->nslots;
    }
    pthread_mutex_lock(&p->mu);
    p->reader_done = true;
    pthread_cond_broadcast(&p->work_cv);
    pthread_cond_broadcast(&p->ready_cv);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Compresses one slot claimed in state SLOT_COMPRESS; called and returns with p->mu held. */
static void compress_slot(struct pipe *p, struct slot *sl, struct qcow2_compressor *cz,
                          uint8_t *in, uint8_t *out)
{
    sl->state = SLOT_COMPRESSING;
    pthread_mutex_unlock(&p->mu);
    size_t len = (size_t)sl->n * SECTOR;
    sl->cc.zero = convert_buffer_is_zero(sl->data, len);
    sl->cc.cbuf = NULL;
    sl->cc.clen = 0;
    if (!sl->cc.zero) {
        /* a short last cluster is compressed zero-padded, as qemu pads it */
        size_t k = len < p->csize ? len : p->csize;
        memcpy(in, sl->data, k);
        memset(in + k, 0, p->csize - k);
        sl->cc.clen = qcow2_compress_with(cz, p->ctype, out, in, p->csize);
        /* the slot keeps only the compressed bytes until the write (memory stays below
         * qemu-img's with a deep ring) */
        if (sl->cc.clen > 0) {
            sl->cbuf = xmalloc((size_t)sl->cc.clen);
            memcpy(sl->cbuf, out, (size_t)sl->cc.clen);
            sl->cc.cbuf = sl->cbuf;
        }
    }
    pthread_mutex_lock(&p->mu);
    sl->state = SLOT_READY;
    pthread_cond_signal(&p->ready_cv);
}

/* Compression worker: any slot waiting for compression, nearest to the writer first. */
static void *compress_main(void *arg)
{
    struct pipe *p = arg;
    uint8_t *in = xmalloc(p->csize), *out = xmalloc(p->csize);
    struct qcow2_compressor *cz = qcow2_compressor_new();
    pthread_mutex_lock(&p->mu);
    for (;;) {
        struct slot *sl = NULL;
        for (size_t k = 0; k < p->nslots; k++) {
            struct slot *c = &p->slots[(p->next_compress + k) % p->nslots];
            if (c->state == SLOT_COMPRESS) {
                sl = c;
                break;
            }
        }
        if (!sl) {
            if (p->stop || p->reader_done)
                break;
            pthread_cond_wait(&p->work_cv, &p->mu);
            continue;
        }
        compress_slot(p, sl, cz, in, out);
    }
    pthread_mutex_unlock(&p->mu);
    qcow2_compressor_free(cz);
    free(in);
    free(out);
    return NULL;
}

int convert_pipe_write_compressed(struct convert *s, uint64_t off, const uint8_t *buf,
                                  size_t len, const struct convert_cchunk *cc)
{
    return image_write_precompressed(s->target, off, buf, len, cc->cbuf, cc->clen);
}

/* Binds thread t to the n-th CPU (modulo their count) this process may run on; left
 * alone when that cannot be found or set. */
static void pin_to_nth_allowed_cpu(pthread_t t, int n)
{
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof(allowed), &allowed) < 0 || CPU_COUNT(&allowed) < 2)
        return;
    int want = n % CPU_COUNT(&allowed);
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (!CPU_ISSET(c, &allowed) || want-- > 0)
            continue;
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(c, &one);
        (void)pthread_setaffinity_np(t, sizeof(one), &one);
        return;
    }
}

static int ncpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 64 ? 64 : (int)n;
}

int convert_pipe_run(struct convert *s)
{
    struct pipe p = { .s = s };
    p.buf_bytes = (size_t)s->buf_sectors * SECTOR;
    if (s->compressed && image_compress_params(s->target, &p.ctype, &p.csize) == 0 &&
        p.csize == (size_t)s->cluster_sectors * SECTOR)
        p.compress = true;
    /* the ring: qemu's 8 buffers of 2 MiB; small compressed clusters get more slots so
     * every core has work */
    p.nslots = p.compress ? (size_t)(4u << 20) / p.buf_bytes : 4;
    if (p.nslots < 4)
        p.nslots = 4;
    if (p.nslots > 64)
        p.nslots = 64;
    p.slots = xcalloc(p.nslots, sizeof(*p.slots));
    for (size_t i = 0; i < p.nslots; i++) {
        p.slots[i].buf = bigbuf_alloc(p.buf_bytes);
    }
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.free_cv, NULL);
    pthread_cond_init(&p.work_cv, NULL);
    pthread_cond_init(&p.ready_cv, NULL);

    pthread_t reader, workers[64];
    /* one worker per core; the writer compresses too rather than wait (on a busy machine
     * this keeps a thread per core runnable even while the writer writes) */
    int nworkers = p.compress ? ncpus() : 0;
    pthread_create(&reader, NULL, reader_main, &p);
    for (int w = 0; w < nworkers; w++) {
        pthread_create(&workers[w], NULL, compress_main, &p);
        /* workers spread over the cores and kept there: woken by the reader, they are
         * otherwise pulled onto its core (the scheduler's wake-affine rule) and share one
         * core's time on a busy machine while another core's share goes unused */
        if (nworkers > 1 && !getenv("QIMG_CONVERT_NOPIN"))
            pin_to_nth_allowed_cpu(workers[w], w);
    }

    int ret = 0;
    int64_t sector = 0;
    size_t i = 0;
    struct qcow2_compressor *wcz = p.compress ? qcow2_compressor_new() : NULL;
    uint8_t *win = p.compress ? xmalloc(p.csize) : NULL;
    uint8_t *wout = p.compress ? xmalloc(p.csize) : NULL;
    while (sector < s->total_sectors) {
        struct slot *sl = &p.slots[i];
        pthread_mutex_lock(&p.mu);
        while (sl->state != SLOT_READY && !(p.reader_done && p.end_sector <= sector)) {
            /* rather than sleep, compress: the cluster to write next if it still waits
             * for a worker, else any that does */
            struct slot *c = sl->state == SLOT_COMPRESS ? sl : NULL;
            for (size_t k = 1; !c && p.compress && k < p.nslots; k++) {
                struct slot *o = &p.slots[(i + k) % p.nslots];
                if (o->state == SLOT_COMPRESS)
                    c = o;
            }
            if (c) {
                compress_slot(&p, c, wcz, win, wout);
                continue;
            }
            pthread_cond_wait(&p.ready_cv, &p.mu);
        }
        bool have = sl->state == SLOT_READY;
        int rerr = p.reader_err;
        pthread_mutex_unlock(&p.mu);
        if (!have) {
            ret = rerr ? rerr : -EIO;
            break;
        }
        enum convert_status status = sl->status;
        if (status == CONVERT_DATA || (!s->min_sparse && status == CONVERT_ZERO)) {
            s->allocated_done += sl->n;
            progress_print((float)(100.0 * (double)s->allocated_done /
                                   (double)s->allocated_sectors), 0);
        }
        if (sl->err) {
            err_report("error while reading at byte %lld: %s",
                       (long long)sl->sector * SECTOR, strerror(-sl->err));
            ret = sl->err;
            break;
        }
        if (!s->min_sparse && status == CONVERT_ZERO)
            status = CONVERT_DATA;
        int r = convert_write(s, sl->sector, sl->n, sl->data, status,
                              p.compress && sl->status == CONVERT_DATA ? &sl->cc : NULL);
        if (r < 0) {
            err_report("error while writing at byte %lld: %s",
                       (long long)sl->sector * SECTOR, strerror(-r));
            ret = r;
            break;
        }
        sector = sl->sector + sl->n;
        free(sl->cbuf);
        sl->cbuf = NULL;
        pthread_mutex_lock(&p.mu);
        sl->state = SLOT_FREE;
        p.next_compress = (i + 1) % p.nslots;
        pthread_cond_signal(&p.free_cv);
        pthread_mutex_unlock(&p.mu);
        i = (i + 1) % p.nslots;
    }

    pthread_mutex_lock(&p.mu);
    p.stop = true;
    pthread_cond_broadcast(&p.free_cv);
    pthread_cond_broadcast(&p.work_cv);
    pthread_mutex_unlock(&p.mu);
    pthread_join(reader, NULL);
    for (int w = 0; w < nworkers; w++)
        pthread_join(workers[w], NULL);
    qcow2_compressor_free(wcz);
    free(win);
    free(wout);
    for (size_t k = 0; k < p.nslots; k++) {
        unmap_chunk(&p.slots[k]);
        bigbuf_free(p.slots[k].buf, p.buf_bytes);
        free(p.slots[k].cbuf);
    }
    free(p.slots);
    pthread_mutex_destroy(&p.mu);
    pthread_cond_destroy(&p.free_cv);
    pthread_cond_destroy(&p.work_cv);
    pthread_cond_destroy(&p.ready_cv);
    return ret;
}
