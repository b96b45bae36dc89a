/* L2 table reads for the L1/L2 walk.
 *
 * Batched: a run of L1 entries whose tables are adjacent on disk is read with one pread
 * (up to L2_BATCH_BYTES), so walking 16.7M clusters costs ~64 syscalls.
 *
 * Two readers: a walk over many tables (a read-only check, at least L2_PAR_MIN_BYTES of
 * tables) starts one helper thread. The walk's batches are cut from the L1 table alone,
 * so both threads claim them in order from one cursor and read them into a ring of
 * slots; the walking thread takes slots in L1 order, and while the batch it needs is
 * still being read it reads a later one itself. Checking stays single-threaded and in
 * qemu's order: only the copy out of the page cache (the whole cost of a check over
 * fragmented images: 8,000 scattered 64 KiB tables for a 1 TiB disk) runs on two CPUs.
 * QIMG_CHECK_THREADS=1 keeps one reader. */
#ifndef QIMG_CHECKER_QCOW2_L2READ_H
#define QIMG_CHECKER_QCOW2_L2READ_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct qc2;

#define L2_BATCH_BYTES (2u << 20)
#define L2_PAR_MIN_BYTES (8u << 20)   /* below this a thread costs more than it saves */
#define L2_SLOT_BYTES (256u << 10)    /* ring slot: batch size in two-reader mode */

struct l2_slot {
    uint64_t seq;                     /* batch number held (valid when ready) */
    uint64_t first, end;              /* L1 indexes [first, end) whose tables it holds */
    uint64_t off, len;
    int rc;
    bool ready;
};

struct l2_reader {
    uint8_t *buf;
    uint64_t off, len;        /* bytes of the file held in buf */
    uint64_t cap;             /* buf: bigbuf_alloc(cap) */

    /* two-reader mode (par): ring of nslots slots of slot_bytes each in ring */
    bool par;
    struct qc2 *s;
    const uint64_t *l1;
    uint64_t l1_n;
    uint8_t *ring;
    uint64_t slot_bytes, ring_bytes;
    unsigned nslots;
    struct l2_slot *slots;
    pthread_t helper;
    pthread_mutex_t mu;
    pthread_cond_t ready_cv, space_cv;
    uint64_t cursor;          /* next L1 index to cut a batch from */
    uint64_t next_seq;        /* next batch number to claim */
    uint64_t cur;             /* batch the walk is in (slots of older ones are free) */
    bool stop, main_waiting, helper_waiting;
};

/* The batch never exceeds the file (rounded up to a cluster), so a small image costs a
 * small buffer. */
void l2_reader_init(struct l2_reader *r, uint64_t cluster_size, uint64_t file_size);
void l2_reader_free(struct l2_reader *r);
/* A walk over l1[0..l1_n) is about to start: two readers if it is worth it and parallel
 * is allowed (nothing writes to the image during the walk). l2_reader_end_walk ends it
 * (also after an early return). */
void l2_reader_begin_walk(struct qc2 *s, struct l2_reader *r, const uint64_t *l1,
                          uint64_t l1_n, bool parallel);
void l2_reader_end_walk(struct l2_reader *r);
/* The cluster_size bytes at off (the table l1[i] names); 0 or -errno. Within a walk,
 * called for the non-zero entries of l1 in increasing i. */
int l2_reader_get(struct qc2 *s, struct l2_reader *r, const uint64_t *l1, uint64_t l1_n,
                  uint64_t i, uint64_t off, const uint8_t **out);

#endif
