/* Check engine entry points and the result every format's checker fills in.
 * The counters are qemu's BdrvCheckResult; findings carry the detail. */
#ifndef QIMG_CHECKER_CHECK_H
#define QIMG_CHECKER_CHECK_H

#include <stdbool.h>
#include <stdint.h>

#include "checker/findings.h"
#include "io/qio.h"

/* Fix mode bits, as qemu's BdrvCheckMode (the repair engine sets them). */
#define CHECK_FIX_LEAKS  1
#define CHECK_FIX_ERRORS 2

struct check_result {
    int64_t corruptions, leaks, check_errors;
    int64_t corruptions_fixed, leaks_fixed;
    int64_t image_end_offset;
    int64_t total_clusters, allocated_clusters, fragmented_clusters, compressed_clusters;
    bool has_stats;          /* the refcount pass ran far enough to fill the bfi fields */
};

struct bspec;

struct check_opts {
    bool deep;               /* --deep: run qimg-only checks, count them as corruptions */
    bool share;              /* -U */
    bool quiet_diag;         /* do not stream diagnostic lines to stderr */
    bool no_open_warnings;   /* a repair's double check: qemu warned once, at open */
    unsigned fix;            /* CHECK_FIX_*; check itself only reports (fix = 0) */
    bool rdwr;               /* -r (not --dry-run): files opened read-write, as qemu's repair
                                opens them (only the open's errors differ; nothing is written
                                through the data file) */
    size_t findings_cap;     /* findings kept in full (0 = default) */
    const char *open_name;   /* the name "Could not open 'NAME'" messages use when the
                                image was named by json:/--image-opts (NULL: its file) */
    bool no_backing;         /* "backing": null in the image's options: the chain is not
                                opened */
    const char *data_file;   /* data-file.filename option: the data file to open instead of
                                the header's name (NULL: the header's) */
    const char *key_secret;  /* encrypt.key-secret option (an --object secret id), or NULL */
    const char *encrypt_format; /* encrypt.format option, or NULL */
    const struct bspec *backing_opts; /* backing.* options for the chain, or NULL */
};

/* Outcome of a check run. ret < 0: the check did not complete (qemu's "Check failed:
 * <strerror>"); the result counters are still meaningful. */
/* Names a finding's snapshot index refers to (id, name), owned by the run. */
struct finding_names {
    char **sn_id;
    char **sn_name;
    uint32_t nb;
};

struct check_run {
    int ret;
    bool opened;             /* false: open failed, the message is already printed */
    struct finding_names names;
    struct check_result res;
    struct findings findings;
    const char *format;      /* "qcow2", "qed", "vdi" */
};

void check_run_free(struct check_run *run);

#endif
