/* qemu's blkdebug error injection (block/blkdebug.c) over a file: rules armed by events the
 * format driver announces (qimg announces read_aio, qemu's BLKDBG_READ_AIO before a guest
 * data read), then failing the file's requests with the rule's errno. */
#ifndef QIMG_IO_BLKDEBUG_H
#define QIMG_IO_BLKDEBUG_H

#include <stdbool.h>
#include <stdint.h>

#include "io/qio.h"

/* Events qimg's drivers announce (a subset of qemu's BlkdebugEvent). */
enum blkdebug_event { BLKDBG_READ_AIO, BLKDBG_N_EVENTS, BLKDBG_NEVER };

struct blkdebug_rule {
    enum blkdebug_event event;
    int state;          /* 0: any */
    int error;          /* errno */
    int64_t sector;     /* -1: any */
    bool once;
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

/* Wraps inner (taking it over) with the rules (taken over as well). */
qio_t *qio_blkdebug_wrap(qio_t *inner, struct blkdebug_rules *r);

#endif
