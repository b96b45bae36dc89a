/* qemu's blkdebug error injection (block/blkdebug.c) over a file: rules armed by events the
 * format driver announces (qimg announces read_aio, qemu's BLKDBG_READ_AIO before a guest
 * data read), then failing the file's requests with the rule's errno. */
#ifndef QIMG_IO_BLKDEBUG_H
#define QIMG_IO_BLKDEBUG_H

#include <stdbool.h>
#include <stdint.h>

#include "io/qio.h"

/* Events qimg's drivers announce (a subset of qemu's BlkdebugEvent): read_aio before a
 * guest data read (qcow2, raw); l1_update where qcow2 writes an L1 entry and in
 * make_completely_empty (commit's emptying), which alone announces empty_image_prepare,
 * reftable_update and refblock_alloc (qemu also announces the last two when a write
 * allocates a refblock: not qimg, see README); cluster_free in qcow2_free_clusters; write_aio before a
 * guest data write (qcow2, raw). */
enum blkdebug_event {
    BLKDBG_READ_AIO, BLKDBG_L1_UPDATE, BLKDBG_EMPTY_IMAGE_PREPARE, BLKDBG_REFTABLE_UPDATE,
    BLKDBG_REFBLOCK_ALLOC, BLKDBG_CLUSTER_FREE,
    BLKDBG_WRITE_AIO,
    BLKDBG_NONE, /* "none": announced once, when the filter opens (blkdebug_open) */
    BLKDBG_N_EVENTS, BLKDBG_NEVER
};

/* The requests a rule fails (qemu's BlkdebugIOType), as mask bits; a rule without "iotype"
 * fails reads, writes, write-zeroes, discards and flushes, not block status. */
enum blkdebug_iotype {
    BLKDBG_IO_READ, BLKDBG_IO_WRITE, BLKDBG_IO_WRITE_ZEROES, BLKDBG_IO_DISCARD,
    BLKDBG_IO_FLUSH, BLKDBG_IO_BLOCK_STATUS, BLKDBG_IO_N
};

struct blkdebug_rule {
    enum blkdebug_event event;
    int state;          /* 0: any */
    int error;          /* errno */
    int64_t sector;     /* -1: any */
    bool once;
    unsigned iotypes;   /* 1u << blkdebug_iotype */
    bool set_state;     /* a set-state rule: new_state below, no error */
    int new_state;
};

struct blkdebug_rules {
    struct blkdebug_rule *v;
    size_t n;
    char *unsupported;  /* the first event named that qimg never announces, else NULL */
};

/* One rule from its options (qemu's inject-error / set-state keys and defaults); key and
 * value as given. Returns 0, or -1 with *errmsg (unknown key, bad number). An event qimg
 * does not announce is noted in r->unsupported (the rule never acts). Call blkdebug_rule_done after the last key of a rule. */
int blkdebug_rule_start(struct blkdebug_rules *r, bool set_state);
int blkdebug_rule_set(struct blkdebug_rules *r, const char *key, const char *val,
                      char **errmsg);
int blkdebug_rule_done(struct blkdebug_rules *r, char **errmsg);

/* qemu's blkdebug config file ([inject-error] and [set-state] sections, key = "value"). */
int blkdebug_read_config(const char *path, struct blkdebug_rules *r, char **errmsg);

void blkdebug_rules_free(struct blkdebug_rules *r);

/* The rules at work in one blkdebug node (qemu's BDRVBlkdebugState): state, armed rules. */
struct blkdebug_state {
    struct blkdebug_rules rules;
    int state;
    size_t *active;          /* indexes of armed inject-error rules, newest first */
    size_t n_active;
};

/* Takes the rules over, sets state 1 and announces "none" (blkdebug_open). */
void blkdebug_state_init(struct blkdebug_state *b, struct blkdebug_rules *r);
void blkdebug_state_free(struct blkdebug_state *b);
/* qemu's blkdebug_debug_event. */
void blkdebug_state_event(struct blkdebug_state *b, int ev);
/* qemu's rule_check: -errno of the first armed rule for a request of this type covering
 * the rule's sector (n == 0: only rules without a sector), else 0. */
int blkdebug_state_check(struct blkdebug_state *b, uint64_t off, uint64_t n,
                         enum blkdebug_iotype io);

/* Wraps inner (taking it over) with the rules (taken over as well). */
qio_t *qio_blkdebug_wrap(qio_t *inner, struct blkdebug_rules *r);

#endif
