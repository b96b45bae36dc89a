/* The copy of qimg convert: qemu-img 7.2's convert_iteration_sectors, convert_co_read,
 * convert_co_write and convert_do_copy. qemu cuts the guest range into chunks (block status
 * runs, at most the buffer size, whole clusters when compressing) and, with writes in order
 * (its default), writes them one after another; the target's allocator therefore places
 * clusters by guest order. qimg cuts the same chunks and writes them in the same order, so
 * the target comes out byte for byte as qemu's. Reads and compression of later chunks run
 * ahead on worker threads (convert_pipe.c); the writes stay in order on this thread. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmd/convert.h"
#include "cmd/convert_pipe.h"
#include "util/err.h"
#include "util/progress.h"

#define SECTOR CONVERT_SECTOR
#define MIN(a, b) ((a) < (b) ? (a) : (b))
/* qemu's BDRV_REQUEST_MAX_SECTORS: MIN(SIZE_MAX, INT_MAX) / 512 rounded to 512 bytes */
#define REQUEST_MAX_SECTORS ((int64_t)(0x7fffffff & ~511) / SECTOR)

int convert_default_read(struct convert *s, int idx, uint64_t off, void *buf, size_t n)
{
    return image_read(s->src[idx].img, off, buf, n);
}

static int default_status(struct convert *s, int idx, uint64_t off, uint64_t bytes,
                          block_status_t *st)
{
    image_t *img = s->src[idx].img;
    /* with a target backing file only this layer's allocation counts (qemu's base =
     * bdrv_cow_bs(src)): unallocated ranges stay to the target's backing file */
    image_t *base = s->target_has_backing ? img->backing : NULL;
    return image_block_status_above(img, base, off, bytes, st);
}

void convert_init_io(struct convert *s)
{
    if (!s->read)
        s->read = convert_default_read;
    if (!s->status_fn)
        s->status_fn = default_status;
}

/* qemu's convert_select_part */
static void select_part(const struct convert *s, int64_t sector, int *cur, int64_t *cur_off)
{
    *cur = 0;
    *cur_off = 0;
    while (sector - *cur_off >= s->src[*cur].sectors) {
        *cur_off += s->src[*cur].sectors;
        (*cur)++;
    }
}

/* qemu's convert_iteration_sectors: the length of the next chunk from sector on, and its
 * status in s->status. -errno after the error was reported. */
int convert_iteration_sectors(struct convert *s, int64_t sector)
{
    int cur;
    int64_t cur_off;
    bool post_backing_zero = false;

    select_part(s, sector, &cur, &cur_off);
    int64_t n = MIN(s->total_sectors - sector, REQUEST_MAX_SECTORS);

    if (s->target_backing_sectors >= 0) {
        if (sector >= s->target_backing_sectors)
            post_backing_zero = true;
        else if (sector + n > s->target_backing_sectors)
            n = s->target_backing_sectors - sector; /* zeros differ from there on */
    }

    if (s->sector_next_status <= sector) {
        uint64_t off = (uint64_t)(sector - cur_off) * SECTOR;
        block_status_t st;
        uint64_t count;
        int r;
        for (;;) {
            count = (uint64_t)n * SECTOR;
            /* the source's size in qemu's sectors may pass its byte size: clamp */
            uint64_t size = s->src[cur].img->size;
            uint64_t end = (uint64_t)s->src[cur].sectors * SECTOR; /* size in sectors */
            uint64_t ask = off < size ? MIN(count, size - off) : 0;
            if (ask == 0) {
                st.flags = BS_ZERO;
                st.pnum = MIN(count, end - off);
                r = 0;
            } else {
                r = s->status_fn(s, cur, off, ask, &st);
                if (r == 0 && st.pnum == 0)
                    r = -EIO;
                if (r == 0 && off + st.pnum >= size) /* the last sector's tail: zeros */
                    st.pnum = MIN(count, end - off);
            }
            if (r >= 0) {
                count = st.pnum;
                break;
            }
            if (!s->salvage) {
                err_report("error while reading block status at offset %llu: %s",
                           (unsigned long long)off, strerror(-r));
                return r;
            }
            if (n == 1) {
                if (!s->quiet)
                    fprintf(stderr, "%s: warning: error while reading block status at offset "
                            "%llu: %s\n", qimg_progname, (unsigned long long)off,
                            strerror(-r));
                st.flags = BS_DATA; /* just try to read the data, then */
                count = SECTOR;
                break;
            }
            n = (n + 3) / 4; /* retry on a shorter range */
        }
        n = (int64_t)((count + SECTOR - 1) / SECTOR);
        /* keep the next status query aligned to the source's clusters */
        int64_t tail = (sector - cur_off + n) % s->src[cur].alignment;
        if (n > tail)
            n -= tail;
        if (st.flags & BS_ZERO)
            s->status = post_backing_zero ? CONVERT_BACKING : CONVERT_ZERO;
        else if (st.flags & BS_DATA)
            s->status = CONVERT_DATA;
        else
            s->status = s->target_has_backing ? CONVERT_BACKING : CONVERT_DATA;
        s->sector_next_status = sector + n;
    }

    n = MIN(n, s->sector_next_status - sector);
    if (s->status == CONVERT_DATA)
        n = MIN(n, s->buf_sectors);

    /* compressed images are written in whole clusters: a shorter unallocated piece makes
     * the whole cluster data */
    if (s->compressed) {
        if (n < s->cluster_sectors) {
            n = MIN(s->cluster_sectors, s->total_sectors - sector);
            s->status = CONVERT_DATA;
        } else {
            n -= n % s->cluster_sectors;
        }
    }
    return (int)n;
}

/* qemu's convert_co_read: nb sectors from sector on, across sources. With --salvage a
 * failed read is retried one sector at a time and what still fails reads as zeros. */
int convert_read(struct convert *s, int64_t sector, int64_t nb, uint8_t *buf)
{
    uint64_t single_until = 0;
    while (nb > 0) {
        int cur;
        int64_t cur_off;
        select_part(s, sector, &cur, &cur_off);
        uint64_t off = (uint64_t)(sector - cur_off) * SECTOR;
        int64_t n = MIN(nb, s->src[cur].sectors - (sector - cur_off));
        if (single_until > off)
            n = 1;
        uint64_t size = s->src[cur].img->size;
        uint64_t len = (uint64_t)n * SECTOR, in = off < size ? MIN(len, size - off) : 0;
        int r = in ? s->read(s, cur, off, buf, in) : 0;
        if (r >= 0 && in < len)
            memset(buf + in, 0, len - in);
        if (r < 0) {
            if (!s->salvage)
                return r;
            if (n > 1) {
                single_until = off + len;
                continue;
            }
            if (!s->quiet)
                fprintf(stderr, "%s: warning: error while reading offset %llu: %s\n",
                        qimg_progname, (unsigned long long)off, strerror(-r));
            memset(buf, 0, SECTOR);
        }
        sector += n;
        nb -= n;
        buf += n * SECTOR;
    }
    return 0;
}

/* Called for every sector the target gets (qemu's buffer_is_zero per sector): a data
 * sector almost always shows a non-zero byte in its first 16, so that test comes first,
 * inline; only then the whole sector, 64 bytes (eight words the compiler vectorizes) at a
 * time. */
static inline uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static inline bool sector_zero(const uint8_t *p)
{
    if (load64(p) | load64(p + 8))
        return false;
    for (size_t i = 0; i < SECTOR; i += 64) {
        uint64_t acc = 0;
        for (size_t k = 0; k < 64; k += 8)
            acc |= load64(p + i + k);
        if (acc)
            return false;
    }
    return true;
}

bool convert_buffer_is_zero(const uint8_t *p, size_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* qemu's is_allocated_sectors: is the first sector data, and how many sectors share its
 * state, the end pulled to alignment so the target sees no read-modify-write */
static bool allocated_sectors(const uint8_t *buf, int64_t n, int64_t *pnum, int64_t sector,
                              int alignment)
{
    if (n <= 0) {
        *pnum = 0;
        return false;
    }
    bool is_zero = sector_zero(buf);
    int64_t i;
    for (i = 1; i < n; i++)
        if (is_zero != sector_zero(buf + i * SECTOR))
            break;
    if (i == n) {
        *pnum = i;
        return !is_zero;
    }
    int64_t tail = (sector + i) & (alignment - 1);
    if (tail) {
        if (is_zero && i <= tail)
            is_zero = false; /* the data after it rewrites this anyway */
        if (!is_zero) {
            i += alignment - tail;
            i = MIN(i, n);
        } else {
            i -= tail;
        }
    }
    *pnum = i;
    return !is_zero;
}

/* qemu's is_allocated_sectors_min: data, with zero runs shorter than min kept inside it */
static bool allocated_sectors_min(const uint8_t *buf, int64_t n, int64_t *pnum, int64_t min,
                                  int64_t sector, int alignment)
{
    if (n < min)
        min = n;
    if (!allocated_sectors(buf, n, pnum, sector, alignment))
        return false;
    int64_t used = *pnum, checked = used;
    buf += *pnum * SECTOR;
    n -= *pnum;
    sector += *pnum;
    while (n > 0) {
        bool r = allocated_sectors(buf, n, pnum, sector, alignment);
        buf += *pnum * SECTOR;
        n -= *pnum;
        sector += *pnum;
        checked += *pnum;
        if (r)
            used = checked;
        else if (*pnum >= min)
            break;
    }
    *pnum = used;
    return true;
}

static void rate_wait(struct convert *s, uint64_t bytes)
{
    static struct timespec start;
    static uint64_t done;
    if (!s->rate_limit)
        return;
    if (done == 0)
        clock_gettime(CLOCK_MONOTONIC, &start);
    done += bytes;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double el = (double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9;
    double want = (double)done / (double)s->rate_limit;
    if (want > el) {
        double d = want - el;
        struct timespec ts = { (time_t)d, (long)((d - (double)(time_t)d) * 1e9) };
        nanosleep(&ts, NULL);
    }
}

/* qemu's convert_co_write for one chunk. cbuf/clen: the chunk already compressed by a
 * worker (compressed targets), else NULL. */
int convert_write(struct convert *s, int64_t sector, int64_t nb, const uint8_t *buf,
                  enum convert_status status, const struct convert_cchunk *cc)
{
    while (nb > 0) {
        int64_t n = nb;
        int r;
        uint64_t off = (uint64_t)sector * SECTOR;
        switch (status) {
        case CONVERT_BACKING:
            /* left unallocated: the target's backing file shows through */
            break;
        case CONVERT_DATA:
            if (!s->min_sparse ||
                (!s->compressed &&
                 allocated_sectors_min(buf, n, &n, s->min_sparse, sector, s->alignment)) ||
                (s->compressed && !(cc ? cc->zero : convert_buffer_is_zero(buf, n * SECTOR)))) {
                size_t len = (size_t)n * SECTOR;
                /* the target's last cluster may be shorter than the chunk */
                if (off + len > s->target->size && off < s->target->size && s->compressed)
                    len = (size_t)(s->target->size - off);
                /* a zero cluster written anyway (-S 0) was not compressed by a worker */
                if (s->compressed)
                    r = cc && !cc->zero ? convert_pipe_write_compressed(s, off, buf, len, cc)
                           : image_write_compressed(s->target, off, buf, len);
                else
                    r = image_write(s->target, off, buf, len);
                if (r < 0)
                    return r;
                rate_wait(s, len);
                break;
            }
            /* zeros */
            __attribute__((fallthrough));
        case CONVERT_ZERO:
            if (s->has_zero_init)
                break;
            r = image_write_zeroes(s->target, off, (uint64_t)n * SECTOR, s->min_sparse != 0);
            if (r < 0)
                return r;
            break;
        }
        sector += n;
        nb -= n;
        buf += n * SECTOR;
    }
    return 0;
}

int convert_do_copy(struct convert *s)
{
    convert_init_io(s);
    if (s->compressed) {
        if (s->cluster_sectors <= 0 || s->cluster_sectors > s->buf_sectors) {
            err_report("invalid cluster size");
            return -EINVAL;
        }
        s->buf_sectors = s->cluster_sectors;
    }
    /* the first pass counts what will be copied, for the progress bar */
    int64_t sector = 0;
    while (sector < s->total_sectors) {
        int n = convert_iteration_sectors(s, sector);
        if (n < 0)
            return n;
        if (s->status == CONVERT_DATA || (!s->min_sparse && s->status == CONVERT_ZERO))
            s->allocated_sectors += n;
        sector += n;
    }
    s->sector_next_status = 0;
    int r = convert_pipe_run(s);
    if (r == 0 && s->compressed) {
        /* qemu's EOF signal to a compressed target: the file's end aligned to a sector */
        r = image_write_compressed(s->target, 0, NULL, 0);
    }
    return r;
}
