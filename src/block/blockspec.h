/* Image names and block options: the one parser behind every command's FILENAME operand,
 * --image-opts, and backing / data file names stored in images (qemu's bdrv_fill_options,
 * parse_json_filename, qemu_opts_parse and qdict_flatten, simplified to what qimg opens).
 *
 * A name is one of
 *   - a plain file name                       "disk.qcow2"
 *   - "file:NAME" (a file name with a colon)  "file:a:b.qcow2" opens "./a:b.qcow2" as qemu does
 *   - "json:{...}"                            options as a JSON object, nested or dotted keys
 *   - "nbd://...", "nbd+unix://...", "nbd:..." NBD exports (blockspec_nbd.c)
 *   - "ssh://[USER@]HOST[:PORT]/PATH"         a file over ssh/sftp (blockspec_ssh.c)
 *   - "blkdebug:CONFIG:FILE"                  a blkdebug filter over FILE (looked through)
 *   - "PROTO:..." for another protocol        qemu's "Unknown protocol 'PROTO'" (qemu's other
 *                                             network protocols: not supported by qimg)
 * or, with --image-opts, a key=value,... list (",," is a literal comma).
 *
 * Everything becomes one flat option list (qemu's flattened QDict: "file.filename", "a.0"),
 * and blockspec_resolve() turns it into what the opener needs: the format driver (or probe),
 * the protocol file's name, backing overrides, read-only, raw's offset/size, the name info
 * prints, and the first option nobody takes (reported after the open, as qemu does).
 * It also carries what the opener needs beyond that: blkdebug filters and their rules,
 * cache.direct, the encryption key's secret id (encrypt.key-secret / key-secret) and the
 * NBD address. */
#ifndef QIMG_BLOCK_BLOCKSPEC_H
#define QIMG_BLOCK_BLOCKSPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/blkdebug.h"
#include "io/nbd.h"
#include "io/ssh.h"

/* Typed values: JSON keeps its types (qemu prints "size": 512), --image-opts values are
 * strings (qemu prints "size": "512"). */
enum bsv_type { BSV_STR, BSV_INT, BSV_DOUBLE, BSV_BOOL, BSV_NULL, BSV_EMPTY_DICT,
                BSV_EMPTY_LIST };

struct bsv {
    char *key;          /* flattened: "file.filename" */
    enum bsv_type type;
    char *s;            /* BSV_STR */
    int64_t i;          /* BSV_INT */
    double d;           /* BSV_DOUBLE */
    bool b;             /* BSV_BOOL */
};

struct bspec {
    struct bsv *v;
    size_t n, cap;
};

void bspec_free(struct bspec *o);
const struct bsv *bspec_get(const struct bspec *o, const char *key);
/* Sets key (replacing an existing value when overwrite, else keeping it). Takes a copy. */
void bspec_put_str(struct bspec *o, const char *key, const char *s, bool overwrite);
void bspec_put(struct bspec *o, const struct bsv *val, bool overwrite);
void bspec_del(struct bspec *o, const char *key);
/* Removes key and returns its value as text (a string, an integer printed, else ""), or
 * NULL when absent: how the protocol drivers take their options. */
char *bspec_take_str(struct bspec *o, const char *key);

/* "json:{...}" text after the prefix, flattened into o (qemu's parse_json_filename + 
 * qdict_flatten: nested objects win over dotted keys naming the same option). On error
 * returns -1 and sets *errmsg to qemu's text: "Could not parse the JSON options: ..." or
 * "Invalid JSON object given". */
int bspec_parse_json(const char *text, struct bspec *o, char **errmsg);

/* --image-opts text (qemu_opts_parse with no implied key): key=value pairs, ",," for a comma
 * in a value, a bare KEY is the deprecated short form of KEY=on (noKEY: KEY=off) and warns as
 * qemu does; later duplicates win. Never fails. */
void bspec_parse_keyval(const char *text, struct bspec *o);

/* qemu's qdict iteration order (tdb_hash buckets), used wherever qemu's output depends on it:
 * the first unknown option reported, the key order of reconstructed json: names.
 * Fills idx[0..n) with indices into o->v in that order. */
void bspec_qdict_order(const struct bspec *o, size_t *idx);

/* qemu's qobject_to_json of the unflattened options ("{"driver": "raw", ...}"). */
char *bspec_to_json(const struct bspec *o);
/* qemu's qobject_to_json of one string: quoted and escaped (malloc'd). */
char *bspec_json_string(const char *s);

/* The parts of a resolved name the opener needs. */
enum bs_backing { BS_BACKING_DEFAULT, BS_BACKING_NONE, BS_BACKING_OPTS };

struct bs_resolved {
    char *format;          /* format driver, NULL: probe. "file" with protocol_only */
    bool protocol_only;    /* driver=file: the protocol node itself is the image */
    char *path;            /* the file to open (qemu's file-posix filename) */
    bool read_only;        /* read-only=on given */
    bool has_offset, has_size;
    uint64_t offset, size; /* raw's offset/size */
    enum bs_backing backing;
    struct bspec backing_opts; /* backing.* without the prefix, when BS_BACKING_OPTS */
    char *file_unknown;    /* first option the file protocol does not take, or NULL */
    struct bspec rest;     /* format-level options left to check against the format */
    char *data_file;       /* qcow2's data-file.filename option, or NULL */
    char *display;         /* the name info prints when it is not path (json:{...}), or NULL */
    char *file_display;    /* the file node's name when it is not path ("blkdebug:CONF:FILE"
                              over a blkdebug filter), or NULL */
    char *data_label;      /* the data file as qemu names it (map's File column:
                              "blkdebug::NAME" through a blkdebug filter), or NULL */
    bool direct;           /* cache.direct=on (the node's or its file's): block status at
                              O_DIRECT's request alignment, as qemu's */
    /* A blkdebug filter (block/blkdebug.c) between the format and its file is looked
     * through: its "image" is the file, its rules (io/blkdebug.h) act on the file's I/O.
     * Given as "blkdebug:CONFIG:FILE" or as file.driver=blkdebug; on top of the format or
     * on the data file it is looked through as well, its rules only counted. */
    bool file_blkdebug;
    struct blkdebug_rules rules; /* its inline rules (inject-error / set-state options) */
    char *file_config;     /* its config file, or NULL (blockspec_read_blkdebug reads it) */
    bool other_rules;      /* a blkdebug on the data file had rules */
    char *other_config[2]; /* its config file ([1]; [0] unused), or NULL */
    /* A blkdebug filter above the format (driver=blkdebug with an "image"): its rules act
     * on the image's guest requests (image_t.top_bd) */
    bool top_blkdebug;
    struct blkdebug_rules top_rules;
    char *top_config;      /* its config file, or NULL */
    char *top_display;     /* the name qemu gives it ("blkdebug:CONFIG:IMAGE"), or NULL */
    char *key_secret;      /* "encrypt.key-secret" (qcow2, qcow) or "key-secret" (luks): the
                              id of an --object secret that unlocks the image, or NULL */
    char *encrypt_format;  /* "encrypt.format": checked against the header's, or NULL */
    struct qio_nbd_addr *nbd; /* the protocol node is an NBD export (path is its name) */
    struct qio_ssh_addr *ssh; /* the protocol node is a file over ssh (path is its name) */
    const char *file_proto;   /* the protocol named in file_unknown's message ("file") */
    /* a null-co / null-aio protocol node (qemu's block/null.c, io/null.h): the image itself
     * with driver=null-co, else the file under the format; "null-co://" as a plain name */
    const char *null_drv;     /* "null-co", "null-aio", or NULL */
    /* a quorum node (qemu's block/quorum.c, io/quorum.h): the image itself with
     * driver=quorum, else the file under the format; its children are files */
    char **quorum_paths;
    size_t quorum_n;          /* 0: no quorum */
    int quorum_threshold;
    bool quorum_fifo;         /* read-pattern fifo */
    char *quorum_unknown;     /* first option quorum does not take, or NULL */
    uint64_t null_size;
    bool null_zeroes;         /* read-zeroes */
};

/* Resolves a name: filename (plain/file:/json:/PROTO:, NULL when only options are given),
 * opts (may be NULL; --image-opts or the backing format from the parent), fmt (-f, or the
 * backing format stored in the overlay: both override a "driver" inside json:). with_backing
 * says whether the backing image will be opened (so backing.* options are used, not left over
 * for the "does not support the option" error, as with qemu's BDRV_O_NO_BACKING). Returns 0,
 * or -EINVAL/-ENOTSUP with *errmsg set to the text after "Could not open 'NAME': ". */
int blockspec_resolve(const char *filename, const struct bspec *opts, const char *fmt,
                      bool with_backing, struct bs_resolved *r, char **errmsg);
void blockspec_resolved_free(struct bs_resolved *r);

/* Reads the blkdebug config files a resolved name names (qemu's blkdebug_open reads the
 * config file before the inline rules): r->rules then holds the file's rules in qemu's
 * order (r->top_rules likewise for a filter above the format) and r->other_rules says
 * whether the data file's filter has any. 0, or -EINVAL with
 * *errmsg (qemu's "Could not read blkdebug config file: ..."). */
int blockspec_read_blkdebug(struct bs_resolved *r, char **errmsg);

/* qemu checks left-over options after opening a node: these give the message text after
 * "Could not open 'NAME': " for the first option the file protocol / the format (probed or
 * given) does not take, in qemu's order, or NULL when every option was taken. */
char *blockspec_file_unknown_msg(const struct bs_resolved *r);
char *blockspec_format_unknown_msg(const struct bs_resolved *r, const char *format);

/* The file a plain name (not json:) names: "file:NAME" -> NAME ("./NAME" when NAME has a
 * colon before any slash), a plain name as it is; another "PROTO:" prefix is qemu's
 * "Unknown protocol 'PROTO'" (-EINVAL) or, for qemu's network protocols, -ENOTSUP. create
 * uses it for its target (qemu's bdrv_find_protocol). */
int blockspec_plain_path(const char *name, char **path, char **errmsg);

/* qemu's path_has_protocol(): a colon before the first slash. */
bool blockspec_has_protocol(const char *name);

/* qemu-img's "--image-opts and --format are mutually exclusive" check for commands: reports
 * and returns -1 when both are given. */
int blockspec_check_image_opts_fmt(bool image_opts, const char *fmt);

#endif
