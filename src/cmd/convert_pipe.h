/* The copy pipeline of qimg convert (convert_pipe.c) and the steps it runs, from
 * convert_copy.c. One reader thread cuts qemu's chunks and reads them, worker threads
 * compress them (compressed targets), and the calling thread writes them in guest order. */
#ifndef QIMG_CMD_CONVERT_PIPE_H
#define QIMG_CMD_CONVERT_PIPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cmd/convert.h"

/* A cluster compressed ahead of its write. */
struct convert_cchunk {
    bool zero;            /* the cluster reads as zeros: not written */
    const uint8_t *cbuf;  /* qcow2_compress output */
    ssize_t clen;         /* its length, or -ENOSPC (written plainly) */
};

int convert_pipe_run(struct convert *s);
int convert_pipe_write_compressed(struct convert *s, uint64_t off, const uint8_t *buf,
                                  size_t len, const struct convert_cchunk *cc);

/* convert_copy.c */
int convert_iteration_sectors(struct convert *s, int64_t sector);
int convert_read(struct convert *s, int64_t sector, int64_t nb, uint8_t *buf);
int convert_write(struct convert *s, int64_t sector, int64_t nb, const uint8_t *buf,
                  enum convert_status status, const struct convert_cchunk *cc);
bool convert_buffer_is_zero(const uint8_t *p, size_t n);
/* The block layer's read: the seam's default (convert.read). */
int convert_default_read(struct convert *s, int idx, uint64_t off, void *buf, size_t n);

#endif
