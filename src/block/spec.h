/* Image names given as options (qemu-img's --image-opts "key=value,...", or a "json:{...}"
 * filename): the subset qimg opens, a format over the file protocol. */
#ifndef QIMG_BLOCK_SPEC_H
#define QIMG_BLOCK_SPEC_H

#include <stdbool.h>

#include "io/blkdebug.h"

struct image_spec {
    char *driver;     /* "driver" (NULL: probe) */
    char *filename;   /* "file.filename" (or a top-level "filename") */
    char *data_file;  /* "data-file.filename" (NULL: the image's own) */
    char *data_label; /* its name as qemu shows it (map's File column) */
    bool direct;      /* "cache.direct=on": block status at O_DIRECT's alignment */
    char *key_secret; /* "encrypt.key-secret" (qcow2) or "key-secret" (luks): the id of
                         an --object secret that unlocks the image */
    char *encrypt_format; /* "encrypt.format": must match the header's (qcow2) */
    struct blkdebug_rules rules; /* a blkdebug filter as the format's file: its rules
                                    (io/blkdebug.h), applied to the file */
    bool file_blkdebug;   /* the file is a blkdebug filter (even without rules) */
    char *file_config;    /* its config file, if any */
    bool file_inline_rules; /* it had inject-error/set-state options */
    bool other_rules;   /* a blkdebug filter elsewhere (top, data file) had rules: only a
                           metadata-only open can ignore them */
};

/* Parses name: as --image-opts options when image_opts, else a "json:{...}" filename
 * (qemu's JSON, single-quoted strings too; nested objects flatten to "a.b" keys, arrays to
 * "a.0"). A blkdebug filter (at the top, as "file" or as "data-file") is looked through.
 * Options that change nothing qimg does (cache.*, read-only, ...) are accepted and ignored;
 * any other key fails (-ENOTSUP) rather than being silently dropped. 0 or -errno with
 * *errmsg (malloc'd, the text after "Could not open 'NAME': "). */
int image_spec_parse(const char *name, bool image_opts, struct image_spec *sp, char **errmsg);

/* Is name a "json:" pseudo-protocol filename? */
bool image_spec_is_json(const char *name);

void image_spec_free(struct image_spec *sp);

#endif
